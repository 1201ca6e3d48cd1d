"""``@on_event(tract, event)`` handler registries on a durable log: handlers discovered
from a package's handler modules, ``"*"`` wildcards for the tract, the event or both, a
handler context, and a timeout per handler - each handler in a consumer group of its own
(an :class:`engram.EventBus` underneath), run in this process after :meth:`TractApp.start`.

    from engram.tracts import on_event, TractApp

    @on_event("memory", "saved", timeout=5)
    async def index(ctx):                 # ctx.msg, ctx.app, ctx.tract, ctx.event
        await search.add(ctx.msg["memory_id"], ctx.msg["text"])

    tracts = TractApp("/var/lib/memory-log")
    tracts.discover("myservice")          # imports myservice's handler modules
    tracts.start()
    tracts.emit("memory", "saved", {...}) # durable append, type "memory.saved"

A handler gets a :class:`HandlerContext` (``msg`` - also ``message`` -, ``app`` the name
of the app owning the handler, ``tract``, ``event``, plus the stored ``raw`` event). It
may be a plain or an ``async`` function. The handlers of one event run concurrently,
exact (tract, event) registrations first, then (tract, "*"), ("*", event), ("*", "*")
when the pool (``workers``) is smaller. Each handler's outcome is its own: one that
fails or passes its timeout is retried alone (``on_error="retry"``, then its
dead-letter queue) or logged (``on_error="log"``); the others are not run again.
:mod:`engram.compat.solstone` has solstone's exact module-level API on top of this.
"""
from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .bus import EventBus
from .event import Event
from .log import Log
from .message import Offset, _ms
from .errors import InvalidArgument

__all__ = ["on_event", "HandlerContext", "TractApp", "TractHandler", "registry", "handler_rank",
           "HANDLER_MODULES"]

logger = logging.getLogger("engram.tracts")

# Modules discover() imports: these names, or names ending in "_" + one of them.
HANDLER_MODULES = ("events", "handlers")


@dataclass
class TractHandler:
    """One ``@on_event`` registration."""

    tract: str
    event: str
    fn: Callable[..., Any]
    timeout: Optional[float] = None
    app: str = ""

    def matches(self, tract: str, event: str) -> bool:
        return self.tract in ("*", tract) and self.event in ("*", event)


def handler_rank(tract: str, event: str) -> int:
    """The order the handlers of one event start in: 0 exact, 1 (tract, "*"),
    2 ("*", event), 3 ("*", "*")."""
    if tract != "*":
        return 0 if event != "*" else 1
    return 2 if event != "*" else 3


@dataclass
class HandlerContext:
    """What a handler receives."""

    msg: Any                # the emitted message (decoded JSON, text or bytes)
    app: str                # the name of the app that owns the handler
    tract: str
    event: str
    raw: Optional[Event] = None  # the stored event: offset, attempt, headers ...
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> Any:
        """The emitted message (``msg``)."""
        return self.msg

    @property
    def attempt(self) -> int:
        return self.raw.attempt if self.raw is not None else 0


registry: List[TractHandler] = []  # where the module-level @on_event puts handlers
_registry_lock = threading.Lock()
_discovering: Optional[str] = None  # the app discover() is importing


def _check_part(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value != "*" and (not value or not all(c.isalnum() or c in "_-" for c in value.replace(".", ""))
                         or value.startswith(".") or value.endswith(".") or ".." in value):
        raise InvalidArgument(f"{what} {value!r}: use words of [A-Za-z0-9_-] joined by dots, or '*'")
    return value


def _app_of(fn: Callable[..., Any]) -> str:
    """The app a handler belongs to: the one being discovered, else the package holding
    its module ("alpha" for apps.alpha.events), else the module's name."""
    if _discovering is not None:
        return _discovering
    parts = (getattr(fn, "__module__", "") or "unknown").split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]


