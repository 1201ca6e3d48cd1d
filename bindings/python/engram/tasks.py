"""Tasks over an :class:`engram.App`, with Celery's calling conventions and semantics.

    app = engram.App("/var/lib/memory-log", group="tasks", topic="tasks")

    @app.task(bind=True, max_retries=3, autoretry_for=(ConnectionError,), retry_backoff=True)
    def embed(self, memory_id, text): ...

    r = embed.delay("m1", "hello")      # one durable append
    r.get(timeout=10)                    # the return value, kept with the ack

Workers: ``python -m engram worker mymodule:app``. Arguments and return values must be
JSON-serialisable. A task that raises fails (``FAILURE``, the event goes to the
dead-letter queue with the error) unless it asks for a retry: ``self.retry(...)``,
``raise engram.Retry(delay=...)``, an exception listed in ``autoretry_for``, or any
exception with the older ``autoretry=True`` (the group's backoff). The Celery-compatible
app object that sits on this module is :mod:`engram.celery`.
"""
from __future__ import annotations

import ast
import asyncio
import base64 as _base64
import builtins
import datetime as _dt
import decimal as _decimal
import inspect
import json
import logging
import random
import socket
import sys
import threading
import time
import traceback
import uuid as _uuid
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple,
                    Set, Type, Union)

from .app import (Reject, Retry, SoftTimeLimitExceeded, Terminated, TimeLimitExceeded, _describe,
                  parse_event_id, run_coroutine)
from .group import Group
from .message import Duration, _ms, _str
from . import _engram
from . import _signals as sig  # Celery's task signals, sent to their receivers
from .errors import (Error, InternalError, InvalidArgument, NotFound, NotSupported, TaskFailed,
                     TaskRevoked, Timeout, error_for_code)

if TYPE_CHECKING:
    from .app import App

__all__ = ["Task", "AsyncResult", "EagerResult", "Context", "MaxRetriesExceededError", "states",
           "Signature"]


class states:
    """Celery's task state names."""

    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    RETRY = "RETRY"
    READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
    UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
    EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
    PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
    ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})


class MaxRetriesExceededError(Exception):
    """``self.retry()`` was called on a task already retried ``max_retries`` times."""


class Ignore(Exception):
    """Celery's ``Ignore``: raised by a task, its message is consumed and nothing is
    recorded of this run (no result, not a failure; its state reads PENDING)."""


_warned: Set[str] = set()  # Celery settings and options warned about, once each
_celery_logger = logging.getLogger("engram.celery")


def _warn_at_least_once(what: str) -> None:
    """acks_late=False asks Celery for at most once: the message is acked when the task
    starts, and a worker that dies mid-task loses it. engram finishes a task only when it
    returned, so such a task runs again: say so, once per name."""
    if what in _warned:
        return
    _warned.add(what)
    _celery_logger.warning("%s=False: engram acks a task only once it returned, so a task whose "
                           "worker dies mid-run runs again (at least once, never lost), where "
                           "Celery would drop it: make the task idempotent (see "
                           "docs/migrating/celery.md)", what)


def _type_for(name: str) -> str:
    t = "task." + "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
    return t.strip(".")


# Celery's JSON (kombu 5.3 and later): a value JSON lacks travels as {"__type__": T,
# "__value__": V} and comes back as itself, in a task's arguments and in its result.
_MARKED: Tuple[Tuple[type, str, Callable[[Any], Any]], ...] = (
    (_uuid.UUID, "uuid", str),
    (_dt.datetime, "datetime", lambda o: o.isoformat()),  # before date: a datetime is one
    (_dt.date, "date", lambda o: o.isoformat()),
    (_dt.time, "time", lambda o: o.isoformat()),
    (_decimal.Decimal, "decimal", str),
)
_UNMARK: Dict[str, Callable[[Any], Any]] = {
    "uuid": _uuid.UUID, "datetime": _dt.datetime.fromisoformat, "date": _dt.date.fromisoformat,
    "time": _dt.time.fromisoformat, "decimal": _decimal.Decimal,
    "bytes": lambda v: v.encode("utf-8"), "base64": _base64.b64decode,
}


def _celery_default(o: Any) -> Any:
    """json.dumps's default for task arguments and results, as Celery's JSON encoder:
    ``__json__()`` when the object has it, the marked types above, bytes; anything else
    is refused."""
    reducer = getattr(o, "__json__", None)
    if reducer is not None:
        return reducer()
    for t, name, encode in _MARKED:
        if isinstance(o, t):
            return {"__type__": name, "__value__": encode(o)}
    if isinstance(o, bytes):
        try:
            return {"__type__": "bytes", "__value__": o.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": _base64.b64encode(o).decode("ascii")}
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _celery_hook(d: Dict[str, Any]) -> Any:
    """json.loads's object_hook: a marked value back as itself (left as it is when its
    marker or value is not one Celery writes)."""
    if d.keys() == {"__type__", "__value__"}:
        decode = _UNMARK.get(d["__type__"])
        if decode is not None:
            try:
                return decode(d["__value__"])
            except (TypeError, ValueError, AttributeError, _decimal.InvalidOperation):
                return d
    return d


def _celery_loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, object_hook=_celery_hook)
    except ValueError as e:
        raise InvalidArgument(f"{what}: payload is not JSON: {e}") from None


