"""engram — a durable event log with consumer groups, from Python.

    import engram

    with engram.open("/var/lib/memory-log") as log:
        log.append("memory", "memory.saved", {"memory_id": "m1", "text": "hi"}, key="m1")
        group = log.group("memory", "indexer", ack_wait=30)
        for ev in group.consumer("worker-1"):
            index(ev.json())
            ev.ack()

The core API is :func:`open` / :func:`connect` returning a :class:`Log`, with
:class:`Event`, :class:`Group`, :class:`Consumer` and :class:`Transaction` (modules
``log``, ``event``, ``group``, ``consumer``, ``txn``; ``engram.client`` is the old name).
Two runtimes sit on it, each over consumer groups:

- :class:`App`, the worker runtime (handlers, thread and process pools, time limits,
  revocation), with Celery-style tasks (``@app.task``, :mod:`engram.celery`);
- :class:`EventBus`, the in-process pub/sub bus, with the drop-ins built on it:
  :class:`EventManager` (``on``/``emit``), :class:`TractApp` and ``@on_event``
  (:mod:`engram.tracts`), and :mod:`engram.compat`.

``python -m engram worker module:obj`` runs either: an App (or a Celery app), or any
object with ``run()``. :mod:`engram.validation` checks memory events before they are
appended.
"""
import logging as _logging

from . import _engram
from .errors import *  # noqa: F401,F403 - the exception classes are part of the API
from . import errors as _errors
from .errors import Error, _BY_CODE

_engram._register_errors(Error, dict(_BY_CODE))
# Library practice: say nothing unless the application configures logging.
_logging.getLogger("engram").addHandler(_logging.NullHandler())

from .log import Log, connect, open  # noqa: E402
from .event import Event  # noqa: E402
from .group import Group  # noqa: E402
from .consumer import Consumer  # noqa: E402
from .txn import Transaction  # noqa: E402
from .records import (DeadLetter, EventStatus, GroupInfo, RateInfo, ScheduleInfo,  # noqa: E402
                      TopicInfo, WorkerInfo)
from .message import Message, Offset, encode_payload  # noqa: E402
from . import client  # noqa: E402,F401 - the old module name, still importable
from .app import (App, Reject, Retry, RunStats, SoftTimeLimitExceeded, Terminated,  # noqa: E402
                  TimeLimitExceeded)
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
    """Deprecated; always ``[]``. The extension links the whole libengram, so every C
    function is there."""
    import warnings
    warnings.warn("engram.missing_features() is deprecated: every libengram function is "
                  "always present", DeprecationWarning, stacklevel=2)
    return []


def keygen() -> "tuple[str, str]":
    """A CURVE key pair (public, secret) as Z85 strings, for ``engram serve`` and connect()."""
    return _engram.keygen()


# A literal list plus the errors module's own, in the two forms type checkers read
# (mypy --strict sees only the names listed here as exported).
__all__ = [
    "open", "connect", "Log", "Event", "Message", "Offset", "Group", "Consumer", "Transaction",
    "TopicInfo", "GroupInfo", "DeadLetter", "EventStatus", "WorkerInfo", "encode_payload", "App", "Reject",
    "Retry", "RunStats", "SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated", "Task", "AsyncResult", "EventManager", "EventBus", "BusEvent",
    "Priority", "TractApp", "HandlerContext", "on_event", "MemoryValidator", "strerror",
    "errname", "missing_features", "keygen", "VERSION", "FORMAT_VERSION", "PROTOCOL_VERSION",
    "ScheduleInfo",
    "RateInfo",
]
__all__ += _errors.__all__
