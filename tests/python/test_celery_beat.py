# test_celery_beat.py — Celery beat on engram.celery: crontab() expands as Celery documents
# it and becomes the cron expression that fires at the same times; beat entries and
# add_periodic_task become engram schedules whose fires append what apply_async would;
# declaring is idempotent (unchanged, replaced keeping the last fire, stale ones removed);
# what engram cannot honour raises NotSupported naming it; `python -m engram beat`.
import datetime as dt
import json
import logging
import os
import subprocess
import sys

import pytest

import engram
import engram.celery
from engram.celery import Celery
from engram.celery.exceptions import ImproperlyConfigured
from engram.celery.schedules import ParseException, crontab, crontab_parser, schedule, solar
from conftest import child_env


# -- crontab(): Celery's documented examples (userguide/periodic-tasks, "Crontab schedules")
@pytest.mark.parametrize("made, cron", [
    (crontab(), "* * * * *"),                                              # every minute
    (crontab(minute=0, hour=0), "0 0 * * *"),                              # daily at midnight
    (crontab(minute=0, hour="*/3"), "0 */3 * * *"),                        # every three hours
    (crontab(minute=0, hour="0,3,6,9,12,15,18,21"), "0 */3 * * *"),        # the same
    (crontab(minute="*/15"), "*/15 * * * *"),                              # every 15 minutes
    (crontab(day_of_week="sunday"), "* * * * 0"),                          # every minute on Sundays
    (crontab(minute="*", hour="*", day_of_week="sun"), "* * * * 0"),       # the same
    (crontab(minute="*/10", hour="3,17,22", day_of_week="thu,fri"), "*/10 3,17,22 * * 4-5"),
    (crontab(minute=0, hour="*/2,*/3"), "0 0,2-4,6,8-10,12,14-16,18,20-22 * * *"),
    (crontab(minute=0, hour="*/5"), "0 */5 * * *"),                        # hours divisible by 5
    (crontab(minute=0, hour="*/3,8-17"), "0 0,3,6,8-18,21 * * *"),         # /3 and office hours
    (crontab(0, 0, day_of_month="2"), "0 0 2 * *"),                        # 2nd of each month
    (crontab(0, 0, day_of_month="2-30/2"), "0 0 2,4,6,8,10,12,14,16,18,20,22,24,26,28,30 * *"),
    (crontab(0, 0, day_of_month="1-7,15-21"), "0 0 1-7,15-21 * *"),        # 1st and 3rd weeks
    (crontab(0, 0, day_of_month="11", month_of_year="5"), "0 0 11 5 *"),   # 11 May each year
    (crontab(0, 0, month_of_year="*/3"), "0 0 * */3 *"),                   # each quarter's 1st month
    (crontab(hour=7, minute=30, day_of_week=1), "30 7 * * 1"),             # Mondays 7:30
    (crontab(minute=30, hour=7, day_of_week="mon-fri"), "30 7 * * 1-5"),
    (crontab(minute=0, hour=9, day_of_week="sat-mon"), "0 9 * * 0-1,6"),   # a range wrapping past Saturday
    (crontab(minute={0, 30}, hour=[8, 20]), "*/30 8,20 * * *"),            # sets and lists
    (crontab(0, 0, month_of_year="jan,jul", day_of_month=1), "0 0 1 */6 *"),
    (crontab.from_string("5 4 * * sun"), "5 4 * * 0"),
])
def test_crontab_expands_as_celery_documents(made, cron):
    assert made.cron() == cron


def test_fields_left_out_are_every_value_as_in_celery():
    # The seeds' crontab(hour="*/24") and crontab(hour="*/1"): Celery runs them every minute
    # of those hours (minute defaults to "*"); the mapping keeps that meaning.
    assert crontab(hour="*/24").cron() == "* 0 * * *"
    assert crontab(hour="*/1").cron() == "* * * * *"
    assert crontab(hour=2).cron() == "* 2 * * *"


def test_crontab_parser_matches_celerys_docstring():
    assert crontab_parser(60).parse("*/15") == {0, 15, 30, 45}
    assert crontab_parser(24).parse("*/4") == {0, 4, 8, 12, 16, 20}
    assert crontab_parser(7).parse("*") == set(range(7))
    assert crontab_parser(31, 1).parse("*/3") == {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}
    assert crontab_parser(12, 1).parse("*/2") == {1, 3, 5, 7, 9, 11}
    assert crontab_parser(12, 1).parse("2-12/2") == {2, 4, 6, 8, 10, 12}


