"""solstone's app event handlers (``apps.events``) on engram.

Change the imports and give the dispatcher its log::

    from apps.events import on_event, EventContext                        # before
    from engram.compat.solstone import on_event, EventContext             # after

    start_dispatcher(workers=4)                                           # before
    start_dispatcher(workers=4, log="/var/lib/solstone-log")              # after (or ENGRAM_LOG)

Everything else is solstone's: ``@on_event(tract, event)`` with ``"*"`` for either or
both, handlers getting an :class:`EventContext` (``ctx.msg`` the message dict,
``ctx.app`` the owning app's name, ``ctx.tract``, ``ctx.event``),
``discover_handlers()`` importing ``apps/<app>/events.py`` only and logging an app that
fails to import while the others load, ``dispatch(msg, timeout)`` running the matching
handlers - exact (tract, event) first, then (tract, "*"), ("*", event), ("*", "*") - on
a pool of ``workers`` threads and returning how many, after each finished or its
``timeout`` passed (a timed-out handler is logged and goes on running), a failing
handler logged while the others go on, ``dispatch`` before ``start_dispatcher``
returning 0, ``stop_dispatcher``, ``get_handler_count``, ``clear_handlers``.

What engram adds: ``dispatch`` appends the message durably first; every handler has its
own consumer group, so a message dispatched and not yet handled when the process died
is handled when a process with the same handlers starts its dispatcher again.
``async def`` handlers run (one event loop per handler thread, kept across messages).
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..bus import EventBus, Subscription
from ..event import Event
from ..log import Log
from . import default_target

__all__ = ["on_event", "EventContext", "HandlerContext", "discover_handlers", "dispatch", "start_dispatcher",
           "stop_dispatcher", "get_handler_count", "clear_handlers", "DEFAULT_TIMEOUT", "DEFAULT_WORKERS"]

logger = logging.getLogger("engram.compat.solstone")

DEFAULT_TIMEOUT = 30.0
DEFAULT_WORKERS = 4

_WORD = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class EventContext:
    """What a handler receives."""

    msg: Dict[str, Any]   # the message dict as dispatched
    app: str              # the name of the app that owns the handler
    tract: str
    event: str


HandlerContext = EventContext
Handler = Callable[[EventContext], Any]

# (tract, event) -> [(app_name, handler), ...] in registration order
_handlers: Dict[Tuple[str, str], List[Tuple[str, Handler]]] = {}
_lock = threading.RLock()
_current_app: Optional[str] = None
_bus: Optional[EventBus] = None
_subs: Dict[Tuple[str, str, str, int], Subscription] = {}


def _app_for(fn: Handler) -> str:
    if _current_app is not None:
        return _current_app
    parts = (getattr(fn, "__module__", "") or "").split(".")
    if len(parts) >= 3 and parts[0] == "apps" and parts[2] == "events":
        return parts[1]
    return "unknown"


def _rank(tract: str, event: str) -> int:
    """0 exact, 1 (tract, "*"), 2 ("*", event), 3 ("*", "*"): the order handlers run in."""
    if tract != "*":
        return 0 if event != "*" else 1
    return 2 if event != "*" else 3


def on_event(tract: str, event: str) -> Callable[[Handler], Handler]:
    """Decorator: runs the function for messages of ``tract`` and ``event`` (either may
    be "*"). Returns the function unchanged."""
    def decorator(fn: Handler) -> Handler:
        app = _app_for(fn)
        with _lock:
            _handlers.setdefault((tract, event), []).append((app, fn))
            if _bus is not None:
                _subscribe(tract, event, app, fn)
        logger.debug("Registered handler %s for (%s, %s) in app %s", getattr(fn, "__name__", fn), tract, event, app)
        return fn
    return decorator


def _subscribe(tract: str, event: str, app: str, fn: Handler) -> None:
    key = (tract, event, app, id(fn))
    if key in _subs or _bus is None:
        return

    def accept(ev: Event) -> bool:
        t, e = ev.headers.get("tract", ""), ev.headers.get("event", "")
        return tract in ("*", t) and event in ("*", e)

    def adapt(ev: Event) -> EventContext:
        return EventContext(ev.data, app, ev.headers.get("tract", ""), ev.headers.get("event", ""))
    exact = tract != "*" and event != "*" and _WORD.fullmatch(tract) and _WORD.fullmatch(event)
    name = f"{app}.{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}.{tract}.{event}"
    sub = _bus.add_subscriber(f"{tract}.{event}" if exact else "*", fn, name=name, accept=accept, adapt=adapt,
                              priority=-_rank(tract, event))
    _subs[key] = sub


def discover_handlers(package: str = "apps") -> int:
    """Imports ``<package>/<app>/events.py`` for every app directory (not those starting
    with "_"), so their ``@on_event`` decorators register with the app's name. An app
    whose module fails to import is logged and skipped. Returns how many apps loaded."""
    global _current_app
    try:
        pkg = importlib.import_module(package)
    except ImportError:
        logger.debug("No %s package found, skipping event handler discovery", package)
        return 0
    dirs = [Path(p) for p in getattr(pkg, "__path__", [])]
    discovered = total = 0
    for apps_dir in dirs:
        for app_dir in sorted(apps_dir.iterdir()):
            if not app_dir.is_dir() or app_dir.name.startswith("_") or not (app_dir / "events.py").exists():
                continue
            name = app_dir.name
            try:
                with _lock:
                    _current_app = name
                    importlib.import_module(f"{package}.{name}.events")
                    n = sum(1 for hs in _handlers.values() for (a, _) in hs if a == name)
                discovered += 1
                total += n
                logger.info("Loaded %d event handler(s) from app: %s", n, name)
            except Exception as e:  # noqa: BLE001 - one app's bug must not stop the others
                logger.error("Failed to load events from app '%s': %s", name, e, exc_info=True)
            finally:
                _current_app = None
    if discovered:
        logger.info("Discovered %d event handler(s) from %d app(s)", total, discovered)
    return discovered


def _get_handlers(msg: Dict[str, Any]) -> List[Tuple[str, Handler]]:
    """The (app, handler) pairs a message goes to: exact match, then (tract, "*"),
    ("*", event), ("*", "*")."""
    tract, event = msg.get("tract", ""), msg.get("event", "")
    with _lock:
        out: List[Tuple[str, Handler]] = []
        for key in ((tract, event), (tract, "*"), ("*", event), ("*", "*")):
            out.extend(_handlers.get(key, []))
        return out


def dispatch(msg: Dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> int:
    """Appends ``msg`` durably and waits for its handlers, each up to ``timeout`` seconds
    in turn (one that takes longer is logged and goes on running); returns how many
    handlers match. Returns 0, appending nothing, before :func:`start_dispatcher`."""
    bus = _bus
    if bus is None:
        logger.debug("Event dispatcher not started, skipping dispatch")
        return 0
    handlers = _get_handlers(msg)
    if not handlers:
        return 0
    tract, event = str(msg.get("tract", "")), str(msg.get("event", ""))
    type = f"{tract}.{event}" if _WORD.fullmatch(tract) and _WORD.fullmatch(event) else "callosum.message"
    states: Dict[str, str] = {}
    bus.append(type, msg, headers={"tract": tract, "event": event}, wait=timeout, each=True, states=states,
               order=lambda s: (-s.priority, s.seq))
    for sid, st in states.items():
        if st == "pending":
            logger.warning("Event handler %s timed out after %ss", sid, timeout)
    return len(handlers)


def start_dispatcher(workers: int = DEFAULT_WORKERS, *, log: Union[Log, str, "os.PathLike[str]", None] = None,
                     topic: str = "callosum", group: str = "apps", **options: Any) -> None:
    """Starts running handlers in this process, at most ``workers`` at once. ``log``: a
    log directory, an ``engram serve`` endpoint or an :class:`engram.Log` (default
    $ENGRAM_LOG). Other options (``ack_wait``, ``max_deliver``, ``backoff``, ``on_error``
    - default "log", solstone's policy) go to :class:`engram.EventBus`."""
    global _bus
    with _lock:
        if _bus is not None:
            logger.debug("Event dispatcher already started")
            return
        target = default_target(log, what="start_dispatcher")
        options.setdefault("on_error", "log")
        bus = EventBus(target, topic=topic, group=group, workers=workers, **options)
        _bus = bus
        try:
            for (tract, event), hs in _handlers.items():
                for app, fn in hs:
                    _subscribe(tract, event, app, fn)
        except BaseException:
            _bus = None
            _subs.clear()
            bus.close()
            raise
        bus.start()
    logger.info("Started event dispatcher with %d workers", workers)


def stop_dispatcher() -> None:
    """Stops the dispatcher; running handlers finish first."""
    global _bus
    with _lock:
        bus, _bus = _bus, None
        _subs.clear()
    if bus is None:
        return
    logger.info("Stopping event dispatcher...")
    bus.close()
    logger.info("Event dispatcher stopped")


def get_handler_count() -> int:
    """How many handlers are registered (over all apps and patterns)."""
    with _lock:
        return sum(len(hs) for hs in _handlers.values())


def clear_handlers() -> None:
    """Forgets every handler (their groups stay in the log). Useful for testing."""
    with _lock:
        _handlers.clear()
        subs = list(_subs.values())
        _subs.clear()
        bus = _bus
    for s in subs:
        if bus is not None:
            bus.unsubscribe(s.id, keep_group=True)


def get_bus() -> Optional[EventBus]:
    """The :class:`engram.EventBus` under the running dispatcher, or None."""
    return _bus
