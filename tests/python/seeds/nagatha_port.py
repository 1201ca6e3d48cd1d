# nagatha_port.py — Nagatha's Django/Celery integration (seed 004) as a user ports it: the
# Celery app module, the settings it reads, and nagatha_celery_integration.py with its
# NagathaCeleryBridge and shared tasks. Imports and the Celery(...) constructor changed;
# Django's ORM task records and Nagatha's core are small stand-ins with the same calls.
import asyncio
import json
import logging
import os
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from engram.celery import Celery, shared_task  # was: from celery import Celery, shared_task

logger = logging.getLogger(__name__)


class settings:  # django.conf.settings, the part the Celery app reads
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL")  # was: redis://localhost:6379/0
    CELERY_ACCEPT_CONTENT = ["json"]
    CELERY_TASK_SERIALIZER = "json"
    CELERY_RESULT_SERIALIZER = "json"
    CELERY_TIMEZONE = "UTC"
    CELERY_TASK_TRACK_STARTED = True
    CELERY_TASK_TIME_LIMIT = 30 * 60

    # Celery Beat Configuration
    CELERY_BEAT_SCHEDULER = 'django_celery_beat.schedulers:DatabaseScheduler'

    # Celery Beat Scheduled Tasks for Nagatha Integration
    CELERY_BEAT_SCHEDULE = {
        # MCP Server Health Checks - Every 5 minutes
        'check-mcp-servers-health': {
            'task': 'dashboard.nagatha_celery_integration.check_mcp_servers_health',
            'schedule': 300.0,  # 5 minutes
        },

        # Memory Cleanup and Maintenance - Every hour
        'cleanup-memory-and-maintenance': {
            'task': 'dashboard.nagatha_celery_integration.cleanup_memory_and_maintenance',
            'schedule': 3600.0,  # 1 hour
        },

        # Usage Metrics Tracking - Every 15 minutes
        'track-usage-metrics': {
            'task': 'dashboard.nagatha_celery_integration.track_usage_metrics',
            'schedule': 900.0,  # 15 minutes
        },

        # Scheduled Tasks and Reminders - Every minute
        'process-scheduled-tasks': {
            'task': 'dashboard.nagatha_celery_integration.process_scheduled_tasks',
            'schedule': 60.0,  # 1 minute
        },

        # System Status Refresh - Every 2 minutes
        'refresh-system-status': {
            'task': 'dashboard.refresh_system_status',
            'schedule': 120.0,  # 2 minutes
        },

        # Data Cleanup - Every 6 hours
        'cleanup-old-data': {
            'task': 'dashboard.cleanup_old_data',
            'schedule': 21600.0,  # 6 hours
        },
    }


# web_dashboard/celery.py
app = Celery("web_dashboard", broker=settings.CELERY_BROKER_URL)  # was: Celery("web_dashboard")
app.config_from_object(settings, namespace="CELERY")
app.autodiscover_tasks()


# -- stand-ins: Django's Task model and Nagatha's core ---------------------------------------
class Task:
    """dashboard.models.Task: rows kept as JSON lines in $NAGATHA_OUT."""

    class objects:
        @staticmethod
        def create(**kw: Any) -> "Task":
            t = Task()
            t.__dict__.update(kw)
            t.save()
            return t

    def save(self) -> None:
        out = os.environ.get("NAGATHA_OUT")
        if out:
            with open(out, "a") as f:
                f.write(json.dumps({k: str(v) for k, v in self.__dict__.items()}) + "\n")


class _Core:
    """What _ensure_initialized gets from nagatha_assistant.core."""

    sessions = 0

    async def send_message(self, session_id: int, message: str) -> str:
        await asyncio.sleep(0)
        if message == "boom":
            raise RuntimeError("the agent failed")
        return f"Nagatha heard: {message}"

    async def start_session(self) -> int:
        _Core.sessions += 1
        return _Core.sessions


