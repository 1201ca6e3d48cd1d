"""The information records the API returns: :class:`TopicInfo`, :class:`GroupInfo`,
:class:`DeadLetter`, :class:`EventStatus`, :class:`WorkerInfo` and :class:`ScheduleInfo`, built from the C extension's dicts (times as
UTC datetimes, durations in seconds)."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import _engram

__all__ = ["TopicInfo", "GroupInfo", "DeadLetter", "EventStatus", "WorkerInfo", "ScheduleInfo"]

_STATES = {_engram.STATE_PENDING: "pending", _engram.STATE_IN_FLIGHT: "in_flight",
           _engram.STATE_RETRYING: "retrying", _engram.STATE_DONE: "done",
           _engram.STATE_DEAD: "dead", _engram.STATE_SKIPPED: "skipped"}


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
    max_age: Optional[float] = None  #: retention: seconds, None = no limit
    max_bytes: Optional[int] = None  #: retention: bytes of stored records, None = no limit
    max_events: Optional[int] = None  #: retention: events kept, None = no limit
    retain_force: bool = False  #: retention may remove events groups have not finished

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "TopicInfo":
        c = d["config"]
        return cls(d["name"], d["first_offset"], d["head_offset"], d["count"], d["dict_id"],
                   _dt.datetime.fromtimestamp(d["created_ns"] / 1e9, _dt.timezone.utc),
                   c["compress_threshold"], c["max_payload"], c["dict_train_after"], c["flags"],
                   c["max_age_ms"] / 1000 if c["max_age_ms"] else None,
                   c["max_bytes"] or None, c["max_events"] or None,
                   bool(c["flags"] & _engram.TOPIC_RETAIN_FORCE))


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
    retention_skipped: int = 0  #: events forced retention removed before the group finished them
    nacked: int = 0  #: nacks accepted since creation
    rejected: int = 0  #: rejects accepted since creation
    dead_lettered: int = 0  #: events that entered the DLQ since creation

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "GroupInfo":
        old = d["oldest_unfinished_ns"]
        return cls(d["topic"], d["name"], list(d["filters"]), d["ack_wait_ms"] / 1000,
                   d["max_deliver"], [b / 1000 for b in d["backoff_ms"]], d["result_ttl_ms"] / 1000,
                   bool(d["flags"] & _engram.GROUP_KEY_ORDERED), d["floor"], d["next"], d["lag"],
                   d["in_flight"], d["retrying"], d["dead"], d["acked"], d["redelivered"],
                   d["delivered"],
                   _dt.datetime.fromtimestamp(old / 1e9, _dt.timezone.utc) if old else None,
                   d.get("retention_skipped", 0), d.get("nacked", 0), d.get("rejected", 0),
                   d.get("dead_lettered", 0))


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


@dataclass(frozen=True)
class WorkerInfo:
    """A worker (consumer) as the log knows it: registered by its fetches, described by
    its heartbeats. ``lost`` when not seen for the listing's ``lost_after``; ``running``
    holds (topic, group, offset, since) of what it handles now."""

    name: str
    host: str
    pid: int
    concurrency: int
    started: Optional[_dt.datetime]
    last_seen: Optional[_dt.datetime]
    handled: int
    failed: int
    lost: bool
    groups: Tuple[str, ...]
    running: Tuple[Tuple[str, str, int, Optional[_dt.datetime]], ...]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "WorkerInfo":
        def t(ns: int) -> Optional[_dt.datetime]:
            return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc) if ns else None
        return cls(d["name"], d["host"], d["pid"], d["concurrency"], t(d["started_ns"]),
                   t(d["last_seen_ns"]), d["handled"], d["failed"], bool(d["lost"]),
                   tuple(d["groups"]),
                   tuple((r["topic"], r["group"], r["offset"], t(r["since_ns"])) for r in d["running"]))


_MISSED = {_engram.MISSED_ONCE: "once", _engram.MISSED_SKIP: "skip", _engram.MISSED_ALL: "all"}


def _utc(ns: int) -> Optional[_dt.datetime]:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc) if ns else None


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule: what each fire appends, when it fires (``every`` seconds from
    ``start``, or ``cron`` in zone ``tz``), its missed-fire policy ("once", "skip", "all"
    with at most ``max_catchup`` slots) and its state: ``paused``, ``fires`` (scheduled and
    catch-up), ``manual_fires`` (run-now), ``skipped`` slots, the ``last_slot`` fired or
    passed over, ``last_fire`` (clock time, manual ones included) with its ``last_offset``,
    and the ``next_slot``."""

    name: str
    topic: str
    type: str
    payload: bytes
    key: Optional[str]
    content_type: Optional[str]
    headers: Dict[str, str]
    every: Optional[float]
    start: Optional[_dt.datetime]
    cron: Optional[str]
    tz: str
    missed: str
    max_catchup: int
    created: Optional[_dt.datetime]
    updated: Optional[_dt.datetime]
    paused: bool
    fires: int
    manual_fires: int
    skipped: int
    last_slot: Optional[_dt.datetime]
    last_fire: Optional[_dt.datetime]
    last_offset: int
    next_slot: Optional[_dt.datetime]
    next_slot_ns: int = 0  #: next_slot in CLOCK_REALTIME nanoseconds (0 = none)

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "ScheduleInfo":
        return cls(d["name"], d["topic"], d["type"], d["payload"], d["key"], d["content_type"],
                   dict(d["headers"]), d["every_ms"] / 1000 if d["every_ms"] else None,
                   _utc(d["start_ns"]), d["cron"], d["tz"] or "UTC",
                   _MISSED.get(d["missed"], str(d["missed"])), d["max_catchup"],
                   _utc(d["created_ns"]), _utc(d["updated_ns"]), bool(d["paused"]), d["fires"],
                   d["manual_fires"], d["skipped"], _utc(d["last_slot_ns"]),
                   _utc(d["last_fire_ns"]), d["last_offset"], _utc(d["next_slot_ns"]),
                   d["next_slot_ns"])

    def data(self) -> Any:
        """The payload of every fire, decoded by content type (JSON -> objects)."""
        from .message import decode_payload
        return decode_payload(self.payload, self.content_type)


@dataclass(frozen=True)
class RateInfo:
    """Events per second over the last 1, 5 and 15 minutes (each field a tuple of three),
    for a topic (``group`` None: only ``appended``) or one of its groups."""

    topic: str
    group: Optional[str]
    appended: Tuple[float, float, float]
    delivered: Tuple[float, float, float]
    acked: Tuple[float, float, float]
    nacked: Tuple[float, float, float]
    rejected: Tuple[float, float, float]
    dead_lettered: Tuple[float, float, float]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "RateInfo":
        return cls(d["topic"], d["group"] or None, d["appended"], d["delivered"], d["acked"],
                   d["nacked"], d["rejected"], d["dead_lettered"])
