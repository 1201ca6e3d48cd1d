# conftest.py — fixtures for the Python binding's tests: a fresh log per test, helpers to
# run worker processes.
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINDING = os.path.join(ROOT, "bindings", "python")
HERE = os.path.dirname(os.path.abspath(__file__))

# The extension is (re)built for the interpreter running the tests, against the current
# build/libengram.a (a no-op when it is up to date); ENGRAM_PY_NO_BUILD=1 skips that.
if not os.environ.get("ENGRAM_PY_NO_BUILD"):
    _r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=BINDING,
                        capture_output=True, text=True)
    if _r.returncode != 0:
        pytest.exit(f"building the engram extension failed:\n{_r.stdout[-2000:]}{_r.stderr[-2000:]}", 2)

import engram  # noqa: E402


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "log")


@pytest.fixture
def log(log_path):
    with engram.open(log_path) as lg:
        yield lg


def child_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([BINDING, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def spawn_worker(app_spec, *args, **env):
    """Starts `python -m engram worker app_spec args...` with the test's environment."""
    return subprocess.Popen([sys.executable, "-m", "engram", "worker", app_spec, *args],
                            env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_until(cond, timeout=10.0, interval=0.02):
    """Polls cond() until it is true or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def read_records(out_dir):
    """Lines 'pid offset attempt type' written by tests/python/workerapp.py."""
    recs = []
    if not os.path.isdir(out_dir):
        return recs
    for name in os.listdir(out_dir):
        with open(os.path.join(out_dir, name)) as f:
            for line in f:
                p = line.split()
                if len(p) == 4:
                    recs.append((int(p[0]), int(p[1]), int(p[2]), p[3]))
    return recs