@pytest.mark.parametrize("kw, err", [
    ({"minute": 60}, ValueError), ({"hour": "24"}, ValueError), ({"day_of_week": 7}, ValueError),
    ({"day_of_month": 0}, ValueError), ({"month_of_year": 13}, ValueError),
    ({"day_of_week": "funday"}, ValueError), ({"minute": "*/"}, ParseException),
    ({"minute": "1,,2"}, ParseException), ({"minute": "-5"}, ParseException),
    ({"minute": 1.5}, TypeError), ({"minute": True}, TypeError),
])
def test_bad_crontab_fields_raise_as_in_celery(kw, err):
    with pytest.raises(err):
        crontab(**kw)


def test_repr_and_equality_are_celerys():
    c = crontab(minute="*/5", hour="9-17", day_of_week="mon-fri")
    assert repr(c) == "<crontab: */5 9-17 * * mon-fri (m/h/dM/MY/d)>"  # m h dM MY d
    assert c == crontab(minute="0-55/5", hour=set(range(9, 18)), day_of_week="1-5")
    assert repr(schedule(300.0)) == "<freq: 5.00 minutes>"
    assert schedule(dt.timedelta(hours=1)) == schedule(3600)


# -- the app ------------------------------------------------------------------------------
@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setattr(engram.celery, "_shared", [])
    a = Celery("beatapp", broker=str(tmp_path / "log"))

    @a.task(name="beatapp.add")
    def add(x, y):
        return x + y

    @a.task(name="beatapp.ping", queue="pings", priority=3)
    def ping():
        return "pong"
    a.add, a.ping = add, ping
    yield a
    a.close()


def configs(app):
    from engram.celery.beat import entry_config
    return dict(entry_config(app, n, e) for n, e in app.conf.beat_schedule.items())


def test_an_entry_appends_what_apply_async_would(app):
    app.conf.task_routes = {"beatapp.routed": {"queue": "routed"}}
    app.conf.beat_schedule = {
        "add-every-30": {"task": "beatapp.add", "schedule": 30.0, "args": (16, 16)},
        "ping": {"task": "beatapp.ping", "schedule": dt.timedelta(minutes=5)},
        "routed": {"task": "beatapp.routed", "schedule": schedule(60), "kwargs": {"a": 1}},
        "nightly": {"task": "beatapp.add", "schedule": crontab(hour=2, minute=0),
                    "args": [1, 2], "options": {"queue": "night", "priority": 7, "expires": 60}},
    }
    c = configs(app)
    # what apply_async appends for the same call
    sent = app.add.apply_async((16, 16))
    ev = app.log.get(sent.id.split(":")[0], int(sent.id.split(":")[1]))
    a = c["add-every-30"]
    assert (a["topic"], a["type"], a["payload"], a["every"]) == (ev.topic, ev.type, ev.payload, 30.0)
    assert a["content_type"] == ev.content_type
    assert {k: v for k, v in a["headers"].items() if k not in ("periodic_task_name", "celery-beat")} == ev.headers
    assert a["headers"]["periodic_task_name"] == "add-every-30" and a["headers"]["celery-beat"] == "beatapp"
    p = c["ping"]
    assert (p["topic"], p["every"], p["headers"]["priority"]) == ("pings", 300.0, "3")  # the task's queue
    r = c["routed"]
    assert r["topic"] == "routed" and json.loads(r["payload"]) == {"args": [], "kwargs": {"a": 1},
                                                                    "task": "beatapp.routed"}
    n = c["nightly"]
    assert (n["topic"], n["cron"], n["tz"]) == ("night", "0 2 * * *", "UTC")
    assert n["headers"]["priority"] == "7" and n["headers"]["expires_in_ms"] == "60000"
    assert "every" not in n and "cron" not in a


def test_crontab_times_are_read_in_the_apps_timezone(app):
    app.conf.timezone = "Europe/Paris"
    app.conf.beat_schedule = {"n": {"task": "beatapp.add", "schedule": crontab(hour=2, minute=0)}}
    assert configs(app)["n"]["tz"] == "Europe/Paris"
    with pytest.raises(ImproperlyConfigured, match="time zone"):
        app.conf.timezone = "Mars/Olympus_Mons"


def test_add_periodic_task_as_celery_documents(app):
    got = []

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender, **kwargs):
        got.append(sender)
        sender.add_periodic_task(10.0, app.add.s(2, 2), name="add every 10")
        sender.add_periodic_task(30.0, app.add.s(3, 3), expires=10)
        sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), app.ping.s())
    from engram.celery.beat import schedule_name
    app.on_after_configure.send(sender=app)
    assert got == [app]
    entries = app.conf.beat_schedule
    assert set(entries) == {"add every 10", "beatapp.add(3, 3)", "beatapp.ping()"}
    assert entries["beatapp.add(3, 3)"]["options"] == {"expires": 10}
    c = configs(app)
    names = {schedule_name(n) for n in entries}
    assert set(c) == names and "add every 10" not in names  # spaces are not schedule names
    assert schedule_name("add every 10").startswith("add_every_10-")
    assert schedule_name("add every 10") != schedule_name("add_every 10")
    assert c[schedule_name("add every 10")]["headers"]["periodic_task_name"] == "add every 10"
    assert c[schedule_name("beatapp.ping()")]["cron"] == "30 7 * * 1"


