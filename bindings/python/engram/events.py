"""An event manager - ``on`` / ``off`` / ``emit`` and dispatchers with ``on_<event>``
methods - whose ``emit`` appends durably and whose listeners run in this process, each
in a consumer group of its own (an :class:`engram.EventBus` underneath).

    manager = engram.EventManager("/var/lib/memory-log")
    manager.on("memory.saved", reindex)                 # reindex(data) or (event, data)
    manager.register_dispatcher(AuditDispatcher())      # has on_memory_saved(data) ...
    manager.start()                                     # listeners run in this process
    manager.emit("memory.saved", {"memory_id": "m1", "text": "..."})

Event names may be dotted ("memory.saved") or in the ``on_`` form MemU uses
("on_memory_saved"); either reaches a dispatcher's ``on_memory_saved``. Listeners may be
plain or ``async def``. A listener that raises is retried alone (``on_error="retry"``,
the default; after ``max_deliver`` attempts the event is in that listener's dead-letter
queue) or logged and skipped (``on_error="log"``, MemU's policy). ``emit(..., wait=s)``
returns once this process's listeners handled the event. :mod:`engram.compat.memu` has
MemU's exact names and signatures on top of this class.
"""
from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .bus import EventBus, Subscription
from .event import Event
from .log import Log
from .message import Offset
from .errors import InvalidArgument

__all__ = ["EventManager", "MEMORY_EVENTS", "method_name"]

logger = logging.getLogger("engram.events")

MEMORY_EVENTS = ("memory.saved", "memory.updated", "memory.deleted", "memory.queried")

Listener = Callable[..., Any]


def method_name(event: str) -> str:
    """The dispatcher method for ``event``: "on_memory_saved" for "memory.saved" and for
    "on_memory_saved" itself."""
    if event.startswith("on_"):
        return event
    return "on_" + event.replace(".", "_").replace("-", "_")


