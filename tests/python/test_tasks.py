# test_tasks.py — the worker runtime and the task layer under tasks that run long, are
# async, are routed, delayed, retried and revoked: each test pins one wrong result that the
# runtime once gave (issue 10) and the behaviour that replaced it.
import asyncio
import datetime as dt
import os
import threading
import time

import pytest

import engram
from conftest import wait_until


FAST = dict(ack_wait=1.0, backoff=[0.05], max_deliver=5)


def task_app(log, **kw):
    return engram.App(log, group="tasks", topic="tasks", **{**FAST, **kw})


def run(app, seconds=0.5, **kw):
    kw.setdefault("concurrency", 2)
    return app.run(idle_timeout=seconds, wait=0.1, install_signals=False, **kw)


def in_thread(fn, *a, **kw):
    t = threading.Thread(target=fn, args=a, kwargs=kw, daemon=True)
    t.start()
    return t


# -- 1: a task longer than ack_wait ----------------------------------------------------------
def test_a_task_longer_than_ack_wait_runs_once_while_its_lease_is_kept_alive(log):
    app = task_app(log, ack_wait=0.4)
    runs = []

    @app.task
    def slow():
        runs.append(time.monotonic())
        time.sleep(1.3)  # more than three lease lengths
        return "done"
    r = slow.delay()
    run(app, 0.6, concurrency=3)
    assert len(runs) == 1
    assert r.status == "SUCCESS" and r.get(timeout=1) == "done"


def test_a_long_task_in_a_worker_process_runs_once_too(tmp_path):
    path, out = str(tmp_path / "log"), str(tmp_path / "runs")
    app = engram.App(path, group="tasks", topic="tasks", **{**FAST, "ack_wait": 0.4})

    @app.task(name="slow")
    def slow():
        with open(out, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.3)
        return "done"
    r = slow.delay()
    app.run(2, mode="process", idle_timeout=0.6, wait=0.1, install_signals=False)
    assert len(open(out).read().split()) == 1
    assert r.get(timeout=1) == "done"
    app.close()


def test_a_hung_handler_stops_being_extended_at_its_hard_time_limit(log):
    app = task_app(log, ack_wait=0.3, max_deliver=1)
    runs = []

    @app.task(time_limit=0.6)
    def hang():
        runs.append(1)
        for _ in range(30):
            time.sleep(0.05)
    r = hang.delay()
    run(app, 0.8)
    assert runs == [1]
    assert r.status == "FAILURE" and "TimeLimitExceeded" in r.group.status(r.offset).last_error


# -- 2 and 4: async tasks and handlers share a persistent loop --------------------------------
def test_an_async_task_runs_its_coroutine_and_returns_its_value(log):
    app = task_app(log)

    @app.task
    async def double(x):
        await asyncio.sleep(0.01)
        return 2 * x
    r = double.delay(21)
    run(app)
    assert r.get(timeout=1) == 42


def test_async_tasks_keep_state_bound_to_their_loop_across_calls(log):
    app = task_app(log)
    state = {}

    @app.task
    async def use_client():
        loop = asyncio.get_running_loop()
        if "client" not in state:
            state["client"] = (loop, asyncio.Lock())  # a component bound to the first loop
        bound, lock = state["client"]
        async with lock:
            await asyncio.sleep(0)
        return bound is loop
    rs = [use_client.delay() for _ in range(4)]
    run(app, concurrency=1)
    assert [r.get(timeout=1) for r in rs] == [True] * 4


def test_async_handlers_of_one_worker_share_one_persistent_loop(log):
    app = engram.App(log, group="g", topic="t", **FAST)
    loops = []
    q = {}

    @app.on("x.*")
    async def h(ev):
        if "q" not in q:
            q["q"] = asyncio.Queue()  # set up once; bound to the loop from then on
        await q["q"].put(ev.offset)
        loops.append(id(asyncio.get_running_loop()))
        return await q["q"].get()
    for i in range(3):
        log.append("t", "x.y", {"i": i})
    stats = run(app, concurrency=1)
    assert stats.handled == 3 and stats.failed == 0
    assert len(set(loops)) == 1


# -- 5: apply_async options are honoured or refused -------------------------------------------
def test_apply_async_eta_delays_the_task(log):
    app = task_app(log)
    ran = []

    @app.task
    def stamp():
        ran.append(time.time())
    eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.6)
    r = stamp.apply_async(eta=eta)
    t0 = time.time()
    run(app, 1.0)
    assert ran and ran[0] >= eta.timestamp() - 0.01 and ran[0] - t0 > 0.4
    assert r.status == "SUCCESS"