def test_a_signature_can_be_sent(app):
    sig = app.add.s(2)
    r = sig.delay(40)  # Celery prepends the new arguments
    app.app.run(1, idle_timeout=0.3, wait=0.05, install_signals=False)
    assert r.get(timeout=5) == 42
    assert repr(app.add.s(1, y=2)) == "beatapp.add(1, y=2)"
    with pytest.raises(engram.NotSupported, match="chains"):
        app.add.s(1, 2) | app.add.s(3)


@pytest.mark.parametrize("entry, match", [
    ({"task": "beatapp.add", "schedule": solar("sunset", -33.87, 151.21)}, "solar"),
    ({"task": "beatapp.add", "schedule": 30, "relative": True}, "relative"),
    ({"task": "beatapp.add", "schedule": schedule(30, relative=True)}, "relative"),
    ({"task": "beatapp.add", "schedule": crontab(nowfun=dt.datetime.now)}, "nowfun"),
    ({"task": "beatapp.add", "schedule": 0.5}, "once a second"),
    ({"task": "beatapp.add", "schedule": crontab(0, 0, day_of_week=1, day_of_month=1)},
     "day_of_month and day_of_week"),
    ({"task": "beatapp.add", "schedule": 30, "options": {"countdown": 5}}, "countdown"),
    ({"task": "beatapp.add", "schedule": 30, "options": {"eta": dt.datetime(2030, 1, 1)}}, "eta"),
    ({"task": "beatapp.add", "schedule": 30, "options": {"task_id": "x"}}, "task id"),
    ({"task": "beatapp.add", "schedule": 30, "options": {"link": "beatapp.ping"}}, "link"),
    ({"task": "beatapp.add", "schedule": 30,
      "options": {"expires": dt.datetime(2030, 1, 1)}}, "expires"),
    ({"task": "beatapp.add", "schedule": "every minute"}, "not supported"),
])
def test_what_engram_cannot_honour_is_refused_naming_it(app, entry, match):
    with pytest.raises(engram.NotSupported, match=match):
        app.conf.beat_schedule = {"e": entry}
        configs(app)


@pytest.mark.parametrize("entry, match", [
    ({"task": "beatapp.add", "schedule": 30, "every": 2}, "unknown key 'every'"),
    ({"schedule": 30}, "'task'"),
    ({"task": "beatapp.add"}, "'schedule' is missing"),
    ({"task": "beatapp.add", "schedule": 30, "args": "x"}, "'args'"),
    ({"task": "beatapp.add", "schedule": 30, "options": {"no_such_option": 1}}, "no_such_option"),
])
def test_malformed_entries_are_refused(app, entry, match):
    with pytest.raises(ImproperlyConfigured, match=match):
        app.conf.beat_schedule = {"e": entry}
        configs(app)


def test_beat_schedulers(app, caplog):
    app.conf.beat_scheduler = "celery.beat:PersistentScheduler"  # Celery's default: the log keeps state
    with caplog.at_level(logging.WARNING, logger="engram.celery"):
        app.conf.beat_scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
    with pytest.raises(engram.NotSupported, match="custom beat schedulers"):
        app.conf.beat_scheduler = "redbeat.RedBeatScheduler"


def test_each_app_has_its_own_beat_schedule(app, tmp_path):
    other = Celery("other", broker=str(tmp_path / "log2"), set_as_current=False)
    try:
        app.add_periodic_task(10, app.add.s(1, 1), name="mine")
        assert other.conf.beat_schedule == {}
    finally:
        other.close()


# -- declaring into the log (needs the C schedules) -----------------------------------------
def schedules_of(app):
    return {s.name: s for s in app.log.schedules() if s.headers.get("celery-beat") == app.main}


