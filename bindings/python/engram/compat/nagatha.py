"""Nagatha's event bus (``nagatha_assistant.core.event`` and ``.event_bus``, and the
``celery_storage`` re-exports) on engram.

Change the imports and the constructor (the Celery integration's names -
``CeleryEventBus``, ``get_celery_event_bus``, ``ensure_celery_event_bus_started`` ... -
are here too)::

    from nagatha_assistant.core.event import Event, EventPriority            # before
    from nagatha_assistant.core.event_bus import EventBus, get_event_bus     # before
    from engram.compat.nagatha import Event, EventPriority, EventBus, get_event_bus   # after

    bus = EventBus(max_history=100)                                          # before
    bus = EventBus("/var/lib/nagatha-log", max_history=100)                  # after

``get_event_bus()`` / ``ensure_event_bus_started()`` take the log from $ENGRAM_LOG (or
:func:`configure`). Everything else is Nagatha's: ``await bus.start()``,
``await bus.publish(Event(...))`` (EventBusError when the bus is not running),
``publish_sync``, ``subscribe(pattern, handler, priority_filter=, source_filter=)``
returning an int, glob patterns, ``unsubscribe``, ``unsubscribe_handler``,
``get_subscriptions``, ``get_event_history(limit=, event_type_pattern=)`` newest first,
``clear_history``, :class:`EventPriority` with CRITICAL = 0 the most urgent, handlers
getting an :class:`Event` (``.event_type``, ``.data``, ``.priority``, ``.source``,
``.correlation_id``, ``.event_id``, ``.timestamp``), ``async def`` handlers on the loop
that started the bus, a handler's exception kept (``bus.errors``) and logged while the
others run on.

What engram adds: ``publish`` appends the event durably; every subscriber has its own
consumer group, so an event published and not yet handled when the process died is
handled when a process with the same subscriptions starts again; of the events waiting
for a subscriber, the most urgent go first; the history is read back from the log
(it survives restarts; ``max_history`` bounds how far back it looks).
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import fnmatch
import itertools
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Awaitable, Callable, Dict, List, Optional, Union

from ..bus import EventBus as _Bus, Priority as _Native, Subscription
from ..event import Event as _Stored
from ..log import Log
from . import default_target

__all__ = ["Event", "EventPriority", "EventBus", "EventBusError", "EventSubscription", "StandardEventTypes",
           "get_event_bus", "ensure_event_bus_started", "shutdown_event_bus", "configure",
           "create_system_event", "create_agent_event", "create_mcp_event", "create_memory_event",
           "CeleryEventBus", "CeleryEventBusError", "get_celery_event_bus", "ensure_celery_event_bus_started",
           "shutdown_celery_event_bus"]

logger = logging.getLogger("engram.compat.nagatha")


class EventPriority(IntEnum):
    """Nagatha's priorities: a lower number is more urgent."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


def _to_native(p: int) -> int:
    return int(_Native.CRITICAL) - int(p)


def _from_native(p: int) -> EventPriority:
    try:
        return EventPriority(int(_Native.CRITICAL) - int(p))
    except ValueError:
        return EventPriority.NORMAL


@dataclass
class Event:
    """An event: its type, data, priority, source and correlation id, plus an id and a
    time-zone-aware timestamp filled in when not given."""

    event_type: str
    data: Dict[str, Any] = field(default_factory=dict)
    priority: EventPriority = EventPriority.NORMAL
    source: Optional[str] = None
    correlation_id: Optional[str] = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            self.timestamp = self.timestamp.replace(tzinfo=_dt.timezone.utc)


EventHandler = Union[Callable[[Event], Any], Callable[[Event], Awaitable[Any]]]


