"""The core Python API: logs, events, consumer groups and consumers.

``engram.open(path)`` (embedded) and ``engram.connect(endpoint)`` (through ``engram serve``)
both return a :class:`Log`; everything else hangs off it. Durations are seconds (``int``,
``float`` or ``datetime.timedelta``); times are ``datetime`` objects or epoch seconds.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import (Any, AsyncIterator, Deque, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Set, Tuple, Union)

from . import _engram
from .errors import AlreadyExists, Closed, Error, InvalidArgument, NotFound, NotSupported

__all__ = [
    "Log", "Event", "Message", "Offset", "Group", "Consumer", "Transaction", "TopicInfo",
    "GroupInfo", "DeadLetter", "EventStatus", "open", "connect", "encode_payload",
    "Payload", "Duration", "When",
]

Payload = Union[bytes, bytearray, memoryview, str, Dict[str, Any], List[Any], None]
Duration = Union[int, float, _dt.timedelta]
When = Union[int, float, _dt.datetime]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

_DURABILITY = {"sync": _engram.DURABILITY_SYNC, "nometasync": _engram.DURABILITY_NOMETASYNC,
               "async": _engram.DURABILITY_ASYNC}
_STATES = {_engram.STATE_PENDING: "pending", _engram.STATE_IN_FLIGHT: "in_flight",
           _engram.STATE_RETRYING: "retrying", _engram.STATE_DONE: "done",
           _engram.STATE_DEAD: "dead", _engram.STATE_SKIPPED: "skipped"}


# ---------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------
def _ms(value: Optional[Duration], what: str, *, allow_none: bool = True) -> Optional[int]:
    """Seconds (or a timedelta) -> whole milliseconds; refuses negatives and non-numbers."""
    if value is None:
        if allow_none:
            return None
        raise InvalidArgument(f"{what}: a duration is required")
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what}: expected seconds as int, float or timedelta, "
                        f"got {type(value).__name__}")
    if value != value or value < 0 or value == float("inf"):
        raise InvalidArgument(f"{what}: {value!r} is not a duration (seconds >= 0)")
    return int(round(value * 1000))


def _ns(when: When, what: str) -> int:
    """A datetime (naive = local time) or epoch seconds -> CLOCK_REALTIME nanoseconds."""
    if isinstance(when, _dt.datetime):
        return int(when.timestamp() * 1e9)
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(f"{what}: expected a datetime or epoch seconds, got {type(when).__name__}")
    if when < 0:
        raise InvalidArgument(f"{what}: {when!r} is before the epoch")
    return int(when * 1e9)


def _str(value: Any, what: str, *, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what}: expected str, got {type(value).__name__}")
    return value


def encode_payload(payload: Payload, content_type: Optional[str] = None) -> Tuple[bytes, Optional[str]]:
    """Turns a payload into (bytes, content type): bytes-like objects are kept as they are,
    ``str`` becomes UTF-8 text, ``dict``/``list`` become compact JSON (``application/json``)."""
    if payload is None:
        return b"", content_type
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), content_type
    if isinstance(payload, str):
        return payload.encode("utf-8"), content_type or TEXT
    if isinstance(payload, (dict, list)):
        try:
            data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=_json_default)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"payload is not JSON-serialisable: {e}") from None
        return data.encode("utf-8"), content_type or JSON
    raise TypeError(f"payload must be bytes, str, dict or list, not {type(payload).__name__}")


def _json_default(o: Any) -> Any:
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def decode_payload(payload: bytes, content_type: Optional[str]) -> Any:
    """The inverse of :func:`encode_payload`, by content type."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct == JSON or ct.endswith("+json"):
        return json.loads(payload) if payload else None
    if ct.startswith("text/"):
        return payload.decode("utf-8", "replace")
    return payload


