# test_dropins.py — the four drop-in APIs behave as the in-process originals do for the
# scenarios their users rely on, with events stored durably and handled in workers.
import datetime as dt
import threading
import time

import pytest

import engram
from engram.tracts import HandlerContext, TractApp, on_event
from conftest import needs_groups

pytestmark = needs_groups

FAST = dict(ack_wait=0.5, backoff=[0.02], max_deliver=2)


# -- event manager --------------------------------------------------------------------------
def test_event_manager_emit_appends_and_listeners_run_in_the_worker(log):
    m = engram.EventManager(log, **FAST)
    got = []
    m.on("memory.saved", lambda data: got.append(("cb", data["memory_id"], threading.current_thread().name)))
    off = m.emit("memory.saved", {"memory_id": "m1", "text": "hi"})
    assert got == []  # not in the caller
    assert log.get("memory", off).key == "m1"  # memory_id becomes the ordering key
    m.run_until_idle(0.3)
    assert [g[:2] for g in got] == [("cb", "m1")] and got[0][2] != threading.current_thread().name


def test_event_manager_dispatchers_get_on_event_methods(log):
    class Audit:
        def __init__(self):
            self.seen = []

        def on_memory_saved(self, data):
            self.seen.append(("saved", data["memory_id"]))

        def on_memory_updated(self, data):
            self.seen.append(("updated", data["memory_id"]))

        def on_memory_deleted(self, data):
            self.seen.append(("deleted", data["memory_id"]))

        def on_memory_queried(self, data):
            self.seen.append(("queried", data["query"]))
    m = engram.EventManager(log, **FAST)
    a = Audit()
    m.register_dispatcher(a)
    m.register_dispatcher(a)  # once only
    m.on_memory_saved({"memory_id": "m1"})
    m.on_memory_updated({"memory_id": "m1"})
    m.on_memory_deleted({"memory_id": "m1"})
    m.on_memory_queried({"query": "what?"})
    m.run_until_idle(0.3)
    # each method has its own group: their relative order across events is not kept
    assert sorted(a.seen) == sorted([("saved", "m1"), ("updated", "m1"), ("deleted", "m1"), ("queried", "what?")])
    assert m.unregister_dispatcher(a) and not m.unregister_dispatcher(a)


def test_event_manager_off_removes_listeners_and_wildcards_match(log):
    m = engram.EventManager(log, **FAST)
    got = []
    cb = lambda data: got.append("specific")  # noqa: E731
    m.on("memory.saved", cb)
    m.on("memory.*", lambda data: got.append("prefix"))
    m.on("*", lambda event, data: got.append(f"all:{event}"))
    assert m.off("memory.saved", cb) and not m.off("memory.saved", cb)
    m.emit("memory.saved", {})
    m.run_until_idle(0.3)
    assert sorted(got) == ["all:memory.saved", "prefix"]


def test_event_manager_one_listener_failing_is_retried_alone(log):
    m = engram.EventManager(log, **FAST)
    got = []

    def bad(data):
        raise ValueError("listener bug")
    m.on("memory.saved", bad)
    m.on("memory.saved", lambda data: got.append(data["n"]))
    m.emit("memory.saved", {"n": 1})
    m.run_until_idle(0.4)
    assert got == [1]  # bad was retried (max_deliver=2) alone; the good listener ran once
    (bad_sub,) = [s for s in m.bus.subscriptions() if s.handler is bad]
    assert bad_sub.group.dlq()[0].offset == 1
    assert all(not s.group.dlq() for s in m.bus.subscriptions() if s is not bad_sub)


def test_event_manager_with_a_validator_appends_nothing_on_bad_input(log):
    m = engram.EventManager(log, validator=engram.MemoryValidator(resolve=False), **FAST)
    with pytest.raises(engram.ValidationError):
        m.emit("memory.saved", {"user_id": "u1", "url": "http://127.0.0.1/admin"})
    with pytest.raises(engram.ValidationError):
        m.emit("memory.saved", {"user_id": "bad id with spaces"})
    with pytest.raises(engram.NotFound):
        log.topic("memory")  # nothing was appended, not even the topic
    m.emit("memory.saved", {"user_id": "conv-1:Ann", "text": "fine"})


# -- @on_event -------------------------------------------------------------------------------
def test_on_event_handlers_are_discovered_from_a_package_and_wildcards_match(log):
    from engram import tracts
    before = list(tracts.registry)
    try:
        app = TractApp(log, **FAST)
        names = app.discover("tractpkg")
        assert "tractpkg.memory_handlers" in names
        from tractpkg.memory_handlers import CALLS
        CALLS.clear()
        app.emit("memory", "saved", {"id": 1})
        app.emit("memory", "deleted", {"id": 2})
        app.emit("user", "deleted", {"id": 3})
        app.emit("user", "created", {"id": 4})
        app.run_until_idle(0.3)
        assert sorted(CALLS) == sorted([
            ("memory.saved", 1, "memory", "saved"), ("memory.*", 1, "memory", "saved"),
            ("memory.*", 2, "memory", "deleted"), ("*.deleted", 2, "memory", "deleted"),
            ("*.deleted", 3, "user", "deleted")])
    finally:
        tracts.registry[:] = before


