# test_rates.py — Log.rates(): events per second over 1, 5 and 15 minutes from the log
# itself (a later read-only open sees what the writer did), and the nack, reject and dead-letter
# counters of GroupInfo and stats(); the same through `engram serve`.
import pytest

import engram
from test_remote import daemon  # noqa: F401  (fixture)


def check_rates(log):
    g = log.group("memory", "indexer", create_topic=True, max_deliver=1)
    for i in range(6):
        log.append("memory", "memory.saved", {"id": i})
    evs = g.consumer("w").fetch(6)
    assert len(evs) == 6
    evs[0].ack()
    evs[1].nack(error="boom")  # max_deliver 1: dead-lettered
    evs[2].reject("poison")
    info = g.info()
    assert (info.nacked, info.rejected, info.dead_lettered) == (1, 1, 2)
    st = [x for x in log.stats()["groups"] if x["group"] == "indexer"][0]
    assert (st["nacked"], st["rejected"], st["dead_lettered"]) == (1, 1, 2)
    for h in (log,):
        rows = h.rates()
        assert [(r.topic, r.group) for r in rows] == [("memory", None), ("memory", "indexer")]
        t, r = rows
        assert len(r.acked) == 3
        assert all(x > 0 for x in t.appended) and t.acked == (0.0, 0.0, 0.0)
        assert r.appended == t.appended
        assert all(x > 0 for x in r.delivered + r.acked + r.nacked + r.rejected + r.dead_lettered)
        # At most the counts over one second (young topic: divided by its age).
        assert r.appended[0] <= 6 and r.dead_lettered[0] <= 2
        assert [(r.topic, r.group) for r in h.rates("memory")] == [("memory", None),
                                                                  ("memory", "indexer")]
    with pytest.raises(engram.NotFound):
        log.rates("missing")
    with pytest.raises(engram.InvalidArgument):
        log.rates("bad name")


def test_rates_and_counters_embedded(log_path):
    with engram.open(log_path) as log:
        check_rates(log)
    # The rates live in the log: a later read-only open sees them.
    with engram.open(log_path, read_only=True) as ro:
        rows = ro.rates()
        assert rows[1].group == "indexer" and rows[1].acked[2] > 0


def test_rates_and_counters_through_the_daemon(daemon):  # noqa: F811
    with engram.connect(daemon) as log:
        check_rates(log)