def _when_ns(when: Union[_dt.datetime, str, int, float], what: str) -> int:
    """A datetime (naive = UTC, as Celery with enable_utc), an ISO string, or epoch seconds."""
    if isinstance(when, str):
        try:
            when = _dt.datetime.fromisoformat(when)
        except ValueError:
            raise InvalidArgument(f"{what}: {when!r} is not an ISO 8601 time") from None
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return int(when.timestamp() * 1e9)
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(f"{what}: expected a datetime, an ISO string or epoch seconds")
    return int(when * 1e9)


def match_routing_key(pattern: str, key: str) -> bool:
    """AMQP topic-exchange matching: words split by '.', ``*`` one word, ``#`` zero or more."""
    p, k = pattern.split("."), key.split(".")

    def m(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(m(i + 1, jj) for jj in range(j, len(k) + 1))
        return j < len(k) and (p[i] == "*" or p[i] == k[j]) and m(i + 1, j + 1)
    return m(0, 0)


class Context:
    """``self.request`` inside a bound task: the id, retries and call of this run."""

    def __init__(self, **kw: Any) -> None:
        self.id: Optional[str] = None
        self.retries = 0
        self.args: List[Any] = []
        self.kwargs: Dict[str, Any] = {}
        self.task: Optional[str] = None
        self.delivery_info: Dict[str, Any] = {}
        self.eta: Optional[str] = None
        self.expires: Optional[str] = None
        self.hostname = socket.gethostname()
        self.is_eager = False
        self.called_directly = True
        self.attempt = 0
        self.__dict__.update(kw)

    @property
    def correlation_id(self) -> Optional[str]:
        return self.id

    @property
    def root_id(self) -> Optional[str]:
        return self.id

    parent_id = None

    def __repr__(self) -> str:
        return f"<Context {self.__dict__!r}>"


# Task options: Celery's names; the value each gets when not given.
_OPTIONS: Dict[str, Any] = dict(
    name=None, bind=False, queue=None, max_retries=3, default_retry_delay=180,
    autoretry_for=(), retry_kwargs=None, retry_backoff=False, retry_backoff_max=600,
    retry_jitter=True, soft_time_limit=None, time_limit=None, ignore_result=False,
    priority=None, expires=None, autoretry=False, acks_late=True, track_started=True,
    reject_on_worker_lost=True, typing=True, throws=(), serializer="json", rate_limit=None,
)


def parse_rate(rate: Any) -> Optional[float]:
    """Celery's rate strings ("100/h", "10/m", "2/s", or a number per second) -> seconds
    between two runs; None or 0 -> no limit."""
    if rate in (None, "", 0):
        return None
    per: Optional[float]
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        n, per = float(rate), 1.0
    elif isinstance(rate, str):
        num, _, unit = rate.partition("/")
        try:
            n = float(num)
        except ValueError:
            raise InvalidArgument(f"rate_limit {rate!r}: expected like '100/h'") from None
        per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip())
        if per is None:
            raise InvalidArgument(f"rate_limit {rate!r}: the unit is s, m or h")
    else:
        raise TypeError("rate_limit must be a str like '100/h' or a number")
    if n < 0:
        raise InvalidArgument(f"rate_limit {rate!r} is negative")
    return per / n if n else None
# Celery options engram cannot honour: refused rather than ignored.
_REFUSED = {
    "base": "custom Task base classes are not supported; use the task options",
    "acks_on_failure_or_timeout": "a failed task always goes to the dead-letter queue",
    "store_errors_even_if_ignored": "a failed task's error always goes to the dead-letter "
    "queue, with or without ignore_result; drop the option",
    "trail": "results do not record the subtasks a task started (result.children); drop "
    "the option",
}