def _headers(headers: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    out = {}
    for k, v in headers.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("headers must map str to str")
        out[k] = v
    return out


def _deliver_at(delay: Optional[Duration], deliver_at: Optional[When]) -> int:
    if delay is not None and deliver_at is not None:
        raise InvalidArgument("give delay or deliver_at, not both")
    if delay is not None:
        ms = _ms(delay, "delay")
        return time.time_ns() + ms * 1_000_000 if ms else 0
    if deliver_at is not None:
        return _ns(deliver_at, "deliver_at")
    return 0


@dataclass
class Message:
    """An event to append: what :meth:`Log.append_many` takes (dicts with these keys and
    ``(type, payload)`` tuples work too)."""

    type: str
    payload: Payload = None
    key: Optional[str] = None
    headers: Optional[Mapping[str, str]] = None
    idempotency_key: Optional[str] = None
    delay: Optional[Duration] = None
    deliver_at: Optional[When] = None
    content_type: Optional[str] = None

    def spec(self) -> tuple:
        """The tuple the C extension takes."""
        _str(self.type, "type")
        data, ct = encode_payload(self.payload, self.content_type)
        return (self.type, data, _str(self.key, "key", optional=True),
                _str(ct, "content_type", optional=True), _headers(self.headers),
                _str(self.idempotency_key, "idempotency_key", optional=True),
                _deliver_at(self.delay, self.deliver_at))


def _message(item: Any) -> Message:
    if isinstance(item, Message):
        return item
    if isinstance(item, Mapping):
        try:
            return Message(**item)
        except TypeError as e:
            raise InvalidArgument(f"bad event: {e}") from None
    if isinstance(item, tuple) and 1 <= len(item) <= 2:
        return Message(*item)
    raise TypeError("each event must be a Message, a dict or a (type, payload) tuple")


class Offset(int):
    """An appended event's offset; ``duplicate`` is True when an idempotency key already
    in the dedup window made the append return the original offset."""

    duplicate: bool

    def __new__(cls, value: int, duplicate: bool = False) -> "Offset":
        o = super().__new__(cls, value)
        o.duplicate = duplicate
        return o

    def __repr__(self) -> str:
        return f"Offset({int(self)}{', duplicate' if self.duplicate else ''})"

    __str__ = int.__repr__


# ---------------------------------------------------------------------------------------
# Records returned by the API
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopicInfo:
    """A topic's configuration and counters."""

    name: str
    first_offset: int
    head_offset: int
    count: int
    dict_id: int
    created: _dt.datetime
    compress_threshold: int
    max_payload: int
    dict_train_after: int
    flags: int

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "TopicInfo":
        c = d["config"]
        return cls(d["name"], d["first_offset"], d["head_offset"], d["count"], d["dict_id"],
                   _dt.datetime.fromtimestamp(d["created_ns"] / 1e9, _dt.timezone.utc),
                   c["compress_threshold"], c["max_payload"], c["dict_train_after"], c["flags"])


@dataclass(frozen=True)
class GroupInfo:
    """A consumer group's configuration and counters (durations in seconds)."""

    topic: str
    name: str
    filters: List[str]
    ack_wait: float
    max_deliver: int
    backoff: List[float]
    result_ttl: float
    key_ordered: bool
    floor: int
    next: int
    lag: int
    in_flight: int
    retrying: int
    dead: int
    acked: int
    redelivered: int
    delivered: int
    oldest_unfinished: Optional[_dt.datetime]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "GroupInfo":
        old = d["oldest_unfinished_ns"]
        return cls(d["topic"], d["name"], list(d["filters"]), d["ack_wait_ms"] / 1000,
                   d["max_deliver"], [b / 1000 for b in d["backoff_ms"]], d["result_ttl_ms"] / 1000,
                   bool(d["flags"] & _engram.GROUP_KEY_ORDERED), d["floor"], d["next"], d["lag"],
                   d["in_flight"], d["retrying"], d["dead"], d["acked"], d["redelivered"],
                   d["delivered"],
                   _dt.datetime.fromtimestamp(old / 1e9, _dt.timezone.utc) if old else None)


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a group's dead-letter queue."""

    offset: int
    attempts: int
    reason: str
    last_error: str
    consumer: str
    first_delivered: Optional[_dt.datetime]
    dead_at: Optional[_dt.datetime]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "DeadLetter":
        def t(ns: int) -> Optional[_dt.datetime]:
            return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc) if ns else None
        return cls(d["offset"], d["attempts"], d["reason"], d["last_error"], d["consumer"],
                   t(d["first_delivered_ns"]), t(d["dead_ns"]))


