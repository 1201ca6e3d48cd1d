# test_schedules.py — schedules from Python: add / set / show / list / pause / resume /
# remove / run-now, bad input (errors name what is wrong; the log is unchanged), and
# firing at given times through tick_schedules (a test clock: no sleeps), embedded and
# through `engram serve`.
import datetime as dt
import os

import pytest

import engram
from served import ENGRAM, start_daemon, stop_daemon

DAY = 86400
HOUR = 3600


@pytest.fixture(params=["embedded", "served"])
def lg(request, tmp_path):
    if request.param == "embedded":
        with engram.open(str(tmp_path / "log")) as log:
            yield log
        return
    if not os.access(ENGRAM, os.X_OK):
        pytest.skip(f"{ENGRAM} is not built")
    p, endpoint = start_daemon(tmp_path)
    try:
        with engram.connect(endpoint) as log:
            yield log
    finally:
        stop_daemon(p)


def ticks_ahead(lg):
    """Skips a test that ticks at chosen future times when it runs through a daemon, which
    refuses such ticks (test_a_daemon_refuses_a_tick_ahead_of_its_clock)."""
    if lg.endpoint is not None:
        pytest.skip("a daemon refuses ticks ahead of its clock; the daemon's own firing is "
                    "tested by tests/test_schedule.c")


