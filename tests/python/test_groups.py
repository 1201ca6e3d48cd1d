# test_groups.py — consumer groups from Python: iteration, ack/nack/reject/extend, fencing,
# results, dead-letter queue and redrive, replay, filters, transactions, asyncio.
import asyncio
import datetime as dt
import os
import signal
import threading
import time

import pytest

import engram



def fill(log, n, topic="memory", type="memory.saved"):
    return log.append_many(topic, [(type, {"i": i}) for i in range(n)])


def test_a_consumer_iterates_over_every_event_and_acks(log):
    fill(log, 10)
    g = log.group("memory", "idx")
    seen = []
    for ev in g.consumer("c1", wait=0.1, idle_timeout=0.3):
        seen.append(ev.json()["i"])
        assert ev.attempt == 1
        ev.ack()
    assert seen == list(range(10))
    info = g.info()
    assert info.acked == 10 and info.lag == 0 and info.floor == 10


def test_group_config_is_applied(log):
    g = log.group("memory", "cfg", create_topic=True, filters=["memory.saved", "memory.updated"], ack_wait=2.5,
                  max_deliver=3, backoff=[0.1, 0.5], result_ttl=60, key_ordered=True)
    info = g.info()
    assert info.filters == ["memory.saved", "memory.updated"]
    assert (info.ack_wait, info.max_deliver, info.backoff, info.result_ttl) == (2.5, 3, [0.1, 0.5], 60.0)
    assert info.key_ordered
    assert [x.name for x in log.groups("memory")] == ["cfg"]
    g.delete()
    assert log.groups("memory") == []


def test_filters_deliver_only_matching_types(log):
    log.append_many("memory", [("memory.saved", {}), ("memory.queried", {}), ("memory.updated", {})])
    g = log.group("memory", "writes", filters=["memory.saved", "memory.updated"])
    evs = g.fetch("c", 10)
    assert [e.type for e in evs] == ["memory.saved", "memory.updated"]
    assert g.status(2).state == "skipped"


def test_two_consumers_of_one_group_never_get_the_same_event(log):
    fill(log, 40)
    g = log.group("memory", "shared")
    a, b = g.consumer("a", batch=5), g.consumer("b", batch=5)
    got = {"a": [], "b": []}
    while True:
        ea, eb = a.fetch(wait=0), b.fetch(wait=0)
        if not ea and not eb:
            break
        for name, evs in (("a", ea), ("b", eb)):
            for e in evs:
                got[name].append(e.offset)
                e.ack()
    assert sorted(got["a"] + got["b"]) == list(range(1, 41))
    assert not set(got["a"]) & set(got["b"]) and got["a"] and got["b"]


def test_an_unacked_event_is_delivered_again_after_ack_wait(log):
    fill(log, 1)
    g = log.group("memory", "lease", ack_wait=0.3, backoff=[0.01])
    first = g.fetch("a", 1)[0]
    again = g.fetch("b", 1, wait=2.0)
    assert again and again[0].offset == first.offset and again[0].attempt == 2


def test_a_stale_ack_is_refused(log):
    fill(log, 1)
    g = log.group("memory", "fence", ack_wait=0.2, backoff=[0.01])
    old = g.fetch("slow", 1)[0]
    new = g.fetch("fast", 1, wait=2.0)[0]
    with pytest.raises(engram.StaleLease) as e:
        old.ack()
    assert e.value.code == -11
    new.ack()
    with pytest.raises(engram.AlreadyDone):
        new.ack()


def test_nack_with_delay_redelivers_later_with_the_error_kept(log):
    fill(log, 1)
    g = log.group("memory", "nack", backoff=[5])
    ev = g.fetch("c", 1)[0]
    ev.nack(delay=0.2, error="db down")
    assert g.status(ev.offset).state == "retrying"
    assert g.status(ev.offset).last_error == "db down"
    assert g.fetch("c", 1, wait=0) == []
    again = g.fetch("c", 1, wait=2.0)
    assert again[0].attempt == 2


def test_extend_keeps_the_lease(log):
    fill(log, 1)
    g = log.group("memory", "ext", ack_wait=0.3)
    ev = g.fetch("c", 1)[0]
    for _ in range(3):
        time.sleep(0.15)
        ev.extend(0.3)
    assert g.fetch("other", 1, wait=0) == []
    ev.ack()


def test_ack_result_is_kept_and_readable_through_status(log):
    fill(log, 1)
    g = log.group("memory", "res")
    ev = g.fetch("c", 1)[0]
    ev.ack({"indexed": True})
    st = ev.status()
    assert st.state == "done" and st.result == b'{"indexed":true}'


def test_max_deliver_sends_to_the_dlq_and_redrive_delivers_again(log):
    fill(log, 2)
    g = log.group("memory", "dlq", max_deliver=2, backoff=[0.01])
    for _ in range(2):
        for ev in g.fetch("c", 2, wait=1.0):
            if ev.offset == 1:
                ev.nack(delay=0, error="handler crashed")
            else:
                ev.ack()
        time.sleep(0.03)
    dead = g.dlq()
    assert [d.offset for d in dead] == [1]
    assert dead[0].attempts == 2 and dead[0].last_error == "handler crashed"
    assert "max_deliver" in dead[0].reason and g.info().dead == 1
    assert g.redrive() == 1
    assert g.dlq() == []
    ev = g.fetch("c", 1, wait=1.0)[0]
    assert ev.offset == 1
    ev.ack()
    assert g.status(1).state == "done"


