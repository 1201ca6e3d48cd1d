# test_seed_004_nagatha_celery.py — seed 004 (Nagatha's Celery integration): the Celery
# app of the Django dashboard, NagathaCeleryBridge with its shared tasks, the task-status
# and system-status views and the worker, ported with import and constructor changes only
# (nagatha_port.py), embedded and through `engram serve`.
import asyncio
import json
import os

import pytest

import engram
import engram.celery
from celery_seed import broker, load_port, spawn, stop, worker_thread, run_worker  # noqa: F401
from conftest import wait_until

EMBEDDED_ONLY = {
    "test_a_beat_setting_engram_cannot_honour_is_refused",
    "test_two_worker_processes_share_the_tasks_and_a_killed_one_loses_nothing",
}


@pytest.fixture
def nagatha(broker, tmp_path, monkeypatch):
    out = str(tmp_path / "tasks.jsonl")
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    monkeypatch.setenv("NAGATHA_OUT", out)
    monkeypatch.setattr(engram.celery, "_shared", [])
    # Fresh each test, under its own name: task names come from it, as in a worker.
    mod = load_port("nagatha_port.py", "nagatha_port", out)
    yield mod
    mod.app.close()


def rows(mod):
    return [json.loads(line) for line in open(mod.OUT)] if os.path.exists(mod.OUT) else []


def test_message_processing_through_the_bridge_and_the_status_view(nagatha):
    r = nagatha.send_message_nagatha_core("Hello Nagatha!")
    assert nagatha.task_status(r["task_id"])["status"] == "PENDING"
    w = worker_thread(nagatha.app)
    res = engram.celery.AsyncResult(r["task_id"]).get(timeout=10)
    w.join()
    assert res["success"] and res["response"] == "Nagatha heard: Hello Nagatha!"
    st = nagatha.task_status(r["task_id"])
    assert st["status"] == "SUCCESS" and st["result"] == res
    recs = [x for x in rows(nagatha) if x["task_name"] == "process_message_with_nagatha"]
    assert [x["status"] for x in recs] == ["running", "completed"]
    assert recs[0]["celery_task_id"] == r["task_id"]  # self.request.id is the id the API returned


def test_a_failing_agent_is_reported_by_the_task_as_the_integration_does(nagatha):
    task = nagatha.process_message_with_nagatha.delay(1, "boom")
    run_worker(nagatha.app)
    assert task.get(timeout=5) == {"success": False, "error": "the agent failed", "session_id": 1,
                                   "user_id": None}
    assert task.status == "SUCCESS"  # the integration returns errors; it does not raise


def test_every_maintenance_task_of_the_integration_runs(nagatha):
    tasks = [nagatha.check_mcp_servers_health, nagatha.cleanup_memory_and_maintenance,
             nagatha.track_usage_metrics, nagatha.process_scheduled_tasks]
    results = [t.delay() for t in tasks]
    run_worker(nagatha.app)
    for r in results:
        assert r.get(timeout=5)["success"] is True
    names = {x["task_name"] for x in rows(nagatha) if x["status"] == "completed"}
    assert names == {"check_mcp_servers_health", "cleanup_memory_and_maintenance",
                     "track_usage_metrics", "process_scheduled_tasks"}


def test_system_status_view_reports_workers_and_tasks(nagatha):
    nagatha.check_mcp_servers_health.delay()
    run_worker(nagatha.app)
    st = nagatha.system_status()["celery"]
    (node, registered), = st["registered"].items()
    assert {"process_message_with_nagatha", "check_mcp_servers_health"} <= {n.rsplit(".", 1)[-1] for n in registered}
    assert st["stats"][node]["queues"]["celery"]["acked"] == 1
    assert st["active"][node] == []


def test_an_async_task_keeps_its_components_across_calls(nagatha):
    """What the bridge's new-loop-per-call works around: with engram an ``async def`` task
    runs on the worker's persistent loop, so a component set up once keeps working."""
    state = {}

    @nagatha.app.task(name="nagatha.async_send")
    async def async_send(message):
        if "core" not in state:
            state["core"] = (asyncio.get_running_loop(), asyncio.Queue())
        loop, q = state["core"]
        await q.put(message)
        return {"same_loop": loop is asyncio.get_running_loop(), "echo": await q.get()}
    rs = [async_send.delay(f"m{i}") for i in range(3)]
    run_worker(nagatha.app, concurrency=1)
    assert [r.get(timeout=5) for r in rs] == [{"same_loop": True, "echo": f"m{i}"} for i in range(3)]


def test_results_can_be_awaited_from_async_views(nagatha):
    task = nagatha.track_usage_metrics.delay()
    w = worker_thread(nagatha.app)

    async def view():
        return await task
    assert asyncio.run(view())["success"] is True
    w.join()


def test_a_beat_setting_engram_cannot_honour_is_refused(nagatha):
    # The seed's CELERY_BEAT_SCHEDULE runs (test_seeds_beat.py); a scheduler class cannot.
    class settings(nagatha.settings):
        CELERY_BEAT_SCHEDULER = "redbeat.RedBeatScheduler"
    with pytest.raises(engram.NotSupported, match="beat schedulers"):
        nagatha.app.config_from_object(settings, namespace="CELERY")


def test_two_worker_processes_share_the_tasks_and_a_killed_one_loses_nothing(nagatha):
    env = dict(CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"], NAGATHA_OUT=nagatha.OUT)
    spec = "nagatha_port:app"
    # A dead worker's tasks wait one visibility timeout (the lease) before they run again.
    nagatha.app.conf.broker_transport_options = {"visibility_timeout": 1}
    nagatha.app.app.group_for("celery")
    tasks = [nagatha.process_message_with_nagatha.delay(i, f"msg {i}") for i in range(20)]
    ps = [spawn(spec, "--loglevel=info", "-c", "2", "-n", f"w{i}", **env) for i in range(2)]
    try:
        assert wait_until(lambda: sum(1 for x in rows(nagatha) if x["status"] == "completed") >= 3, 15)
        ps[0].kill()
        ps[0].wait()
        for i, t in enumerate(tasks):
            assert t.get(timeout=30)["response"] == f"Nagatha heard: msg {i}"
    finally:
        for p in ps:
            stop(p)
    done = [x["celery_task_id"] for x in rows(nagatha) if x["status"] == "completed"]
    assert set(done) == {t.id for t in tasks}
