"""A Celery-compatible app object over engram: change the imports and the constructor.

    # before                                    # after
    from celery import Celery                   from engram.celery import Celery
    from celery.result import AsyncResult       from engram.celery.result import AsyncResult
    from kombu import Exchange, Queue           from engram.celery import Exchange, Queue
    app = Celery("proj", broker="redis://...")  app = Celery("proj", broker="/var/lib/proj-log")

Tasks, ``delay``/``apply_async``, ``AsyncResult(task_id)``, ``revoke(terminate=True)``,
``task_routes``/``task_queues``, time limits, retries and beat (``conf.beat_schedule``,
``add_periodic_task``, ``crontab``: engram schedules, see :mod:`engram.celery.beat`) keep
Celery's names and meaning;
the broker and the result backend are one engram log (a directory, or ``engram serve`` at
"tcp://host:port"). Workers: ``python -m engram worker proj.celery_app:app -Q a,b -c 4``.
Settings engram cannot honour are refused with an error, never ignored; harmless ones
(log formats, result compression ...) are accepted with a warning. This is a thin layer:
the behaviour lives in :class:`engram.App` and :mod:`engram.tasks`.
"""
from __future__ import annotations

import fnmatch
import importlib
import logging
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union, cast

from ..app import App
from ..event import Event
from ..records import EventStatus
from ..log import Log
from ..message import _str
from ..errors import NotFound, NotSupported
from ..tasks import Task, _celery_loads, _warn_at_least_once, _warned, send_task
from . import beat, exceptions, signals, states
from .exceptions import ImproperlyConfigured
from .result import AsyncResult

__all__ = ["Celery", "shared_task", "current_app", "Queue", "Exchange", "AsyncResult", "Task",
           "states", "exceptions", "signals"]

logger = logging.getLogger("engram.celery")

_GROUP_MAX_DELIVER = 100  # attempts per task: retries are bounded by each task's max_retries
_NO_BROKER = ""  # the App's target until conf.broker_url names the log


class Exchange:
    """kombu's Exchange, for queue declarations (only its name is used)."""

    def __init__(self, name: str = "", type: str = "direct", **kw: Any) -> None:
        self.name, self.type = name, type

    def __repr__(self) -> str:
        return f"<Exchange {self.name}({self.type})>"


class Queue:
    """kombu's Queue: a name (the engram topic) and the routing key bound to it."""

    def __init__(self, name: str, exchange: Optional[Exchange] = None, routing_key: Optional[str] = None,
                 queue_arguments: Optional[Dict[str, Any]] = None, **kw: Any) -> None:
        _str(name, "queue name")
        self.name = name
        self.exchange = exchange
        self.routing_key = routing_key if routing_key is not None else name
        if queue_arguments and "x-max-priority" not in queue_arguments:
            raise NotSupported(f"Queue({name!r}): queue_arguments {sorted(queue_arguments)} are not supported")

    def __repr__(self) -> str:
        return f"<Queue {self.name} -> {self.routing_key}>"