def test_declaring_is_idempotent_and_drops_what_the_app_no_longer_declares(app):
    app.conf.beat_schedule = {
        "a": {"task": "beatapp.add", "schedule": 60.0, "args": (1, 2)},
        "b": {"task": "beatapp.ping", "schedule": crontab(minute="*/5")},
    }
    assert app.declare_schedules() == {"a": "added", "b": "added"}
    assert app.declare_schedules() == {"a": "unchanged", "b": "unchanged"}
    s = schedules_of(app)
    assert (s["a"].every, s["b"].cron, s["b"].tz) == (60.0, "*/5 * * * *", "UTC")
    # a fire of a, then a changed a: replaced, keeping its last fire
    # a day ahead: the slot is not one this process's own maintenance ticks reach first
    nxt = s["a"].next_slot_ns // 10**9 + 86400
    assert app.log.tick_schedules(nxt)["fired"] >= 1
    fired = app.log.schedule("a").fires
    app.log.create_topic("kept", exist_ok=True)
    app.log.add_schedule("someone-elses", "kept", "x", every=60)  # not the app's: untouched
    app.conf.beat_schedule = {"a": {"task": "beatapp.add", "schedule": 120.0, "args": (1, 2)}}
    assert app.declare_schedules() == {"a": "replaced", "b": "removed"}
    a = app.log.schedule("a")
    assert a.every == 120.0 and a.fires == fired
    assert set(schedules_of(app)) == {"a"}
    assert "someone-elses" in {x.name for x in app.log.schedules()}
    # a schedule of the same name not made by the app is never taken over
    app.conf.beat_schedule = {"someone-elses": {"task": "beatapp.add", "schedule": 60.0}}
    with pytest.raises(engram.AlreadyExists, match="not declared by app"):
        app.declare_schedules()


def test_a_worker_declares_the_schedule_and_runs_what_fires(app):
    app.conf.beat_schedule = {"add": {"task": "beatapp.add", "schedule": 60.0, "args": (20, 22)}}
    app.app.run(1, idle_timeout=0.2, wait=0.05, install_signals=False)  # declares at start
    s = app.log.schedule("add")
    r = app.log.tick_schedules(s.next_slot_ns // 10**9 + 86400)  # past what real time reaches
    assert r["fired"] == 1, r
    ev = app.log.get("celery", app.log.schedule("add").last_offset)
    assert ev.headers["engram-schedule"] == "add" and ev.headers["task"] == "beatapp.add"
    app.app.run(1, idle_timeout=0.3, wait=0.05, install_signals=False)
    st = app.app.group_for("celery").status(ev.offset)
    assert st.state == "done" and json.loads(st.result) == {"value": 42}


def test_an_app_without_beat_declares_nothing(app):
    assert app.declare_schedules() == {}
    assert app.log.schedules() == []


def test_the_beat_command_declares_and_prints(tmp_path):
    mod = tmp_path / "beatproj.py"
    mod.write_text(
        "from engram.celery import Celery\n"
        "from engram.celery.schedules import crontab\n"
        f"app = Celery('beatproj', broker={str(tmp_path / 'log')!r})\n"
        "app.conf.beat_schedule = {'health': {'task': 'beatproj.health', 'schedule': 300.0},\n"
        "                          'nightly': {'task': 'beatproj.n', 'schedule': crontab(hour=2, minute=0)}}\n")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    r = subprocess.run([sys.executable, "-m", "engram", "beat", "beatproj:app", "--once"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 schedule(s) of beatproj" in r.stdout
    assert "health: beatproj.health every 300 s -> celery" in r.stdout
    assert "nightly: beatproj.n cron '0 2 * * *' UTC -> celery" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "engram", "beat", "beatproj:nothing"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no attribute" in bad.stderr


def test_the_beat_command_fires_until_sigterm(tmp_path):
    # The beat process runs on a test clock set to an hour boundary: its first tick fires
    # the hourly entry's slot; SIGTERM stops it.
    import signal
    import struct
    import time
    from conftest import wait_until
    clock = tmp_path / "clock"
    T = 1_900_000_000 - 1_900_000_000 % 3600
    clock.write_bytes(struct.pack("<q", T * 10**9))
    mod = tmp_path / "beatproj2.py"
    mod.write_text(
        "from engram.celery import Celery\n"
        f"app = Celery('beatproj2', broker={str(tmp_path / 'log')!r})\n"
        "app.conf.beat_schedule = {'hourly': {'task': 'beatproj2.h', 'schedule': 3600.0}}\n")
    env = child_env(ENGRAM_TEST_CLOCK_FILE=str(clock))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    p = subprocess.Popen([sys.executable, "-m", "engram", "beat", "beatproj2:app", "-l", "info"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with engram.open(str(tmp_path / "log")) as log:
            def fired():
                try:
                    return [e for e in log.read("celery", 1, 10) if e.headers.get("engram-schedule")]
                except engram.NotFound:
                    return []
            got = wait_until(fired, 30)
            assert got and got[0].headers["engram-slot"] == time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(T)), p.poll()
            assert got[0].type == "task.beatproj2.h" and got[0].json()["task"] == "beatproj2.h"
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    assert "1 schedule(s) of beatproj2" in out
