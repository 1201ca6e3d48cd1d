"""The core API, re-exported under its old module name: it lives in :mod:`engram.log`
(``open``, ``connect``, ``Log``), :mod:`engram.event`, :mod:`engram.group`,
:mod:`engram.consumer`, :mod:`engram.txn`, :mod:`engram.records` and
:mod:`engram.message`. Import from ``engram`` itself."""
from .consumer import Consumer
from .event import Event
from .group import Group
from .log import Log, connect, open
from .message import Duration, Message, Offset, Payload, When, decode_payload, encode_payload
from .records import DeadLetter, EventStatus, GroupInfo, TopicInfo, WorkerInfo
from .txn import Transaction

__all__ = [
    "Log", "Event", "Message", "Offset", "Group", "Consumer", "Transaction", "TopicInfo",
    "GroupInfo", "DeadLetter", "EventStatus", "WorkerInfo", "open", "connect", "encode_payload",
    "decode_payload", "Payload", "Duration", "When",
]
