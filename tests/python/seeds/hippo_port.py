# hippo_port.py — HippocampAI's celery_app.py and tasks.py (seed 001) as a user ports them:
# the imports and the Celery(...) constructor changed, nothing else. The memory service is
# a small stand-in (the real one needs Qdrant and an embedder) with the same async methods;
# it records each call in $HIPPO_OUT so tests can count side effects across processes.
import asyncio
import logging
import os
import time
import uuid
from typing import Any, Dict, List, Optional

from engram.celery import Celery, Exchange, Queue  # was: from celery import Celery; from kombu import ...
from engram.celery.schedules import crontab  # was: from celery.schedules import crontab

# Initialize Celery app
celery_app = Celery(
    "hippocampai",
    broker=os.getenv("CELERY_BROKER_URL", "/var/lib/hippocampai/log"),  # was: redis://localhost:6379/1
    include=[],
)

# Celery Configuration
celery_app.conf.update(
    # Task routing
    task_queues=(
        Queue("default", Exchange("default"), routing_key="default"),
        Queue("memory_ops", Exchange("memory_ops"), routing_key="memory.#"),
        Queue("background", Exchange("background"), routing_key="background.#"),
        Queue("scheduled", Exchange("scheduled"), routing_key="scheduled.#"),
    ),
    task_default_queue="default",
    task_default_exchange="default",
    task_default_routing_key="default",
    # Task execution settings
    task_acks_late=os.getenv("CELERY_TASK_ACKS_LATE", "true").lower() == "true",
    worker_prefetch_multiplier=int(os.getenv("CELERY_WORKER_PREFETCH_MULTIPLIER", "4")),
    worker_max_tasks_per_child=int(os.getenv("CELERY_WORKER_MAX_TASKS_PER_CHILD", "1000")),
    # Task time limits
    task_soft_time_limit=float(os.getenv("HIPPO_SOFT_LIMIT", "300")),  # 5 minutes
    task_time_limit=float(os.getenv("HIPPO_HARD_LIMIT", "600")),  # 10 minutes
    # Result backend settings
    result_expires=float(os.getenv("HIPPO_RESULT_EXPIRES", "3600")),  # Results expire after 1 hour
    result_persistent=True,
    result_compression="gzip",
    # Serialization
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Timezone
    timezone="UTC",
    enable_utc=True,
    # Task result format
    result_extended=True,
    # Worker settings
    worker_disable_rate_limits=False,
    worker_log_format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    worker_task_log_format="[%(asctime)s: %(levelname)s/%(processName)s][%(task_name)s(%(task_id)s)] %(message)s",
    # Beat scheduler settings (for periodic tasks)
    beat_scheduler="celery.beat:PersistentScheduler",
    beat_schedule_filename="/app/logs/celerybeat-schedule.db",
)
if os.getenv("CELERY_WORKER_CONCURRENCY"):
    celery_app.conf.worker_concurrency = int(os.environ["CELERY_WORKER_CONCURRENCY"])



# Scheduled tasks configuration
def get_beat_schedule() -> dict[str, dict[str, Any]]:
    """Get the Celery Beat schedule based on environment configuration."""
    schedule = {}

    # Automatic deduplication
    if os.getenv("AUTO_DEDUP_ENABLED", "true").lower() == "true":
        dedup_interval = int(os.getenv("DEDUP_INTERVAL_HOURS", "24"))
        schedule["auto-deduplicate-memories"] = {
            "task": "hippocampai.tasks.deduplicate_all_memories",
            "schedule": crontab(hour=f"*/{dedup_interval}"),
            "options": {"queue": "scheduled"},
        }

    # Memory consolidation (Sleep Phase)
    if os.getenv("ACTIVE_CONSOLIDATION_ENABLED", "false").lower() == "true":
        consolidation_hour = int(os.getenv("CONSOLIDATION_SCHEDULE_HOUR", "3"))
        schedule["sleep-phase-consolidation"] = {
            "task": "hippocampai.consolidation.run_daily_consolidation",
            "schedule": crontab(hour=consolidation_hour, minute=0),
            "options": {"queue": "scheduled"},
        }

    # Memory expiration cleanup
    expiration_interval = int(os.getenv("EXPIRATION_INTERVAL_HOURS", "1"))
    schedule["cleanup-expired-memories"] = {
        "task": "hippocampai.tasks.cleanup_expired_memories",
        "schedule": crontab(hour=f"*/{expiration_interval}"),
        "options": {"queue": "scheduled"},
    }

    # Importance decay (daily at 2am)
    schedule["decay-memory-importance"] = {
        "task": "hippocampai.tasks.decay_memory_importance",
        "schedule": crontab(hour=2, minute=0),
        "options": {"queue": "scheduled"},
    }

    # Create snapshots (hourly)
    schedule["create-snapshots"] = {
        "task": "hippocampai.tasks.create_collection_snapshots",
        "schedule": crontab(minute=0),  # Every hour
        "options": {"queue": "scheduled"},
    }

    # Health check (every 5 minutes)
    schedule["health-check"] = {
        "task": "hippocampai.tasks.health_check_task",
        "schedule": crontab(minute="*/5"),
        "options": {"queue": "background"},
    }

    return schedule


