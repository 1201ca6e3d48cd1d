"""Drop-in for a publish/subscribe event bus: glob subscriptions ("my.custom.*"), event
priority and source, and event history read back by type and time — stored durably,
with subscribers run in workers.

Before (in-process; history lived in a bounded list in memory)::

    bus = EventBus()
    sub = bus.subscribe("memory.*", on_memory, priority=10)
    bus.publish("memory.saved", {"memory_id": "m1"}, source="api", priority=Priority.HIGH)
    bus.get_history(event_type="memory.*", since=an_hour_ago)

After (engram)::

    bus = engram.EventBus("/var/lib/memory-log")
    sub = bus.subscribe("memory.*", on_memory, priority=10)
    bus.publish("memory.saved", {"memory_id": "m1"}, source="api", priority=Priority.HIGH)
    bus.history("memory.*", since=an_hour_ago)          # read from the log itself
    # workers: python -m engram worker myservice.bus:bus

Subscribers get a :class:`BusEvent`. For one event, subscribers run in order of their
subscription priority (highest first, then subscription order); within a fetched batch,
higher-priority events are handed to workers first. A failing subscriber does not stop
the others; the event is then retried (at least once delivery).
"""
from __future__ import annotations

import datetime as _dt
import enum
import fnmatch
import itertools
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from .app import App, RunStats, match_type
from .client import Event, Log, When, _ns
from .errors import InvalidArgument, NotFound

__all__ = ["EventBus", "BusEvent", "Priority", "Subscription", "SubscriberErrors"]

logger = logging.getLogger("engram.bus")


def _event_priority(ev: Event) -> int:
    try:
        return int(ev.headers.get("priority", Priority.NORMAL))
    except ValueError:
        return Priority.NORMAL


