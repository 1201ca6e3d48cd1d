# test_reclaim.py — engram.reclaim() from Python: data.mdb shrinks after a dropped topic
# with the rest intact, progress is reported, and it is refused (Busy) while a handle is
# open, opens being refused while it runs.
import os

import pytest

import engram


def fill(log, topic, n, size):
    log.append_many(topic, [("memory.saved", os.urandom(size)) for _ in range(n)])


def test_reclaim_gives_a_dropped_topic_s_space_back_and_keeps_the_rest(log_path):
    with engram.open(log_path) as log:
        log.create_topic("keep", max_events=1000)
        for i in range(20):
            log.append("keep", "memory.saved", {"i": i}, key=f"m{i}", idempotency_key=f"k{i}")
        log.create_topic("big")
        for _ in range(10):
            fill(log, "big", 500, 2000)
        log.drop_topic("big")
        before = [(e.offset, e.type, e.key, e.payload) for e in log.read("keep", 1, 100)]
    size = os.path.getsize(os.path.join(log_path, "data.mdb"))
    seen = []
    r = engram.reclaim(log_path, progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert r["bytes_before"] == size
    assert r["bytes_after"] * 5 < size
    assert r["bytes_after"] == os.path.getsize(os.path.join(log_path, "data.mdb"))
    phases = [p for p, _, _ in seen]
    assert phases[0] == "copying" and phases[-1] == "swapping"
    assert all(d <= t for _, d, t in seen)
    with engram.open(log_path) as log:
        assert [(e.offset, e.type, e.key, e.payload) for e in log.read("keep", 1, 100)] == before
        assert log.topic("keep").max_events == 1000
        assert log.verify()["damaged"] == 0


def test_reclaim_is_refused_while_the_log_is_open(log_path):
    with engram.open(log_path) as log:
        log.create_topic("t")
        with pytest.raises(engram.Busy, match="this process"):
            engram.reclaim(log_path)
        log.append("t", "memory.saved", b"x")
    assert engram.reclaim(log_path)["bytes_after"] > 0


def test_a_progress_callback_that_raises_is_raised_after_the_reclaim(log_path):
    with engram.open(log_path) as log:
        log.create_topic("t")

    def boom(phase, done, total):
        raise ValueError("stop")

    with pytest.raises(ValueError, match="stop"):
        engram.reclaim(log_path, progress=boom)
    with engram.open(log_path) as log:
        assert log.topic("t").count == 0


def test_reclaim_of_no_log_is_not_found(tmp_path):
    with pytest.raises(engram.NotFound, match="no log there"):
        engram.reclaim(str(tmp_path / "none"))
    with pytest.raises(TypeError):
        engram.reclaim(str(tmp_path), progress=3)


def test_a_log_reports_the_progress_of_verify_backup_and_compact(log, tmp_path):
    log.create_topic("t", max_events=10)
    for _ in range(3):
        fill(log, "t", 200, 500)
    seen = []
    log.set_progress(lambda phase, done, total: seen.append((phase, done, total)))
    log.verify()
    log.backup(str(tmp_path / "copy"))
    log.compact()
    phases = []
    for p, d, t in seen:
        assert d <= t
        if not phases or phases[-1] != p:
            phases.append(p)
    assert phases == ["checking records", "checking databases", "copying", "applying retention"]
    assert ("checking records", 600, 600) in seen
    log.set_progress(None)
    n = len(seen)
    log.verify()
    assert len(seen) == n
    with pytest.raises(TypeError):
        log.set_progress(3)