class Task:
    """A function registered with ``@app.task``. Calling it runs it here; ``delay`` and
    ``apply_async`` send it to the workers. Options are Celery's: ``name``, ``bind``,
    ``queue``, ``max_retries``, ``default_retry_delay``, ``autoretry_for``,
    ``retry_kwargs``, ``retry_backoff``/``retry_backoff_max``/``retry_jitter``,
    ``soft_time_limit``, ``time_limit``, ``ignore_result``, ``priority``, ``expires``."""

    def __init__(self, app: "App", fn: Callable[..., Any], **options: Any) -> None:
        if not callable(fn):
            raise TypeError("a task must be callable")
        for k in options:
            if k in _REFUSED:
                raise NotSupported(f"task option {k}=: {_REFUSED[k]}")
            if k not in _OPTIONS:
                raise TypeError(f"task() got an unexpected option {k!r}")
        o = {**_OPTIONS, **options}
        self.app = app
        self.fn = fn
        self.name = _str(o["name"], "name", optional=True) or f"{fn.__module__}.{fn.__qualname__}"
        self.type = _type_for(self.name)
        self._queue = _str(getattr(o["queue"], "name", o["queue"]), "queue", optional=True)
        self.bind = bool(o["bind"])
        self.max_retries: Optional[int] = o["max_retries"]
        self.default_retry_delay = o["default_retry_delay"]
        self.autoretry_for: Tuple[Type[BaseException], ...] = tuple(o["autoretry_for"] or ())
        self.retry_kwargs: Dict[str, Any] = dict(o["retry_kwargs"] or {})
        self.retry_backoff = o["retry_backoff"]
        self.retry_backoff_max = o["retry_backoff_max"]
        self.retry_jitter = bool(o["retry_jitter"])
        self.typing = bool(o["typing"])
        self.ignore_result = bool(o["ignore_result"])
        self.priority = o["priority"]
        self.expires = o["expires"]
        self.autoretry = bool(o["autoretry"])
        self.throws = tuple(o["throws"] or ())
        if o["serializer"] != "json":
            raise NotSupported(f"serializer {o['serializer']!r}: tasks are JSON only")
        for k in ("acks_late", "reject_on_worker_lost"):
            if not o[k]:  # engram always acks after the task and redelivers on a lost worker
                _warn_at_least_once(f"task {self.name}: {k}")
        for k in ("soft_time_limit", "time_limit", "default_retry_delay", "retry_backoff_max"):
            _ms(o[k], k)
        if self.max_retries is not None and (isinstance(self.max_retries, bool) or
                                             not isinstance(self.max_retries, int) or
                                             self.max_retries < 0):
            raise InvalidArgument(f"max_retries {self.max_retries!r} must be None or an int >= 0")
        md = app.group_config.get("max_deliver", 5)
        if "max_retries" in options and self.max_retries is not None and self.max_retries >= md:
            raise InvalidArgument(f"task {self.name}: max_retries={self.max_retries} needs "
                                  f"max_deliver > {self.max_retries} on the App (it is {md})")
        self.soft_time_limit = o["soft_time_limit"]
        self.time_limit = o["time_limit"]
        self.rate_limit = o["rate_limit"]
        self._interval = parse_rate(self.rate_limit)  # seconds between two starts here
        self._next_start = 0.0
        self._rate_lock = threading.Lock()
        self._local = threading.local()
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn
        app.add_handler(self.type, self._handle, name=self.name, timeout=self.time_limit,
                        soft_timeout=self.soft_time_limit, fail_on_timeout=True)

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.group_name}>"

    @property
    def queue(self) -> str:
        """The queue (topic) the task is sent to unless apply_async names another."""
        if self._queue:
            return self._queue
        route = getattr(self.app, "route_for", None)
        q = route(self.name) if route is not None else None
        return q or self.app.topic

    def _stack(self) -> List[Context]:
        """This thread's contexts of the runs under way (a task may call another)."""
        stack: Optional[List[Context]] = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @property
    def request(self) -> Context:
        """The running call's context (id, retries, args ...) in this thread."""
        stack: Optional[List[Context]] = getattr(self._local, "stack", None)
        return stack[-1] if stack else Context(task=self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the task here, as a plain call (``self.request.called_directly``)."""
        if self.bind:
            r = self.fn(self, *args, **kwargs)
        else:
            r = self.fn(*args, **kwargs)
        if inspect.iscoroutine(r):
            try:
                asyncio.get_running_loop()
                return r  # called from async code: the caller awaits it
            except RuntimeError:
                return run_coroutine(r)
        return r

    def apply(self, args: Optional[Sequence[Any]] = None, kwargs: Optional[Dict[str, Any]] = None,
              task_id: Optional[str] = None, throw: Optional[bool] = None,
              **options: Any) -> "EagerResult":
        """Celery's ``apply``: runs the task here, now, and returns an EagerResult; nothing
        is sent or stored. A retry it asks for (``self.retry``, ``autoretry_for``) runs it
        again at once, up to ``max_retries``, as Celery's eager mode does. ``throw=True``
        raises the task's exception instead of returning it in the result."""
        if options:
            raise NotSupported(f"apply() options {sorted(options)}: apply runs the task here; "
                               f"they apply to apply_async")
        if self.typing:
            self._check_arguments(args, kwargs)
        call_args, call_kwargs = list(args or ()), dict(kwargs or {})
        tid = task_id or str(_uuid.uuid4())
        stack = self._stack()
        for retries in range(10_000):
            stack.append(Context(id=tid, retries=retries, args=call_args, kwargs=call_kwargs,
                                 task=self.name, is_eager=True, called_directly=False,
                                 attempt=retries + 1))
            try:
                r = self(*call_args, **call_kwargs)
                if inspect.isawaitable(r):
                    r = run_coroutine(_awaited(r))
                return EagerResult(tid, states.SUCCESS, r)
            except Retry:
                continue
            except Exception as e:
                if self.autoretry_for and isinstance(e, self.autoretry_for):
                    limit = self.retry_kwargs.get("max_retries", self.max_retries)
                    if limit is None or retries < limit:
                        continue
                if throw:
                    raise
                return EagerResult(tid, states.FAILURE, e, traceback.format_exc())
            finally:
                stack.pop()
        raise InternalError(f"task {self.name}: apply retried 10000 times")

    # -- running in a worker ----------------------------------------------------------------
    def _handle(self, ev: Any) -> Any:
        body = _celery_loads(ev.payload, f"event {ev.id}")
        h = ev.headers
        exp = h.get("expires")
        if not exp and h.get("expires_in_ms"):
            # A beat schedule's fire: expires that long after it was appended.
            exp = str(ev.timestamp_ns + int(h["expires_in_ms"]) * 1_000_000)
        if exp and time.time_ns() > int(exp):
            raise Terminated("expired")
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        if self._interval:
            # Celery's rate limit: per worker process, runs start at most this often (the
            # lease is kept alive while it waits).
            with self._rate_lock:
                start = max(time.monotonic(), self._next_start)
                self._next_start = start + self._interval
            time.sleep(max(0.0, start - time.monotonic()))
        req = Context(id=h.get("task_id") or ev.id, retries=max(0, ev.attempt - 1), args=args,
                      kwargs=kwargs, task=self.name, called_directly=False, attempt=ev.attempt,
                      delivery_info={"queue": ev.topic, "routing_key": ev.topic,
                                     "priority": int(h.get("priority", 0) or 0)},
                      eta=h.get("eta"), expires=exp)
        stack = self._stack()
        stack.append(req)
        sig.task_prerun.send(sender=self, task_id=req.id, task=self, args=args, kwargs=kwargs)
        state, r = states.FAILURE, None
        try:
            try:
                r = self.fn(self, *args, **kwargs) if self.bind else self.fn(*args, **kwargs)
                if inspect.isawaitable(r):
                    r = run_coroutine(_awaited(r))
                state = states.SUCCESS
                sig.task_success.send(sender=self, result=r)
            except Retry as e:
                state = states.RETRY
                sig.task_retry.send(sender=self, request=req, reason=e.error, einfo=None)
                raise
            except Reject:
                raise
            except Ignore:
                state = "IGNORED"
                return None  # acked without a result
            except Exception as e:  # a task failure, or a retry it asked for
                if not (self.autoretry_for and isinstance(e, self.autoretry_for)):
                    sig.task_failure.send(sender=self, task_id=req.id, exception=e, args=args,
                                          kwargs=kwargs, traceback=e.__traceback__, einfo=None)
                if self.autoretry_for and isinstance(e, self.autoretry_for):
                    try:
                        kw = dict(self.retry_kwargs)
                        if self.retry_backoff and "countdown" not in kw:
                            kw["countdown"] = self._backoff(req.retries)
                        self.retry(exc=e, **kw)
                    except Retry as rt:
                        state = states.RETRY
                        sig.task_retry.send(sender=self, request=req, reason=rt.error, einfo=None)
                        raise
                    except Exception as e2:
                        sig.task_failure.send(sender=self, task_id=req.id, exception=e2, args=args,
                                              kwargs=kwargs, traceback=e2.__traceback__, einfo=None)
                        raise Reject(_describe(e2)) from e2
                if self.autoretry:
                    raise
                raise Reject(_describe(e)) from e
        finally:
            stack.pop()
            sig.task_postrun.send(sender=self, task_id=req.id, task=self, args=args, kwargs=kwargs,
                                  retval=r, state=state)
        if self.ignore_result:
            return None
        # Wrapped, so a task returning None still leaves a result behind. A value JSON
        # cannot carry fails the task, as Celery's JSON result serializer does (EncodeError),
        # rather than reaching get() as its str().
        try:
            return json.dumps({"value": r}, separators=(",", ":"), default=_celery_default).encode()
        except (TypeError, ValueError) as e:
            raise Reject(f"EncodeError: the task's return value is not JSON-serialisable: {e}") from e

    def _backoff(self, retries: int) -> float:
        """Celery's exponential backoff: factor x 2^retries, capped, with full jitter."""
        factor = 1 if self.retry_backoff is True else int(self.retry_backoff)
        countdown: float = min(self.retry_backoff_max, factor * (2 ** retries))
        if self.retry_jitter:
            countdown = random.randrange(int(countdown) + 1)
        return max(0, countdown)

    def retry(self, args: Any = None, kwargs: Any = None, exc: Optional[BaseException] = None,
              throw: bool = True, eta: Any = None, countdown: Optional[Duration] = None,
              max_retries: Optional[int] = None, **options: Any) -> Retry:
        """Asks for this run to be retried after ``countdown`` seconds (or at ``eta``;
        default ``default_retry_delay``). Past ``max_retries`` it raises ``exc`` (or
        MaxRetriesExceededError) and the task fails. Raises Retry (``raise self.retry(...)``
        reads as in Celery)."""
        if args is not None or kwargs is not None:
            raise NotSupported("retry(args=, kwargs=): a retry re-runs the same call")
        if options:
            raise NotSupported(f"retry() options {sorted(options)} are not supported")
        req = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and req.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{req.id}] args:{req.args} kwargs:{req.kwargs}")
        if countdown is None and eta is not None:
            countdown = max(0.0, (_when_ns(eta, "eta") - time.time_ns()) / 1e9)
        if countdown is None:
            countdown = self.default_retry_delay
        why = f"Retry in {countdown:g}s" + (f": {_describe(exc)}" if exc is not None else "")
        err = Retry(delay=countdown, error=why[:250])
        if throw:
            raise err
        return err

    # -- sending -----------------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        """Sends the task with these arguments; returns a handle to its result."""
        return self.apply_async(args, kwargs)

    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        """A signature: this task with arguments, to send later or to give to
        ``add_periodic_task`` (chains, groups and chords are not supported)."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> "Signature":
        """An immutable signature: arguments given when sending are not added."""
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args: Optional[Sequence[Any]] = None, kwargs: Optional[Dict[str, Any]] = None,
                  **options: Any) -> "Signature":
        return Signature(self, args or (), kwargs or {}, options)

    def _check_arguments(self, args: Optional[Sequence[Any]], kwargs: Optional[Dict[str, Any]]) -> None:
        """TypeError when the task could not be called with these arguments (a bound
        task's first parameter is the task itself)."""
        try:
            sig = inspect.signature(self.fn)
        except (TypeError, ValueError):
            return  # a callable without a signature: nothing to check
        params = list(sig.parameters.values())
        if self.bind and params:
            sig = sig.replace(parameters=params[1:])
        if not isinstance(args, (list, tuple)) and args is not None:
            return  # send_task says what is wrong with it
        try:
            sig.bind(*(args or ()), **(kwargs or {}))
        except TypeError as e:
            raise TypeError(f"{getattr(self.fn, '__name__', self.name)}() {e}") from None

    def apply_async(self, args: Optional[Sequence[Any]] = None, kwargs: Optional[Dict[str, Any]] = None,
                    **options: Any) -> "AsyncResult":
        """Sends the task: one durable append. ``countdown`` (seconds) or ``eta``
        (datetime; naive = UTC) hold it back until then; ``expires`` (seconds or datetime):
        a task not started by then is revoked; ``priority`` (0-255, higher runs first among
        the events a worker has fetched); ``queue`` (a topic) or ``routing_key`` (matched
        against the app's queue bindings, else the queue of that name); ``task_id``: the
        id, also an idempotency key (sending it twice inside the dedup window runs it
        once). Options engram cannot honour (``link``, ``exchange`` ...) raise
        NotSupported; unknown ones TypeError. Arguments that do not fit the function's
        signature raise TypeError here, as Celery's ``typing`` (on by default) does."""
        if self.typing:
            self._check_arguments(args, kwargs)
        return send_task(self.app, self.name, args, kwargs, _queue=self.queue,
                         _priority=self.priority, _expires=self.expires, **options)

class Signature:
    """Celery's ``task.s(*args, **kwargs)``: a task name with arguments and sending
    options. ``delay``/``apply_async`` send it (arguments given then come first, as in
    Celery); chains, groups and chords (``|``) raise NotSupported."""

    def __init__(self, task: Union["Task", str], args: Sequence[Any] = (),
                 kwargs: Optional[Dict[str, Any]] = None, options: Optional[Dict[str, Any]] = None,
                 immutable: bool = False, app: Optional["App"] = None) -> None:
        self.task = task if isinstance(task, Task) else None
        self.name: str = task.name if isinstance(task, Task) else str(_str(task, "task name"))
        self.app = task.app if isinstance(task, Task) else app
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable

    def clone(self, args: Optional[Sequence[Any]] = None, kwargs: Optional[Dict[str, Any]] = None,
              **options: Any) -> "Signature":
        if self.immutable:
            args, kwargs = (), {}
        return Signature(self.task or self.name, tuple(args or ()) + self.args,
                         {**self.kwargs, **(kwargs or {})}, {**self.options, **options},
                         self.immutable, self.app)

    def set(self, **options: Any) -> "Signature":
        self.options.update(options)
        return self

    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Optional[Sequence[Any]] = None,
                    kwargs: Optional[Dict[str, Any]] = None, **options: Any) -> "AsyncResult":
        s = self.clone(args, kwargs, **options)
        if self.task is not None:
            return self.task.apply_async(s.args, s.kwargs, **s.options)
        if self.app is None:
            raise InvalidArgument(f"signature {self.name}: no app to send it with")
        return send_task(self.app, self.name, s.args, s.kwargs, **s.options)

    def __or__(self, other: Any) -> Any:
        raise NotSupported("chains, groups and chords (canvas) are not supported; send the "
                           "next task from the task itself")

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