def test_reject_goes_to_the_dlq_at_once_and_purge_removes_it(log):
    fill(log, 1)
    g = log.group("memory", "rej")
    ev = g.fetch("c", 1)[0]
    ev.reject("bad payload")
    d = g.dlq()
    assert len(d) == 1 and "bad payload" in d[0].reason
    with pytest.raises(engram.Dead):
        ev.ack()
    assert g.purge_dlq() == 1 and g.dlq() == []


def test_replay_from_an_offset_a_time_and_the_start(log):
    fill(log, 5)
    g = log.group("memory", "replay")
    for ev in g.consumer("c", wait=0, idle_timeout=0):
        ev.ack()
    g.reset(3)
    assert [e.offset for e in g.fetch("c", 10)] == [3, 4, 5]
    g.reset(to="earliest")
    assert [e.offset for e in g.fetch("c", 10)] == [1, 2, 3, 4, 5]
    t = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    fill(log, 2)
    g.replay(time=t)
    assert [e.offset for e in g.fetch("c", 10)] == [6, 7]
    g.reset(to="latest")
    assert g.fetch("c", 10) == []


def test_start_latest_skips_what_is_already_there(log):
    fill(log, 3)
    g = log.group("memory", "late", start="latest")
    fill(log, 1)
    assert [e.offset for e in g.fetch("c", 10)] == [4]


def test_cancel_finishes_a_pending_event_without_delivering_it(log):
    fill(log, 2)
    g = log.group("memory", "cancel")
    g.cancel(2)
    assert [e.offset for e in g.fetch("c", 10)] == [1]
    assert g.status(2).state == "done"


def test_delayed_events_wait_for_their_time(log):
    log.append("memory", "memory.saved", {}, delay=0.3)
    g = log.group("memory", "delayed")
    assert g.fetch("c", 1, wait=0) == []
    assert len(g.fetch("c", 1, wait=2.0)) == 1


def test_a_transaction_acks_and_appends_together(log):
    fill(log, 1)
    log.create_topic("out")
    g = log.group("memory", "tx")
    ev = g.fetch("c", 1)[0]
    with log.transaction() as tx:
        tx.ack(ev, result="ok")
        tx.append("out", "memory.indexed", {"from": ev.offset})
    assert tx.offsets == [1]
    assert g.status(ev.offset).state == "done"
    assert log.get("out", 1).json() == {"from": 1}


def test_a_failed_transaction_applies_nothing(log):
    fill(log, 1)
    log.create_topic("out")
    g = log.group("memory", "tx2")
    ev = g.fetch("c", 1)[0]
    ev.ack()
    tx = log.transaction()
    tx.ack(ev)  # already done: the commit fails
    tx.append("out", "memory.indexed", {})
    with pytest.raises(engram.Error):
        tx.commit()
    assert log.topic("out").count == 0


def test_a_blocking_consumer_wakes_up_when_an_event_arrives(log):
    g = log.group("memory", "wake", create_topic=True)
    got = []

    def consume():
        for ev in g.consumer("c", wait=5.0):
            got.append(time.monotonic())
            ev.ack()
            return
    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.2)
    sent = time.monotonic()
    log.append("memory", "memory.saved", {})
    t.join(6)
    assert got and got[0] - sent < 1.0


def interrupted_after(seconds, call):
    """Runs call() with a SIGINT sent to this process after ``seconds``; returns how long
    the KeyboardInterrupt took to arrive (it must arrive)."""
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        call()
    except KeyboardInterrupt:
        return time.monotonic() - start
    finally:
        timer.cancel()
    pytest.fail("the call returned without the KeyboardInterrupt")


@pytest.mark.parametrize("how", ["fetch", "ack_fetch", "consumer"])
def test_ctrl_c_interrupts_a_fetch_blocked_in_its_wait(log, how):
    # A worker blocked in a long fetch stops at Ctrl-C at once, not when its wait ends.
    g = log.group("memory", "intr", create_topic=True)
    log.append("memory", "memory.saved", {"i": 0})
    first = g.fetch("c1", max=1)
    calls = {"fetch": lambda: g.fetch("c1", max=1, wait=30),
             "ack_fetch": lambda: g.ack_fetch("c1", first, max=1, wait=30),
             "consumer": lambda: next(iter(g.consumer("c1", wait=30)))}
    took = interrupted_after(0.3, calls[how])
    assert took < 5, f"KeyboardInterrupt came {took:.1f} s after the call, the wait being 30 s"
    if how == "ack_fetch":
        assert g.info().acked == 1  # the acks were applied before the wait


