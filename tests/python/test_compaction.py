# test_compaction.py — key compaction from Python: set at creation and with set_retention,
# tombstones by flag and by the topic's tombstone type, reads skipping the removed
# offsets, embedded and through `engram serve`.
import pytest

import engram
from served import start_daemon, stop_daemon


@pytest.fixture
def daemon(tmp_path):
    p, endpoint = start_daemon(tmp_path)
    yield endpoint
    stop_daemon(p)


def fill(log):
    log.create_topic("m", compact_by_key=True, tombstone_ttl=0.001, tombstone_type="memory.deleted")
    log.append("m", "memory.saved", {"v": 1}, key="a")            # 1
    log.append("m", "memory.updated", {"v": 2}, key="a")          # 2
    log.append("m", "memory.saved", {"v": 1}, key="b")            # 3
    log.append("m", "memory.deleted", None, key="b")              # 4: the topic's type
    log.append("m", "memory.queried", {"q": 1})                   # 5: no key, always kept
    log.append("m", "memory.forget", None, key="c", tombstone=True)  # 6: the flag


def check(log):
    t = log.topic("m")
    assert (t.compact_by_key, t.tombstone_ttl, t.tombstone_type) == (True, 0.001, "memory.deleted")
    assert log.get("m", 4).tombstone and log.get("m", 6).tombstone
    assert not log.get("m", 2).tombstone
    import time
    time.sleep(0.01)  # the tombstones' ttl of 1 ms passes
    r = log.compact("m")
    assert (r["compacted"], r["tombstones"]) == (4, 2)
    b = log.read("m", 1, 100)
    assert [e.offset for e in b] == [2, 5]
    assert (b.from_offset, b.next_offset, b.removed, b.gone()) == (1, 7, 4, [1, 3, 4, 6])
    with pytest.raises(engram.NotFound, match="key compaction"):
        log.get("m", 1)
    t = log.topic("m")
    assert (t.count, t.head_offset, t.compacted) == (2, 6, 4)
    assert log.append("m", "memory.saved", None, key="b") == 7


def test_compaction_embedded(log):
    fill(log)
    check(log)


def test_compaction_through_the_daemon(daemon):
    with engram.connect(daemon) as log:
        fill(log)
        check(log)


def test_set_retention_turns_compaction_on_and_off(log):
    log.create_topic("t")
    for i in range(5):
        log.append("t", "memory.updated", {"i": i}, key="k")
    t = log.set_retention("t", compact_by_key=True, tombstone_ttl=60)
    assert (t.compact_by_key, t.tombstone_ttl, t.tombstone_type) == (True, 60, None)
    r = log.compact("t")
    assert (r["indexed"], r["compacted"]) == (5, 4)
    t = log.set_retention("t", compact_by_key=False)
    assert not t.compact_by_key and t.tombstone_ttl == 60
    with pytest.raises(engram.InvalidArgument):
        log.set_retention("t", tombstone_type="not a type")
    with pytest.raises(engram.InvalidArgument):
        log.append("t", "memory.deleted", None, tombstone=True)  # no key
    log.append_many("t", [engram.Message("memory.deleted", None, key="k", tombstone=True)])
    log.append_async("t", "memory.deleted", None, key="j", tombstone=True)
    log.flush()
    assert [e.tombstone for e in log.read("t", 6)] == [True, True]