def _event_from(ev: _Stored) -> Event:
    h = ev.headers
    try:
        ts = _dt.datetime.fromisoformat(h["ts"]) if "ts" in h else ev.timestamp
    except ValueError:
        ts = ev.timestamp
    try:
        prio = _from_native(int(h.get("priority", _Native.NORMAL)))
    except ValueError:
        prio = EventPriority.NORMAL
    data = ev.data
    return Event(ev.type, data if data is not None else {}, prio, h.get("source"), h.get("correlation_id"),
                 h.get("id") or ev.id, ts)


class StandardEventTypes:
    """The event types Nagatha's components publish."""

    SYSTEM_STARTUP = "system.startup"
    SYSTEM_SHUTDOWN = "system.shutdown"
    AGENT_MESSAGE_RECEIVED = "agent.message.received"
    AGENT_MESSAGE_SENT = "agent.message.sent"
    AGENT_CONVERSATION_STARTED = "agent.conversation.started"
    AGENT_CONVERSATION_ENDED = "agent.conversation.ended"
    MCP_SERVER_CONNECTED = "mcp.server.connected"
    MCP_SERVER_DISCONNECTED = "mcp.server.disconnected"
    MCP_TOOL_CALLED = "mcp.tool.called"
    MCP_TOOL_RESULT = "mcp.tool.result"
    DB_ENTITY_CREATED = "db.entity.created"
    DB_ENTITY_UPDATED = "db.entity.updated"
    DB_ENTITY_DELETED = "db.entity.deleted"
    UI_USER_ACTION = "ui.user.action"
    UI_NOTIFICATION = "ui.notification"
    TASK_CREATED = "task.created"
    TASK_UPDATED = "task.updated"
    TASK_COMPLETED = "task.completed"
    REMINDER_TRIGGERED = "reminder.triggered"
    NOTE_CREATED = "note.created"
    NOTE_UPDATED = "note.updated"
    NOTE_DELETED = "note.deleted"
    MEMORY_SECTION_CREATED = "memory.section.created"
    MEMORY_SECTION_UPDATED = "memory.section.updated"
    MEMORY_SECTION_DELETED = "memory.section.deleted"
    MEMORY_ENTRY_CREATED = "memory.entry.created"
    MEMORY_ENTRY_UPDATED = "memory.entry.updated"
    MEMORY_ENTRY_DELETED = "memory.entry.deleted"
    MEMORY_SEARCH_PERFORMED = "memory.search.performed"


def create_system_event(event_type: str, data: Optional[Dict[str, Any]] = None,
                        priority: EventPriority = EventPriority.NORMAL, source: Optional[str] = None) -> Event:
    """An event from ``source`` (default "system")."""
    return Event(event_type, data or {}, priority, source or "system")


def create_agent_event(event_type: str, session_id: int, message_data: Optional[Dict[str, Any]] = None,
                       priority: EventPriority = EventPriority.NORMAL) -> Event:
    """An agent event: ``session_id`` plus ``message_data``, source "agent"."""
    return Event(event_type, {"session_id": session_id, **(message_data or {})}, priority, "agent")


def create_mcp_event(event_type: str, server_name: str, tool_data: Optional[Dict[str, Any]] = None,
                     priority: EventPriority = EventPriority.NORMAL) -> Event:
    """An MCP event: ``server_name`` plus ``tool_data``, source "mcp"."""
    return Event(event_type, {"server_name": server_name, **(tool_data or {})}, priority, "mcp")


def create_memory_event(event_type: str, section_name: str, key: Optional[str] = None,
                        memory_data: Optional[Dict[str, Any]] = None,
                        priority: EventPriority = EventPriority.NORMAL) -> Event:
    """A memory event: ``section_name``, ``key`` and ``memory_data``, source "memory"."""
    data: Dict[str, Any] = {"section_name": section_name}
    if key:
        data["key"] = key
    data.update(memory_data or {})
    return Event(event_type, data, priority, "memory")


class EventBusError(Exception):
    """Raised by :meth:`EventBus.publish` when the bus is not running."""