def _arity(fn: Callable[..., Any]) -> int:
    """2 when ``fn`` takes (event, data), else 1 (a Mock's ``*args`` counts as 1)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 1
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return 2 if len(pos) >= 2 else 1


class EventManager:
    """Event manager whose ``emit`` is a durable append to ``topic`` and whose listeners
    run in this process after :meth:`start` (or in any process running :meth:`run`)."""

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], *, topic: str = "memory",
                 group: str = "listeners", validator: Optional[Callable[[str, Any], Any]] = None,
                 on_error: str = "retry", wait: Optional[float] = None, **options: Any) -> None:
        self.bus = EventBus(target, topic=topic, group=group, on_error=on_error, **options)
        self.validator = validator
        self.wait = wait
        self._lock = threading.RLock()
        self._listeners: Dict[Tuple[str, Any], Subscription] = {}   # (event, callback) -> sub
        self._dispatchers: List[Any] = []
        # Dispatcher methods are subscribed for these names (both spellings of each).
        self._known: List[str] = list(MEMORY_EVENTS) + [method_name(e) for e in MEMORY_EVENTS]

    def __repr__(self) -> str:
        return f"<engram.EventManager {self.bus.topic} ({len(self._listeners)} listeners)>"

    @property
    def log(self) -> Log:
        return self.bus.log

    # -- registration -----------------------------------------------------------------------
    def _subscribe(self, event: str, cb: Listener, name: Optional[str] = None) -> Subscription:
        two = _arity(cb) >= 2

        def adapt(ev: Event) -> Any:
            return (ev.type, ev.data) if two else ev.data
        fn: Callable[..., Any] = cb
        if two:
            def call(args: Any) -> Any:
                return cb(*args)
            call.__qualname__ = getattr(cb, "__qualname__", type(cb).__name__)
            call.__module__ = getattr(cb, "__module__", "")
            fn = call
            if inspect.iscoroutinefunction(cb):
                async def afn(args: Any) -> Any:
                    return await cb(*args)
                afn.__qualname__, afn.__module__ = fn.__qualname__, fn.__module__
                fn = afn
        return self.bus.add_subscriber(event, fn, adapt=adapt, name=name)

    def on(self, event: str, callback: Optional[Listener] = None) -> Any:
        """Registers ``callback`` for ``event`` (a type, "memory.*" or "*"); its group is
        created now. Without a callback it is a decorator."""
        if not isinstance(event, str) or not event:
            raise InvalidArgument(f"event must be a non-empty str, got {event!r}")

        def add(cb: Listener) -> Listener:
            if not callable(cb):
                raise TypeError("callback must be callable")
            with self._lock:
                if (event, cb) in self._listeners:
                    return cb
                self._listeners[(event, cb)] = self._subscribe(event, cb)
                if event not in self._known:
                    self._known.append(event)
            return cb
        return add(callback) if callback is not None else add

    def off(self, event: str, callback: Optional[Listener] = None) -> bool:
        """Removes ``callback`` (or every listener) from ``event`` and deletes its group;
        True if one was removed."""
        with self._lock:
            keys = [k for k in self._listeners if k[0] == event and (callback is None or k[1] == callback)]
            subs = [self._listeners.pop(k) for k in keys]
        for s in subs:
            self.bus.unsubscribe(s.id)
        return bool(subs)

    def listeners(self, event: str) -> List[Listener]:
        """The callbacks an event named ``event`` runs (wildcards and dispatchers included)."""
        probe = Event((0, self.bus.topic, event, None, b"", None, {}, None, 0, 0, 0, 0))
        subs = {s.id for s in self.bus.subscribers(event, probe)}
        with self._lock:
            return [k[1] for k, s in self._listeners.items() if s.id in subs]

    def register_dispatcher(self, dispatcher: Any) -> None:
        """Adds an object whose ``on_<event>`` methods (``on_memory_saved`` for
        "memory.saved" and "on_memory_saved") run for the known events: the memory
        events and every event a listener was registered for."""
        if dispatcher is None:
            raise TypeError("dispatcher must be an object with on_<event> methods")
        with self._lock:
            if any(d is dispatcher for d in self._dispatchers):
                return
            self._dispatchers.append(dispatcher)
            by_method: Dict[str, List[str]] = {}
            for ev in self._known:
                by_method.setdefault(method_name(ev), []).append(ev)
            for mname, events in by_method.items():
                m = getattr(dispatcher, mname, None)
                if callable(m):
                    for ev in events:
                        self._listeners[(ev, m)] = self._subscribe(ev, m, name=f"{_owner_name(dispatcher)}.{mname}.{ev}")

    def unregister_dispatcher(self, dispatcher: Any) -> bool:
        """Removes a dispatcher and its methods' groups; True if it was registered."""
        with self._lock:
            if not any(d is dispatcher for d in self._dispatchers):
                return False
            self._dispatchers = [d for d in self._dispatchers if d is not dispatcher]
            keys = [k for k in self._listeners if getattr(k[1], "__self__", None) is dispatcher
                    or k[1] is getattr(dispatcher, method_name(k[0]), None)]
            subs = [self._listeners.pop(k) for k in keys]
        for s in subs:
            self.bus.unsubscribe(s.id)
        return True

    # -- emitting -------------------------------------------------------------------------
    def emit(self, event: str, data: Any = None, *, key: Optional[str] = None,
             idempotency_key: Optional[str] = None, wait: Optional[float] = None) -> Offset:
        """Appends the event durably and returns its offset. With ``wait`` (or the
        manager's), returns once this process's listeners handled it. With a validator,
        invalid data raises (ValidationError) and nothing is appended."""
        if not isinstance(event, str):
            raise TypeError(f"event must be a str, got {type(event).__name__}")
        if self.validator is not None:
            self.validator(event, data)
        if key is None and isinstance(data, dict) and isinstance(data.get("memory_id"), str):
            key = data["memory_id"]
        w = wait if wait is not None else self.wait
        return self.bus.append(event, data, headers={}, key=key, idempotency_key=idempotency_key,
                               wait=w if self.bus.running else None)

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
    def start(self) -> "EventManager":
        """Runs the listeners in this process (consumer threads) until :meth:`stop`."""
        self.bus.start()
        return self

    def run(self, **kw: Any) -> None:
        """Runs the listeners in the calling process until SIGTERM/SIGINT (a worker)."""
        self.bus.run(**kw)

    def run_until_idle(self, idle: float = 0.5, **kw: Any) -> None:
        """Handles what is pending and returns once nothing arrived for ``idle`` seconds."""
        self.bus.run_until_idle(idle, **kw)

    def stop(self) -> None:
        """Stops the listeners' consumers in this process."""
        self.bus.stop()

    def close(self) -> None:
        self.bus.close()


def _owner_name(obj: Any) -> str:
    t = type(obj)
    mod = t.__module__ if t.__module__ not in ("__main__", "builtins") else ""
    return f"{mod}.{t.__qualname__}" if mod else t.__qualname__
