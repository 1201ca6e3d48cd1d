"""A :class:`Consumer`, one member of a group: blocking and asyncio iteration over the
events it leases, and the release of prefetched events when it stops."""
from __future__ import annotations

import asyncio
import collections
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Deque, Iterator, List, Optional, Union

from .errors import Error, InvalidArgument
from .event import Event
from .message import Duration, _ms, _str

if TYPE_CHECKING:
    from .group import Group

__all__ = ["Consumer"]

_consumer_seq = 0
_consumer_seq_lock = threading.Lock()


def _default_consumer_name() -> str:
    global _consumer_seq
    with _consumer_seq_lock:
        _consumer_seq += 1
        n = _consumer_seq
    return f"{socket.gethostname()[:100]}-{os.getpid()}-{n}"


class _Stop:
    """The end of an asyncio consumer's queue."""


_STOP = _Stop()
_Item = Union[Event, BaseException, _Stop]  # what the feeder thread queues


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
        self._aq: Optional[asyncio.Queue[_Item]] = None
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
        if isinstance(item, _Stop):
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

    def _feed(self, loop: asyncio.AbstractEventLoop, q: asyncio.Queue[_Item]) -> None:
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
