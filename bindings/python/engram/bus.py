"""engram's in-process event bus: publishers append durably, and the subscribers this
process registered run in this process, each in a consumer group of its own.

    bus = engram.EventBus("/var/lib/memory-log")
    bus.subscribe("memory.*", reindex)          # reindex(event) - plain or async def
    bus.start()                                 # consumer threads in this process
    bus.publish("memory.saved", {"memory_id": "m1"}, source="api", priority=Priority.HIGH)
    bus.history("memory.*", since=an_hour_ago)  # read back from the log itself

Why one group per subscriber: each subscriber's outcome is its own. A subscriber that
fails is retried (or dead-lettered) alone; the others of the same event are not run
again. Group names derive from the subscriber (``<group>.<name>``, the name from the
handler's qualified name unless given), so a process that registers the same
subscribers finds the same groups: an event published and not yet handled when a
process died is handled when any process with that bus starts again.

The compat modules (:mod:`engram.compat.memu`, :mod:`engram.compat.nagatha`,
:mod:`engram.compat.solstone`) and :class:`engram.EventManager` /
:class:`engram.TractApp` are thin layers over this class.

Running handlers: plain functions run in the subscriber's consumer thread; ``async def``
handlers (or handlers returning an awaitable) run on the loop :meth:`EventBus.astart`
was awaited on, or else on one event loop per consumer thread that lives as long as the
thread (so a client bound to that loop keeps working from one event to the next). A
running handler's lease is renewed (heartbeat) until it returns. ``on_error="retry"``
(default) nacks a failing handler's event with the group's backoff, so after
``max_deliver`` attempts it is in that subscriber's dead-letter queue;
``on_error="log"`` logs the exception, keeps it in :attr:`EventBus.errors` and acks.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import enum
import fnmatch
import hashlib
import inspect
import itertools
import logging
import os
import re
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Union

from . import log as _logs
from .app import Reject, Retry, c_filters, match_type
from .event import Event
from .group import _GROUP_DEFAULTS, Group, _group_config
from .log import Log
from .message import Offset, When, _ms, _ns, _str
from .errors import Closed, Error, HandlerTimeout, InvalidArgument, NotFound

__all__ = ["EventBus", "BusEvent", "Priority", "Subscription", "HandlerFailed", "CONTROL_HEADER"]

logger = logging.getLogger("engram.bus")

# Events carrying this header are the bus's own bookkeeping (a history clear mark);
# subscribers never see them.
CONTROL_HEADER = "engram-control"
_HISTORY_CLEARED = "history-cleared"

_GROUP_NAME_OK = re.compile(r"[^A-Za-z0-9._-]")


class Priority(enum.IntEnum):
    """Event priority levels: a higher value is handled first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


def _event_priority(ev: Event) -> int:
    try:
        return int(ev.headers.get("priority", Priority.NORMAL))
    except ValueError:
        return Priority.NORMAL


@dataclass
class BusEvent:
    """An event on the bus, as subscribers and :meth:`EventBus.history` see it."""

    type: str
    data: Any
    source: Optional[str] = None
    priority: int = Priority.NORMAL
    timestamp: Optional[_dt.datetime] = None
    id: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)
    offset: int = 0
    attempt: int = 0

    @classmethod
    def _from(cls, ev: Event) -> "BusEvent":
        h = dict(ev.headers)
        source = h.pop("source", None)
        prio = _event_priority(ev)
        h.pop("priority", None)
        eid = h.pop("id", "") or ev.id
        return cls(ev.type, ev.data, source, prio, ev.timestamp, eid, h, ev.offset, ev.attempt)

    @property
    def event_type(self) -> str:
        """The type (the name some buses use for it)."""
        return self.type


class HandlerFailed(Exception):
    """What :attr:`EventBus.errors` holds: which subscriber failed on which event."""

    def __init__(self, subscription: "Subscription", event: Event, error: BaseException) -> None:
        super().__init__(f"{subscription.name} on {event.type} ({event.id}): {_describe(error)}")
        self.subscription = subscription
        self.event = event
        self.error = error


