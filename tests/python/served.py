# served.py — a real `engram serve` for the tests that go through engram.connect():
# a free loopback port, starting the daemon and waiting until it answers, stopping it.
import os
import signal
import socket
import subprocess

import pytest

import engram
from conftest import ROOT, wait_until

ENGRAM = os.path.join(os.environ.get("ENGRAM_BUILD") or os.path.join(ROOT, "build"), "engram")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(tmp, endpoint=None, data=None):
    """Starts `engram serve` with its data in ``data`` (default ``tmp``/served) and its
    notify socket in ``tmp``, listening on ``endpoint`` (default a free loopback port).
    Returns (process, endpoint) once it answers; skips the test if it cannot start."""
    endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
    data = str(data or tmp / "served")
    p = subprocess.Popen([ENGRAM, "serve", "--data", data, "--listen", endpoint,
                          "--notify", f"ipc://{tmp}/notify.ipc"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up():
        if p.poll() is not None:
            return True
        try:
            with engram.connect(endpoint, timeout=0.5) as c:
                c.topics()
            return True
        except engram.Error:
            return False
    if not wait_until(up, 10) or p.poll() is not None:
        err = p.stderr.read().decode() if p.poll() is not None else ""
        p.kill()
        pytest.skip(f"engram serve did not start: {err.strip()[:200]}")
    return p, endpoint


def stop_daemon(p):
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