def test_on_event_context_carries_message_app_tract_event(log):
    app = TractApp(log, use_global_registry=False, **FAST)
    got = []

    @app.on_event("*", "*", app="notes")
    def h(ctx: HandlerContext):
        got.append((ctx.msg, ctx.message, ctx.app, ctx.tract, ctx.event, ctx.attempt))
    app.emit("agent.memory", "saved", {"x": 1})
    app.run_until_idle(0.3)
    assert got == [({"x": 1}, {"x": 1}, "notes", "agent.memory", "saved", 1)]


def test_on_event_per_handler_timeout_isolates_slow_handlers(log):
    app = TractApp(log, use_global_registry=False, ack_wait=5, backoff=[0.02], max_deliver=1)
    got = []

    @app.on_event("memory", "saved", timeout=0.2)
    async def slow(ctx):
        await __import__("asyncio").sleep(5)

    @app.on_event("memory", "saved", timeout=0.2)
    def slow_sync(ctx):
        time.sleep(1)

    @app.on_event("memory", "saved")
    def fast(ctx):
        got.append("fast")
    t0 = time.monotonic()
    app.emit("memory", "saved", {})
    app.run_until_idle(0.3)
    assert got == ["fast"] and time.monotonic() - t0 < 3
    for h in (slow, slow_sync):
        (sub,) = [s for s in app.bus.subscriptions() if s.handler is h]
        dead = sub.group.dlq()
        assert dead and "timed out" in dead[0].last_error


def test_on_event_rejects_bad_parts():
    with pytest.raises(engram.InvalidArgument):
        on_event("bad tract", "x")
    with pytest.raises(TypeError):
        on_event("memory", 5)


# -- pub/sub bus -----------------------------------------------------------------------------
def test_bus_glob_subscriptions_priority_order_and_source(log):
    # Subscribers run concurrently; with a one-slot pool, a published event waited on
    # gives the slot to the higher subscription priority first.
    bus = engram.EventBus(log, workers=1, **FAST)
    order = []
    bus.subscribe("my.custom.*", lambda e: order.append(("low", e.type, e.source)), priority=1)
    bus.subscribe("my.custom.*", lambda e: order.append(("high", e.type, e.source)), priority=10)
    sid = bus.subscribe("my.*", lambda e: order.append(("gone", e.type, e.source)))
    bus.subscribe("other.*", lambda e: order.append(("other", e.type, e.source)))
    assert bus.unsubscribe(sid) and not bus.unsubscribe(sid)
    bus.start()
    try:
        ev = bus.publish("my.custom.event", {"a": 1}, source="api", priority=engram.Priority.HIGH, wait=5)
    finally:
        bus.stop()
    assert ev.id and ev.offset == 1 and ev.priority == engram.Priority.HIGH
    assert order == [("high", "my.custom.event", "api"), ("low", "my.custom.event", "api")]


def test_bus_subscribers_get_the_event_with_priority_and_metadata(log):
    bus = engram.EventBus(log, **FAST)
    got = []

    @bus.subscribe("alerts.*")
    def on_alert(e):
        got.append(e)
    bus.publish("alerts.disk", {"pct": 95}, source="monitor", priority=engram.Priority.CRITICAL,
                metadata={"host": "db1"})
    bus.run_until_idle(0.3)
    (e,) = got
    assert (e.type, e.data, e.source, e.priority, e.metadata) == (
        "alerts.disk", {"pct": 95}, "monitor", 3, {"host": "db1"})
    assert isinstance(e.timestamp, dt.datetime)


def test_bus_history_by_type_and_time(log):
    bus = engram.EventBus(log, **FAST)
    bus.publish("a.one", {"n": 1}, source="s1")
    time.sleep(0.02)
    mid = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.02)
    bus.publish("a.two", {"n": 2}, source="s2")
    bus.publish("b.one", {"n": 3}, source="s1")
    assert [e.data["n"] for e in bus.history()] == [1, 2, 3]
    assert [e.data["n"] for e in bus.history("a.*")] == [1, 2]
    assert [e.data["n"] for e in bus.history(since=mid)] == [2, 3]
    assert [e.data["n"] for e in bus.history(until=mid)] == [1]
    assert [e.data["n"] for e in bus.history(source="s1")] == [1, 3]
    assert [e.data["n"] for e in bus.history(limit=2)] == [2, 3]
    assert engram.EventBus(log, topic="empty").history() == []


