"""engram's exceptions: one base class, one subclass per error kind of include/engram.h.

Every exception raised by the C library is an instance of :class:`Error` whose ``code``
is the negative ``ENGRAM_E*`` number. Subclasses also derive from the built-in exception
a Python programmer would expect (``InvalidArgument`` is a ``ValueError``, ``NotFound``
a ``LookupError``, ``Timeout`` a ``TimeoutError``), so ordinary ``except`` clauses work.
"""
from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "Error", "InvalidArgument", "NotFound", "AlreadyExists", "OutOfMemory", "IOFailure",
    "Corrupt", "NoSpace", "TooBig", "VersionMismatch", "LimitReached", "StaleLease",
    "NotLeased", "AlreadyDone", "Dead", "Busy", "Timeout", "Closed", "ProtocolError",
    "ConnectionFailed", "Denied", "NotSupported", "InternalError", "HandlerTimeout",
    "ValidationError", "TaskFailed", "TaskRevoked", "error_for_code",
]


class Error(Exception):
    """Base of every engram error. ``code`` is the ``ENGRAM_E*`` number (negative)."""

    code: int = 0
    errname: str = "ENGRAM_ERROR"

    def __init__(self, message: str = "", code: Optional[int] = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.errname)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The message with context, as the library reported it."""
        return str(self.args[0]) if self.args else ""


class InvalidArgument(Error, ValueError):
    """An argument is invalid (name, size, pattern, duration)."""
    code, errname = -1, "ENGRAM_EINVAL"


class NotFound(Error, LookupError):
    """No such topic, group, event or entry."""
    code, errname = -2, "ENGRAM_ENOTFOUND"


class AlreadyExists(Error):
    """The topic or group already exists."""
    code, errname = -3, "ENGRAM_EEXIST"


class OutOfMemory(Error, MemoryError):
    """Out of memory."""
    code, errname = -4, "ENGRAM_ENOMEM"


class IOFailure(Error, OSError):
    """An operating-system I/O call failed."""
    code, errname = -5, "ENGRAM_EIO"


class Corrupt(Error):
    """A stored record failed its CRC or could not be decoded."""
    code, errname = -6, "ENGRAM_ECORRUPT"


class NoSpace(Error, OSError):
    """The disk is full; the log stays usable once space returns."""
    code, errname = -7, "ENGRAM_ENOSPC"


class TooBig(Error, ValueError):
    """A payload, the headers or a message is over its limit."""
    code, errname = -8, "ENGRAM_ETOOBIG"


class VersionMismatch(Error):
    """The on-disk format or wire protocol version is not supported."""
    code, errname = -9, "ENGRAM_EVERSION"


class LimitReached(Error):
    """A configured limit was reached (e.g. max_topics)."""
    code, errname = -10, "ENGRAM_ELIMIT"


class StaleLease(Error):
    """The ack/nack quotes an attempt older than the event's current lease."""
    code, errname = -11, "ENGRAM_ESTALE"


class NotLeased(Error):
    """The event was never delivered to this group."""
    code, errname = -12, "ENGRAM_ENOTLEASED"


class AlreadyDone(Error):
    """The event is already finished for this group (a second ack)."""
    code, errname = -13, "ENGRAM_EALREADY"


class Dead(Error):
    """The event is in the group's dead-letter queue."""
    code, errname = -14, "ENGRAM_EDEAD"


class Busy(Error):
    """In use: in flight, or the directory is locked by a daemon."""
    code, errname = -15, "ENGRAM_EBUSY"


class Timeout(Error, TimeoutError):
    """No answer in time."""
    code, errname = -16, "ENGRAM_ETIMEDOUT"


class Closed(Error):
    """The handle or connection is closed."""
    code, errname = -17, "ENGRAM_ECLOSED"


class ProtocolError(Error):
    """A malformed request or reply."""
    code, errname = -18, "ENGRAM_EPROTO"


class ConnectionFailed(Error, ConnectionError):
    """Cannot reach the daemon."""
    code, errname = -19, "ENGRAM_ECONN"


class Denied(Error, PermissionError):
    """Authentication or authorisation refused."""
    code, errname = -20, "ENGRAM_EDENIED"


class NotSupported(Error):
    """Not supported by this handle or build."""
    code, errname = -21, "ENGRAM_ENOTSUP"


class InternalError(Error):
    """A bug: an invariant did not hold."""
    code, errname = -22, "ENGRAM_EINTERNAL"


class HandlerTimeout(Timeout):
    """A worker handler ran past its timeout (raised inside it in process workers)."""


class ValidationError(InvalidArgument):
    """Input to a memory event failed validation; nothing was appended."""


class TaskFailed(Error):
    """A task ended in failure: its handler raised, or it went to the dead-letter queue."""


class TaskRevoked(Error):
    """The task was revoked before it ran."""


_BY_CODE: Dict[int, Type[Error]] = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, OutOfMemory, IOFailure, Corrupt,
                NoSpace, TooBig, VersionMismatch, LimitReached, StaleLease, NotLeased,
                AlreadyDone, Dead, Busy, Timeout, Closed, ProtocolError, ConnectionFailed,
                Denied, NotSupported, InternalError)
}


def error_for_code(code: int) -> Type[Error]:
    """The exception class for an ``ENGRAM_E*`` code (``Error`` for unknown codes)."""
    return _BY_CODE.get(code, Error)
