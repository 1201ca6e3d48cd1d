# test_app.py — the worker runtime: routing, results, failure isolation, timeouts, the DLQ,
# graceful stop, and worker processes sharing a group (including one killed mid-handler).
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import engram
from conftest import child_env, read_records, spawn_worker, wait_until



def make_app(log, **cfg):
    cfg.setdefault("ack_wait", 0.5)
    cfg.setdefault("backoff", [0.02])
    return engram.App(log, group="indexer", topic="memory", **cfg)


def test_handlers_are_routed_by_exact_prefix_and_wildcard_patterns(log):
    app = make_app(log)
    calls = []
    app.on("memory.saved")(lambda ev: calls.append(("saved", ev.offset)))
    app.on("memory.*")(lambda ev: calls.append(("memory.*", ev.offset)))
    app.on("*")(lambda ev: calls.append(("*", ev.offset)))
    app.send("memory.saved", {})
    app.send("memory.deleted", {})
    app.send("other.thing", {})
    stats = app.run(concurrency=1, idle_timeout=0.3, wait=0.1, install_signals=False)
    assert stats.handled == 3
    assert sorted(calls) == sorted([("saved", 1), ("memory.*", 1), ("*", 1), ("memory.*", 2), ("*", 2), ("*", 3)])


def test_handler_patterns_become_group_filters(log):
    app = make_app(log)
    app.on("memory.saved")(lambda ev: None)
    app.on("memory.updated")(lambda ev: None)
    assert app.group.info().filters == ["memory.saved", "memory.updated"]
    assert engram.app.c_filters(["a.*", "b"]) == ["a.*", "b"]
    assert engram.app.c_filters(["a.*", "*"]) is None
    assert engram.app.c_filters(["a.*.b"]) is None


def test_a_handler_result_is_kept_with_the_ack(log):
    app = make_app(log)
    app.on("memory.saved")(lambda ev: {"vector_id": ev.json()["id"] * 10})
    off = app.send("memory.saved", {"id": 4})
    app.run(idle_timeout=0.3, wait=0.1, install_signals=False)
    st = app.group.status(off)
    assert st.state == "done" and st.result == b'{"vector_id":40}'


def test_async_handlers_run_too(log):
    app = make_app(log)
    seen = []

    @app.on("memory.saved")
    async def h(ev):
        seen.append(ev.offset)
        return "ok"
    app.send("memory.saved", {})
    app.run(idle_timeout=0.3, wait=0.1, install_signals=False)
    assert seen == [1]


def test_one_failing_handler_never_stops_the_others(log):
    app = make_app(log, max_deliver=2)
    done = []

    @app.on("memory.saved")
    def flaky(ev):
        if ev.json()["bad"]:
            raise RuntimeError("cannot index")
        done.append(ev.offset)
    for i in range(10):
        app.send("memory.saved", {"bad": i == 3})
    stats = app.run(concurrency=3, idle_timeout=0.5, wait=0.1, install_signals=False)
    assert sorted(done) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert stats.failed == 2 and stats.handled == 9
    dead = app.group.dlq()
    assert [d.offset for d in dead] == [4] and "cannot index" in dead[0].last_error


def test_reject_and_retry_from_a_handler(log):
    app = make_app(log)
    attempts = []

    @app.on("memory.saved")
    def h(ev):
        attempts.append((ev.offset, ev.attempt))
        if ev.offset == 1:
            raise engram.Reject("not a memory")
        if ev.offset == 2 and ev.attempt == 1:
            raise engram.Retry(delay=0.05, error="later")
    app.send("memory.saved", {})
    app.send("memory.saved", {})
    stats = app.run(idle_timeout=0.5, wait=0.1, install_signals=False)
    assert (1, 1) in attempts and (2, 2) in attempts
    assert stats.rejected == 1 and [d.offset for d in app.group.dlq()] == [1]


def test_a_handler_past_its_timeout_is_nacked_and_reported_and_the_pool_goes_on(log):
    app = make_app(log, ack_wait=5)
    reports = []
    app.on_error(lambda ev, exc: reports.append((ev.offset, type(exc).__name__)))
    release = threading.Event()
    handled = []

    @app.on("memory.saved")
    def h(ev):
        if ev.offset == 1 and ev.attempt == 1:
            release.wait(5)  # stuck
            return
        handled.append((ev.offset, ev.attempt))
    for _ in range(4):
        app.send("memory.saved", {})
    t0 = time.monotonic()
    stats = app.run(concurrency=1, timeout=0.3, idle_timeout=0.6, wait=0.1, install_signals=False)
    release.set()
    assert time.monotonic() - t0 < 4
    assert stats.timed_out == 1 and (1, "HandlerTimeout") in reports
    assert sorted(handled) == [(1, 2), (2, 1), (3, 1), (4, 1)]


