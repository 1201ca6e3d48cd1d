"""Drop-in for ``@on_event(tract, event)`` handler registries: handlers discovered from a
package's modules, ``"*"`` wildcards for the tract, the event or both, a handler context,
and a timeout per handler — with events stored durably and handlers run in workers.

Before (in-process)::

    @on_event("memory", "saved", timeout=5)
    async def index(ctx):
        await search.add(ctx.message["memory_id"], ctx.message["text"])

    registry.discover("myservice.handlers")
    await registry.emit("memory", "saved", {...})      # handlers run in this process

After (engram)::

    from engram.tracts import on_event, TractApp

    @on_event("memory", "saved", timeout=5)           # unchanged
    async def index(ctx): ...

    tracts = TractApp("/var/lib/memory-log")
    tracts.discover("myservice.handlers")
    tracts.emit("memory", "saved", {...})             # durable append, type "memory.saved"
    # workers: python -m engram worker myservice.worker:tracts

A handler gets a :class:`HandlerContext` (``message``, ``app``, ``tract``, ``event``,
plus the stored ``raw`` event). It may be a plain or an ``async`` function. Each handler
has its own timeout (an async handler is cancelled at it; a plain one is abandoned and
reported). Every matching handler runs even when another fails; if any failed or timed
out the event is retried with the group's backoff (delivery is at least once).
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import pkgutil
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Union

from .app import App, RunStats
from .client import Event, Log, Offset, _ms
from .errors import HandlerTimeout, InvalidArgument

__all__ = ["on_event", "HandlerContext", "TractApp", "TractHandler", "registry", "HandlerErrors"]

logger = logging.getLogger("engram.tracts")


@dataclass
class TractHandler:
    """One ``@on_event`` registration."""

    tract: str
    event: str
    fn: Callable[..., Any]
    timeout: Optional[float] = None

    def matches(self, tract: str, event: str) -> bool:
        return self.tract in ("*", tract) and self.event in ("*", event)


@dataclass
class HandlerContext:
    """What a handler receives."""

    message: Any            # the emitted message (decoded JSON, text or bytes)
    app: "TractApp"
    tract: str
    event: str
    raw: Optional[Event] = None  # the stored event: offset, attempt, headers ...
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def attempt(self) -> int:
        return self.raw.attempt if self.raw is not None else 0


class HandlerErrors(Exception):
    """Some handlers of one event failed or timed out; ``errors`` lists (handler, exc)."""

    def __init__(self, errors: List[tuple]) -> None:
        super().__init__("; ".join(f"{getattr(h.fn, '__qualname__', h.fn)}: {type(e).__name__}: {e}"
                                   for h, e in errors)[:240])
        self.errors = errors


registry: List[TractHandler] = []  # where the module-level @on_event puts handlers
_registry_lock = threading.Lock()


def _check_part(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value != "*" and (not value or not all(c.isalnum() or c in "_-" for c in value.replace(".", ""))
                         or value.startswith(".") or value.endswith(".") or ".." in value):
        raise InvalidArgument(f"{what} {value!r}: use words of [A-Za-z0-9_-] joined by dots, or '*'")
    return value


def on_event(tract: str, event: str, *, timeout: Optional[float] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register the function for (``tract``, ``event``); either may be "*"."""
    _check_part(tract, "tract")
    _check_part(event, "event")
    t = _ms(timeout, "timeout")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError("handler must be callable")
        with _registry_lock:
            registry.append(TractHandler(tract, event, fn, t / 1000 if t else None))
        return fn
    return deco