@dataclass
class Subscription:
    """One subscriber: the patterns it wants, its handler and its consumer group."""

    id: str                                  # stable: the group name
    name: str                                # the part after "<group>."
    patterns: List[str]                      # type patterns ("memory.saved", "memory.*", "*")
    handler: Callable[..., Any]
    priority: int = 0                        # among the subscribers of one event: higher first
    seq: int = 0                             # registration order
    accept: Optional[Callable[[Event], bool]] = None  # extra filter on the stored event
    adapt: Optional[Callable[[Event], Any]] = None    # stored event -> handler argument
    timeout: Optional[float] = None          # seconds per call; None = no limit
    on_error: Optional[str] = None           # overrides the bus's policy
    group: Optional[Group] = None
    ack_wait: float = 30.0
    stopped: bool = False
    thread: Optional[threading.Thread] = None
    current: Optional[Event] = None          # the event its handler runs now (heartbeat)
    current_since: int = 0                   # CLOCK_REALTIME ns when it started

    def matches(self, ev: Event) -> bool:
        if CONTROL_HEADER in ev.headers:
            return False
        if not any(match_type(p, ev.type) for p in self.patterns):
            return False
        return self.accept is None or bool(self.accept(ev))


class _Expectation:
    """An event this process waits for: the subscribers that must finish it, in the order
    they are to be granted a pool slot."""

    __slots__ = ("order", "pending", "granted", "states", "offset", "created")

    def __init__(self, order: List[str]) -> None:
        self.order = order
        self.pending = set(order)
        self.granted: Set[str] = set()
        self.states: Dict[str, str] = {}
        self.offset = 0
        self.created = time.monotonic()