class TaskMessage(NamedTuple):
    """What sending a task appends: the event :func:`send_task` writes (and a beat
    schedule's fire repeats)."""

    topic: str
    type: str
    body: Dict[str, Any]
    headers: Dict[str, str]
    deliver_at: Optional[float]  # epoch seconds, None = at once
    idempotency_key: Optional[str]


def send_task(app: "App", name: str, args: Optional[Sequence[Any]] = None,
              kwargs: Optional[Dict[str, Any]] = None, **options: Any) -> "AsyncResult":
    """Sends task ``name`` (registered here or only on the workers): one durable append,
    with the options of :meth:`Task.apply_async`; ``_queue``, ``_priority`` and
    ``_expires`` are the task's defaults."""
    m = task_message(app, name, args, kwargs, **options)
    cls = getattr(app, "result_class", None) or AsyncResult
    log = app.log
    if getattr(app, "confirm_publish", True):
        off = log.append(m.topic, m.type, m.body, deliver_at=m.deliver_at,
                         idempotency_key=m.idempotency_key, headers=m.headers)
        return cls(Group(log, m.topic, app.group_name), off, app=app, task_id=m.idempotency_key)
    # Pipelined: queued on the handle, sent in batches with the tasks around it (still one
    # append each); the result learns its offset when the append is acknowledged.
    sent = _Sent()
    log.append_async(m.topic, m.type, m.body, deliver_at=m.deliver_at,
                     idempotency_key=m.idempotency_key, headers=m.headers, on_done=sent)
    r = cls(Group(log, m.topic, app.group_name), 0, app=app, task_id=m.idempotency_key)
    r._sent = sent
    return r