@dataclass(frozen=True)
class EventStatus:
    """Where one event stands in one group: ``state`` is pending, in_flight, retrying,
    done, dead or skipped; ``result`` holds the ack's result bytes when done."""

    state: str
    consumer: str
    attempt: int
    deadline: Optional[_dt.datetime]
    last_error: str
    result: Optional[bytes]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "EventStatus":
        dl = d["deadline_ns"]
        return cls(_STATES.get(d["state"], d["state_name"]), d["consumer"], d["attempt"],
                   _dt.datetime.fromtimestamp(dl / 1e9, _dt.timezone.utc) if dl else None,
                   d["last_error"], d["result"])


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------
class Event:
    """One stored event, as read or fetched. Fetched events (``attempt >= 1``) belong to a
    group and can be acked, nacked, rejected and extended."""

    __slots__ = ("offset", "topic", "type", "key", "payload", "content_type", "headers",
                 "idempotency_key", "deliver_at_ns", "timestamp_ns", "attempt", "group",
                 "finished")

    offset: int
    topic: str
    type: str
    key: Optional[str]
    payload: bytes
    content_type: Optional[str]
    headers: Dict[str, str]
    idempotency_key: Optional[str]
    deliver_at_ns: int
    timestamp_ns: int
    attempt: int
    group: Optional["Group"]
    finished: Optional[str]

    def __init__(self, t: tuple, group: Optional["Group"] = None) -> None:
        (self.offset, self.topic, self.type, self.key, self.payload, self.content_type,
         self.headers, self.idempotency_key, self.deliver_at_ns, self.timestamp_ns,
         self.attempt) = t
        self.group = group
        self.finished = None  # "acked", "nacked" or "rejected" once this process settled it

    def __repr__(self) -> str:
        return (f"Event(topic={self.topic!r}, offset={self.offset}, type={self.type!r}, "
                f"key={self.key!r}, attempt={self.attempt}, {len(self.payload)} bytes)")

    @property
    def timestamp(self) -> _dt.datetime:
        """When the event was appended (UTC)."""
        return _dt.datetime.fromtimestamp(self.timestamp_ns / 1e9, _dt.timezone.utc)

    @property
    def id(self) -> str:
        """``topic:offset``, unique within a log."""
        return f"{self.topic}:{self.offset}"

    def json(self) -> Any:
        """The payload parsed as JSON (whatever its content type)."""
        try:
            return json.loads(self.payload)
        except ValueError as e:
            raise InvalidArgument(f"event {self.id}: payload is not JSON: {e}") from None

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode("utf-8", "replace")

    @property
    def data(self) -> Any:
        """The payload decoded by content type: JSON -> objects, text -> str, else bytes."""
        return decode_payload(self.payload, self.content_type)

    def _need_group(self, what: str) -> "Group":
        if self.group is None:
            raise InvalidArgument(f"{what}: event {self.id} was read, not fetched from a group")
        return self.group

    def ack(self, result: Payload = None) -> None:
        """Finishes the event for its group; ``result`` (bytes, str, dict, list) is kept
        with the ack for the group's result TTL. Raises StaleLease if the lease moved on,
        AlreadyDone on a second ack, Dead if it is in the DLQ."""
        self._need_group("ack").ack(self.offset, self.attempt, result)
        self.finished = "acked"

    def nack(self, delay: Optional[Duration] = None, error: Optional[str] = None) -> None:
        """Asks for redelivery after ``delay`` seconds (default: the group's backoff);
        ``error`` is kept as the event's last error."""
        self._need_group("nack").nack(self.offset, self.attempt, delay=delay, error=error)
        self.finished = "nacked"

    def reject(self, reason: str = "") -> None:
        """Sends the event to the group's dead-letter queue at once."""
        self._need_group("reject").reject(self.offset, self.attempt, reason)
        self.finished = "rejected"

    def extend(self, seconds: Optional[Duration] = None) -> None:
        """Heartbeat: the lease now ends ``seconds`` from now (default: the group's ack_wait)."""
        self._need_group("extend").extend(self.offset, self.attempt, seconds)

    def status(self) -> EventStatus:
        """The event's state in its group."""
        return self._need_group("status").status(self.offset)


# ---------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------
_shared_lock = threading.Lock()
_shared: Dict[str, List[Any]] = {}  # realpath -> [C handle, users]; LMDB wants one per process


