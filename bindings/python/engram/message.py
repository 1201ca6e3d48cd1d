"""What an append takes: payload encoding (bytes, text, JSON), :class:`Message`, the
returned :class:`Offset`, and the conversions of durations and times every module uses
(seconds or ``timedelta`` -> milliseconds, ``datetime`` or epoch seconds -> nanoseconds)."""
from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Tuple, Union, overload

from .errors import InvalidArgument

if TYPE_CHECKING:
    from ._engram import EventSpec

__all__ = ["Message", "Offset", "encode_payload", "decode_payload", "Payload", "Duration", "When"]

Payload = Union[bytes, bytearray, memoryview, str, Dict[str, Any], List[Any], None]
Duration = Union[int, float, _dt.timedelta]
When = Union[int, float, _dt.datetime]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@overload
def _ms(value: Optional[Duration], what: str, *, allow_none: Literal[False]) -> int: ...
@overload
def _ms(value: Duration, what: str, *, allow_none: bool = True) -> int: ...
@overload
def _ms(value: Optional[Duration], what: str, *, allow_none: bool = True) -> Optional[int]: ...
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
    ms = int(round(value * 1000))
    if ms >= 1 << 63:  # past any limit engram has, and past what the call can carry
        raise InvalidArgument(f"{what}: {value!r} seconds is too long")
    return ms


def _ns(when: When, what: str) -> int:
    """A datetime (naive = local time) or epoch seconds -> CLOCK_REALTIME nanoseconds."""
    if isinstance(when, _dt.datetime):
        return int(when.timestamp() * 1e9)
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(f"{what}: expected a datetime or epoch seconds, got {type(when).__name__}")
    if when < 0:
        raise InvalidArgument(f"{what}: {when!r} is before the epoch")
    return int(when * 1e9)


@overload
def _str(value: Any, what: str, *, optional: Literal[False] = False) -> str: ...
@overload
def _str(value: Any, what: str, *, optional: bool) -> Optional[str]: ...
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
    tombstone: bool = False  #: the event deletes its key (key compaction; needs a key)
    #: for importers: the append time to keep, ns since the epoch (an Event's timestamp_ns),
    #: instead of the clock's; not older than the topic's newest event nor ahead of the
    #: clock (ENGRAM_EVENT_TIMESTAMP in engram.h), else InvalidArgument
    timestamp_ns: Optional[int] = None

    def spec(self) -> EventSpec:
        """The tuple the C extension takes."""
        _str(self.type, "type")
        data, ct = encode_payload(self.payload, self.content_type)
        spec = (self.type, data, _str(self.key, "key", optional=True),
                _str(ct, "content_type", optional=True), _headers(self.headers),
                _str(self.idempotency_key, "idempotency_key", optional=True),
                _deliver_at(self.delay, self.deliver_at))
        flags = (1 if self.tombstone else 0)  # ENGRAM_EVENT_TOMBSTONE
        if self.timestamp_ns is not None:
            if isinstance(self.timestamp_ns, bool) or not isinstance(self.timestamp_ns, int):
                raise TypeError("timestamp_ns: expected ns since the epoch (an int)")
            return spec + (flags | 2, self.timestamp_ns)  # ENGRAM_EVENT_TIMESTAMP
        return spec + (flags,) if flags else spec


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


def _encode_result(result: Payload) -> Optional[bytes]:
    if result is None:
        return None
    data, _ = encode_payload(result)
    return data
