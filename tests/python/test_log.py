# test_log.py — opening logs, appending every payload kind, reading, topics, the shared
# handle, closing, fork safety, and that blocking calls release the GIL.
import datetime as dt
import os
import threading
import time

import pytest

import engram


def test_append_returns_dense_offsets_from_one(log):
    assert [log.append("memory", "memory.saved", b"x") for _ in range(3)] == [1, 2, 3]


def test_dict_payload_is_stored_as_json_with_its_content_type(log):
    off = log.append("memory", "memory.saved", {"memory_id": "m1", "text": "héllo"})
    ev = log.get("memory", off)
    assert ev.content_type == "application/json"
    assert ev.json() == {"memory_id": "m1", "text": "héllo"}
    assert ev.data == {"memory_id": "m1", "text": "héllo"}


def test_list_str_and_bytes_payloads_round_trip(log):
    a = log.append("t", "x.list", [1, "two", None])
    b = log.append("t", "x.str", "plain text")
    c = log.append("t", "x.bytes", b"\x00\xff raw", content_type="application/octet-stream")
    d = log.append("t", "x.empty")
    assert log.get("t", a).data == [1, "two", None]
    assert log.get("t", b).data == "plain text" and log.get("t", b).content_type.startswith("text/plain")
    assert log.get("t", c).payload == b"\x00\xff raw" and log.get("t", c).data == b"\x00\xff raw"
    assert log.get("t", d).payload == b""


def test_every_event_field_comes_back(log):
    before = time.time()
    off = log.append("memory", "memory.updated", {"a": 1}, key="m7",
                     headers={"source": "api", "trace": "abc"}, idempotency_key="req-1")
    ev = log.get("memory", off)
    assert (ev.offset, ev.topic, ev.type, ev.key) == (off, "memory", "memory.updated", "m7")
    assert ev.headers == {"source": "api", "trace": "abc"}
    assert ev.idempotency_key == "req-1"
    assert ev.attempt == 0 and ev.id == f"memory:{off}"
    assert before - 1 <= ev.timestamp.timestamp() <= time.time() + 1
    assert "memory.updated" in repr(ev)


def test_idempotency_key_returns_the_original_offset_and_writes_nothing(log):
    a = log.append("memory", "memory.saved", {"n": 1}, idempotency_key="k")
    b = log.append("memory", "memory.saved", {"n": 2}, idempotency_key="k")
    assert a == b and not a.duplicate and b.duplicate
    assert log.topic("memory").count == 1


def test_delay_sets_deliver_at(log):
    off = log.append("memory", "memory.saved", b"", delay=60)
    ev = log.get("memory", off)
    assert ev.deliver_at_ns > time.time_ns() + 50e9
    off2 = log.append("memory", "memory.saved", b"", deliver_at=dt.datetime.now() + dt.timedelta(hours=1))
    assert log.get("memory", off2).deliver_at_ns > time.time_ns() + 3500e9


def test_append_many_is_one_batch_with_offsets_in_order(log):
    offs = log.append_many("memory", [
        engram.Message("memory.saved", {"i": 0}, key="a"),
        {"type": "memory.updated", "payload": {"i": 1}, "key": "a"},
        ("memory.deleted", {"i": 2}),
    ])
    assert offs == [1, 2, 3]
    assert [e.type for e in log.read("memory", 1, 10)] == ["memory.saved", "memory.updated", "memory.deleted"]


def test_an_importer_appends_with_the_original_times_in_order(log):
    hour_ago = time.time_ns() - 3600 * 10**9
    offs = log.append_many("memory", [
        engram.Message("memory.saved", b"a", timestamp_ns=hour_ago),
        {"type": "memory.saved", "payload": b"b", "timestamp_ns": hour_ago + 5,
         "idempotency_key": "k"},
    ])
    assert [e.timestamp_ns for e in log.read("memory", 1, 10)] == [hour_ago, hour_ago + 5]
    assert not any(e.tombstone for e in log.read("memory", 1, 10))
    with pytest.raises(engram.InvalidArgument, match="older than the topic's newest event"):
        log.append_many("memory", [engram.Message("memory.saved", b"c", timestamp_ns=hour_ago)])
    with pytest.raises(engram.InvalidArgument, match="ahead of the log's clock"):
        log.append_many("memory", [engram.Message("memory.saved", b"c",
                                                  timestamp_ns=time.time_ns() + 3600 * 10**9)])
    assert log.topic("memory").count == 2
    # The key's time is the hour-old one: past the default 10-minute window.
    assert log.append("memory", "memory.saved", b"d", idempotency_key="k") == offs[1] + 1