def test_apply_async_expires_revokes_a_task_not_started_in_time(log):
    app = task_app(log)
    ran = []

    @app.task
    def late():
        ran.append(1)
    r = late.apply_async(expires=0.05)
    time.sleep(0.15)
    run(app)
    assert ran == [] and r.status == "REVOKED"


def test_apply_async_priority_runs_higher_priorities_first(log):
    app = task_app(log)
    order = []

    @app.task
    def job(n):
        order.append(n)
    job.apply_async((1,), priority=1)
    job.apply_async((9,), priority=9)
    job.apply_async((5,), priority=5)
    run(app, concurrency=1)
    assert order == [9, 5, 1]


def test_apply_async_refuses_options_it_does_not_honour(log):
    app = task_app(log)

    @app.task
    def t():
        pass
    with pytest.raises(TypeError, match="no_such_option"):
        t.apply_async(no_such_option=1)
    with pytest.raises(engram.NotSupported, match="link"):
        t.apply_async(link=t)
    with pytest.raises(engram.InvalidArgument):
        t.apply_async(priority=-1)
    with pytest.raises(engram.InvalidArgument):
        t.apply_async(countdown=1, eta=dt.datetime.now())
    assert "tasks" not in [t.name for t in log.topics()]  # nothing was sent


def test_apply_async_routing_key_names_the_queue(log):
    app = task_app(log)

    @app.task
    def t():
        return 1
    r = t.apply_async(routing_key="other")
    assert r.id == "other:1"


# -- 6: unregistered tasks and expired results -------------------------------------------------
def test_a_task_the_worker_does_not_know_fails_loudly_instead_of_reading_revoked(log):
    sender = task_app(log)
    worker = task_app(log)

    @sender.task(name="only.here")
    def only_here():
        return 1

    @worker.task(name="other")
    def other():
        return 2
    r = only_here.delay()
    run(worker)
    assert r.status == "FAILURE"
    with pytest.raises(engram.TaskFailed, match="unregistered task 'only.here'"):
        r.get(timeout=1)


def test_an_expired_result_reads_pending_like_celery(log):
    app = task_app(log, result_ttl=1.0)

    @app.task
    def t():
        return 1
    r = t.delay()
    th = in_thread(run, app, 0.3)
    assert r.get(timeout=5) == 1 and r.status == "SUCCESS"
    assert wait_until(lambda: r.status == "PENDING", 5)
    th.join()


def test_a_result_json_cannot_carry_fails_the_task_as_in_celery(log):
    import decimal
    import uuid
    app = task_app(log)
    u = uuid.uuid4()

    @app.task
    def a_set():
        return {1, 2, 3}

    @app.task
    def an_object():
        return object()

    @app.task
    def dates():
        return [dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2), u, decimal.Decimal("1.5")]
    bad, obj, good = a_set.delay(), an_object.delay(), dates.delay()
    run(app, 0.5)
    for r in (bad, obj):  # not its str() as a SUCCESS
        assert r.status == "FAILURE"
        with pytest.raises(engram.TaskFailed, match="not JSON-serialisable"):
            r.get(timeout=1)
    # As Celery's JSON (kombu 5.3 and later) carries them: marked, and back as themselves.
    assert good.get(timeout=1) == [dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2), u,
                                   decimal.Decimal("1.5")]


def test_dates_uuids_decimals_and_bytes_in_arguments_reach_the_task_as_themselves(log_path):
    """Celery's JSON marks the values JSON lacks ({"__type__": ..., "__value__": ...}) and
    the worker gets them back as they were; they were refused at delay() ("not
    JSON-serialisable")."""
    import decimal
    import uuid
    from engram.celery import Celery
    capp = Celery("c", broker=log_path)
    seen = []

    @capp.task
    def remember(when, *, ids, amount, blob, text, day, at):
        seen.append((when, ids, amount, blob, text, day, at))
        return when
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    u = uuid.uuid4()
    r = remember.delay(when, ids=[u], amount=decimal.Decimal("0.10"), blob=b"\x00\xff",
                       text=b"caf\xc3\xa9", day=dt.date(2024, 2, 29), at=dt.time(23, 59, 1))
    with engram.open(log_path) as lg:  # stored as Celery stores it
        body = lg.read(r.group.topic, start=r.offset, count=1)[0].json()
    assert body["args"][0] == {"__type__": "datetime", "__value__": "2024-01-02T03:04:05.678000+00:00"}
    assert body["kwargs"]["blob"] == {"__type__": "base64", "__value__": "AP8="}
    capp.app.run(1, idle_timeout=0.3, wait=0.05, install_signals=False)
    assert seen == [(when, [u], decimal.Decimal("0.10"), b"\x00\xff", b"caf\xc3\xa9",
                     dt.date(2024, 2, 29), dt.time(23, 59, 1))]
    assert r.get(timeout=1) == when
    with pytest.raises(engram.InvalidArgument, match="not JSON-serialisable"):
        remember.delay(object(), ids=[], amount=0, blob=b"", text=b"", day=None, at=None)


