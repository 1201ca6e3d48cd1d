"""``celery.result.AsyncResult`` over engram: ``AsyncResult(task_id)`` from the id alone."""
from __future__ import annotations

from typing import Any, Optional

from ..group import Group
from ..tasks import AsyncResult as _Native
from ..tasks import EagerResult
from ..tasks import _exception_from, _locate
from .exceptions import TaskRevokedError, TimeoutError

__all__ = ["AsyncResult", "EagerResult"]


class AsyncResult(_Native):
    """Celery's AsyncResult: ``AsyncResult(task_id, app=celery_app)`` (``app`` defaults
    to the current app). States are Celery's; PENDING also for an id nobody sent and for
    a result past ``result_expires``. ``get()`` re-raises the task's own exception type."""

    def __init__(self, id: Any, backend: Any = None, task_name: Optional[str] = None,
                 app: Any = None, parent: Any = None, **kw: Any) -> None:
        if isinstance(id, Group):  # made by apply_async: (group, offset)
            super().__init__(id, backend, app=app, task_id=kw.get("task_id"))
            return
        from . import _native_app
        native = _native_app(app)
        where = _locate(native, id)
        if where is None:
            super().__init__(Group(native.log, native.topic, native.group_name), 0, app=native, task_id=id)
        else:
            super().__init__(Group(native.log, where[0], native.group_name), where[1], app=native, task_id=id)
        self.task_name = task_name

    def _failure(self, error: str) -> BaseException:
        return _exception_from(error)

    def _revocation(self) -> BaseException:
        return TaskRevokedError(f"task {self.id} was revoked")

    def _timeout(self, t: float, state: str) -> BaseException:
        return TimeoutError(f"The operation timed out ({t:g}s; task {self.id} is {state})")
