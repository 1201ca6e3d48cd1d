"""The :class:`Log` handle and its entry points: ``open(path)`` (embedded) and
``connect(endpoint)`` (through ``engram serve``) both return a Log; topics, appends
(plain, batched and pipelined), reads, groups and transactions hang off it."""
from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple,
                    Union)

from . import _engram
from .errors import AlreadyExists, Closed, Error, InvalidArgument, NotFound, NotSupported, ProtocolError
from .event import Batch, Event
from .group import Group, _group_config
from .message import (Duration, Message, Offset, Payload, When, _headers, _message, _ms, _ns,
                      _str, encode_payload)
from .records import GroupInfo, RateInfo, ScheduleInfo, TopicInfo, WorkerInfo
from .txn import Transaction

__all__ = ["Log", "open", "connect"]

_DURABILITY = {"sync": _engram.DURABILITY_SYNC, "nometasync": _engram.DURABILITY_NOMETASYNC,
               "async": _engram.DURABILITY_ASYNC}

_shared_lock = threading.Lock()
_shared: Dict[str, List[Any]] = {}  # realpath -> [C handle, users]; LMDB wants one per process


_KEEP: Any = object()  # "not given" for set_retention

_MISSED = {"once": _engram.MISSED_ONCE, "skip": _engram.MISSED_SKIP, "all": _engram.MISSED_ALL}
_CHANGED = {0: "unchanged", 1: "added", 2: "replaced"}


def _schedule_kw(topic: str, type: str, payload: Payload, every: Optional[Duration],
                 cron: Optional[str], tz: Optional[str], start: Optional[When],
                 key: Optional[str], headers: Optional[Mapping[str, str]],
                 content_type: Optional[str], missed: str,
                 max_catchup: Optional[int]) -> Dict[str, Any]:
    """schedule_add / schedule_set keywords, checked as far as Python can."""
    _str(topic, "topic")
    _str(type, "type")
    _str(cron, "cron", optional=True)
    _str(tz, "tz", optional=True)
    if (every is None) == (cron is None or cron == ""):
        raise InvalidArgument("schedule: give every (seconds or timedelta) or cron, one of them")
    if missed not in _MISSED:
        raise InvalidArgument(f"schedule: missed {missed!r}: use 'once', 'skip' or 'all'")
    if max_catchup is not None and (isinstance(max_catchup, bool) or not isinstance(max_catchup, int)):
        raise TypeError("max_catchup must be an int")
    data, ct = encode_payload(payload, content_type)
    return {"topic": topic, "type": type, "every_ms": _ms(every, "every") or 0,
            "start_ns": _ns(start, "start") if start is not None else 0, "cron": cron or None,
            "tz": tz, "payload": data, "key": _str(key, "key", optional=True),
            "content_type": _str(ct, "content_type", optional=True), "headers": _headers(headers),
            "missed": _MISSED[missed], "max_catchup": max_catchup or 0}


def _retention_kw(max_age: Any, max_bytes: Optional[int],
                  max_events: Optional[int]) -> Dict[str, int]:
    """Retention keywords for topic_create / topic_set: 0 means no limit."""
    if isinstance(max_age, _dt.timedelta):
        max_age = max_age.total_seconds()
    kw = {"max_age_ms": int(round(max_age * 1000)) if max_age else 0,
          "max_bytes": int(max_bytes) if max_bytes else 0,
          "max_events": int(max_events) if max_events else 0}
    for k, v in kw.items():
        if v < 0:
            raise ValueError(f"{k.replace('_ms', '')} must not be negative")
    return kw


def _compaction_kw(tombstone_ttl: Any, tombstone_type: Optional[str]) -> Dict[str, Any]:
    """Key compaction keywords for topic_create / topic_set: 0 / "" mean the default."""
    if isinstance(tombstone_ttl, _dt.timedelta):
        tombstone_ttl = tombstone_ttl.total_seconds()
    ttl = int(round(tombstone_ttl * 1000)) if tombstone_ttl else 0
    if ttl < 0:
        raise ValueError("tombstone_ttl must not be negative")
    return {"tombstone_ttl_ms": ttl, "tombstone_type": tombstone_type or ""}