def test_per_handler_timeout_overrides_the_run_timeout(log):
    app = make_app(log, max_deliver=1)

    @app.on("memory.saved", timeout=0.2)
    def slow(ev):
        time.sleep(1.0)
    app.send("memory.saved", {})
    stats = app.run(timeout=30, idle_timeout=0.5, wait=0.1, install_signals=False)
    assert stats.timed_out == 1
    assert app.group.dlq()[0].offset == 1


def test_events_arriving_one_at_a_time_are_acked_with_the_next_fetch(log):
    # A worker fed one event at a time settles each with the fetch of the next (one
    # ack_fetch request and commit) instead of a fetch plus a separate ack of the acker.
    app = make_app(log, ack_wait=30)
    app._RIDE_WAIT = 5.0  # generous: the no-op handler finishes well within it
    app.on("memory.saved")(lambda ev: None)
    app.group.info()
    calls = []
    h = log._h

    class Counting:
        def __getattr__(self, name):
            attr = getattr(h, name)
            if name in ("ack_fetch", "ack_many", "ack"):
                def call(*a, **kw):
                    calls.append(name)
                    return attr(*a, **kw)
                return call
            return attr
    log._h = Counting()
    th = threading.Thread(target=lambda: app.run(concurrency=2, wait=0.1, install_signals=False))
    th.start()
    try:
        for i in range(5):
            app.send("memory.saved", {"i": i})
            assert wait_until(lambda: app.group.info().acked == i + 1, 10)
    finally:
        app.stop()
        th.join(10)
        log._h = h
    assert "ack_many" not in calls and "ack" not in calls
    assert calls.count("ack_fetch") >= 5


def test_stop_lets_in_flight_handlers_finish(log):
    app = make_app(log)
    started, finished = threading.Event(), []

    @app.on("memory.saved")
    def h(ev):
        started.set()
        time.sleep(0.3)
        finished.append(ev.offset)
    app.send("memory.saved", {})
    th = threading.Thread(target=lambda: app.run(grace=5, wait=0.1, install_signals=False))
    th.start()
    assert started.wait(5)
    app.stop()
    th.join(5)
    assert finished == [1] and app.group.status(1).state == "done"


def test_stop_after_the_grace_period_releases_unfinished_events(log):
    app = make_app(log, ack_wait=30)
    started = threading.Event()

    @app.on("memory.saved")
    def h(ev):
        started.set()
        time.sleep(2)
    app.send("memory.saved", {})
    th = threading.Thread(target=lambda: app.run(grace=0.2, wait=0.1, install_signals=False))
    th.start()
    assert started.wait(5)
    t0 = time.monotonic()
    app.stop()
    th.join(5)
    assert time.monotonic() - t0 < 1.5
    st = app.group.status(1)
    assert st.state in ("retrying", "pending") and "stopped" in st.last_error


def test_run_rejects_bad_arguments(log):
    app = make_app(log)
    with pytest.raises(engram.InvalidArgument):
        app.run()  # no handlers
    app.on("*")(lambda ev: None)
    with pytest.raises(engram.InvalidArgument):
        app.run(concurrency=0)
    with pytest.raises(TypeError):
        app.run(concurrency="2")
    with pytest.raises(engram.InvalidArgument):
        app.run(mode="green")
    with pytest.raises(engram.InvalidArgument):
        app.run(timeout=-1)
    # A limit of none or fewer events would make a worker that exits having done nothing.
    for bad in (0, -3):
        for kw in ("max_events", "batch", "max_tasks_per_child"):
            with pytest.raises(engram.InvalidArgument, match=kw):
                app.run(**{kw: bad})
    with pytest.raises(TypeError):
        engram.App(42)
    with pytest.raises(TypeError):
        app.on(3)
    with pytest.raises(engram.InvalidArgument):
        app.on("")
    with pytest.raises(TypeError):
        app.add_handler("x", "not callable")


