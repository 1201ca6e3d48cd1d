"""Drop-in for an in-process event manager: ``on`` / ``off`` / ``emit`` and dispatchers
with ``on_<event>`` methods — but ``emit`` appends durably and listeners run in workers.

Before (in-process; a crash loses whatever was not yet handled)::

    manager = EventManager()
    manager.on("memory.saved", reindex)
    manager.register_dispatcher(AuditDispatcher())   # has on_memory_saved(data) ...
    manager.emit("memory.saved", {"memory_id": "m1", "text": "..."})   # runs reindex now

After (engram)::

    manager = engram.EventManager("/var/lib/memory-log")
    manager.on("memory.saved", reindex)
    manager.register_dispatcher(AuditDispatcher())
    manager.emit("memory.saved", {"memory_id": "m1", "text": "..."})   # durable append
    # in the worker processes (same registrations, e.g. at import of the module):
    #   python -m engram worker myservice.events:manager

Listeners get the event's data (or ``(event, data)`` when they take two arguments). One
listener's exception does not stop the others; the event is then retried with the
group's backoff (so listeners must be idempotent: delivery is at least once) and after
``max_deliver`` attempts it is in the dead-letter queue.
"""
from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Union

from .app import App, RunStats, match_type
from .client import Event, Log, Offset
from .errors import InvalidArgument

__all__ = ["EventManager", "ListenerError", "MEMORY_EVENTS"]

logger = logging.getLogger("engram.events")

MEMORY_EVENTS = ("memory.saved", "memory.updated", "memory.deleted", "memory.queried")

Listener = Callable[..., Any]


class ListenerError(Exception):
    """One or more listeners of an event raised; ``errors`` lists (listener, exception)."""

    def __init__(self, event: str, errors: List[tuple]) -> None:
        names = ", ".join(f"{getattr(l, '__qualname__', l)}: {type(e).__name__}: {e}" for l, e in errors)
        super().__init__(f"{len(errors)} listener(s) of {event} failed: {names}"[:240])
        self.errors = errors


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values()):
            return 2
        return len(params)
    except (TypeError, ValueError):
        return 1


class EventManager:
    """Event manager whose ``emit`` is a durable append to ``topic`` and whose listeners
    run in the workers of consumer group ``group``."""

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], *, topic: str = "memory",
                 group: str = "listeners", validator: Optional[Callable[[str, Any], Any]] = None,
                 **group_config: Any) -> None:
        self.app = App(target, group=group, topic=topic, **group_config)
        self.app.add_handler("*", self._dispatch, name="EventManager")
        self.validator = validator
        self._listeners: Dict[str, List[Listener]] = {}
        self._dispatchers: List[Any] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<engram.EventManager {self.app.topic}/{self.app.group_name}>"

    # -- registration -----------------------------------------------------------------------
    def on(self, event: str, callback: Optional[Listener] = None) -> Any:
        """Registers ``callback`` for ``event`` (a type, "memory.*" or "*"). Without a
        callback it is a decorator."""
        if not isinstance(event, str) or not event:
            raise InvalidArgument(f"event must be a non-empty str, got {event!r}")

        def add(cb: Listener) -> Listener:
            if not callable(cb):
                raise TypeError("callback must be callable")
            with self._lock:
                self._listeners.setdefault(event, []).append(cb)
            return cb
        return add(callback) if callback is not None else add

    def off(self, event: str, callback: Optional[Listener] = None) -> bool:
        """Removes ``callback`` (or every listener) from ``event``; True if one was removed."""
        with self._lock:
            cbs = self._listeners.get(event)
            if not cbs:
                return False
            if callback is None:
                del self._listeners[event]
                return True
            try:
                cbs.remove(callback)
            except ValueError:
                return False
            if not cbs:
                del self._listeners[event]
            return True

    def listeners(self, event: str) -> List[Listener]:
        """The callbacks ``event`` would run (including wildcard registrations)."""
        with self._lock:
            out: List[Listener] = []
            for pat, cbs in self._listeners.items():
                if match_type(pat, event):
                    out.extend(cbs)
            return out

    def register_dispatcher(self, dispatcher: Any) -> None:
        """Adds an object whose ``on_<event>`` methods (``on_memory_saved`` for
        "memory.saved") are called for those events."""
        if dispatcher is None:
            raise TypeError("dispatcher must be an object with on_<event> methods")
        with self._lock:
            if dispatcher not in self._dispatchers:
                self._dispatchers.append(dispatcher)

    def unregister_dispatcher(self, dispatcher: Any) -> bool:
        """Removes a dispatcher; True if it was registered."""
        with self._lock:
            if dispatcher in self._dispatchers:
                self._dispatchers.remove(dispatcher)
                return True
            return False

    # -- emitting -------------------------------------------------------------------------
    def emit(self, event: str, data: Any = None, *, key: Optional[str] = None,
             idempotency_key: Optional[str] = None) -> Offset:
        """Appends the event durably and returns its offset; listeners run in workers.
        With a validator, invalid data raises (ValidationError) and nothing is appended."""
        if not isinstance(event, str):
            raise TypeError(f"event must be a str, got {type(event).__name__}")
        if self.validator is not None:
            self.validator(event, data)
        if key is None and isinstance(data, dict) and isinstance(data.get("memory_id"), str):
            key = data["memory_id"]
        return self.app.send(event, data if data is not None else {}, key=key,
                             idempotency_key=idempotency_key)

    # Convenience names for the four memory events.
    def on_memory_saved(self, data: Any, **kw: Any) -> Offset:
        """``emit("memory.saved", data)``."""
        return self.emit("memory.saved", data, **kw)

    def on_memory_updated(self, data: Any, **kw: Any) -> Offset:
        """``emit("memory.updated", data)``."""
        return self.emit("memory.updated", data, **kw)

    def on_memory_deleted(self, data: Any, **kw: Any) -> Offset:
        """``emit("memory.deleted", data)``."""
        return self.emit("memory.deleted", data, **kw)

    def on_memory_queried(self, data: Any, **kw: Any) -> Offset:
        """``emit("memory.queried", data)``."""
        return self.emit("memory.queried", data, **kw)

    # -- running --------------------------------------------------------------------------
    def _dispatch(self, ev: Event) -> None:
        data = ev.data
        calls: List[Listener] = self.listeners(ev.type)
        method = "on_" + ev.type.replace(".", "_").replace("-", "_")
        with self._lock:
            dispatchers = list(self._dispatchers)
        for d in dispatchers:
            m = getattr(d, method, None)
            if callable(m):
                calls.append(m)
        errors = []
        for cb in calls:
            try:
                if _arity(cb) >= 2:
                    cb(ev.type, data)
                else:
                    cb(data)
            except Exception as e:  # one listener's failure never stops the others
                logger.warning("listener %s of %s failed: %s", getattr(cb, "__qualname__", cb), ev.type, e)
                errors.append((cb, e))
        if errors:
            raise ListenerError(ev.type, errors)

    def run(self, concurrency: int = 1, timeout: Optional[float] = None, **kw: Any) -> RunStats:
        """Runs the listeners in workers until stopped (see :meth:`App.run`)."""
        return self.app.run(concurrency, timeout, **kw)

    def run_until_idle(self, idle: float = 0.5, **kw: Any) -> RunStats:
        """Handles what is pending and returns once nothing arrived for ``idle`` seconds."""
        kw.setdefault("wait", min(idle, 0.2))
        return self.app.run(kw.pop("concurrency", 1), kw.pop("timeout", None), idle_timeout=idle,
                            install_signals=False, **kw)

    def stop(self) -> None:
        """Stops a running :meth:`run`."""
        self.app.stop()