# -- settings -------------------------------------------------------------------------------
# Honoured (see docs/migrating/celery.md for what each does here).
_HONOURED = {
    "broker_url", "result_backend", "task_default_queue", "task_routes", "task_queues",
    "task_soft_time_limit", "task_time_limit", "result_expires", "worker_prefetch_multiplier",
    "worker_concurrency", "worker_max_tasks_per_child", "task_default_priority",
    "task_acks_late", "task_reject_on_worker_lost", "task_track_started", "task_serializer",
    "result_serializer", "accept_content", "result_accept_content", "timezone", "enable_utc",
    "imports", "include", "task_ignore_result", "task_create_missing_queues",
    "task_default_rate_limit", "task_always_eager", "worker_pool", "task_default_retry_delay",
    "task_publish_retry", "task_publish_retry_policy", "task_default_delivery_mode",
    "broker_transport_options", "task_acks_on_failure_or_timeout", "beat_schedule",
    "beat_scheduler",
}
# Accepted and without effect: they tune Redis/AMQP, logging or Celery internals that have
# no counterpart (a warning says so once).
_HARMLESS = {
    "result_persistent", "result_compression", "result_extended", "worker_log_format",
    "worker_task_log_format", "worker_disable_rate_limits", "broker_connection_retry_on_startup",
    "broker_connection_retry", "broker_connection_max_retries", "broker_connection_timeout",
    "broker_heartbeat", "broker_pool_limit",
    "result_backend_transport_options", "task_default_exchange", "task_default_exchange_type",
    "task_default_routing_key", "worker_hijack_root_logger", "worker_redirect_stdouts",
    "worker_redirect_stdouts_level", "worker_send_task_events", "task_send_sent_event",
    "worker_lost_wait", "worker_proc_alive_timeout", "task_remote_tracebacks",
    "worker_cancel_long_running_tasks_on_connection_loss",
    "beat_schedule_filename", "beat_max_loop_interval", "beat_sync_every",
    "worker_enable_remote_control",
    "result_cache_max", "redis_max_connections", "redis_socket_timeout",
    "redis_socket_connect_timeout", "redis_retry_on_timeout", "broker_channel_error_retry",
    "task_compression", "worker_max_memory_per_child", "worker_state_db",
    "task_store_eager_result",
}
_REFUSED = {
    "task_annotations": "task annotations are not supported; give the options to @app.task",
}
_DEFAULTS: Dict[str, Any] = {
    "task_default_queue": "celery", "task_routes": None, "task_queues": None,
    "task_soft_time_limit": None, "task_time_limit": None, "result_expires": 86400,
    "worker_prefetch_multiplier": 4, "worker_concurrency": None, "worker_max_tasks_per_child": None,
    "task_default_priority": None, "task_acks_late": False, "task_serializer": "json",
    "result_serializer": "json", "accept_content": ["json"], "timezone": None, "enable_utc": True,
    "imports": (), "include": (), "task_ignore_result": False, "task_track_started": False,
    "task_always_eager": False, "beat_schedule": {},
}
# beat_scheduler values: Celery's own schedulers keep their state in a file, engram's in the
# log; django_celery_beat's also reads PeriodicTask rows, which engram does not.
_SCHEDULERS = {"celery.beat:PersistentScheduler", "celery.beat.PersistentScheduler",
               "celery.beat:Scheduler", "celery.beat.Scheduler"}
_DJANGO_SCHEDULERS = {"django_celery_beat.schedulers:DatabaseScheduler",
                      "django_celery_beat.schedulers.DatabaseScheduler"}


