# test_seed_000_bus.py — seed 000 (MemU's EventManager, dispatchers and validators) ported
# by changing imports and the EventManager constructor only, embedded and served; plus the
# wrong results issue 10 lists for it: emit("on_memory_saved") reaching dispatchers,
# async listeners that run and keep their state, one listener's failure staying its own,
# SSRF / traversal / modality checks, and an event surviving a SIGKILLed process.
import asyncio
import os
import time
from typing import Any, Dict, Optional
from unittest.mock import MagicMock, Mock

import pytest

import engram
from engram import ValidationError
from engram.compat import memu
from engram.compat.memu import EventManager, MemorizeTaskInput  # was: from memu.events import ...
from seedkit import (daemon, handoff_dir, needs_groups, run_script, run_until, started_in,  # noqa: F401 - fixtures
                     wait_until, where)

pytestmark = needs_groups


@pytest.fixture
def make(where):
    made = []

    def mk(**kw):
        m = EventManager(where.log, **where.kw(**kw))
        made.append(m)
        return m
    yield mk
    for m in made:
        m.close()


# -- "Example Usage" (section 1) ---------------------------------------------------------------
def test_example_usage_module_level_event_manager(where, capsys):
    memu.configure(where.log, topic=where.topic)  # the constructor change for the singleton
    try:
        from engram.compat.memu import event_manager

        def my_handler(data):
            print(f"Memory saved: {data['resource_url']}")

        event_manager.on('on_memory_saved', my_handler)
        event_manager.emit('on_memory_saved', {
            'resource_url': 'https://example.com/doc.pdf',
            'modality': 'document'
        })
        assert "Memory saved: https://example.com/doc.pdf" in capsys.readouterr().out
    finally:
        event_manager.close()


# -- CeleryDispatcher (section 2), self-registration, init_event_system (section 5) -------------
class FakeTask:
    """Stands in for memu.tasks.process_memory_task (a Celery task), as the seed's tests do."""

    def __init__(self):
        self.apply_async = MagicMock(side_effect=lambda **kw: MagicMock(id=f"task-{self.apply_async.call_count}"))


def make_celery_dispatcher_class(process_memory_task):
    class CeleryDispatcher:
        def __init__(self, event_manager=None, enabled: bool = True, task_options: Optional[Dict] = None):
            self.enabled = enabled
            self.task_options = task_options or {}
            event_manager.register_dispatcher(self)

        def on_memory_saved(self, data: Dict[str, Any]) -> Optional[str]:
            if not self.enabled:
                return None
            task = process_memory_task.apply_async(
                args=[data['resource_url'], data['modality'], data.get('user')],
                **self.task_options
            )
            return task.id

        def on_memory_updated(self, data):
            return self.on_memory_saved(data)

        def on_memory_deleted(self, data):
            return None

        def on_memory_queried(self, data):
            return None
    return CeleryDispatcher


def test_celery_dispatcher_self_registers_and_receives_on_memory_saved(make):
    event_manager = make()
    task = FakeTask()
    CeleryDispatcher = make_celery_dispatcher_class(task)

    def init_event_system(celery: bool = True, celery_options: Optional[dict] = None):
        if celery:
            CeleryDispatcher(event_manager=event_manager, **(celery_options or {}))
    init_event_system(celery=True, celery_options={"task_options": {"priority": 5, "queue": "memory"}})
    assert len(event_manager._dispatchers) == 1
    event_manager.emit('on_memory_saved', {'resource_url': 'https://example.com/a.pdf', 'modality': 'document',
                                           'user': {'user_id': 'u1'}})
    event_manager.emit('on_memory_updated', {'resource_url': 'https://example.com/b.pdf', 'modality': 'document'})
    calls = task.apply_async.call_args_list
    assert [c.kwargs["args"][0] for c in calls] == ['https://example.com/a.pdf', 'https://example.com/b.pdf']
    assert calls[0].kwargs["args"][2] == {'user_id': 'u1'}
    assert calls[0].kwargs["priority"] == 5 and calls[0].kwargs["queue"] == "memory"


def test_disabled_dispatcher_dispatches_nothing(make):
    event_manager = make()
    task = FakeTask()
    make_celery_dispatcher_class(task)(event_manager=event_manager, enabled=False)
    event_manager.emit('on_memory_saved', {'resource_url': 'https://example.com/a.pdf', 'modality': 'document'})
    task.apply_async.assert_not_called()


