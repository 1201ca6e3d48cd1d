# test_seed_003.py — seed 003 (solstone's apps/events.py) ported by changing imports and
# giving start_dispatcher its log, embedded and served: the module's usage example and the
# seed's own tests (tests/test_app_events.py); plus the wrong results issue 10 lists:
# ctx.msg and ctx.app (the app's name), exact-first order, one message's handlers running
# concurrently on the pool, discovery importing only events.py and going on past a broken
# app, per-handler timeouts, one failure staying its own, and durability over a SIGKILL.
import os
import sys
import threading
import time

import pytest

from engram.compat import solstone
from engram.compat.solstone import (EventContext, _get_handlers, _handlers, clear_handlers,  # was: apps.events
                                    discover_handlers, dispatch, get_handler_count, on_event,
                                    start_dispatcher, stop_dispatcher)
from seedkit import (daemon, handoff_dir, needs_groups, run_script, run_until, started_in,  # noqa: F401 - fixtures
                     wait_until, where)

pytestmark = needs_groups


@pytest.fixture(autouse=True)
def clean_handlers():
    clear_handlers()
    yield
    clear_handlers()
    stop_dispatcher()


@pytest.fixture
def start(where):
    """start_dispatcher with the log: the one call that changes."""
    def go(workers=4, **kw):
        start_dispatcher(workers=workers, log=where.log, **where.kw(**kw))
    return go


# -- the module docstring's usage ------------------------------------------------------------------
def test_usage_example_observe_cortex_and_wildcard(start):
    seen = []

    @on_event("observe", "observed")
    def handle_observation(ctx):
        day = ctx.msg.get("day")
        segment = ctx.msg.get("segment")
        seen.append(("observed", day, segment, ctx.app, ctx.tract, ctx.event))

    @on_event("cortex", "finish")
    def handle_agent_done(ctx):
        seen.append(("finish", ctx.msg["agent"]))

    @on_event("*", "*")  # Wildcard - all events
    def log_all(ctx):
        seen.append(("all", ctx.tract, ctx.event))

    start()
    assert dispatch({"tract": "observe", "event": "observed", "day": "20250101", "segment": "s1"}) == 2
    assert dispatch({"tract": "cortex", "event": "finish", "agent": "a1"}) == 2
    assert dispatch({"tract": "cortex", "event": "start"}) == 1
    assert sorted(seen) == sorted([
        ("observed", "20250101", "s1", "unknown", "observe", "observed"), ("all", "observe", "observed"),
        ("finish", "a1"), ("all", "cortex", "finish"), ("all", "cortex", "start")])


# -- TestOnEventDecorator -------------------------------------------------------------------------
def test_registers_handler_and_returns_it_unchanged():
    @on_event("test", "event")
    def handler(ctx):
        pass
    assert ("test", "event") in _handlers and _handlers[("test", "event")][0][1] is handler

    def original(ctx):
        return "result"
    assert on_event("test", "event")(original) is original
    assert len(_handlers[("test", "event")]) == 2 and get_handler_count() == 2


def test_wildcard_registration():
    @on_event("*", "*")
    def catch_all(ctx):
        pass

    @on_event("observe", "*")
    def observe_all(ctx):
        pass

    @on_event("*", "finish")
    def all_finish(ctx):
        pass
    assert {("*", "*"), ("observe", "*"), ("*", "finish")} <= set(_handlers)


# -- TestGetHandlers --------------------------------------------------------------------------------
def test_get_handlers_matching():
    @on_event("observe", "observed")
    def exact(ctx):
        pass

    @on_event("observe", "*")
    def tract_wild(ctx):
        pass

    @on_event("*", "observed")
    def event_wild(ctx):
        pass

    @on_event("*", "*")
    def catch_all(ctx):
        pass
    assert [h for _, h in _get_handlers({"tract": "observe", "event": "observed"})] == [
        exact, tract_wild, event_wild, catch_all]
    assert [h for _, h in _get_handlers({"tract": "observe", "event": "detected"})] == [tract_wild, catch_all]
    assert [h for _, h in _get_handlers({"tract": "cortex", "event": "observed"})] == [event_wild, catch_all]
    assert [h for _, h in _get_handlers({"tract": "cortex", "event": "finish"})] == [catch_all]


# -- TestDispatch -------------------------------------------------------------------------------------
def test_dispatch_without_executor_returns_zero():
    @on_event("test", "event")
    def handler(ctx):
        pass
    assert dispatch({"tract": "test", "event": "event"}) == 0


def test_dispatch_calls_handler(start):
    called = threading.Event()
    received_ctx = {}

    @on_event("test", "event")
    def handler(ctx):
        received_ctx["msg"] = ctx.msg
        received_ctx["app"] = ctx.app
        received_ctx["tract"] = ctx.tract
        received_ctx["event"] = ctx.event
        called.set()

    start(workers=1)
    count = dispatch({"tract": "test", "event": "event", "data": "value"})
    assert count == 1
    assert called.wait(timeout=2.0)
    assert received_ctx["msg"]["data"] == "value"
    assert received_ctx["app"] == "unknown"  # the app's name (no app package here)
    assert received_ctx["tract"] == "test" and received_ctx["event"] == "event"