def test_process_mode_interrupts_a_handler_at_its_timeout(log_path, tmp_path):
    # The App is given a path, so each worker process opens its own handle.
    app = engram.App(log_path, group="indexer", topic="memory", ack_wait=5, backoff=[0.02], max_deliver=1)
    marker = tmp_path / "interrupted"

    @app.on("memory.saved")
    def slow(ev):
        try:
            time.sleep(10)
        except engram.HandlerTimeout:
            marker.write_text("yes")
            raise
    with engram.open(log_path) as lg:
        lg.append("memory", "memory.saved", {})
    t0 = time.monotonic()
    app.run(concurrency=1, timeout=0.3, mode="process", idle_timeout=0.8, install_signals=False)
    assert time.monotonic() - t0 < 8
    assert marker.read_text() == "yes"
    with engram.open(log_path) as lg:
        assert lg.group("memory", "indexer").dlq()[0].offset == 1


# -- several processes --------------------------------------------------------------------
def produce(log_path, n):
    with engram.open(log_path) as lg:
        lg.append_many("jobs", [("job.run", {"i": i}) for i in range(n)])


def test_several_worker_processes_share_the_group(log_path, tmp_path):
    out = str(tmp_path / "out")
    produce(log_path, 60)
    procs = [spawn_worker("workerapp:app", "--idle-timeout", "1.0", "-c", "2", "--prefetch", "4",
                          ENGRAM_TEST_LOG=log_path, ENGRAM_TEST_OUT=out, ENGRAM_TEST_EACH="0.01")
             for _ in range(3)]
    for p in procs:
        assert p.wait(30) == 0, p.stdout.read().decode()
    recs = read_records(out)
    offsets = sorted(r[1] for r in recs)
    assert offsets == list(range(1, 61))  # each exactly once
    assert len({r[0] for r in recs}) >= 2  # the work was shared


def test_a_worker_killed_mid_handler_has_its_event_redelivered(log_path, tmp_path):
    out, started = str(tmp_path / "out"), str(tmp_path / "started")
    produce(log_path, 3)
    env = dict(ENGRAM_TEST_LOG=log_path, ENGRAM_TEST_OUT=out, ENGRAM_TEST_SLEEP_OFFSET=2,
               ENGRAM_TEST_SLEEP_SECONDS=30, ENGRAM_TEST_STARTED=started)
    victim = spawn_worker("workerapp:app", **env)
    assert wait_until(lambda: os.path.exists(started), 15), "the handler never started"
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    survivor = spawn_worker("workerapp:app", "--idle-timeout", "1.5", **env)
    assert survivor.wait(30) == 0
    recs = read_records(out)
    by_offset = {r[1]: r for r in recs}
    assert sorted(by_offset) == [1, 2, 3]
    assert by_offset[2][2] == 2 and by_offset[2][0] == survivor.pid  # attempt 2, elsewhere


def test_sigterm_stops_a_worker_cleanly_after_its_in_flight_handler(log_path, tmp_path):
    out, started = str(tmp_path / "out"), str(tmp_path / "started")
    produce(log_path, 1)
    p = spawn_worker("workerapp:app", "--grace", "5", ENGRAM_TEST_LOG=log_path, ENGRAM_TEST_OUT=out,
                     ENGRAM_TEST_SLEEP_OFFSET=1, ENGRAM_TEST_SLEEP_SECONDS=0.25,
                     ENGRAM_TEST_STARTED=started)
    assert wait_until(lambda: os.path.exists(started), 15)
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    assert [r[1] for r in read_records(out)] == [1]  # the handler finished before exit
    with engram.open(log_path) as lg:
        assert lg.group("jobs", "workers").status(1).state == "done"


def test_the_worker_command_refuses_counts_under_one_before_it_starts(log_path):
    with engram.open(log_path) as lg:
        lg.create_topic("jobs")
        lg.append("jobs", "job.run", b"{}")
    for flag in ("--max-events", "--prefetch"):
        for bad in ("0", "-3"):
            r = subprocess.run([sys.executable, "-m", "engram", "worker", "workerapp:app",
                                "--idle-timeout", "0.5", flag, bad],
                               env=child_env(ENGRAM_TEST_LOG=log_path, ENGRAM_TEST_OUT=log_path + "-out"),
                               capture_output=True, timeout=30)
            assert r.returncode == 2, (flag, bad, r.stderr)
            assert flag.encode() in r.stderr and b"at least 1" in r.stderr
    with engram.open(log_path) as lg:  # nothing was fetched
        assert lg.group("jobs", "workers").status(1).state == "pending"


def test_the_worker_command_refuses_a_bad_app_spec():
    r = subprocess.run([sys.executable, "-m", "engram", "worker", "no_colon"], env=child_env(),
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and b"module:attribute" in r.stderr
    r = subprocess.run([sys.executable, "-m", "engram", "worker", "json:dumps"], env=child_env(),
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and b"neither an engram.App nor an object with a run() method" in r.stderr