# Update beat schedule
celery_app.conf.beat_schedule = get_beat_schedule()

# Task routing
celery_app.conf.task_routes = {
    "hippocampai.tasks.create_memory_task": {"queue": "memory_ops"},
    "hippocampai.tasks.batch_create_memories_task": {"queue": "memory_ops"},
    "hippocampai.tasks.recall_memories_task": {"queue": "memory_ops"},
    "hippocampai.tasks.update_memory_task": {"queue": "memory_ops"},
    "hippocampai.tasks.delete_memory_task": {"queue": "memory_ops"},
    "hippocampai.tasks.deduplicate_all_memories": {"queue": "scheduled"},
    "hippocampai.tasks.consolidate_all_memories": {"queue": "scheduled"},
    "hippocampai.tasks.cleanup_expired_memories": {"queue": "scheduled"},
    "hippocampai.tasks.decay_memory_importance": {"queue": "scheduled"},
    "hippocampai.tasks.create_collection_snapshots": {"queue": "scheduled"},
    "hippocampai.tasks.health_check_task": {"queue": "background"},
}

# ---------------------------------------------------------------------------- tasks.py
logger = logging.getLogger(__name__)


class _Memory:
    def __init__(self, text, user_id, memory_type, importance):
        self.id = "mem_" + uuid.uuid4().hex[:8]
        self.text, self.user_id, self.importance = text, user_id, importance
        self.type = type("T", (), {"value": memory_type})()


def _record(what):
    out = os.getenv("HIPPO_OUT")
    if out:
        with open(out, "a") as f:
            f.write(f"{os.getpid()} {what}\n")


class MemoryManagementService:
    """Stand-in with the real service's async signatures."""

    async def create_memory(self, text, user_id, memory_type="fact", importance=None, tags=None, metadata=None):
        _record(f"create {text}")
        if text.startswith("flaky") and _count(f"create {text}") < 3:
            raise ConnectionError("qdrant unavailable")
        if text.startswith("sleep:"):
            for _ in range(int(float(text[6:]) * 20)):
                time.sleep(0.05)
        return _Memory(text, user_id, memory_type, importance)

    async def batch_create_memories(self, memories, check_duplicates=True):
        return [_Memory(m["text"], m["user_id"], m.get("type", "fact"), None) for m in memories]

    async def recall_memories(self, query, user_id, k=5, filters=None):
        return []

    async def delete_memory(self, memory_id, user_id):
        return True


def _count(what):
    out = os.getenv("HIPPO_OUT")
    if not out or not os.path.exists(out):
        return 0
    return sum(1 for line in open(out) if line.split(" ", 1)[1].strip() == what)


_services: Dict[str, Any] = {}


def get_service() -> MemoryManagementService:
    """Get or create the MemoryManagementService instance (singleton pattern)."""
    if "memory_service" not in _services:
        _services["memory_service"] = MemoryManagementService()
    return _services["memory_service"]