class Priority(enum.IntEnum):
    """Event priority levels."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


@dataclass
class BusEvent:
    """An event on the bus."""

    type: str
    data: Any
    source: Optional[str] = None
    priority: int = Priority.NORMAL
    timestamp: Optional[_dt.datetime] = None
    id: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)
    offset: int = 0

    @classmethod
    def _from(cls, ev: Event) -> "BusEvent":
        h = dict(ev.headers)
        source = h.pop("source", None)
        try:
            prio = int(h.pop("priority", Priority.NORMAL))
        except ValueError:
            prio = Priority.NORMAL
        eid = h.pop("id", "") or ev.id
        return cls(ev.type, ev.data, source, prio, ev.timestamp, eid, h, ev.offset)


@dataclass
class Subscription:
    """One subscription: a glob pattern, a handler and its priority."""

    id: str
    pattern: str
    handler: Callable[[BusEvent], Any]
    priority: int
    seq: int


class SubscriberErrors(Exception):
    """Some subscribers of one event raised."""

    def __init__(self, errors: List[tuple]) -> None:
        super().__init__("; ".join(f"{s.pattern} -> {getattr(s.handler, '__qualname__', s.handler)}: "
                                   f"{type(e).__name__}: {e}" for s, e in errors)[:240])
        self.errors = errors


class EventBus:
    """A durable publish/subscribe bus on ``topic``; subscribers run in group ``group``."""

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], *, topic: str = "bus",
                 group: str = "subscribers", **group_config: Any) -> None:
        self.app = App(target, group=group, topic=topic, **group_config)
        self.app.add_handler("*", self._dispatch, name="EventBus")
        self.app.priority_key = _event_priority
        self._subs: Dict[str, Subscription] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()

    # -- subscriptions ----------------------------------------------------------------------
    def subscribe(self, pattern: str, handler: Optional[Callable[[BusEvent], Any]] = None, *,
                  priority: int = 0) -> Any:
        """Subscribes ``handler`` to types matching the glob ``pattern``; returns the
        subscription id. Without a handler it is a decorator."""
        if not isinstance(pattern, str) or not pattern:
            raise InvalidArgument(f"pattern must be a non-empty str, got {pattern!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError("priority must be an int")

        def add(fn: Callable[[BusEvent], Any]) -> str:
            if not callable(fn):
                raise TypeError("handler must be callable")
            sid = uuid.uuid4().hex
            with self._lock:
                self._subs[sid] = Subscription(sid, pattern, fn, priority, next(self._seq))
            return sid
        if handler is not None:
            return add(handler)

        def deco(fn: Callable[[BusEvent], Any]) -> Callable[[BusEvent], Any]:
            add(fn)
            return fn
        return deco

    def unsubscribe(self, subscription_id: str) -> bool:
        """Removes a subscription; True if it existed."""
        with self._lock:
            return self._subs.pop(subscription_id, None) is not None

    def subscribers(self, type: str) -> List[Subscription]:
        """Subscriptions matching ``type``, in the order they are called."""
        with self._lock:
            subs = [s for s in self._subs.values() if match_type(s.pattern, type)]
        return sorted(subs, key=lambda s: (-s.priority, s.seq))

    # -- publishing -------------------------------------------------------------------------
    def publish(self, type: str, data: Any = None, *, source: Optional[str] = None,
                priority: int = Priority.NORMAL, metadata: Optional[Dict[str, str]] = None,
                key: Optional[str] = None) -> BusEvent:
        """Appends an event durably; returns it with its ``id`` and ``offset``."""
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError("priority must be an int (or Priority)")
        if source is not None and not isinstance(source, str):
            raise TypeError("source must be a str")
        headers = dict(metadata or {})
        eid = uuid.uuid4().hex
        headers.update({"id": eid, "priority": str(int(priority))})
        if source is not None:
            headers["source"] = source
        off = self.app.send(type, data if data is not None else {}, headers=headers, key=key)
        return BusEvent(type, data, source, int(priority), _dt.datetime.now(_dt.timezone.utc),
                        eid, dict(metadata or {}), int(off))

    emit = publish

    # -- history ----------------------------------------------------------------------------
    def _first_at(self, since_ns: int, first: int, head: int) -> int:
        """The first offset appended at or after since_ns (binary search: append times
        never go down within a topic)."""
        lo, hi = first, head + 1
        log, topic = self.app.log, self.app.topic
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                ts = log.get(topic, mid).timestamp_ns
            except NotFound:  # a gap (dropped range): look further right
                lo = mid + 1
                continue
            if ts < since_ns:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def history(self, type: Optional[str] = None, *, since: Optional[When] = None,
                until: Optional[When] = None, source: Optional[str] = None,
                limit: Optional[int] = 100) -> List[BusEvent]:
        """Past events, oldest first: of types matching the glob ``type``, appended in
        [``since``, ``until``), from ``source``; the newest ``limit`` of them (None = all)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidArgument("limit must be a non-negative int or None")
        lo = _ns(since, "since") if since is not None else None
        hi = _ns(until, "until") if until is not None else None
        log, topic = self.app.log, self.app.topic
        try:
            info = log.topic(topic)
        except NotFound:
            return []
        if info.count == 0:
            return []
        start = info.first_offset if lo is None else self._first_at(lo, info.first_offset, info.head_offset)
        out: List[BusEvent] = []
        for ev in log.scan(topic, start):
            if hi is not None and ev.timestamp_ns >= hi:
                break
            if type is not None and not (match_type(type, ev.type) or fnmatch.fnmatchcase(ev.type, type)):
                continue
            if source is not None and ev.headers.get("source") != source:
                continue
            out.append(BusEvent._from(ev))
        return out[-limit:] if limit else (out if limit is None else [])

    get_history = history

    # -- running ----------------------------------------------------------------------------
    def _dispatch(self, ev: Event) -> None:
        be = BusEvent._from(ev)
        errors = []
        for s in self.subscribers(ev.type):
            try:
                s.handler(be)
            except Exception as e:  # one subscriber's failure never stops another
                logger.warning("subscriber %s of %s failed: %s", s.pattern, ev.type, e)
                errors.append((s, e))
        if errors:
            raise SubscriberErrors(errors)

    def run(self, concurrency: int = 1, timeout: Optional[float] = None, **kw: Any) -> RunStats:
        """Runs the subscribers in workers until stopped (see :meth:`App.run`)."""
        return self.app.run(concurrency, timeout, **kw)

    def run_until_idle(self, idle: float = 0.5, **kw: Any) -> RunStats:
        """Handles what is pending and returns once nothing arrived for ``idle`` seconds."""
        kw.setdefault("wait", min(idle, 0.2))
        return self.app.run(kw.pop("concurrency", 1), kw.pop("timeout", None), idle_timeout=idle,
                            install_signals=False, **kw)

    def stop(self) -> None:
        self.app.stop()