def test_a_wait_over_the_librarys_limit_is_refused_not_waited(log):
    # A wait is spent in slices, but one over the library's limit (an hour) is still an
    # error, as it is in C, not a wait of that length.
    g = log.group("memory", "long", create_topic=True)
    out = {}

    def fetch():
        try:
            out["got"] = g.fetch("c1", wait=3601)
        except engram.Error as e:
            out["got"] = e
    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    t.join(5)
    assert isinstance(out.get("got"), engram.InvalidArgument), out
    assert "3601000" in str(out["got"]) or "wait" in str(out["got"])


def test_close_does_not_wait_for_a_fetch_blocked_in_its_wait(tmp_path):
    # close() waits for running calls; a fetch waiting 20 s ends its slice and sees the
    # handle closing, so close returns at once and the fetch raises Closed.
    log = engram.open(tmp_path / "log")
    g = log.group("memory", "closing", create_topic=True)
    out = {}

    def wait():
        try:
            out["got"] = g.fetch("c1", wait=20)
        except engram.Closed as e:
            out["got"] = e
    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    start = time.monotonic()
    log.close()
    took = time.monotonic() - start
    t.join(5)
    assert took < 5, f"close waited {took:.1f} s for the fetch's 20 s wait"
    assert isinstance(out.get("got"), engram.Closed)


def test_stop_ends_iteration_and_releases_prefetched_events(log):
    fill(log, 5)
    g = log.group("memory", "stop", backoff=[0.01])
    c = g.consumer("c", batch=5, wait=0.1)
    for ev in c:
        ev.ack()
        c.stop()
    assert g.info().acked == 1
    rest = g.fetch("d", 10, wait=1.0)
    assert sorted(e.offset for e in rest) == [2, 3, 4, 5]


def test_async_for_consumes_without_blocking_the_loop(log):
    fill(log, 20)
    g = log.group("memory", "aio")

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)
        tk = asyncio.create_task(ticker())
        c = g.consumer("c", batch=4, wait=0.5, idle_timeout=1.0)
        seen = []
        async for ev in c:
            seen.append(ev.offset)
            ev.ack()
            if len(seen) == 20:
                # Nothing more: the next fetch blocks in its thread while the loop ticks on.
                t0 = ticks
                await asyncio.sleep(0.3)
                assert ticks - t0 >= 10
                await c.aclose()
        stop.set()
        await tk
        return seen
    seen = asyncio.run(asyncio.wait_for(main(), 20))
    assert seen == list(range(1, 21))


def test_async_consumer_sees_events_appended_later(log):
    g = log.group("memory", "aio2", create_topic=True)

    async def main():
        c = g.consumer("c", wait=0.2)
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, lambda: log.append("memory", "memory.saved", {"late": True}))
        async for ev in c:
            ev.ack()
            await c.aclose()
            return ev.json()
    assert asyncio.run(asyncio.wait_for(main(), 10)) == {"late": True}


def test_ack_many_reports_each_item(log):
    fill(log, 3)
    g = log.group("memory", "many")
    evs = g.fetch("c", 3)
    codes = g.ack_many([(e.offset, e.attempt) for e in evs] + [(evs[0].offset, evs[0].attempt)])
    assert codes[:3] == [0, 0, 0] and codes[3] == engram.AlreadyDone.code


def test_ack_fetch_acks_a_batch_and_leases_the_next_in_one_call(log):
    fill(log, 5)
    g = log.group("memory", "af")
    first = g.ack_fetch("c", max=2)
    assert [e.offset for e in first] == [1, 2]
    nxt = g.ack_fetch("c", first, max=2)
    assert [e.offset for e in nxt] == [3, 4]
    assert all(e.finished == "acked" for e in first)
    assert g.status(1).state == "done" and g.status(3).state == "in_flight"
    last = g.ack_fetch("c", [(e.offset, e.attempt, {"r": e.offset}) for e in nxt], max=10)
    assert [e.offset for e in last] == [5]
    assert g.status(3).result == b'{"r":3}'
    assert g.ack_fetch("c", last, max=10, wait=0.05) == []
    info = g.info()
    assert (info.acked, info.lag, info.in_flight) == (5, 0, 0)


def test_a_failing_ack_fetch_applies_nothing_and_says_which_ack_failed(log):
    fill(log, 4)
    g = log.group("memory", "af-bad")
    evs = g.fetch("c", 2)
    evs[0].ack()
    with pytest.raises(engram.AlreadyDone) as e:
        g.ack_fetch("c", evs, max=2)
    assert e.value.codes == [engram.AlreadyDone.code, 0]
    assert evs[1].finished is None
    assert g.status(2).state == "in_flight" and g.status(3).state == "pending"
    assert g.info().acked == 1
    # Retried without the failed one, it goes through.
    assert [x.offset for x in g.ack_fetch("c", evs[1:], max=2)] == [3, 4]
    with pytest.raises(engram.InvalidArgument):
        g.ack_fetch("c", [], max=0)
    other = log.group("memory", "af-other")
    with pytest.raises(engram.InvalidArgument):
        other.ack_fetch("c", evs[1:], max=2)
    assert g.status(3).state == "in_flight" and other.info().delivered == 0