# -- memorize(background=True) (sections 3 and "How to Use") ----------------------------------
def test_memorize_in_background_emits_and_returns_queued(make):
    event_manager = make()
    seen = []
    event_manager.on('on_memory_saved', lambda data: seen.append(data['resource_url']))

    async def memorize(*, resource_url, modality, user, background: bool = False):
        if background:
            event_manager.emit('on_memory_saved', {
                'resource_url': resource_url,
                'modality': modality,
                'user': user
            })
            return {
                "status": "queued",
                "message": "Memory processing event dispatched to background workers",
                "event": "on_memory_saved",
                "resource_url": resource_url,
            }
    result = asyncio.run(memorize(resource_url="https://example.com/document.pdf", modality="document",
                                  user={"user_id": "user_123"}, background=True))
    assert result["status"] == "queued" and result["event"] == "on_memory_saved"
    assert seen == ["https://example.com/document.pdf"]


# -- Advanced usage: custom listeners, multiple dispatchers -----------------------------------
def test_custom_listeners_webhook_and_analytics(make):
    event_manager = make()
    requests = Mock()
    analytics = Mock()

    def notify_webhook(data):
        requests.post('https://webhook.site/...', json=data)

    event_manager.on('on_memory_saved', notify_webhook)

    def track_analytics(data):
        analytics.track('memory_saved', {
            'user_id': data.get('user', {}).get('user_id'),
            'modality': data['modality']
        })

    event_manager.on('on_memory_saved', track_analytics)
    data = {'resource_url': 'https://example.com/x.png', 'modality': 'image', 'user': {'user_id': 'u7'}}
    event_manager.emit('on_memory_saved', data)
    requests.post.assert_called_once_with('https://webhook.site/...', json=data)
    analytics.track.assert_called_once_with('memory_saved', {'user_id': 'u7', 'modality': 'image'})


def test_multiple_dispatchers_both_react(make):
    event_manager = make()
    task = FakeTask()
    celery_dispatcher = make_celery_dispatcher_class(task)(event_manager=event_manager)
    event_manager.register_dispatcher(celery_dispatcher)  # the doc registers it a second time
    posted = []

    class WebhookDispatcher:
        def on_memory_saved(self, data):
            posted.append(("saved", data['resource_url']))

        def on_memory_updated(self, data):
            posted.append(("updated", data['resource_url']))

    event_manager.register_dispatcher(WebhookDispatcher())
    event_manager.emit('on_memory_saved', {'resource_url': 'https://example.com/1', 'modality': 'document'})
    event_manager.emit('on_memory_updated', {'resource_url': 'https://example.com/2', 'modality': 'document'})
    assert posted == [("saved", "https://example.com/1"), ("updated", "https://example.com/2")]
    # the same dispatcher registered twice runs once per event
    assert task.apply_async.call_count == 2


# -- the seed's own tests (tests/test_event_driven.py), imports changed -------------------------
def test_event_manager_initialization(make):
    events = make().list_events()
    assert {"on_memory_saved", "on_memory_updated", "on_memory_deleted", "on_memory_queried"} <= set(events)


def test_register_callback_and_emit_calls_it_with_the_data(make):
    manager = make()
    callback = Mock()
    manager.on("on_memory_saved", callback)
    assert manager.get_listener_count("on_memory_saved") == 1
    manager.emit("on_memory_saved", {"resource_url": "test.pdf"})
    callback.assert_called_once_with({"resource_url": "test.pdf"})


def test_multiple_callbacks_and_unregister(make):
    manager = make()
    callback1, callback2, gone = Mock(), Mock(), Mock()
    manager.on("on_memory_saved", callback1)
    manager.on("on_memory_saved", callback2)
    manager.on("on_memory_saved", gone)
    manager.off("on_memory_saved", gone)
    manager.emit("on_memory_saved", {"data": "test"})
    callback1.assert_called_once()
    callback2.assert_called_once()
    gone.assert_not_called()


def test_register_dispatcher_with_mock_methods(make):
    manager = make()

    class TestDispatcher:
        def on_memory_saved(self, data):
            pass

        def on_memory_updated(self, data):
            pass

    dispatcher = TestDispatcher()
    dispatcher.on_memory_saved = Mock()
    dispatcher.on_memory_updated = Mock()
    manager.register_dispatcher(dispatcher)
    manager.emit("on_memory_saved", {"test": "data1"})
    manager.emit("on_memory_updated", {"test": "data2"})
    dispatcher.on_memory_saved.assert_called_once_with({"test": "data1"})
    dispatcher.on_memory_updated.assert_called_once_with({"test": "data2"})
    manager.unregister_dispatcher(dispatcher)
    manager.emit("on_memory_saved", {"test": "data3"})
    dispatcher.on_memory_saved.assert_called_once()


