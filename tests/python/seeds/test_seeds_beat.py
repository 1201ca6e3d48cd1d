# test_seeds_beat.py — the beat configurations of seeds 001, 002 and 004, as the seeds
# write them (hippo_port.py: get_beat_schedule(); nagatha_tasks_port.py: core/celery_beat.py
# and configure_celery_beat(app); nagatha_port.py: CELERY_BEAT_SCHEDULE in the Django
# settings), run unchanged through engram.celery: a worker of the app declares them as
# engram schedules with the seed's periods, cron expressions and time zone, and firing
# them (a tick at the slot's time: a test clock, no sleeps) makes the worker run the task.
# Embedded and through `engram serve`.
import datetime as dt
import json
import os

import pytest

import engram
import engram.celery
from celery_seed import broker, load_port, run_worker  # noqa: F401

# Tests that fire slots by ticking at a chosen future time: a daemon refuses a tick ahead
# of its clock, so they run embedded only (celery_seed.broker skips the served variant).
TICKS_AHEAD = {"test_001_fired_schedules_run_on_the_workers",
               "test_002_a_fired_health_check_runs_on_the_system_worker",
               "test_004_fired_schedules_run_the_integration_tasks"}

MINUTE, HOUR = 60, 3600


def mine(app):
    return {s.name: s for s in app.log.schedules() if s.headers.get("celery-beat") == app.main}