class Log:
    """A log handle, embedded (:func:`open`) or remote (:func:`connect`). Thread-safe; a
    context manager that closes it. Do not use it in a child after ``fork()``."""

    def __init__(self, handle: Any, *, path: Optional[str] = None, endpoint: Optional[str] = None,
                 create_topics: bool = True) -> None:
        self._h = handle
        self.path = path
        self.endpoint = endpoint
        self.create_topics = create_topics
        self._closed = False
        self._pipe: Optional[_Pipeline] = None
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
        if self._pipe is not None:
            self._pipe.stop()
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
    def h(self) -> Any:
        """The C handle (engram._engram.Log); raises Closed after close()."""
        if self._closed:
            raise Closed("the log handle is closed")
        return self._h

    # -- topics ---------------------------------------------------------------------------
    def create_topic(self, name: str, *, compress_threshold: Optional[int] = None,
                     max_payload: Optional[int] = None, dict_train_after: Optional[int] = None,
                     no_dict: bool = False, exist_ok: bool = False) -> None:
        """Creates a topic (names: 1..200 bytes of [A-Za-z0-9._-]). Raises AlreadyExists
        unless ``exist_ok``."""
        kw = {k: v for k, v in (("compress_threshold", compress_threshold),
                                 ("max_payload", max_payload),
                                 ("dict_train_after", dict_train_after)) if v is not None}
        try:
            self.h.topic_create(name, flags=_engram.TOPIC_NO_DICT if no_dict else 0, **kw)
        except AlreadyExists:
            if not exist_ok:
                raise

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
               content_type: Optional[str] = None) -> Offset:
        """Appends one event and returns its offset once it is durable. ``payload`` may be
        bytes, str or a dict/list (stored as JSON). ``delay`` (seconds) or ``deliver_at``
        holds it back from groups until then. With an ``idempotency_key`` seen in the dedup
        window nothing is written and the original offset comes back with
        ``.duplicate = True``. A missing topic is created unless the log was opened with
        ``create_topics=False``."""
        spec = Message(type, payload, key, headers, idempotency_key, delay, deliver_at,
                       content_type).spec()
        try:
            off, dup = self.h.append(topic, spec)
        except NotFound as e:
            if not self._autocreate(topic, e):
                raise
            off, dup = self.h.append(topic, spec)
        return Offset(off, dup)

    def append_many(self, topic: str, events: Iterable[Union[Message, Mapping[str, Any], tuple]]) -> List[Offset]:
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
                     content_type: Optional[str] = None) -> None:
        """Queues an append without waiting for it to be durable (pipelining);
        :meth:`flush` waits for all of them and raises the first error."""
        spec = Message(type, payload, key, headers, idempotency_key, delay, None,
                       content_type).spec()
        _str(topic, "topic")
        if self.endpoint is not None:  # the client pipelines requests itself
            self.h.append_async(topic, spec)
            return
        if self._pipe is None:
            with _shared_lock:
                if self._pipe is None:
                    self._pipe = _Pipeline(self)
        self._pipe.put(topic, spec)

    def flush(self) -> None:
        """Waits until every :meth:`append_async` of this handle is durable; raises the
        first error any of them got since the last flush."""
        if self._pipe is not None:
            self._pipe.flush()
        self.h.append_wait()

    def get(self, topic: str, offset: int) -> Event:
        """The event at ``offset``; NotFound when there is none."""
        return Event(self.h.read(topic, offset))

    def read(self, topic: str, start: int = 1, count: int = 100) -> List[Event]:
        """Up to ``count`` events with offsets >= ``start``, in order."""
        if isinstance(count, int) and not isinstance(count, bool) and count < 0:
            raise InvalidArgument(f"read: count {count} is negative")
        return [Event(t) for t in self.h.read_range(topic, start, count)]

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
                                  "config": {"compress_threshold": c["compress_threshold"],
                                             "max_payload": c["max_payload"],
                                             "dict_train_after": c["dict_train_after"],
                                             "no_dict": bool(c["flags"] & _engram.TOPIC_NO_DICT)}})
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
                "oldest_unfinished_age_ms": (now - old) // 1000000 if 0 < old <= now else None})
        return out

    def sync(self) -> None:
        """Forces everything committed so far to disk (nometasync/async modes)."""
        self.h.sync()

    def backup(self, dest: Union[str, os.PathLike]) -> None:
        """A consistent, compacted hot copy into directory ``dest`` (new or empty)."""
        self.h.backup(os.fspath(dest))

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

    def transaction(self) -> "Transaction":
        """Acks and appends committed together: ``with log.transaction() as tx: ...``."""
        return Transaction(self)


