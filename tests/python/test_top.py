# test_top.py — `engram top` in a real terminal: tmux runs it, send-keys types, and
# capture-pane reads the screen. tmux is required (`make deps` installs it).
import os
import shutil
import subprocess
import uuid

import engram
from conftest import ROOT, wait_until


ENGRAM = os.path.join(ROOT, os.environ.get("BUILD", "build"), "engram")


def test_top_shows_groups_and_workers_live_and_quits_on_q(log_path):
    tmux = shutil.which("tmux")
    assert tmux, "tmux is required for this test: run `make deps`"
    with engram.open(log_path) as log:
        g = log.group("memory", "indexer", create_topic=True)
        for i in range(4):
            log.append("memory", "memory.saved", {"id": i})
        g.consumer("top-worker").fetch(1)
    sock = f"engram-test-{uuid.uuid4().hex[:8]}"
    session = "top"

    def tm(*args, check=True):
        return subprocess.run([tmux, "-L", sock, *args], capture_output=True, text=True,
                              timeout=30, check=check)

    def screen():
        r = tm("capture-pane", "-p", "-t", session, check=False)
        return r.stdout if r.returncode == 0 else ""

    tm("new-session", "-d", "-s", session, "-x", "160", "-y", "40",
       f"{ENGRAM} --data {log_path} top --interval 200ms; echo top-exited-$?; sleep 30")
    try:
        def row_with(lag):
            for line in screen().splitlines():
                f = line.split()
                if f[:2] == ["memory", "indexer"] and f[2] == str(lag):
                    return True
            return False
        assert wait_until(lambda: row_with(4), 20), screen()
        assert wait_until(lambda: "top-worker" in screen() and "alive" in screen(), 10), screen()
        with engram.open(log_path) as log:
            for i in range(3):
                log.append("memory", "memory.saved", {"id": 10 + i})
        assert wait_until(lambda: row_with(7), 20), screen()
        tm("send-keys", "-t", session, "n")
        assert wait_until(lambda: "sort name" in screen(), 10), screen()
        tm("send-keys", "-t", session, "q")
        assert wait_until(lambda: "top-exited-0" in screen(), 10), screen()
    finally:
        tm("kill-server", check=False)
