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
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import client
from .client import Duration, Event, Group, Log, _ms
from .errors import Error, HandlerTimeout, InvalidArgument

__all__ = ["App", "Handler", "Reject", "Retry", "RunStats", "match_type", "c_filters"]

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
    __slots__ = ("ev", "deadline", "timeout", "timed_out", "thread", "fetched", "settling")

    def __init__(self, ev: Event, timeout: Optional[float]) -> None:
        self.ev = ev
        self.fetched = time.monotonic()
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout if timeout else None
        self.timed_out = False
        self.settling = False  # the handler returned; its ack or nack is being queued
        self.thread: Optional[threading.Thread] = None


class App:
    """A set of handlers plus the consumer group they share.

    ``target`` is a :class:`Log`, a log directory, or an endpoint of ``engram serve``
    ("tcp://host:port", "ipc://path"). Group settings (``ack_wait``, ``max_deliver``,
    ``backoff``, ``result_ttl``, ``key_ordered``, ``start``) apply when the group is
    created. Handler patterns become the group's type filters when they can."""

    def __init__(self, target: Union[Log, str, "os.PathLike[str]"], group: str = "workers", *,
                 topic: str = "events", consumer: Optional[str] = None,
                 **group_config: Any) -> None:
        if isinstance(target, Log):
            self._log: Optional[Log] = target
            self._target: Union[str, None] = target.path or target.endpoint
        elif isinstance(target, (str, os.PathLike)):
            self._log = None
            self._target = os.fspath(target)
        else:
            raise TypeError("App target must be an engram.Log, a path or an endpoint")
        client._str(group, "group")
        client._str(topic, "topic")
        self.group_name = group
        self.topic = topic
        self.consumer_name = consumer
        self.group_config = group_config
        client._group_config(**{**dict(filters=None, start="earliest", ack_wait=None,
                                       max_deliver=None, backoff=None, result_ttl=None,
                                       key_ordered=False), **group_config})  # validate now
        self.handlers: List[Handler] = []
        self.error_hooks: List[Callable[[Event, BaseException], None]] = []
        self.tasks: Dict[str, Any] = {}
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._group: Optional[Group] = None
        # Orders each fetched batch before it is handed to workers (highest first).
        self.priority_key: Optional[Callable[[Event], int]] = None

    def __repr__(self) -> str:
        return f"<engram.App {self.topic}/{self.group_name} ({len(self.handlers)} handlers)>"

    # -- the log --------------------------------------------------------------------------
    @property
    def log(self) -> Log:
        """The log handle, (re)opened in this process when needed (e.g. after fork)."""
        if self._log is None or self._log.closed or self._pid != os.getpid():
            if self._target is None:
                raise InvalidArgument("App: the log it was given cannot be reopened")
            if "://" in self._target:
                self._log = client.connect(self._target)
            else:
                self._log = client.open(self._target)
            self._pid = os.getpid()
            self._group = None
        return self._log

    @property
    def group(self) -> Group:
        """The consumer group, created on first use with the handlers' filters."""
        if self._group is None or self._group.log is not self.log:
            cfg = dict(self.group_config)
            if "filters" not in cfg:
                cfg["filters"] = c_filters([h.pattern for h in self.handlers]) if self.handlers else None
            self._group = self.log.group(self.topic, self.group_name, **cfg)
        return self._group

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
                    name: Optional[str] = None) -> Handler:
        """Registers ``fn`` for ``pattern`` (see :meth:`on`)."""
        _check_pattern(pattern)
        if not callable(fn):
            raise TypeError("handler must be callable")
        t = _ms(timeout, "timeout")
        h = Handler(pattern, fn, t / 1000 if t else None, name or getattr(fn, "__qualname__", repr(fn)))
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

    def task(self, fn: Optional[Callable[..., Any]] = None, *, name: Optional[str] = None,
             queue: Optional[str] = None, autoretry: bool = False) -> Any:
        """Decorator: a Celery-style task with ``.delay()`` / ``.apply_async()``; see
        :mod:`engram.tasks`."""
        from .tasks import Task

        def deco(f: Callable[..., Any]) -> Task:
            t = Task(self, f, name=name, queue=queue, autoretry=autoretry)
            self.tasks[t.name] = t
            return t
        return deco(fn) if fn is not None else deco

    def send(self, type: str, payload: client.Payload = None, **kw: Any) -> client.Offset:
        """Appends an event to the App's topic (what producers call)."""
        return self.log.append(self.topic, type, payload, **kw)

    # -- handling -------------------------------------------------------------------------
    def _call(self, h: Handler, ev: Event) -> Any:
        if inspect.iscoroutinefunction(h.fn):
            return asyncio.run(h.fn(ev))
        r = h.fn(ev)
        if inspect.isawaitable(r):
            async def _await() -> Any:
                return await r
            return asyncio.run(_await())
        return r

    def _invoke(self, ev: Event) -> Any:
        """Runs every matching handler; returns the last non-None result."""
        result = None
        for h in self.handlers_for(ev.type):
            r = self._call(h, ev)
            if r is not None:
                result = r
        return result

    def _timeout_for(self, ev: Event, default: Optional[float]) -> Optional[float]:
        ts = [h.timeout for h in self.handlers_for(ev.type) if h.timeout]
        return max(ts) if ts else default

    def _settle(self, ev: Event, stats: RunStats, result: Any = None,
                exc: Optional[BaseException] = None,
                batch_ack: Optional[Callable[[Event, Optional[bytes]], None]] = None) -> None:
        """Acks, nacks or rejects ``ev`` after its handlers ran; never raises. With
        ``batch_ack`` a success is queued for an ack shared with others in one commit."""
        try:
            if exc is None:
                if ev.finished is None:
                    if batch_ack is not None:
                        batch_ack(ev, client._encode_result(result))
                    else:
                        ev.ack(result)
                stats.handled += 1
                return
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
            max_events: Optional[int] = None, install_signals: bool = True) -> RunStats:
        """Runs the workers until stopped. ``concurrency``: threads (``mode="thread"``) or
        processes (``mode="process"``); ``timeout``: seconds per event (handlers may set
        their own); ``grace``: how long SIGTERM/SIGINT waits for in-flight handlers;
        ``batch``: events fetched ahead of the workers in thread mode (default
        max(128, 4 x concurrency): one fetch and one ack commit serve many events; lower
        it so several worker processes share a short queue more evenly);
        ``idle_timeout``: return after that long with no events; ``max_events``: return
        after that many (both for scripts and tests). Acks of successful events are
        batched into shared commits."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError("concurrency must be an int")
        if concurrency < 1:
            raise InvalidArgument(f"concurrency {concurrency} must be at least 1")
        if mode not in ("thread", "process"):
            raise InvalidArgument(f"mode {mode!r}: use 'thread' or 'process'")
        if not self.handlers:
            raise InvalidArgument("App.run: no handlers registered")
        t_ms = _ms(timeout, "timeout")
        g_ms = _ms(grace, "grace", allow_none=False)
        w_ms = _ms(wait, "wait", allow_none=False)
        i_ms = _ms(idle_timeout, "idle_timeout")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise InvalidArgument("batch must be a positive int")
        self._stop.clear()
        restore = self._install_signals() if install_signals else None
        try:
            if mode == "process":
                return self._run_processes(concurrency, t_ms, g_ms, w_ms, i_ms, max_events)
            return self._run_threads(concurrency, t_ms / 1000 if t_ms else None, g_ms / 1000,
                                     w_ms / 1000, i_ms / 1000 if i_ms is not None else None,
                                     max_events, batch)
        finally:
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

    def _run_threads(self, n: int, timeout: Optional[float], grace: float, wait: float,
                     idle: Optional[float], max_events: Optional[int],
                     batch: Optional[int]) -> RunStats:
        stats = RunStats()
        group = self.group
        consumer = group.consumer(self.consumer_name, wait=wait)
        try:
            ack_wait = group.info().ack_wait
        except Error:
            ack_wait = 30.0
        # Events fetched ahead of the workers, so one fetch (one commit) serves many.
        prefetch = batch or max(128, 4 * n)
        lock = threading.Condition()
        acks: List[Tuple[Event, Optional[bytes]]] = []
        ack_cv = threading.Condition()
        ack_state = {"closing": False, "busy": False}

        def batch_ack(ev: Event, result: Optional[bytes]) -> None:
            with ack_cv:
                acks.append((ev, result))
                ack_cv.notify_all()

        def acker() -> None:
            """Acks what the workers finished, all that queued up during the previous
            commit in the next one."""
            while True:
                with ack_cv:
                    while not acks and not ack_state["closing"]:
                        ack_cv.wait()
                    if not acks:
                        return
                    todo = acks[:]
                    acks.clear()
                    ack_state["busy"] = True
                try:
                    codes = group.log.h.ack_many(group.topic, group.name,
                                                 [(e.offset, e.attempt, r) for e, r in todo])
                except Error as e:
                    codes = [e.code] * len(todo)
                for (e, _), code in zip(todo, codes):
                    if code == 0:
                        e.finished = "acked"
                    else:
                        logger.info("ack of %s (attempt %d) failed: %s", e.id, e.attempt,
                                    client._engram.errname(code))
                with ack_cv:
                    ack_state["busy"] = False
                    ack_cv.notify_all()
        queue: List[_Job] = []
        running: Dict[int, _Job] = {}  # id(job) -> job, handlers now running
        workers: List[threading.Thread] = []
        seen = 0
        state = {"closing": False}

        def worker() -> None:
            me = threading.current_thread()
            while True:
                with lock:
                    while not queue and not state["closing"]:
                        lock.wait()
                    if not queue:
                        return
                    job = queue.pop(0)
                    job.thread = me
                    if job.timeout:
                        job.deadline = time.monotonic() + job.timeout
                    running[id(job)] = job
                    lock.notify_all()
                if time.monotonic() - job.fetched > ack_wait / 2:
                    # It waited in the prefetch queue: renew the lease before starting.
                    try:
                        job.ev.extend()
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
                    late = [j for j in running.values()
                            if j.deadline and j.deadline <= now and not j.timed_out and not j.settling]
                    for j in late:
                        j.timed_out = True
                        running.pop(id(j), None)
                        spawn()  # keep the pool at its size while the late thread runs on
                    nxt = min((j.deadline for j in running.values() if j.deadline and not j.settling),
                              default=None)
                    if not late:
                        lock.wait(min(0.5, max(0.001, nxt - now)) if nxt else 0.5)
                for j in late:
                    exc = HandlerTimeout(f"handler ran past its timeout of {j.timeout:g}s")
                    stats.timed_out += 1
                    self._settle(j.ev, stats, exc=exc)

        with lock:
            for _ in range(n):
                spawn()
        dog = threading.Thread(target=watchdog, name="engram-watchdog", daemon=True)
        dog.start()
        ack_thread = threading.Thread(target=acker, name="engram-acker", daemon=True)
        ack_thread.start()
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                if max_events is not None and seen >= max_events:
                    break
                with lock:
                    # Fetch again once the prefetched events are half handed out.
                    while len(queue) > prefetch // 2 or len(running) >= n and queue:
                        if self._stop.is_set():
                            break
                        lock.wait(0.2)
                    want = max(1, prefetch - len(queue))
                if self._stop.is_set():
                    break
                if max_events is not None:
                    want = min(want, max_events - seen)
                try:
                    evs = consumer.fetch(want)
                except Error as e:
                    logger.error("fetch failed: %s", e)
                    if self._stop.wait(min(wait, 1.0)):
                        break
                    continue
                if not evs:
                    with lock:
                        busy = bool(queue or running)
                    if busy:
                        idle_since = time.monotonic()
                    elif idle is not None and time.monotonic() - idle_since >= idle:
                        break
                    continue
                idle_since = time.monotonic()
                seen += len(evs)
                if self.priority_key is not None:
                    evs.sort(key=self.priority_key, reverse=True)
                with lock:
                    for ev in evs:
                        queue.append(_Job(ev, self._timeout_for(ev, timeout)))
                    lock.notify_all()
        finally:
            # Stop: nothing new is fetched. On a stop request, events not yet started go
            # back at once; running handlers get the grace period.
            deadline = time.monotonic() + grace
            with lock:
                early = list(queue) if self._stop.is_set() else []
                if early:
                    queue.clear()
            for j in early:
                try:
                    j.ev.nack(delay=0, error="worker stopped before the handler started")
                    stats.released += 1
                except Error:
                    pass
            with lock:
                while (queue or running) and time.monotonic() < deadline:
                    lock.wait(min(0.1, max(0.001, deadline - time.monotonic())))
                leftover = list(queue) + [j for j in running.values() if not j.settling]
                queue.clear()
                for j in leftover:
                    j.timed_out = True  # their results, if any, are dropped
                running.clear()
                state["closing"] = True
                lock.notify_all()
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
        return stats

    # -- process mode ---------------------------------------------------------------------
    def _run_processes(self, n: int, t_ms: Optional[int], g_ms: int, w_ms: int,
                       i_ms: Optional[int], max_events: Optional[int]) -> RunStats:
        if self._target is None:
            raise InvalidArgument("process mode needs a log path or endpoint to reopen in each worker")
        # The parent leaves the log alone: each child opens its own handle and creates
        # the group if needed (the first one wins, the others find it).
        ctx = multiprocessing.get_context("fork")
        procs: Dict[int, Any] = {}
        stats = RunStats()

        def start(slot: int) -> None:
            p = ctx.Process(target=self._child_main, args=(t_ms, w_ms, i_ms, max_events),
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
                    max_events: Optional[int]) -> None:
        """One worker process: fetch one event at a time and run it in the main thread,
        where a timeout interrupts the handler (SIGALRM raises HandlerTimeout in it)."""
        self._stop.clear()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches all
        busy = {"now": False}

        def on_term(signum: int, frame: Any) -> None:
            self._stop.set()

        def on_alarm(signum: int, frame: Any) -> None:
            if busy["now"]:
                raise HandlerTimeout("handler ran past its timeout")

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGALRM, on_alarm)
        stats = RunStats()
        consumer = self.group.consumer(self.consumer_name, wait=min(w_ms, 500) / 1000)
        idle_since = time.monotonic()
        seen = 0
        while not self._stop.is_set() and (max_events is None or seen < max_events):
            evs = consumer.fetch(1)
            if not evs:
                if i_ms is not None and (time.monotonic() - idle_since) * 1000 >= i_ms:
                    break
                continue
            idle_since = time.monotonic()
            seen += 1
            ev = evs[0]
            t = self._timeout_for(ev, t_ms / 1000 if t_ms else None)
            busy["now"] = True
            if t:
                signal.setitimer(signal.ITIMER_REAL, t)
            try:
                result = self._invoke(ev)
                exc: Optional[BaseException] = None
            except BaseException as e:  # noqa: B902
                result, exc = None, e
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                busy["now"] = False
            if isinstance(exc, HandlerTimeout):
                stats.timed_out += 1
            self._settle(ev, stats, result, exc)
        os._exit(0)


def _check_pattern(pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    if not pattern or len(pattern) > 200 or any(c.isspace() for c in pattern):
        raise InvalidArgument(f"pattern {pattern!r} is not a type pattern")


def _describe(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        msg += f" ({os.path.basename(last.filename)}:{last.lineno})"
    return msg[:250]


def worker_name() -> str:
    """host-pid, the default consumer name prefix."""
    return f"{socket.gethostname()}-{os.getpid()}"
