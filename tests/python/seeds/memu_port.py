# memu_port.py — MemU's Celery side (seed 000: celery_app.py, tasks.py, the CeleryDispatcher
# and worker.py of pull request #218) as a user ports it: the imports and the Celery(...)
# constructor changed, nothing else. MemoryService and the pydantic input model are small
# stand-ins with the same calls; each memorize() call is recorded in $MEMU_OUT.
import asyncio
import logging
import os
from typing import Any, Dict, Optional

from engram.celery import Celery  # was: from celery import Celery
from engram.celery.signals import setup_logging  # was: from celery.signals import setup_logging

# ------------------------------------------------------------------------- celery_app.py
REDIS_URL = os.getenv("MEMU_BROKER", "/var/lib/memu/log")  # was: redis://host:port/db

celery_app = Celery("memu_worker", broker=REDIS_URL, include=[])  # was: backend=REDIS_URL too


@setup_logging.connect
def setup_celery_logging_config(**kwargs):
    """Override Celery's default logging with structured JSON logging."""
    out = os.getenv("MEMU_OUT")
    if out:
        with open(out, "a") as f:
            f.write(f"{os.getpid()} setup_logging\n")


celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    task_acks_late=True,
    task_acks_on_failure_or_timeout=True,
    task_reject_on_worker_lost=True,
    task_soft_time_limit=int(os.getenv("CELERY_TASK_SOFT_TIME_LIMIT", "300")),  # 5 minutes
    task_time_limit=int(os.getenv("CELERY_TASK_TIME_LIMIT", "360")),  # 6 minutes
    result_expires=int(os.getenv("CELERY_RESULT_EXPIRES", "86400")),  # 24 hours
    result_compression="gzip",
    result_extended=True,
    task_track_started=True,
    task_send_sent_event=True,
    task_store_eager_result=True,  # For testing
    worker_prefetch_multiplier=int(os.getenv("CELERY_WORKER_PREFETCH", "1")),
    worker_max_tasks_per_child=int(os.getenv("CELERY_WORKER_MAX_TASKS", "100")),
    worker_max_memory_per_child=int(os.getenv("CELERY_WORKER_MAX_MEMORY", "500000")),  # 500MB
    broker_connection_retry_on_startup=True,
    broker_pool_limit=int(os.getenv("CELERY_BROKER_POOL_LIMIT", "10")),
    task_default_rate_limit=os.getenv("CELERY_TASK_RATE_LIMIT", "100/h"),
)

# ------------------------------------------------------------------------------ tasks.py
logger = logging.getLogger(__name__)


class ValidationError(Exception):
    pass


class MemorizeTaskInput:
    """Stand-in for the pydantic model: the checks that matter here."""

    def __init__(self, resource_url, modality, user=None):
        if not resource_url.startswith(("http://", "https://")) or ".." in resource_url:
            raise ValidationError(f"resource_url {resource_url!r} is not allowed")
        if modality not in ("conversation", "document", "image", "video", "audio"):
            raise ValidationError(f"modality {modality!r} is not supported")
        self.resource_url, self.modality, self.user = resource_url, modality, user


class MemoryService:
    async def memorize(self, *, resource_url, modality, user=None, background=False):
        if background:
            # the "before" version of memorize(background=True): a direct Celery call
            task = process_memory_task.delay(resource_url, modality, user)
            return {"status": "queued", "task_id": task.id}
        out = os.getenv("MEMU_OUT")
        n = 0
        if out:
            if os.path.exists(out):
                n = sum(1 for line in open(out) if line.split()[1:] == ["memorize", resource_url])
            with open(out, "a") as f:
                f.write(f"{os.getpid()} memorize {resource_url}\n")
        if "flaky" in resource_url and n == 0:
            raise ConnectionError("the embedding service is down")
        await asyncio.sleep(0)
        return {"items": [{"resource_url": resource_url, "modality": modality}], "user": user}


MODALITY_TIMEOUTS = {"conversation": (180, 210), "document": (300, 360), "image": (120, 150),
                     "video": (600, 660), "audio": (300, 360)}


def run_async(coro):
    """Helper to run async code in a sync Celery worker."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop.run_until_complete(coro)


def calculate_retry_countdown(retry_count: int, base: int = 60, max_delay: int = 3600) -> int:
    import random
    base = float(os.getenv("MEMU_RETRY_BASE", base))
    delay = base * (2 ** retry_count)
    jitter = random.uniform(0, delay * 0.1)
    return min(delay + jitter, max_delay)


@celery_app.task(
    bind=True,
    name="memu.tasks.process_memory",
    autoretry_for=(Exception,),      # Auto-retry on exceptions
    retry_backoff=True,               # Enable exponential backoff
    retry_backoff_max=3600,           # Max 1 hour between retries
    retry_jitter=True,                # Add jitter
    max_retries=5,                    # Max total retries
)
def process_memory_task(self, resource_url: str, modality: str, user: Optional[Dict[str, Any]] = None):
    task_id = self.request.id
    if modality in MODALITY_TIMEOUTS:
        soft_limit, hard_limit = MODALITY_TIMEOUTS[modality]
        self.soft_time_limit = soft_limit
        self.time_limit = hard_limit
    try:
        validated_input = MemorizeTaskInput(resource_url=resource_url, modality=modality, user=user)
    except ValidationError as e:
        logger.error(f"Task {task_id}: Input validation failed")
        raise ValueError(f"Invalid input: {e}") from e
    service = MemoryService()
    try:
        result = run_async(service.memorize(resource_url=validated_input.resource_url,
                                            modality=validated_input.modality,
                                            user=validated_input.user))
        return result
    except Exception as e:
        if self.request.retries >= self.max_retries:
            raise
        countdown = calculate_retry_countdown(self.request.retries)
        raise self.retry(exc=e, countdown=countdown, max_retries=self.max_retries)


# ------------------------------------------------------------------ events/dispatcher.py
class CeleryDispatcher:
    def __init__(self, event_manager=None, enabled: bool = True, task_options: Optional[Dict] = None):
        self.enabled = enabled
        self.task_options = task_options or {}
        event_manager.register_dispatcher(self)

    def on_memory_saved(self, data: Dict[str, Any]) -> Optional[str]:
        """Dispatch 'on_memory_saved' event to Celery"""
        if not self.enabled:
            return None
        task = process_memory_task.apply_async(
            args=[data['resource_url'], data['modality'], data.get('user')],
            **self.task_options
        )
        return task.id

    on_memory_updated = on_memory_saved


# ---------------------------------------------------------------------------- worker.py
app = celery_app
