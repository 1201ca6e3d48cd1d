# test_remote.py — the same API through `engram serve`: engram.connect() against a daemon
# started on a loopback port for the test, and worker processes sharing a group over it.
import os
import signal
import threading
import time

import pytest

import engram
from conftest import read_records, spawn_worker, wait_until
from served import ENGRAM, free_port, start_daemon, stop_daemon

pytestmark = [
    pytest.mark.skipif(not os.access(ENGRAM, os.X_OK), reason=f"{ENGRAM} is not built"),
]


@pytest.fixture
def daemon(tmp_path):
    p, endpoint = start_daemon(tmp_path)
    yield endpoint
    stop_daemon(p)


def test_connect_offers_the_same_interface(daemon):
    with engram.connect(daemon) as log:
        off = log.append("memory", "memory.saved", {"memory_id": "m1"}, key="m1",
                         headers={"a": "b"}, idempotency_key="once")
        again = log.append("memory", "memory.saved", {"memory_id": "m1"}, idempotency_key="once")
        assert again == off and again.duplicate
        assert log.append_many("memory", [("memory.updated", {"n": i}) for i in range(3)]) == [2, 3, 4]
        ev = log.get("memory", 1)
        assert (ev.key, ev.headers, ev.json()) == ("m1", {"a": "b"}, {"memory_id": "m1"})
        assert [e.offset for e in log.read("memory", 2, 10)] == [2, 3, 4]
        for i in range(100):
            log.append_async("memory", "memory.queried", {"q": i})
        log.flush()
        assert log.topic("memory").count == 104
        assert [t.name for t in log.topics()] == ["memory"]
        g = log.group("memory", "idx", ack_wait=0.5, max_deliver=1)
        evs = g.fetch("c", 4, wait=1)
        assert len(evs) == 4
        evs[0].ack({"ok": 1})
        evs[1].reject("bad")
        for e in evs[2:]:
            e.ack()
        assert g.status(1).result == b'{"ok":1}'
        assert [d.offset for d in g.dlq()] == [2]
        assert g.redrive() == 1
        assert log.stats()["groups"][0]["group"] == "idx"
        with pytest.raises(engram.NotFound):
            log.get("memory", 9999)
        with pytest.raises(engram.InvalidArgument):
            log.append("bad topic!", "x.y", b"")


def test_a_client_asks_the_daemon_what_it_is(daemon, tmp_path):
    with engram.connect(daemon) as log:
        log.append("memory", "memory.saved", {"memory_id": "m1"})
        info = log.server_info()
        assert info["version"] == engram.__version__
        assert info["protocol_version"] == 1 and info["durability"] == 0  # sync, the default
        assert info["max_message"] == 16 << 20 and info["max_events"] == 65536
        assert info["workers"] == max(2, os.cpu_count() or 1)
        assert info["appended"] == 1 and info["requests"] >= 2 and info["curve"] == 0
        assert info["commits"] >= 1 and info["uptime_ms"] >= 0
        assert len(log.log_info()["id"]) == 32  # the daemon's log
        sp = log.space()  # the daemon's log's data.mdb
        assert sp["used_bytes"] > 0 and sp["map_bytes"] >= sp["used_bytes"] + sp["free_bytes"]
    with engram.open(str(tmp_path / "embedded")) as log:
        with pytest.raises(engram.NotSupported):
            log.server_info()


def test_task_delay_through_the_daemon_is_one_request(daemon):
    app = engram.App(daemon, "workers", topic="tasks")

    @app.task
    def add(x, y):
        return x + y
    add.delay(0, 0)  # the first one may create the topic
    with engram.connect(daemon) as probe:
        before = probe.server_info()["requests"]
        add.delay(2, 3)
        after = probe.server_info()["requests"]
    assert after - before == 2  # the delay() and the first server_info() itself
    app.close()


def test_pipelined_task_sends_through_the_daemon_take_at_most_one_request_each(daemon):
    app = engram.App(daemon, "workers", topic="tasks", confirm_publish=False)

    @app.task
    def add(x, y):
        return x + y
    add.delay(0, 0)
    app.flush()  # the topic exists from here on
    with engram.connect(daemon) as probe:
        before = probe.server_info()["requests"]
        rs = [add.delay(i, i) for i in range(200)]
        app.flush()
        after = probe.server_info()["requests"]
        assert probe.topic("tasks").count == 201
    assert 2 <= after - before <= 201  # batched appends, and the first server_info() itself
    assert [r.offset for r in rs] == list(range(2, 202))
    app.close()