class Settings(Dict[str, Any]):
    """``app.conf``: Celery's lowercase settings, by item or attribute; ``update()``
    checks every key (unknown ones raise ImproperlyConfigured)."""

    def __init__(self, app: "Celery") -> None:
        super().__init__(_DEFAULTS)
        dict.__setitem__(self, "beat_schedule", {})  # its own: add_periodic_task fills it
        object.__setattr__(self, "_app", app)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        self._check(key, value)
        super().__setitem__(key, value)
        self._app._configure(key, value)

    def update(self, other: Any = (), **kw: Any) -> None:  # type: ignore[override]
        items = dict(other, **kw) if not hasattr(other, "keys") else {**other, **kw}
        for k, v in items.items():
            self[k] = v

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def _check(self, key: str, value: Any) -> None:
        if key in _REFUSED:
            raise NotSupported(f"{key}: {_REFUSED[key]}")
        if key in _HARMLESS:
            if key not in _warned:
                _warned.add(key)
                logger.warning("setting %s has no effect with engram (see docs/migrating/celery.md)", key)
            return
        if key not in _HONOURED:
            raise ImproperlyConfigured(f"setting {key!r} is unknown to engram's Celery layer; "
                                       f"remove it or see docs/migrating/celery.md")
        bad = None
        if key in ("task_serializer", "result_serializer") and value != "json":
            bad = "tasks and results are JSON"
        elif key in ("accept_content", "result_accept_content") and list(value or []) not in ([], ["json"], ["application/json"]):
            bad = "tasks and results are JSON"
        elif key == "task_always_eager" and value:
            bad = "no eager mode: run a worker (an embedded log needs no server)"
        elif key == "task_default_rate_limit":
            from ..tasks import parse_rate
            parse_rate(value)
        elif key in ("task_acks_late", "task_reject_on_worker_lost") and not value:
            _warn_at_least_once(key)
        elif key == "task_acks_on_failure_or_timeout" and not value:
            bad = "a failed task always goes to the dead-letter queue (redrive it to run it again)"
        elif key == "task_create_missing_queues" and not value:
            bad = "queues are topics, created when first used"
        elif key == "worker_pool" and value not in (None, "prefork", "threads", "solo", "processes"):
            bad = "pools: prefork (process mode), threads, solo"
        elif key == "enable_utc" and not value:
            bad = "times are UTC"
        elif key in ("broker_url", "result_backend") and value is not None:
            _check_target(key, value)
        elif key == "beat_schedule":
            if not isinstance(value, dict):
                raise ImproperlyConfigured("beat_schedule: expected a dict of entries")
            for name, entry in value.items():
                beat.check_entry(name, entry)
        elif key == "beat_scheduler":
            sched = value if isinstance(value, str) else (
                f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}")
            if sched in _DJANGO_SCHEDULERS:
                if key not in _warned:
                    _warned.add(key)
                    logger.warning("beat_scheduler %s: the beat_schedule entries become engram "
                                   "schedules in the log; PeriodicTask rows edited in the Django "
                                   "admin are not read (manage schedules with `engram schedule`)",
                                   sched)
            elif sched not in _SCHEDULERS:
                bad = ("engram's schedules live in the log and are fired by engram serve or the "
                       "maintenance lease holder; custom beat schedulers are not supported")
        elif key == "timezone" and value is not None:
            _check_timezone(value)
        if bad:
            raise NotSupported(f"{key}={value!r}: {bad}")


def _check_timezone(value: Any) -> None:
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"timezone={value!r}: give an IANA zone name, e.g. 'Europe/Paris'")
    try:
        import zoneinfo
        zoneinfo.ZoneInfo(value)
    except ImportError:
        return  # the log checks it when a crontab schedule is declared
    except Exception:
        raise ImproperlyConfigured(f"timezone={value!r}: unknown time zone (an IANA name such as "
                                   "'UTC' or 'Europe/Paris')") from None


def _check_target(what: str, value: Any) -> None:
    if isinstance(value, Log):
        return
    if not isinstance(value, (str, os.PathLike)):
        raise ImproperlyConfigured(f"{what}: expected a log directory, an engram endpoint or a Log")
    v = os.fspath(value)
    scheme = v.split("://", 1)[0] if "://" in v else ""
    if scheme and scheme not in ("tcp", "ipc"):
        raise ImproperlyConfigured(
            f"{what}={v!r}: engram replaces the {scheme} broker and result backend; give the "
            f"log directory (embedded) or the engram serve endpoint (tcp://host:port)")


# -- the app --------------------------------------------------------------------------------
_current: List["Celery"] = []
_shared: List[Tuple[Callable[..., Any], Dict[str, Any]]] = []


class _CurrentApp:
    """Celery's ``current_app``: the app made last. Its attributes are that app's
    (``current_app.send_task(...)``, ``current_app.conf``, ``current_app.tasks``);
    calling it returns the app itself."""

    def __call__(self) -> "Celery":
        if not _current:
            raise ImproperlyConfigured("no engram.celery.Celery app has been created yet")
        return _current[-1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self(), name)

    def __repr__(self) -> str:
        return f"<current_app: {_current[-1]!r}>" if _current else "<current_app: none yet>"


current_app = _CurrentApp()


def _native_app(app: Any) -> App:
    if app is None:
        app = current_app()
    if isinstance(app, Celery):
        return app.app
    if isinstance(app, App):
        return app
    raise TypeError("app must be an engram.celery.Celery or an engram.App")