class EventBus:
    """A durable publish/subscribe bus on ``topic``.

    ``target``: a :class:`Log`, a log directory or an ``engram serve`` endpoint.
    ``group``: the prefix of the subscribers' group names. ``on_error``: "retry" (nack
    with the group's backoff; dead-letter after ``max_deliver``) or "log" (log, keep in
    :attr:`errors`, ack). ``workers``: at most this many handlers run at once in this
    process (None: one per subscriber). ``batch``/``poll``: events fetched at a time and
    seconds each fetch waits. Group settings (``ack_wait``, ``max_deliver``, ``backoff``,
    ``result_ttl``, ``key_ordered``, ``start`` - default "latest": a new subscriber sees
    what is published after it subscribed) apply when a subscriber's group is created.
    """

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], *, topic: str = "bus",
                 group: str = "subscribers", on_error: str = "retry",
                 workers: Optional[int] = None, batch: int = 16, poll: float = 0.5,
                 max_errors: int = 100, **group_config: Any) -> None:
        if isinstance(target, Log):
            self._log: Optional[Log] = target
            self._target: Optional[str] = None
        elif isinstance(target, (str, os.PathLike)):
            self._log = None
            self._target = os.fspath(target)
        else:
            raise TypeError("EventBus target must be an engram.Log, a path or an endpoint")
        _str(topic, "topic")
        _str(group, "group")
        if on_error not in ("retry", "log"):
            raise InvalidArgument(f"on_error {on_error!r}: use 'retry' or 'log'")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InvalidArgument(f"workers {workers!r}: use a positive int or None")
        self.topic = topic
        self.group_prefix = group
        self.on_error = on_error
        self.batch = batch
        self.poll = poll
        cfg: Dict[str, Any] = {"start": "latest", **group_config}
        _group_config(**{**_GROUP_DEFAULTS, **cfg})
        self.group_config = cfg
        self.errors: Deque[HandlerFailed] = deque(maxlen=max_errors)
        self._subs: Dict[str, Subscription] = {}
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)   # settles, pool slots, stop
        self._expect: Dict[str, _Expectation] = {}
        self._workers = workers
        self._busy = 0
        self._running = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._heart: Optional[threading.Thread] = None
        self._activity = time.monotonic()
        self._inflight = 0
        self._consumer_prefix = f"{socket.gethostname()[:60]}-{os.getpid()}"

    def __repr__(self) -> str:
        return f"<engram.EventBus {self.topic} ({len(self._subs)} subscribers)>"

    # -- the log --------------------------------------------------------------------------
    @property
    def log(self) -> Log:
        """The log handle (opened or connected on first use when given a path/endpoint)."""
        if self._log is None or self._log.closed:
            if self._target is None:
                raise Closed("EventBus: the Log it was given is closed")
            self._log = _logs.connect(self._target) if "://" in self._target else _logs.open(self._target)
        return self._log

    def close(self) -> None:
        """Stops the consumers and closes the log handle this bus opened."""
        self.stop()
        if self._target is not None and self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "EventBus":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- subscriptions --------------------------------------------------------------------
    def subscribe(self, pattern: Union[str, Sequence[str]], handler: Optional[Callable[[BusEvent], Any]] = None, *,
                  priority: int = 0, name: Optional[str] = None,
                  filter: Optional[Callable[[BusEvent], bool]] = None,
                  timeout: Optional[float] = None, on_error: Optional[str] = None) -> Any:
        """Subscribes ``handler`` to types matching the glob ``pattern`` (or any of a list);
        returns the subscription id. Without a handler it is a decorator. ``filter`` sees
        the :class:`BusEvent` and may refuse it; ``name`` fixes the group name (default:
        the handler's module and qualified name)."""
        accept = None
        if filter is not None:
            if not callable(filter):
                raise TypeError("filter must be callable")
            accept = lambda ev: filter(BusEvent._from(ev))  # noqa: E731

        def add(fn: Callable[[BusEvent], Any]) -> str:
            return self.add_subscriber(pattern, fn, priority=priority, name=name, accept=accept,
                                       timeout=timeout, on_error=on_error).id
        if handler is not None:
            return add(handler)

        def deco(fn: Callable[[BusEvent], Any]) -> Callable[[BusEvent], Any]:
            add(fn)
            return fn
        return deco

    def add_subscriber(self, pattern: Union[str, Sequence[str]], handler: Callable[..., Any], *,
                       priority: int = 0, name: Optional[str] = None,
                       accept: Optional[Callable[[Event], bool]] = None,
                       adapt: Optional[Callable[[Event], Any]] = None,
                       timeout: Optional[float] = None, on_error: Optional[str] = None) -> Subscription:
        """The general form of :meth:`subscribe` the compat layers use: ``accept`` filters
        the stored :class:`engram.Event`, ``adapt`` turns it into the handler's argument
        (default: a :class:`BusEvent`). Creates the subscriber's group now, so what is
        published from here on waits for it even if this process dies."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if not patterns or not all(isinstance(p, str) and p and not any(c.isspace() for c in p) for p in patterns):
            raise InvalidArgument(f"pattern {pattern!r}: use a non-empty type pattern without spaces")
        if not callable(handler):
            raise TypeError("handler must be callable")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError("priority must be an int")
        if on_error is not None and on_error not in ("retry", "log"):
            raise InvalidArgument(f"on_error {on_error!r}: use 'retry' or 'log'")
        t = _ms(timeout, "timeout")
        base = _group_part(name if name is not None else _handler_name(handler, patterns))
        with self._lock:
            sid = f"{self.group_prefix}.{base}"
            n = 2
            while sid in self._subs:
                sid = f"{self.group_prefix}.{base}-{n}"
                n += 1
            sub = Subscription(sid, sid[len(self.group_prefix) + 1:], patterns, handler, priority,
                               next(self._seq), accept, adapt, t / 1000 if t else None, on_error)
            self._subs[sid] = sub
        try:
            cfg = dict(self.group_config)
            cfg.setdefault("filters", c_filters(patterns))
            sub.group = self.log.group(self.topic, sid, create_topic=True, **cfg)
            try:
                sub.ack_wait = sub.group.info().ack_wait or 30.0
            except Error:
                pass
        except BaseException:
            with self._lock:
                self._subs.pop(sid, None)
            raise
        with self._lock:
            if self._running:
                self._start_consumer(sub)
        return sub

    def unsubscribe(self, subscription_id: str, *, keep_group: bool = False) -> bool:
        """Removes a subscription; True if it existed. Its group is deleted too (what was
        published for it and not handled is dropped) unless ``keep_group``."""
        with self._lock:
            sub = self._subs.pop(subscription_id, None)
            if sub is None:
                return False
            sub.stopped = True
            self._cv.notify_all()
        if not keep_group and sub.group is not None:
            try:
                sub.group.delete()
            except Error as e:
                logger.info("unsubscribe %s: group not deleted: %s", sub.id, e)
        return True

    def subscriptions(self) -> List[Subscription]:
        """Every subscription, in registration order."""
        with self._lock:
            return sorted(self._subs.values(), key=lambda s: s.seq)

    def subscribers(self, type: str, event: Optional[Event] = None) -> List[Subscription]:
        """Subscriptions an event of ``type`` (or the stored ``event``) goes to, highest
        priority first, then in registration order."""
        with self._lock:
            subs = list(self._subs.values())
        if event is not None:
            out = [s for s in subs if s.matches(event)]
        else:
            out = [s for s in subs if any(match_type(p, type) for p in s.patterns)]
        return sorted(out, key=lambda s: (-s.priority, s.seq))

    # -- publishing -----------------------------------------------------------------------
    def publish(self, type: str, data: Any = None, *, source: Optional[str] = None,
                priority: int = Priority.NORMAL, metadata: Optional[Dict[str, str]] = None,
                key: Optional[str] = None, id: Optional[str] = None,
                wait: Optional[float] = None, order: Optional[Callable[[Subscription], Any]] = None) -> BusEvent:
        """Appends an event durably; returns it with its ``id`` and ``offset``. With
        ``wait`` (seconds), returns once this process's subscribers of the event handled
        it (or ``wait`` passed for one of them; the event stays queued for it)."""
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError("priority must be an int (or Priority)")
        if source is not None and not isinstance(source, str):
            raise TypeError("source must be a str")
        headers = dict(metadata or {})
        eid = id or uuid.uuid4().hex
        headers.update({"id": eid, "priority": str(int(priority))})
        if source is not None:
            headers["source"] = source
        off = self.append(type, data, headers=headers, key=key, wait=wait, order=order)
        return BusEvent(type, data, source, int(priority), _dt.datetime.now(_dt.timezone.utc),
                        eid, dict(metadata or {}), int(off))

    emit = publish

    def append(self, type: str, data: Any, *, headers: Dict[str, str], key: Optional[str] = None,
               wait: Optional[float] = None, order: Optional[Callable[[Subscription], Any]] = None,
               each: bool = False, idempotency_key: Optional[str] = None,
               states: Optional[Dict[str, str]] = None) -> Offset:
        """Appends with the given headers (``id`` among them); with ``wait``, waits as
        :meth:`publish` does (``each``: ``wait`` seconds per subscriber, in order).
        ``order`` sorts the subscribers for pool slots; ``states`` receives what
        :meth:`wait_for` returned."""
        eid = headers.setdefault("id", uuid.uuid4().hex)
        exp = None
        if wait is not None:
            probe = Event((0, self.topic, type, key, b"", None, headers, None, 0, 0, 0, 0))
            subs = self.subscribers(type, probe)
            if order is not None:
                subs.sort(key=order)
            exp = _Expectation([s.id for s in subs])
            with self._lock:
                self._expect[eid] = exp
        try:
            off = self.log.append(self.topic, type, data if data is not None else {}, headers=headers, key=key,
                                  idempotency_key=idempotency_key)
            if exp is not None and wait is not None and not getattr(off, "duplicate", False):
                exp.offset = int(off)
                got = self.wait_for(eid, wait, each=each)
                if states is not None:
                    states.update(got)
        finally:
            if exp is not None:
                with self._lock:
                    self._expect.pop(eid, None)
        return off

    def wait_for(self, event_id: str, timeout: float, *, each: bool = False) -> Dict[str, str]:
        """Waits until the subscribers expected for ``event_id`` finished it (in this or
        another process), up to ``timeout`` seconds in all (``each``: per subscriber, in
        order). Returns subscription id -> "done", "failed", "dead" or "pending"."""
        with self._lock:
            exp = self._expect.get(event_id)
        if exp is None:
            return {}
        deadline = time.monotonic() + timeout
        next_poll = time.monotonic() + 0.25
        for sid in exp.order:
            if each:
                deadline = time.monotonic() + timeout
            with self._cv:
                while sid in exp.pending and sid in self._subs and self._running:
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    if now >= next_poll:
                        # Another process of this bus may have handled it.
                        self._cv.release()
                        try:
                            self._poll_status(exp, sid)
                        finally:
                            self._cv.acquire()
                        next_poll = time.monotonic() + 0.25
                        continue
                    self._cv.wait(min(deadline, next_poll) - now)
        return {sid: exp.states.get(sid, "pending" if sid in exp.pending else "done") for sid in exp.order}

    def _poll_status(self, exp: _Expectation, sid: str) -> None:
        sub = self._subs.get(sid)
        if sub is None or sub.group is None or not exp.offset:
            return
        try:
            st = sub.group.status(exp.offset)
        except Error:
            return
        if st.state in ("done", "dead", "skipped"):
            with self._cv:
                exp.pending.discard(sid)
                exp.states.setdefault(sid, "done" if st.state != "dead" else "dead")
                self._cv.notify_all()

    # -- history --------------------------------------------------------------------------
    def _first_at(self, since_ns: int, first: int, head: int) -> int:
        """The first offset appended at or after since_ns (binary search: append times
        never go down within a topic)."""
        lo, hi = first, head + 1
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                ts = self.log.get(self.topic, mid).timestamp_ns
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
        """Past events since the last :meth:`clear_history`, oldest first: of types
        matching the glob ``type``, appended in [``since``, ``until``), from ``source``;
        the newest ``limit`` of them (None = all)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidArgument("limit must be a non-negative int or None")
        lo = _ns(since, "since") if since is not None else None
        hi = _ns(until, "until") if until is not None else None
        try:
            info = self.log.topic(self.topic)
        except NotFound:
            return []
        if info.count == 0:
            return []
        start = info.first_offset if lo is None else self._first_at(lo, info.first_offset, info.head_offset)
        out: List[BusEvent] = []
        for ev in self.log.scan(self.topic, start):
            if hi is not None and ev.timestamp_ns >= hi:
                break
            if ev.headers.get(CONTROL_HEADER) == _HISTORY_CLEARED:
                out = []
                continue
            if CONTROL_HEADER in ev.headers:
                continue
            if type is not None and not (match_type(type, ev.type) or fnmatch.fnmatchcase(ev.type, type)):
                continue
            if source is not None and ev.headers.get("source") != source:
                continue
            out.append(BusEvent._from(ev))
        return out[-limit:] if limit else (out if limit is None else [])

    def recent(self, limit: Optional[int] = None, type: Optional[str] = None, *,
               max_scan: int = 1000) -> List[Event]:
        """The newest stored events first, since the last :meth:`clear_history`: of the
        last ``max_scan`` events, those matching the glob ``type``, at most ``limit``."""
        try:
            info = self.log.topic(self.topic)
        except NotFound:
            return []
        out: List[Event] = []
        hi, seen = info.head_offset, 0
        while hi >= info.first_offset and seen < max_scan:
            lo = max(info.first_offset, hi - 255)
            chunk = self.log.read(self.topic, lo, hi - lo + 1)
            for ev in reversed(chunk):
                if ev.headers.get(CONTROL_HEADER) == _HISTORY_CLEARED:
                    return out
                if CONTROL_HEADER in ev.headers:
                    continue
                seen += 1
                if seen > max_scan:
                    return out
                if type is None or fnmatch.fnmatchcase(ev.type, type):
                    out.append(ev)
                    if limit and len(out) >= limit:
                        return out
            hi = lo - 1
        return out

    def clear_history(self) -> None:
        """Marks the history empty up to now (a durable mark; events stay in the log for
        the subscribers that have not handled them yet)."""
        self.log.append(self.topic, "engram.history.cleared", {}, headers={CONTROL_HEADER: _HISTORY_CLEARED})

    get_history = history

    # -- running --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    def start(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> "EventBus":
        """Starts one consumer thread per subscriber in this process (idempotent).
        ``loop``: where ``async def`` handlers run (default: one loop per consumer thread)."""
        with self._lock:
            if loop is not None:
                self._loop = loop
            if self._running:
                return self
            self._running = True
            for sub in self._subs.values():
                self._start_consumer(sub)
            self._heart = threading.Thread(target=self._heartbeat, name="engram-bus-heartbeat", daemon=True)
            self._heart.start()
        return self

    async def astart(self) -> "EventBus":
        """:meth:`start` with ``async def`` handlers running on the calling event loop."""
        return self.start(asyncio.get_running_loop())

    def stop(self, grace: float = 5.0) -> None:
        """Stops the consumers: events fetched but not started go back at once, running
        handlers get ``grace`` seconds (then their events are redelivered after ack_wait).
        Consumer threads waiting in a fetch end within ``poll`` seconds on their own."""
        with self._cv:
            if not self._running:
                return
            self._running = False
            for s in self._subs.values():
                s.thread = None  # a thread that is not its subscriber's current one ends
            self._cv.notify_all()
            deadline = time.monotonic() + grace
            while self._inflight and time.monotonic() < deadline:
                self._cv.wait(deadline - time.monotonic())
            self._heart = None
            self._loop = None

    async def astop(self, grace: float = 5.0) -> None:
        """:meth:`stop` without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.stop, grace)

    def run(self, *, install_signals: bool = True) -> None:
        """Runs the subscribers in this thread's process until :meth:`stop` (or
        SIGTERM/SIGINT): a worker process for this bus."""
        stop = threading.Event()
        restore = []
        if install_signals and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                restore.append((s, signal.signal(s, lambda *_: stop.set())))
        self.start()
        try:
            while self._running and not stop.wait(0.2):
                pass
        finally:
            for s, h in restore:
                signal.signal(s, h)
            self.stop()

    def run_until_idle(self, idle: float = 0.5, timeout: float = 60.0) -> None:
        """Starts (if needed), handles what is pending and returns once no subscriber got
        an event for ``idle`` seconds and none is running; stops if it started."""
        started = not self._running
        self.start()
        end = time.monotonic() + timeout
        self._activity = time.monotonic()
        try:
            with self._cv:
                while time.monotonic() < end:
                    quiet = time.monotonic() - self._activity
                    if self._inflight == 0 and quiet >= idle:
                        break
                    self._cv.wait(max(0.01, idle - quiet) if self._inflight == 0 else 0.1)
        finally:
            if started:
                self.stop()

    def _start_consumer(self, sub: Subscription) -> None:
        if sub.thread is not None:
            return
        if sub.group is None or sub.group.log.closed:
            sub.group = Group(self.log, self.topic, sub.id)  # the bus was closed and reopened
        sub.stopped = False
        sub.thread = threading.Thread(target=self._consume, args=(sub,), daemon=True,
                                      name=f"engram-bus-{sub.name}"[:60])
        sub.thread.start()

    _BEAT_EVERY = 5.0  # seconds between worker heartbeats (engram workers, the dashboard)

    def _beat(self) -> None:
        """Describes each subscriber's consumer to the log: host, pid, its group and the
        event it runs now. A failed heartbeat is logged, never fatal."""
        with self._cv:
            subs = [s for s in self._subs.values() if s.group is not None and not s.stopped]
        for s in subs:
            ev, g = s.current, s.group
            if g is None:  # closed since
                continue
            try:
                self.log.worker_heartbeat(
                    f"{self._consumer_prefix}-{s.name}"[:200], host=socket.gethostname()[:255],
                    pid=os.getpid(), concurrency=1, groups=[f"{self.topic}/{g.name}"],
                    running=[(ev.topic, g.name, ev.offset, s.current_since)] if ev else [])
            except Error as e:
                logger.debug("worker heartbeat for %s: %s", s.id, e)

    def _heartbeat(self) -> None:
        """Renews the lease of every event a handler is running, every ack_wait/3, and
        sends the subscribers' worker heartbeats every _BEAT_EVERY seconds."""
        me = threading.current_thread()
        beat = 0.0
        while True:
            if time.monotonic() - beat >= self._BEAT_EVERY:
                beat = time.monotonic()
                self._beat()
            with self._cv:
                if not self._running or self._heart is not me:
                    return
                subs = [s for s in self._subs.values() if s.current is not None]
                period = min([s.ack_wait / 3 for s in self._subs.values()] or [1.0])
                self._cv.wait(max(0.05, min(period, 5.0)))
                if not self._running or self._heart is not me:
                    return
            for s in subs:
                ev = s.current
                if ev is None or ev.finished is not None:
                    continue
                try:
                    ev.extend()
                except Error as e:
                    logger.debug("heartbeat for %s: %s", ev.id, e)

    def _consume(self, sub: Subscription) -> None:
        consumer = f"{self._consumer_prefix}-{sub.name}"[:200]
        me = threading.current_thread()
        loop: Optional[asyncio.AbstractEventLoop] = None

        def mine() -> bool:
            return self._running and not sub.stopped and sub.thread is me
        try:
            while mine():
                group = sub.group
                if group is None:  # never: subscribe() sets it before this thread starts
                    return
                try:
                    evs = group.fetch(consumer, self.batch, wait=self.poll)
                except Closed:
                    return
                except NotFound:
                    if sub.stopped:
                        return
                    logger.error("subscriber %s: its group is gone", sub.id)
                    return
                except Error as e:
                    logger.error("subscriber %s: fetch failed: %s", sub.id, e)
                    time.sleep(min(self.poll, 1.0))
                    continue
                if not evs:
                    continue
                evs.sort(key=lambda e: (-_event_priority(e), e.offset))
                with self._cv:
                    self._activity = time.monotonic()
                    self._inflight += 1
                try:
                    for i, ev in enumerate(evs):
                        if not mine():
                            _release(evs[i:])
                            break
                        try:
                            loop = self._handle(sub, ev, loop)
                        except Exception:  # noqa: BLE001 - keep consuming; the lease lapses
                            logger.exception("subscriber %s: handling %s failed", sub.id, ev.id)
                finally:
                    with self._cv:
                        self._inflight -= 1
                        self._activity = time.monotonic()
                        self._cv.notify_all()
        finally:
            if loop is not None:
                _close_loop(loop)

    def _handle(self, sub: Subscription, ev: Event,
                loop: Optional[asyncio.AbstractEventLoop]) -> Optional[asyncio.AbstractEventLoop]:
        eid = ev.headers.get("id", "")
        try:
            wanted = sub.matches(ev)
        except Exception as e:  # noqa: BLE001 - a filter's bug is that subscriber's failure
            self._settled(sub, eid, self._settle(sub, ev, e))
            return loop
        if not wanted:
            _settle_quietly(ev)
            self._settled(sub, eid, "done")
            return loop
        sub.current = ev  # the heartbeat keeps its lease while it waits for a slot and runs
        sub.current_since = time.time_ns()
        self._acquire(sub, eid)
        exc: Optional[BaseException] = None
        try:
            arg = sub.adapt(ev) if sub.adapt is not None else BusEvent._from(ev)
            loop = self._call(sub, arg, loop)
        except BaseException as e:  # noqa: B902 - a handler's failure must not stop the consumer
            if isinstance(e, (KeyboardInterrupt, SystemExit)) and not isinstance(e, HandlerTimeout):
                raise
            exc = e
        finally:
            sub.current = None
            self._release_slot()
        state = self._settle(sub, ev, exc)
        self._settled(sub, eid, state)
        return loop

    def _call(self, sub: Subscription, arg: Any,
              loop: Optional[asyncio.AbstractEventLoop]) -> Optional[asyncio.AbstractEventLoop]:
        fn = sub.handler
        if not inspect.iscoroutinefunction(fn) and sub.timeout:
            box: Dict[str, Any] = {}

            def target() -> None:
                try:
                    box["r"] = fn(arg)
                except BaseException as e:  # noqa: B902 - reported below
                    box["e"] = e
            t = threading.Thread(target=target, daemon=True, name=f"{threading.current_thread().name}-call")
            t.start()
            t.join(sub.timeout)
            if t.is_alive():
                raise HandlerTimeout(f"handler timed out after {sub.timeout:g}s (left running)")
            if "e" in box:
                raise box["e"]
            result = box.get("r")
        else:
            result = fn(arg)
        if not inspect.isawaitable(result):
            return loop
        coro = _as_coro(result, sub.timeout)
        home = self._loop
        if home is not None and home.is_running():
            fut = asyncio.run_coroutine_threadsafe(coro, home)
            try:
                fut.result()
            except asyncio.TimeoutError:
                raise HandlerTimeout(f"handler timed out after {sub.timeout:g}s") from None
            return loop
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()  # this consumer thread's loop, kept across events
        try:
            loop.run_until_complete(coro)
        except asyncio.TimeoutError:
            raise HandlerTimeout(f"handler timed out after {sub.timeout:g}s") from None
        return loop

    def _settle(self, sub: Subscription, ev: Event, exc: Optional[BaseException]) -> str:
        """Acks, nacks or rejects per the outcome and policy; returns the waiter state."""
        policy = sub.on_error or self.on_error
        try:
            if exc is None:
                ev.ack()
                return "done"
            if isinstance(exc, Reject):
                ev.reject(exc.reason)
                return "dead"
            if isinstance(exc, Retry):
                ev.nack(delay=exc.delay, error=exc.error)
                return "failed"
            if policy == "log":
                logger.error("subscriber %s failed on %s (%s): %s", sub.name, ev.type, ev.id, _describe(exc),
                             exc_info=(type(exc), exc, exc.__traceback__))
                self.errors.append(HandlerFailed(sub, ev, exc))
                ev.ack()
                return "failed"
            logger.warning("subscriber %s failed on %s (%s, attempt %d): %s", sub.name, ev.type, ev.id,
                           ev.attempt, _describe(exc))
            self.errors.append(HandlerFailed(sub, ev, exc))
            ev.nack(error=_describe(exc))
            return "failed"
        except Error as e:
            logger.info("settling %s for %s failed: %s", ev.id, sub.name, e)
            return "failed"

    def _settled(self, sub: Subscription, eid: str, state: str) -> None:
        with self._cv:
            self._activity = time.monotonic()
            exp = self._expect.get(eid) if eid else None
            if exp is not None and sub.id in exp.pending:
                # A failed attempt that will be retried still ends this wait: the caller
                # learns the state; the event stays queued for that subscriber.
                exp.pending.discard(sub.id)
                exp.states[sub.id] = state
            self._cv.notify_all()

    # -- the pool ---------------------------------------------------------------------------
    def _acquire(self, sub: Subscription, eid: str) -> None:
        """A handler slot; with ``workers`` set, slots for an awaited event go to its
        subscribers in their expected order (an earlier one gets a second to show up)."""
        if self._workers is None:
            return
        with self._cv:
            while True:
                exp = self._expect.get(eid) if eid else None
                ahead = False
                if exp is not None and sub.id in exp.order and time.monotonic() - exp.created < 1.0:
                    for sid in exp.order[:exp.order.index(sub.id)]:
                        if sid not in exp.granted and sid in exp.pending and sid in self._subs:
                            ahead = True
                            break
                if self._busy < self._workers and not ahead:
                    self._busy += 1
                    if exp is not None:
                        exp.granted.add(sub.id)
                    return
                self._cv.wait(0.05)

    def _release_slot(self) -> None:
        if self._workers is None:
            return
        with self._cv:
            self._busy -= 1
            self._cv.notify_all()


