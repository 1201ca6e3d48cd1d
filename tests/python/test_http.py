# test_http.py — `engram serve --http`: the JSON API, /metrics, health, auth and CSRF
# rules, garbage requests, a real headless Chromium driving the dashboard (through the
# DevTools protocol, with a small client here), and a real Prometheus scraping /metrics.
# Chromium and Prometheus are required: `make deps` installs them; a test fails when
# they are missing rather than skipping.
import base64
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import engram
from conftest import ROOT, wait_until


ENGRAM = os.path.join(ROOT, os.environ.get("BUILD", "build"), "engram")
ARTIFACTS = os.path.join(ROOT, os.environ.get("BUILD", "build"), "artifacts")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, tmp_path, http_host="127.0.0.1", token=None):
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.http_port = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.data = str(tmp_path / "served")
        env = dict(os.environ)
        env.pop("ENGRAM_HTTP_TOKEN", None)
        args = [ENGRAM, "serve", "--data", self.data, "--listen", self.endpoint, "--notify",
                f"tcp://127.0.0.1:{free_port()}", "--http", f"{http_host}:{self.http_port}"]
        if token:
            args += ["--http-token", token]
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

        def up():
            if self.p.poll() is not None:
                return True
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False
        assert wait_until(up, 20), "the daemon's HTTP did not come up"
        assert self.p.poll() is None, self.p.stderr.read().decode()

    def connect(self):
        return engram.connect(self.endpoint)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def get(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def fill(d, dead=1, pending=3):
    """A topic `memory`, a group `indexer` with `dead` events in its DLQ and `pending`
    events waiting, a worker `w1` that fetched."""
    with d.connect() as log:
        g = log.group("memory", "indexer", create_topic=True)
        for i in range(dead):
            log.append("memory", "memory.saved", {"id": i, "note": "dies"})
        c = g.consumer("w1")
        for ev in c.fetch(dead):
            ev.reject("bad payload")
        for i in range(pending):
            log.append("memory", "memory.saved", {"id": 100 + i})


def overview(d):
    return json.loads(get(d.base + "/api/overview")[1])


def test_api_metrics_and_health(daemon):
    fill(daemon)
    st, body = get(daemon.base + "/readyz")
    assert (st, body) == (200, "ready\n")
    o = overview(daemon)
    g = o["groups"][0]
    assert (g["topic"], g["name"], g["lag"], g["dead"]) == ("memory", "indexer", 3, 1)
    assert [w["name"] for w in o["workers"]] == ["w1"] and not o["workers"][0]["lost"]
    st, metrics = get(daemon.base + "/metrics")
    assert st == 200
    assert 'engram_group_lag{topic="memory",group="indexer"} 3' in metrics
    assert 'engram_dlq_size{topic="memory",group="indexer"} 1' in metrics
    assert "engram_workers_alive 1" in metrics
    assert "# TYPE engram_commit_batch_size histogram" in metrics
    # data.mdb's space (engram_space_get): the log's pages, used and free, within the file's map.
    space = {ln.split(" ")[0]: int(ln.split(" ")[1]) for ln in metrics.splitlines()
             if ln.startswith(("engram_data_", "engram_map_bytes "))}
    assert set(space) == {"engram_data_file_bytes", "engram_data_used_bytes",
                          "engram_data_free_bytes", "engram_map_bytes"}, space
    assert "# TYPE engram_data_free_bytes gauge" in metrics
    assert 0 < space["engram_data_used_bytes"] <= space["engram_map_bytes"]
    assert space["engram_data_used_bytes"] + space["engram_data_free_bytes"] <= space["engram_map_bytes"]
    # Alone on its log, the daemon shares no commit with another process.
    assert "engram_appends_shared_total 0" in metrics
    assert "engram_appends_carried_total 0" in metrics
    # Counters of settles and the log's rates (engram_rate_list), as engram top shows them.
    assert 'engram_rejects_total{topic="memory",group="indexer"} 1' in metrics
    assert 'engram_dead_letters_total{topic="memory",group="indexer"} 1' in metrics
    assert 'engram_nacks_total{topic="memory",group="indexer"} 0' in metrics
    assert 'engram_topic_appended_per_second{topic="memory",window="15m"}' in metrics
    assert 'engram_group_rejected_per_second{topic="memory",group="indexer",window="1m"}' in metrics
    # Duration histograms: cumulative buckets ending in +Inf == _count.
    for h in ("engram_write_latency_seconds", "engram_commit_duration_seconds",
              "engram_fsync_duration_seconds"):
        assert f"# TYPE {h} histogram" in metrics
        lines = [ln for ln in metrics.splitlines() if ln.startswith(h + "_bucket")]
        counts = [int(ln.rsplit(" ", 1)[1]) for ln in lines]
        assert len(lines) == 16 and lines[-1].startswith(h + '_bucket{le="+Inf"}'), h
        assert counts == sorted(counts) and counts[-1] > 0, h
        assert f"{h}_count {counts[-1]}" in metrics, h
    rates = g["rates"]
    assert rates["window"] == ["1m", "5m", "15m"] and len(rates["acked"]) == 3
    assert rates["appended"][0] > 0 and rates["rejected"][2] > 0 and g["rejected"] == 1
    assert o["topics"][0]["rates"]["appended"][0] > 0
    # Event detail, by state, the DLQ, Flower's endpoints.
    ev = json.loads(get(daemon.base + "/api/event?topic=memory&group=indexer&offset=1")[1])
    assert ev["status"]["state"] == "dead" and ev["status"]["last_error"] == "rejected: bad payload"
    assert json.loads(ev["payload"])["note"] == "dies"
    pend = json.loads(get(daemon.base + "/api/events?topic=memory&group=indexer&state=pending")[1])
    assert [e["offset"] for e in pend["events"]] == [2, 3, 4]
    tasks = json.loads(get(daemon.base + "/api/tasks?state=FAILURE")[1])
    assert tasks["memory:1"]["state"] == "FAILURE" and tasks["memory:1"]["name"] == "memory.saved"
    info = json.loads(get(daemon.base + "/api/task/info/memory:2")[1])
    assert info["status"]["state"] == "pending"
    workers = json.loads(get(daemon.base + "/api/workers")[1])
    assert workers["w1"]["status"] is True and workers["w1"]["queues"] == ["memory/indexer"]
    # The series fills in once a second.
    assert wait_until(lambda: len(json.loads(get(
        daemon.base + "/api/series?topic=memory&group=indexer")[1]).get("samples", [])) >= 2, 10)
    # Bad input: a 4xx with a message, never a crash.
    for path in ("/api/event?topic=memory&offset=x", "/api/event?topic=bad%20name&offset=1",
                 "/api/events?topic=memory", "/api/task/info/nocolon", "/api/task/info/m:-1",
                 "/nope", "/api/series?topic=memory&group=nope"):
        st, body = get(daemon.base + path)
        assert 400 <= st < 500 and json.loads(body)["message"], path
    assert get(daemon.base + "/api/dlq/redrive?topic=memory&group=indexer&offset=1")[0] == 405
    assert get(daemon.base + "/healthz", method="PUT")[0] == 200  # health answers anything


def test_finished_tasks_are_listed_newest_first_with_their_results(daemon):
    """Done events lie at or below the group's floor: the listings look for them from the
    head down (they once started at the floor and found none), and Flower's /api/tasks
    without a state lists every task, as Flower does."""
    with daemon.connect() as log:
        g = log.group("jobs", "celery", create_topic=True)
        for i in range(5):
            log.append("jobs", "task.add", {"args": [i, 1]}, headers={"task": "proj.add"})
        for ev in g.fetch("w1", max=5):
            if ev.offset == 3:
                ev.reject("ValueError: no")
            else:
                ev.ack(result=json.dumps({"value": ev.json()["args"][0] + 1}))
        log.append("jobs", "task.add", {"args": [9, 1]}, headers={"task": "proj.add"})
        assert g.info().floor == 5
    done = json.loads(get(daemon.base + "/api/events?topic=jobs&group=celery&state=done")[1])
    assert [e["offset"] for e in done["events"]] == [5, 4, 2, 1]
    unfinished = json.loads(get(daemon.base + "/api/events?topic=jobs&group=celery")[1])
    assert [e["offset"] for e in unfinished["events"]] == [6]
    ok = json.loads(get(daemon.base + "/api/tasks?state=SUCCESS")[1])
    assert list(ok) == ["jobs:5", "jobs:4", "jobs:2", "jobs:1"]
    assert ok["jobs:4"]["state"] == "SUCCESS" and ok["jobs:4"]["name"] == "proj.add"
    assert json.loads(ok["jobs:4"]["result"]) == {"value": 4}
    every = json.loads(get(daemon.base + "/api/tasks")[1])
    assert [(k, t["state"]) for k, t in every.items()] == [
        ("jobs:6", "RECEIVED"), ("jobs:5", "SUCCESS"), ("jobs:4", "SUCCESS"), ("jobs:3", "FAILURE"),
        ("jobs:2", "SUCCESS"), ("jobs:1", "SUCCESS")]
    assert list(json.loads(get(daemon.base + "/api/tasks?limit=2")[1])) == ["jobs:6", "jobs:5"]
    info = json.loads(get(daemon.base + "/api/task/info/jobs:2")[1])
    assert (info["uuid"], info["name"], info["state"], info["retries"]) == ("jobs:2", "proj.add", "SUCCESS", 0)
    assert json.loads(info["result"]) == {"value": 2} and info["status"]["state"] == "done"
    failed = json.loads(get(daemon.base + "/api/task/info/jobs:3")[1])
    assert failed["state"] == "FAILURE" and failed["exception"].endswith("ValueError: no")
    # A state no listing knows is refused, not answered with an empty list.
    for path in ("/api/events?topic=jobs&group=celery&state=finished", "/api/tasks?state=DONE"):
        st, body = get(daemon.base + path)
        assert st == 400 and "state" in json.loads(body)["message"], path


def test_mutations_need_post_with_the_csrf_header(daemon):
    fill(daemon)
    url = daemon.base + "/api/dlq/redrive?topic=memory&group=indexer&offset=1"
    assert get(url, method="POST")[0] == 403
    assert overview(daemon)["groups"][0]["dead"] == 1  # refused: nothing changed
    st, body = get(url, {"X-Engram-Csrf": "1"}, method="POST")
    assert st == 200 and json.loads(body)["count"] == 1
    assert overview(daemon)["groups"][0]["dead"] == 0
    st, _ = get(daemon.base + "/api/dlq/purge?topic=memory&group=indexer", {"X-Engram-Csrf": "1"},
                method="POST")
    assert st == 400  # neither offset nor all=1


def test_a_token_guards_every_request_but_health(tmp_path):
    d = Daemon(tmp_path, token="s3cret")
    try:
        fill(d)
        assert get(d.base + "/healthz")[0] == 200
        for path in ("/", "/api/overview", "/metrics", "/api/workers"):
            st, _ = get(d.base + path)
            assert st == 401, path
        assert get(d.base + "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(d.base + "/metrics", {"Authorization": "Bearer s3cret"})[0] == 200
        basic = base64.b64encode(b"admin:s3cret").decode()
        assert get(d.base + "/api/overview", {"Authorization": "Basic " + basic})[0] == 200
        wrong = base64.b64encode(b"admin:s3cre").decode()
        assert get(d.base + "/api/overview", {"Authorization": "Basic " + wrong})[0] == 401
        assert get(d.base + "/api/overview", {"Authorization": "Basic !!"})[0] == 401
        url = d.base + "/api/dlq/redrive?topic=memory&group=indexer&offset=1"
        assert get(url, {"X-Engram-Csrf": "1"}, method="POST")[0] == 401
        assert get(url, {"Authorization": "Bearer s3cret"}, method="POST")[0] == 403
        st, _ = get(url, {"Authorization": "Bearer s3cret", "X-Engram-Csrf": "1"}, method="POST")
        assert st == 200
    finally:
        d.stop()


def test_a_non_loopback_http_address_needs_a_token(tmp_path):
    env = dict(os.environ)
    env.pop("ENGRAM_HTTP_TOKEN", None)
    r = subprocess.run([ENGRAM, "serve", "--data", str(tmp_path / "x"), "--listen",
                        f"tcp://127.0.0.1:{free_port()}", "--http", f"0.0.0.0:{free_port()}"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode != 0 and "token" in r.stderr
    # With one, every request without it is refused (reached here over loopback).
    d = Daemon(tmp_path, http_host="0.0.0.0", token="t0k")
    try:
        assert get(d.base + "/api/overview")[0] == 401
        assert get(d.base + "/api/overview", {"Authorization": "Bearer t0k"})[0] == 200
    finally:
        d.stop()


def test_garbage_requests_leave_the_daemon_serving(daemon):
    fill(daemon)
    rnd = random.Random(13)
    junk = [b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 100000 + b"\r\n\r\n",
            b"\x00\xff" * 500, b"GET /api/event?topic=%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /api/dlq/purge HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nabc",
            b"GET /" + b"../" * 3000 + b" HTTP/1.0\r\n\r\n", b"\r\n\r\n\r\n",
            b"GET /api/task/info/" + b"9" * 5000 + b":1 HTTP/1.0\r\n\r\n"]
    for _ in range(80):
        n = rnd.randint(1, 3000)
        junk.append(bytes(rnd.getrandbits(8) for _ in range(n)))
        junk.append(b"GET /api/" + bytes(rnd.choice(b"abc/?&=%:0x") for _ in range(60)) +
                    b" HTTP/1.1\r\nHost: a\r\n\r\n")
    deadline = time.monotonic() + 120
    for blob in junk:
        assert time.monotonic() < deadline
        with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5) as s:
            try:
                s.sendall(blob)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(0.5)  # an answer or a close; a kept-alive connection is left
                s.recv(65536)
            except OSError:
                pass
    def serving():
        try:
            return (get(daemon.base + "/healthz")[0] == 200
                    and overview(daemon)["groups"][0]["lag"])
        except OSError:  # connections the garbage left open count against the limit (a
            return False  # connection over it is reset), until they close
    # Serving again at the latest once the connection timeout (10 s) closes them.
    assert wait_until(serving, 30) == 3
    with daemon.connect() as log:  # the ZeroMQ side too
        assert log.group("memory", "indexer").info().lag == 3


# ---------------------------------------------------------------------------------------
# A real Chromium through its DevTools protocol: a WebSocket client by hand.
# ---------------------------------------------------------------------------------------
class CDP:
    def __init__(self, ws_url):
        host_port, path = ws_url[len("ws://"):].split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            assert chunk, "DevTools closed the connection during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 20)
            assert chunk, "DevTools connection closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, text):
        data = text.encode()
        hdr = bytes([0x81])
        if len(data) < 126:
            hdr += bytes([0x80 | len(data)])
        elif len(data) < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        mask = os.urandom(4)
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self):
        msg = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            op = b0 & 0x0F
            if op in (1, 0, 2):
                msg += payload
                if b0 & 0x80:
                    return json.loads(msg)
            elif op == 8:
                raise AssertionError("DevTools closed the WebSocket")

    def call(self, method, **params):
        self.next_id += 1
        me = self.next_id
        self._send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            m = self._recv()
            if m.get("id") == me:
                assert "error" not in m, m
                return m.get("result", {})

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait_js(self, expr, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for: {expr}")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        os.makedirs(ARTIFACTS, exist_ok=True)
        shutil.copy(path, os.path.join(ARTIFACTS, os.path.basename(path)))


@pytest.fixture
def chromium(tmp_path):
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    assert os.path.exists(exe), "Chromium is required for this test: run `make deps`"
    prof = tmp_path / "chromium-profile"
    prof.mkdir()
    p = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu",
                          "--remote-debugging-port=0", f"--user-data-dir={prof}",
                          "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                          "about:blank"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = prof / "DevToolsActivePort"
    try:
        assert wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 60), \
            "Chromium did not open its DevTools port"
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
        cdp = CDP(pages[0]["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        yield cdp
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_the_dashboard_in_a_real_browser(daemon, chromium, tmp_path):
    fill(daemon, dead=1, pending=3)
    cdp = chromium
    cdp.call("Page.navigate", url=daemon.base + "/")
    lag_cell = "document.getElementById('lag-memory-indexer')"
    assert cdp.wait_js(f"{lag_cell} && {lag_cell}.textContent === '3'")
    cdp.screenshot(str(tmp_path / "dashboard-before.png"))
    with daemon.connect() as log:
        for i in range(5):
            log.append("memory", "memory.saved", {"id": 200 + i})
    # Live: the number changes without a reload.
    assert cdp.wait_js(f"{lag_cell}.textContent === '8'")
    # The worker is listed as alive; the group's nacks and the topic's rates are shown.
    assert cdp.wait_js("document.querySelector('#workers td.alive') !== null")
    assert cdp.wait_js("document.getElementById('nacked-memory-indexer').textContent === '0'")
    assert cdp.wait_js("document.querySelectorAll('#topics tbody td').length === 7")
    # Open the group, then an event's detail.
    cdp.js("document.querySelector('a.open[data-t=\"memory\"][data-g=\"indexer\"]').click()")
    assert cdp.wait_js("document.querySelectorAll('#events a.ev').length >= 3")
    cdp.js("document.querySelector('#events a.ev').click()")
    assert cdp.wait_js("!document.getElementById('detail').hidden && "
                       "document.getElementById('detail-body').textContent.includes('memory.saved')")
    # Redrive the DLQ entry by clicking (the confirmation answered yes).
    assert cdp.wait_js("document.getElementById('redrive-1') !== null")
    cdp.screenshot(str(tmp_path / "dashboard-group.png"))
    cdp.js("window.confirm = () => true; document.getElementById('redrive-1').click()")
    assert wait_until(lambda: overview(daemon)["groups"][0]["dead"] == 0, 20)
    assert cdp.wait_js("document.getElementById('redrive-1') === null")
    cdp.screenshot(str(tmp_path / "dashboard-after.png"))


def test_prometheus_scrapes_the_daemon(daemon, tmp_path):
    exe = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert os.path.exists(exe), "Prometheus is required for this test: run `make deps`"
    fill(daemon, dead=0, pending=6)
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: engram
    scrape_interval: 1s
    static_configs:
      - targets: ["127.0.0.1:{daemon.http_port}"]
""")
    p = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path}/tsdb",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(q):
            url = f"http://127.0.0.1:{port}/api/v1/query?query=" + urllib.request.quote(q)
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.loads(r.read())["data"]["result"]
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                return None
            return res
        lag = 'engram_group_lag{topic="memory",group="indexer"}'
        assert wait_until(lambda: query(lag), 90), "Prometheus never scraped the lag"
        assert query(lag)[0]["value"][1] == "6"
        assert wait_until(lambda: query("engram_workers_alive"), 30)
        assert query("engram_workers_alive")[0]["value"][1] == "1"
        # The commit latency histogram answers a quantile query: the writes of fill()
        # took a positive time, below the top bound.
        q = "histogram_quantile(0.9, engram_write_latency_seconds_bucket)"
        assert wait_until(lambda: query(q), 30), "no quantile of the write latency"
        p90 = float(query(q)[0]["value"][1])
        assert 0 < p90 <= 2.5, p90
        q = "histogram_quantile(0.5, engram_fsync_duration_seconds_bucket)"
        assert wait_until(lambda: query(q), 30)
        assert float(query(q)[0]["value"][1]) > 0
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


# ---------------------------------------------------------------------------------------
# Schedules: the panel, its run-now / pause / resume buttons, and their metrics.
# ---------------------------------------------------------------------------------------
def add_schedule(d, name, topic, every):
    """Adds an interval schedule through the daemon (`engram --connect ... schedule add`)."""
    r = subprocess.run([ENGRAM, "--connect", d.endpoint, "schedule", "add", name, "--every", every,
                        "--topic", topic, "--type", "memory.compact",
                        "--payload", '{"job":"compact"}'], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr


def test_schedules_panel_in_a_real_browser(daemon, chromium, tmp_path):
    fill(daemon, dead=0, pending=2)
    add_schedule(daemon, "nightly", "memory", "1h")
    sched = json.loads(get(daemon.base + "/api/schedules")[1])["schedules"]
    assert [s["name"] for s in sched] == ["nightly"]
    s = sched[0]
    assert (s["every_ms"], s["topic"], s["paused"], s["fires"]) == (3600000, "memory", 0, 0)
    assert s["last_error"] == "" and s["last_error_ns"] == 0
    assert s["next_slot_ns"] > time.time_ns()
    cdp = chromium
    cdp.call("Page.navigate", url=daemon.base + "/")
    state = "document.getElementById('sched-state-nightly')"
    fires = "document.getElementById('sched-fires-nightly')"
    assert cdp.wait_js(f"{state} && {state}.textContent === 'active'")
    assert cdp.js(f"{fires}.textContent") == "0"
    cdp.js("window.confirm = () => true")
    head = overview(daemon)["topics"][0]["head_offset"]
    # Run now: one event appended to the topic, the fire counted.
    cdp.js("document.getElementById('run-nightly').click()")
    assert cdp.wait_js(f"{fires}.textContent === '1'")
    assert overview(daemon)["topics"][0]["head_offset"] == head + 1
    with daemon.connect() as log:
        ev = log.read("memory", head + 1, 1)[0]
        assert ev.type == "memory.compact" and ev.headers["engram-fire"] == "manual"
    # Pause, then resume, by clicking.
    cdp.js("document.getElementById('pause-nightly').click()")
    assert cdp.wait_js(f"{state}.textContent === 'paused'")
    cdp.screenshot(str(tmp_path / "dashboard-schedules.png"))
    st, metrics = get(daemon.base + "/metrics")
    assert 'engram_schedule_paused{schedule="nightly"} 1' in metrics
    assert 'engram_schedule_manual_fires_total{schedule="nightly"} 1' in metrics
    assert 'engram_schedule_fires_total{schedule="nightly"} 0' in metrics
    nxt = [ln for ln in metrics.splitlines()
           if ln.startswith('engram_schedule_next_fire_timestamp_seconds{schedule="nightly"}')]
    assert len(nxt) == 1 and float(nxt[0].split()[1]) > time.time()
    cdp.js("document.getElementById('resume-nightly').click()")
    assert cdp.wait_js(f"{state}.textContent === 'active'")
    # The rules of every change: POST, the CSRF header, a valid name.
    url = daemon.base + "/api/schedules/run?name=nightly"
    assert get(url)[0] == 405
    assert get(url, method="POST")[0] == 403
    assert get(daemon.base + "/api/schedules/run?name=nope", {"X-Engram-Csrf": "1"},
               method="POST")[0] == 404
    assert get(daemon.base + "/api/schedules/pause?name=bad%20name", {"X-Engram-Csrf": "1"},
               method="POST")[0] == 400
    assert json.loads(get(daemon.base + "/api/schedules")[1])["schedules"][0]["manual_fires"] == 1
