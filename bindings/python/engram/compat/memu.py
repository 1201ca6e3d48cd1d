"""MemU's event API (``memu.events``) and task input validator on engram.

Change the imports and the constructor::

    from memu.events import event_manager, EventManager          # before
    from engram.compat.memu import event_manager, EventManager   # after

    manager = EventManager()                                     # before
    manager = EventManager("/var/lib/memu-log")                  # after (or ENGRAM_LOG)

Everything else is MemU's: ``on(event, callback)``, ``off(event, callback)``,
``emit(event, data)``, ``register_dispatcher(obj)`` (its ``on_memory_saved`` ...
methods become listeners), ``unregister_dispatcher``, ``list_events``,
``get_listener_count``, event names ``on_memory_saved`` / ``_updated`` / ``_deleted`` /
``_queried``, an unknown event name logged and ignored, a failing listener logged while
the others go on.

What engram adds: ``emit`` appends the event durably before any listener runs, and
returns once this process's listeners handled it (as MemU's in-line calls do; at most
``wait`` seconds, 30 by default, after which the event stays queued). Each listener
has its own consumer group, so an event emitted and not handled when the process dies
is handled when a process with the same listeners starts again. ``async def`` listeners
run (on one event loop per listener thread). ``on_error="retry"`` retries a failing
listener alone instead of logging it.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Union

from ..log import Log
from ..errors import ValidationError
from ..events import EventManager as _NativeManager
from ..validation import validate_modality, validate_url
from . import default_target

__all__ = ["EventManager", "event_manager", "configure", "MemorizeTaskInput", "SUPPORTED_EVENTS"]

logger = logging.getLogger("engram.compat.memu")

SUPPORTED_EVENTS = ("on_memory_saved", "on_memory_updated", "on_memory_deleted", "on_memory_queried")
MODALITIES = ("conversation", "document", "image", "video", "audio")


class EventManager:
    """MemU's ``EventManager`` over a durable log. ``log``: a log directory, an
    ``engram serve`` endpoint or an :class:`engram.Log` (default $ENGRAM_LOG).
    ``wait``: seconds ``emit`` waits for this process's listeners (None: do not wait).
    ``on_error``: "log" (MemU's policy) or "retry". Other options (``ack_wait``,
    ``max_deliver``, ``backoff``, ``topic``, ``group``) go to :class:`engram.EventBus`."""

    def __init__(self, log: Union[Log, str, "os.PathLike[str]", None] = None, *, topic: str = "memu",
                 group: str = "memu", wait: Optional[float] = 30.0, on_error: str = "log",
                 start: bool = True, **options: Any) -> None:
        target = default_target(log, what="EventManager")
        self.manager = _NativeManager(target, topic=topic, group=group, wait=wait, on_error=on_error, **options)
        self.manager._known = list(SUPPORTED_EVENTS)
        if start:
            self.manager.start()

    def __repr__(self) -> str:
        return f"<engram.compat.memu.EventManager {self.manager.bus.topic}>"

    @property
    def bus(self) -> Any:
        """The :class:`engram.EventBus` underneath."""
        return self.manager.bus

    @property
    def errors(self) -> Any:
        """The last listener failures (:class:`engram.bus.HandlerFailed`)."""
        return self.manager.bus.errors

    @property
    def _dispatchers(self) -> List[Any]:
        return list(self.manager._dispatchers)

    def on(self, event: str, callback: Callable[[Dict[str, Any]], None]) -> None:
        """Registers ``callback(data)`` for ``event`` (e.g. 'on_memory_saved')."""
        self.manager.on(event, callback)

    def off(self, event: str, callback: Callable[[Dict[str, Any]], None]) -> None:
        """Unregisters ``callback`` from ``event`` (nothing happens if it was not there)."""
        self.manager.off(event, callback)

    def emit(self, event: str, data: Dict[str, Any]) -> None:
        """Appends the event and returns once this process's listeners handled it. An
        event name no listener was ever registered for (and not one of MemU's four) is
        logged and ignored, as MemU does."""
        if event not in self.manager._known:
            logger.warning("Attempted to emit unknown event: %s", event)
            return
        self.manager.emit(event, data)

    def register_dispatcher(self, dispatcher: Any) -> None:
        """Registers the dispatcher's methods named after known events as listeners."""
        self.manager.register_dispatcher(dispatcher)

    def unregister_dispatcher(self, dispatcher: Any) -> None:
        """Removes a dispatcher's listeners."""
        self.manager.unregister_dispatcher(dispatcher)

    def list_events(self) -> List[str]:
        """The known event names."""
        return list(self.manager._known)

    def get_listener_count(self, event: str) -> int:
        """How many listeners (dispatcher methods included) ``event`` has."""
        with self.manager._lock:
            return sum(1 for (ev, _) in self.manager._listeners if ev == event)

    def start(self) -> None:
        """Runs the listeners in this process (the constructor does unless start=False)."""
        self.manager.start()

    def stop(self) -> None:
        """Stops this process's listener threads (events stay queued)."""
        self.manager.stop()

    def close(self) -> None:
        self.manager.close()


class _Default:
    """The module-level ``event_manager``: built from $ENGRAM_LOG (or configure()) on
    first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._m: Optional[EventManager] = None
        self._options: Dict[str, Any] = {}

    def _get(self) -> EventManager:
        with self._lock:
            if self._m is None:
                self._m = EventManager(**self._options)
            return self._m

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return f"<engram.compat.memu.event_manager {'unset' if self._m is None else self._m.bus.topic}>"


event_manager: Any = _Default()


def configure(log: Union[Log, str, "os.PathLike[str]", None] = None, **options: Any) -> EventManager:
    """(Re)builds the module-level ``event_manager`` on ``log`` with ``options``."""
    with event_manager._lock:
        if event_manager._m is not None:
            event_manager._m.close()
        event_manager._options = dict(options, log=log)
        event_manager._m = None
    default: _Default = event_manager
    return default._get()


class MemorizeTaskInput:
    """MemU's ``MemorizeTaskInput``: checks ``resource_url`` (http/https, a host, no
    ``..``, at most 2048 characters, not localhost / private / link-local / otherwise
    non-public - also when the host resolves there; a host that cannot be resolved is
    accepted, see docs/migrating/memu.md), ``modality`` (conversation, document, image,
    video, audio) and ``user`` (None or a dict with a non-empty str ``user_id``). Raises
    :class:`engram.ValidationError` (a ValueError) naming the problem."""

    def __init__(self, *, resource_url: str, modality: str, user: Optional[Dict[str, Any]] = None,
                 resolve: bool = True) -> None:
        try:
            validate_url(resource_url, resolve=resolve)
        except ValidationError as e:
            raise ValidationError(f"resource_url: {e}") from None
        validate_modality(modality, MODALITIES)
        if user is not None:
            if not isinstance(user, dict) or "user_id" not in user:
                raise ValidationError("user: user_id is required in user dict")
            uid = user["user_id"]
            if not isinstance(uid, str) or not uid.strip():
                raise ValidationError("user: user_id must be a non-empty string")
        self.resource_url = resource_url
        self.modality = modality
        self.user = user

    def model_dump(self) -> Dict[str, Any]:
        return {"resource_url": self.resource_url, "modality": self.modality, "user": self.user}
