# test_seed_000_celery.py — the Celery half of seed 000 (MemU): the bound process_memory
# task with autoretry and backoff, the CeleryDispatcher's apply_async with task options,
# memorize(background=True) as a direct .delay(), and worker.py, ported with import and
# constructor changes only (memu_port.py), embedded and through `engram serve`. The
# EventManager half of the seed is tested with the bus modules.
import asyncio
import os
import time

import pytest

from celery_seed import broker, load_port, spawn, stop, worker_thread, run_worker  # noqa: F401
from conftest import needs_groups, wait_until

pytestmark = needs_groups
EMBEDDED_ONLY = {"test_worker_entry_point_runs_the_tasks_and_the_logging_hook",
                 "test_the_global_rate_limit_is_honoured_per_worker"}


@pytest.fixture
def memu(broker, tmp_path, monkeypatch):
    out = str(tmp_path / "calls.txt")
    monkeypatch.setenv("MEMU_BROKER", broker)
    monkeypatch.setenv("MEMU_OUT", out)
    monkeypatch.setenv("MEMU_RETRY_BASE", "0.05")
    monkeypatch.setenv("CELERY_TASK_RATE_LIMIT", "1000/s")

    def load(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        mod = load_port("memu_port.py", "memu_port", out)
        mods.append(mod)
        return mod
    mods = []
    yield load
    for m in mods:
        m.celery_app.close()


def lines(mod):
    return [line.split(None, 1)[1].strip() for line in open(mod.OUT)] if os.path.exists(mod.OUT) else []


class StubEventManager:
    def __init__(self):
        self.dispatchers = []

    def register_dispatcher(self, d):
        self.dispatchers.append(d)


def test_process_memory_task_runs_the_service_and_returns_its_result(memu):
    m = memu()
    r = m.process_memory_task.delay("https://example.com/doc.pdf", "document", {"user_id": "u1"})
    w = worker_thread(m.celery_app)
    res = r.get(timeout=10)
    w.join()
    assert res["items"] == [{"resource_url": "https://example.com/doc.pdf", "modality": "document"}]
    assert res["user"] == {"user_id": "u1"} and r.status == "SUCCESS"


def test_a_transient_failure_is_retried_with_the_tasks_own_backoff(memu):
    m = memu()
    r = m.process_memory_task.delay("https://example.com/flaky.pdf", "document")
    w = worker_thread(m.celery_app, 0.8)
    assert r.get(timeout=10)["items"]
    w.join()
    assert lines(m).count("memorize https://example.com/flaky.pdf") == 2


def test_invalid_input_is_retried_as_autoretry_for_exception_says(memu):
    """autoretry_for=(Exception,) covers the ValueError too (Celery does the same, whatever
    the comment in the task says): the task is in RETRY, not silently FAILURE or dropped."""
    m = memu()
    r = m.process_memory_task.delay("file:///etc/passwd", "document")
    run_worker(m.celery_app, 0.3)
    assert r.status in ("RETRY", "STARTED", "PENDING") and r.status != "SUCCESS"
    assert wait_until(lambda: r.status == "RETRY", 5)
    assert "Invalid input" in str(r.result)
    r.revoke()
    assert r.status == "REVOKED"
    assert "memorize file:///etc/passwd" not in lines(m)


def test_celery_dispatcher_sends_with_its_task_options(memu):
    m = memu()
    d = m.CeleryDispatcher(event_manager=StubEventManager(), task_options={"queue": "memory", "priority": 9})
    task_id = d.on_memory_saved({"resource_url": "https://example.com/a", "modality": "document",
                                 "user": {"user_id": "u"}})
    assert task_id.startswith("memory:")
    low = m.process_memory_task.apply_async(args=["https://example.com/low", "document"], queue="memory",
                                            priority=1)
    run_worker(m.celery_app, concurrency=1, queues=["memory"])
    assert m.celery_app.AsyncResult(task_id).get(timeout=5)["user"] == {"user_id": "u"}
    assert low.get(timeout=5)
    done = [x for x in lines(m) if x.startswith("memorize")]
    assert done == ["memorize https://example.com/a", "memorize https://example.com/low"]  # 9 before 1
    d.enabled = False
    assert d.on_memory_saved({"resource_url": "https://example.com/b", "modality": "document"}) is None


def test_memorize_background_queues_a_task_and_returns_its_id(memu):
    m = memu()
    result = asyncio.run(m.MemoryService().memorize(resource_url="https://example.com/document.pdf",
                                                    modality="document", user={"user_id": "user_123"},
                                                    background=True))
    assert result["status"] == "queued"
    w = worker_thread(m.celery_app)
    assert m.celery_app.AsyncResult(result["task_id"]).get(timeout=10)["user"] == {"user_id": "user_123"}
    w.join()


def test_worker_entry_point_runs_the_tasks_and_the_logging_hook(memu):
    m = memu()
    r = m.process_memory_task.delay("https://example.com/w", "image")
    p = spawn("memu_port:app", "--loglevel=info", "--concurrency=4", "--idle-timeout", "1",
              MEMU_BROKER=os.environ["MEMU_BROKER"], MEMU_OUT=m.OUT, MEMU_RETRY_BASE="0.05",
              CELERY_TASK_RATE_LIMIT="1000/s")
    try:
        assert r.get(timeout=20)["items"][0]["modality"] == "image"
    finally:
        out = stop(p)
    assert "setup_logging" in lines(m), out


def test_the_global_rate_limit_is_honoured_per_worker(memu):
    m = memu(CELERY_TASK_RATE_LIMIT="5/s")
    rs = [m.process_memory_task.delay(f"https://example.com/r{i}", "document") for i in range(3)]
    t0 = time.monotonic()
    run_worker(m.celery_app, 0.3, concurrency=3)
    assert all(r.get(timeout=1)["items"] for r in rs)
    assert time.monotonic() - t0 >= 0.4  # three starts at most 1/5 s apart
