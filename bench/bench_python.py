#!/usr/bin/env python3
"""bench_python.py — Python producer -> Python workers on engram, embedded and through
`engram serve`, and the same job on Celery with a Redis broker, side by side: no-op
tasks/s and end-to-end latency p50/p99.

    /usr/bin/python3 bench/bench_python.py [--events 20000] [--latency-events 1000]
        [--rate 200] [--workers 2] [--only engram|celery] [--modes embedded,served]
        [--engram-workers consumer,app,task,task-pipelined] [--durability sync,async]
        [--engram build/engram] [--no-drain] [--json FILE]

Throughput: the producer sends --events no-op events as fast as it can, --workers worker
processes handle them; events/s = events / (first send -> last completion). The engram
worker kinds: `consumer` (the bare consumer API: each batch acked with the fetch of the
next, one ack_fetch call; the producer pipelines appends), `app` (engram.App with an
@app.on handler; the producer pipelines appends), `task` (engram.App's Celery-like API:
an @app.task, the producer calls Task.delay() once per task, as Celery's does, and each
returns once its task is durable) and `task-pipelined` (the same with
App(confirm_publish=False): each delay() is still one append, queued on the handle and sent
in batches; the producer's flush() at the end waits for all). Drain: the tasks are queued
first, then the workers start; tasks/s = events / (first -> last handler call). Latency:
--latency-events sent one at a time at --rate per second; latency = handler start - send
time (both CLOCK_REALTIME, same host). Mode `embedded` opens the log directory in every
process; mode `served` starts `engram serve` (--engram, default build/engram) on a free
loopback port with a throw-away log and the durability of the row, runs the same producer
and workers through engram.connect(), and stops it after (also on failure); its rows add
the daemon's requests, commits and flushes per task (server_info counters). Celery runs
with WORKERS prefork worker processes (-c WORKERS), no result backend; redis-server is
started on a free loopback port and stopped after. Prints one JSON object per
measurement on stdout, then a summary table with each row's ratio to Celery.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BINDING = os.path.join(ROOT, "bindings", "python")
sys.path.insert(0, BINDING)

TOPIC, GROUP = "bench", "workers"


def pct(xs: List[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def env_with_binding() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([BINDING, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


# ---------------------------------------------------------------------------------------
# engram
# ---------------------------------------------------------------------------------------
def open_target(target: str, durability: str) -> Any:
    """The log: a directory opened here, or an `engram serve` endpoint connected to."""
    import engram
    if "://" in target:
        return engram.connect(target)
    return engram.open(target, durability=durability)


_task_lat: List[int] = []
_task_seen = [0, 0]  # the first and the last handler call (CLOCK_REALTIME ns)


def task_app(log: Any, confirm_publish: bool = True) -> Any:
    """The App of the `task` kinds, alike in the producer and the workers: one no-op task
    sent with Task.delay(), no result kept (as Celery's task_ignore_result)."""
    import engram
    app = engram.App(log, group=GROUP, topic=TOPIC, ack_wait=30, confirm_publish=confirm_publish)

    @app.task(name="bench.noop", ignore_result=True)
    def noop(t_sent: int) -> None:
        now = time.time_ns()
        _task_lat.append(now - t_sent)
        _task_seen[0] = _task_seen[0] or now
        _task_seen[1] = max(_task_seen[1], now)

    app.bench_task = noop  # type: ignore[attr-defined]
    return app


def engram_app_worker(target: str, out: str, expect: int, batch: int, durability: str,
                      kind: str) -> None:
    """A worker process running engram.App (2 threads): a no-op @app.on handler (kind
    `app`) or a no-op @app.task (kind `task`); it exits after a second without events
    once the group has acked `expect` events."""
    import engram
    log = open_target(target, durability)
    if kind.startswith("task"):
        app = task_app(log)
        lat, seen = _task_lat, _task_seen
    else:
        app = engram.App(log, group=GROUP, topic=TOPIC, ack_wait=30)
        lat = []
        seen = [0, 0]

        @app.on("bench.noop")
        def noop(ev: engram.Event) -> None:
            now = time.time_ns()
            lat.append(now - int(ev.payload))
            seen[0] = seen[0] or now
            seen[1] = max(seen[1], now)

    app.group.info()  # the group exists and the handle is warm (a fetch would lease an event)
    cpu0 = time.process_time()
    open(out + ".ready", "w").close()
    while True:
        app.run(concurrency=2, wait=0.2, idle_timeout=1.0, batch=batch, install_signals=False)
        if app.group.info().acked >= expect:
            break
    # The last handler call (its ack follows within one commit).
    with open(out, "w") as f:
        json.dump({"lat_ns": lat, "first_ns": seen[0], "last_ns": seen[1],
                   "cpu_s": time.process_time() - cpu0}, f)
    log.close()


def engram_worker(target: str, out: str, expect: int, batch: int, durability: str) -> None:
    """A worker process on the bare consumer API: runs a no-op handler per event of a
    batch, then acks the batch with the fetch of the next (one ack_fetch call, one
    commit); exits once the group has acked `expect` events."""
    log = open_target(target, durability)
    g = log.group(TOPIC, GROUP, ack_wait=30)
    name = f"w{os.getpid()}"
    lat: List[int] = []
    first = last = 0
    g.info()  # warms the handle up (a fetch would lease an event in the drain phase)
    cpu0 = time.process_time()
    open(out + ".ready", "w").close()
    acks: List[Tuple[int, int]] = []
    fetches = 0
    while True:
        evs = g.ack_fetch(name, acks, batch, 0.2)
        fetches += 1
        if acks:
            last = time.time_ns()
        acks = []
        if not evs:
            if g.info().acked >= expect:
                break
            continue
        now = time.time_ns()
        first = first or now
        for ev in evs:
            lat.append(now - int(ev.payload))  # the no-op handler: note when it ran
        acks = [(ev.offset, ev.attempt) for ev in evs]
    with open(out, "w") as f:
        json.dump({"lat_ns": lat, "first_ns": first, "last_ns": last, "fetches": fetches,
                   "cpu_s": time.process_time() - cpu0}, f)
    log.close()


class Daemon:
    """`engram serve` on free loopback ports with its log in `data`, started and waited
    for on entry, stopped (SIGTERM, then SIGKILL) on exit, also when the run fails."""

    def __init__(self, binary: str, data: str, durability: str) -> None:
        self.binary, self.data, self.durability = binary, data, durability
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Daemon":
        import engram
        if not os.access(self.binary, os.X_OK):
            raise SystemExit(f"{self.binary}: no engram binary (make, or --engram PATH)")
        self.proc = subprocess.Popen([self.binary, "serve", "--data", self.data, "--listen", self.endpoint,
                                      "--notify", f"tcp://127.0.0.1:{free_port()}",
                                      "--durability", self.durability],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise SystemExit(f"engram serve did not start: {err.strip()[:300]}")
            try:
                with engram.connect(self.endpoint, timeout=0.5) as c:
                    c.topics()
                return self
            except engram.Error:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise SystemExit("engram serve did not answer within 20 s")

    def __exit__(self, *exc: Any) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def server_counters(log: Any) -> Dict[str, int]:
    i = log.server_info()
    return {k: int(i.get(k, 0)) for k in ("requests", "commits", "flushes", "appended")}


def run_engram(n: int, lat_n: int, rate: float, workers: int, batch: int, durability: str,
               kind: str, mode: str, binary: str, drain: bool) -> List[Dict[str, Any]]:
    results = []
    phases = [("throughput", n), ("latency", lat_n)] + ([("drain", n)] if drain else [])
    for phase, count in phases:
        tmp = tempfile.mkdtemp(prefix="engram-bench-py-")
        try:
            with contextlib.ExitStack() as stack:
                log_dir = os.path.join(tmp, "log")
                target = log_dir
                daemon = None
                if mode == "served":
                    daemon = stack.enter_context(Daemon(binary, log_dir, durability))
                    target = daemon.endpoint
                with open_target(target, durability) as log:
                    log.create_topic(TOPIC, compress_threshold=1 << 30)
                procs: List[subprocess.Popen] = []
                outs = [os.path.join(tmp, f"w{i}.json") for i in range(workers)]
                role = "engram-consumer" if kind == "consumer" else "engram-app"

                def spawn() -> None:
                    for out in outs:
                        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", role,
                                                       "--kind", kind, "--log", target, "--out", out,
                                                       "--expect", str(count), "--batch", str(batch),
                                                       "--durability", durability],
                                                      env=env_with_binding()))
                stack.callback(lambda: [p.kill() for p in procs if p.poll() is None])
                log = stack.enter_context(open_target(target, durability))
                send: Callable[[], Any]
                if kind.startswith("task"):
                    task = task_app(log, confirm_publish=kind == "task").bench_task
                    send = lambda: task.delay(time.time_ns())  # noqa: E731
                elif phase != "latency":
                    send = lambda: log.append_async(TOPIC, "bench.noop", str(time.time_ns()).encode())  # noqa: E731
                else:
                    send = lambda: log.append(TOPIC, "bench.noop", str(time.time_ns()).encode())  # noqa: E731
                if phase != "drain":
                    spawn()
                    deadline = time.monotonic() + 60
                    while not all(os.path.exists(o + ".ready") for o in outs) and time.monotonic() < deadline:
                        time.sleep(0.01)
                    time.sleep(0.1)  # and back in their waiting fetch
                c0 = server_counters(log) if mode == "served" else None
                d0 = proc_cpu(daemon.proc.pid) if daemon else 0.0
                p0 = time.process_time()
                t0 = time.time_ns()
                if phase != "latency":
                    for _ in range(count):
                        send()
                    log.flush()
                else:
                    gap = 1.0 / rate
                    nxt = time.monotonic()
                    for _ in range(count):
                        send()
                        nxt += gap
                        d = nxt - time.monotonic()
                        if d > 0:
                            time.sleep(d)
                sent = time.time_ns()
                c1 = server_counters(log) if mode == "served" else None
                if phase == "drain":
                    spawn()  # the queue is full: the workers start on it now
                for p in procs:
                    p.wait(300)
                c2 = server_counters(log) if mode == "served" else None
                cpu = {"producer": time.process_time() - p0,
                       "daemon": proc_cpu(daemon.proc.pid) - d0 if daemon else 0.0, "workers": 0.0}
                lat: List[int] = []
                first, last, fetches = [], 0, 0
                for out in outs:
                    with open(out) as f:
                        d = json.load(f)
                    lat += d["lat_ns"]
                    last = max(last, d["last_ns"])
                    if d.get("first_ns"):
                        first.append(d["first_ns"])
                    fetches += d.get("fetches", 0)
                    cpu["workers"] += d.get("cpu_s", 0.0)
            if phase == "drain":
                t0 = min(first)  # from the first task a worker ran
            name = f"engram/{durability}/{kind}" + ("/served" if mode == "served" else "")
            r: Dict[str, Any] = {
                "system": name, "phase": phase, "events": count, "workers": workers,
                "seconds": (last - t0) / 1e9, "events_per_s": count / ((last - t0) / 1e9),
                "send_per_s": count / ((sent - t0) / 1e9) if phase != "drain" else None,
                "p50_ms": pct(lat, 50) / 1e6, "p99_ms": pct(lat, 99) / 1e6, "handled": len(lat)}
            if fetches:
                r["worker_calls"] = fetches
            # CPU time per task, by process (the workers' from their start on).
            r["cpu_us_per_task"] = {k: round(v / count * 1e6, 1) for k, v in cpu.items() if v}
            if c0 and c1 and c2:
                # The daemon's view: requests, commits and flushes per task, in all (the
                # counting calls excluded), and of them while the producer sent.
                r["daemon"] = {k: round((c2[k] - c0[k] - (1 if k == "requests" else 0)) / count, 3)
                               for k in ("requests", "commits", "flushes")}
                r["daemon_while_sending"] = {k: round((c1[k] - c0[k]) / count, 3)
                                             for k in ("requests", "commits", "flushes")}
            results.append(r)
            print(json.dumps(r), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------------------
# Celery + Redis
# ---------------------------------------------------------------------------------------
def make_celery(port: int) -> Any:
    from celery import Celery
    app = Celery("bench_python", broker=f"redis://127.0.0.1:{port}/0")
    app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=True)
    return app