def test_multiple_mock_dispatchers(make):
    manager = make()
    dispatcher1 = Mock()
    dispatcher1.on_memory_saved = Mock()
    dispatcher2 = Mock()
    dispatcher2.on_memory_saved = Mock()
    manager.register_dispatcher(dispatcher1)
    manager.register_dispatcher(dispatcher2)
    manager.emit("on_memory_saved", {"resource_url": "test.pdf"})
    dispatcher1.on_memory_saved.assert_called_once()
    dispatcher2.on_memory_saved.assert_called_once()


def test_unknown_event_is_logged_and_ignored(make, caplog):
    manager = make()
    manager.emit("on_memory_exploded", {"x": 1})
    assert "unknown event" in caplog.text


# -- wrong results of issue 10 -----------------------------------------------------------------
def test_native_event_manager_routes_on_memory_saved_to_the_dispatcher(where):
    # Issue 10 item 8: the lookup was for on_on_memory_saved.
    m = engram.EventManager(where.log, topic=where.topic)
    try:
        seen = []

        class D:
            def on_memory_saved(self, data):
                seen.append(data["n"])
        m.register_dispatcher(D())
        m.start()
        m.emit("on_memory_saved", {"n": 1}, wait=10)
        m.emit("memory.saved", {"n": 2}, wait=10)
        assert seen == [1, 2]
    finally:
        m.close()


def test_async_listener_runs_on_one_loop_that_keeps_its_state(make):
    # Issue 10 items 3 and 4: async listeners never ran; a loop-bound client must keep working.
    manager = make()

    class Client:
        def __init__(self):
            self.loop = None
            self.lock = None
            self.calls = []

        async def send(self, url):
            if self.loop is None:
                self.loop, self.lock = asyncio.get_running_loop(), asyncio.Lock()
            assert asyncio.get_running_loop() is self.loop
            async with self.lock:
                await asyncio.sleep(0.001)
                self.calls.append(url)

    client = Client()

    async def on_saved(data):
        await client.send(data["resource_url"])

    manager.on("on_memory_saved", on_saved)
    for i in range(3):
        manager.emit("on_memory_saved", {"resource_url": f"https://example.com/{i}"})
    assert client.calls == [f"https://example.com/{i}" for i in range(3)]


def test_a_failing_listener_is_logged_and_does_not_rerun_the_others(make, caplog):
    # Issue 10 item 11, MemU's policy: log and go on; the healthy listener runs once.
    manager = make(ack_wait=1, backoff=[0.01], max_deliver=3)
    good = Mock()

    def bad(data):
        raise RuntimeError("listener bug")
    manager.on("on_memory_saved", bad)
    manager.on("on_memory_saved", good)
    manager.emit("on_memory_saved", {"n": 1})
    time.sleep(0.2)
    good.assert_called_once_with({"n": 1})
    assert "listener bug" in caplog.text and len(manager.errors) == 1


def test_with_retry_only_the_failing_listener_is_retried(make):
    manager = make(on_error="retry", ack_wait=1, backoff=[0.01], max_deliver=3)
    good = Mock()
    attempts = []

    def flaky(data):
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("transient")
    manager.on("on_memory_saved", flaky)
    manager.on("on_memory_saved", good)
    manager.emit("on_memory_saved", {"n": 1})
    assert wait_until(lambda: len(attempts) == 3)
    time.sleep(0.1)
    good.assert_called_once()
    infos = manager.bus.log.groups(manager.bus.topic)
    assert len(infos) == 2 and all(g.dead == 0 for g in infos)


# -- validators (the "Bonus" section and tests/test_task_validation.py) ------------------------
def test_memorize_task_input_accepts_the_seeds_modalities():
    for modality in ["conversation", "document", "image", "video", "audio"]:
        t = MemorizeTaskInput(resource_url="https://example.com/test.pdf", modality=modality,
                              user={"user_id": "test_user"})
        assert t.modality == modality
    assert MemorizeTaskInput(resource_url="http://example.com/test.pdf", modality="document", user=None).user is None