class EventSubscription:
    """One subscription: a glob pattern, a handler and optional priority and source filters."""

    def __init__(self, pattern: str, handler: EventHandler, priority_filter: Optional[EventPriority] = None,
                 source_filter: Optional[str] = None, subscription_id: int = 0) -> None:
        self.pattern = pattern
        self.handler = handler
        self.priority_filter = priority_filter
        self.source_filter = source_filter
        self.subscription_id = subscription_id
        self.native: Optional[Subscription] = None

    def matches(self, event: Event) -> bool:
        """True when the event's type matches the pattern, its priority is at least as
        urgent as ``priority_filter`` and its source is ``source_filter`` (when set)."""
        if not fnmatch.fnmatch(event.event_type, self.pattern):
            return False
        if self.priority_filter is not None and event.priority > self.priority_filter:
            return False
        return self.source_filter is None or event.source == self.source_filter


class EventBus:
    """Nagatha's ``EventBus`` over a durable log. ``log``: a log directory, an ``engram
    serve`` endpoint or an :class:`engram.Log` (default $ENGRAM_LOG). ``max_history``:
    how many of the newest events :meth:`get_event_history` looks at. ``on_error``:
    "log" (Nagatha's policy: the others run on) or "retry". Other options (``ack_wait``,
    ``max_deliver``, ``backoff``, ``topic``, ``group``) go to :class:`engram.EventBus`."""

    def __init__(self, log: Union[Log, str, "os.PathLike[str]", None] = None, max_history: int = 1000, *,
                 topic: str = "nagatha", group: str = "nagatha", on_error: str = "log", **options: Any) -> None:
        target = default_target(log, what="EventBus")
        self.bus = _Bus(target, topic=topic, group=group, on_error=on_error, **options)
        self.max_history = max_history
        self._lock = threading.RLock()
        self._subscriptions: List[EventSubscription] = []
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<engram.compat.nagatha.EventBus {self.bus.topic}>"

    @property
    def _running(self) -> bool:
        return self.bus.running

    @property
    def errors(self) -> Any:
        """The last handler failures (:class:`engram.bus.HandlerFailed`)."""
        return self.bus.errors

    async def start(self) -> None:
        """Starts handling events in this process; ``async def`` handlers run on this loop."""
        await self.bus.astart()
        logger.info("Event bus started")

    async def stop(self) -> None:
        """Stops handling events in this process (what is queued stays in the log)."""
        await self.bus.astop()
        logger.info("Event bus stopped")

    def subscribe(self, pattern: str, handler: EventHandler, priority_filter: Optional[EventPriority] = None,
                  source_filter: Optional[str] = None) -> int:
        """Subscribes ``handler(event)`` to event types matching the glob ``pattern``;
        ``priority_filter``: only events this urgent or more; ``source_filter``: only
        events from this source. Returns the subscription id."""
        with self._lock:
            sub = EventSubscription(pattern, handler, priority_filter, source_filter, next(self._ids))

            def accept(ev: _Stored) -> bool:
                return sub.matches(_event_from(ev))
            rank = priority_filter if priority_filter is not None else EventPriority.NORMAL
            sub.native = self.bus.add_subscriber(pattern if _glob_ok(pattern) else "*", handler,
                                                 priority=_to_native(rank), accept=accept, adapt=_event_from)
            self._subscriptions.append(sub)
            return sub.subscription_id

    def unsubscribe(self, subscription_id: int) -> bool:
        """Removes a subscription (and its consumer group); True if it existed."""
        with self._lock:
            for i, sub in enumerate(self._subscriptions):
                if sub.subscription_id == subscription_id:
                    del self._subscriptions[i]
                    break
            else:
                return False
        if sub.native is not None:  # set by subscribe() before the subscription is listed
            self.bus.unsubscribe(sub.native.id)
        return True

    def unsubscribe_handler(self, handler: EventHandler) -> int:
        """Removes every subscription of ``handler``; returns how many."""
        with self._lock:
            ids = [s.subscription_id for s in self._subscriptions if s.handler == handler]
        return sum(self.unsubscribe(i) for i in ids)

    def _append(self, event: Event) -> None:
        headers = {"id": event.event_id, "priority": str(_to_native(event.priority)),
                   "ts": event.timestamp.isoformat()}
        if event.source is not None:
            headers["source"] = event.source
        if event.correlation_id is not None:
            headers["correlation_id"] = event.correlation_id
        self.bus.append(event.event_type, event.data, headers=headers)

    async def publish(self, event: Event) -> None:
        """Appends ``event`` durably (its handlers run soon after, in this or another
        process of the bus). Raises EventBusError when the bus is not running."""
        if not self.bus.running:
            raise EventBusError("Event bus is not running")
        await asyncio.get_running_loop().run_in_executor(None, self._append, event)

    def publish_sync(self, event: Event) -> None:
        """Appends ``event`` durably from synchronous code (no event loop needed). A bus
        that is not running logs and discards the event, as Nagatha's does."""
        if not self.bus.running:
            logger.warning("Event bus not running, discarding event: %s", event.event_type)
            return
        self._append(event)

    def get_subscriptions(self) -> List[Dict[str, Any]]:
        """Each subscription as a dict: id, pattern, priority_filter, source_filter, handler,
        and handler_task (here: the subscriber's consumer group)."""
        with self._lock:
            return [{"id": s.subscription_id, "pattern": s.pattern, "priority_filter": s.priority_filter,
                     "source_filter": s.source_filter, "handler": str(s.handler),
                     "handler_task": s.native.id if s.native else None} for s in self._subscriptions]

    def get_event_history(self, limit: Optional[int] = None, event_type_pattern: Optional[str] = None) -> List[Event]:
        """Past events, most recent first: of the newest ``max_history`` since the last
        :meth:`clear_history`, those matching ``event_type_pattern``, at most ``limit``."""
        return [_event_from(e) for e in self.bus.recent(limit, event_type_pattern, max_scan=self.max_history)]

    def clear_history(self) -> None:
        """Empties the history (a durable mark; unhandled events are still handled)."""
        self.bus.clear_history()

    def close(self) -> None:
        self.bus.close()


