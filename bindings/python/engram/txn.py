"""A :class:`Transaction`: acks and appends applied together in one commit."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Set, Tuple, Union

from .errors import NotFound
from .event import Event
from .message import Message, Payload, _encode_result

if TYPE_CHECKING:
    from .log import Log

__all__ = ["Transaction"]


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
