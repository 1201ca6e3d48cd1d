"""Celery's signals (``celery.signals``, re-exported as :mod:`engram.celery.signals`), kept
here because the task layer (:mod:`engram.tasks`) and the worker send them. Connecting to
one engram's workers do not send raises NotSupported, so a receiver is never silently
never called. A receiver that raises is logged and does not stop the task or the worker
(as in Celery)."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

from .errors import NotSupported

__all__ = ["Signal", "setup_logging", "worker_ready", "worker_shutdown", "worker_process_init",
           "task_prerun", "task_postrun", "task_success", "task_failure", "task_retry",
           "task_revoked", "before_task_publish", "after_task_publish"]

logger = logging.getLogger("engram.celery")


class Signal:
    def __init__(self, name: str, sent: bool = True) -> None:
        self.name = name
        self.sent = sent
        self.receivers: List[Callable[..., Any]] = []

    def connect(self, fn: Optional[Callable[..., Any]] = None, **kw: Any) -> Any:
        """Registers a receiver (also as a decorator, with or without arguments)."""
        if not self.sent:
            raise NotSupported(f"signal {self.name} is not sent by engram's workers")
        if fn is None:
            return lambda f: self.connect(f)
        self.receivers.append(fn)
        return fn

    def disconnect(self, fn: Callable[..., Any], **kw: Any) -> None:
        self.receivers = [r for r in self.receivers if r is not fn]

    def send(self, sender: Any = None, **kw: Any) -> List[Any]:
        out = []
        for r in list(self.receivers):
            try:
                out.append((r, r(sender=sender, signal=self, **kw)))
            except Exception as e:  # a receiver's failure is not the task's
                logger.exception("signal %s: receiver %r failed", self.name, r)
                out.append((r, e))
        return out

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


# Sent before a worker starts (in `python -m engram worker` and App.run).
setup_logging = Signal("setup_logging")
# A worker of the app starts serving (sender None) and has stopped (sender None).
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
# In each worker process of process mode (the prefork pool), before its first task.
worker_process_init = Signal("worker_process_init")
# Around each run of a task in a worker, with Celery's arguments (sender: the task).
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
# Not sent yet: connecting raises NotSupported.
task_revoked = Signal("task_revoked", sent=False)
before_task_publish = Signal("before_task_publish", sent=False)
after_task_publish = Signal("after_task_publish", sent=False)
