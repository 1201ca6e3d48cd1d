# seedkit.py — what the seed tests share: the `where` fixture (an embedded log directory,
# or an endpoint of a real `engram serve` started once per module), a unique topic per
# test, and a helper running a seed script in a subprocess that can be SIGKILLed.
import itertools
import os
import subprocess
import sys
import time

import pytest

import engram

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ROOT = os.path.dirname(ROOT)
BINDING = os.path.join(ROOT, "bindings", "python")
ENGRAM = os.path.join(os.environ.get("ENGRAM_BUILD") or os.path.join(ROOT, "build"), "engram")
_topics = itertools.count(1)

needs_groups = pytest.mark.skipif("engram_fetch" in engram.missing_features(),
                                  reason="libengram has no consumer groups yet")


def wait_until(cond, timeout=5.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def serve(tmp, endpoint):
    """Starts `engram serve` on ``endpoint`` with its data in ``tmp``/data; returns the
    process once it answers (skips the test if it cannot start)."""
    if not os.access(ENGRAM, os.X_OK) or "engram_connect" in engram.missing_features():
        pytest.skip("engram serve is not built")
    # Imported here, not at the top: worker subprocesses import this module with only
    # tests/python/seeds on their path.
    from served import start_daemon
    return start_daemon(tmp, endpoint, tmp / "data")[0]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from served import free_port, stop_daemon
    tmp = tmp_path_factory.mktemp("served")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    p = serve(tmp, endpoint)
    yield endpoint
    stop_daemon(p)


class Where:
    """Where a test's bus lives: ``log`` (a directory or an endpoint) and ``topic``."""

    def __init__(self, log, topic, served):
        self.log, self.topic, self.served = log, topic, served

    def kw(self, **extra):
        return dict(topic=self.topic, poll=0.1, **extra)  # poll: a closing bus waits out one fetch


@pytest.fixture(params=["embedded", "served"])
def where(request, tmp_path):
    topic = f"t{next(_topics)}"
    if request.param == "served":
        return Where(request.getfixturevalue("daemon"), topic, True)
    return Where(str(tmp_path / "log"), topic, False)


def child_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([BINDING, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_script(code, **env):
    """Starts ``python -c code`` with the binding on its path."""
    return subprocess.Popen([sys.executable, "-c", code], env=child_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_until(code, cond, settle=0.0, **env):
    """Runs ``python -c code`` until cond() holds (10 s at most), waits ``settle`` seconds
    more when it did, then SIGKILLs it. Returns cond()'s last value."""
    p = run_script(code, **env)
    try:
        v = wait_until(cond, 10)
        if v:
            time.sleep(settle)
        return v
    finally:
        p.kill()
        p.wait()


def handoff_dir(where, tmp_path):
    """The $OUT folder and the environment of a KILL_SCRIPT: its handler writes
    started-<pid> there when it starts (and with MODE=first then hangs), and appends
    what it handled to ``done``."""
    out = tmp_path / "out"
    out.mkdir()
    return out, dict(LOG=where.log, TOPIC=where.topic, OUT=str(out))


def started_in(out):
    """A condition for run_until: some handler has written its started-<pid> file."""
    return lambda: any(n.startswith("started") for n in os.listdir(out))


def record_listener(data):
    """A listener both a test and its worker subprocess register (same module, same
    group name): appends data["n"] to $OUT/handled with the handling pid."""
    with open(os.path.join(os.environ["OUT"], "handled"), "a") as f:
        f.write(f"{os.getpid()} {data['n']}\n")
