"""``celery.signals`` that engram's workers send. Connecting to one they do not send raises
NotSupported, so a receiver is never silently never called."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

from ..errors import NotSupported

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
            out.append((r, r(sender=sender, signal=self, **kw)))
        return out

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


# Sent before a worker starts (in `python -m engram worker` and App.run).
setup_logging = Signal("setup_logging")
# Not sent yet: connecting raises NotSupported.
worker_ready = Signal("worker_ready", sent=False)
worker_shutdown = Signal("worker_shutdown", sent=False)
worker_process_init = Signal("worker_process_init", sent=False)
task_prerun = Signal("task_prerun", sent=False)
task_postrun = Signal("task_postrun", sent=False)
task_success = Signal("task_success", sent=False)
task_failure = Signal("task_failure", sent=False)
task_retry = Signal("task_retry", sent=False)
task_revoked = Signal("task_revoked", sent=False)
before_task_publish = Signal("before_task_publish", sent=False)
after_task_publish = Signal("after_task_publish", sent=False)