def test_append_many_is_all_or_nothing(log):
    log.append("memory", "memory.saved", b"first")
    with pytest.raises(engram.InvalidArgument):
        log.append_many("memory", [("memory.saved", b"ok"), ("not a type!", b"bad")])
    assert log.topic("memory").count == 1


def test_append_async_then_flush_makes_everything_durable(log):
    for i in range(50):
        log.append_async("memory", "memory.saved", {"i": i})
    log.flush()
    assert log.topic("memory").count == 50


def test_pipelined_appends_are_the_librarys_and_a_refused_event_fails_alone(log):
    # engram_append_async does the pipelining: no Python writer thread is started.
    log.create_topic("small", max_payload=100)
    log.append_async("small", "a.b", b"ok-1")
    log.append_async("small", "a.b", b"x" * 1000)
    log.append_async("small", "a.b", b"ok-2")
    assert not [t for t in threading.enumerate() if t.name == "engram-append-pipeline"]
    with pytest.raises(engram.TooBig):
        log.flush()
    assert [e.payload for e in log.read("small")] == [b"ok-1", b"ok-2"]
    log.flush()  # the error was reported once


def test_pipelined_appends_create_a_missing_topic_and_close_writes_them(log_path):
    with engram.open(log_path) as lg:
        for i in range(20):
            lg.append_async("fresh", "a.b", {"i": i})
    with engram.open(log_path) as lg:
        assert lg.topic("fresh").count == 20
    with engram.open(log_path, create_topics=False) as lg:
        lg.append_async("absent", "a.b", b"")
        with pytest.raises(engram.NotFound):
            lg.flush()


def test_missing_features_is_deprecated_and_empty():
    # The extension links the whole libengram: nothing is ever missing.
    with pytest.warns(DeprecationWarning):
        assert engram.missing_features() == []
    assert not hasattr(engram._engram, "missing")


def test_read_range_and_scan(log):
    log.append_many("t", [("a.b", {"i": i}) for i in range(25)])
    assert [e.json()["i"] for e in log.read("t", 5, 3)] == [4, 5, 6]
    assert log.read("t", 100, 10) == []
    assert len(list(log.scan("t", 1, batch=7))) == 25


def test_topics_are_created_listed_and_dropped(log):
    log.create_topic("alpha", max_payload=1024, no_dict=True)
    log.create_topic("alpha", exist_ok=True)
    with pytest.raises(engram.AlreadyExists):
        log.create_topic("alpha")
    log.append("beta", "x.y", b"")
    info = log.topic("alpha")
    assert info.max_payload == 1024 and info.count == 0 and info.flags == 1
    assert [t.name for t in log.topics()] == ["alpha", "beta"]
    log.drop_topic("alpha")
    with pytest.raises(engram.NotFound):
        log.topic("alpha")


def test_create_topics_false_refuses_unknown_topics(log_path):
    with engram.open(log_path, create_topics=False) as lg:
        with pytest.raises(engram.NotFound):
            lg.append("nope", "x.y", b"")


def test_payload_over_the_topic_limit_is_too_big(log):
    log.create_topic("small", max_payload=100)
    with pytest.raises(engram.TooBig) as e:
        log.append("small", "x.y", b"x" * 101)
    assert e.value.code == -8 and isinstance(e.value, ValueError)


def test_errors_carry_their_code_name_and_context(log):
    with pytest.raises(engram.NotFound) as e:
        log.get("missing", 1)
    assert e.value.code == -2 and e.value.errname == "ENGRAM_ENOTFOUND"
    assert isinstance(e.value, engram.Error) and isinstance(e.value, LookupError)
    assert "missing" in str(e.value)
    assert engram.errname(-2) == "ENGRAM_ENOTFOUND" and engram.strerror(-2)


def test_context_manager_closes_and_calls_after_close_raise_closed(log_path):
    with engram.open(log_path) as lg:
        lg.append("t", "x.y", b"")
    assert lg.closed
    with pytest.raises(engram.Closed):
        lg.append("t", "x.y", b"")
    lg.close()  # idempotent


def test_opening_an_open_directory_shares_the_handle(log_path):
    a = engram.open(log_path)
    b = engram.open(log_path)
    a.append("t", "x.y", b"1")
    a.close()
    assert b.append("t", "x.y", b"2") == 2  # still usable: b holds its own reference
    b.close()
    with engram.open(log_path, create=False) as c:
        assert c.topic("t").count == 2