def _as_coro(aw: Any, timeout: Optional[float]) -> Any:
    async def run() -> Any:
        return await asyncio.wait_for(aw, timeout) if timeout else await aw
    return run()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:  # noqa: BLE001 - closing a loop at thread exit is best effort
        pass
    loop.close()


def _release(evs: List[Event]) -> None:
    for ev in evs:
        try:
            ev.nack(delay=0, error="released by a stopping bus")
        except Error:
            pass


def _settle_quietly(ev: Event) -> None:
    try:
        ev.ack()
    except Error:
        pass


def _handler_name(fn: Callable[..., Any], patterns: List[str]) -> str:
    owner = getattr(fn, "__self__", None)
    qual = getattr(fn, "__qualname__", None) or type(fn).__name__
    mod = getattr(fn, "__module__", None) or (type(owner).__module__ if owner is not None else "")
    base = f"{mod}.{qual}" if mod and mod != "__main__" else qual
    base = base.replace(".<locals>.", ".").replace("<lambda>", "lambda")
    return f"{base}@{'+'.join(patterns)}"


def _group_part(name: str) -> str:
    """A name made of [A-Za-z0-9._-], short enough for a group name."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"subscriber name {name!r}: use a non-empty str")
    clean = _GROUP_NAME_OK.sub("_", name.replace("*", "all").replace("@", ".on."))
    if len(clean) > 120:
        clean = clean[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return clean


def _describe(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        msg += f" ({last.filename}:{last.lineno})"
    return msg[:250]