class Celery:
    """Celery's app object on an engram log. ``broker`` is the log: a directory, an
    ``engram serve`` endpoint ("tcp://host:port") or an :class:`engram.Log`; ``backend``
    may be omitted (results live in the same log). ``group`` names the consumer group the
    app's workers share on each queue; ``durability`` applies to a directory it opens."""

    def __init__(self, main: Optional[str] = None, broker: Any = None, backend: Any = None, *,
                 include: Optional[Iterable[str]] = None, group: str = "celery",
                 durability: Optional[str] = None, set_as_current: bool = True,
                 config_source: Any = None, **kw: Any) -> None:
        for k in kw:
            if k in ("loader", "log", "control", "events", "amqp", "task_cls", "fixups",
                     "autofinalize", "namespace", "changes", "strict_typing"):
                raise NotSupported(f"Celery({k}=...) is not supported")
            raise TypeError(f"Celery() got an unexpected keyword argument {k!r}")
        broker = broker if broker is not None else os.environ.get("CELERY_BROKER_URL")
        if broker is not None:
            _check_target("broker", broker)
        if backend is not None and backend is not broker and backend != "engram" and not (
                isinstance(backend, (str, os.PathLike)) and isinstance(broker, (str, os.PathLike))
                and os.fspath(backend) == os.fspath(broker)):
            _check_target("backend", backend)
            raise ImproperlyConfigured("backend: results live in the broker's log; omit backend")
        self.main = main or "__main__"
        # Without a broker yet, conf.broker_url must give one before the log is used.
        self.app = App(broker if isinstance(broker, Log) else os.fspath(broker or _NO_BROKER), group=group,
                       topic="celery", durability=durability, max_deliver=_GROUP_MAX_DELIVER,
                       backoff=[0.001],  # a lost worker's task runs again at once, as in Celery
                       result_ttl=86400)
        self.app.result_class = AsyncResult  # type: ignore[attr-defined]
        self.app.route_for = self._route_for  # type: ignore[attr-defined]
        self.app.before_run.append(self._import_modules)
        self.app.before_run.append(lambda: signals.setup_logging.send(sender=None, loglevel=None))
        self.app.before_run.append(self.declare_schedules)
        self.app.serving.append(lambda: signals.worker_ready.send(sender=None))
        self.app.stopped.append(lambda: signals.worker_shutdown.send(sender=None))
        self.app.child_start.append(lambda: signals.worker_process_init.send(sender=None))
        self.on_after_configure = signals.Signal("on_after_configure")
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self._finalized = False
        self.tasks: Dict[str, Task] = {}
        self._explicit: Dict[str, Dict[str, Any]] = {}
        self._routes: List[Any] = []
        self.conf = Settings(self)
        self.conf["include"] = tuple(include or ())
        self._configure("task_default_queue", "celery")
        self._configure("worker_prefetch_multiplier", 4)
        if config_source is not None:
            self.config_from_object(config_source)
        self.control = Control(self)
        if set_as_current:
            _current.append(self)
        for fn, opts in _shared:
            self._register(fn, opts)

    def __repr__(self) -> str:
        return f"<engram.celery.Celery {self.main} on {self.app._target}>"

    @property
    def log(self) -> Log:
        """The engram log (broker and result backend)."""
        return self.app.log

    # -- configuration --------------------------------------------------------------------
    def _configure(self, key: str, value: Any) -> None:
        a = self.app
        if key == "task_default_queue":
            a.topic = _str(value, "task_default_queue")
            self._refresh_queues()
        elif key == "task_queues":
            qs = list(value or ())
            for q in qs:
                if not isinstance(q, Queue):
                    raise ImproperlyConfigured("task_queues: expected engram.celery.Queue objects")
            a.bindings = [(q.routing_key, q.name) for q in qs]
            self._refresh_queues()
        elif key == "task_routes":
            self._routes = list(value) if isinstance(value, (list, tuple)) else ([value] if value else [])
            self._refresh_queues()
        elif key == "broker_transport_options":
            vt = (value or {}).get("visibility_timeout")
            if vt is not None:
                a.group_config["ack_wait"] = vt  # Redis's redelivery timeout is the lease
            if "confirm_publish" in (value or {}):
                # kombu's: False sends without waiting for the broker (pipelined appends).
                a.confirm_publish = bool(value["confirm_publish"])
        elif key == "result_expires":
            secs = value.total_seconds() if hasattr(value, "total_seconds") else value
            if secs is not None:
                a.group_config["result_ttl"] = secs
        elif key in ("task_soft_time_limit", "task_time_limit"):
            for t in self.tasks.values():
                self._apply_limits(t)
        elif key == "worker_concurrency" and value:
            a.worker_defaults["concurrency"] = int(value)
        elif key == "worker_max_tasks_per_child":
            a.worker_defaults["max_tasks_per_child"] = value
        elif key == "worker_pool" and value:
            a.worker_defaults["mode"] = "process" if value in ("prefork", "processes") else "thread"
        elif key in ("worker_prefetch_multiplier", "worker_concurrency"):
            n = self.conf.get("worker_concurrency") or 1
            a.worker_defaults["batch"] = max(1, int(self.conf.get("worker_prefetch_multiplier") or 1) * n)
        elif key == "broker_url" and value is not None:
            target = value.path or value.endpoint if isinstance(value, Log) else os.fspath(value)
            if target != a._target:
                if a._target != _NO_BROKER and a._log is not None:
                    raise ImproperlyConfigured(f"broker_url: the app uses {a._target!r} already")
                if isinstance(value, Log):
                    a._log, a.open_options = value, dict(value.open_options)
                a._target = target
                if "://" in target:
                    a.open_options = {}
                else:
                    a.open_options.setdefault("durability", "sync")
        elif key == "result_backend" and value is not None and value not in ("engram", a._target):
            raise ImproperlyConfigured("result_backend: results live in the broker's log; omit it")
        if key == "worker_concurrency":
            n = value or 1
            a.worker_defaults["batch"] = max(1, int(self.conf.get("worker_prefetch_multiplier") or 1) * n)

    def _refresh_queues(self) -> None:
        """The queues a worker serves without -Q: the declared ones (task_queues) or the
        default queue, then every queue task_routes or a task names (Celery serves only
        the first set; a task routed elsewhere would wait for a worker started with -Q)."""
        qs = [name for _, name in self.app.bindings] if self.app.bindings else [self.app.topic]
        for r in getattr(self, "_routes", ()):
            for route in (r.values() if isinstance(r, dict) else ()):
                q = route if isinstance(route, str) else route.get("queue")
                if q is not None:
                    qs.append(getattr(q, "name", q))
        for t in getattr(self, "tasks", {}).values():
            if t._queue:
                qs.append(t._queue)
        self.app.queues = list(dict.fromkeys(qs))

    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: Optional[str] = None) -> None:
        """Reads settings from an object or "module[:attribute]"; with ``namespace``
        ("CELERY") only its NAMESPACE_* attributes, lowercased without the prefix."""
        if isinstance(obj, str):
            mod, _, attr = obj.partition(":")
            try:
                o: Any = importlib.import_module(mod)
            except ImportError:
                if silent:
                    return
                raise
            obj = getattr(o, attr) if attr else o
        prefix = f"{namespace}_" if namespace else ""
        for k in dir(obj):
            if k.startswith("_") or (prefix and not k.startswith(prefix)):
                continue
            key = k[len(prefix):].lower()
            if not prefix and not k.islower():
                continue
            if key in ("broker_url", "result_backend"):
                _check_target(key, getattr(obj, k))
                continue  # the constructor took the log
            self.conf[key] = getattr(obj, k)

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Imports ``<package>.<related_name>`` for each package when a worker starts (now
        with ``force``), as Celery does; a package without that module is skipped."""
        def discover() -> None:
            pkgs = packages() if callable(packages) else packages
            for pkg in pkgs or ():
                name = f"{pkg}.{related_name}"
                try:
                    importlib.import_module(name)
                except ModuleNotFoundError as e:
                    if e.name != name:
                        raise
        if force:
            discover()
        else:
            self.app.before_run.insert(0, discover)

    def _import_modules(self) -> None:
        for m in list(self.conf.get("imports") or ()) + list(self.conf.get("include") or ()):
            importlib.import_module(m)

    # -- tasks ----------------------------------------------------------------------------
    def task(self, *args: Any, **opts: Any) -> Any:
        """``@app.task`` / ``@app.task(name=..., bind=True, ...)`` with Celery's options."""
        if len(args) == 1 and callable(args[0]) and not opts:
            return self._register(args[0], {})
        if args:
            raise TypeError("app.task() takes options as keywords only")

        def deco(fn: Callable[..., Any]) -> Task:
            return self._register(fn, opts)
        return deco

    def _register(self, fn: Callable[..., Any], opts: Dict[str, Any]) -> Task:
        opts = dict(opts)
        opts.pop("shared", None)
        name = opts.get("name") or f"{fn.__module__}.{fn.__qualname__}"
        if name in self.tasks:
            return self.tasks[name]
        explicit = {k: opts[k] for k in ("soft_time_limit", "time_limit") if k in opts}
        for k, ck in (("soft_time_limit", "task_soft_time_limit"), ("time_limit", "task_time_limit")):
            if k not in opts and self.conf.get(ck):
                opts[k] = self.conf[ck]
        if "priority" not in opts and self.conf.get("task_default_priority") is not None:
            opts["priority"] = self.conf["task_default_priority"]
        if "rate_limit" not in opts and self.conf.get("task_default_rate_limit"):
            opts["rate_limit"] = self.conf["task_default_rate_limit"]
        if "ignore_result" not in opts and self.conf.get("task_ignore_result"):
            opts["ignore_result"] = True
        opts["name"] = name
        t = Task(self.app, fn, **opts)
        self.app.tasks[t.name] = t
        self.tasks[t.name] = t
        self._explicit[t.name] = explicit
        if t._queue:
            self._refresh_queues()
        return t

    def _apply_limits(self, t: Task) -> None:
        ex = self._explicit.get(t.name, {})
        soft = ex.get("soft_time_limit", self.conf.get("task_soft_time_limit"))
        hard = ex.get("time_limit", self.conf.get("task_time_limit"))
        for h in self.app.handlers:
            if h.fn == t._handle:
                h.soft_timeout = float(soft) if soft else None
                h.timeout = float(hard) if hard else None
        t.soft_time_limit, t.time_limit = soft, hard

    def _route_for(self, name: str) -> Optional[str]:
        for r in self._routes:
            if callable(r):
                got = r(name, (), {}, {}, task=self.tasks.get(name))
                if got:
                    return got if isinstance(got, str) else got.get("queue")
                continue
            for pattern, route in (r.items() if isinstance(r, dict) else ()):
                if pattern == name or fnmatch.fnmatchcase(name, pattern):
                    if isinstance(route, str):
                        return route
                    q = route.get("queue")
                    if q is None and route.get("routing_key"):
                        from ..tasks import queue_for_key
                        return queue_for_key(self.app, route["routing_key"])
                    queue: Optional[str] = getattr(q, "name", q)  # a kombu-like Queue, or its name
                    return queue
        return None

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> AsyncResult:
        """Sends a task by name (it need not be registered here, only on the workers)."""
        t = self.tasks.get(name)
        # Both make the app's result_class, which __init__ set to this module's AsyncResult.
        if t is not None:
            return cast(AsyncResult, t.apply_async(args, kwargs, **options))
        return cast(AsyncResult, send_task(self.app, name, args, kwargs,
                                           _queue=self._route_for(name) or self.app.topic,
                                           _priority=self.conf.get("task_default_priority"),
                                           **options))

    def AsyncResult(self, task_id: str, **kw: Any) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self, **kw)

    @property
    def Task(self) -> type:  # noqa: N802
        return Task

    # -- beat -----------------------------------------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (), kwargs: Any = (),
                          name: Optional[str] = None, **opts: Any) -> str:
        """Celery's ``add_periodic_task``: adds an entry to ``conf.beat_schedule`` (named
        ``name``, else the signature's repr) running ``sig`` (a task or ``task.s(...)``)
        every ``schedule`` (seconds, timedelta or crontab); returns its name. Usually
        called from an ``@app.on_after_configure.connect`` receiver."""
        from ..tasks import Signature
        kwargs = dict(kwargs) if kwargs else {}
        if isinstance(sig, Signature):
            sig = sig.clone(args, kwargs)
        elif isinstance(getattr(sig, "name", None), str):
            sig = Signature(sig.name, args, kwargs, app=self.app)
        else:
            raise TypeError("add_periodic_task: sig must be a task or a signature (task.s(...))")
        key = name or repr(sig)
        entry = {"schedule": schedule, "task": sig.name, "args": sig.args, "kwargs": sig.kwargs,
                 "options": {**sig.options, **opts}}
        beat.check_entry(key, entry)
        entries = self.conf["beat_schedule"]
        if name is None and key in entries:
            logger.warning("Periodic task key=%r shadowed a previous unnamed periodic task. Pass a "
                           "name kwarg to add_periodic_task to silence this warning.", key)
        entries[key] = entry
        return key

    def declare_schedules(self) -> Dict[str, str]:
        """Writes the beat schedule into the log as engram schedules (see
        :mod:`engram.celery.beat`); a worker of this app does it when it starts, and
        ``python -m engram beat``. Sends ``on_after_configure`` and ``on_after_finalize``
        first (once). Returns {schedule: "added" / "replaced" / "unchanged" / "removed"}."""
        if not self._finalized:
            self._finalized = True
            self.on_after_configure.send(sender=self, source=self.conf)
            self.on_after_finalize.send(sender=self)
        return beat.declare(self)

    # -- workers --------------------------------------------------------------------------
    def worker_main(self, argv: Optional[List[str]] = None) -> int:
        """Runs a worker: ``app.worker_main(["worker", "-Q", "a,b", "-c", "4"])``."""
        from ..__main__ import main
        import sys
        mod = sys.modules.get("__main__")
        spec = None
        for name, m in list(sys.modules.items()):
            if m is not None and getattr(m, "__dict__", None):
                for attr, v in list(vars(m).items()):
                    if v is self and not name.startswith("engram"):
                        spec = f"{name}:{attr}"
                        break
            if spec:
                break
        if spec is None:
            raise ImproperlyConfigured("worker_main: the app must be a module-level attribute")
        del mod
        args = list(argv or ["worker"])
        if args and args[0] == "worker":
            args = args[1:]
        return main(["worker", spec, *args])

    start = worker_main

    def close(self) -> None:
        self.app.close()

    def __enter__(self) -> "Celery":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- control and inspection -----------------------------------------------------------------