def on_event(tract: str, event: str, *, timeout: Optional[float] = None,
             app: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register the function for (``tract``, ``event``); either may be "*".
    ``timeout``: seconds per call; ``app``: the owning app's name (default: see
    :class:`HandlerContext`)."""
    _check_part(tract, "tract")
    _check_part(event, "event")
    t = _ms(timeout, "timeout")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError("handler must be callable")
        with _registry_lock:
            registry.append(TractHandler(tract, event, fn, t / 1000 if t else None, app or _app_of(fn)))
        return fn
    return deco


class TractApp:
    """Runs ``@on_event`` handlers from a durable log. Registrations made with the
    module-level :func:`on_event` are used (unless ``use_global_registry=False``), plus
    those made with :meth:`on_event`. Options (``on_error``, ``workers``, ``ack_wait``,
    ``max_deliver``, ``backoff`` ...) go to :class:`engram.EventBus`."""

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], *, topic: str = "tracts",
                 group: str = "tract-handlers", default_timeout: Optional[float] = None,
                 use_global_registry: bool = True, **options: Any) -> None:
        self.bus = EventBus(target, topic=topic, group=group, **options)
        self.default_timeout = default_timeout
        self.use_global_registry = use_global_registry
        self.local: List[TractHandler] = []
        self._subscribed: Dict[int, str] = {}  # id(TractHandler) -> subscription id
        self._lock = threading.RLock()

    def on_event(self, tract: str, event: str, *, timeout: Optional[float] = None,
                 app: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a handler on this app only."""
        _check_part(tract, "tract")
        _check_part(event, "event")
        t = _ms(timeout, "timeout")

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            with self._lock:
                self.local.append(TractHandler(tract, event, fn, t / 1000 if t else None, app or _app_of(fn)))
            self._sync()
            return fn
        return deco

    def _all(self) -> List[TractHandler]:
        with _registry_lock:
            pool = list(registry) if self.use_global_registry else []
        with self._lock:
            return pool + list(self.local)

    def handlers(self, tract: str, event: str) -> List[TractHandler]:
        """Handlers matching (tract, event), exact first, then (tract, "*"), ("*",
        event), ("*", "*"), each kind in registration order."""
        hs = [h for h in self._all() if h.matches(tract, event)]
        return sorted(hs, key=lambda h: handler_rank(h.tract, h.event))

    def _sync(self) -> None:
        """Subscribes every registered handler not yet subscribed (creating its group)."""
        with self._lock:
            for h in self._all():
                if id(h) in self._subscribed:
                    continue
                self._subscribed[id(h)] = self._subscribe(h)

    def _subscribe(self, h: TractHandler) -> str:
        def accept(ev: Event) -> bool:
            tract, event = self._split(ev)
            return h.matches(tract, event)

        def adapt(ev: Event) -> HandlerContext:
            tract, event = self._split(ev)
            return HandlerContext(ev.data, h.app, tract, event, ev)
        exact = h.tract != "*" and h.event != "*"
        name = f"{h.app}.{getattr(h.fn, '__module__', '')}.{getattr(h.fn, '__qualname__', type(h.fn).__name__)}" \
               f".{h.tract}.{h.event}"
        sub = self.bus.add_subscriber(f"{h.tract}.{h.event}" if exact else "*", h.fn, name=name, accept=accept,
                                      adapt=adapt, priority=-handler_rank(h.tract, h.event),
                                      timeout=h.timeout or self.default_timeout)
        return sub.id

    def discover(self, package: Union[str, ModuleType]) -> List[str]:
        """Imports the handler modules of ``package`` (recursively: modules named
        ``events`` or ``handlers``, or ending in ``_events`` / ``_handlers``), so their
        ``@on_event`` decorators run, each handler owned by the app (subpackage) it is
        in. A module that fails to import is logged and skipped. Returns the names of
        the modules imported."""
        global _discovering
        pkg = importlib.import_module(package) if isinstance(package, str) else package
        names: List[str] = []
        path = getattr(pkg, "__path__", None)
        if path is None:
            return [pkg.__name__]
        for info in pkgutil.walk_packages(path, prefix=pkg.__name__ + ".", onerror=lambda n: logger.error(
                "discover: cannot look into %s", n)):
            leaf = info.name.rsplit(".", 1)[-1]
            if info.ispkg or not any(leaf == m or leaf.endswith("_" + m) for m in HANDLER_MODULES):
                continue
            parent = info.name.rsplit(".", 1)[0]
            try:
                _discovering = parent.rsplit(".", 1)[-1]
                importlib.import_module(info.name)
                names.append(info.name)
            except Exception as e:  # noqa: BLE001 - one broken module must not stop the others
                logger.error("discover: importing %s failed: %s", info.name, e, exc_info=True)
            finally:
                _discovering = None
        self._sync()
        return names

    def emit(self, tract: str, event: str, message: Any = None, *, key: Optional[str] = None,
             wait: Optional[float] = None) -> Offset:
        """Appends the message as event type ``tract.event``; with ``wait`` (seconds),
        returns once this process's handlers finished it."""
        _check_part(tract, "tract")
        _check_part(event, "event")
        if tract == "*" or event == "*":
            raise InvalidArgument("emit: tract and event must be concrete, not '*'")
        self._sync()
        return self.bus.append(f"{tract}.{event}", message, key=key, headers={"tract": tract, "event": event},
                               wait=wait if self.bus.running else None,
                               order=lambda s: (-s.priority, s.seq))

    @staticmethod
    def _split(ev: Event) -> Tuple[str, str]:
        tract = ev.headers.get("tract")
        event = ev.headers.get("event")
        if tract is None or event is None:
            tract, _, event = ev.type.rpartition(".")
        return tract, event

    def start(self) -> "TractApp":
        """Runs the handlers in this process (consumer threads) until :meth:`stop`."""
        self._sync()
        self.bus.start()
        return self

    def run(self, **kw: Any) -> None:
        """Runs the handlers in the calling process until SIGTERM/SIGINT (a worker)."""
        self._sync()
        self.bus.run(**kw)

    def run_until_idle(self, idle: float = 0.5, **kw: Any) -> None:
        """Handles what is pending and returns once nothing arrived for ``idle`` seconds."""
        self._sync()
        self.bus.run_until_idle(idle, **kw)

    def stop(self) -> None:
        self.bus.stop()

    def close(self) -> None:
        self.bus.close()
