"""Celery beat on engram: ``conf.beat_schedule`` and ``add_periodic_task`` entries become
engram schedules (stored in the log, fired exactly once per slot by ``engram serve`` or by
the embedded process holding the log's maintenance lease).

Each entry becomes the schedule of the same name (characters outside [A-Za-z0-9._-]
replaced, with a hash of the original name appended) whose every fire appends exactly
what ``task.apply_async(args, kwargs, **options)`` would: the task's queue (``options``'
``queue`` or ``routing_key``, else the task's queue or ``task_routes``, else the default
queue), its type, its JSON body and headers; a worker runs it like any task. The fire also
carries the headers ``periodic_task_name`` (the entry's name) and ``celery-beat`` (the
app's name: the mark of schedules an app declared).

``declare(app)`` writes them idempotently (creating their queues, as a first send
would): a worker of the app does it when it starts,
``python -m engram beat module:app`` too (and ``app.declare_schedules()`` on demand).
Unchanged entries are left alone; changed ones are replaced keeping their last fire; the
app's schedules no longer declared are removed (what Celery beat does with its schedule
file). A schedule of that name made otherwise (CLI, another app) is never taken over.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import numbers
import re
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from ..errors import AlreadyExists, NotSupported
from ..message import encode_payload
from ..tasks import task_message
from .exceptions import ImproperlyConfigured
from .schedules import crontab, schedule, solar

if TYPE_CHECKING:
    from . import Celery

__all__ = ["declare", "check_entry", "schedule_name", "entry_schedule", "MARK"]

logger = logging.getLogger("engram.celery.beat")

MARK = "celery-beat"  # header naming the app that declared a schedule
ENTRY = "periodic_task_name"  # header naming the beat entry a fire comes from
_ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Options that only make sense for one send (every fire would repeat them).
_ONE_SHOT = {"countdown": "a countdown", "eta": "an eta", "task_id": "a task id"}


def schedule_name(entry: str) -> str:
    """The engram schedule name of beat entry ``entry``: itself when it is a valid name,
    else its characters outside [A-Za-z0-9._-] replaced by "_" and 8 hex digits of its
    SHA-1 appended (so two entries never share a schedule)."""
    if _NAME.fullmatch(entry):
        return entry
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", entry).strip("_")[:180] or "entry"
    return f"{base}-{hashlib.sha1(entry.encode()).hexdigest()[:8]}"


def _every_seconds(s: Any, where: str) -> float:
    secs = s.total_seconds() if isinstance(s, _dt.timedelta) else float(s)
    if secs < 1:
        raise NotSupported(f"{where}: every {secs:g} s; engram schedules fire at most once a "
                           "second (1 s is the shortest interval)")
    return secs


def entry_schedule(s: Any, where: str) -> Dict[str, Any]:
    """``every`` or ``cron`` keywords for a beat ``schedule`` value (seconds, timedelta,
    :class:`schedule`, :class:`crontab`); NotSupported for what engram cannot honour."""
    if isinstance(s, solar):
        raise NotSupported(f"{where}: solar schedules (sunrise, sunset ...) are not supported by "
                           "engram; use a crontab at fixed times")
    if isinstance(s, crontab):
        if s.nowfun is not None:
            raise NotSupported(f"{where}: crontab(nowfun=...): schedules fire on the log's clock")
        try:
            return {"cron": s.cron()}
        except NotSupported as e:
            raise NotSupported(f"{where}: {e}") from None
    if isinstance(s, schedule):
        if type(s) is not schedule:
            raise NotSupported(f"{where}: custom schedule class {type(s).__name__} is not "
                               "supported; use a number of seconds, a timedelta or a crontab")
        if s.relative:
            raise NotSupported(f"{where}: schedule(relative=True) is not supported; engram "
                               "interval schedules fire on multiples of the interval since the "
                               "epoch (UTC)")
        if s.nowfun is not None:
            raise NotSupported(f"{where}: schedule(nowfun=...): schedules fire on the log's clock")
        if s.run_every is None:
            raise ImproperlyConfigured(f"{where}: schedule() without run_every")
        return {"every": _every_seconds(s.run_every, where)}
    if isinstance(s, _dt.timedelta) or (isinstance(s, numbers.Real) and not isinstance(s, bool)):
        return {"every": _every_seconds(s, where)}
    raise NotSupported(f"{where}: schedule {s!r} ({type(s).__name__}) is not supported; use "
                       "seconds, a timedelta, engram.celery.schedules.schedule or crontab")


def check_entry(name: Any, entry: Any) -> None:
    """Checks one beat entry without an app (what can be wrong whatever the routes)."""
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(f"beat_schedule: entry name {name!r} must be a non-empty str")
    where = f"beat_schedule[{name!r}]"
    if not isinstance(entry, Mapping):
        raise ImproperlyConfigured(f"{where}: expected a dict with 'task' and 'schedule'")
    for k in entry:
        if k not in _ENTRY_KEYS:
            raise ImproperlyConfigured(f"{where}: unknown key {k!r} (entries take "
                                       f"{', '.join(_ENTRY_KEYS)})")
    if not isinstance(entry.get("task"), str) or not entry["task"]:
        raise ImproperlyConfigured(f"{where}: 'task' must name a task")
    if "schedule" not in entry:
        raise ImproperlyConfigured(f"{where}: 'schedule' is missing")
    if entry.get("relative"):
        raise NotSupported(f"{where}: relative=True is not supported; engram interval schedules "
                           "fire on multiples of the interval since the epoch (UTC)")
    entry_schedule(entry["schedule"], where)
    args = entry.get("args") or ()
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise ImproperlyConfigured(f"{where}: 'args' must be a list or tuple")
    if not isinstance(entry.get("kwargs") or {}, Mapping):
        raise ImproperlyConfigured(f"{where}: 'kwargs' must be a dict")
    opts = entry.get("options") or {}
    if not isinstance(opts, Mapping):
        raise ImproperlyConfigured(f"{where}: 'options' must be a dict")
    for k, what in _ONE_SHOT.items():
        if opts.get(k) is not None:
            raise NotSupported(f"{where}: options {k}=: {what} applies to one send, not to "
                               "every fire of a schedule")
    exp = opts.get("expires")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, (numbers.Real, _dt.timedelta))):
        raise NotSupported(f"{where}: options expires={exp!r}: a periodic task expires a number "
                           "of seconds (or a timedelta) after each fire")


def _expires_ms(v: Any) -> Optional[int]:
    if v is None:
        return None
    secs = v.total_seconds() if isinstance(v, _dt.timedelta) else float(v)
    return max(0, int(round(secs * 1000)))


def entry_config(app: "Celery", name: str, entry: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """(schedule name, :meth:`engram.Log.set_schedule` keywords) for one beat entry of
    ``app``: the fire appends what ``apply_async`` of the entry would."""
    check_entry(name, entry)
    where = f"beat_schedule[{name!r}]"
    task = entry["task"]
    opts = dict(entry.get("options") or {})
    expires = opts.pop("expires", None)
    t = app.tasks.get(task)
    if t is not None:
        defaults: Dict[str, Any] = {"_queue": t.queue, "_priority": t.priority}
        if expires is None:
            expires = t.expires
    else:
        defaults = {"_queue": app._route_for(task) or app.app.topic,
                    "_priority": app.conf.get("task_default_priority")}
    if expires is not None and not isinstance(expires, (numbers.Real, _dt.timedelta)):
        raise NotSupported(f"{where}: task {task} expires={expires!r}: a periodic task expires a "
                           "number of seconds after each fire")
    try:
        m = task_message(app.app, task, list(entry.get("args") or ()), dict(entry.get("kwargs") or {}),
                         **defaults, **opts)
    except TypeError as e:
        raise ImproperlyConfigured(f"{where}: options: {e}") from None
    except NotSupported as e:
        raise NotSupported(f"{where}: {e}") from None
    headers = dict(m.headers)
    ms = _expires_ms(expires)
    if ms is not None:
        headers["expires_in_ms"] = str(ms)
    headers[ENTRY] = name
    headers[MARK] = app.main
    data, ct = encode_payload(m.body)
    kw: Dict[str, Any] = {"topic": m.topic, "type": m.type, "payload": data, "content_type": ct,
                          "headers": headers}
    timing = entry_schedule(entry["schedule"], where)
    if "cron" in timing:
        kw["tz"] = app.conf.get("timezone") or "UTC"
    kw.update(timing)
    return schedule_name(name), kw


def declare(app: "Celery") -> Dict[str, str]:
    """Writes ``app``'s beat schedule into its log; returns {schedule name: "added",
    "replaced", "unchanged" or "removed"}."""
    entries = dict(app.conf.get("beat_schedule") or {})
    configs: Dict[str, Tuple[str, Dict[str, Any]]] = {}
    for name, entry in entries.items():
        sname, kw = entry_config(app, name, entry)
        if sname in configs:
            raise ImproperlyConfigured(f"beat_schedule: entries {configs[sname][0]!r} and {name!r} "
                                       f"both map to schedule {sname!r}")
        configs[sname] = (name, kw)
    log = app.log
    try:
        existing = {s.name: s for s in log.schedules()}
    except NotSupported:
        if not configs:
            return {}  # nothing to declare on a log (or daemon) without schedules
        raise
    out: Dict[str, str] = {}
    for sname, (name, kw) in configs.items():
        old = existing.get(sname)
        if old is not None and old.headers.get(MARK) != app.main:
            raise AlreadyExists(f"beat_schedule[{name!r}]: schedule {sname!r} exists and was not "
                                f"declared by app {app.main!r}; remove it (engram schedule remove "
                                f"{sname}) or rename the entry")
        if log.create_topics:  # as apply_async would create the queue on its first send
            log.create_topic(kw["topic"], exist_ok=True)
        out[sname] = log.set_schedule(sname, **kw)
    for sname, s in existing.items():
        if s.headers.get(MARK) == app.main and sname not in configs:
            log.remove_schedule(sname)
            out[sname] = "removed"
    changed = {k: v for k, v in out.items() if v != "unchanged"}
    if changed:
        logger.info("beat schedule of %s: %s", app.main,
                    ", ".join(f"{k} {v}" for k, v in sorted(changed.items())))
    return out