class Control:
    """``app.control``: revoke, purge and inspect."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def revoke(self, task_id: Union[str, List[str]], destination: Any = None, terminate: bool = False,
               signal: Optional[str] = None, **kw: Any) -> None:
        """Revokes tasks: not started ones never run; with ``terminate`` running ones stop."""
        for tid in [task_id] if isinstance(task_id, str) else list(task_id):
            self.app.AsyncResult(tid).revoke(terminate=terminate, signal=signal)

    def purge(self) -> int:
        """Discards every task waiting in the app's queues; returns how many."""
        n = 0
        for q in self.app.app.queues or [self.app.app.topic]:
            try:
                g = self.app.app.group_for(q)
                n += g.info().lag
                g.reset(to="latest")
            except NotFound:
                pass
        return n

    def inspect(self, destination: Any = None, timeout: float = 1.0, **kw: Any) -> "Inspect":
        return Inspect(self.app)

    def ping(self, *a: Any, **kw: Any) -> List[Dict[str, Dict[str, str]]]:
        return [{self._node(): {"ok": "pong"}}]

    def _node(self) -> str:
        return f"engram@{self.app.app.group_name}"


class Inspect:
    """What ``inspect()`` answers, from the log (one entry: the app's consumer group)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.node = f"engram@{app.app.group_name}"

    def _queues(self) -> List[str]:
        a = self.app.app
        return list(dict.fromkeys((a.queues or [a.topic]) + [t.queue for t in self.app.tasks.values()]))

    def _scan(self, want: Callable[[EventStatus, Event], bool],
              limit: int = 1000) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        a = self.app.app
        for q in self._queues():
            try:
                g = a.group_for(q)
                info = g.info()
            except NotFound:
                continue
            for i, ev in enumerate(a.log.scan(q, info.floor + 1)):
                if len(out) >= limit or i >= 10 * limit:
                    break
                st = g.status(ev.offset)
                if want(st, ev):
                    body = _celery_loads(ev.payload, ev.id) if ev.type.startswith("task.") else {}
                    out.append({"id": ev.headers.get("task_id") or ev.id, "name": ev.headers.get("task"),
                                "args": body.get("args"), "kwargs": body.get("kwargs"),
                                "delivery_info": {"routing_key": q, "priority": ev.headers.get("priority")},
                                "hostname": st.consumer, "worker_pid": None,
                                "eta": ev.headers.get("eta")})
        return out

    def active(self) -> Dict[str, List[Dict[str, Any]]]:
        return {self.node: self._scan(lambda st, ev: st.state == "in_flight")}

    def scheduled(self) -> Dict[str, List[Dict[str, Any]]]:
        return {self.node: [{"eta": d["eta"], "priority": d["delivery_info"]["priority"], "request": d}
                            for d in self._scan(lambda st, ev: self._waiting(st, ev, True))]}

    def reserved(self) -> Dict[str, List[Dict[str, Any]]]:
        return {self.node: self._scan(lambda st, ev: self._waiting(st, ev, False))}

    @staticmethod
    def _waiting(st: EventStatus, ev: Event, eta: bool) -> bool:
        """Not started yet: with an eta/countdown still ahead (scheduled) or due (reserved)."""
        if st.state not in ("pending", "retrying") or st.attempt:
            return False
        return (ev.deliver_at_ns > time.time_ns()) == eta

    def registered(self) -> Dict[str, List[str]]:
        return {self.node: sorted(self.app.tasks)}

    registered_tasks = registered

    def stats(self) -> Dict[str, Dict[str, Any]]:
        a = self.app.app
        qs: Dict[str, Any] = {}
        for q in self._queues():
            try:
                i = a.group_for(q).info()
            except NotFound:
                continue
            qs[q] = {"lag": i.lag, "in_flight": i.in_flight, "retrying": i.retrying, "dead": i.dead,
                     "acked": i.acked, "delivered": i.delivered, "redelivered": i.redelivered}
        return {self.node: {"broker": {"transport": "engram", "hostname": str(a._target)},
                            "queues": qs, "total": {q: v["acked"] for q, v in qs.items()}}}

    def active_queues(self) -> Dict[str, List[Dict[str, Any]]]:
        return {self.node: [{"name": q, "routing_key": q} for q in self._queues()]}

    def ping(self) -> Dict[str, Dict[str, str]]:
        return {self.node: {"ok": "pong"}}


# -- shared tasks ----------------------------------------------------------------------------
class _SharedTask:
    """A ``@shared_task``: the task of that name on the current app."""

    def __init__(self, fn: Callable[..., Any], opts: Dict[str, Any]) -> None:
        self._fn, self._opts = fn, opts
        self.name = opts.get("name") or f"{fn.__module__}.{fn.__qualname__}"
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__doc__ = fn.__doc__

    def _task(self) -> Task:
        app = current_app()
        return app.tasks.get(self.name) or app._register(self._fn, self._opts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task(), name)

    def __call__(self, *a: Any, **kw: Any) -> Any:
        return self._task()(*a, **kw)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"


def shared_task(*args: Any, **opts: Any) -> Any:
    """``@shared_task`` / ``@shared_task(bind=True, ...)``: registered with every app,
    those made before and after."""
    def deco(fn: Callable[..., Any]) -> _SharedTask:
        _shared.append((fn, opts))
        for app in _current:
            app._register(fn, opts)
        return _SharedTask(fn, opts)
    if len(args) == 1 and callable(args[0]) and not opts:
        return deco(args[0])
    return deco
