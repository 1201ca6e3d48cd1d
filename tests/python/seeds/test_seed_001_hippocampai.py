# test_seed_001_hippocampai.py — seed 001 (HippocampAI's Celery & Flower guide): every
# Python usage example of the guide, with HippocampAI's celery_app.py / tasks.py / REST
# routes ported by changing imports and the Celery(...) constructor only (hippo_port.py),
# run against an embedded log and through `engram serve`.
import itertools
import os

import pytest

import engram
from celery_seed import (ENGRAM, broker, load_port, run_worker, spawn, start_daemon, stop,  # noqa: F401
                         stop_daemon, worker_thread)
from conftest import wait_until

_n = itertools.count()
# Through `engram serve` too, except these (same API underneath; kept quick).
EMBEDDED_ONLY = {
    "test_a_task_longer_than_the_visibility_timeout_runs_once",
    "test_beat_entries_engram_cannot_honour_are_refused_not_ignored",
    "test_cancel_before_start_means_it_never_runs",
    "test_env_configuration_sets_the_worker",
    "test_hard_time_limit_kills_the_worker_process",
    "test_max_retries_exceeded_fails_with_the_original_exception",
    "test_purge_discards_waiting_tasks",
    "test_queue_specific_worker_serves_only_its_queue",
    "test_result_expiration_reads_pending_afterwards",
}