@celery_app.task(name="hippocampai.tasks.create_memory_task", bind=True, max_retries=3)
def create_memory_task(
    self,
    text: str,
    user_id: str,
    memory_type: str = "fact",
    importance: Optional[float] = None,
    tags: Optional[List[str]] = None,
    metadata: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    try:
        service = get_service()

        async def _create():
            return await service.create_memory(
                text=text, user_id=user_id, memory_type=memory_type, importance=importance,
                tags=tags or [], metadata=metadata or {},
            )

        memory = asyncio.run(_create())

        logger.info(f"Task {self.request.id}: Created memory {memory.id} for user {user_id}")
        return {
            "id": memory.id,
            "text": memory.text,
            "user_id": memory.user_id,
            "type": memory.type.value,
            "importance": memory.importance,
        }

    except Exception as exc:
        logger.error(f"Task {self.request.id} failed: {exc}")
        raise self.retry(exc=exc, countdown=float(os.getenv("HIPPO_RETRY_COUNTDOWN", "60")))


@celery_app.task(name="hippocampai.tasks.batch_create_memories_task", bind=True, max_retries=3)
def batch_create_memories_task(self, memories: List[Dict[str, Any]], check_duplicates: bool = True):
    try:
        service = get_service()

        async def _batch_create():
            return await service.batch_create_memories(memories=memories, check_duplicates=check_duplicates)

        created_memories = asyncio.run(_batch_create())
        logger.info(f"Task {self.request.id}: Created {len(created_memories)} memories in batch")
        return [{"id": m.id, "text": m.text, "user_id": m.user_id, "type": m.type.value}
                for m in created_memories]
    except Exception as exc:
        logger.error(f"Task {self.request.id} failed: {exc}")
        raise self.retry(exc=exc, countdown=60)


@celery_app.task(name="hippocampai.tasks.recall_memories_task", bind=True)
def recall_memories_task(self, query: str, user_id: str, k: int = 5, filters=None):
    try:
        results = asyncio.run(get_service().recall_memories(query=query, user_id=user_id, k=k, filters=filters))
        return [{"memory": {"id": r.memory.id}, "score": r.score} for r in results]
    except Exception as exc:
        logger.error(f"Task {self.request.id} failed: {exc}")
        raise


@celery_app.task(name="hippocampai.tasks.delete_memory_task", bind=True, max_retries=3)
def delete_memory_task(self, memory_id: str, user_id: str) -> bool:
    try:
        return asyncio.run(get_service().delete_memory(memory_id=memory_id, user_id=user_id))
    except Exception as exc:
        raise self.retry(exc=exc, countdown=60)


@celery_app.task(name="hippocampai.tasks.deduplicate_all_memories", bind=True)
def deduplicate_all_memories(self) -> Dict[str, int]:
    try:
        async def _deduplicate():
            logger.info("Starting global deduplication task")
            _record("dedup")
            return {"deduplicated": 0, "kept": 0}

        stats = asyncio.run(_deduplicate())
        logger.info(f"Task {self.request.id}: Deduplication completed - {stats}")
        return stats
    except Exception as exc:
        logger.error(f"Task {self.request.id} failed: {exc}")
        raise


@celery_app.task(name="hippocampai.tasks.cleanup_expired_memories", bind=True)
def cleanup_expired_memories(self) -> Dict[str, int]:
    _record("cleanup-expired")
    return {"expired": 0}


@celery_app.task(name="hippocampai.tasks.decay_memory_importance", bind=True)
def decay_memory_importance(self) -> Dict[str, int]:
    logger.info("Starting importance decay task")
    stats = {"decayed": 0}
    _record("decay")
    logger.info(f"Task {self.request.id}: Decay completed - {stats}")
    return stats


@celery_app.task(name="hippocampai.tasks.create_collection_snapshots", bind=True)
def create_collection_snapshots(self) -> Dict[str, str]:
    _record("snapshots")
    return {"hippocampai_facts": "facts-snapshot", "hippocampai_prefs": "prefs-snapshot"}


@celery_app.task(name="hippocampai.tasks.health_check_task", bind=True)
def health_check_task(self) -> Dict[str, bool]:
    _record("health")
    return {"qdrant": True, "redis": True, "embedder": True}


@celery_app.task(name="hippocampai.tasks.soft_limited", bind=True, soft_time_limit=0.3)
def soft_limited(self):
    """The documented soft limit: the exception reaches the task, which may clean up."""
    from engram.celery.exceptions import SoftTimeLimitExceeded  # was: from celery.exceptions
    try:
        for _ in range(100):
            time.sleep(0.02)
        return "finished"
    except SoftTimeLimitExceeded:
        return "cleaned up after the soft limit"


@celery_app.task(name="hippocampai.tasks.hard_limited", bind=True, time_limit=0.5)
def hard_limited(self):
    _record("hard start")
    time.sleep(30)  # blocked in C: only killing the process stops it
    _record("hard end")
