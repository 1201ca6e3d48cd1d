# test_seed_002_celery.py — the Celery half of seed 002 (Nagatha's Celery guide): "Task
# Processing" (delay, get, publish_event_task), queue priorities (apply_async(queue=,
# priority=)), the Django chat and task-status views, the worker command and dead-letter
# handling, ported with import changes only (nagatha_tasks_port.py), embedded and through
# `engram serve`. The event-bus half of the seed is tested with the bus modules.
import os

import pytest

import engram
import engram.celery
from celery_seed import broker, load_port, spawn, stop, worker_thread, run_worker  # noqa: F401
from conftest import needs_groups

pytestmark = needs_groups
EMBEDDED_ONLY = {"test_the_worker_command_with_concurrency"}


@pytest.fixture
def nag(broker, tmp_path, monkeypatch):
    out = str(tmp_path / "calls.txt")
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    monkeypatch.setenv("NAGATHA_OUT", out)
    mod = load_port("nagatha_tasks_port.py", "nagatha_tasks_port", out)
    yield mod
    mod.app.close()


def calls(mod):
    return [line.split(None, 1)[1].strip() for line in open(mod.OUT)] if os.path.exists(mod.OUT) else []


def test_direct_task_calls(nag):
    task = nag.process_message_task.delay(session_id=1, message_content="Hello!", message_type="user")
    ev = nag.publish_event_task.delay("my.event", {"data": "value"})
    assert task.id.startswith("agent:") and ev.id.startswith("events:")  # task_routes
    w = worker_thread(nag.app)
    result = task.get(timeout=60)
    assert result == {"session_id": 1, "response": "reply to Hello!", "task_id": task.id}
    assert ev.get(timeout=10) == {"published": "my.event", "data": {"data": "value"}}
    w.join()


def test_queue_priorities(nag):
    # "High priority queue for critical tasks": task.apply_async(queue='agent', priority=9)
    low = nag.publish_event_task.apply_async(("low", {}), queue="agent", priority=0)
    high = nag.publish_event_task.apply_async(("high", {}), queue="agent", priority=9)
    assert high.id.startswith("agent:")
    run_worker(nag.app, concurrency=1, queues=["agent"])
    assert low.get(timeout=5) and high.get(timeout=5)
    assert calls(nag) == ["event high", "event low"]


def test_django_chat_and_task_status_views(nag):
    resp = nag.chat_view({"session_id": 7}, {"message": "hi"})
    assert nag.task_status(resp["task_id"]) == {"status": "PENDING", "result": None}
    failing = nag.chat_view({"session_id": 8}, {"message": "fail"})
    w = worker_thread(nag.app)
    engram.celery.AsyncResult(resp["task_id"]).get(timeout=10)
    with pytest.raises(RuntimeError, match="the model refused"):
        engram.celery.AsyncResult(failing["task_id"]).get(timeout=10)
    w.join()
    st = nag.task_status(resp["task_id"])
    assert st["status"] == "SUCCESS" and st["result"]["response"] == "reply to hi"
    st = nag.task_status(failing["task_id"])
    assert st["status"] == "FAILURE" and isinstance(st["result"], RuntimeError)


def test_failed_tasks_wait_in_the_dead_letter_queue_and_can_be_redriven(nag):
    # "Use dead letter queues for failed tasks"
    r = nag.process_message_task.delay(session_id=2, message_content="fail")
    run_worker(nag.app)
    assert r.status == "FAILURE"
    group = nag.app.app.group_for("agent")
    (dead,) = group.dlq()
    assert "the model refused" in dead.last_error
    nag.send_message.__globals__["send_message"] = _fixed  # the fix is deployed
    assert group.redrive() == 1
    run_worker(nag.app)
    assert r.get(timeout=5)["response"] == "fixed: fail"


async def _fixed(session_id, message):
    return f"fixed: {message}"


def test_the_worker_command_with_concurrency(nag):
    rs = [nag.system_health_check.delay() for _ in range(5)] + [nag.process_message_task.delay(3, "x")]
    p = spawn("nagatha_tasks_port:app", "--concurrency=8", "--loglevel=info", "--idle-timeout", "1",
              "-Q", "agent,mcp,events,system", CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"],
              NAGATHA_OUT=nag.OUT)
    try:
        assert [r.get(timeout=20) for r in rs[:5]] == [{"healthy": True}] * 5
        assert rs[5].get(timeout=20)["response"] == "reply to x"
    finally:
        stop(p)