def test_bus_one_subscriber_failing_does_not_stop_the_others(log):
    bus = engram.EventBus(log, **FAST)
    got = []
    bus.subscribe("x.*", lambda e: 1 / 0, priority=5)
    bus.subscribe("x.*", lambda e: got.append(e.type))
    bus.publish("x.y")
    bus.run_until_idle(0.3)
    assert got and got[0] == "x.y"


def test_bus_refuses_bad_input_and_appends_nothing(log):
    with pytest.raises(engram.InvalidArgument):
        engram.EventBus(log, on_error="ignore")
    with pytest.raises(engram.InvalidArgument):
        engram.EventBus(log, workers=0)
    bus = engram.EventBus(log, topic="bad", **FAST)
    with pytest.raises(TypeError):
        bus.subscribe("x.*", "not callable")
    with pytest.raises(engram.InvalidArgument):
        bus.subscribe("has space", lambda e: None)
    with pytest.raises(engram.InvalidArgument):
        bus.subscribe("x.*", lambda e: None, on_error="sometimes")
    with pytest.raises(TypeError):
        bus.publish("x.y", {}, priority="high")
    with pytest.raises(TypeError):
        bus.publish("x.y", 42)  # not a JSON object, list, str or bytes
    with pytest.raises(engram.InvalidArgument):
        bus.publish("bad type!", {})
    assert bus.subscriptions() == []
    assert all(t.name != "bad" or t.count == 0 for t in log.topics())


# -- tasks -----------------------------------------------------------------------------------
def make_task_app(log, **kw):
    return engram.App(log, group="tasks", topic="tasks", **{**FAST, **kw})


def run_worker(app, seconds=0.4):
    return app.run(concurrency=2, idle_timeout=seconds, wait=0.1, install_signals=False)


def test_task_delay_and_get_return_the_handlers_value(log):
    app = make_task_app(log)

    @app.task
    def add(x, y):
        return x + y
    r = add.delay(2, 3)
    assert r.status == "PENDING" and r.id == "tasks:1"
    assert add(1, 1) == 2  # a direct call runs here
    th = threading.Thread(target=run_worker, args=(app,))
    th.start()
    assert r.get(timeout=10) == 5
    th.join()
    assert r.status == "SUCCESS" and r.successful() and r.ready() and r.result == 5


def test_task_returning_none_succeeds(log):
    app = make_task_app(log)

    @app.task(name="noop")
    def noop():
        return None
    r = noop.delay()
    run_worker(app)
    assert r.get(timeout=5) is None and r.status == "SUCCESS"


def test_a_failing_task_reports_failure_with_its_error(log):
    app = make_task_app(log)

    @app.task
    def boom():
        raise KeyError("missing memory")
    r = boom.delay()
    run_worker(app)
    assert r.status == "FAILURE" and r.failed()
    with pytest.raises(engram.TaskFailed, match="missing memory"):
        r.get(timeout=5)


def test_autoretry_tasks_are_retried(log):
    app = make_task_app(log, max_deliver=3)
    calls = []

    @app.task(autoretry=True)
    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError("transient")
        return "ok"
    r = flaky.delay()
    run_worker(app, 0.5)
    assert r.get(timeout=5) == "ok" and len(calls) == 2


def test_apply_async_countdown_and_queue(log):
    app = make_task_app(log)
    other = engram.App(log, group="tasks", topic="priority", **FAST)

    @app.task(name="mul")
    def mul(x, y):
        return x * y
    other.tasks["mul"] = mul
    other.add_handler(mul.type, mul._handle)
    r = mul.apply_async((3, 4), countdown=0.3)
    q = mul.apply_async((5, 6), queue="priority")
    assert q.id == "priority:1"
    t0 = time.monotonic()
    run_worker(app, 0.6)
    assert r.get(timeout=5) == 12
    assert time.monotonic() - t0 >= 0.3
    assert q.status == "PENDING"  # nobody consumes that queue yet
    run_worker(other)
    assert q.get(timeout=5) == 30


def test_get_times_out_when_no_worker_runs(log):
    app = make_task_app(log)

    @app.task
    def never():
        pass
    r = never.delay()
    with pytest.raises(engram.Timeout):
        r.get(timeout=0.1)


def test_task_id_makes_sending_idempotent(log):
    app = make_task_app(log)

    @app.task
    def once():
        return 1
    a = once.apply_async(task_id="req-42")
    b = once.apply_async(task_id="req-42")
    assert a.id == b.id


def test_task_arguments_must_be_json(log):
    app = make_task_app(log)

    @app.task
    def t(x):
        return x
    with pytest.raises(engram.InvalidArgument):
        t.delay(object())
    with pytest.raises(TypeError):
        t.apply_async("not a tuple")
