"""Celery's exception names (``celery.exceptions``), as engram raises them."""
from __future__ import annotations

from typing import Optional

from ..app import Reject as _Reject
from ..app import Retry as _Retry
from ..app import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded
from ..errors import InvalidArgument, NotSupported, TaskRevoked, Timeout
from ..tasks import Ignore, MaxRetriesExceededError

__all__ = ["SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated", "Retry", "Reject", "MaxRetriesExceededError",
           "TaskRevokedError", "TimeoutError", "NotRegistered", "ImproperlyConfigured",
           "NotSupported", "WorkerLostError", "Ignore"]


class Retry(_Retry):
    """What ``self.retry()`` raises; raising it yourself retries after ``countdown``."""

    def __init__(self, message: str = "", exc: Optional[BaseException] = None,
                 when: Optional[float] = None, countdown: Optional[float] = None,
                 **kw: object) -> None:
        delay = countdown if countdown is not None else when
        super().__init__(delay=delay, error=message or (repr(exc) if exc else "retry requested"))
        self.exc = exc


class Reject(_Reject):
    """Raise in a task to send its message to the dead-letter queue (``requeue`` is
    refused: a rejected task never runs again by itself; redrive the DLQ instead)."""

    def __init__(self, reason: object = "rejected by task", requeue: bool = False) -> None:
        if requeue:
            raise NotSupported("Reject(requeue=True): raise Retry(countdown=0) to run it again")
        super().__init__(str(reason))


class TaskRevokedError(TaskRevoked):
    """The task was revoked (or expired) before it finished."""


class TimeoutError(Timeout):  # noqa: A001 - Celery's name
    """``AsyncResult.get(timeout=)`` ran out of time."""


class NotRegistered(KeyError):
    """The task is not registered with this app."""


class ImproperlyConfigured(InvalidArgument):
    """A setting engram does not know, or a value it cannot honour."""


class WorkerLostError(Exception):
    """Kept for imports; engram redelivers the task of a lost worker."""


from ..tasks import KNOWN_EXCEPTIONS as _KNOWN  # noqa: E402

_KNOWN.update({"NotRegistered": NotRegistered, "TaskRevokedError": TaskRevokedError,
               "WorkerLostError": WorkerLostError})