def _glob_ok(pattern: str) -> bool:
    """fnmatch's '*' also crosses dots, as the log's "x.*" filters do; character
    classes and '?' are matched in Python instead."""
    return not any(c in pattern for c in "?[]")


_event_bus: Optional[EventBus] = None
_bus_lock = threading.Lock()
_options: Dict[str, Any] = {}


def configure(log: Union[Log, str, "os.PathLike[str]", None] = None, **options: Any) -> None:
    """Sets the log (and EventBus options) :func:`get_event_bus` uses."""
    global _event_bus
    with _bus_lock:
        _options.clear()
        _options.update(options, log=log)
        _event_bus = None


def get_event_bus() -> EventBus:
    """The process's bus (one instance), on $ENGRAM_LOG or the configured log."""
    global _event_bus
    if _event_bus is None:
        with _bus_lock:
            if _event_bus is None:
                _event_bus = EventBus(**_options)
    return _event_bus


async def ensure_event_bus_started() -> EventBus:
    """Starts the process's bus (idempotent) and returns it."""
    bus = get_event_bus()
    await bus.start()
    return bus


async def shutdown_event_bus() -> None:
    """Stops the process's bus and forgets it."""
    global _event_bus
    if _event_bus is not None:
        await _event_bus.stop()
        with _bus_lock:
            _event_bus = None


# The names of the Celery-based bus of Nagatha's Celery integration (celery_event_bus):
# the same class and functions.
CeleryEventBus = EventBus
CeleryEventBusError = EventBusError
get_celery_event_bus = get_event_bus
ensure_celery_event_bus_started = ensure_event_bus_started
shutdown_celery_event_bus = shutdown_event_bus
