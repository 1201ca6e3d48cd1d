# test_main.py — `python -m engram worker module:obj`: which objects it runs (an App, what
# carries one, or any object with run(): the event-bus drop-ins) and the flags it refuses.
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import engram
from conftest import child_env, wait_until

WORKERS = {
    "bus": """
        bus = engram.EventBus(LOG, topic="bus", start="earliest")

        @bus.subscribe("memory.saved")
        def saved(ev):
            mark(ev.data["n"])
        obj = bus
    """,
    "manager": """
        manager = engram.EventManager(LOG, start="earliest")

        @manager.on("memory.saved")
        def saved(data):
            mark(data["n"])
        obj = manager
    """,
    "tracts": """
        tracts = engram.TractApp(LOG, use_global_registry=False, start="earliest")

        @tracts.on_event("memory", "saved")
        def saved(ctx):
            mark(ctx.msg["n"])
        obj = tracts
    """,
}


def publish(kind, path, n):
    if kind == "bus":
        with engram.EventBus(path, topic="bus") as b:
            b.publish("memory.saved", {"n": n})
    elif kind == "manager":
        engram.EventManager(path).emit("memory.saved", {"n": n})
    else:
        engram.TractApp(path, use_global_registry=False).emit("memory", "saved", {"n": n})


def write_module(tmp_path, kind):
    body = textwrap.dedent(WORKERS[kind])
    (tmp_path / "busworker.py").write_text(
        "import os\nimport engram\nLOG = os.environ['LOG']\n\n"
        "def mark(n):\n    with open(os.environ['OUT'], 'a') as f:\n        f.write(f'{n}\\n')\n"
        + body + "\n\ndef make():\n    return obj\n")


def worker(tmp_path, spec, *args):
    return subprocess.Popen([sys.executable, "-m", "engram", "worker", spec, *args], cwd=tmp_path,
                            env=child_env(LOG=tmp_path / "log", OUT=tmp_path / "out"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("kind", sorted(WORKERS))
@pytest.mark.parametrize("attr", ["obj", "make"])
def test_worker_runs_an_event_bus_object_until_sigterm(tmp_path, kind, attr):
    write_module(tmp_path, kind)
    p = worker(tmp_path, f"busworker:{attr}")
    try:
        publish(kind, str(tmp_path / "log"), 7)
        out = tmp_path / "out"
        assert wait_until(lambda: out.exists() and out.read_text() == "7\n", timeout=30), \
            p.stdout.read1().decode() if p.poll() is not None else "no event handled"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_worker_refuses_app_flags_for_an_object_that_is_not_an_app(tmp_path):
    write_module(tmp_path, "bus")
    p = worker(tmp_path, "busworker:obj", "-c", "4", "-Q", "a,b")
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 2
    assert "--concurrency, --queues: only for an engram.App" in out and "EventBus" in out


def test_worker_refuses_an_object_without_run(tmp_path):
    (tmp_path / "notaworker.py").write_text("thing = 42\n")
    p = worker(tmp_path, "notaworker:thing")
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 1 and "neither an engram.App nor an object with a run() method" in out