def test_dispatch_handles_exception(start, caplog):
    success_called = threading.Event()

    @on_event("test", "event")
    def failing_handler(ctx):
        raise ValueError("Test error")

    @on_event("test", "event")
    def success_handler(ctx):
        success_called.set()

    start(workers=2)
    assert dispatch({"tract": "test", "event": "event"}) == 2
    assert success_called.wait(timeout=2.0)
    assert "Test error" in caplog.text


def test_event_context_fields():
    ctx = EventContext(msg={"tract": "test", "event": "event", "data": "value"}, app="test_app",
                       tract="test", event="event")
    assert (ctx.msg["data"], ctx.app, ctx.tract, ctx.event) == ("value", "test_app", "test", "event")


# -- discovery ---------------------------------------------------------------------------------------
_pkg_n = iter(range(1, 1000))


@pytest.fixture
def apps_package(tmp_path):
    """A package like solstone's apps/: two apps with events.py, one whose events.py fails
    to import, one with only other modules, and a private one."""
    name = f"seedapps{next(_pkg_n)}"
    root = tmp_path / name
    (root / "alpha").mkdir(parents=True)
    (root / "beta").mkdir()
    (root / "broken").mkdir()
    (root / "plain").mkdir()
    (root / "_private").mkdir()
    (root / "__init__.py").write_text("")
    for d in ("alpha", "beta", "broken", "plain", "_private"):
        (root / d / "__init__.py").write_text("")
    reg = "from engram.compat.solstone import on_event\n"
    (root / "alpha" / "events.py").write_text(reg + "SEEN = []\n@on_event('observe', 'observed')\n"
                                              "def a(ctx):\n    SEEN.append(('alpha', ctx.app, ctx.msg['n']))\n")
    (root / "beta" / "events.py").write_text(reg + f"from {name}.alpha.events import SEEN\n"
                                             "@on_event('*', '*')\n"
                                             "def b(ctx):\n    SEEN.append(('beta', ctx.app, ctx.msg['n']))\n")
    (root / "broken" / "events.py").write_text("raise ImportError('broken app')\n")
    (root / "plain" / "models.py").write_text("raise RuntimeError('must not be imported')\n")
    (root / "alpha" / "views.py").write_text("raise RuntimeError('must not be imported')\n")
    (root / "_private" / "events.py").write_text("raise RuntimeError('must not be imported')\n")
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))
    for m in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[m]


def test_discover_imports_only_events_modules_and_goes_on_past_a_broken_app(apps_package, start, caplog):
    assert discover_handlers(apps_package) == 2
    assert "Failed to load events from app 'broken'" in caplog.text
    assert f"{apps_package}.alpha.views" not in sys.modules and f"{apps_package}.plain.models" not in sys.modules
    assert sorted(app for hs in _handlers.values() for app, _ in hs) == ["alpha", "beta"]
    start()
    assert dispatch({"tract": "observe", "event": "observed", "n": 1}) == 2
    seen = sys.modules[f"{apps_package}.alpha.events"].SEEN
    assert sorted(seen) == [("alpha", "alpha", 1), ("beta", "beta", 1)]


# -- wrong results of issue 10 --------------------------------------------------------------------
def test_handlers_run_exact_first_then_wildcards_on_a_one_thread_pool(start):
    order = []
    for tract, event in [("*", "*"), ("*", "observed"), ("observe", "*"), ("observe", "observed")]:
        on_event(tract, event)(lambda ctx, k=(tract, event): order.append(k))
    start(workers=1)
    assert dispatch({"tract": "observe", "event": "observed"}) == 4
    assert order == [("observe", "observed"), ("observe", "*"), ("*", "observed"), ("*", "*")]


def test_the_handlers_of_one_message_run_concurrently_on_the_pool(start):
    barrier = threading.Barrier(3, timeout=5)
    met = []

    @on_event("sync", "point")
    def one(ctx):
        met.append(barrier.wait())

    @on_event("sync", "*")
    def two(ctx):
        met.append(barrier.wait())

    @on_event("*", "*")
    def three(ctx):
        met.append(barrier.wait())

    start(workers=4)
    assert dispatch({"tract": "sync", "event": "point"}, timeout=5) == 3
    assert sorted(met) == [0, 1, 2]  # all three were inside wait() at once


def test_a_slow_handler_times_out_for_dispatch_and_finishes_later(start, caplog):
    release, done = threading.Event(), threading.Event()
    fast = []

    @on_event("slow", "op")
    def slow(ctx):
        release.wait(10)
        done.set()

    @on_event("slow", "*")
    def quick(ctx):
        fast.append(1)

    start(workers=4)
    assert dispatch({"tract": "slow", "event": "op"}, timeout=0.1) == 2
    assert not done.is_set()  # dispatch gave up waiting; the handler goes on
    assert "timed out" in caplog.text and fast == [1]
    release.set()
    assert done.wait(5)


