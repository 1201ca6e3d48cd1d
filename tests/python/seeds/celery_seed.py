# celery_seed.py — shared by the Celery seed tests: a broker fixture that runs each test
# against an embedded log and against a real `engram serve`, and helpers to run workers
# (in a thread, or as `python -m engram worker` processes).
import importlib.util
import os
import signal
import subprocess
import sys
import threading

import pytest

import engram
from conftest import child_env, wait_until
from served import ENGRAM, start_daemon, stop_daemon

HERE = os.path.dirname(os.path.abspath(__file__))


def load_port(filename, name, out=None):
    """A fresh import of the ported seed module ``filename`` (in this folder) under the
    module name ``name``, reading the environment as it is now; its OUT is set to ``out``
    when given."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if out is not None:
        mod.OUT = out
    return mod


@pytest.fixture(params=["embedded", "served"])
def broker(request, tmp_path):
    """The log a seed's Celery app is given: a directory, or a daemon's endpoint."""
    if request.param == "embedded":
        yield str(tmp_path / "log")
        return
    if request.node.originalname in getattr(request.module, "EMBEDDED_ONLY", ()):
        pytest.skip("run embedded only, to keep the suite quick (the served path is the same API)")
    if request.node.originalname in getattr(request.module, "TICKS_AHEAD", ()):
        pytest.skip("ticks schedules at a chosen future time, which a daemon refuses (a slot fired "
                    "early never fires at its time): embedded only; test_schedules.py covers the "
                    "refusal and tests/test_schedule.c the daemon's own firing")
    if not os.access(ENGRAM, os.X_OK):
        pytest.skip(f"{ENGRAM} is not built")
    p, endpoint = start_daemon(tmp_path)
    yield endpoint
    stop_daemon(p)


def run_worker(celery_app, seconds=0.3, concurrency=2, **kw):
    """Runs the app's workers in this thread until idle for ``seconds``."""
    return celery_app.app.run(concurrency, idle_timeout=seconds, wait=0.05, install_signals=False, **kw)


def worker_thread(celery_app, seconds=0.4, **kw):
    t = threading.Thread(target=run_worker, args=(celery_app, seconds), kwargs=kw, daemon=True)
    t.start()
    return t


def spawn(spec, *args, **env):
    """`python -m engram worker spec args...` with the seed modules importable."""
    e = child_env(**env)
    e["PYTHONPATH"] = os.pathsep.join([HERE, e["PYTHONPATH"]])
    return subprocess.Popen([sys.executable, "-m", "engram", "worker", spec, *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(p, timeout=10):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out.decode(errors="replace")