# -- nagatha_celery_integration.py ----------------------------------------------------------
class NagathaCeleryBridge:
    """Bridge class to handle async/sync conversion between Celery and Nagatha's async core."""

    def __init__(self):
        self._initialized = False
        self._core = None

    async def _ensure_initialized(self):
        if self._initialized:
            return
        self._core = _Core()
        self._initialized = True
        logger.info("Nagatha Celery bridge initialized successfully")

    def _run_async(self, coro):
        """Run an async coroutine in a new event loop."""
        try:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(coro)
        finally:
            loop.close()

    async def process_message_async(self, session_id: Optional[int], message: str,
                                    user_id: Optional[str] = None) -> Dict[str, Any]:
        await self._ensure_initialized()
        try:
            if session_id is None:
                session_id = await self._core.start_session()
            response = await self._core.send_message(session_id, message)
            return {'success': True, 'session_id': session_id, 'response': response, 'user_id': user_id}
        except Exception as e:
            logger.error(f"Error processing message: {e}")
            return {'success': False, 'error': str(e), 'session_id': session_id, 'user_id': user_id}

    async def check_mcp_servers_async(self) -> Dict[str, Any]:
        await self._ensure_initialized()
        return {'success': True, 'health_checks': {'memory': {'connected': True}},
                'timestamp': datetime.now(timezone.utc).isoformat()}

    async def cleanup_memory_async(self) -> Dict[str, Any]:
        await self._ensure_initialized()
        return {'success': True, 'cleanup_result': {'cleaned_entries': 0},
                'timestamp': datetime.now(timezone.utc).isoformat()}

    async def track_usage_metrics_async(self) -> Dict[str, Any]:
        await self._ensure_initialized()
        return {'success': True, 'total_cost': 0.0, 'total_requests': 0,
                'timestamp': datetime.now(timezone.utc).isoformat()}

    async def process_scheduled_tasks_async(self) -> Dict[str, Any]:
        await self._ensure_initialized()
        return {'success': True, 'due_tasks': 0, 'due_reminders': 0,
                'timestamp': datetime.now(timezone.utc).isoformat()}


_nagatha_bridge = None


def get_nagatha_bridge() -> NagathaCeleryBridge:
    global _nagatha_bridge
    if _nagatha_bridge is None:
        _nagatha_bridge = NagathaCeleryBridge()
    return _nagatha_bridge


def _tracked(self, name: str, description: str, run):
    """The body every task of the integration repeats: a Task row around the bridge call."""
    task_record = None
    try:
        task_record = Task.objects.create(celery_task_id=self.request.id, task_name=name,
                                          description=description, status='running',
                                          started_at=datetime.now(timezone.utc))
        bridge = get_nagatha_bridge()
        result = run(bridge)
        task_record.status = 'completed'
        task_record.progress = 100
        task_record.result = result
        task_record.completed_at = datetime.now(timezone.utc)
        task_record.save()
        return result
    except Exception as e:
        logger.error(f"Error in {name}: {e}")
        if task_record:
            task_record.status = 'failed'
            task_record.error_message = str(e)
            task_record.save()
        return {'success': False, 'error': str(e)}


@shared_task(bind=True)
def process_message_with_nagatha(self, session_id: Optional[int], message: str, user_id: Optional[str] = None):
    """Process a user message using Nagatha's core agent via Celery."""
    return _tracked(self, 'process_message_with_nagatha', f'Process message: {message[:50]}...',
                    lambda b: b._run_async(b.process_message_async(session_id, message, user_id)))


@shared_task(bind=True)
def check_mcp_servers_health(self):
    return _tracked(self, 'check_mcp_servers_health', 'Check MCP server health and status',
                    lambda b: b._run_async(b.check_mcp_servers_async()))


@shared_task(bind=True)
def cleanup_memory_and_maintenance(self):
    return _tracked(self, 'cleanup_memory_and_maintenance', 'Clean up memory and perform maintenance',
                    lambda b: b._run_async(b.cleanup_memory_async()))


@shared_task(bind=True)
def track_usage_metrics(self):
    return _tracked(self, 'track_usage_metrics', 'Track usage metrics and costs',
                    lambda b: b._run_async(b.track_usage_metrics_async()))


@shared_task(bind=True)
def process_scheduled_tasks(self):
    return _tracked(self, 'process_scheduled_tasks', 'Process scheduled tasks and reminders',
                    lambda b: b._run_async(b.process_scheduled_tasks_async()))


# -- the API views (Django's JsonResponse bodies as dicts) ------------------------------------
def send_message_nagatha_core(message: str, session_id: Optional[int] = None) -> Dict[str, Any]:
    """POST /api/send-message-nagatha-core/"""
    task = process_message_with_nagatha.delay(session_id, message)
    return {'task_id': task.id, 'status': 'processing'}


def task_status(task_id: str) -> Dict[str, Any]:
    """GET /api/task-status/{task_id}/"""
    from engram.celery.result import AsyncResult  # was: from celery.result import AsyncResult
    result = AsyncResult(task_id)
    return {'task_id': task_id, 'status': result.status,
            'result': result.result if result.ready() else None}


def system_status() -> Dict[str, Any]:
    """GET /api/system-status/: the workers as Celery's inspect reports them."""
    inspector = app.control.inspect()
    return {'celery': {'stats': inspector.stats(), 'active': inspector.active(),
                       'registered': inspector.registered()},
            'timestamp': datetime.now(timezone.utc).isoformat()}