def _check_declared(have: Dict[str, Any], kw: Dict[str, Any], key_ordered: Optional[bool]) -> None:
    """Raises AlreadyExists when a setting asked for in ``kw`` differs from the existing
    group's (``have``, as group_info returns it)."""
    diff = []
    for k in ("filters", "ack_wait_ms", "max_deliver", "backoff_ms", "result_ttl_ms"):
        if k not in kw:
            continue
        want, old = kw[k], have[k]
        if isinstance(want, list):
            old = list(old)
        if want != old:
            unit = " ms" if k.endswith("_ms") else ""
            diff.append(f"{k[:-3] if unit else k} {want}{unit} (it has {old}{unit})")
    ko = bool(have["flags"] & _engram.GROUP_KEY_ORDERED)
    if key_ordered is not None and bool(key_ordered) != ko:
        diff.append(f"key_ordered {bool(key_ordered)} (it has {ko})")
    if diff:
        raise AlreadyExists(f"group {have['topic']}/{have['name']} exists with other settings: "
                            + ", ".join(diff) + "; delete it first or declare it as it is")


class Log:
    """A log handle, embedded (:func:`open`) or remote (:func:`connect`). Thread-safe; a
    context manager that closes it. Do not use it in a child after ``fork()``."""

    def __init__(self, handle: _engram.Log, *, path: Optional[str] = None, endpoint: Optional[str] = None,
                 create_topics: bool = True) -> None:
        self._h = handle
        self.path = path
        self.endpoint = endpoint
        self.create_topics = create_topics
        self._closed = False
        self._pipelined: Set[str] = set()  # topics append_async() has checked exist
        self.open_options: Dict[str, Any] = {}  # open()'s keyword arguments, to reopen alike

    # -- lifetime -----------------------------------------------------------------------
    def __repr__(self) -> str:
        where = self.path or self.endpoint
        return f"<engram.Log {where!r}{' closed' if self.closed else ''}>"

    def __enter__(self) -> "Log":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once closed (or when inherited through fork())."""
        return self._closed or self._h.closed

    def close(self) -> None:
        """Closes the handle (after calls running in other threads return). Idempotent.
        Pipelined appends still queued are written first."""
        if self._closed:
            return
        if self._pipelined:
            try:
                self._h.append_wait()
            except Error:
                pass  # nobody is left to see it
        self._closed = True
        if self.path is not None:
            with _shared_lock:
                ent = _shared.get(self.path)
                if ent is not None and ent[0] is self._h:
                    ent[1] -= 1
                    if ent[1] > 0:
                        return
                    del _shared[self.path]
        self._h.close()

    @property
    def h(self) -> _engram.Log:
        """The C handle (engram._engram.Log); raises Closed after close()."""
        if self._closed:
            raise Closed("the log handle is closed")
        return self._h

    # -- topics ---------------------------------------------------------------------------
    def create_topic(self, name: str, *, compress_threshold: Optional[int] = None,
                     max_payload: Optional[int] = None, dict_train_after: Optional[int] = None,
                     no_dict: bool = False, exist_ok: bool = False,
                     max_age: Optional[Duration] = None, max_bytes: Optional[int] = None,
                     max_events: Optional[int] = None, retain_force: bool = False,
                     compact_by_key: bool = False, tombstone_ttl: Optional[Duration] = None,
                     tombstone_type: Optional[str] = None) -> None:
        """Creates a topic (names: 1..200 bytes of [A-Za-z0-9._-]). Raises AlreadyExists
        unless ``exist_ok``. Retention: ``max_age`` (seconds or timedelta), ``max_bytes``,
        ``max_events`` (None = no limit); ``retain_force`` lets retention remove events
        groups have not finished (docs/operations.md). Key compaction: ``compact_by_key``
        keeps only the newest event of each key; a tombstone (``append(...,
        tombstone=True)``, or an event of ``tombstone_type``) goes ``tombstone_ttl``
        seconds after its append (default one day)."""
        kw: Dict[str, Any] = {k: v for k, v in (("compress_threshold", compress_threshold),
                                 ("max_payload", max_payload),
                                 ("dict_train_after", dict_train_after)) if v is not None}
        kw.update(_retention_kw(max_age, max_bytes, max_events))
        kw.update(_compaction_kw(tombstone_ttl, tombstone_type))
        flags = (_engram.TOPIC_NO_DICT if no_dict else 0) | \
            (_engram.TOPIC_RETAIN_FORCE if retain_force else 0) | \
            (_engram.TOPIC_COMPACT_KEY if compact_by_key else 0)
        try:
            self.h.topic_create(name, flags=flags, **kw)
        except AlreadyExists:
            if not exist_ok:
                raise

    def set_retention(self, topic: str, *, max_age: Any = _KEEP, max_bytes: Any = _KEEP,
                      max_events: Any = _KEEP, retain_force: Optional[bool] = None,
                      compact_by_key: Optional[bool] = None, tombstone_ttl: Any = _KEEP,
                      tombstone_type: Any = _KEEP) -> TopicInfo:
        """Changes a topic's retention and key compaction; arguments not given stay as they
        are, None removes a limit (``tombstone_ttl``: back to the default, one day;
        ``tombstone_type``: none). Returns the topic's new information."""
        t = self.topic(topic)
        age = t.max_age if max_age is _KEEP else max_age
        size = t.max_bytes if max_bytes is _KEEP else max_bytes
        events = t.max_events if max_events is _KEEP else max_events
        force = t.retain_force if retain_force is None else retain_force
        compact = t.compact_by_key if compact_by_key is None else compact_by_key
        ttl = t.tombstone_ttl if tombstone_ttl is _KEEP else tombstone_ttl
        ttype = t.tombstone_type if tombstone_type is _KEEP else tombstone_type
        limits: Dict[str, Any] = {**_retention_kw(age, size, events), **_compaction_kw(ttl, ttype)}
        flags = (t.flags & ~(_engram.TOPIC_RETAIN_FORCE | _engram.TOPIC_COMPACT_KEY)) | \
            (_engram.TOPIC_RETAIN_FORCE if force else 0) | \
            (_engram.TOPIC_COMPACT_KEY if compact else 0)
        self.h.topic_set(topic, compress_threshold=t.compress_threshold,
                         max_payload=t.max_payload, dict_train_after=t.dict_train_after,
                         flags=flags, **limits)
        return self.topic(topic)

    def compact(self, topic: Optional[str] = None) -> Dict[str, int]:
        """Applies the retention limits of ``topic`` (None = every topic) now and returns
        what was done: removed, slices, skipped, held_at, max_slice_ns."""
        return self.h.compact(topic)

    def topic(self, name: str) -> TopicInfo:
        """A topic's information; NotFound when it does not exist."""
        return TopicInfo._from(self.h.topic_info(name))

    def topics(self) -> List[TopicInfo]:
        """Every topic, in name order."""
        return [TopicInfo._from(d) for d in self.h.topic_list()]

    def drop_topic(self, name: str) -> None:
        """Drops a topic with its events, keys, dictionaries and groups."""
        self.h.topic_drop(name)

    def train_dict(self, topic: str) -> int:
        """Trains the topic's zstd dictionary from its newest events; returns its id."""
        return self.h.topic_train_dict(topic)

    def _autocreate(self, topic: str, err: NotFound) -> bool:
        if not self.create_topics or not isinstance(topic, str):
            return False
        try:
            self.h.topic_info(topic)
            return False  # the topic exists: the NotFound was about something else
        except NotFound:
            pass
        self.create_topic(topic, exist_ok=True)
        return True

    # -- events ---------------------------------------------------------------------------
    def append(self, topic: str, type: str, payload: Payload = None, *, key: Optional[str] = None,
               headers: Optional[Mapping[str, str]] = None, idempotency_key: Optional[str] = None,
               delay: Optional[Duration] = None, deliver_at: Optional[When] = None,
               content_type: Optional[str] = None, tombstone: bool = False) -> Offset:
        """Appends one event and returns its offset once it is durable. ``payload`` may be
        bytes, str or a dict/list (stored as JSON). ``delay`` (seconds) or ``deliver_at``
        holds it back from groups until then. With an ``idempotency_key`` seen in the dedup
        window nothing is written and the original offset comes back with
        ``.duplicate = True``. A missing topic is created unless the log was opened with
        ``create_topics=False``. ``tombstone=True`` marks it as deleting its ``key``
        (key compaction, docs/operations.md)."""
        spec = Message(type, payload, key, headers, idempotency_key, delay, deliver_at,
                       content_type, tombstone).spec()
        try:
            off, dup = self.h.append(topic, spec)
        except NotFound as e:
            if not self._autocreate(topic, e):
                raise
            off, dup = self.h.append(topic, spec)
        return Offset(off, dup)

    def append_many(self, topic: str, events: Iterable[Union[Message, Mapping[str, Any], Tuple[Any, ...]]]) -> List[Offset]:
        """Appends several events in one transaction (all or none); returns their offsets.
        Items are :class:`Message` objects, dicts with its fields, or ``(type, payload)``."""
        if isinstance(events, (str, bytes, Mapping)):
            raise TypeError("events must be an iterable of Message, dict or (type, payload)")
        specs = [_message(e).spec() for e in events]
        try:
            res = self.h.append_batch(topic, specs)
        except NotFound as e:
            if not self._autocreate(topic, e):
                raise
            res = self.h.append_batch(topic, specs)
        return [Offset(o, d) for o, d in res]

    def append_async(self, topic: str, type: str, payload: Payload = None, *,
                     key: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
                     idempotency_key: Optional[str] = None, delay: Optional[Duration] = None,
                     deliver_at: Optional[When] = None, content_type: Optional[str] = None,
                     tombstone: bool = False,
                     on_done: Optional[Callable[[int, int, bool], None]] = None) -> None:
        """Queues an append without waiting for it to be durable (pipelining, done by the
        library: engram_append_async); :meth:`flush` waits for all of them and raises the
        first error. An event refused later (too big ...) fails alone. ``on_done(code,
        offset, duplicate)`` is called once the append is durable (``code`` 0) or failed
        (an ``ENGRAM_E*`` code, see :func:`engram.error_for_code`), in order, on the
        thread of a later ``append_async`` or ``flush`` of this handle; it must not call
        the log. An append refused at once raises and never calls it."""
        spec = Message(type, payload, key, headers, idempotency_key, delay, deliver_at,
                       content_type, tombstone).spec()
        _str(topic, "topic")
        if topic not in self._pipelined:
            # A missing topic would only surface at flush(): create it now, once per topic.
            if self.create_topics:
                try:
                    self.h.topic_info(topic)
                except NotFound:
                    self.create_topic(topic, exist_ok=True)
            self._pipelined.add(topic)
        self.h.append_async(topic, spec, on_done)

    def flush(self) -> None:
        """Waits until every :meth:`append_async` of this handle is durable; raises the
        first error any of them got since the last flush. Logs opened on the same
        directory in one process share one handle, so they share this wait and its error."""
        self.h.append_wait()

    def get(self, topic: str, offset: int) -> Event:
        """The event at ``offset``; NotFound when there is none."""
        return Event(self.h.read(topic, offset))

    def read(self, topic: str, start: int = 1, count: int = 100) -> Batch:
        """Up to ``count`` events with offsets >= ``start``, in order: a list that also
        says which offsets the read covered (``next_offset``, ``removed``, ``gone()``: on
        a topic compacted by key, the offsets compaction removed are skipped)."""
        if isinstance(count, int) and not isinstance(count, bool) and count < 0:
            raise InvalidArgument(f"read: count {count} is negative")
        evs, lo, nxt, removed = self.h.read_range(topic, start, count, True)
        return Batch([Event(t) for t in evs], lo, nxt, removed)

    def scan(self, topic: str, start: int = 1, batch: int = 1000) -> Iterator[Event]:
        """Every event from ``start`` on, read in batches."""
        while True:
            evs = self.read(topic, start, batch)
            if not evs:
                return
            yield from evs
            start = evs[-1].offset + 1

    # -- groups ---------------------------------------------------------------------------
    def group(self, topic: str, name: str, *, create: bool = True, filters: Union[None, str, Sequence[str]] = None,
              start: Union[str, int, _dt.datetime] = "earliest", ack_wait: Optional[Duration] = None,
              max_deliver: Optional[int] = None, backoff: Optional[Sequence[Duration]] = None,
              result_ttl: Optional[Duration] = None, key_ordered: Optional[bool] = None,
              create_topic: bool = False) -> "Group":
        """The consumer group ``name`` on ``topic``, created if missing. Config applies at
        creation: ``filters`` (type patterns: ``"memory.saved"``, ``"memory.*"``, ``"*"``),
        ``start`` ("earliest", "latest", an offset or a datetime), ``ack_wait`` (lease,
        seconds), ``max_deliver`` (attempts before the DLQ), ``backoff`` (seconds before
        each retry), ``result_ttl``, ``key_ordered``. Declaring an existing group with a
        setting that differs from its own raises :class:`AlreadyExists` naming it (the
        group keeps its settings); settings left out are not checked. A missing topic
        raises :class:`NotFound` unless ``create_topic=True``."""
        _str(topic, "topic")
        _str(name, "group")
        if create:
            kw = _group_config(filters, start, ack_wait, max_deliver, backoff, result_ttl, bool(key_ordered))
            try:
                self.h.group_create(topic, name, **kw)
            except AlreadyExists:
                _check_declared(self.h.group_info(topic, name), kw, key_ordered)
            except NotFound:
                if not create_topic:
                    raise
                self.create_topic(topic, exist_ok=True)
                try:
                    self.h.group_create(topic, name, **kw)
                except AlreadyExists:
                    _check_declared(self.h.group_info(topic, name), kw, key_ordered)
        else:
            self.h.group_info(topic, name)
        return Group(self, topic, name)

    def groups(self, topic: Optional[str] = None) -> List[GroupInfo]:
        """Every group (of ``topic``, or of all topics)."""
        return [GroupInfo._from(d) for d in self.h.group_list(topic)]

    def delete_group(self, topic: str, name: str) -> None:
        """Deletes a group with its leases, DLQ and results."""
        self.h.group_delete(topic, name)

    # -- workers --------------------------------------------------------------------------
    def worker_heartbeat(self, name: str, *, host: str = "", pid: int = 0, concurrency: int = 0,
                         handled: int = 0, failed: int = 0, groups: Sequence[str] = (),
                         running: Sequence[Tuple[str, str, int, int]] = (),
                         started_ns: int = 0) -> None:
        """Registers or refreshes worker ``name``: host, pid, concurrency and the handled /
        failed counts replace the stored ones, ``groups`` ("topic/group") are added to those
        it serves, ``running`` is what it handles now as (topic, group, offset, since_ns).
        A fetch registers its consumer by itself; this adds the details."""
        _str(name, "worker name")
        self.h.worker_heartbeat(name, host, pid, concurrency, handled, failed, list(groups),
                                [tuple(r) for r in running], started_ns)

    def workers(self, lost_after: Optional[Duration] = None) -> List[WorkerInfo]:
        """Every known worker in name order, ``lost`` when not seen for ``lost_after``
        seconds (default 30)."""
        return [WorkerInfo._from(d) for d in self.h.worker_list(_ms(lost_after, "lost_after") or 0)]

    def rates(self, topic: Optional[str] = None) -> List[RateInfo]:
        """Events per second over the last 1, 5 and 15 minutes (``engram_rate_list``):
        for each topic (or only ``topic``) its own row (``group`` None, ``appended`` only),
        then one per group. Kept in the log: the same numbers in every process."""
        if topic is not None:
            _str(topic, "topic")
        return [RateInfo._from(d) for d in self.h.rate_list(topic)]

    def forget_worker(self, name: str) -> None:
        """Removes worker ``name``'s record (NotFound when there is none)."""
        _str(name, "worker name")
        self.h.worker_forget(name)

    # -- schedules ------------------------------------------------------------------------
    def add_schedule(self, name: str, topic: str, type: str, payload: Payload = None, *,
                     every: Optional[Duration] = None, cron: Optional[str] = None,
                     tz: Optional[str] = None, start: Optional[When] = None,
                     key: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
                     content_type: Optional[str] = None, missed: str = "once",
                     max_catchup: Optional[int] = None) -> ScheduleInfo:
        """Adds schedule ``name`` (1..200 bytes of [A-Za-z0-9._-]): at every slot it appends
        ``type`` with ``payload`` (bytes, str or JSON), ``key``, ``headers`` to ``topic``.
        Slots: ``every`` seconds (or a timedelta, at least 1 s) from ``start`` (default:
        aligned to the epoch, so every 300 s fires at :00, :05 ... UTC), or ``cron``, a
        5-field expression read in the IANA zone ``tz`` (default UTC). ``missed``: what a
        tick does with slots that passed unfired: "once" (the newest, default), "skip" or
        "all" (at most ``max_catchup``, default 100). Each slot fires exactly once across
        every process and daemon on the log; the daemon or the process holding the log's
        maintenance lease fires them. Raises AlreadyExists for an existing name (see
        :meth:`set_schedule`), InvalidArgument for a bad cron expression or zone."""
        kw = _schedule_kw(topic, type, payload, every, cron, tz, start, key, headers,
                          content_type, missed, max_catchup)
        self.h.schedule_add(_str(name, "schedule name"), **kw)
        return self.schedule(name)

    def set_schedule(self, name: str, topic: str, type: str, payload: Payload = None, *,
                     every: Optional[Duration] = None, cron: Optional[str] = None,
                     tz: Optional[str] = None, start: Optional[When] = None,
                     key: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
                     content_type: Optional[str] = None, missed: str = "once",
                     max_catchup: Optional[int] = None) -> str:
        """Declares schedule ``name`` idempotently (arguments as :meth:`add_schedule`), as a
        configuration loaded by every process at start-up needs: returns "added" when it
        was missing, "unchanged" when it exists as given, else "replaced" (the new
        configuration, keeping its last fire, counts and pause; when the timing changed,
        slots before now are not caught up)."""
        kw = _schedule_kw(topic, type, payload, every, cron, tz, start, key, headers,
                          content_type, missed, max_catchup)
        return _CHANGED[self.h.schedule_set(_str(name, "schedule name"), **kw)]

    def schedule(self, name: str) -> ScheduleInfo:
        """Schedule ``name`` with its state (NotFound when there is none)."""
        return ScheduleInfo._from(self.h.schedule_get(_str(name, "schedule name")))

    def schedules(self) -> List[ScheduleInfo]:
        """Every schedule, in name order."""
        return [ScheduleInfo._from(d) for d in self.h.schedule_list()]

    def remove_schedule(self, name: str) -> None:
        """Removes schedule ``name``; the events it appended stay (NotFound when none)."""
        self.h.schedule_remove(_str(name, "schedule name"))

    def pause_schedule(self, name: str) -> None:
        """Stops schedule ``name`` firing until :meth:`resume_schedule`."""
        self.h.schedule_pause(_str(name, "schedule name"))

    def resume_schedule(self, name: str) -> None:
        """Resumes schedule ``name``; the slots that fell while it was paused are skipped."""
        self.h.schedule_resume(_str(name, "schedule name"))

    def run_schedule(self, name: str) -> int:
        """Fires schedule ``name`` now (paused or not), outside its slots; returns the
        offset of the event appended."""
        return int(self.h.schedule_run_now(_str(name, "schedule name")))

    def tick_schedules(self, now: Optional[When] = None) -> Dict[str, Any]:
        """Fires every slot due at ``now`` (a datetime or epoch seconds; default: the
        handle's clock) of every schedule not paused, exactly once however many processes
        tick; returns fired, skipped, failed, next_due_ns and first_error. The daemon and
        the maintenance lease holder call it by themselves: call it for tests (with a test
        clock) or from a process of your own (``python -m engram beat``)."""
        return dict(self.h.schedule_tick(_ns(now, "now") if now is not None else 0))

    # -- the rest -------------------------------------------------------------------------
    def stats(self) -> Dict[str, Any]:
        """Topics and groups with their counters, as plain dicts in the shape of
        ``engram stat --json`` (the same keys and values, for JSON)."""
        out: Dict[str, Any] = {"topics": [], "groups": []}
        for t in self.h.topic_list():
            c = t["config"]
            out["topics"].append({"topic": t["name"], "count": t["count"],
                                  "first_offset": t["first_offset"], "head_offset": t["head_offset"],
                                  "dict_id": t["dict_id"], "created_ns": t["created_ns"],
                                  "compacted": t["compacted"],
                                  "config": {"compress_threshold": c["compress_threshold"],
                                             "max_payload": c["max_payload"],
                                             "dict_train_after": c["dict_train_after"],
                                             "no_dict": bool(c["flags"] & _engram.TOPIC_NO_DICT),
                                             "max_age_ms": c["max_age_ms"],
                                             "max_bytes": c["max_bytes"],
                                             "max_events": c["max_events"],
                                             "tombstone_ttl_ms": c["tombstone_ttl_ms"],
                                             "retain_force": bool(c["flags"]
                                                                  & _engram.TOPIC_RETAIN_FORCE),
                                             "compact_by_key": bool(c["flags"]
                                                                    & _engram.TOPIC_COMPACT_KEY),
                                             "tombstone_type": c["tombstone_type"]}})
        out["log"] = self.h.log_info()
        try:
            out["space"] = self.h.space()
        except ProtocolError:  # a daemon too old to tell it, as engram stat --json says
            out["space"] = None
        try:
            groups = self.h.group_list(None)
        except NotSupported:
            out["groups"] = None
            return out
        now = time.time_ns()
        for g in groups:
            old = g["oldest_unfinished_ns"]
            out["groups"].append({
                "topic": g["topic"], "group": g["name"], "filters": list(g["filters"]),
                "ack_wait_ms": g["ack_wait_ms"], "max_deliver": g["max_deliver"],
                "backoff_ms": list(g["backoff_ms"]), "result_ttl_ms": g["result_ttl_ms"],
                "key_ordered": bool(g["flags"] & _engram.GROUP_KEY_ORDERED),
                "created_ns": g["created_ns"], "floor": g["floor"], "next": g["next"],
                "lag": g["lag"], "in_flight": g["in_flight"], "retrying": g["retrying"],
                "dead": g["dead"], "acked": g["acked"], "delivered": g["delivered"],
                "redelivered": g["redelivered"], "oldest_unfinished_ns": old,
                "retention_skipped": g.get("retention_skipped", 0),
                "nacked": g["nacked"], "rejected": g["rejected"],
                "dead_lettered": g["dead_lettered"],
                "oldest_unfinished_age_ms": (now - old) // 1000000 if 0 < old <= now else None})
        return out

    def sync(self) -> None:
        """Forces everything committed so far to disk (nometasync/async modes)."""
        self.h.sync()

    def backup(self, dest: Union[str, os.PathLike[str]]) -> None:
        """A consistent, compacted hot copy into directory ``dest`` (new or empty)."""
        self.h.backup(os.fspath(dest))

    def set_progress(self, fn: Optional[Callable[[str, int, int], None]]) -> None:
        """Calls ``fn(phase, done, total)`` while :meth:`backup`, :meth:`verify` or
        :meth:`compact` of this log works ("copying" bytes, "checking records",
        "checking databases", "applying retention" topics; ``done`` never goes down nor
        past ``total`` within a phase); ``None`` removes it. Called on the thread of the
        call; what ``fn`` raises is reported as unraisable and the call goes on. A log
        from :func:`connect` never calls it (the daemon does the work)."""
        self.h.set_progress(fn)

    def verify(self) -> Dict[str, Any]:
        """Checks every record's CRC; returns topics, records, damaged, first_damage."""
        return self.h.verify()

    def server_info(self) -> Dict[str, Any]:
        """What the daemon behind a handle from :func:`connect` is: ``version``,
        ``protocol_version``, ``durability`` (0 sync, 1 nometasync, 2 async),
        ``max_message``, ``max_events``, ``workers``, ``curve``, ``uptime_ms`` and its
        counters (``requests``, ``errors``, ``bad_requests``, ``appended``,
        ``notifications``, ``queued``, ``parked``, ``commits``, ``flushes``). One request.
        Raises :class:`NotSupported` on an embedded log (it has no daemon)."""
        return self.h.server_info()

    def log_info(self) -> Dict[str, Any]:
        """The log's identity: ``id`` (32 hex digits, random, made when the log was
        created; a backup keeps it, a restored log has a new one), ``created_ns`` and
        ``format_version``. Through :func:`connect`: the daemon's log."""
        return self.h.log_info()

    def space(self) -> Dict[str, int]:
        """How ``data.mdb``'s space is used, in bytes: ``file_bytes`` (its size),
        ``used_bytes`` (the pages the log uses), ``free_bytes`` (pages freed by retention
        and dropped topics, reused by later writes; :func:`reclaim` gives them back) and
        ``map_bytes`` (the memory map). Through :func:`connect`: the daemon's log."""
        return self.h.space()

    def transaction(self) -> "Transaction":
        """Acks and appends committed together: ``with log.transaction() as tx: ...``."""
        return Transaction(self)


def open(path: Union[str, os.PathLike[str]], *, durability: str = "sync", map_size: Optional[int] = None,
         max_topics: Optional[int] = None, dedup_window: Optional[Duration] = None,
         flush_interval: Optional[Duration] = None, create: bool = True,
         create_topics: bool = True, read_only: bool = False) -> Log:
    """Opens (creating unless ``create=False``) the log in directory ``path``.

    ``durability``: "sync" (default; a write returns once on disk), "nometasync" (a power
    cut may lose the newest commit) or "async" (may lose the last ``flush_interval``).
    ``create_topics``: appends and groups create missing topics. ``read_only``: open an
    existing log for reading only (ENGRAM_OPEN_RDONLY: works on a read-only mount or a
    directory this user may not write; every write raises :class:`NotSupported`; see
    docs/storage.md). Opening a directory that this process already has open shares that
    handle (an LMDB rule): a read-write handle serves a read-only request as is, and a
    read-write request while the directory is open read-only raises
    :class:`InvalidArgument`."""
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError("path must be str or os.PathLike")
    if not p or "\0" in p:
        raise InvalidArgument(f"open: path {p!r} is invalid")
    if durability not in _DURABILITY:
        raise InvalidArgument(f"durability {durability!r}: use 'sync', 'nometasync' or 'async'")
    kw: Dict[str, Any] = {"durability": _DURABILITY[durability]}
    if map_size is not None:
        kw["map_size"] = map_size
    if max_topics is not None:
        kw["max_topics"] = max_topics
    if dedup_window is not None:
        kw["dedup_window_ms"] = _ms(dedup_window, "dedup_window")
    if flush_interval is not None:
        kw["flush_interval_ms"] = _ms(flush_interval, "flush_interval")
    if not create:
        kw["flags"] = _engram.OPEN_NOCREATE
    if read_only:
        kw["flags"] = _engram.OPEN_NOCREATE | _engram.OPEN_RDONLY
    key = os.path.realpath(p)
    with _shared_lock:
        ent = _shared.get(key)
        if ent is not None and ent[0].closed:
            del _shared[key]  # inherited through fork, or closed underneath
            ent = None
        if ent is not None and ent[2] and not read_only:
            raise InvalidArgument(f"open {p}: already open read-only in this process; close "
                                  "that handle first")
        if ent is None:
            h = _engram.open(p, **kw)
            ent = _shared[key] = [h, 0, read_only]
        ent[1] += 1
        lg = Log(ent[0], path=key, create_topics=create_topics)
    # What reopening it elsewhere (a forked worker process) needs to behave the same.
    lg.open_options = {k: v for k, v in (("durability", durability), ("map_size", map_size),
                                         ("max_topics", max_topics), ("dedup_window", dedup_window),
                                         ("flush_interval", flush_interval),
                                         ("create_topics", create_topics)) if v is not None}
    return lg


def connect(endpoint: str, *, timeout: Optional[Duration] = None, server_key: Optional[str] = None,
            public_key: Optional[str] = None, secret_key: Optional[str] = None,
            pipeline_window: Optional[int] = None, create_topics: bool = True) -> Log:
    """Connects to ``engram serve`` at ``endpoint`` (e.g. "tcp://127.0.0.1:7450"); the
    returned :class:`Log` has the same interface and semantics as an embedded one.
    ``timeout`` is per request (default 10 s); the keys enable CURVE (Z85 strings)."""
    _str(endpoint, "endpoint")
    kw: Dict[str, Any] = {"server_key": server_key, "public_key": public_key, "secret_key": secret_key}
    if timeout is not None:
        kw["timeout_ms"] = _ms(timeout, "timeout")
    if pipeline_window is not None:
        kw["pipeline_window"] = pipeline_window
    return Log(_engram.connect(endpoint, **kw), endpoint=endpoint, create_topics=create_topics)