class _Sent:
    """The outcome of a pipelined send, filled in by the append's callback."""

    __slots__ = ("code", "offset")

    def __init__(self) -> None:
        self.code: Optional[int] = None  # None until acknowledged; 0 = durable
        self.offset = 0

    def __call__(self, code: int, offset: int, duplicate: bool) -> None:
        self.code, self.offset = code, offset


def task_message(app: "App", name: str, args: Optional[Sequence[Any]] = None,
                 kwargs: Optional[Dict[str, Any]] = None, *, _queue: Optional[str] = None,
                 _priority: Optional[int] = None, _expires: Any = None,
                 countdown: Optional[Duration] = None, eta: Any = None, expires: Any = None,
                 priority: Optional[int] = None, queue: Any = None,
                 routing_key: Optional[str] = None, task_id: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None, ignore_result: Optional[bool] = None,
                 **options: Any) -> TaskMessage:
    """The event sending task ``name`` with these :meth:`Task.apply_async` options
    appends (checked; nothing is written)."""
    for k, v in options.items():
        if k in ("retry", "retry_policy", "add_to_parent", "serializer", "delivery_mode"):
            if k == "serializer" and v not in (None, "json"):
                raise NotSupported(f"serializer {v!r}: tasks are JSON only")
            if k == "delivery_mode" and v not in (None, 2, "persistent"):
                raise NotSupported("delivery_mode: every engram event is persistent")
            continue  # publishing is one durable append: nothing to retry or declare
        if k in ("link", "link_error", "chain", "chord", "group_id", "exchange", "exchange_type",
                 "compression", "shadow", "time_limit", "soft_time_limit", "connection",
                 "producer", "publisher", "router", "declare", "mandatory", "immediate",
                 "reply_to", "stamped_headers"):
            if v is None:
                continue
            raise NotSupported(f"apply_async({k}=...) is not supported by engram's tasks")
        raise TypeError(f"apply_async() got an unexpected keyword argument {k!r}")
    if args is None:
        args = ()
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise TypeError("args must be a list or tuple")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("kwargs must be a dict")
    if queue is not None:
        topic = _str(getattr(queue, "name", queue), "queue")
    elif routing_key is not None:
        topic = queue_for_key(app, _str(routing_key, "routing_key"))
    else:
        topic = _queue or app.topic
    body = {"args": list(args), "kwargs": kwargs or {}, "task": name}
    try:  # dates, UUIDs, Decimals, bytes marked as Celery marks them
        body = json.loads(json.dumps(body, default=_celery_default))
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"task {name}: arguments are not JSON-serialisable: {e}") from None
    hdr: Dict[str, str] = {"task": _str(name, "name")}
    if headers:
        for k, v in headers.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("headers must map str to str")
            hdr[k] = v
    if countdown is not None and eta is not None:
        raise InvalidArgument("give countdown or eta, not both")
    deliver_at = None
    if countdown is not None:
        ms = _ms(countdown, "countdown")
        deliver_at = time.time() + ms / 1000 if ms else None
    elif eta is not None:
        deliver_at = _when_ns(eta, "eta") / 1e9
        hdr["eta"] = _dt.datetime.fromtimestamp(deliver_at, _dt.timezone.utc).isoformat()
    if deliver_at is not None and deliver_at <= time.time():
        deliver_at = None  # due already
    expires = _expires if expires is None else expires
    if expires is not None:
        if isinstance(expires, (int, float)) and not isinstance(expires, bool):
            ns = time.time_ns() + (_ms(expires, "expires") or 0) * 1_000_000
        else:
            ns = _when_ns(expires, "expires")
        hdr["expires"] = str(ns)
    priority = _priority if priority is None else priority
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError("priority must be an int")
        if not 0 <= priority <= 255:
            raise InvalidArgument(f"priority {priority}: use 0..255 (higher runs first)")
        hdr["priority"] = str(priority)
    if task_id is not None:
        _str(task_id, "task_id")
        hdr["task_id"] = task_id
    if ignore_result:
        raise NotSupported("apply_async(ignore_result=True): set ignore_result on the task")
    return TaskMessage(str(topic), _type_for(name), body, hdr, deliver_at, task_id)


