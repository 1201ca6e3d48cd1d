"""``python -m engram worker module:app`` — runs an App (or an EventManager, EventBus or
TractApp, which carry one) until SIGTERM/SIGINT."""
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


def load_app(spec: str) -> App:
    """Imports ``module:attribute`` and returns the App it names (or that it carries as
    ``.app``, or that calling it returns)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise SystemExit(f"engram worker: {spec!r}: expected module:attribute")
    sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise SystemExit(f"engram worker: cannot import {mod_name}: {e}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"engram worker: {mod_name} has no attribute {attr}")
    if not isinstance(obj, App) and isinstance(getattr(obj, "app", None), App):
        obj = obj.app
    if not isinstance(obj, App) and callable(obj) and _no_required_args(obj):
        obj = obj()  # a factory
    if not isinstance(obj, App) and isinstance(getattr(obj, "app", None), App):
        obj = obj.app
    if not isinstance(obj, App):
        raise SystemExit(f"engram worker: {spec} is not an engram.App")
    return obj


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engram", description="engram worker runtime")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="run the handlers of an App")
    w.add_argument("app", help="module:attribute naming an engram.App")
    w.add_argument("-c", "--concurrency", type=int, default=1, help="workers (default 1)")
    w.add_argument("-t", "--timeout", type=float, default=None, help="seconds per event")
    w.add_argument("-m", "--mode", choices=("thread", "process"), default="thread")
    w.add_argument("-g", "--grace", type=float, default=30.0,
                   help="seconds in-flight handlers may finish after SIGTERM (default 30)")
    w.add_argument("--consumer", default=None, help="consumer name (default host-pid-n)")
    w.add_argument("--prefetch", type=int, default=None,
                   help="events fetched ahead of the workers (default max(128, 4 x concurrency))")
    w.add_argument("--idle-timeout", type=float, default=None, help="exit after this long idle")
    w.add_argument("--max-events", type=int, default=None, help="exit after this many events")
    w.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = load_app(a.app)
    if a.consumer:
        app.consumer_name = a.consumer
    try:
        stats = app.run(a.concurrency, a.timeout, mode=a.mode, grace=a.grace,
                        idle_timeout=a.idle_timeout, max_events=a.max_events, batch=a.prefetch)
    except Exception as e:
        print(f"engram worker: {e}", file=sys.stderr)
        return 1
    logging.getLogger("engram.worker").info("stopped: %s", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