@pytest.fixture
def hippo(broker, tmp_path, monkeypatch):
    """A fresh import of the ported HippocampAI modules on this test's log."""
    out = str(tmp_path / "calls.txt")
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    monkeypatch.setenv("HIPPO_OUT", out)
    monkeypatch.setenv("HIPPO_RETRY_COUNTDOWN", "0.05")

    def load(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        return load_port("hippo_port.py", f"hippo_port_{next(_n)}", out)
    mods = []
    yield lambda **env: mods.append(load(**env)) or mods[-1]
    for m in mods:
        m.celery_app.close()


def calls(mod):
    if not os.path.exists(mod.OUT):
        return []
    return [line.split(" ", 1)[1].strip() for line in open(mod.OUT)]


# -- "Method 2: Direct Task Submission (Python)" ---------------------------------------------
def test_method_2_direct_task_submission(hippo):
    h = hippo()
    create_memory_task = h.create_memory_task
    task = create_memory_task.delay(
        text="Paris is the capital of France",
        user_id="bob",
        memory_type="fact",
        importance=7.0,
        tags=["geography", "france"],
    )
    assert isinstance(task.id, str) and task.id
    assert task.status == "PENDING"
    w = worker_thread(h.celery_app)
    result = task.get(timeout=30)
    assert result["text"] == "Paris is the capital of France" and result["user_id"] == "bob"
    assert result["type"] == "fact" and result["importance"] == 7.0
    assert task.status == "SUCCESS"
    w.join()


# -- "Method 3: Batch Operations" ------------------------------------------------------------
def test_method_3_batch_operations(hippo):
    h = hippo()
    memories = [
        {"text": "Memory 1", "user_id": "alice", "type": "fact"},
        {"text": "Memory 2", "user_id": "alice", "type": "preference"},
        {"text": "Memory 3", "user_id": "alice", "type": "goal"},
    ]
    task = h.batch_create_memories_task.delay(memories=memories, check_duplicates=True)
    w = worker_thread(h.celery_app)
    result = task.get(timeout=60)
    assert len(result) == 3 and [m["type"] for m in result] == ["fact", "preference", "goal"]
    w.join()


# -- "Manually Trigger Scheduled Tasks" + the queue table --------------------------------------
def test_manually_triggered_scheduled_task_goes_to_its_queue(hippo):
    h = hippo()
    task = h.deduplicate_all_memories.delay()
    assert task.id.startswith("scheduled:")  # task_routes sends it to the scheduled queue
    assert h.create_memory_task.delay(text="t", user_id="u").id.startswith("memory_ops:")
    assert h.recall_memories_task.apply_async(kwargs={"query": "q", "user_id": "u"},
                                              routing_key="memory.recall").id.startswith("memory_ops:")
    w = worker_thread(h.celery_app)
    assert task.get(timeout=10) == {"deduplicated": 0, "kept": 0}
    w.join()


# -- the REST routes: /tasks/status/{id} and /tasks/cancel/{id} --------------------------------
def get_task_status(task_id, celery_app):
    """HippocampAI's status route body; only the import changed."""
    from engram.celery.result import AsyncResult  # was: from celery.result import AsyncResult

    task = AsyncResult(task_id, app=celery_app)
    response = {"task_id": task_id, "status": task.status, "result": None, "error": None}
    if task.ready():
        if task.successful():
            response["result"] = task.result
        elif task.failed():
            response["error"] = str(task.result)
    return response


def cancel_task(task_id, celery_app):
    from engram.celery.result import AsyncResult  # was: from celery.result import AsyncResult

    task = AsyncResult(task_id, app=celery_app)
    if task.state in ["PENDING", "STARTED", "RETRY"]:
        task.revoke(terminate=True)
        return {"message": f"Task {task_id} cancelled", "status": "cancelled"}
    return {"message": f"Task {task_id} is already {task.state}", "status": task.state}


def test_status_route_reports_pending_success_and_failure(hippo):
    h = hippo()
    ok = h.create_memory_task.delay(text="I prefer dark chocolate", user_id="alice",
                                    memory_type="preference", importance=8.0, tags=["food"])
    bad = h.recall_memories_task.delay(query="q", user_id="u", filters="not a dict", k="x")
    assert get_task_status(ok.id, h.celery_app)["status"] == "PENDING"
    assert get_task_status("no-such-task", h.celery_app)["status"] == "PENDING"
    h.get_service().recall_memories = None  # the recall fails: 'NoneType' is not callable
    w = worker_thread(h.celery_app)
    ok.get(timeout=10)
    wait_until(lambda: bad.ready(), 10)
    w.join()
    r = get_task_status(ok.id, h.celery_app)
    assert r["status"] == "SUCCESS" and r["result"]["text"] == "I prefer dark chocolate"
    r = get_task_status(bad.id, h.celery_app)
    assert r["status"] == "FAILURE" and "not callable" in r["error"]
    with pytest.raises(TypeError, match="not callable"):  # get() re-raises the task's own type
        bad.get(timeout=1)


def test_cancel_route_stops_a_running_task(hippo):
    h = hippo()
    task = h.create_memory_task.delay(text="sleep:5", user_id="u")
    w = worker_thread(h.celery_app, 0.5)
    assert wait_until(lambda: "create sleep:5" in calls(h), 10)
    assert cancel_task(task.id, h.celery_app)["status"] == "cancelled"
    w.join(10)
    assert not w.is_alive()  # the five-second task did not run to its end
    assert get_task_status(task.id, h.celery_app)["status"] == "REVOKED"
    assert cancel_task(task.id, h.celery_app)["status"] == "REVOKED"


def test_cancel_before_start_means_it_never_runs(hippo):
    h = hippo()
    task = h.create_memory_task.delay(text="never", user_id="u")
    cancel_task(task.id, h.celery_app)
    run_worker(h.celery_app)
    assert "create never" not in calls(h) and task.status == "REVOKED"


# -- "Task Retries" ----------------------------------------------------------------------------
def test_bound_task_retries_with_self_retry_and_countdown(hippo):
    h = hippo()
    task = h.create_memory_task.delay(text="flaky once", user_id="u")
    w = worker_thread(h.celery_app, 0.6)
    assert task.get(timeout=10)["text"] == "flaky once"
    w.join()
    assert calls(h).count("create flaky once") == 3  # two failures, two retries, success


def test_max_retries_exceeded_fails_with_the_original_exception(hippo):
    h = hippo()

    @h.celery_app.task(bind=True, max_retries=2)
    def my_task(self):
        try:
            raise ConnectionError("still down")
        except Exception as exc:
            raise self.retry(exc=exc, countdown=0.02)
    r = my_task.delay()
    w = worker_thread(h.celery_app, 0.6)
    with pytest.raises(ConnectionError, match="still down"):
        r.get(timeout=10)
    w.join()
    assert r.status == "FAILURE"


# -- "Task Time Limits" and "Result Expiration" ---------------------------------------------------
def test_soft_time_limit_raises_inside_the_task(hippo):
    h = hippo()
    r = h.soft_limited.delay()
    w = worker_thread(h.celery_app)
    assert r.get(timeout=10) == "cleaned up after the soft limit"
    w.join()


def test_hard_time_limit_kills_the_worker_process(hippo, tmp_path):
    h = hippo()
    r = h.hard_limited.delay()
    ok = h.health_check_task.delay()
    p = spawn("hippo_port:celery_app", "-P", "prefork", "-c", "1", "--idle-timeout", "1.5",
              CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"], HIPPO_OUT=h.OUT)
    try:
        with pytest.raises(engram.celery.exceptions.TimeLimitExceeded):
            r.get(timeout=20)
        assert ok.get(timeout=20)["qdrant"]  # the replacement process goes on
    finally:
        out = stop(p)
    assert "hard start" in calls(h) and "hard end" not in calls(h), out
    pids = {line.split()[0] for line in open(h.OUT)}
    assert len(pids) == 2  # the killed process and its replacement


def test_result_expiration_reads_pending_afterwards(hippo):
    h = hippo(HIPPO_RESULT_EXPIRES=0.8)
    r = h.health_check_task.delay()
    w = worker_thread(h.celery_app)
    assert r.get(timeout=10)["qdrant"] is True and r.status == "SUCCESS"
    assert wait_until(lambda: r.status == "PENDING", 5)
    w.join()


# -- "Queue-Specific Workers", "Scaling Workers", the env configuration -----------------------------
def test_queue_specific_worker_serves_only_its_queue(hippo):
    h = hippo()
    mem = h.create_memory_task.delay(text="queued", user_id="u")
    bg = h.health_check_task.delay()
    p = spawn("hippo_port:celery_app", "--queues=memory_ops", "--concurrency=8", "--loglevel=info",
              "--idle-timeout", "1", CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"], HIPPO_OUT=h.OUT)
    try:
        assert mem.get(timeout=20)["text"] == "queued"
    finally:
        stop(p)
    assert bg.status == "PENDING"  # nobody serves the background queue yet
    run_worker(h.celery_app, queues=["background"])
    assert bg.get(timeout=5)["redis"] is True


def test_env_configuration_sets_the_worker(hippo):
    h = hippo(CELERY_WORKER_CONCURRENCY=4, CELERY_WORKER_PREFETCH_MULTIPLIER=4,
              CELERY_TASK_ACKS_LATE="true", CELERY_WORKER_MAX_TASKS_PER_CHILD=1000)
    d = h.celery_app.app.worker_defaults
    assert d["concurrency"] == 4 and d["batch"] == 16 and d["max_tasks_per_child"] == 1000
    assert h.celery_app.app.queues == ["default", "memory_ops", "background", "scheduled"]


def test_a_worker_killed_mid_task_has_the_task_run_again(hippo):
    h = hippo()
    h.celery_app.conf.broker_transport_options = {"visibility_timeout": 0.5}
    h.celery_app.app.group_for("memory_ops")  # the queue's lease is 0.5 s from the start
    r = h.create_memory_task.delay(text="sleep:1", user_id="u")
    env = dict(CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"], HIPPO_OUT=h.OUT)
    p = spawn("hippo_port:celery_app", "-c", "1", **env)
    assert wait_until(lambda: "create sleep:1" in calls(h), 15)
    p.kill()
    p.wait()
    p2 = spawn("hippo_port:celery_app", "-c", "1", **env)
    try:
        assert r.get(timeout=30)["text"] == "sleep:1"
    finally:
        stop(p2)
    assert calls(h).count("create sleep:1") == 2


def test_a_task_longer_than_the_visibility_timeout_runs_once(hippo):
    h = hippo()
    h.celery_app.conf.broker_transport_options = {"visibility_timeout": 0.3}
    r = h.create_memory_task.delay(text="sleep:1.2", user_id="u")
    w = worker_thread(h.celery_app, 0.5)
    assert r.get(timeout=10)["text"] == "sleep:1.2"
    w.join()
    assert calls(h).count("create sleep:1.2") == 1


# -- Flower / inspect, purge, beat ---------------------------------------------------------------
def test_inspect_routes_answer_from_the_log(hippo):
    h = hippo()
    inspector = h.celery_app.control.inspect()
    r = h.create_memory_task.delay(text="sleep:0.6", user_id="u")
    later = h.health_check_task.apply_async(countdown=30)
    w = worker_thread(h.celery_app, 0.3, queues=["memory_ops"])
    assert wait_until(lambda: "create sleep:0.6" in calls(h), 10)
    stats = {
        "active_tasks": inspector.active(),
        "scheduled_tasks": inspector.scheduled(),
        "registered_tasks": inspector.registered(),
        "stats": inspector.stats(),
    }
    (node, active), = stats["active_tasks"].items()
    assert [t["id"] for t in active] == [r.id]
    assert [t["request"]["id"] for t in stats["scheduled_tasks"][node]] == [later.id]
    assert "hippocampai.tasks.create_memory_task" in stats["registered_tasks"][node]
    assert "memory_ops" in stats["stats"][node]["queues"]
    assert {q["name"] for q in inspector.active_queues()[node]} >= {"default", "memory_ops"}
    w.join()


def test_purge_discards_waiting_tasks(hippo):
    h = hippo()
    for i in range(3):
        h.health_check_task.delay()
    h.celery_app.app.group_for("background")  # a worker has joined the queue once
    assert h.celery_app.control.purge() == 3
    run_worker(h.celery_app)
    # The purged tasks never ran; only a beat fire of health-check (every 5 minutes, from
    # the seed's beat schedule the worker declared) may have run since.
    beat = [e for e in h.celery_app.log.scan("background") if e.headers.get("engram-schedule")]
    assert calls(h).count("health") <= len(beat)


def test_beat_entries_engram_cannot_honour_are_refused_not_ignored(hippo):
    # The seed's own beat schedule runs (test_seeds_beat.py); these cannot.
    h = hippo()
    from engram.celery.schedules import crontab, solar  # was: from celery.schedules import ...
    with pytest.raises(engram.NotSupported, match="solar"):
        h.celery_app.conf.beat_schedule = {
            "health-check": {"task": "hippocampai.tasks.health_check_task",
                             "schedule": solar("sunrise", 48.85, 2.35)},
        }
    with pytest.raises(engram.NotSupported, match="relative"):
        h.celery_app.conf.beat_schedule = {
            "health-check": {"task": "hippocampai.tasks.health_check_task",
                             "schedule": crontab(minute="*/5"), "relative": True},
        }
    with pytest.raises(engram.NotSupported, match="beat schedulers"):
        h.celery_app.conf.beat_scheduler = "myproj.beat:RedisScheduler"
    with pytest.raises(engram.celery.exceptions.ImproperlyConfigured):
        h.celery_app.conf.update(no_such_setting=1)


def test_tasks_sent_before_the_daemon_is_killed_run_after_its_restart(tmp_path, monkeypatch):
    if not os.access(ENGRAM, os.X_OK):
        pytest.skip(f"{ENGRAM} is not built")
    d, endpoint = start_daemon(tmp_path)
    monkeypatch.setenv("CELERY_BROKER_URL", endpoint)
    h = load_port("hippo_port.py", "hippo_port_restart")
    try:
        tasks = [h.health_check_task.delay() for _ in range(3)]
        ids = [t.id for t in tasks]
        h.celery_app.close()
        d.kill()  # SIGKILL: each delay() returned once its task was on disk
        d.wait()
        d, _ = start_daemon(tmp_path, endpoint)
        run_worker(h.celery_app)
        from engram.celery.result import AsyncResult
        assert [AsyncResult(i, app=h.celery_app).get(timeout=5) for i in ids] == [
            {"qdrant": True, "redis": True, "embedder": True}] * 3
    finally:
        h.celery_app.close()
        stop_daemon(d)