def queue_for_key(app: "App", key: str) -> str:
    """The queue a routing key goes to: the first of the app's bindings it matches."""
    for pattern, q in app.bindings:
        if match_routing_key(pattern, key):
            return q
    if app.bindings:
        raise InvalidArgument(f"routing_key {key!r}: no queue is bound to it "
                              f"(bindings: {[p for p, _ in app.bindings]})")
    return key  # no bindings: as Celery's automatic queues, the key names the queue


async def _awaited(aw: Any) -> Any:
    return await aw


# Exceptions a failure is rebuilt as, by name, besides the built-in ones.
KNOWN_EXCEPTIONS: Dict[str, Type[BaseException]] = {
    "SoftTimeLimitExceeded": SoftTimeLimitExceeded, "TimeLimitExceeded": TimeLimitExceeded,
    "MaxRetriesExceededError": MaxRetriesExceededError,
}


def _loaded_class(parts: List[str]) -> Any:
    """The class "module.path.Class" (or "module.Outer.Inner") names, found in a module
    this process has already imported (as Celery finds a task's exception class: nothing
    is imported for it); None when there is none."""
    for i in range(len(parts) - 1, 0, -1):
        obj: Any = sys.modules.get(".".join(parts[:i]))
        if obj is None:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _exception_from(last_error: str) -> BaseException:
    """Rebuilds the exception a task failed with from "Type: message (where:line)"."""
    text = last_error
    for prefix in ("rejected: ", "rejected by handler: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    name, sep, msg = text.partition(": ")
    parts = name.split(".")
    if not sep or not all(p.isidentifier() for p in parts):
        return TaskFailed(last_error or "the task failed")
    if msg.endswith(")") and " (" in msg:
        msg = msg[:msg.rindex(" (")]
    cls = KNOWN_EXCEPTIONS.get(name) or getattr(builtins, name, None) or _loaded_class(parts)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = type(parts[-1], (Exception,), {"__module__": "engram.tasks.remote"})
    arg: Any = msg
    if issubclass(cls, KeyError) and msg:
        # str() of a KeyError is the repr of its key: give the key back, not its quotes.
        try:
            arg = ast.literal_eval(msg)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    try:
        exc: BaseException = cls(arg)
        return exc
    except Exception:
        return TaskFailed(last_error)


class EagerResult:
    """What ``Task.apply`` returns: the outcome of a run made here, now (Celery's
    ``EagerResult``): ``id``, ``state``/``status``, ``result``, ``traceback``, ``get()``."""

    def __init__(self, id: str, state: str, result: Any, traceback: Optional[str] = None) -> None:
        self.id, self.task_id = id, id
        self.state = self.status = state
        self.result = self.info = result
        self.traceback = traceback

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(self, timeout: Optional[Duration] = None, propagate: bool = True, **kw: Any) -> Any:
        """The return value; the task's exception is raised (or returned, with
        ``propagate=False``) when it failed."""
        if self.state == states.FAILURE and propagate:
            raise self.result
        return self.result

    wait = get

    def forget(self) -> None:
        pass  # nothing was stored

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"


class AsyncResult:
    """A handle on one sent task: ``id``, ``status``/``state`` (Celery's names),
    ``result``, ``get()``, ``ready()``; ``await result`` waits without blocking the loop."""

    def __init__(self, group: Group, offset: int, *, app: Optional["App"] = None,
                 task_id: Optional[str] = None) -> None:
        self.group = group
        self._offset = int(offset)
        self._sent: Optional[_Sent] = None  # a pipelined send not yet seen acknowledged
        self.app = app
        self._id = task_id
        self._revoked = False

    @property
    def offset(self) -> int:
        """The task's offset in its queue. For a pipelined send (``confirm_publish=False``)
        it waits until the send is acknowledged; a send that failed raises its error."""
        s = self._sent
        if s is not None:
            if s.code is None:
                try:
                    self.group.log.flush()
                except Error:
                    pass  # the first error of any pipelined append; this one's is in s
            if s.code is None:
                raise Error(f"task sent to {self.group.topic}: no acknowledgement (the log was closed?)")
            if s.code:
                raise error_for_code(s.code)(
                    f"task sent to {self.group.topic} was not appended: {_engram.strerror(s.code)}",
                    s.code)
            self._offset, self._sent = s.offset, None
        return self._offset

    @offset.setter
    def offset(self, value: int) -> None:
        self._offset, self._sent = int(value), None

    @classmethod
    def from_id(cls, app: "App", task_id: str) -> "AsyncResult":
        """The result of task ``task_id`` ("queue:offset", or a task_id given to
        apply_async) as ``app``'s workers see it; an id nobody sent reads PENDING."""
        where = _locate(app, task_id)
        if where is None:
            return cls(Group(app.log, app.topic, app.group_name), 0, app=app, task_id=task_id)
        return cls(Group(app.log, where[0], app.group_name), where[1], app=app, task_id=task_id)

    @property
    def id(self) -> str:
        return self._id or f"{self.group.topic}:{self.offset}"

    task_id = id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _meta(self) -> Tuple[str, Any]:
        """(state, value): the return value on SUCCESS, the last error otherwise."""
        if self.offset < 1:
            return states.PENDING, None
        try:
            st = self.group.status(self.offset)
        except NotFound:
            return states.PENDING, None  # no worker created the group yet, or unknown id
        if st.state == "in_flight":
            return states.STARTED, None
        if st.state == "retrying":
            return (states.RETRY, st.last_error) if st.attempt else (states.PENDING, None)
        if st.state == "dead":
            return states.FAILURE, st.last_error or "dead-lettered"
        if st.state == "done":
            if st.result is not None:
                try:
                    d = json.loads(st.result, object_hook=_celery_hook)
                except ValueError:
                    d = None
                if isinstance(d, dict) and "value" in d:
                    return states.SUCCESS, d["value"]
                if isinstance(d, dict) and "revoked" in d:
                    return states.REVOKED, d["revoked"]
            # Cancelled before it ran, or its result expired (or was ignored).
            if self._revoked or (self.app is not None and
                                 self.app.revoked(f"{self.group.topic}:{self.offset}") is not None):
                return states.REVOKED, "revoked"
            return states.PENDING, None
        return states.PENDING, None

    @property
    def status(self) -> str:
        """PENDING (also: unknown, or its result expired), STARTED, RETRY, SUCCESS,
        FAILURE or REVOKED."""
        return self._meta()[0]

    state = status

    def ready(self) -> bool:
        """True once the task succeeded, failed or was revoked."""
        return self.status in states.READY_STATES

    def successful(self) -> bool:
        return self.status == states.SUCCESS

    def failed(self) -> bool:
        return self.status == states.FAILURE

    def _failure(self, error: str) -> BaseException:
        return TaskFailed(f"task {self.id} failed: {error}")

    def _revocation(self) -> BaseException:
        return TaskRevoked(f"task {self.id} was revoked")

    def _timeout(self, t: float, state: str) -> BaseException:
        return Timeout(f"task {self.id} not finished after {t:g}s (state {state})")

    def get(self, timeout: Optional[Duration] = None, propagate: bool = True,
            interval: float = 0.005, no_ack: bool = True, follow_parents: bool = True,
            disable_sync_subtasks: bool = True, callback: Any = None, on_message: Any = None,
            on_interval: Any = None) -> Any:
        """Waits for the task and returns its return value. When it failed or was
        revoked, raises (TaskFailed / TaskRevoked here; Celery's exceptions in
        :mod:`engram.celery`) unless ``propagate=False``; after ``timeout`` seconds raises
        a Timeout."""
        if callback is not None or on_message is not None or on_interval is not None:
            raise NotSupported("get(callback=, on_message=, on_interval=) are not supported")
        t = _ms(timeout, "timeout")
        deadline = None if t is None else time.monotonic() + t / 1000
        pause = 0.001
        while True:
            state, value = self._meta()
            if state == states.SUCCESS:
                return value
            if state == states.FAILURE:
                if propagate:
                    raise self._failure(value)
                return self._failure(value)
            if state == states.REVOKED:
                if propagate:
                    raise self._revocation()
                return self._revocation()
            if t is not None and deadline is not None and time.monotonic() >= deadline:
                raise self._timeout(t / 1000, state)
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, max(interval, 0.001) * 10)

    wait = get

    def __await__(self) -> Any:
        return self._aget().__await__()

    async def _aget(self, timeout: Optional[float] = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while not self.ready():
            if deadline is not None and time.monotonic() >= deadline:
                raise self._timeout(timeout or 0, self.status)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        return self.get(timeout=0)

    @property
    def result(self) -> Any:
        """The return value on SUCCESS; the exception on FAILURE or REVOKED (as Celery);
        the exception being retried on RETRY; else None."""
        state, value = self._meta()
        if state == states.SUCCESS:
            return value
        if state == states.FAILURE:
            return _exception_from(value)
        if state == states.REVOKED:
            return self._revocation()
        if state == states.RETRY:
            return _exception_from(value.split(": ", 1)[1] if value and value.startswith("Retry in") else value or "")
        return None

    info = result

    @property
    def traceback(self) -> Optional[str]:
        state, value = self._meta()
        return value if state == states.FAILURE else None

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Optional[str] = None,
               wait: bool = False, timeout: Optional[float] = None) -> bool:
        """Revokes the task: one not started never runs; with ``terminate=True`` one that
        runs is stopped (``signal`` is not used: process mode kills the worker process,
        thread mode raises Terminated in the task). Either way it reads REVOKED. Returns
        True when it was cancelled before it started."""
        if connection is not None:
            raise NotSupported("revoke(connection=): the app's log is the connection")
        if self.app is None:
            try:
                self.group.cancel(self.offset)
            except Exception:
                return False
            self._revoked = True
            return True
        if self.offset < 1:
            return False
        done = self.app.revoke(f"{self.group.topic}:{self.offset}", terminate=terminate)
        self._revoked = True
        return done

    def forget(self) -> None:
        raise NotSupported("forget(): results are kept for the group's result_ttl")


_located: Dict[Tuple[int, str], Tuple[str, int]] = {}
_SCAN = 100_000  # events per queue searched for a task_id given to apply_async


def _locate(app: "App", task_id: str) -> Optional[Tuple[str, int]]:
    """(queue, offset) of a task id: "queue:offset" directly, else the event whose
    task_id header it is among the newest events of the app's queues."""
    _str(task_id, "task_id")
    try:
        topic, off = parse_event_id(task_id)
        return topic, off
    except InvalidArgument:
        pass
    key = (id(app), task_id)
    if key in _located:
        return _located[key]
    queues: List[str] = []
    for q in list(getattr(app, "queues", [])) + [app.topic] + [t.queue for t in app.tasks.values()]:
        if q not in queues:
            queues.append(q)
    for q in queues:
        try:
            head = app.log.topic(q).head_offset
        except NotFound:
            continue
        start = max(1, head - _SCAN + 1)
        for ev in app.log.scan(q, start):
            if ev.headers.get("task_id") == task_id:
                _located[key] = (q, ev.offset)
                return _located[key]
    return None