# -- 7: Retry without autoretry ----------------------------------------------------------------
def test_raising_retry_retries_a_task_without_autoretry(log):
    app = task_app(log)
    calls = []

    @app.task
    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise engram.Retry(delay=0.05)
        return len(calls)
    r = flaky.delay()
    run(app, 0.6)
    assert r.get(timeout=1) == 3


# -- 12: durability is kept in process mode and settable ---------------------------------------
def test_process_mode_reopens_the_log_with_the_durability_it_was_given(tmp_path, monkeypatch):
    seen = str(tmp_path / "seen")
    real_open = engram.log.open

    def spy(path, **kw):
        with open(seen, "a") as f:
            f.write(f"{os.getpid()} {kw.get('durability', 'sync')}\n")
        return real_open(path, **kw)
    path = str(tmp_path / "log")
    with engram.open(path, durability="nometasync") as lg:
        monkeypatch.setattr(engram.log, "open", spy)
        app = engram.App(lg, group="g", topic="t", **FAST)

        @app.on("x")
        def h(ev):
            return 1
        lg.append("t", "x")
        stats = app.run(1, mode="process", idle_timeout=0.3, wait=0.1, install_signals=False)
    lines = open(seen).read().split()
    assert lines and all(d == "nometasync" for d in lines[1::2])
    del stats
    app2 = engram.App(str(tmp_path / "log2"), durability="async")
    assert app2.open_options["durability"] == "async"
    with pytest.raises(engram.InvalidArgument):
        engram.App(str(tmp_path / "log3"), durability="fast")
    # what `python -m engram worker ... --durability` calls
    app3 = engram.App(str(tmp_path / "log4"))
    app3.set_durability("nometasync")
    assert app3.open_options["durability"] == "nometasync"
    with engram.open(str(tmp_path / "log5"), durability="async") as lg5:
        app4 = engram.App(lg5)
        assert app4.open_options["durability"] == "async"
        with pytest.raises(engram.InvalidArgument, match="open already"):
            app4.set_durability("sync")


# -- 13: delay() is one request -----------------------------------------------------------------
class CountingHandle:
    def __init__(self, h):
        self._h, self.calls = h, []

    def __getattr__(self, name):
        attr = getattr(self._h, name)
        if callable(attr):
            def call(*a, **kw):
                self.calls.append(name)
                return attr(*a, **kw)
            return call
        return attr


def test_delay_makes_one_request(log):
    app = task_app(log)

    @app.task
    def t(x):
        return x
    t.delay(0)  # the topic exists from here on
    counting = CountingHandle(log._h)
    log._h = counting
    try:
        for i in range(5):
            t.delay(i)
    finally:
        log._h = counting._h
    assert counting.calls == ["append"] * 5


def test_without_confirm_publish_delay_queues_one_pipelined_append_and_the_result_learns_its_offset(log):
    app = task_app(log, confirm_publish=False)

    @app.task
    def t(x):
        return x * 2
    t.delay(0)  # the topic exists from here on
    counting = CountingHandle(log._h)
    log._h = counting
    try:
        rs = [t.delay(i) for i in range(1, 6)]
    finally:
        log._h = counting._h
    assert counting.calls == ["append_async"] * 5  # queued, not waited for
    app.flush()
    assert [r.offset for r in rs] == [2, 3, 4, 5, 6]
    assert [r.id for r in rs] == [f"tasks:{i}" for i in range(2, 7)]
    run(app, max_events=6)
    assert [r.get(timeout=5) for r in rs] == [2, 4, 6, 8, 10]