def test_a_failing_handler_does_not_rerun_the_healthy_one(start):
    calls = []

    @on_event("x", "y")
    def bad(ctx):
        calls.append("bad")
        raise RuntimeError("boom")

    @on_event("x", "*")
    def good(ctx):
        calls.append("good")

    start(ack_wait=1, backoff=[0.01], max_deliver=3)
    dispatch({"tract": "x", "event": "y"})
    time.sleep(0.2)
    assert sorted(calls) == ["bad", "good"]


def test_async_handlers_run_and_keep_their_loop(start):
    import asyncio
    state = {"loops": set(), "n": 0}

    @on_event("a", "b")
    async def handler(ctx):
        await asyncio.sleep(0)
        state["loops"].add(asyncio.get_running_loop())
        state["n"] += 1

    start()
    for _ in range(3):
        dispatch({"tract": "a", "event": "b"})
    assert state["n"] == 3 and len(state["loops"]) == 1


KILL_SCRIPT = r"""
import os, time
from engram.compat.solstone import on_event, start_dispatcher, dispatch
out = os.environ["OUT"]
@on_event("observe", "observed")
def slow(ctx):
    open(os.path.join(out, "started-%d" % os.getpid()), "w").close()
    if os.environ["MODE"] == "first":
        time.sleep(60)
    with open(os.path.join(out, "done"), "a") as f:
        f.write(ctx.msg["segment"] + "\n")
start_dispatcher(workers=2, log=os.environ["LOG"], topic=os.environ["TOPIC"], ack_wait=1)
if os.environ["MODE"] == "first":
    dispatch({"tract": "observe", "event": "observed", "segment": "s9"}, timeout=60)
time.sleep(60)
"""


def test_a_message_whose_handler_was_sigkilled_is_handled_by_the_next_process(where, tmp_path):
    out, env = handoff_dir(where, tmp_path)
    assert run_until(KILL_SCRIPT, started_in(out), MODE="first", **env)
    assert run_until(KILL_SCRIPT, lambda: (out / "done").exists(), settle=0.3, MODE="second", **env)
    assert (out / "done").read_text() == "s9\n"


def test_native_tract_app_context_and_exact_first_order(where):
    # Issue 10 item 10 on engram.TractApp: ctx.msg exists, ctx.app is the app's name,
    # exact registrations start first.
    from engram.tracts import TractApp
    app = TractApp(where.log, workers=1, use_global_registry=False, **where.kw())
    try:
        order = []
        for tract, event in [("*", "*"), ("*", "seen"), ("obs", "*"), ("obs", "seen")]:
            app.on_event(tract, event, app="notes")(lambda ctx, k=(tract, event): order.append((k, ctx.app, ctx.msg)))
        app.start()
        app.emit("obs", "seen", {"n": 1}, wait=5)
        assert [o[0] for o in order] == [("obs", "seen"), ("obs", "*"), ("*", "seen"), ("*", "*")]
        assert all(o[1:] == ("notes", {"n": 1}) for o in order)
    finally:
        app.close()


def test_native_discover_imports_handler_modules_only_and_goes_on(tmp_path, caplog):
    from engram import tracts
    from engram.tracts import TractApp
    root = tmp_path / "nativeapps"
    for d in ("", "alpha", "broken"):
        (root / d).mkdir(exist_ok=True)
        (root / d / "__init__.py").write_text("")
    (root / "alpha" / "events.py").write_text(
        "from engram.tracts import on_event\n@on_event('obs', 'seen')\ndef h(ctx):\n    pass\n")
    (root / "alpha" / "views.py").write_text("raise RuntimeError('must not be imported')\n")
    (root / "broken" / "handlers.py").write_text("raise ImportError('broken app')\n")
    sys.path.insert(0, str(tmp_path))
    before = list(tracts.registry)
    try:
        app = TractApp(str(tmp_path / "log"))
        assert app.discover("nativeapps") == ["nativeapps.alpha.events"]
        assert "nativeapps.broken.handlers failed" in caplog.text and "nativeapps.alpha.views" not in sys.modules
        assert [(h.app, h.tract) for h in tracts.registry[len(before):]] == [("alpha", "obs")]
        app.close()
    finally:
        tracts.registry[:] = before
        sys.path.remove(str(tmp_path))


def test_a_handler_longer_than_ack_wait_runs_once(start):
    # The lease of a running handler is renewed: ack_wait only bounds how long the event
    # of a dead process waits.
    calls, stolen = [], []

    @on_event("long", "job")
    def long_job(ctx):
        calls.append(1)
        group = solstone.get_bus().subscriptions()[0].group
        for _ in range(5):
            time.sleep(0.2)
            stolen.extend(group.fetch("another-process", 1))  # gets it only if the lease lapsed

    start(ack_wait=0.3, max_deliver=5)
    assert dispatch({"tract": "long", "event": "job"}, timeout=10) == 1
    assert calls == [1] and stolen == []
    (sub,) = solstone.get_bus().subscriptions()
    info = sub.group.info()
    assert info.redelivered == 0 and info.acked == 1
