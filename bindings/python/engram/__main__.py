"""``python -m engram worker module:obj`` — runs a worker until SIGTERM/SIGINT.
``python -m engram beat module:app`` — declares a Celery app's beat schedule in the log and
fires due schedules until SIGTERM/SIGINT (``--once``: declare and exit). ``obj`` is an
:class:`App` (or what carries one as ``.app``: a Celery-compatible ``engram.celery.Celery``),
or any object with a ``run()`` method — an EventManager, EventBus or TractApp — or a
function without arguments returning one of these. Celery's worker flags are understood
for an App: ``-Q/--queues``, ``-c``, ``-P``, ``--max-tasks-per-child``, ``-l/--loglevel``,
``-n/--hostname``; an object that is not an App takes only ``-l``/``-v``."""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from typing import Any, List, Optional

from .app import App


def _no_required_args(fn: Any) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in sig.parameters.values())


def _worker(obj: Any) -> Any:
    """The App ``obj`` is or carries, else ``obj`` itself when it has a ``run()``; else None."""
    if isinstance(obj, App):
        return obj
    if isinstance(getattr(obj, "app", None), App):
        return obj.app
    if not isinstance(obj, type) and callable(getattr(obj, "run", None)):
        return obj
    return None


def _import(spec: str, cmd: str = "worker") -> Any:
    """The object ``module:attribute`` names."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise SystemExit(f"engram {cmd}: {spec!r}: expected module:attribute")
    sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise SystemExit(f"engram {cmd}: cannot import {mod_name}: {e}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"engram {cmd}: {mod_name} has no attribute {attr}")
    return obj


def load_app(spec: str) -> Any:
    """Imports ``module:attribute`` and returns the App it names (or that it carries as
    ``.app``), else the object with a ``run()`` it names; a function without required
    arguments is called first and its result taken the same way."""
    obj = _import(spec)
    worker = _worker(obj)
    if worker is None and callable(obj) and _no_required_args(obj):
        worker = _worker(obj())  # a factory
    if worker is None:
        raise SystemExit(f"engram worker: {spec} is neither an engram.App nor an object with "
                         "a run() method")
    return worker


# Options that configure an App's run(); an object that only has run() takes none of them.
_APP_ONLY = ("concurrency", "timeout", "mode", "grace", "consumer", "prefetch", "idle_timeout",
             "max_events", "queues", "pool", "max_tasks_per_child", "hostname", "durability")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engram", description="engram worker runtime")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="run the handlers of an App")
    w.add_argument("app", help="module:attribute naming an engram.App, or an object with run() "
                   "(EventManager, EventBus, TractApp)")
    w.add_argument("-c", "--concurrency", type=int, default=None,
                   help="workers (default, and 0: the app's worker_concurrency, else 1)")
    w.add_argument("-t", "--timeout", type=float, default=None, help="seconds per event")
    w.add_argument("-m", "--mode", choices=("thread", "process"), default=None,
                   help="thread (default) or process workers")
    w.add_argument("-g", "--grace", type=float, default=None,
                   help="seconds in-flight handlers may finish after SIGTERM (default 30)")
    w.add_argument("--consumer", default=None, help="consumer name (default host-pid-n)")
    w.add_argument("--prefetch", type=int, default=None,
                   help="events fetched ahead of the workers, at least 1 (default "
                   "max(128, 4 x concurrency))")
    w.add_argument("--idle-timeout", type=float, default=None, help="exit after this long idle")
    w.add_argument("--max-events", type=int, default=None, help="exit after this many events (at least 1)")
    w.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    w.add_argument("-Q", "--queues", default=None,
                   help="queues (topics) to serve, comma-separated, highest priority first")
    w.add_argument("-P", "--pool", choices=("threads", "prefork", "processes", "solo"), default=None,
                   help="Celery's pool names: prefork/processes = --mode process, "
                        "threads = --mode thread, solo = one thread")
    w.add_argument("--max-tasks-per-child", type=int, default=None,
                   help="process mode: replace a worker process after this many events "
                   "(default, and 0: the app's setting, else never)")
    w.add_argument("-l", "--loglevel", default=None, help="DEBUG, INFO, WARNING, ERROR")
    w.add_argument("-n", "--hostname", default=None, help="consumer name (as --consumer)")
    w.add_argument("--durability", choices=("sync", "nometasync", "async"), default=None,
                   help="how the worker opens a log directory (default: the App's, else sync)")
    b = sub.add_parser("beat", help="declare a Celery app's beat schedule and fire due schedules",
                       description="Writes the beat schedule of a Celery-compatible app "
                       "(engram.celery.Celery) into its log as engram schedules, then fires due "
                       "schedules until SIGTERM/SIGINT. Optional: `engram serve`, and with no "
                       "daemon the embedded process holding the log's maintenance lease, fire "
                       "them too, and a worker of the app declares them when it starts; each "
                       "slot fires exactly once however many of these run.")
    b.add_argument("app", help="module:attribute naming an engram.celery.Celery app")
    b.add_argument("--once", action="store_true", help="declare the schedule, print it and exit")
    b.add_argument("--max-interval", type=float, default=None,
                   help="seconds between two ticks at most (default: beat_max_loop_interval, "
                        "else 1)")
    b.add_argument("-S", "--scheduler", default=None,
                   help="Celery's scheduler class: only celery.beat:PersistentScheduler (the log "
                        "keeps the state)")
    b.add_argument("-s", "--schedule", default=None,
                   help="Celery's schedule file: not used (the log keeps the state)")
    b.add_argument("-l", "--loglevel", default=None, help="DEBUG, INFO, WARNING, ERROR")
    b.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    a = p.parse_args(argv)
    level = (a.loglevel or ("INFO" if a.verbose else "WARNING")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        p.error(f"--loglevel {a.loglevel!r}: use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=getattr(logging, level),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if a.cmd == "beat":
        return beat(a)
    app = load_app(a.app)
    if not isinstance(app, App):
        given = [n for n in _APP_ONLY if getattr(a, n) is not None]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            print(f"engram worker: {flags}: only for an engram.App; {a.app} is a "
                  f"{type(app).__name__}, which runs as it was configured", file=sys.stderr)
            return 2
        try:
            app.run()
        except Exception as e:
            print(f"engram worker: {e}", file=sys.stderr)
            return 1
        return 0
    d = app.worker_defaults
    if a.consumer or a.hostname:
        app.consumer_name = a.consumer or a.hostname
    mode = a.mode or d.get("mode", "thread")
    if a.pool is not None:
        mode = "process" if a.pool in ("prefork", "processes") else "thread"
    for flag, v in (("--prefetch", a.prefetch), ("--max-events", a.max_events)):
        if v is not None and v < 1:  # no "unlimited" to fall back on: say so, not run idle
            print(f"engram worker: {flag} {v}: give at least 1", file=sys.stderr)
            return 2
    concurrency = 1 if a.pool == "solo" else (a.concurrency or d.get("concurrency", 1))
    queues = [q.strip() for q in a.queues.split(",") if q.strip()] if a.queues else None
    try:
        if a.durability:
            app.set_durability(a.durability)
        stats = app.run(concurrency, a.timeout, mode=mode, grace=30.0 if a.grace is None else a.grace,
                        idle_timeout=a.idle_timeout, max_events=a.max_events,
                        batch=a.prefetch if a.prefetch is not None else d.get("batch"), queues=queues,
                        max_tasks_per_child=a.max_tasks_per_child or d.get("max_tasks_per_child"))
    except Exception as e:
        print(f"engram worker: {e}", file=sys.stderr)
        return 1
    logging.getLogger("engram.worker").info("stopped: %s", stats)
    return 0


def _describe_schedule(s: Any) -> str:
    when = f"every {s.every:g} s" if s.every else f"cron '{s.cron}' {s.tz}"
    nxt = s.next_slot.strftime("%Y-%m-%dT%H:%M:%SZ") if s.next_slot else "-"
    return f"{s.name}: {s.headers.get('task', s.type)} {when} -> {s.topic} (next {nxt})"


def beat(a: Any) -> int:
    """``python -m engram beat``: declare, print, then tick until a signal."""
    import signal
    import threading
    import time
    from .celery import Celery
    from .celery.beat import MARK
    obj = _import(a.app, "beat")
    if not isinstance(obj, Celery):
        print(f"engram beat: {a.app} is a {type(obj).__name__}, not an engram.celery.Celery app",
              file=sys.stderr)
        return 2
    if a.schedule:
        logging.getLogger("engram.beat").warning("--schedule %s: not used; the log keeps the "
                                                 "schedules' state", a.schedule)
    try:
        if a.scheduler:
            obj.conf.beat_scheduler = a.scheduler
        for hook in obj.app.before_run:  # imports the task modules, declares the schedule
            hook()
        mine = [s for s in obj.log.schedules() if s.headers.get(MARK) == obj.main]
    except Exception as e:
        print(f"engram beat: {e}", file=sys.stderr)
        return 1
    print(f"engram beat: {len(mine)} schedule(s) of {obj.main} in {obj.app._target}")
    for s in mine:
        print("  " + _describe_schedule(s))
    sys.stdout.flush()
    if a.once:
        return 0
    interval = a.max_interval or float(obj.conf.get("beat_max_loop_interval") or 1.0)
    interval = min(max(interval, 0.05), 1.0)
    stop = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    log = logging.getLogger("engram.beat")
    try:
        while not stop.is_set():
            try:
                r = obj.log.tick_schedules()
            except Exception as e:
                log.error("tick: %s", e)
                stop.wait(interval)
                continue
            if r["fired"]:
                log.info("fired %d", r["fired"])
            if r["failed"]:
                log.warning("%d schedule(s) could not fire: %s", r["failed"], r["first_error"])
            wait = interval
            if r["next_due_ns"]:
                wait = min(wait, max(0.01, (r["next_due_ns"] - time.time_ns()) / 1e9))
            stop.wait(wait)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    return 0


if __name__ == "__main__":
    sys.exit(main())