def test_open_nocreate_on_a_missing_log_is_not_found(tmp_path):
    with pytest.raises(engram.NotFound):
        engram.open(str(tmp_path / "none"), create=False)


def test_a_read_only_open_reads_and_refuses_writes(log_path):
    with engram.open(log_path) as lg:
        lg.append("t", "x.y", b"1")
    data = os.path.join(log_path, "data.mdb")
    before = open(data, "rb").read()
    with engram.open(log_path, read_only=True) as ro:
        assert ro.topic("t").count == 1
        with pytest.raises(engram.NotSupported, match="read-only"):
            ro.append("t", "x.y", b"2")
        with pytest.raises(engram.InvalidArgument, match="read-only"):
            engram.open(log_path)
    assert open(data, "rb").read() == before


def test_open_of_something_that_is_not_a_log_says_what_it_is(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(engram.AlreadyExists, match="is a file, not a log directory"):
        engram.open(str(f))


def test_durability_modes_open(tmp_path):
    for mode in ("sync", "nometasync", "async"):
        with engram.open(str(tmp_path / mode), durability=mode, flush_interval=0.1) as lg:
            lg.append("t", "x.y", b"")
            lg.sync()


def test_backup_and_verify(log, tmp_path):
    log.append_many("t", [("x.y", {"i": i}) for i in range(10)])
    log.backup(tmp_path / "copy")
    rep = log.verify()
    assert rep["records"] == 10 and rep["damaged"] == 0
    with engram.open(str(tmp_path / "copy")) as copy:
        assert copy.topic("t").count == 10


def test_stats_lists_topics(log):
    log.append("memory", "memory.saved", b"")
    s = log.stats()
    assert s["topics"][0]["topic"] == "memory" and s["topics"][0]["count"] == 1


def test_log_info_names_the_log_and_a_backup_keeps_it(log, tmp_path):
    info = log.log_info()
    assert len(info["id"]) == 32 and int(info["id"], 16) >= 0
    assert info["created_ns"] > 0 and info["format_version"] == 1
    assert log.stats()["log"] == info
    log.backup(tmp_path / "copy")
    with engram.open(str(tmp_path / "copy")) as copy:
        assert copy.log_info() == info
    with engram.open(str(tmp_path / "other")) as other:
        assert other.log_info()["id"] != info["id"]


def test_space_moves_a_dropped_topics_pages_from_used_to_free(log):
    log.create_topic("bulk")
    log.append_many("bulk", [("memory.saved", os.urandom(3000)) for _ in range(2000)])
    full = log.space()
    assert set(full) == {"file_bytes", "used_bytes", "free_bytes", "map_bytes"}
    assert full["used_bytes"] > 6 << 20 and full["map_bytes"] >= full["used_bytes"]
    log.drop_topic("bulk")
    dropped = log.space()
    assert dropped["free_bytes"] > 6 << 20 and dropped["used_bytes"] * 4 < full["used_bytes"]
    assert log.stats()["space"] == dropped


def test_a_forked_child_cannot_use_the_parents_handle_but_can_open_its_own(log, log_path):
    log.append("t", "x.y", b"")
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            log.append("t", "x.y", b"")
            code = 10
        except engram.Closed:
            pass
        try:
            with engram.open(log_path) as mine:
                mine.append("t", "x.y", b"child")
        except Exception:
            code = 11
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert log.topic("t").count == 2
def test_a_blocking_fetch_releases_the_gil(log):
    g = log.group("t", "g", create_topic=True)
    got = []
    t = threading.Thread(target=lambda: got.extend(g.fetch("c", 1, wait=2.0)))
    t.start()
    time.sleep(0.1)
    spins = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.2:  # this thread runs while the other one waits
        spins += 1
    log.append("t", "x.y", b"wake")
    t.join(3)
    assert spins > 1000 and len(got) == 1


def test_close_waits_for_a_call_running_in_another_thread(log_path):
    lg = engram.open(log_path)
    lg.append("t", "x.y", b"")
    done = []

    def reader():
        for _ in range(200):
            try:
                lg.read("t", 1, 10)
            except engram.Closed:
                done.append("closed")
                return
        done.append("finished")
    th = threading.Thread(target=reader)
    th.start()
    lg.close()
    th.join(5)
    assert done