class TractApp:
    """Runs ``@on_event`` handlers from a durable log. Registrations made with the
    module-level :func:`on_event` are used, plus those made with :meth:`on_event`."""

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], *, topic: str = "tracts",
                 group: str = "tract-handlers", default_timeout: Optional[float] = None,
                 use_global_registry: bool = True, **group_config: Any) -> None:
        self.app = App(target, group=group, topic=topic, **group_config)
        self.app.add_handler("*", self._dispatch, name="TractApp")
        self.default_timeout = default_timeout
        self.use_global_registry = use_global_registry
        self.local: List[TractHandler] = []

    def on_event(self, tract: str, event: str, *, timeout: Optional[float] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a handler on this app only."""
        _check_part(tract, "tract")
        _check_part(event, "event")
        t = _ms(timeout, "timeout")

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.local.append(TractHandler(tract, event, fn, t / 1000 if t else None))
            return fn
        return deco

    def handlers(self, tract: str, event: str) -> List[TractHandler]:
        """Handlers matching (tract, event), in registration order."""
        with _registry_lock:
            pool = (list(registry) if self.use_global_registry else []) + self.local
        return [h for h in pool if h.matches(tract, event)]

    def discover(self, package: Union[str, ModuleType]) -> List[str]:
        """Imports every module of ``package`` (recursively) so their ``@on_event``
        decorators run; returns the module names."""
        pkg = importlib.import_module(package) if isinstance(package, str) else package
        names = [pkg.__name__]
        path = getattr(pkg, "__path__", None)
        if path is not None:
            for info in pkgutil.walk_packages(path, prefix=pkg.__name__ + "."):
                importlib.import_module(info.name)
                names.append(info.name)
        return names

    def emit(self, tract: str, event: str, message: Any = None, *, key: Optional[str] = None) -> Offset:
        """Appends the message as event type ``tract.event``."""
        _check_part(tract, "tract")
        _check_part(event, "event")
        if tract == "*" or event == "*":
            raise InvalidArgument("emit: tract and event must be concrete, not '*'")
        return self.app.send(f"{tract}.{event}", message if message is not None else {}, key=key,
                             headers={"tract": tract, "event": event})

    @staticmethod
    def _split(ev: Event) -> tuple:
        tract = ev.headers.get("tract")
        event = ev.headers.get("event")
        if tract is None or event is None:
            tract, _, event = ev.type.rpartition(".")
        return tract, event

    def _run_one(self, h: TractHandler, ctx: HandlerContext) -> None:
        timeout = h.timeout or self.default_timeout
        if inspect.iscoroutinefunction(h.fn):
            async def main() -> Any:
                return await asyncio.wait_for(h.fn(ctx), timeout) if timeout else await h.fn(ctx)
            try:
                asyncio.run(main())
            except asyncio.TimeoutError:
                raise HandlerTimeout(f"handler timed out after {timeout:g}s") from None
            return
        if not timeout:
            h.fn(ctx)
            return
        box: Dict[str, BaseException] = {}

        def target() -> None:
            try:
                h.fn(ctx)
            except BaseException as e:  # noqa: B902 - reported to the dispatcher
                box["e"] = e
        t = threading.Thread(target=target, daemon=True, name=f"tract-{h.fn.__name__}")
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise HandlerTimeout(f"handler timed out after {timeout:g}s (left running)")
        if "e" in box:
            raise box["e"]

    def _dispatch(self, ev: Event) -> None:
        tract, event = self._split(ev)
        errors = []
        for h in self.handlers(tract, event):
            ctx = HandlerContext(ev.data, self, tract, event, ev)
            try:
                self._run_one(h, ctx)
            except Exception as e:  # isolation: the next handler still runs
                logger.warning("handler %s for %s.%s failed: %s", getattr(h.fn, "__qualname__", h.fn), tract, event, e)
                errors.append((h, e))
        if errors:
            raise HandlerErrors(errors)

    def run(self, concurrency: int = 1, timeout: Optional[float] = None, **kw: Any) -> RunStats:
        """Runs the handlers in workers until stopped (see :meth:`App.run`)."""
        return self.app.run(concurrency, timeout, **kw)

    def run_until_idle(self, idle: float = 0.5, **kw: Any) -> RunStats:
        """Handles what is pending and returns once nothing arrived for ``idle`` seconds."""
        kw.setdefault("wait", min(idle, 0.2))
        return self.app.run(kw.pop("concurrency", 1), kw.pop("timeout", None), idle_timeout=idle,
                            install_signals=False, **kw)

    def stop(self) -> None:
        self.app.stop()