def fired_by(app, topic, name, slot_ns):
    """The events schedule ``name`` appended to ``topic`` for the slot at ``slot_ns``."""
    slot = dt.datetime.fromtimestamp(slot_ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [e for e in app.log.scan(topic) if e.headers.get("engram-schedule") == name
            and e.headers.get("engram-slot") == slot]


def next_utc(hour, minute=0):
    """The next hour:minute UTC at least an hour from now, in ns."""
    now = dt.datetime.now(dt.timezone.utc)
    t = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    while t < now + dt.timedelta(hours=1):
        t += dt.timedelta(days=1)
    return int(t.timestamp()) * 10**9


# -- seed 001: HippocampAI's get_beat_schedule() ---------------------------------------------
@pytest.fixture
def hippo(broker, tmp_path, monkeypatch):
    out = str(tmp_path / "calls.txt")
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    monkeypatch.setenv("HIPPO_OUT", out)
    mods = []

    def load(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        mods.append(load_port("hippo_port.py", f"hippo_beat_{len(mods)}", out))
        return mods[-1]
    yield load
    for m in mods:
        m.celery_app.close()


def calls(out):
    return [line.split(" ", 1)[1].strip() for line in open(out)] if os.path.exists(out) else []


def test_001_hippocampai_beat_schedule_is_declared_as_written(hippo):
    h = hippo()
    app = h.celery_app
    run_worker(app, seconds=0.1)  # a worker declares the app's beat schedule when it starts
    s = mine(app)
    got = {n: (x.cron, x.tz, x.topic, x.headers["task"]) for n, x in s.items()}
    assert got == {
        # crontab(hour="*/24"): every minute of hour 0, as Celery runs it
        "auto-deduplicate-memories": ("* 0 * * *", "UTC", "scheduled",
                                      "hippocampai.tasks.deduplicate_all_memories"),
        "cleanup-expired-memories": ("* * * * *", "UTC", "scheduled",
                                     "hippocampai.tasks.cleanup_expired_memories"),
        "decay-memory-importance": ("0 2 * * *", "UTC", "scheduled",
                                    "hippocampai.tasks.decay_memory_importance"),
        "create-snapshots": ("0 * * * *", "UTC", "scheduled",
                             "hippocampai.tasks.create_collection_snapshots"),
        "health-check": ("*/5 * * * *", "UTC", "background", "hippocampai.tasks.health_check_task"),
    }
    assert all(x.every is None and not x.paused for x in s.values())
    # the REST routes read conf.beat_schedule as in Celery
    assert str(app.conf.beat_schedule["health-check"]["schedule"]) == \
        "<crontab: */5 * * * * (m/h/dM/MY/d)>"


def test_001_environment_switches_change_the_declared_schedules(hippo):
    h = hippo(ACTIVE_CONSOLIDATION_ENABLED="true", CONSOLIDATION_SCHEDULE_HOUR=4,
              EXPIRATION_INTERVAL_HOURS=6, AUTO_DEDUP_ENABLED="false")
    assert h.celery_app.declare_schedules()["sleep-phase-consolidation"] == "added"
    s = mine(h.celery_app)
    assert "auto-deduplicate-memories" not in s
    assert (s["sleep-phase-consolidation"].cron, s["sleep-phase-consolidation"].topic) == (
        "0 4 * * *", "scheduled")  # task_routes sends the unregistered task to "scheduled"
    assert s["cleanup-expired-memories"].cron == "* */6 * * *"
    # the same module with the switches back: the app's schedule follows its configuration
    h2 = hippo(ACTIVE_CONSOLIDATION_ENABLED="false", AUTO_DEDUP_ENABLED="true",
               EXPIRATION_INTERVAL_HOURS=1)
    changes = h2.celery_app.declare_schedules()
    assert changes["sleep-phase-consolidation"] == "removed"
    assert changes["auto-deduplicate-memories"] == "added"
    assert changes["cleanup-expired-memories"] == "replaced"
    assert changes["health-check"] == "unchanged"


def test_001_fired_schedules_run_on_the_workers(hippo):
    h = hippo()
    app = h.celery_app
    app.declare_schedules()
    at = next_utc(2)  # 02:00 UTC: decay, snapshots, health-check and cleanup are due
    r = app.log.tick_schedules(at / 1e9)
    assert r["failed"] == 0, r
    for name, topic in (("decay-memory-importance", "scheduled"), ("create-snapshots", "scheduled"),
                        ("health-check", "background"), ("cleanup-expired-memories", "scheduled")):
        assert len(fired_by(app, topic, name, at)) == 1, name
    assert app.log.tick_schedules(at / 1e9)["fired"] == 0  # each slot once
    run_worker(app, seconds=0.3, queues=["scheduled", "background"])
    done = calls(h.OUT)
    for what in ("decay", "snapshots", "health", "cleanup-expired"):
        assert what in done, (what, done)
    ev = fired_by(app, "scheduled", "decay-memory-importance", at)[0]
    st = app.app.group_for("scheduled").status(ev.offset)
    assert st.state == "done" and json.loads(st.result) == {"value": {"decayed": 0}}


# -- seed 002: Nagatha's core/celery_beat.py with configure_celery_beat(app) -------------------
@pytest.fixture
def nag(broker, tmp_path, monkeypatch):
    out = str(tmp_path / "calls.txt")
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    monkeypatch.setenv("NAGATHA_OUT", out)
    mod = load_port("nagatha_tasks_port.py", "nagatha_tasks_beat", out)
    yield mod
    mod.app.close()


def test_002_configure_celery_beat_is_declared_as_written(nag):
    run_worker(nag.app, seconds=0.1, queues=["system"])
    s = mine(nag.app)
    got = {n: (x.every, x.cron, x.topic, x.headers["task"].rsplit(".", 2)[-2:]) for n, x in s.items()}
    assert got == {
        "system-health-check": (300.0, None, "system", ["system", "health_check"]),
        "cleanup-old-data": (None, "0 2 * * *", "system", ["system", "cleanup_old_data"]),
        "refresh-mcp-servers": (1800.0, None, "mcp", ["mcp", "refresh_servers"]),
        "publish-system-status": (3600.0, None, "events", ["events", "publish_system_status"]),
        "memory-optimization": (21600.0, None, "system", ["system", "memory_optimization"]),
        "check-stale-sessions": (3600.0, None, "agent", ["agent", "check_stale_sessions"]),
    }
    assert s["cleanup-old-data"].tz == "UTC"
    # intervals are aligned to the clock: every 5 minutes at :00, :05 ...
    assert s["system-health-check"].next_slot.minute % 5 == 0
    assert s["system-health-check"].next_slot.second == 0


def test_002_a_fired_health_check_runs_on_the_system_worker(nag):
    nag.app.declare_schedules()
    slot = mine(nag.app)["system-health-check"].next_slot_ns + 5 * 3 * MINUTE * 10**9
    nag.app.log.tick_schedules(slot / 1e9)
    assert len(fired_by(nag.app, "system", "system-health-check", slot)) == 1
    run_worker(nag.app, seconds=0.3, queues=["system"])
    assert "health" in [line.split(None, 1)[1].strip() for line in open(nag.OUT)]


# -- seed 004: CELERY_BEAT_SCHEDULE in the Django settings -------------------------------------
@pytest.fixture
def dashboard(broker, tmp_path, monkeypatch):
    """nagatha_port.py as the module its task names come from in the seed
    (dashboard/nagatha_celery_integration.py)."""
    out = str(tmp_path / "tasks.jsonl")
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    monkeypatch.setenv("NAGATHA_OUT", out)
    monkeypatch.setattr(engram.celery, "_shared", [])
    mod = load_port("nagatha_port.py", "dashboard.nagatha_celery_integration", out)
    yield mod
    mod.app.close()


def test_004_celery_beat_schedule_is_declared_as_written(dashboard):
    run_worker(dashboard.app, seconds=0.1)
    s = mine(dashboard.app)
    got = {n: (x.every, x.topic, x.headers["task"]) for n, x in s.items()}
    p = "dashboard.nagatha_celery_integration."
    assert got == {
        "check-mcp-servers-health": (300.0, "celery", p + "check_mcp_servers_health"),
        "cleanup-memory-and-maintenance": (3600.0, "celery", p + "cleanup_memory_and_maintenance"),
        "track-usage-metrics": (900.0, "celery", p + "track_usage_metrics"),
        "process-scheduled-tasks": (60.0, "celery", p + "process_scheduled_tasks"),
        "refresh-system-status": (120.0, "celery", "dashboard.refresh_system_status"),
        "cleanup-old-data": (21600.0, "celery", "dashboard.cleanup_old_data"),
    }


def test_004_fired_schedules_run_the_integration_tasks(dashboard):
    app = dashboard.app
    app.declare_schedules()
    at = (mine(app)["check-mcp-servers-health"].next_slot_ns // (HOUR * 10**9) + 2) * HOUR * 10**9
    app.log.tick_schedules(at / 1e9)  # a whole hour: every schedule but the 6-hour one is due
    for name in ("check-mcp-servers-health", "cleanup-memory-and-maintenance",
                 "track-usage-metrics", "process-scheduled-tasks"):
        assert len(fired_by(app, "celery", name, at)) == 1, name
    run_worker(app, seconds=0.3)
    rows = [json.loads(line) for line in open(dashboard.OUT)]
    done = {r["task_name"] for r in rows if r["status"] == "completed"}
    assert {"check_mcp_servers_health", "cleanup_memory_and_maintenance", "track_usage_metrics",
            "process_scheduled_tasks"} <= done
