"""A consumer :class:`Group`: its configuration at creation, fetch, the settling calls
(ack, nack, reject, extend, cancel), status, the dead-letter queue and replay."""
from __future__ import annotations

import datetime as _dt
import time as _time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _engram
from .consumer import Consumer
from .errors import InvalidArgument
from .event import Event
from .message import Duration, Payload, When, _encode_result, _ms, _ns, _str
from .records import DeadLetter, EventStatus, GroupInfo

if TYPE_CHECKING:
    from .log import Log

__all__ = ["Group"]


# Every argument of _group_config at its default: what App and EventBus merge their
# group settings into to check them when they are made.
_GROUP_DEFAULTS: Dict[str, Any] = dict(filters=None, start="earliest", ack_wait=None,
                                       max_deliver=None, backoff=None, result_ttl=None,
                                       key_ordered=False)


# A fetch's wait is spent in slices this long: a C call that waits keeps the interpreter
# from running signal handlers until it returns, so Ctrl-C (KeyboardInterrupt) reaches a
# worker blocked in a long wait within one slice instead of at the wait's end.
_WAIT_SLICE_MS = 250


def _waiting(first: Callable[[int], List[Any]], then: Callable[[int], List[Any]],
             wait_ms: int) -> List[Any]:
    """first(ms), then then(ms) again while nothing came, until wait_ms has passed."""
    if wait_ms > _engram.MAX_FETCH_WAIT_MS:
        return first(wait_ms)  # refused by the library, with the limit in its message
    deadline = _time.monotonic() + wait_ms / 1000
    got = first(min(wait_ms, _WAIT_SLICE_MS))
    while not got:
        left = int((deadline - _time.monotonic()) * 1000)
        if left <= 0:
            break
        got = then(min(left, _WAIT_SLICE_MS))
    return got


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
        def fetch(ms: int) -> List[Any]:
            return self.log.h.fetch(self.topic, self.name, consumer, max, ms)
        return [Event(t, self) for t in _waiting(fetch, fetch, _ms(wait, "wait", allow_none=False))]

    def ack(self, offset: int, attempt: int = 0, result: Payload = None) -> None:
        """Finishes ``offset`` (fenced by ``attempt`` unless 0)."""
        self.log.h.ack(self.topic, self.name, offset, attempt, _encode_result(result))

    def ack_many(self, items: Iterable[Tuple[int, int]]) -> List[int]:
        """Acks (offset, attempt) pairs in one commit; returns each one's code (0 = ok)."""
        return self.log.h.ack_many(self.topic, self.name, [(o, a, None) for o, a in items])

    def ack_fetch(self, consumer: str,
                  acks: Iterable[Union[Event, Tuple[int, int], Tuple[int, int, Payload]]] = (),
                  max: int = 16, wait: Duration = 0) -> List[Event]:
        """Acks ``acks`` (fetched events, (offset, attempt) pairs, or (offset, attempt,
        result) triples) and leases up to
        ``max`` events to ``consumer`` in ONE commit: a worker that settles each batch as it
        fetches the next pays one commit per batch instead of two. All or nothing: when an
        ack fails, nothing is acked or leased and the error is raised with ``codes``, each
        ack's code (0 = it would have succeeded), so the caller can retry without the
        failed ones. The acks are durable when it returns, also while it waits ``wait``
        seconds for events. Acked events are marked finished."""
        if isinstance(max, int) and not isinstance(max, bool) and max < 1:
            raise InvalidArgument(f"ack_fetch: max {max} must be at least 1")
        evs = [a for a in acks]
        for a in evs:
            if isinstance(a, Event) and a.group is not None and (a.group.topic, a.group.name) != (
                    self.topic, self.name):
                raise InvalidArgument(f"ack_fetch {self.topic}/{self.name}: event {a.id} was "
                                      f"fetched from {a.group.topic}/{a.group.name}")
        items = [(a.offset, a.attempt, None) if isinstance(a, Event)
                 else (a[0], a[1], _encode_result(a[2]) if len(a) > 2 else None)  # type: ignore[misc]
                 for a in evs]
        # The acks go with the first slice; the later ones only fetch.
        got = [Event(t, self) for t in _waiting(
            lambda ms: self.log.h.ack_fetch(self.topic, self.name, consumer, items, max, ms),
            lambda ms: self.log.h.fetch(self.topic, self.name, consumer, max, ms),
            _ms(wait, "wait", allow_none=False))]
        for a in evs:
            if isinstance(a, Event):
                a.finished = "acked"
        return got

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