class _Pipeline:
    """Pipelined appends on an embedded handle: callers queue events and return; one
    thread writes what has queued up as a batch per commit (in order), so many small
    appends share each flush to disk. Errors are kept for the next flush()."""

    WINDOW = 8192  # queued events past which put() waits
    BATCH = 1024   # events per commit at most

    def __init__(self, log: Log) -> None:
        self.log = log
        self.q: Deque[Tuple[str, tuple]] = collections.deque()
        self.cv = threading.Condition()
        self.busy = 0
        self.err: Optional[BaseException] = None
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="engram-append-pipeline", daemon=True)
        self.thread.start()

    def put(self, topic: str, spec: tuple) -> None:
        with self.cv:
            while len(self.q) >= self.WINDOW and not self.closing:
                self.cv.wait()
            if self.closing:
                raise Closed("the log handle is closing")
            self.q.append((topic, spec))
            self.cv.notify_all()

    def _write(self, topic: str, specs: List[tuple]) -> None:
        try:
            try:
                self.log.h.append_batch(topic, specs)
            except NotFound as e:
                if not self.log._autocreate(topic, e):
                    raise
                self.log.h.append_batch(topic, specs)
        except Error as e:
            if len(specs) == 1:
                raise
            # All or none failed: write them one by one so only the bad ones are lost.
            first: Optional[BaseException] = None
            for sp in specs:
                try:
                    self.log.h.append(topic, sp)
                except Error as e2:
                    first = first or e2
            if first is not None:
                raise first from e

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.q and not self.closing:
                    self.cv.wait()
                if not self.q:
                    return
                topic = self.q[0][0]
                specs = []
                while self.q and self.q[0][0] == topic and len(specs) < self.BATCH:
                    specs.append(self.q.popleft()[1])
                self.busy = len(specs)
                self.cv.notify_all()
            try:
                self._write(topic, specs)
            except BaseException as e:  # kept for flush()
                with self.cv:
                    self.err = self.err or e
            with self.cv:
                self.busy = 0
                self.cv.notify_all()

    def flush(self) -> None:
        with self.cv:
            while self.q or self.busy:
                self.cv.wait()
            err, self.err = self.err, None
        if err is not None:
            raise err

    def stop(self) -> None:
        try:
            self.flush()
        except Error:
            pass
        with self.cv:
            self.closing = True
            self.cv.notify_all()
        self.thread.join(10)


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


def _group_config(filters: Union[None, str, Sequence[str]], start: Union[str, int, _dt.datetime],
                  ack_wait: Optional[Duration], max_deliver: Optional[int],
                  backoff: Optional[Sequence[Duration]], result_ttl: Optional[Duration],
                  key_ordered: bool) -> Dict[str, Any]:
    kw: Dict[str, Any] = {}
    if filters is not None:
        kw["filters"] = [filters] if isinstance(filters, str) else list(filters)
    if isinstance(start, str):
        if start not in ("earliest", "latest"):
            raise InvalidArgument(f"start {start!r}: use 'earliest', 'latest', an offset or a datetime")
        kw["start"] = _engram.START_EARLIEST if start == "earliest" else _engram.START_LATEST
    elif isinstance(start, _dt.datetime):
        kw["start"], kw["start_time_ns"] = _engram.START_TIME, _ns(start, "start")
    elif isinstance(start, int) and not isinstance(start, bool):
        kw["start"], kw["start_offset"] = _engram.START_OFFSET, start
    else:
        raise TypeError(f"start: expected 'earliest', 'latest', an offset or a datetime, got {type(start).__name__}")
    if ack_wait is not None:
        kw["ack_wait_ms"] = _ms(ack_wait, "ack_wait")
        if kw["ack_wait_ms"] == 0:
            raise InvalidArgument("ack_wait must be at least 1 ms")
    if max_deliver is not None:
        if isinstance(max_deliver, bool) or not isinstance(max_deliver, int):
            raise TypeError("max_deliver must be an int")
        if max_deliver < 1:
            raise InvalidArgument(f"max_deliver {max_deliver}: must be at least 1")
        kw["max_deliver"] = max_deliver
    if backoff is not None:
        if isinstance(backoff, (str, bytes)) or not isinstance(backoff, Sequence):
            raise TypeError("backoff must be a sequence of durations")
        kw["backoff_ms"] = [max(1, _ms(b, "backoff")) for b in backoff]
    if result_ttl is not None:
        kw["result_ttl_ms"] = _ms(result_ttl, "result_ttl")
    if key_ordered:
        kw["flags"] = _engram.GROUP_KEY_ORDERED
    return kw


