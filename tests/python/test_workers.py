# test_workers.py — workers as the log knows them: a fetch registers its consumer, a
# heartbeat describes it, App workers register themselves while they run (with what they
# run now) and leave the list when they stop; the same through `engram serve`.
import os
import socket
import threading
import time

import pytest

import engram
from conftest import wait_until
from test_remote import daemon  # noqa: F401  (fixture)



def by_name(log, name, **kw):
    return {w.name: w for w in log.workers(**kw)}.get(name)


def check_worker_calls(log):
    g = log.group("memory", "indexer", create_topic=True)
    log.append("memory", "memory.saved", {"id": 1})
    c = g.consumer("w1")
    evs = c.fetch(1)
    assert len(evs) == 1
    w = by_name(log, "w1")
    assert w is not None and not w.lost
    assert w.groups == ("memory/indexer",)
    log.worker_heartbeat("w1", host="box", pid=7, concurrency=4, handled=3, failed=1,
                         groups=["other/g"], running=[("memory", "indexer", evs[0].offset,
                                                       time.time_ns())])
    w = by_name(log, "w1")
    assert (w.host, w.pid, w.concurrency, w.handled, w.failed) == ("box", 7, 4, 3, 1)
    assert w.groups == ("memory/indexer", "other/g")
    assert w.running[0][:3] == ("memory", "indexer", evs[0].offset)
    assert by_name(log, "w1", lost_after=0.001) is None or wait_until(
        lambda: by_name(log, "w1", lost_after=0.001).lost, 5)
    with pytest.raises(engram.InvalidArgument):
        log.worker_heartbeat("w1", groups=["no-slash"])
    with pytest.raises(engram.InvalidArgument):
        log.worker_heartbeat("bad name")
    with pytest.raises(engram.InvalidArgument):
        log.worker_heartbeat("w1", host="x" * 300)
    assert by_name(log, "w1").host == "box"  # bad input changed nothing
    log.forget_worker("w1")
    assert by_name(log, "w1") is None
    with pytest.raises(engram.NotFound):
        log.forget_worker("w1")


def test_fetch_registers_and_heartbeat_describes_a_worker(log):
    check_worker_calls(log)


def test_workers_through_the_daemon(daemon):  # noqa: F811
    with engram.connect(daemon) as log:
        check_worker_calls(log)


def test_an_app_worker_registers_itself_while_it_runs_and_leaves_when_it_stops(log):
    app = engram.App(log, group="indexer", topic="memory", consumer="app-worker")
    started = threading.Event()
    release = threading.Event()

    @app.on("memory.saved")
    def handle(ev):
        started.set()
        release.wait(20)

    app.send("memory.saved", {"id": 1})
    t = threading.Thread(target=lambda: app.run(concurrency=2, wait=0.1, install_signals=False))
    t.start()
    try:
        assert started.wait(20)
        assert wait_until(lambda: (by_name(log, "app-worker") or None) is not None
                          and by_name(log, "app-worker").running, 20)
        w = by_name(log, "app-worker")
        assert w.pid == os.getpid()
        assert w.host == socket.gethostname()[:255]
        assert w.concurrency == 2
        assert w.groups == ("memory/indexer",)
        assert w.running[0][:3] == ("memory", "indexer", 1)
    finally:
        release.set()
        assert wait_until(lambda: log.group("memory", "indexer").info().lag == 0, 20)
        app.stop()
        t.join(30)
    assert by_name(log, "app-worker") is None


def test_event_bus_subscribers_register_as_workers(log):
    bus = engram.EventBus(log, topic="bus-events")
    seen = threading.Event()
    release = threading.Event()

    def handler(ev):
        seen.set()
        release.wait(20)

    bus.subscribe("memory.*", handler, name="indexer")
    bus.start()
    try:
        bus.publish("memory.saved", {"id": 1})
        assert seen.wait(20)
        assert wait_until(lambda: any(w.pid == os.getpid() and w.running
                                      for w in log.workers()), 20)
        w = [w for w in log.workers() if w.pid == os.getpid()][0]
        assert w.host == socket.gethostname()[:255] and w.running[0][0] == "bus-events"
    finally:
        release.set()
        bus.stop()
