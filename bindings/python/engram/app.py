"""The worker runtime: handlers registered on an App run in a pool of workers that share a
consumer group.

    app = engram.App("/var/lib/memory-log", group="indexer", topic="memory")

    @app.on("memory.saved")
    def index(ev):
        ...                       # return a value to keep it with the ack

    app.run(concurrency=4, timeout=30)

Success acks; an exception nacks with the group's backoff (so after ``max_deliver``
attempts the event is in the dead-letter queue); :class:`Reject` sends it there at once
and :class:`Retry` asks for a specific delay. A handler past its timeout is nacked and
reported; in process mode it is also interrupted. SIGTERM/SIGINT stop fetching, let
in-flight handlers finish (up to ``grace`` seconds), release the rest and return.

While a handler runs, its lease is extended (a heartbeat every third of ``ack_wait``) until
it returns or reaches its hard time limit, so ``ack_wait`` bounds only how long the events
of a dead worker wait, never how long a handler may take. ``async def`` handlers run on one
persistent event loop per worker thread (per process in process mode), so objects bound
to a loop survive from one event to the next.
"""
from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import multiprocessing
import os
import signal
import socket
import sys
import heapq
import itertools
import json
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from . import _engram
from . import log as _logs
from .consumer import _default_consumer_name
from .event import Event
from .group import _GROUP_DEFAULTS, Group, _group_config
from .log import _DURABILITY, Log
from .message import Duration, Offset, Payload, _encode_result, _ms, _str
from .errors import (AlreadyDone, Busy, Dead, Error, HandlerTimeout, InvalidArgument, NotFound,
                     NotLeased)

__all__ = ["App", "Handler", "Reject", "Retry", "RunStats", "SoftTimeLimitExceeded",
           "TimeLimitExceeded", "Terminated", "match_type", "c_filters", "run_coroutine"]

logger = logging.getLogger("engram.worker")

HandlerFn = Callable[[Event], Any]


class Reject(Exception):
    """Raise from a handler to send the event to the dead-letter queue at once."""

    def __init__(self, reason: str = "rejected by handler") -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(Exception):
    """Raise from a handler to have the event delivered again after ``delay`` seconds."""

    def __init__(self, delay: Optional[Duration] = None, error: str = "retry requested") -> None:
        super().__init__(error)
        self.delay = delay
        self.error = error


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task that reached its soft time limit (it may catch it and clean
    up); left uncaught, the task fails. In an ``async def`` task the coroutine sees
    ``asyncio.CancelledError`` and the task fails with this exception."""


class TimeLimitExceeded(Exception):
    """A task ran past its hard time limit: it failed (in process mode its worker
    process was killed and replaced)."""


class Terminated(BaseException):
    """Raised inside a handler whose event was revoked with ``terminate=True`` (thread
    mode; a process worker is killed instead). A BaseException, so ``except Exception``
    does not swallow it."""


# The ack result that marks an event as revoked (a task result reads REVOKED).
def revoked_result(reason: str) -> bytes:
    return json.dumps({"revoked": reason}, separators=(",", ":")).encode()


# -- the persistent event loops -----------------------------------------------------------
_loops = threading.local()
_coros_lock = threading.Lock()
_coros: Dict[int, Tuple[asyncio.AbstractEventLoop, "asyncio.Task[Any]"]] = {}  # thread ident -> running
_causes: Dict[int, type] = {}  # thread ident -> exception its cancelled coroutine ends with


def _thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, created on first use and kept (one per thread and
    process: a loop inherited through fork is never reused)."""
    st = getattr(_loops, "v", None)
    if st is None or st[0] != os.getpid() or st[1].is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        st = _loops.v = (os.getpid(), loop)
    return st[1]


def run_coroutine(coro: Any) -> Any:
    """Runs ``coro`` to completion on this thread's persistent loop and returns its
    value. A soft time limit or a terminate reaches it as a cancellation and comes out as
    SoftTimeLimitExceeded / Terminated."""
    loop = _thread_loop()
    me = threading.get_ident()
    task = loop.create_task(coro)
    with _coros_lock:
        _coros[me] = (loop, task)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        with _coros_lock:
            cause = _causes.pop(me, None)
        if cause is not None:
            raise cause(f"{cause.__name__} while awaiting") from None
        raise
    finally:
        with _coros_lock:
            _coros.pop(me, None)
            _causes.pop(me, None)


def _interrupt(ident: Optional[int], exc: type) -> None:
    """Raises ``exc`` in thread ``ident``: a coroutine running there is cancelled; plain
    Python code gets the exception at its next bytecode (a blocking C call first returns)."""
    if ident is None:
        return
    with _coros_lock:
        running = _coros.get(ident)
        if running is not None:
            _causes[ident] = exc
    if running is not None:
        loop, task = running
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:
            pass
        return
    if ident == threading.get_ident():
        raise exc(exc.__name__)
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))


def match_type(pattern: str, type: str) -> bool:
    """True when an event type matches a handler pattern: ``"*"``, an exact type, a
    prefix ``"memory.*"`` (any type under ``memory.``), or any other glob (fnmatch)."""
    if pattern == "*" or pattern == type:
        return True
    if pattern.endswith(".*") and "*" not in pattern[:-2] and "?" not in pattern and "[" not in pattern:
        return type.startswith(pattern[:-1])
    return fnmatch.fnmatchcase(type, pattern)


def c_filters(patterns: List[str]) -> Optional[List[str]]:
    """The group filters that deliver exactly what ``patterns`` need, or None (all types)
    when one of them is a glob the log's filters cannot express."""
    out: List[str] = []
    for p in patterns:
        if p == "*":
            return None
        body = p[:-2] if p.endswith(".*") else p
        if any(c in body for c in "*?[]"):
            return None
        if p not in out:
            out.append(p)
    return out if 0 < len(out) <= 16 else None


@dataclass
class Handler:
    """A registered handler: its pattern, function and optional own timeout (seconds)."""

    pattern: str
    fn: HandlerFn
    timeout: Optional[float] = None
    name: str = ""
    soft_timeout: Optional[float] = None  # seconds; SoftTimeLimitExceeded is raised inside
    fail_on_timeout: bool = False          # past ``timeout``: fail (DLQ) instead of retrying


@dataclass
class RunStats:
    """What one :meth:`App.run` did."""

    handled: int = 0      # events whose handlers all returned
    failed: int = 0       # events nacked after an exception
    rejected: int = 0     # events sent to the DLQ by Reject
    timed_out: int = 0    # handler runs past their timeout
    released: int = 0     # events handed back at shutdown
    errors: List[str] = field(default_factory=list)  # last few failure descriptions