def _encode_result(result: Payload) -> Optional[bytes]:
    if result is None:
        return None
    data, _ = encode_payload(result)
    return data


# ---------------------------------------------------------------------------------------
# Groups and consumers
# ---------------------------------------------------------------------------------------
class Group:
    """A consumer group: a named cursor over one topic whose consumers compete for events."""

    def __init__(self, log: Log, topic: str, name: str) -> None:
        self.log = log
        self.topic = topic
        self.name = name

    def __repr__(self) -> str:
        return f"<engram.Group {self.topic}/{self.name}>"

    def info(self) -> GroupInfo:
        """Configuration and counters (lag, in flight, dead ...)."""
        return GroupInfo._from(self.log.h.group_info(self.topic, self.name))

    def consumer(self, name: Optional[str] = None, *, batch: int = 16, wait: Duration = 1.0,
                 idle_timeout: Optional[Duration] = None) -> "Consumer":
        """A consumer (member) of this group. ``name`` defaults to host-pid-n. Iteration
        fetches up to ``batch`` events at a time, waiting up to ``wait`` seconds per fetch;
        with ``idle_timeout`` it ends after that long without events."""
        return Consumer(self, name, batch=batch, wait=wait, idle_timeout=idle_timeout)

    def fetch(self, consumer: str, max: int = 16, wait: Duration = 0) -> List[Event]:
        """Leases up to ``max`` events to ``consumer``, waiting up to ``wait`` seconds."""
        if isinstance(max, int) and not isinstance(max, bool) and max < 1:
            raise InvalidArgument(f"fetch: max {max} must be at least 1")
        return [Event(t, self) for t in
                self.log.h.fetch(self.topic, self.name, consumer, max, _ms(wait, "wait", allow_none=False))]

    def ack(self, offset: int, attempt: int = 0, result: Payload = None) -> None:
        """Finishes ``offset`` (fenced by ``attempt`` unless 0)."""
        self.log.h.ack(self.topic, self.name, offset, attempt, _encode_result(result))

    def ack_many(self, items: Iterable[Tuple[int, int]]) -> List[int]:
        """Acks (offset, attempt) pairs in one commit; returns each one's code (0 = ok)."""
        return self.log.h.ack_many(self.topic, self.name, [(o, a, None) for o, a in items])

    def nack(self, offset: int, attempt: int = 0, *, delay: Optional[Duration] = None,
             error: Optional[str] = None) -> None:
        """Redelivery after ``delay`` seconds, or the group's backoff when None."""
        d = _ms(delay, "delay")
        self.log.h.nack(self.topic, self.name, offset, attempt, -1 if d is None else d, error)

    def reject(self, offset: int, attempt: int = 0, reason: str = "") -> None:
        """Sends ``offset`` to the dead-letter queue now."""
        self.log.h.reject(self.topic, self.name, offset, attempt, _str(reason, "reason", optional=True))

    def extend(self, offset: int, attempt: int = 0, seconds: Optional[Duration] = None) -> None:
        """Extends the lease holding ``offset`` to ``seconds`` from now (None: ack_wait)."""
        self.log.h.extend(self.topic, self.name, offset, attempt, _ms(seconds, "extend") or 0)

    def cancel(self, offset: int) -> None:
        """Marks a pending or retrying event finished without delivering it (Busy if in flight)."""
        self.log.h.cancel(self.topic, self.name, offset)

    def status(self, offset: int) -> EventStatus:
        """Where ``offset`` stands in this group, with its ack result when done."""
        return EventStatus._from(self.log.h.status(self.topic, self.name, offset))

    def dlq(self, start: int = 0, limit: int = 0) -> List[DeadLetter]:
        """Dead-letter entries with offset >= ``start`` (``limit`` 0 = all)."""
        return [DeadLetter._from(d) for d in self.log.h.dlq_list(self.topic, self.name, start, limit)]

    def redrive(self, offsets: Optional[Iterable[int]] = None) -> int:
        """Delivers DLQ entries (all when None) again, to this group only; returns how many."""
        return self.log.h.dlq_redrive(self.topic, self.name, None if offsets is None else list(offsets))

    def purge_dlq(self, offsets: Optional[Iterable[int]] = None) -> int:
        """Removes DLQ entries (all when None); returns how many."""
        return self.log.h.dlq_purge(self.topic, self.name, None if offsets is None else list(offsets))

    def reset(self, offset: Optional[int] = None, *, time: Optional[When] = None,
              to: Optional[str] = None) -> None:
        """Replay: moves the cursor to ``offset``, to the first event at or after ``time``,
        or ``to`` "earliest" / "latest". Outstanding leases are dropped; the DLQ is kept."""
        given = sum(x is not None for x in (offset, time, to))
        if given != 1:
            raise InvalidArgument("reset: give exactly one of offset, time, to")
        if offset is not None:
            self.log.h.group_reset(self.topic, self.name, _engram.START_OFFSET, offset, 0)
        elif time is not None:
            self.log.h.group_reset(self.topic, self.name, _engram.START_TIME, 0, _ns(time, "time"))
        elif to in ("earliest", "latest"):
            self.log.h.group_reset(self.topic, self.name,
                                   _engram.START_EARLIEST if to == "earliest" else _engram.START_LATEST)
        else:
            raise InvalidArgument(f"reset: to={to!r}: use 'earliest' or 'latest'")

    replay = reset

    def delete(self) -> None:
        """Deletes the group with its leases, DLQ and results."""
        self.log.h.group_delete(self.topic, self.name)