_redis = None
celery_app = make_celery(int(os.environ.get("ENGRAM_BENCH_REDIS_PORT", "6379")))


@celery_app.task(name="bench.noop")
def noop(t_sent: int) -> None:
    """The no-op task: it only records when it ran."""
    global _redis
    now = time.time_ns()
    if _redis is None:
        import redis
        _redis = redis.Redis(host="127.0.0.1", port=int(os.environ["ENGRAM_BENCH_REDIS_PORT"]))
    _redis.rpush("lat", f"{now - t_sent} {now}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_celery(n: int, lat_n: int, rate: float, workers: int, drain: bool) -> List[Dict[str, Any]]:
    import redis
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server not found (make bench-deps)")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="engram-bench-celery-")
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    r = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    env = env_with_binding()
    env["ENGRAM_BENCH_REDIS_PORT"] = str(port)

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench_python:celery_app", "worker",
                                 "-c", str(workers), "--pool", "prefork", "-l", "WARNING",
                                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_worker(w: subprocess.Popen) -> None:
        if w.poll() is not None:
            return
        w.send_signal(signal.SIGTERM)
        try:
            w.wait(20)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(10)

    worker = start_worker()
    global celery_app, noop
    os.environ["ENGRAM_BENCH_REDIS_PORT"] = str(port)
    celery_app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
    results = []
    try:
        # Warm up: the worker is ready once a task comes back.
        r.delete("lat")
        noop.delay(time.time_ns())
        deadline = time.monotonic() + 60
        while r.llen("lat") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        phases = [("throughput", n), ("latency", lat_n)] + ([("drain", n)] if drain else [])
        for phase, count in phases:
            r.delete("lat")
            if phase == "drain":
                stop_worker(worker)  # the queue fills with no worker, then one drains it
            t0 = time.time_ns()
            if phase in ("throughput", "drain"):
                for _ in range(count):
                    noop.delay(time.time_ns())
            else:
                gap = 1.0 / rate
                nxt = time.monotonic()
                for _ in range(count):
                    noop.delay(time.time_ns())
                    nxt += gap
                    d = nxt - time.monotonic()
                    if d > 0:
                        time.sleep(d)
            sent = time.time_ns()
            if phase == "drain":
                worker = start_worker()
            deadline = time.monotonic() + 600
            while r.llen("lat") < count and time.monotonic() < deadline:
                time.sleep(0.01)
            rows = [x.split() for x in r.lrange("lat", 0, -1)]
            lat = [int(a) for a, _ in rows]
            last = max(int(b) for _, b in rows)
            if phase == "drain":
                t0 = min(int(b) for _, b in rows)  # the first task the new worker ran
            res = {"system": "celery+redis", "phase": phase, "events": count, "workers": workers,
                   "seconds": (last - t0) / 1e9, "events_per_s": count / ((last - t0) / 1e9),
                   "send_per_s": count / ((sent - t0) / 1e9) if phase != "drain" else None,
                   "p50_ms": pct(lat, 50) / 1e6, "p99_ms": pct(lat, 99) / 1e6, "handled": len(lat)}
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        stop_worker(worker)
        rs.terminate()
        rs.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--latency-events", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0, help="events/s in the latency phase")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=256, help="engram fetch batch")
    p.add_argument("--only", choices=("engram", "celery"))
    p.add_argument("--engram-workers", default="consumer,app,task,task-pipelined",
                   help="engram worker kinds: consumer (ack_fetch loop), app (engram.App, @app.on), "
                        "task (engram.App, @app.task sent with Task.delay()), task-pipelined "
                        "(the same with App(confirm_publish=False))")
    p.add_argument("--modes", default="embedded,served",
                   help="embedded (the log opened in each process), served (through engram serve)")
    p.add_argument("--engram", default=os.path.join(ROOT, "build", "engram"),
                   help="the engram binary the served mode starts (default build/engram)")
    p.add_argument("--durability", default="sync,async",
                   help="engram durability modes to run, comma-separated (default sync,async)")
    p.add_argument("--no-drain", action="store_true",
                   help="skip the drain phase (tasks queued first, then the workers start)")
    p.add_argument("--json", help="also write all results to this file")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.role == "engram-consumer":
        engram_worker(a.log, a.out, a.expect, a.batch, a.durability)
        return 0
    if a.role == "engram-app":
        engram_app_worker(a.log, a.out, a.expect, a.batch, a.durability, a.kind)
        return 0
    # SIGTERM unwinds like Ctrl-C, so the daemons, workers and servers started here stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kinds = [k for k in a.engram_workers.split(",") if k]
    modes = [m for m in a.modes.split(",") if m]
    for k in kinds:
        if k not in ("consumer", "app", "task", "task-pipelined"):
            p.error(f"--engram-workers: unknown kind {k!r}")
    for m in modes:
        if m not in ("embedded", "served"):
            p.error(f"--modes: unknown mode {m!r}")
    res: List[Dict[str, Any]] = []
    if a.only in (None, "celery"):
        res += run_celery(a.events, a.latency_events, a.rate, a.workers, not a.no_drain)
    if a.only in (None, "engram"):
        for mode in modes:
            for kind in kinds:
                for dur in a.durability.split(","):
                    res += run_engram(a.events, a.latency_events, a.rate, a.workers, a.batch, dur,
                                      kind, mode, a.engram, not a.no_drain)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    byk = {(r["system"], r["phase"]): r for r in res}
    print(f"\n{'system':<36} {'phase':<10} {'events':>6} {'tasks/s':>8} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'x celery':>8}  per task: daemon requests / commits / flushes; CPU us producer / daemon / workers")
    for r in res:
        ref = byk.get(("celery+redis", r["phase"]))
        ratio = ""
        if ref and ref is not r:
            ratio = (f"{r['p50_ms'] / ref['p50_ms']:.2f}" if r["phase"] == "latency"
                     else f"{r['events_per_s'] / ref['events_per_s']:.1f}")
        d = r.get("daemon")
        dd = f"  {d['requests']:.3f} / {d['commits']:.3f} / {d['flushes']:.3f};" if d else "  -;"
        cu = r.get("cpu_us_per_task", {})
        dd += " " + " / ".join(f"{cu[k]:.0f}" if k in cu else "-" for k in ("producer", "daemon", "workers"))
        print(f"{r['system']:<36} {r['phase']:<10} {r['events']:>6} {r['events_per_s']:>8.0f} "
              f"{r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {ratio:>8}{dd}")
    print("x celery: tasks/s over Celery's in the same phase (latency: p50 as a fraction of Celery's);\n"
          "throughput = first send -> last completion with the workers running, drain = the tasks\n"
          "queued first, then first -> last completion of workers started on them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