def future_start():
    """An hour boundary a day ahead: slots the daemon's own ticks cannot reach during a test."""
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    return (now // HOUR + 25) * HOUR


def slot_text(secs):
    return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_add_show_list_and_remove(lg):
    start = future_start()
    s = lg.add_schedule("health", "background", "health.check", {"deep": True}, every=300,
                        start=start, key="h", headers={"from": "test"})
    assert isinstance(s, engram.ScheduleInfo)
    assert (s.name, s.topic, s.type, s.key, s.every, s.cron, s.tz) == (
        "health", "background", "health.check", "h", 300.0, None, "UTC")
    assert s.data() == {"deep": True} and s.content_type == "application/json"
    assert s.headers == {"from": "test"} and s.missed == "once" and not s.paused
    assert s.start == dt.datetime.fromtimestamp(start, dt.timezone.utc)
    assert s.next_slot == s.start and s.fires == 0 and s.last_fire is None
    c = lg.add_schedule("nightly", "maintenance", "cleanup.run", cron="0 2 * * *",
                        tz="Europe/Paris", missed="skip")
    assert (c.cron, c.tz, c.every, c.missed) == ("0 2 * * *", "Europe/Paris", None, "skip")
    assert c.next_slot is not None and c.next_slot.astimezone(dt.timezone.utc).minute == 0
    assert [x.name for x in lg.schedules()] == ["health", "nightly"]
    with pytest.raises(engram.AlreadyExists):
        lg.add_schedule("health", "background", "other", every=60)
    assert lg.schedule("health").type == "health.check"  # unchanged
    lg.remove_schedule("health")
    with pytest.raises(engram.NotFound):
        lg.schedule("health")
    with pytest.raises(engram.NotFound):
        lg.remove_schedule("health")
    assert [x.name for x in lg.schedules()] == ["nightly"]


def test_set_declares_idempotently_and_keeps_the_fire_state(lg):
    ticks_ahead(lg)
    start = future_start()
    kw = dict(every=HOUR, start=start)
    assert lg.set_schedule("s", "t", "tick", {"n": 1}, **kw) == "added"
    assert lg.set_schedule("s", "t", "tick", {"n": 1}, **kw) == "unchanged"
    lg.create_topic("t", exist_ok=True)
    assert lg.tick_schedules(start)["fired"] == 1
    assert lg.set_schedule("s", "t", "tick", {"n": 2}, **kw) == "replaced"
    s = lg.schedule("s")
    assert s.data() == {"n": 2} and s.fires == 1 and s.last_slot.timestamp() == start
    assert lg.tick_schedules(start)["fired"] == 0  # the slot fired stays fired


def test_ticks_fire_each_slot_once(lg):
    ticks_ahead(lg)
    start = future_start()
    lg.create_topic("jobs", exist_ok=True)
    lg.add_schedule("every-hour", "jobs", "job.run", {"x": 1}, every=HOUR, start=start)
    assert lg.tick_schedules(start - 1)["fired"] == 0  # not due yet
    r = lg.tick_schedules(start)
    assert r["fired"] == 1 and r["failed"] == 0 and r["next_due_ns"] == (start + HOUR) * 10**9
    assert lg.tick_schedules(start)["fired"] == 0
    assert lg.tick_schedules(start + 10)["fired"] == 0
    s = lg.schedule("every-hour")
    ev = lg.get("jobs", s.last_offset)
    assert (ev.type, ev.json()) == ("job.run", {"x": 1})
    assert ev.idempotency_key == f"every-hour@{slot_text(start)}"
    assert ev.headers == {"engram-schedule": "every-hour", "engram-slot": slot_text(start),
                          "engram-fire": "scheduled"}
    assert (s.fires, s.last_slot.timestamp(), s.next_slot.timestamp()) == (1, start, start + HOUR)
    for k in range(1, 4):  # three more hours, ticked on time
        assert lg.tick_schedules(start + k * HOUR)["fired"] == 1
    assert lg.schedule("every-hour").fires == 4
    assert [e.headers["engram-slot"] for e in lg.read("jobs", 1, 10)] == [
        slot_text(start + k * HOUR) for k in range(4)]


@pytest.mark.parametrize("missed, fired, slots", [
    ("once", 1, [5]), ("skip", 0, []), ("all", 6, [0, 1, 2, 3, 4, 5]),
])
def test_missed_fire_policies_after_downtime(lg, missed, fired, slots):
    ticks_ahead(lg)
    start = future_start()
    lg.create_topic("jobs", exist_ok=True)
    lg.add_schedule("s", "jobs", "job.run", every=HOUR, start=start, missed=missed)
    # nobody ticked from `start` until 5 hours and a half later
    r = lg.tick_schedules(start + 5 * HOUR + HOUR // 2)
    assert r["fired"] == fired, r
    got = [e.headers["engram-slot"] for e in lg.read("jobs", 1, 100)]
    assert got == [slot_text(start + k * HOUR) for k in slots]
    s = lg.schedule("s")
    assert s.fires == fired and s.skipped == 6 - fired
    assert s.next_slot.timestamp() == start + 6 * HOUR


def test_all_catches_up_at_most_max_catchup(lg):
    ticks_ahead(lg)
    start = future_start()
    lg.create_topic("jobs", exist_ok=True)
    lg.add_schedule("s", "jobs", "job.run", every=60, start=start, missed="all", max_catchup=3)
    r = lg.tick_schedules(start + 10 * 60)
    assert r["fired"] == 3
    assert [e.headers["engram-slot"] for e in lg.read("jobs", 1, 10)] == [
        slot_text(start + k * 60) for k in (8, 9, 10)]


def test_pause_resume_and_run_now(lg):
    ticks_ahead(lg)
    start = future_start()
    lg.create_topic("jobs", exist_ok=True)
    lg.add_schedule("s", "jobs", "job.run", {"n": 7}, every=HOUR, start=start)
    lg.pause_schedule("s")
    lg.pause_schedule("s")  # pausing a paused one does nothing
    assert lg.schedule("s").paused
    assert lg.tick_schedules(start + 2 * HOUR)["fired"] == 0
    off = lg.run_schedule("s")  # fires while paused, outside the slots
    ev = lg.get("jobs", off)
    assert ev.json() == {"n": 7} and ev.headers["engram-fire"] == "manual"
    assert ev.idempotency_key.startswith("s@manual-")
    s = lg.schedule("s")
    assert (s.manual_fires, s.fires, s.last_offset) == (1, 0, off)
    lg.resume_schedule("s")
    lg.resume_schedule("s")
    assert not lg.schedule("s").paused
    # resumed (on the handle's clock, before `start`): a later tick applies the missed-fire
    # policy to the slots it finds passed ("once": the newest, as a catch-up)
    assert lg.tick_schedules(start + 2 * HOUR + 60)["fired"] == 1
    ev = lg.get("jobs", lg.schedule("s").last_offset)
    assert ev.headers["engram-slot"] == slot_text(start + 2 * HOUR)
    assert ev.headers["engram-fire"] == "catchup"
    assert lg.tick_schedules(start + 3 * HOUR)["fired"] == 1


CLOCK_SCRIPT = r"""
import json, struct, sys
import engram
clock = sys.argv[1]
def at(secs):
    with open(clock, "wb") as f:
        f.write(struct.pack("<q", int(secs) * 10**9))
T = 1_900_000_000 - 1_900_000_000 % 3600  # an hour boundary in 2030
at(T - 10)
out = {}
with engram.open(sys.argv[2]) as log:
    log.create_topic("jobs")
    log.add_schedule("s", "jobs", "job.run", every=3600)
    out["next"] = log.schedule("s").next_slot_ns // 10**9 - T
    at(T)
    out["first"] = log.tick_schedules()["fired"]
    at(T + 1800)
    log.pause_schedule("s")
    at(T + 3 * 3600 + 60)        # 3 slots fall while it is paused
    out["paused"] = log.tick_schedules()["fired"]
    log.resume_schedule("s")     # they are skipped, not caught up
    out["resumed"] = log.tick_schedules()["fired"]
    s = log.schedule("s")
    out["skipped"], out["next_after"] = s.skipped, s.next_slot_ns // 10**9 - T
    at(T + 4 * 3600)
    out["on_time"] = log.tick_schedules()["fired"]
    out["slots"] = [e.headers["engram-slot"] for e in log.read("jobs", 1, 10)]
print(json.dumps(out))
"""


def test_slots_that_fall_while_paused_are_skipped_on_a_test_clock(tmp_path):
    # The handle's clock is the test clock file (ENGRAM_TEST_CLOCK_FILE, read by the C
    # library once per process: hence a child process).
    import json
    import subprocess
    import sys
    from conftest import child_env
    clock = tmp_path / "clock"
    r = subprocess.run([sys.executable, "-c", CLOCK_SCRIPT, str(clock), str(tmp_path / "log")],
                       env=child_env(ENGRAM_TEST_CLOCK_FILE=str(clock)), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    T = 1_900_000_000 - 1_900_000_000 % 3600
    assert out == {"next": 0, "first": 1, "paused": 0, "resumed": 0, "skipped": 3,
                   "next_after": 4 * 3600, "on_time": 1,
                   "slots": [slot_text(T), slot_text(T + 4 * 3600)]}


def test_a_fire_into_a_missing_topic_fails_and_is_tried_again(lg):
    ticks_ahead(lg)
    start = future_start()
    lg.add_schedule("s", "later", "job.run", every=HOUR, start=start)
    r = lg.tick_schedules(start)
    assert (r["fired"], r["failed"]) == (0, 1) and "later" in r["first_error"]
    lg.create_topic("later")
    assert lg.tick_schedules(start + 60)["fired"] == 1


@pytest.mark.parametrize("kw, err, match", [
    (dict(), engram.InvalidArgument, "every"),                              # neither
    (dict(every=60, cron="* * * * *"), engram.InvalidArgument, "every"),    # both
    (dict(cron="61 * * * *"), engram.InvalidArgument, "cron"),
    (dict(cron="* * * *"), engram.InvalidArgument, "cron"),
    (dict(cron="0 2 * * *", tz="Mars/Olympus_Mons"), engram.InvalidArgument, "Mars"),
    (dict(every=0.5), engram.InvalidArgument, "interval of 500 ms"),
    (dict(every=-1), engram.InvalidArgument, "every"),
    (dict(every=60, missed="sometimes"), engram.InvalidArgument, "missed"),
    (dict(every="5m"), TypeError, "every"),
    (dict(every=60, headers={"engram-slot": "x"}), engram.InvalidArgument, "engram-"),
])
def test_bad_input_is_refused_and_changes_nothing(lg, kw, err, match):
    with pytest.raises(err, match=match):
        lg.add_schedule("s", "jobs", "job.run", **kw)
    with pytest.raises(err, match=match):
        lg.set_schedule("s", "jobs", "job.run", **kw)
    assert lg.schedules() == []


@pytest.mark.parametrize("name", ["", "has space", "x" * 201, "a/b"])
def test_bad_names_are_refused(lg, name):
    with pytest.raises(engram.InvalidArgument):
        lg.add_schedule(name, "jobs", "job.run", every=60)
    assert lg.schedules() == []
    with pytest.raises((engram.InvalidArgument, engram.NotFound)):
        lg.pause_schedule(name)


def test_missing_schedules_raise_not_found(lg):
    for call in (lg.schedule, lg.remove_schedule, lg.pause_schedule, lg.resume_schedule,
                 lg.run_schedule):
        with pytest.raises(engram.NotFound):
            call("nope")


def test_types_are_checked_before_the_call(lg):
    with pytest.raises(TypeError):
        lg.add_schedule(1, "jobs", "job.run", every=60)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        lg.add_schedule("s", "jobs", "job.run", every=60, headers={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        lg.tick_schedules("now")  # type: ignore[arg-type]


def test_a_daemon_refuses_a_tick_ahead_of_its_clock(lg):
    # A slot fired early never fires at its time: through `engram serve` a tick may not be
    # more than a second ahead of the daemon's clock (embedded, the caller owns the clock).
    if lg.endpoint is None:
        pytest.skip("a daemon's rule")
    start = future_start()
    lg.add_schedule("ahead", "t", "x.y", every=HOUR, start=start)
    with pytest.raises(engram.InvalidArgument, match="ahead of the daemon's clock"):
        lg.tick_schedules(start)
    assert lg.schedule("ahead").fires == 0
    assert lg.tick_schedules()["fired"] == 0  # its own clock: nothing due yet