_consumer_seq = 0
_consumer_seq_lock = threading.Lock()


def _default_consumer_name() -> str:
    global _consumer_seq
    with _consumer_seq_lock:
        _consumer_seq += 1
        n = _consumer_seq
    return f"{socket.gethostname()[:100]}-{os.getpid()}-{n}"


_STOP = object()


class Consumer:
    """One member of a group. ``for ev in consumer`` blocks for events (each fetch waits up
    to ``wait`` seconds); ``async for ev in consumer`` does the same from asyncio without
    blocking the loop. Each event must be acked, nacked or rejected; an event left
    unsettled is delivered again after the group's ack_wait. ``stop()`` ends iteration;
    events fetched but not yet handed out are released for redelivery."""

    def __init__(self, group: Group, name: Optional[str] = None, *, batch: int = 16,
                 wait: Duration = 1.0, idle_timeout: Optional[Duration] = None) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise TypeError("batch must be an int")
        if batch < 1:
            raise InvalidArgument(f"batch {batch} must be at least 1")
        self.group = group
        self.name = _str(name, "consumer", optional=True) or _default_consumer_name()
        self.batch = batch
        self.wait_ms = _ms(wait, "wait", allow_none=False)
        self.idle_ms = _ms(idle_timeout, "idle_timeout")
        self._buf: Deque[Event] = collections.deque()
        self._stopped = threading.Event()
        self._aq: Optional[asyncio.Queue] = None
        self._feeder: Optional[threading.Thread] = None
        self._drained = threading.Event()

    def __repr__(self) -> str:
        return f"<engram.Consumer {self.name} of {self.group.topic}/{self.group.name}>"

    def fetch(self, max: Optional[int] = None, wait: Optional[Duration] = None) -> List[Event]:
        """Leases up to ``max`` (default ``batch``) events, waiting up to ``wait`` seconds
        (default the consumer's wait) when there are none."""
        return self.group.fetch(self.name, max or self.batch,
                                self.wait_ms / 1000 if wait is None else wait)

    # -- blocking iteration ----------------------------------------------------------------
    def __iter__(self) -> Iterator[Event]:
        idle_since = time.monotonic()
        while not self._stopped.is_set():
            if not self._buf:
                evs = self.fetch()
                if not evs:
                    if self.idle_ms is not None and (time.monotonic() - idle_since) * 1000 >= self.idle_ms:
                        return
                    continue
                self._buf.extend(evs)
            idle_since = time.monotonic()
            while self._buf and not self._stopped.is_set():
                yield self._buf.popleft()
        self._release()

    def stop(self) -> None:
        """Ends iteration (within one fetch wait); unhanded prefetched events are released."""
        self._stopped.set()
        self._drained.set()

    close = stop

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self._release()

    def _release(self) -> None:
        while self._buf:
            ev = self._buf.popleft()
            try:
                ev.nack(delay=0, error="released by a stopping consumer")
            except Error:
                pass

    # -- asyncio iteration -----------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._stopped.is_set() and (self._aq is None or self._aq.empty()):
            raise StopAsyncIteration
        if self._aq is None:
            loop = asyncio.get_running_loop()
            self._aq = asyncio.Queue()
            self._feeder = threading.Thread(target=self._feed, args=(loop, self._aq),
                                            name=f"engram-consumer-{self.name}", daemon=True)
            self._feeder.start()
        item = await self._aq.get()
        if self._aq.empty():
            self._drained.set()
        if item is _STOP:
            self._aq.put_nowait(_STOP)  # later calls end too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        """Stops async iteration and releases events not yet handed out."""
        self.stop()
        if self._feeder is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._feeder.join)
        q = self._aq
        while q is not None and not q.empty():
            item = q.get_nowait()
            if isinstance(item, Event):
                try:
                    item.nack(delay=0, error="released by a stopping consumer")
                except Error:
                    pass
        if q is not None:
            q.put_nowait(_STOP)  # an `async for` still running ends

    def _feed(self, loop: asyncio.AbstractEventLoop, q: asyncio.Queue) -> None:
        """Background thread: blocking fetches feed the asyncio queue one batch at a time,
        the next fetch only after the loop took the previous batch (no busy waiting)."""
        idle_since = time.monotonic()
        try:
            while not self._stopped.is_set():
                try:
                    evs = self.fetch()
                except BaseException as e:  # handed to the awaiting coroutine
                    loop.call_soon_threadsafe(q.put_nowait, e)
                    return
                if not evs:
                    if self.idle_ms is not None and (time.monotonic() - idle_since) * 1000 >= self.idle_ms:
                        return
                    continue
                idle_since = time.monotonic()
                self._drained.clear()
                for ev in evs:
                    loop.call_soon_threadsafe(q.put_nowait, ev)
                self._drained.wait()
        except RuntimeError:
            return  # the loop closed under us
        finally:
            try:
                loop.call_soon_threadsafe(q.put_nowait, _STOP)
            except RuntimeError:
                pass


