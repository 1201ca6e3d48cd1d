"""One stored :class:`Event`, as read from a topic or fetched from a group (then it can be
acked, nacked, rejected and extended through its group)."""
from __future__ import annotations

import datetime as _dt
import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from . import _engram
from .errors import InvalidArgument
from .message import Duration, Payload, decode_payload
from .records import EventStatus

if TYPE_CHECKING:
    from ._engram import EventTuple
    from .group import Group

__all__ = ["Event", "Batch"]


class Event:
    """One stored event, as read or fetched. Fetched events (``attempt >= 1``) belong to a
    group and can be acked, nacked, rejected and extended."""

    __slots__ = ("offset", "topic", "type", "key", "payload", "content_type", "headers",
                 "idempotency_key", "deliver_at_ns", "timestamp_ns", "attempt", "group",
                 "finished", "flags")

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
    flags: int

    def __init__(self, t: EventTuple, group: Optional["Group"] = None) -> None:
        (self.offset, self.topic, self.type, self.key, self.payload, self.content_type,
         self.headers, self.idempotency_key, self.deliver_at_ns, self.timestamp_ns,
         self.attempt) = t[:11]
        self.flags = t[11] if len(t) > 11 else 0
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
    def tombstone(self) -> bool:
        """The event deletes its key (key compaction, docs/operations.md)."""
        return bool(self.flags & _engram.EVENT_TOMBSTONE)

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


class Batch(List[Event]):
    """The events of a range read (:meth:`Log.read`), a list, with the offsets the read
    covered: ``[from_offset, next_offset)``, each either among the events or removed by
    key compaction; ``removed`` counts the latter. Read on from ``next_offset``."""

    from_offset: int
    next_offset: int
    removed: int

    def __init__(self, events: List[Event], from_offset: int, next_offset: int,
                 removed: int) -> None:
        super().__init__(events)
        self.from_offset, self.next_offset, self.removed = from_offset, next_offset, removed

    def gone(self) -> List[int]:
        """The offsets of the covered range that key compaction removed."""
        have = {e.offset for e in self}
        return [o for o in range(self.from_offset, self.next_offset) if o not in have]
