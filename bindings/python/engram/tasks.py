"""A Celery-style task facade over an :class:`engram.App`.

Before (Celery)::

    app = Celery("memory", broker="redis://localhost:6379/0", backend="redis://...")

    @app.task
    def embed(memory_id, text): ...

    r = embed.delay("m1", "hello")
    r.get(timeout=10)

After (engram)::

    app = engram.App("/var/lib/memory-log", group="tasks", topic="tasks")

    @app.task
    def embed(memory_id, text): ...

    r = embed.delay("m1", "hello")      # one durable append
    r.get(timeout=10)                    # the handler's return value, kept with its ack

Workers: ``python -m engram worker mymodule:app``. A task's arguments and return value
must be JSON-serialisable. ``queue=`` names the topic the task goes to (a worker App on
that topic runs it). A task that raises fails at once (``status == "FAILURE"``, the
event goes to the dead-letter queue with the error) unless ``autoretry=True``, in which
case it is retried with the group's backoff up to ``max_deliver`` attempts.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

from .client import Duration, Event, Group, _ms, _str
from .errors import Busy, InvalidArgument, NotFound, TaskFailed, TaskRevoked, Timeout

if TYPE_CHECKING:
    from .app import App

__all__ = ["Task", "AsyncResult"]

_STATUS = {"pending": "PENDING", "in_flight": "STARTED", "retrying": "RETRY", "done": "SUCCESS",
           "dead": "FAILURE", "skipped": "PENDING"}


def _type_for(name: str) -> str:
    t = "task." + "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
    return t.strip(".")


class Task:
    """A function registered with ``@app.task``. Calling it runs it here; ``delay`` and
    ``apply_async`` send it to the workers."""

    def __init__(self, app: "App", fn: Callable[..., Any], *, name: Optional[str] = None,
                 queue: Optional[str] = None, autoretry: bool = False) -> None:
        if not callable(fn):
            raise TypeError("a task must be callable")
        self.app = app
        self.fn = fn
        self.name = _str(name, "name", optional=True) or f"{fn.__module__}.{fn.__qualname__}"
        self.type = _type_for(self.name)
        self.queue = _str(queue, "queue", optional=True) or app.topic
        self.autoretry = autoretry
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        app.add_handler(self.type, self._handle, name=self.name)

    def __repr__(self) -> str:
        return f"<engram.Task {self.name} -> {self.queue}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def _handle(self, ev: Event) -> Any:
        body = ev.json()
        try:
            value = self.fn(*body.get("args", []), **body.get("kwargs", {}))
        except Exception as e:
            if self.autoretry:
                raise
            from .app import Reject
            raise Reject(f"{type(e).__name__}: {e}"[:250]) from e
        # Wrapped, so a task returning None still leaves a result behind.
        return json.dumps({"value": value}, separators=(",", ":"), default=str).encode()

    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        """Sends the task with these arguments; returns a handle to its result."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None, *,
                    countdown: Optional[Duration] = None, queue: Optional[str] = None,
                    task_id: Optional[str] = None, **_ignored: Any) -> "AsyncResult":
        """Sends the task. ``countdown``: seconds before it may run; ``queue``: the topic
        (default the task's); ``task_id``: an idempotency key — sending the same id twice
        inside the dedup window runs the task once."""
        if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
            raise TypeError("args must be a list or tuple")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("kwargs must be a dict")
        topic = _str(queue, "queue", optional=True) or self.queue
        body = {"args": list(args), "kwargs": kwargs or {}, "task": self.name}
        try:
            json.dumps(body)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"task {self.name}: arguments are not JSON-serialisable: {e}") from None
        _ms(countdown, "countdown")
        off = self.app.log.append(topic, self.type, body, delay=countdown or None,
                                  idempotency_key=task_id, headers={"task": self.name})
        group = Group(self.app.log, topic, self.app.group_name)
        try:
            group.info()
        except NotFound:
            self.app.log.group(topic, self.app.group_name, **self.app.group_config)
        return AsyncResult(group, off)


class AsyncResult:
    """A handle on one sent task. ``id`` is "topic:offset"."""

    def __init__(self, group: Group, offset: int) -> None:
        self.group = group
        self.offset = int(offset)
        self._revoked = False

    @property
    def id(self) -> str:
        return f"{self.group.topic}:{self.offset}"

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} {self.status}>"

    @property
    def status(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED (Celery's names)."""
        st = self.group.status(self.offset)
        if st.state == "done" and (self._revoked or st.result is None):
            return "REVOKED"
        return _STATUS.get(st.state, "PENDING")

    state = status

    def ready(self) -> bool:
        """True once the task succeeded, failed or was revoked."""
        return self.status in ("SUCCESS", "FAILURE", "REVOKED")

    def successful(self) -> bool:
        return self.status == "SUCCESS"

    def failed(self) -> bool:
        return self.status == "FAILURE"

    def get(self, timeout: Optional[Duration] = None, interval: float = 0.005) -> Any:
        """Waits for the task and returns its return value. Raises TaskFailed when it
        failed, TaskRevoked when revoked, engram.Timeout after ``timeout`` seconds."""
        t = _ms(timeout, "timeout")
        deadline = None if t is None else time.monotonic() + t / 1000
        pause = 0.001
        while True:
            st = self.group.status(self.offset)
            if st.state == "done":
                if st.result is None:
                    raise TaskRevoked(f"task {self.id} was revoked")
                return json.loads(st.result)["value"]
            if st.state == "dead":
                raise TaskFailed(f"task {self.id} failed: {st.last_error or 'dead-lettered'}")
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"task {self.id} not finished after {t / 1000:g}s (state {st.state})")
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, max(interval, 0.001) * 10)

    @property
    def result(self) -> Any:
        """The return value when SUCCESS, else None."""
        st = self.group.status(self.offset)
        if st.state == "done" and st.result is not None:
            return json.loads(st.result)["value"]
        return None

    def revoke(self) -> bool:
        """Cancels the task if it has not started; returns False when it is running or
        already finished."""
        try:
            self.group.cancel(self.offset)
        except Busy:
            return False
        except Exception as e:  # already done or dead
            from .errors import AlreadyDone, Dead
            if isinstance(e, (AlreadyDone, Dead)):
                return False
            raise
        self._revoked = True
        return True
