# test_remote.py — the same API through `engram serve`: engram.connect() against a daemon
# started on a loopback port for the test, and worker processes sharing a group over it.
import os
import signal
import socket
import subprocess
import time

import pytest

import engram
from conftest import ROOT, has, read_records, spawn_worker, wait_until

BUILD = os.environ.get("ENGRAM_BUILD") or os.path.join(ROOT, "build")
ENGRAM = os.path.join(BUILD, "engram")

pytestmark = [
    pytest.mark.skipif(not has("engram_connect"), reason="libengram has no engram_connect yet"),
    pytest.mark.skipif(not os.access(ENGRAM, os.X_OK), reason=f"{ENGRAM} is not built"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    data = str(tmp_path / "served")
    p = subprocess.Popen([ENGRAM, "serve", "--data", data, "--listen", endpoint,
                          "--notify", f"ipc://{tmp_path}/notify.ipc"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up():
        if p.poll() is not None:
            return True
        try:
            with engram.connect(endpoint, timeout=0.5) as c:
                c.topics()
            return True
        except engram.Error:
            return False
    if not wait_until(up, 10) or p.poll() is not None:
        err = p.stderr.read().decode() if p.poll() is not None else ""
        p.kill()
        pytest.skip(f"engram serve did not start: {err.strip()[:200]}")
    yield endpoint
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


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


def test_server_stats_are_the_daemons_counters(daemon, log):
    with engram.connect(daemon) as remote:
        remote.append("memory", "memory.saved", b"x")
        st = remote.server_stats()
    assert st["requests"] >= 2 and st["appended"] == 1 and st["waiting_fetches"] == 0
    assert st["workers"] > 0 and st["version"] == engram.VERSION
    with pytest.raises(engram.NotSupported):
        log.server_stats()


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