def test_a_pipelined_send_that_fails_raises_from_its_result_and_from_flush(log):
    log.create_topic("tasks", max_payload=200)
    app = task_app(log, confirm_publish=False)

    @app.task
    def t(x):
        return x
    ok = t.delay("small")
    bad = t.delay("x" * 1000)  # over the topic's max_payload: refused by the writer, later
    with pytest.raises(engram.TooBig):
        app.flush()
    assert ok.offset == 1
    with pytest.raises(engram.TooBig, match="was not appended"):
        bad.offset
    assert log.topic("tasks").count == 1


def test_celery_broker_transport_option_confirm_publish_false_pipelines_sends(log_path):
    from engram.celery import Celery
    capp = Celery("c", broker=log_path)
    capp.conf.broker_transport_options = {"confirm_publish": False}
    assert capp.app.confirm_publish is False
    capp.conf.broker_transport_options = {"confirm_publish": True}
    assert capp.app.confirm_publish is True


# -- 15: error locations keep their module path ------------------------------------------------
def test_a_timeout_error_names_the_module_path_not_a_bare_file_name(log):
    app = task_app(log, max_deliver=1)

    @app.task
    async def waits():
        await asyncio.wait_for(asyncio.sleep(1), 0.01)
    r = waits.delay()
    run(app)
    err = r.group.status(r.offset).last_error
    assert "TimeoutError" in err and "asyncio/tasks.py:" in err


def test_a_celery_result_gives_back_the_key_of_a_keyerror_not_its_repr(log_path):
    from engram.celery import Celery
    capp = Celery("c", broker=log_path)

    @capp.task
    def lookup(d, k):
        return d[k]
    missing, numeric = lookup.delay({}, "user_id"), lookup.delay({}, 7)
    capp.app.run(2, idle_timeout=0.5, wait=0.05, install_signals=False)
    with pytest.raises(KeyError) as e:
        missing.get(timeout=1)
    assert e.value.args == ("user_id",) and str(e.value) == "'user_id'"  # as Celery gives it
    assert numeric.result.args == (7,)


def test_a_result_over_the_limit_fails_at_once_instead_of_being_retried_unacked(log_path):
    """An ack's result holds at most MAX_RESULT bytes: a bigger one was refused at the ack,
    the event stayed leased, ran again after ack_wait, and so on, with nothing said."""
    from engram.celery import Celery
    capp = Celery("c", broker=log_path)

    @capp.task
    def embed(n):
        return [0.123456789] * n
    small, big = embed.delay(1536), embed.delay(200_000)
    capp.app.run(2, idle_timeout=0.5, wait=0.05, install_signals=False)
    assert len(small.get(timeout=1)) == 1536
    assert big.state == "FAILURE"
    with pytest.raises(Exception, match="over the 1048576") as e:
        big.get(timeout=1)
    assert type(e.value).__name__ == "ResultTooBig"
    app = engram.App(log_path, group="g", topic="t", ack_wait=30)

    @app.on("blob.made")
    def make(ev):
        return b"x" * (engram._engram.MAX_RESULT + 1)
    with engram.open(log_path) as lg:
        off = lg.append("t", "blob.made", {})
    stats = app.run(1, idle_timeout=0.3, wait=0.05, install_signals=False)
    assert stats.rejected == 1 and stats.handled == 0
    st = app.group_for("t").status(off)
    assert st.state == "dead" and "ResultTooBig" in st.last_error


def test_asking_for_early_acks_is_warned_about_not_ignored(log_path, caplog):
    """acks_late=False is Celery's at most once (a worker that dies mid-task loses it):
    engram runs such a task again, and says so where it is asked for."""
    import logging
    import engram.celery
    from engram.celery import Celery
    engram.celery._warned.discard("task_acks_late")  # warned once a process
    capp = Celery("c", broker=log_path)
    with caplog.at_level(logging.WARNING, logger="engram.celery"):
        capp.conf.task_acks_late = False

        @capp.task(acks_late=False)
        def send_email():
            return None
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("task_acks_late=False: engram acks a task only once it returned")
               for m in said), said
    assert any("send_email: acks_late=False" in m and "runs again" in m for m in said), said


def test_arguments_that_do_not_fit_the_task_are_refused_when_sent(log):
    """Celery checks the arguments against the task's signature when it sends (its
    ``typing``, on by default): a wrong call fails at delay(), not later in a worker."""
    app = task_app(log)

    @app.task
    def add(x, y):
        return x + y

    @app.task(bind=True)
    def bound(self, x):
        return x

    @app.task(typing=False)
    def unchecked(x):
        return x
    for call in (lambda: add.delay(1), lambda: add.delay(1, 2, 3), lambda: add.delay(1, z=2),
                 lambda: bound.delay(), lambda: add.s(1).delay(y=2, x=3)):
        with pytest.raises(TypeError, match=r"\(\) "):
            call()
    assert "tasks" not in [t.name for t in log.topics()]  # nothing was sent
    sent = [add.delay(1, 2), add.s(1).delay(2), bound.delay(5), unchecked.delay()]
    assert log.topic("tasks").count == len(sent)