# ---------------------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------------------
class Transaction:
    """Acks and appends applied together in one commit (consume -> transform -> produce).
    As a context manager it commits on success and aborts on an exception; ``offsets``
    holds the appended offsets after commit."""

    def __init__(self, log: Log) -> None:
        self._t = log.h.txn_begin()
        self.log = log
        self.offsets: List[int] = []
        self._topics: Set[str] = set()  # topics known to exist

    def ack(self, event: Union[Event, Tuple[str, str, int, int]], result: Payload = None) -> None:
        """Queues an ack of a fetched event (fenced by its attempt)."""
        if isinstance(event, Event):
            g = event._need_group("ack")
            self._t.ack(event.topic, g.name, event.offset, event.attempt, _encode_result(result))
        else:
            topic, group, offset, attempt = event
            self._t.ack(topic, group, offset, attempt, _encode_result(result))

    def append(self, topic: str, type: str, payload: Payload = None, **kw: Any) -> int:
        """Queues an append; returns its index into ``offsets`` after commit. A missing
        topic is created now (outside the transaction, as ``log.append`` would) unless the
        log was opened with ``create_topics=False``."""
        spec = Message(type, payload, **kw).spec()
        if self.log.create_topics and topic not in self._topics:
            try:
                self.log.h.topic_info(topic)
            except NotFound:
                self.log.create_topic(topic, exist_ok=True)
            self._topics.add(topic)
        return self._t.append(topic, spec)

    def commit(self) -> List[int]:
        """Applies everything (or nothing, raising the error)."""
        self.offsets = self._t.commit()
        return self.offsets

    def abort(self) -> None:
        """Drops everything queued."""
        self._t.abort()

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------
def open(path: Union[str, os.PathLike], *, durability: str = "sync", map_size: Optional[int] = None,
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
        raise TypeError("path must be str or os.PathLike[str]")
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