@pytest.mark.parametrize("url,words", [
    ("file:///etc/passwd", "Invalid URL scheme"), ("ftp://example.com/test.pdf", "Invalid URL scheme"),
    ("http://localhost/admin", "localhost"), ("http://127.0.0.1/admin", "localhost"),
    ("https://127.0.0.1/x", "localhost"), ("http://0.0.0.0/", "localhost"), ("http://[::1]/", "localhost"),
    ("http://10.0.0.1/admin", "private"), ("http://192.168.1.1/router", "private"),
    ("http://172.16.0.1/", "private"), ("http://172.31.255.255/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "private"),
    ("http://example.com/../../../etc/passwd", "Path traversal"),
    ("http://example.com..evil.com/test", "Path traversal"),
    ("https://example.com/" + "a" * 2100, "exceeds maximum length"), ("http:///test", "hostname"),
])
def test_memorize_task_input_refuses_unsafe_urls(url, words):
    with pytest.raises(ValidationError) as e:
        MemorizeTaskInput(resource_url=url, modality="document")
    assert words.lower() in str(e.value).lower()
    assert isinstance(e.value, ValueError)


def test_memorize_task_input_refuses_bad_modalities_and_users():
    for bad in [dict(modality="invalid_modality"), dict(modality="'; DROP TABLE memories; --"),
                dict(user={"name": "x"}), dict(user={"user_id": ""}), dict(user={"user_id": "   "}),
                dict(user={"user_id": 123})]:
        args = {**dict(resource_url="https://example.com/test.pdf", modality="document"), **bad}
        with pytest.raises(ValidationError):
            MemorizeTaskInput(**args)


def test_process_memory_task_validation_pattern():
    # The seed's task body: validate, and turn a ValidationError into ValueError.
    def process_memory_task(resource_url, modality, user=None):
        try:
            validated = MemorizeTaskInput(resource_url=resource_url, modality=modality, user=user)
        except ValidationError as e:
            raise ValueError(f"Invalid input: {e}") from e
        return validated.model_dump()
    assert process_memory_task("https://example.com/a.pdf", "document")["modality"] == "document"
    with pytest.raises(ValueError, match="Invalid input"):
        process_memory_task("https://127.0.0.1/x", "document")


# -- durability ----------------------------------------------------------------------------------
KILL_SCRIPT = r"""
import os, sys, time
from engram.compat.memu import EventManager
m = EventManager(os.environ["LOG"], topic=os.environ["TOPIC"], ack_wait=1, wait=None)
out = os.environ["OUT"]
def slow(data):
    open(os.path.join(out, "started-%d" % os.getpid()), "w").close()
    if os.environ["MODE"] == "first":
        time.sleep(60)
    with open(os.path.join(out, "done"), "a") as f:
        f.write(data["resource_url"] + "\n")
m.on("on_memory_saved", slow)
if os.environ["MODE"] == "first":
    m.emit("on_memory_saved", {"resource_url": "https://example.com/k.pdf", "modality": "document"})
time.sleep(60)
"""


def test_an_event_whose_listener_was_sigkilled_is_handled_by_the_next_process(where, tmp_path):
    out, env = handoff_dir(where, tmp_path)
    assert run_until(KILL_SCRIPT, started_in(out), MODE="first", **env)
    assert not (out / "done").exists()
    assert run_until(KILL_SCRIPT, lambda: (out / "done").exists(), settle=0.3, MODE="second", **env)
    assert (out / "done").read_text() == "https://example.com/k.pdf\n"


WORKER_SCRIPT = r"""
import os
import engram
from seedkit import record_listener
m = engram.EventManager(os.environ["LOG"], topic=os.environ["TOPIC"], poll=0.1)
m.on("on_memory_saved", record_listener)
m.run()
"""


def test_listeners_can_run_in_a_separate_worker_process(where, tmp_path, monkeypatch):
    # The same registrations in a worker process calling run(): the emitting process
    # does not start its listeners, the worker handles the events.
    from seedkit import record_listener
    monkeypatch.setenv("OUT", str(tmp_path))
    m = engram.EventManager(where.log, topic=where.topic, poll=0.1)
    m.on("on_memory_saved", record_listener)  # creates the group the worker shares
    worker = run_script(WORKER_SCRIPT, LOG=where.log, TOPIC=where.topic, OUT=str(tmp_path))
    try:
        for n in range(3):
            m.emit("on_memory_saved", {"n": n})
        handled = tmp_path / "handled"
        assert wait_until(lambda: handled.exists() and len(handled.read_text().split("\n")) > 3, 10)
    finally:
        worker.terminate()
        worker.wait(10)
        m.close()
    lines = [l.split() for l in handled.read_text().splitlines()]
    assert sorted(int(n) for _, n in lines) == [0, 1, 2]
    assert {int(pid) for pid, _ in lines} == {worker.pid}
    assert worker.returncode == 0  # SIGTERM: run() stops and returns