class InsufficientFunds(Exception):
    """An application's own exception, for the test below."""


def test_a_failed_tasks_own_exception_class_comes_back_to_its_caller(log_path):
    """Celery re-raises a task's own exception class in get() when the caller has its
    module loaded: ``except InsufficientFunds`` works. An exception class of the same name
    made up on the spot did not match it."""
    from engram.celery import Celery
    capp = Celery("c", broker=log_path)

    @capp.task
    def pay(amount):
        raise InsufficientFunds(f"balance below {amount}")

    @capp.task
    def local():
        class Local(Exception):
            pass
        raise Local("made inside")
    r, r2 = pay.delay(5), local.delay()
    capp.app.run(1, idle_timeout=0.3, wait=0.05, install_signals=False)
    with pytest.raises(InsufficientFunds, match="^balance below 5$"):
        r.get(timeout=1)
    assert type(r.result) is InsufficientFunds
    assert r.group.status(r.offset).last_error.startswith(
        f"rejected: {__name__}.InsufficientFunds: balance below 5 (")
    with pytest.raises(Exception, match="^made inside$") as e:
        r2.get(timeout=1)
    assert type(e.value).__name__ == "Local"


def test_a_task_raising_ignore_is_consumed_without_a_result_or_a_failure(log_path):
    from engram.celery import Celery
    from engram.celery.exceptions import Ignore
    capp = Celery("c", broker=log_path)
    runs = []

    @capp.task
    def dedupe(key):
        runs.append(key)
        raise Ignore()
    r = dedupe.delay("m1")
    stats = capp.app.run(1, idle_timeout=0.3, wait=0.05, install_signals=False)
    assert runs == ["m1"] and stats.handled == 1 and stats.failed == stats.rejected == 0
    assert r.state == "PENDING" and r.result is None  # as Celery: no state recorded
    st = r.group.status(r.offset)
    assert st.state == "done" and st.result is None and capp.app.group_for("celery").dlq() == []


def test_apply_runs_the_task_here_and_current_app_stands_for_the_app(log_path):
    """Celery's ``task.apply()`` (unit tests of Celery code call it) runs the task at once
    in the caller, retries included, and returns an EagerResult; ``current_app`` is the
    app's stand-in (``current_app.conf``, ``current_app.send_task``). Both were missing."""
    from engram.celery import Celery, current_app
    capp = Celery("c", broker=log_path)
    tries = []

    @capp.task(bind=True, max_retries=3)
    def flaky(self, x):
        tries.append((self.request.retries, self.request.is_eager))
        if self.request.retries < 2:
            raise self.retry(countdown=60)
        return x * 2

    @capp.task(autoretry_for=(KeyError,), retry_kwargs={"max_retries": 1})
    def missing(d):
        return d["k"]
    r = flaky.apply((21,))
    assert (r.get(), r.state, r.successful(), r.ready()) == (42, "SUCCESS", True, True)
    assert tries == [(0, True), (1, True), (2, True)]  # retried at once, not sent
    bad = missing.apply(({},))
    assert bad.state == "FAILURE" and isinstance(bad.result, KeyError) and "KeyError" in bad.traceback
    with pytest.raises(KeyError):
        bad.get()
    with pytest.raises(KeyError):
        missing.apply(({},), throw=True)
    with pytest.raises(TypeError):
        flaky.apply(())  # arguments checked as apply_async checks them
    with engram.open(log_path) as lg:
        assert lg.topics() == []  # nothing was sent
    assert current_app() is capp and current_app.main == "c"
    assert current_app.conf is capp.conf and current_app.tasks[flaky.name] is flaky
    assert current_app.send_task(flaky.name, args=(1,)).id == "celery:1"


