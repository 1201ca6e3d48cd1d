# nagatha_tasks_port.py — Nagatha's Celery app and task module (seed 002's "Task Processing"
# and Django examples; celery_app.py of pull request #42) as a user ports them: imports
# changed, and the broker default no longer a Redis URL. The agent is a stand-in; each
# task call is recorded in $NAGATHA_OUT.
import asyncio
import os

from engram.celery import Celery  # was: from celery import Celery
from engram.celery.signals import setup_logging  # was: from celery.signals import setup_logging

# Configure Celery app
app = Celery('nagatha_assistant')

# Configuration settings
app.conf.update(
    # Broker configuration (was: redis://localhost:6379/0)
    broker_url=os.getenv('CELERY_BROKER_URL', '/var/lib/nagatha/log'),
    result_backend=os.getenv('CELERY_RESULT_BACKEND', os.getenv('CELERY_BROKER_URL', '/var/lib/nagatha/log')),

    # Task settings
    task_serializer='json',
    accept_content=['json'],
    result_serializer='json',
    timezone='UTC',
    enable_utc=True,

    # Task routing
    task_routes={
        'nagatha_assistant.core.celery_tasks.agent.*': {'queue': 'agent'},
        'nagatha_assistant.core.celery_tasks.mcp.*': {'queue': 'mcp'},
        'nagatha_assistant.core.celery_tasks.events.*': {'queue': 'events'},
        'nagatha_assistant.core.celery_tasks.system.*': {'queue': 'system'},
    },

    # Worker settings
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    worker_max_tasks_per_child=1000,

    # Event system settings
    task_send_sent_event=True,
    task_track_started=True,

    # Result expiration
    result_expires=3600,  # 1 hour

    # Task timeout settings
    task_soft_time_limit=300,  # 5 minutes
    task_time_limit=600,       # 10 minutes
)

# Import task modules to register them
# (app.autodiscover_tasks(['nagatha_assistant.core.celery_tasks']) is left out: in this
# one-file port the tasks are defined below, not in that package.)

# Configure Celery Beat
# (from nagatha_assistant.core.celery_beat import configure_celery_beat: the module is below)


# ----------------------------------------------------------------- core/celery_beat.py
from engram.celery.schedules import crontab  # was: from celery.schedules import crontab
from datetime import timedelta

# Celery Beat schedule configuration
beat_schedule = {
    # System health check every 5 minutes
    'system-health-check': {
        'task': 'nagatha_assistant.core.celery_tasks.system.health_check',
        'schedule': timedelta(minutes=5),
        'options': {'queue': 'system'}
    },

    # Clean up old data daily at 2 AM
    'cleanup-old-data': {
        'task': 'nagatha_assistant.core.celery_tasks.system.cleanup_old_data',
        'schedule': crontab(hour=2, minute=0),
        'options': {'queue': 'system'}
    },

    # Refresh MCP servers every 30 minutes
    'refresh-mcp-servers': {
        'task': 'nagatha_assistant.core.celery_tasks.mcp.refresh_servers',
        'schedule': timedelta(minutes=30),
        'options': {'queue': 'mcp'}
    },

    # Publish system status event every hour
    'publish-system-status': {
        'task': 'nagatha_assistant.core.celery_tasks.events.publish_system_status',
        'schedule': timedelta(hours=1),
        'options': {'queue': 'events'}
    },

    # Memory cleanup and optimization every 6 hours
    'memory-optimization': {
        'task': 'nagatha_assistant.core.celery_tasks.system.memory_optimization',
        'schedule': timedelta(hours=6),
        'options': {'queue': 'system'}
    },

    # Check for stale sessions every hour
    'check-stale-sessions': {
        'task': 'nagatha_assistant.core.celery_tasks.agent.check_stale_sessions',
        'schedule': timedelta(hours=1),
        'options': {'queue': 'agent'}
    }
}


def configure_celery_beat(app: Celery):
    """
    Configure Celery Beat with the scheduled tasks.

    Args:
        app: Celery application instance
    """
    app.conf.beat_schedule = beat_schedule
    app.conf.timezone = 'UTC'

    # Configure beat database
    app.conf.beat_scheduler = 'django_celery_beat.schedulers:DatabaseScheduler'

    # Configure beat settings
    app.conf.beat_sync_every = 1  # Sync beat schedule to database every minute
    app.conf.beat_max_loop_interval = 5  # Max interval between beat iterations


configure_celery_beat(app)


@setup_logging.connect
def config_loggers(*args, **kwargs):
    """Configure logging for Celery."""


# ---------------------------------------------------------------- core/celery_tasks.py
def _record(what):
    out = os.getenv("NAGATHA_OUT")
    if out:
        with open(out, "a") as f:
            f.write(f"{os.getpid()} {what}\n")


async def send_message(session_id, message):
    await asyncio.sleep(0)
    if message == "fail":
        raise RuntimeError("the model refused")
    return f"reply to {message}"


@app.task(bind=True, name='nagatha_assistant.core.celery_tasks.agent.process_message')
def process_message_task(self, session_id, message_content, message_type='user'):
    _record(f"message {session_id} {message_content}")
    response = asyncio.run(send_message(session_id, message_content))
    return {'session_id': session_id, 'response': response, 'task_id': self.request.id}


@app.task(name='nagatha_assistant.core.celery_tasks.events.publish_event')
def publish_event_task(event_type, data, priority=2, source=None):
    _record(f"event {event_type}")
    return {'published': event_type, 'data': data}


@app.task(name='nagatha_assistant.core.celery_tasks.system.health_check')
def system_health_check():
    _record("health")
    return {'healthy': True}


# ---------------------------------------------------------- web_dashboard views (Django)
def chat_view(session, post):
    task = process_message_task.delay(
        session_id=session['session_id'],
        message_content=post['message'],
        message_type='user'
    )
    return {'task_id': task.id}


def task_status(task_id):
    from engram.celery.result import AsyncResult  # was: from celery.result import AsyncResult
    result = AsyncResult(task_id)
    return {
        'status': result.status,
        'result': result.result
    }
