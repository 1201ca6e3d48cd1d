"""engram — a durable event log with consumer groups, from Python.

    import engram

    with engram.open("/var/lib/memory-log") as log:
        log.append("memory", "memory.saved", {"memory_id": "m1", "text": "hi"}, key="m1")
        group = log.group("memory", "indexer", ack_wait=30)
        for ev in group.consumer("worker-1"):
            index(ev.json())
            ev.ack()

The worker runtime is :class:`App`; drop-in APIs for in-process event managers
(:class:`EventManager`), ``@on_event`` registries (:mod:`engram.tracts`), pub/sub buses
(:class:`EventBus`) and Celery-style tasks (``@app.task``) sit on top of it, and
:mod:`engram.validation` checks memory events before they are appended.
"""
import logging as _logging

from . import _engram
from .errors import *  # noqa: F401,F403 - the exception classes are part of the API
from . import errors as _errors
from .errors import Error, _BY_CODE

_engram._register_errors(Error, dict(_BY_CODE))
# Library practice: say nothing unless the application configures logging.
_logging.getLogger("engram").addHandler(_logging.NullHandler())

from .client import (DeadLetter, Event, EventStatus, Group, GroupInfo, Log, Message,  # noqa: E402
                     Offset, TopicInfo, Transaction, Consumer, connect, open, encode_payload)
from .app import App, Reject, Retry, RunStats  # noqa: E402
from .tasks import AsyncResult, Task  # noqa: E402
from .events import EventManager  # noqa: E402
from .bus import BusEvent, EventBus, Priority  # noqa: E402
from .tracts import HandlerContext, TractApp, on_event  # noqa: E402
from .validation import MemoryValidator  # noqa: E402

__version__ = _engram.VERSION
VERSION = _engram.VERSION
FORMAT_VERSION = _engram.FORMAT_VERSION
PROTOCOL_VERSION = _engram.PROTOCOL_VERSION


def strerror(code: int) -> str:
    """The fixed description of an ENGRAM_E* code."""
    return _engram.strerror(code)


def errname(code: int) -> str:
    """The name of an ENGRAM_E* code ("ENGRAM_ENOTFOUND")."""
    return _engram.errname(code)


def missing_features() -> "list[str]":
    """C functions this build of libengram lacks (calling them raises NotSupported)."""
    return _engram.missing()


def keygen() -> "tuple[str, str]":
    """A CURVE key pair (public, secret) as Z85 strings, for ``engram serve`` and connect()."""
    return _engram.keygen()


# A literal list plus the errors module's own, in the two forms type checkers read
# (mypy --strict sees only the names listed here as exported).
__all__ = [
    "open", "connect", "Log", "Event", "Message", "Offset", "Group", "Consumer", "Transaction",
    "TopicInfo", "GroupInfo", "DeadLetter", "EventStatus", "encode_payload", "App", "Reject",
    "Retry", "RunStats", "Task", "AsyncResult", "EventManager", "EventBus", "BusEvent",
    "Priority", "TractApp", "HandlerContext", "on_event", "MemoryValidator", "strerror",
    "errname", "missing_features", "keygen", "VERSION", "FORMAT_VERSION", "PROTOCOL_VERSION",
]
__all__ += _errors.__all__