def test_an_importer_keeps_append_times_through_the_daemon(daemon):
    with engram.connect(daemon) as log:
        hour_ago = time.time_ns() - 3600 * 10**9
        log.append_many("memory", [engram.Message("memory.saved", b"a", timestamp_ns=hour_ago),
                                   engram.Message("memory.saved", b"b", timestamp_ns=hour_ago + 1)])
        assert [e.timestamp_ns for e in log.read("memory", 1, 10)] == [hour_ago, hour_ago + 1]
        with pytest.raises(engram.InvalidArgument, match="older than the topic's newest event"):
            log.append_many("memory", [engram.Message("memory.saved", b"c", timestamp_ns=hour_ago)])
        assert log.topic("memory").count == 2


def test_ctrl_c_interrupts_a_fetch_waiting_on_the_daemon(daemon):
    # As embedded: a client blocked in a long fetch through the daemon stops at Ctrl-C.
    with engram.connect(daemon) as c:
        g = c.group("memory", "intr", create_topic=True)
        timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
        start = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            g.fetch("c1", max=1, wait=30)
        timer.cancel()
        assert time.monotonic() - start < 5
        c.append("memory", "memory.saved", {"i": 1})  # the connection still works
        assert [e.json()["i"] for e in g.fetch("c1", max=1, wait=5)] == [1]


def test_connect_to_nothing_fails_cleanly():
    with pytest.raises(engram.Error):
        with engram.connect(f"tcp://127.0.0.1:{free_port()}", timeout=0.3) as log:
            log.topics()


def test_worker_processes_share_a_group_through_the_daemon(daemon, tmp_path):
    out = str(tmp_path / "out")
    with engram.connect(daemon) as log:
        log.append_many("jobs", [("job.run", {"i": i}) for i in range(30)])
    procs = [spawn_worker("workerapp:app", "--idle-timeout", "1.0", ENGRAM_TEST_LOG=daemon,
                          ENGRAM_TEST_OUT=out) for _ in range(2)]
    for p in procs:
        assert p.wait(30) == 0, p.stdout.read().decode()
    offsets = sorted(r[1] for r in read_records(out))
    assert offsets == list(range(1, 31))


def test_ack_fetch_through_the_daemon(daemon):
    with engram.connect(daemon) as log:
        log.append_many("memory", [("memory.saved", {"i": i}) for i in range(4)])
        g = log.group("memory", "af")
        evs = g.ack_fetch("c", max=2)
        evs = g.ack_fetch("c", evs, max=2)
        assert [e.offset for e in evs] == [3, 4]
        assert g.info().acked == 2
        with pytest.raises(engram.NotFound) as e:
            g.ack_fetch("c", [(99, 1)] + [(x.offset, x.attempt) for x in evs], max=2)
        assert e.value.codes == [engram.NotFound.code, 0, 0]
        assert g.info().acked == 2
        assert g.ack_fetch("c", evs, max=2, wait=0.05) == []
        assert g.info().acked == 4


def test_a_worker_settles_each_task_with_its_next_fetch(daemon, tmp_path):
    # A worker process acks each handled event with the fetch of the next (one request,
    # one commit of the daemon per task, not two).
    out = str(tmp_path / "out")
    n = 40
    with engram.connect(daemon) as log:
        log.append_many("jobs", [("job.run", {"i": i}) for i in range(n)])
        before = log.server_info()["commits"]
        p = spawn_worker("workerapp:app", "--mode", "process", "--concurrency", "1",
                         "--idle-timeout", "1.0", ENGRAM_TEST_LOG=daemon, ENGRAM_TEST_OUT=out)
        assert p.wait(60) == 0, p.stdout.read().decode()
        commits = log.server_info()["commits"] - before
        info = log.group("jobs", "workers").info()
    assert sorted(r[1] for r in read_records(out)) == list(range(1, n + 1))
    assert info.acked == n and info.lag == 0
    # Fetch then ack would take 2n; heartbeats and the group's creation add a few.
    assert commits < 1.5 * n, commits