class _Job:
    __slots__ = ("ev", "deadline", "timeout", "timed_out", "thread", "fetched", "settling",
                 "soft", "soft_deadline", "fail", "extended", "revoked", "started_ns")

    def __init__(self, ev: Event, limits: "Tuple[Optional[float], Optional[float], bool]") -> None:
        self.ev = ev
        self.fetched = time.monotonic()
        self.soft, self.timeout, self.fail = limits
        self.deadline = time.monotonic() + self.timeout if self.timeout else None
        self.soft_deadline: Optional[float] = None
        self.timed_out = False
        self.settling = False  # the handler returned; its ack or nack is being queued
        self.thread: Optional[threading.Thread] = None
        self.extended = self.fetched  # when the lease was last renewed (monotonic)
        self.revoked: Optional[str] = None  # set when a revoke terminated it
        self.started_ns = 0  # CLOCK_REALTIME when a worker thread took it


class App:
    """A set of handlers plus the consumer group they share.

    ``target`` is a :class:`Log`, a log directory, or an endpoint of ``engram serve``
    ("tcp://host:port", "ipc://path"). ``durability`` ("sync", "nometasync", "async")
    applies when the App opens a directory itself; a :class:`Log` keeps its own, also in
    the worker processes of process mode. Group settings (``ack_wait``, ``max_deliver``,
    ``backoff``, ``result_ttl``, ``key_ordered``, ``start``) apply when the group is
    created. Handler patterns become the group's type filters when they can.

    ``confirm_publish`` (kombu's name; default True): ``Task.delay()`` and
    ``apply_async()`` return once the task is durable (one append, one round trip to a
    daemon). False pipelines them: each is still one append, queued on the handle and
    sent in batches with the tasks around it, and the call returns at once; the
    result's ``offset`` (and ``id`` without a ``task_id``) waits for its
    acknowledgement, and :meth:`flush` waits until every task sent so far is durable
    and raises the first error."""

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], group: str = "workers", *,
                 topic: str = "events", consumer: Optional[str] = None,
                 durability: Optional[str] = None, confirm_publish: bool = True,
                 **group_config: Any) -> None:
        if durability is not None and durability not in _DURABILITY:
            raise InvalidArgument(f"durability {durability!r}: use 'sync', 'nometasync' or 'async'")
        if isinstance(target, Log):
            if durability is not None:
                raise InvalidArgument("App: give durability to engram.open(); this Log is open already")
            self._log: Optional[Log] = target
            self._target: Union[str, None] = target.path or target.endpoint
            self.open_options: Dict[str, Any] = dict(getattr(target, "open_options", {}) or {})
        elif isinstance(target, (str, os.PathLike)):
            self._log = None
            self._target = os.fspath(target)
            if "://" in self._target:
                if durability is not None:
                    raise InvalidArgument("App: durability of a served log is set by engram serve")
                self.open_options = {}
            else:
                self.open_options = {"durability": durability or "sync"}
        else:
            raise TypeError("App target must be an engram.Log, a path or an endpoint")
        _str(group, "group")
        _str(topic, "topic")
        self.group_name = group
        self.topic = topic
        self.consumer_name = consumer
        self.confirm_publish = bool(confirm_publish)
        self.group_config = group_config
        _group_config(**{**_GROUP_DEFAULTS, **group_config})  # validate now
        self.handlers: List[Handler] = []
        self.error_hooks: List[Callable[[Event, BaseException], None]] = []
        self.tasks: Dict[str, Any] = {}
        # Queues (topics) a worker serves when run() is given none, highest priority first.
        self.queues: List[str] = []
        # routing key pattern -> queue, for apply_async(routing_key=); empty: the key names the queue
        self.bindings: List[Tuple[str, str]] = []
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._groups: Dict[str, Group] = {}
        # Orders fetched events before they are handed to workers (highest first); default:
        # the "priority" header (an int), else 0.
        self.priority_key: Optional[Callable[[Event], int]] = None
        # What `python -m engram worker` uses for the flags it is not given (concurrency,
        # batch, mode, max_tasks_per_child), and what runs before the workers start.
        self.worker_defaults: Dict[str, Any] = {}
        self.before_run: List[Callable[[], object]] = []  # called before run(); results unused
        self.serving: List[Callable[[], object]] = []  # once run() serves, and once it stopped
        self.stopped: List[Callable[[], object]] = []
        self.child_start: List[Callable[[], object]] = []  # in each worker process, first
        self._control_seen = 0   # control topic offset read up to (this process)
        self._revoked: Dict[str, bool] = {}  # event id -> terminate, from the control topic
        self._control_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<engram.App {self.topic}/{self.group_name} ({len(self.handlers)} handlers)>"

    # -- the log --------------------------------------------------------------------------
    @property
    def log(self) -> Log:
        """The log handle, (re)opened in this process when needed (e.g. after fork) with
        the same options (durability ...) it was first opened with."""
        if self._log is None or self._log.closed or self._pid != os.getpid():
            if self._target is None:
                raise InvalidArgument("App: the log it was given cannot be reopened")
            if not self._target:
                raise InvalidArgument("App: no log configured (Celery(broker=...) or conf.broker_url)")
            if "://" in self._target:
                self._log = _logs.connect(self._target)
            else:
                self._log = _logs.open(self._target, **self.open_options)
            self._pid = os.getpid()
            self._groups = {}
            self._control_seen = 0
        return self._log

    def _filters(self) -> Optional[List[str]]:
        pats = [h.pattern for h in self.handlers if not h.pattern.startswith("task.")]
        if self.tasks or len(pats) < len(self.handlers):
            # Every task type, registered here or not: an unknown task must fail loudly,
            # not be skipped by the filters (and a task added later must reach the group).
            pats.append("task.*")
        return c_filters(pats) if pats else None

    def group_for(self, topic: str) -> Group:
        """The App's consumer group on ``topic``, created on first use with the handlers'
        filters and the App's group settings."""
        log = self.log
        g = self._groups.get(topic)
        if g is None or g.log is not log:
            cfg = dict(self.group_config)
            if "filters" not in cfg:
                cfg["filters"] = self._filters() if self.handlers else None
            g = self._groups[topic] = log.group(topic, self.group_name, create_topic=True, **cfg)
        return g

    @property
    def group(self) -> Group:
        """The consumer group on the App's topic."""
        return self.group_for(self.topic)

    def set_durability(self, durability: str) -> None:
        """Sets the durability the App opens its log directory with (before it is open).
        A Log given to the App, or a served log, keeps its own: asking for another is
        an error."""
        if durability not in _DURABILITY:
            raise InvalidArgument(f"durability {durability!r}: use 'sync', 'nometasync' or 'async'")
        if self._target is None or "://" in self._target:
            raise InvalidArgument("durability: a served log's durability is set by engram serve")
        have = self.open_options.get("durability", "sync")
        if self._log is not None and not self._log.closed and have != durability:
            raise InvalidArgument(f"durability {durability!r}: the log is open already with {have!r}")
        self.open_options["durability"] = durability

    def flush(self) -> None:
        """Waits until every task sent with ``confirm_publish=False`` (and every
        ``append_async`` of the handle) is durable; raises the first error."""
        self.log.flush()

    def close(self) -> None:
        """Closes the log handle this App opened."""
        if self._log is not None and self._target is not None:
            self._log.close()
        self._log = None

    # -- registration ---------------------------------------------------------------------
    def on(self, pattern: str, *, timeout: Optional[Duration] = None,
           name: Optional[str] = None) -> Callable[[HandlerFn], HandlerFn]:
        """Decorator: run the function for events whose type matches ``pattern``
        ("memory.saved", "memory.*", "*"). ``timeout`` (seconds) overrides run()'s."""
        _check_pattern(pattern)
        _ms(timeout, "timeout")

        def deco(fn: HandlerFn) -> HandlerFn:
            self.add_handler(pattern, fn, timeout=timeout, name=name)
            return fn
        return deco

    def add_handler(self, pattern: str, fn: HandlerFn, *, timeout: Optional[Duration] = None,
                    name: Optional[str] = None, soft_timeout: Optional[Duration] = None,
                    fail_on_timeout: bool = False) -> Handler:
        """Registers ``fn`` for ``pattern`` (see :meth:`on`). ``soft_timeout`` raises
        SoftTimeLimitExceeded inside it; past ``timeout`` it is retried, or failed when
        ``fail_on_timeout``."""
        _check_pattern(pattern)
        if not callable(fn):
            raise TypeError("handler must be callable")
        t = _ms(timeout, "timeout")
        s = _ms(soft_timeout, "soft_timeout")
        h = Handler(pattern, fn, t / 1000 if t else None, name if name else str(getattr(fn, "__qualname__", repr(fn))),
                    s / 1000 if s else None, fail_on_timeout)
        self.handlers.append(h)
        return h

    def remove_handler(self, fn: HandlerFn, pattern: Optional[str] = None) -> int:
        """Unregisters ``fn`` (for ``pattern`` only, if given); returns how many."""
        before = len(self.handlers)
        self.handlers = [h for h in self.handlers
                         if not (h.fn == fn and (pattern is None or h.pattern == pattern))]
        return before - len(self.handlers)

    def on_error(self, fn: Callable[[Event, BaseException], None]) -> Callable[[Event, BaseException], None]:
        """Decorator: called with (event, exception) when a handler fails or times out."""
        self.error_hooks.append(fn)
        return fn

    def handlers_for(self, type: str) -> List[Handler]:
        """The handlers an event of ``type`` runs, in registration order."""
        return [h for h in self.handlers if match_type(h.pattern, type)]

    def task(self, fn: Optional[Callable[..., Any]] = None, **options: Any) -> Any:
        """Decorator: a Celery-style task with ``.delay()`` / ``.apply_async()``; the
        options (``name``, ``queue``, ``bind``, ``max_retries``, ``autoretry_for``,
        ``soft_time_limit``, ``time_limit`` ...) are those of :class:`engram.tasks.Task`."""
        from .tasks import Task

        def deco(f: Callable[..., Any]) -> Task:
            t = Task(self, f, **options)
            self.tasks[t.name] = t
            return t
        return deco(fn) if fn is not None else deco

    def send(self, type: str, payload: Payload = None, **kw: Any) -> Offset:
        """Appends an event to the App's topic (what producers call)."""
        return self.log.append(self.topic, type, payload, **kw)

    # -- revocation -----------------------------------------------------------------------
    @property
    def control_topic(self) -> str:
        """The topic that carries revocations to this App's workers."""
        return f"engram.control.{self.group_name}"

    def revoke(self, event_id: str, terminate: bool = False) -> bool:
        """Revokes the event ``topic:offset`` for this App's group: one not yet started
        never runs; with ``terminate`` one that runs is stopped (its process killed in
        process mode, Terminated raised in it in thread mode). Either way its status
        reads revoked. Returns True when it was cancelled before it started."""
        topic, off = parse_event_id(event_id)
        cancelled = False
        try:
            self.group_for(topic).cancel(off)
            cancelled = True
        except (Busy, AlreadyDone, Dead, NotFound, NotLeased):
            pass
        self.log.append(self.control_topic, "revoke", {"id": event_id, "terminate": bool(terminate)})
        return cancelled

    def revoked(self, event_id: str) -> Optional[bool]:
        """None when ``event_id`` was never revoked, else whether with terminate."""
        while len(self._read_control()) == 1000:
            pass  # catch up with a long control topic
        return self._revoked.get(event_id)

    def _read_control(self) -> List[Tuple[str, bool]]:
        """New revocations since the last call (this process), newest last."""
        out: List[Tuple[str, bool]] = []
        with self._control_lock:
            try:
                evs = self.log.read(self.control_topic, self._control_seen + 1, 1000)
            except NotFound:
                return out
            except Error as e:
                logger.info("reading %s failed: %s", self.control_topic, e)
                return out
            for ev in evs:
                self._control_seen = ev.offset
                try:
                    d = ev.json()
                    out.append((str(d["id"]), bool(d.get("terminate"))))
                except (Error, KeyError, TypeError):
                    continue
            for i, term in out:
                self._revoked[i] = self._revoked.get(i, False) or term
            if len(self._revoked) > 100_000:
                for k in list(self._revoked)[:50_000]:
                    del self._revoked[k]
        return out

    # -- handling -------------------------------------------------------------------------
    def _call(self, h: Handler, ev: Event) -> Any:
        if inspect.iscoroutinefunction(h.fn):
            return run_coroutine(h.fn(ev))
        r = h.fn(ev)
        if inspect.isawaitable(r):
            async def _await() -> Any:
                return await r
            return run_coroutine(_await())
        return r

    def _invoke(self, ev: Event) -> Any:
        """Runs every matching handler; returns the last non-None result."""
        result = None
        hs = self.handlers_for(ev.type)
        if not hs and ev.type.startswith("task."):
            name = ev.headers.get("task") or ev.type[5:]
            raise Reject(f"NotRegistered: Received unregistered task {name!r} "
                         f"(no worker of group {self.group_name} knows it)")
        for h in hs:
            r = self._call(h, ev)
            if r is not None:
                result = r
        return result

    def _limits_for(self, ev: Event, default: Optional[float]) -> Tuple[Optional[float], Optional[float], bool]:
        """(soft limit, hard limit, fail at the hard limit) for ``ev``."""
        hs = self.handlers_for(ev.type)
        ts = [h.timeout for h in hs if h.timeout]
        ss = [h.soft_timeout for h in hs if h.soft_timeout]
        return (max(ss) if ss else None, max(ts) if ts else default,
                any(h.fail_on_timeout for h in hs))

    def _timeout_for(self, ev: Event, default: Optional[float]) -> Optional[float]:
        return self._limits_for(ev, default)[1]

    def _priority(self, ev: Event) -> int:
        if self.priority_key is not None:
            return int(self.priority_key(ev))
        try:
            return int(ev.headers.get("priority", 0))
        except ValueError:
            return 0

    def _settle(self, ev: Event, stats: RunStats, result: Any = None,
                exc: Optional[BaseException] = None,
                batch_ack: Optional[Callable[[Event, Optional[bytes]], None]] = None) -> None:
        """Acks, nacks or rejects ``ev`` after its handlers ran; never raises. With
        ``batch_ack`` a success is queued for an ack shared with others in one commit."""
        try:
            if isinstance(exc, Terminated):
                if ev.finished is None:
                    ev.ack(revoked_result(str(exc) or "terminated"))
                stats.rejected += 1
                return
            if exc is None:
                data = _result_bytes(result)
                if data is None or len(data) <= _engram.MAX_RESULT:
                    if ev.finished is None:
                        if batch_ack is not None:
                            batch_ack(ev, data)
                        else:
                            ev.ack(data)
                    stats.handled += 1
                    return
                # The ack would be refused (ETOOBIG), and running the handler again
                # would make the same result: the event fails now, saying why.
                exc = Reject(f"ResultTooBig: a return value of {len(data)} bytes, over the "
                             f"{_engram.MAX_RESULT} a result may hold: keep large results "
                             f"elsewhere and return a reference")
                logger.warning("handler for %s (%s, attempt %d) failed: %s", ev.id, ev.type,
                               ev.attempt, exc.reason)
            self._report(ev, exc, stats)
            if ev.finished is not None:
                return
            if isinstance(exc, Reject):
                ev.reject(exc.reason)
                stats.rejected += 1
            elif isinstance(exc, Retry):
                ev.nack(delay=exc.delay, error=exc.error)
                stats.failed += 1
            else:
                ev.nack(error=_describe(exc))
                stats.failed += 1
        except Error as e:
            # Stale lease (someone else holds it now), already done, in the DLQ: the log
            # has the truth; this worker just moves on.
            logger.info("settling %s (attempt %d) failed: %s", ev.id, ev.attempt, e)

    def _report(self, ev: Event, exc: BaseException, stats: RunStats) -> None:
        desc = _describe(exc)
        stats.errors = (stats.errors + [f"{ev.id} attempt {ev.attempt}: {desc}"])[-20:]
        if isinstance(exc, HandlerTimeout):
            logger.warning("handler for %s (%s, attempt %d) timed out: %s", ev.id, ev.type, ev.attempt, desc)
        elif not isinstance(exc, (Reject, Retry)):
            logger.warning("handler for %s (%s, attempt %d) failed: %s", ev.id, ev.type, ev.attempt, desc)
        for hook in self.error_hooks:
            try:
                hook(ev, exc)
            except Exception:
                logger.exception("error hook failed")

    def process(self, ev: Event, stats: Optional[RunStats] = None) -> None:
        """Runs the handlers for one fetched event in this thread and settles it."""
        stats = stats if stats is not None else RunStats()
        try:
            result = self._invoke(ev)
        except BaseException as e:  # noqa: B902 - a handler's failure must not stop the worker
            if isinstance(e, (KeyboardInterrupt, SystemExit)) and not isinstance(e, HandlerTimeout):
                self._settle(ev, stats, exc=RuntimeError(f"interrupted: {e!r}"))
                raise
            self._settle(ev, stats, exc=e)
            return
        self._settle(ev, stats, result=result)

    # -- running --------------------------------------------------------------------------
    def stop(self) -> None:
        """Asks a running :meth:`run` to stop (thread-safe, signal-safe)."""
        self._stop.set()

    def run(self, concurrency: int = 1, timeout: Optional[Duration] = None, *,
            mode: str = "thread", grace: Duration = 30.0, batch: Optional[int] = None,
            wait: Duration = 1.0, idle_timeout: Optional[Duration] = None,
            max_events: Optional[int] = None, install_signals: bool = True,
            queues: Optional[Sequence[str]] = None,
            max_tasks_per_child: Optional[int] = None) -> RunStats:
        """Runs the workers until stopped. ``concurrency``: threads (``mode="thread"``) or
        processes (``mode="process"``); ``timeout``: seconds per event (handlers may set
        their own); ``grace``: how long SIGTERM/SIGINT waits for in-flight handlers;
        ``batch``: events fetched ahead of the workers in thread mode (default
        max(128, 4 x concurrency): one fetch and one ack commit serve many events; lower
        it so several worker processes share a short queue more evenly);
        ``idle_timeout``: return after that long with no events; ``max_events``: return
        after that many (both for scripts and tests); ``queues``: the topics to serve,
        highest priority first (default ``app.queues`` or the App's topic): events of an
        earlier queue are always started before those of a later one that were fetched
        with them; ``max_tasks_per_child``: process mode replaces a worker process after
        that many events. Acks of successful events are batched into shared commits."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError("concurrency must be an int")
        if concurrency < 1:
            raise InvalidArgument(f"concurrency {concurrency} must be at least 1")
        if mode not in ("thread", "process"):
            raise InvalidArgument(f"mode {mode!r}: use 'thread' or 'process'")
        if not self.handlers and not self.before_run:
            raise InvalidArgument("App.run: no handlers registered")
        t_ms = _ms(timeout, "timeout")
        g_ms = _ms(grace, "grace", allow_none=False)
        w_ms = _ms(wait, "wait", allow_none=False)
        i_ms = _ms(idle_timeout, "idle_timeout")
        for name, v in (("batch", batch), ("max_events", max_events),
                        ("max_tasks_per_child", max_tasks_per_child)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidArgument(f"{name} {v!r} must be a positive int (or None)")
        qs = list(queues) if queues else (list(self.queues) or [self.topic])
        for q in qs:
            _str(q, "queue")
        if len(set(qs)) != len(qs):
            raise InvalidArgument(f"queues {qs}: a queue is named twice")
        for hook in self.before_run:
            hook()
        if not self.handlers:
            raise InvalidArgument("App.run: no handlers registered")
        self._stop.clear()
        restore = self._install_signals() if install_signals else None
        for hook in self.serving:
            hook()
        try:
            if mode == "process":
                return self._run_processes(concurrency, t_ms, g_ms, w_ms, i_ms, max_events, qs,
                                           max_tasks_per_child)
            return self._run_threads(concurrency, t_ms / 1000 if t_ms else None, g_ms / 1000,
                                     w_ms / 1000, i_ms / 1000 if i_ms is not None else None,
                                     max_events, batch, qs)
        finally:
            for hook in self.stopped:
                try:
                    hook()
                except Exception:
                    logger.exception("a hook of a stopped worker failed")
            if restore:
                restore()

    def _install_signals(self) -> Optional[Callable[[], None]]:
        if threading.current_thread() is not threading.main_thread():
            return None
        old = {}

        def on_signal(signum: int, frame: Any) -> None:
            logger.info("signal %d: stopping (in-flight handlers may finish)", signum)
            self._stop.set()

        for s in (signal.SIGTERM, signal.SIGINT):
            old[s] = signal.signal(s, on_signal)

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)
        return restore

    _BEAT_EVERY = 5.0  # seconds between worker heartbeats (the default lost timeout is 30 s)
    # How long the fetch loop waits, once every fetched event has a worker thread, for the
    # handlers to finish so that their acks ride with the next fetch (one ack_fetch
    # request and commit, not a fetch plus the acker's ack_many). A handler that takes
    # longer is acked by the acker; events arriving meanwhile wait at most this long.
    _RIDE_WAIT = 0.002

    def _beat(self, name: str, concurrency: int, stats: RunStats, groups: List[Group],
              running: List[Tuple[str, str, int, int]]) -> None:
        """Tells the log who this worker is and what it runs now (engram workers, the
        dashboard); a failed heartbeat is logged, never fatal."""
        try:
            self.log.worker_heartbeat(
                name, host=socket.gethostname()[:255], pid=os.getpid(), concurrency=concurrency,
                handled=stats.handled, failed=stats.failed + stats.rejected,
                groups=[f"{g.topic}/{g.name}" for g in groups][:16], running=running[:16])
        except Error as e:
            logger.info("worker heartbeat failed: %s", e)

    def _forget(self, name: str) -> None:
        """A worker that stops cleanly leaves the list instead of showing as lost."""
        try:
            self.log.forget_worker(name)
        except Error:
            pass

    def _ack_wait(self, group: Group) -> float:
        try:
            return group.info().ack_wait
        except Error:
            return 30.0

    def _fetch(self, consumers: List[Any], want: int, wait: float) -> List[Tuple[int, Event]]:
        """Fetches from the queues in priority order: the first with events wins. With
        several queues and none ready, each is polled with a short wait."""
        if len(consumers) == 1:
            return [(0, e) for e in consumers[0].fetch(want, wait)]
        for rank, c in enumerate(consumers):
            evs = c.fetch(want, 0)
            if evs:
                return [(rank, e) for e in evs]
        slice_ = min(wait, 0.1) / len(consumers)
        for rank, c in enumerate(consumers):
            evs = c.fetch(want, slice_)
            if evs:
                return [(rank, e) for e in evs]
        return []

    def _fetch_settling(self, consumer: Any, riding: List[Tuple[Event, Optional[bytes]]],
                        want: int, wait: float) -> Tuple[List[Tuple[int, Event]],
                                                          List[Tuple[Event, Optional[bytes]]]]:
        """One queue: fetches with the acks of finished events of its group in the same
        commit (engram_ack_fetch), which saves a commit per batch. Returns the events and
        the acks still to settle: none when they rode along, all of them when that call
        refused them (one was stale, say: it is all or nothing), to be acked one by one."""
        if not riding:
            return [(0, e) for e in consumer.fetch(want, wait)], []
        try:
            evs = consumer.group.ack_fetch(consumer.name, [(e.offset, e.attempt, r) for e, r in riding],
                                           want, wait)
        except Error as e:
            logger.debug("ack-fetch refused (%s): acking one by one", e)
            return [(0, x) for x in consumer.fetch(want, wait)], riding
        for ev, _ in riding:
            ev.finished = "acked"
        return [(0, x) for x in evs], []

    def _run_threads(self, n: int, timeout: Optional[float], grace: float, wait: float,
                     idle: Optional[float], max_events: Optional[int],
                     batch: Optional[int], queues: List[str]) -> RunStats:
        stats = RunStats()
        groups = [self.group_for(q) for q in queues]
        consumer_name = self.consumer_name or _default_consumer_name()
        consumers = [g.consumer(consumer_name, wait=wait) for g in groups]
        ack_wait = min(self._ack_wait(g) for g in groups)
        control = bool(self.tasks)
        if control:
            self._read_control()  # revocations so far: their events are skipped
        # Events fetched ahead of the workers, so one fetch (one commit) serves many.
        prefetch = batch or max(128, 4 * n)
        lock = threading.Condition()
        acks: List[Tuple[Event, Optional[bytes]]] = []
        ack_cv = threading.Condition()
        # "hold": the fetch loop is about to fetch and takes the queued acks along.
        ack_state = {"closing": False, "busy": False, "hold": False}

        def batch_ack(ev: Event, result: Optional[bytes]) -> None:
            with ack_cv:
                acks.append((ev, result))
                ack_cv.notify_all()

        def acker() -> None:
            """Acks what the workers finished, all that queued up during the previous
            commit in the next one (one commit per group)."""
            while True:
                with ack_cv:
                    while (not acks or ack_state["hold"]) and not ack_state["closing"]:
                        ack_cv.wait()
                    if not acks:
                        return
                    todo = acks[:]
                    acks.clear()
                    ack_state["busy"] = True
                by_group: Dict[Tuple[str, str], List[Tuple[Event, Optional[bytes]]]] = {}
                for e, r in todo:
                    by_group.setdefault((e.topic, e.group.name if e.group else ""), []).append((e, r))
                for (topic, gname), items in by_group.items():
                    try:
                        codes = self.log.h.ack_many(topic, gname,
                                                    [(e.offset, e.attempt, r) for e, r in items])
                    except Error as err:
                        codes = [err.code] * len(items)
                    for (e, _), code in zip(items, codes):
                        if code == 0:
                            e.finished = "acked"
                        else:
                            logger.info("ack of %s (attempt %d) failed: %s", e.id, e.attempt,
                                        _engram.errname(code))
                with ack_cv:
                    ack_state["busy"] = False
                    ack_cv.notify_all()
        heap: List[Tuple[int, int, int, _Job]] = []  # (queue rank, -priority, seq, job)
        seq = itertools.count()
        running: Dict[int, _Job] = {}  # id(job) -> job, handlers now running
        workers: List[threading.Thread] = []
        seen = 0
        state = {"closing": False}

        def worker() -> None:
            me = threading.current_thread()
            while True:
                with lock:
                    while not heap and not state["closing"]:
                        lock.wait()
                    if not heap:
                        return
                    job = heapq.heappop(heap)[3]
                    job.thread = me
                    job.started_ns = time.time_ns()
                    now = time.monotonic()
                    if job.timeout:
                        job.deadline = now + job.timeout
                    if job.soft:
                        job.soft_deadline = now + job.soft
                    running[id(job)] = job
                    lock.notify_all()
                if control and job.ev.id in self._revoked:
                    with lock:
                        running.pop(id(job), None)
                        lock.notify_all()
                    self._settle(job.ev, stats, exc=Terminated("revoked"))
                    continue
                if time.monotonic() - job.fetched > ack_wait / 2:
                    # It waited in the prefetch queue: renew the lease before starting.
                    try:
                        job.ev.extend()
                        job.extended = time.monotonic()
                    except Error as e:
                        logger.info("skipping %s: its lease ended while queued (%s)", job.ev.id, e)
                        with lock:
                            running.pop(id(job), None)
                            lock.notify_all()
                        continue
                try:
                    result = self._invoke(job.ev)
                    exc: Optional[BaseException] = None
                except BaseException as e:  # noqa: B902
                    result, exc = None, e
                with lock:
                    abandoned = job.timed_out
                    if abandoned:
                        running.pop(id(job), None)
                    else:
                        job.settling = True  # stays "running" until settled, for shutdown
                    lock.notify_all()
                if abandoned:
                    logger.info("late handler for %s finished after its timeout; result dropped", job.ev.id)
                    with lock:
                        workers.remove(me)
                        lock.notify_all()
                    return  # a replacement took this worker's place
                if job.revoked is not None and exc is None:
                    exc = Terminated(job.revoked)  # it swallowed the terminate: still revoked
                self._settle(job.ev, stats, result, exc, batch_ack)
                with lock:
                    running.pop(id(job), None)
                    lock.notify_all()

        def spawn() -> None:
            t = threading.Thread(target=worker, name=f"engram-worker-{len(workers)}", daemon=True)
            workers.append(t)
            t.start()

        def watchdog() -> None:
            while True:
                with lock:
                    if state["closing"] and not running:
                        return
                    now = time.monotonic()
                    for j in running.values():
                        if (j.soft_deadline and j.soft_deadline <= now and not j.settling
                                and not j.timed_out and j.thread is not None):
                            j.soft_deadline = None
                            _interrupt(j.thread.ident, SoftTimeLimitExceeded)
                    late = [j for j in running.values()
                            if j.deadline and j.deadline <= now and not j.timed_out and not j.settling]
                    for j in late:
                        j.timed_out = True
                        running.pop(id(j), None)
                        spawn()  # keep the pool at its size while the late thread runs on
                    nxt = min([d for j in running.values() if not j.settling
                               for d in (j.deadline, j.soft_deadline) if d], default=None)
                    if not late:
                        lock.wait(min(0.5, max(0.001, nxt - now)) if nxt else 0.5)
                for j in late:
                    stats.timed_out += 1
                    if j.fail:
                        if j.thread is not None:
                            _interrupt(j.thread.ident, TimeLimitExceeded)  # stop it if it can be
                        self._settle(j.ev, stats, exc=Reject(
                            f"TimeLimitExceeded: the task ran past its time limit of {j.timeout:g}s"))
                    else:
                        exc = HandlerTimeout(f"handler ran past its timeout of {j.timeout:g}s")
                        self._settle(j.ev, stats, exc=exc)

        def keeper() -> None:
            """Heartbeats: renews the lease of every running handler a third of ack_wait
            after the last renewal (until it returns or hits its hard limit, when it
            leaves ``running``), and applies revocations that terminate."""
            tick = max(0.02, min(ack_wait / 3, 0.25))
            beat = 0.0
            beat_ids: FrozenSet[int] = frozenset()
            while not ka_stop.wait(tick):
                now = time.monotonic()
                with lock:
                    live = [j for j in running.values() if not j.settling and not j.timed_out]
                ids = frozenset(id(j) for j in live)
                # Every _BEAT_EVERY, and at most once a second when what runs changed.
                if now - beat >= self._BEAT_EVERY or (ids != beat_ids and now - beat >= 1.0):
                    beat, beat_ids = now, ids
                    self._beat(consumer_name, n, stats, groups,
                               [(j.ev.topic, j.ev.group.name if j.ev.group else "", j.ev.offset,
                                 j.started_ns) for j in live if j.ev.group])
                for j in live:
                    if now - j.extended >= ack_wait / 3:
                        try:
                            j.ev.extend()
                            j.extended = now
                        except Error as e:
                            logger.info("heartbeat for %s failed: %s", j.ev.id, e)
                if control:
                    for eid, term in self._read_control():
                        if not term:
                            continue
                        with lock:
                            hit = [j for j in running.values() if j.ev.id == eid and not j.settling]
                        for j in hit:
                            j.revoked = "terminated"
                            if j.thread is not None:
                                _interrupt(j.thread.ident, Terminated)

        with lock:
            for _ in range(n):
                spawn()
        dog = threading.Thread(target=watchdog, name="engram-watchdog", daemon=True)
        dog.start()
        ack_thread = threading.Thread(target=acker, name="engram-acker", daemon=True)
        ack_thread.start()
        ka_stop = threading.Event()
        self._beat(consumer_name, n, stats, groups, [])
        ka = threading.Thread(target=keeper, name="engram-heartbeat", daemon=True)
        ka.start()
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                if max_events is not None and seen >= max_events:
                    break
                with lock:
                    # Fetch again once the prefetched events are half handed out.
                    while len(heap) > prefetch // 2 or len(running) >= n and heap:
                        if self._stop.is_set():
                            break
                        lock.wait(0.2)
                    want = max(1, prefetch - len(heap))
                if self._stop.is_set():
                    break
                if max_events is not None:
                    want = min(want, max_events - seen)
                # With one queue the acks queued so far ride with the fetch: one commit.
                riding: List[Tuple[Event, Optional[bytes]]] = []
                if len(consumers) == 1:
                    with lock:
                        tail = bool(heap or running) and len(heap) + len(running) <= n
                    if tail:
                        # Every fetched event has a worker thread: give the handlers a
                        # moment to finish so that their acks ride along (the acker holds
                        # off meanwhile).
                        with ack_cv:
                            ack_state["hold"] = True
                        try:
                            end = time.monotonic() + self._RIDE_WAIT
                            with lock:
                                while ((running or heap) and not self._stop.is_set()
                                       and time.monotonic() < end):
                                    lock.wait(max(0.0, end - time.monotonic()))
                        finally:
                            with ack_cv:
                                riding = [a for a in acks if a[0].group is groups[0]]
                                if riding:
                                    acks[:] = [a for a in acks if a[0].group is not groups[0]]
                                ack_state["hold"] = False
                                ack_cv.notify_all()
                    else:
                        with ack_cv:
                            riding = [a for a in acks if a[0].group is groups[0]]
                            if riding:
                                acks[:] = [a for a in acks if a[0].group is not groups[0]]
                try:
                    if len(consumers) == 1:
                        evs, back = self._fetch_settling(consumers[0], riding, want, wait)
                    else:
                        evs, back = self._fetch(consumers, want, wait), []
                except Error as e:
                    logger.error("fetch failed: %s", e)
                    evs, back = [], riding
                    failed = True
                else:
                    failed = False
                if back:  # the acker settles what did not ride along, one by one
                    with ack_cv:
                        acks.extend(back)
                        ack_cv.notify_all()
                if failed:
                    if self._stop.wait(min(wait, 1.0)):
                        break
                    continue
                if not evs:
                    with lock:
                        busy = bool(heap or running)
                    if busy:
                        idle_since = time.monotonic()
                    elif idle is not None and time.monotonic() - idle_since >= idle:
                        break
                    continue
                idle_since = time.monotonic()
                seen += len(evs)
                with lock:
                    for rank, ev in evs:
                        heapq.heappush(heap, (rank, -self._priority(ev), next(seq),
                                              _Job(ev, self._limits_for(ev, timeout))))
                    lock.notify_all()
        finally:
            # Stop: nothing new is fetched. On a stop request, events not yet started go
            # back at once; running handlers get the grace period.
            deadline = time.monotonic() + grace
            with lock:
                early = [h[3] for h in heap] if self._stop.is_set() else []
                if early:
                    heap.clear()
            for j in early:
                try:
                    j.ev.nack(delay=0, error="worker stopped before the handler started")
                    stats.released += 1
                except Error:
                    pass
            with lock:
                while (heap or running) and time.monotonic() < deadline:
                    lock.wait(min(0.1, max(0.001, deadline - time.monotonic())))
                leftover = [h[3] for h in heap] + [j for j in running.values() if not j.settling]
                heap.clear()
                for j in leftover:
                    j.timed_out = True  # their results, if any, are dropped
                running.clear()
                state["closing"] = True
                lock.notify_all()
            ka_stop.set()
            for j in leftover:
                try:
                    j.ev.nack(delay=0, error="worker stopped before the handler finished")
                    stats.released += 1
                except Error:
                    pass
            for t in list(workers):
                t.join(timeout=0.05)
            with ack_cv:
                ack_state["closing"] = True
                ack_cv.notify_all()
            ack_thread.join(timeout=30)
            dog.join(timeout=1.0)
            ka.join(timeout=1.0)
            self._forget(consumer_name)
        return stats

    # -- process mode ---------------------------------------------------------------------
    _RECYCLE = 3  # a child's exit code: it ran max_tasks_per_child events; start another

    def _run_processes(self, n: int, t_ms: Optional[int], g_ms: int, w_ms: int,
                       i_ms: Optional[int], max_events: Optional[int], queues: List[str],
                       per_child: Optional[int]) -> RunStats:
        if self._target is None:
            raise InvalidArgument("process mode needs a log path or endpoint to reopen in each worker")
        # The parent leaves the log alone: each child opens its own handle (with the
        # App's open options) and creates the groups if needed.
        ctx = multiprocessing.get_context("fork")
        procs: Dict[int, Any] = {}
        stats = RunStats()

        def start(slot: int) -> None:
            p = ctx.Process(target=self._child_main,
                            args=(t_ms, w_ms, i_ms, max_events, queues, per_child),
                            name=f"engram-worker-{slot}", daemon=False)
            p.start()
            procs[slot] = p

        for i in range(n):
            start(i)
        try:
            while not self._stop.is_set():
                alive = False
                for slot, p in list(procs.items()):
                    p.join(timeout=0.1)
                    if p.exitcode is None:
                        alive = True
                    elif p.exitcode == self._RECYCLE and not self._stop.is_set():
                        start(slot)
                        alive = True
                    elif p.exitcode != 0 and not self._stop.is_set():
                        logger.warning("worker process %d exited with %s; starting another", p.pid, p.exitcode)
                        stats.errors.append(f"worker {p.pid} exited with {p.exitcode}")
                        start(slot)
                        alive = True
                if not alive:
                    break
        finally:
            for p in procs.values():
                if p.exitcode is None:
                    os.kill(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + g_ms / 1000 + 1.0
            for p in procs.values():
                p.join(timeout=max(0.0, deadline - time.monotonic()))
                if p.exitcode is None:
                    p.kill()
                    p.join()
        return stats

    def _child_main(self, t_ms: Optional[int], w_ms: int, i_ms: Optional[int],
                    max_events: Optional[int], queues: List[str], per_child: Optional[int]) -> None:
        """One worker process: fetch one event at a time and run it in the main thread.
        A handler's timeout (or a task's soft limit) interrupts it there (SIGALRM raises
        in it); a task's hard limit or a terminate kills the process after settling the
        event, and the parent starts another. A heartbeat thread keeps the lease alive."""
        self._stop.clear()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches all
        for hook in self.child_start:
            hook()
        main_ident = threading.get_ident()
        cur: Dict[str, Any] = {"ev": None, "soft": False, "hard": None, "fail": False,
                               "extended": 0.0, "settled": False}
        cur_lock = threading.Lock()

        def on_term(signum: int, frame: Any) -> None:
            self._stop.set()

        def on_alarm(signum: int, frame: Any) -> None:
            if cur["ev"] is not None:
                _interrupt(main_ident, SoftTimeLimitExceeded if cur["soft"] else HandlerTimeout)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGALRM, on_alarm)
        stats = RunStats()
        groups = [self.group_for(q) for q in queues]
        consumer_name = self.consumer_name or _default_consumer_name()
        consumers = [g.consumer(consumer_name, wait=min(w_ms, 500) / 1000) for g in groups]
        ack_wait = min(self._ack_wait(g) for g in groups)
        control = bool(self.tasks)
        if control:
            self._read_control()
        ka_stop = threading.Event()

        def finish_and_die(ev: Event, exc: BaseException) -> None:
            with cur_lock:
                if cur["ev"] is not ev or cur["settled"]:
                    return
                cur["settled"] = True
            self._settle(ev, stats, exc=exc)
            os.kill(os.getpid(), signal.SIGKILL)

        def keeper() -> None:
            tick = max(0.02, min(ack_wait / 3, 0.25))
            beat = 0.0
            while not ka_stop.wait(tick):
                ev = cur["ev"]
                now = time.monotonic()
                if now - beat >= self._BEAT_EVERY:
                    beat = now
                    self._beat(consumer_name, 1, stats, groups,
                               [(ev.topic, ev.group.name, ev.offset, cur.get("since_ns", 0))]
                               if ev is not None and ev.group else [])
                if ev is not None and cur["hard"] is not None and now >= cur["hard"]:
                    finish_and_die(ev, Reject(f"TimeLimitExceeded: the task ran past its time "
                                              f"limit of {cur['limit']:g}s (worker process killed)"))
                if ev is not None and now - cur["extended"] >= ack_wait / 3:
                    try:
                        ev.extend()
                        cur["extended"] = now
                    except Error as e:
                        logger.info("heartbeat for %s failed: %s", ev.id, e)
                if control:
                    for eid, term in self._read_control():
                        ev = cur["ev"]
                        if term and ev is not None and ev.id == eid:
                            finish_and_die(ev, Terminated("revoked"))

        # With one queue, the ack of a handled event rides with the next fetch (one commit
        # per task instead of two); anything else settles it on its own.
        pending: List[Tuple[Event, Optional[bytes]]] = []

        def hold(ev: Event, result: Optional[bytes]) -> None:
            pending.append((ev, result))

        def ack_pending(items: List[Tuple[Event, Optional[bytes]]]) -> None:
            for ev, result in items:
                try:
                    ev.ack(result)
                except Error as e:
                    logger.info("settling %s (attempt %d) failed: %s", ev.id, ev.attempt, e)

        ka = threading.Thread(target=keeper, name="engram-heartbeat", daemon=True)
        ka.start()
        idle_since = time.monotonic()
        seen = 0
        while not self._stop.is_set() and (max_events is None or seen < max_events):
            if per_child is not None and seen >= per_child:
                ack_pending(pending)
                ka_stop.set()
                os._exit(self._RECYCLE)
            riding, pending = pending, []
            try:
                if len(consumers) == 1:
                    evs, back = self._fetch_settling(consumers[0], riding, 1, min(w_ms, 500) / 1000)
                else:
                    evs, back = self._fetch(consumers, 1, min(w_ms, 500) / 1000), riding
            except Error:
                ack_pending(riding)
                raise
            ack_pending(back)
            if not evs:
                if i_ms is not None and (time.monotonic() - idle_since) * 1000 >= i_ms:
                    break
                continue
            idle_since = time.monotonic()
            seen += 1
            ev = evs[0][1]
            if control and ev.id in self._revoked:
                self._settle(ev, stats, exc=Terminated("revoked"))
                continue
            soft, hard, fail = self._limits_for(ev, t_ms / 1000 if t_ms else None)
            with cur_lock:
                cur.update(ev=ev, settled=False, extended=time.monotonic(), fail=fail, limit=hard,
                           soft=bool(soft and fail), hard=None, since_ns=time.time_ns())
                if fail and hard:
                    cur["hard"] = time.monotonic() + hard
            alarm = soft if fail else hard  # tasks: soft limit by signal, hard by kill
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, alarm)
            try:
                result = self._invoke(ev)
                exc: Optional[BaseException] = None
            except BaseException as e:  # noqa: B902
                result, exc = None, e
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            with cur_lock:
                done_elsewhere = cur["settled"]
                cur.update(ev=None, settled=True)
            if done_elsewhere:
                continue
            if isinstance(exc, HandlerTimeout):
                stats.timed_out += 1
            self._settle(ev, stats, result, exc, hold if len(consumers) == 1 else None)
        ack_pending(pending)
        ka_stop.set()
        self._forget(consumer_name)
        os._exit(0)


def _result_bytes(result: Any) -> Optional[bytes]:
    """A handler's return value as the ack's result: bytes, str, dict and list as
    :func:`engram.encode_payload` stores them; other values (numbers, True ...) as JSON."""
    try:
        return _encode_result(result)
    except (TypeError, InvalidArgument):
        return json.dumps(result, separators=(",", ":"), default=str).encode()


def parse_event_id(event_id: str) -> Tuple[str, int]:
    """("topic", offset) from "topic:offset"; InvalidArgument otherwise."""
    if not isinstance(event_id, str):
        raise TypeError(f"event id must be a str, got {type(event_id).__name__}")
    topic, sep, off = event_id.rpartition(":")
    if not sep or not topic or not off.isdigit() or int(off) < 1:
        raise InvalidArgument(f"{event_id!r} is not an event id (topic:offset)")
    return topic, int(off)


def _check_pattern(pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    if not pattern or len(pattern) > 200 or any(c.isspace() for c in pattern):
        raise InvalidArgument(f"pattern {pattern!r} is not a type pattern")


def _where(filename: str) -> str:
    """A source file's path relative to the sys.path entry it was imported from
    ("asyncio/tasks.py", "myapp/tasks.py"), so a location names its module."""
    best = ""
    for p in sys.path:
        if p and filename.startswith(p.rstrip(os.sep) + os.sep) and len(p) > len(best):
            best = p.rstrip(os.sep)
    return filename[len(best) + 1:] if best else filename


def _exc_name(exc: BaseException) -> str:
    """The name a failure keeps for its exception: bare for built-in ones, engram's and
    those of __main__, else "module.Class", so that a task's caller gets its own class
    back (AsyncResult.get(), as Celery does)."""
    t = type(exc)
    if t.__module__ in ("builtins", "__main__") or t.__module__.split(".")[0] == "engram":
        return t.__qualname__
    if "<" in t.__qualname__:  # defined inside a function: no caller can name it
        return t.__name__
    return f"{t.__module__}.{t.__qualname__}"


def _describe(exc: BaseException) -> str:
    """"Type: message (module/path.py:line)" — what a failure keeps as its last error."""
    msg = f"{_exc_name(exc)}: {str(exc)[:160]}"
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        msg += f" ({_where(last.filename)[-80:]}:{last.lineno})"
    return msg[:250]


def worker_name() -> str:
    """host-pid, the default consumer name prefix."""
    return f"{socket.gethostname()}-{os.getpid()}"
