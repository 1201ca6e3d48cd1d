# test_retention.py — retention limits from Python: set at creation, changed with
# set_retention, applied by compact() (embedded and through `engram serve`), and by the
# daemon in the background.
import datetime as dt

import pytest

import engram
from conftest import wait_until
from served import start_daemon, stop_daemon


@pytest.fixture
def daemon(tmp_path):
    p, endpoint = start_daemon(tmp_path)
    yield endpoint
    stop_daemon(p)


def test_limits_are_set_at_creation_and_shown_by_topic(log):
    log.create_topic("t", max_events=5, max_age=dt.timedelta(days=7))
    t = log.topic("t")
    assert (t.max_events, t.max_age, t.max_bytes, t.retain_force) == (5, 7 * 86400, None, False)


def test_compact_removes_the_oldest_events_and_offsets_go_on(log):
    log.create_topic("t", max_events=3)
    for i in range(10):
        log.append("t", "memory.saved", b"x")
    r = log.compact("t")
    assert r["removed"] == 7
    t = log.topic("t")
    assert (t.first_offset, t.head_offset, t.count) == (8, 10, 3)
    with pytest.raises(engram.NotFound, match="removed by retention"):
        log.get("t", 2)
    assert log.append("t", "memory.saved", b"x") == 11


def test_set_retention_changes_only_what_is_given(log):
    log.create_topic("t", max_events=5, max_bytes=1 << 20)
    t = log.set_retention("t", max_events=None, retain_force=True)
    assert (t.max_events, t.max_bytes, t.retain_force) == (None, 1 << 20, True)
    with pytest.raises(ValueError):
        log.set_retention("t", max_events=-1)
    with pytest.raises(engram.NotFound):
        log.set_retention("nope", max_events=1)


def test_forced_retention_counts_skipped_events_in_the_group(log):
    log.create_topic("t", max_events=2)
    g = log.group("t", "g")
    for i in range(6):
        log.append("t", "memory.saved", b"x")
    assert log.compact("t")["held_at"] == 1
    log.set_retention("t", retain_force=True)
    assert log.compact("t")["skipped"] == 4
    assert g.info().retention_skipped == 4


def test_the_daemon_applies_retention_in_the_background(daemon):
    with engram.connect(daemon) as c:
        c.create_topic("t", max_events=4)
        for i in range(20):
            c.append("t", "memory.saved", b"x")
        assert wait_until(lambda: c.topic("t").count == 4, 30)
        assert c.topic("t").first_offset == 17
        c.set_retention("t", max_events=2)
        assert c.compact()["removed"] in (0, 2)  # the background may have been first
        assert wait_until(lambda: c.topic("t").count == 2, 30)