def test_celery_worker_and_task_signals_reach_their_receivers(log_path, tmp_path):
    """task_prerun/postrun/success/failure/retry, worker_ready/shutdown and
    worker_process_init are sent with Celery's arguments; connecting to them raised
    NotSupported, so an app that connects one (per-process set-up, metrics, Sentry) could
    not start."""
    from engram.celery import Celery, signals
    capp = Celery("c", broker=log_path)
    seen = []
    mark = tmp_path / "process-init"
    receivers = {
        signals.task_prerun: lambda sender, task_id, args, **kw: seen.append(("prerun", sender.name, args)),
        signals.task_success: lambda sender, result, **kw: seen.append(("success", sender.name, result)),
        signals.task_failure: lambda sender, exception, **kw: seen.append(("failure", sender.name, repr(exception))),
        signals.task_retry: lambda sender, reason, **kw: seen.append(("retry", sender.name)),
        signals.task_postrun: lambda sender, state, retval, **kw: seen.append(("postrun", sender.name, state, retval)),
        signals.worker_ready: lambda sender, **kw: seen.append(("ready",)),
        signals.worker_shutdown: lambda sender, **kw: seen.append(("shutdown",)),
        signals.worker_process_init: lambda sender, **kw: mark.write_text(str(os.getpid())),
    }
    for sig_, fn in receivers.items():
        sig_.connect(fn)
    try:
        @capp.task
        def ok(x):
            return x + 1

        @capp.task
        def bad():
            raise ValueError("no")

        @capp.task(bind=True, max_retries=1, default_retry_delay=0.01)
        def again(self):
            if self.request.retries == 0:
                raise self.retry()
            return "second"
        ok.delay(1)
        capp.app.run(1, idle_timeout=0.3, wait=0.05, install_signals=False)
        assert seen == [("ready",), ("prerun", ok.name, [1]), ("success", ok.name, 2),
                        ("postrun", ok.name, "SUCCESS", 2), ("shutdown",)]
        seen.clear()
        bad.delay()
        again.delay()
        capp.app.run(1, idle_timeout=0.5, wait=0.05, install_signals=False)
        assert ("failure", bad.name, "ValueError('no')") in seen
        assert ("postrun", bad.name, "FAILURE", None) in seen
        assert ("retry", again.name) in seen and ("postrun", again.name, "RETRY", None) in seen
        assert ("success", again.name, "second") in seen
        # The prefork pool's processes: worker_process_init in each, before its first task.
        ok.delay(2)
        capp.app.run(1, idle_timeout=0.5, wait=0.05, install_signals=False, mode="process")
        assert mark.exists() and int(mark.read_text()) != os.getpid()
    finally:
        for sig_, fn in receivers.items():
            sig_.disconnect(fn)
    with pytest.raises(engram.NotSupported, match="task_revoked"):
        signals.task_revoked.connect(lambda **kw: None)


# -- revoke --------------------------------------------------------------------------------------
def test_revoke_terminate_stops_a_running_task(log):
    app = task_app(log)
    started, finished = threading.Event(), []

    @app.task
    def long():
        started.set()
        for _ in range(100):
            time.sleep(0.02)
        finished.append(1)
    r = long.delay()
    th = in_thread(run, app, 0.5)
    assert started.wait(5)
    r.revoke(terminate=True)
    th.join(10)
    assert finished == [] and r.status == "REVOKED"


def test_revoke_before_start_reads_revoked_and_never_runs(log):
    app = task_app(log)
    ran = []

    @app.task
    def work():
        ran.append(1)
    r = work.delay()
    assert r.revoke()
    run(app)
    assert ran == [] and r.status == "REVOKED"
    with pytest.raises(engram.TaskRevoked):
        r.get(timeout=1)
    assert not r.revoke()
    # from the id alone, in another handle
    assert engram.AsyncResult.from_id(app, r.id).status == "REVOKED"


def test_a_worker_serves_several_queues_in_priority_order(log):
    app = task_app(log)
    order = []

    @app.task(queue="low")
    def low(n):
        order.append(("low", n))

    @app.task(queue="high")
    def high(n):
        order.append(("high", n))
    for i in range(3):
        low.delay(i)
        high.delay(i)
    run(app, concurrency=1, queues=["high", "low"])
    assert order == [("high", 0), ("high", 1), ("high", 2), ("low", 0), ("low", 1), ("low", 2)]


# -- the time-limit and revocation exceptions, where App and Celery users import them -----------
def test_time_limit_and_terminate_exceptions_are_exported_for_app_and_celery_users():
    import engram.app
    import engram.celery.exceptions as cex
    for name in ("SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated"):
        assert getattr(engram, name) is getattr(engram.app, name) is getattr(cex, name)
        assert name in engram.__all__ and name in cex.__all__
