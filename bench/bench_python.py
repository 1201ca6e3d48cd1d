#!/usr/bin/env python3
"""bench_python.py — Python producer -> Python workers on engram, and the same job on
Celery with a Redis broker, side by side: no-op events/s and end-to-end latency p50/p99.

    /usr/bin/python3 bench/bench_python.py [--events 20000] [--latency-events 1000]
        [--rate 200] [--workers 2] [--only engram|celery] [--json FILE]

Throughput: the producer sends --events no-op events as fast as it can (engram: pipelined
appends, default sync durability; Celery: task.delay()), --workers worker processes
handle them; events/s = events / (first send -> last completion). Latency: --latency-events
sent one at a time at --rate per second; latency = handler start - send time (both
CLOCK_REALTIME, same host). Celery runs with 2 prefork worker processes (-c WORKERS), no
result backend; redis-server is started on a free loopback port and stopped after.
Prints one JSON object per measurement on stdout, then a summary table.
"""
from __future__ import annotations

import argparse
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
from typing import Any, Dict, List, Optional

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
def engram_app_worker(log_dir: str, out: str, expect: int, batch: int, durability: str) -> None:
    """A worker process running engram.App with a no-op handler (2 threads); it exits
    after a second without events once the group has acked `expect` events."""
    import engram
    log = engram.open(log_dir, durability=durability)
    app = engram.App(log, group=GROUP, topic=TOPIC)
    lat: List[int] = []

    seen = [0]

    @app.on("bench.noop")
    def noop(ev: engram.Event) -> None:
        now = time.time_ns()
        lat.append(now - int(ev.payload))
        seen[0] = max(seen[0], now)

    app.group.consumer("warmup").fetch(wait=0)
    open(out + ".ready", "w").close()
    while True:
        app.run(concurrency=2, wait=0.2, idle_timeout=1.0, batch=batch, install_signals=False)
        if app.group.info().acked >= expect:
            break
    last = seen[0]  # the last handler call (its ack follows within one commit)
    with open(out, "w") as f:
        json.dump({"lat_ns": lat, "last_ns": last}, f)
    log.close()


def engram_worker(log_dir: str, out: str, expect: int, batch: int, durability: str) -> None:
    """A worker process on the bare consumer API: fetch batches, run a no-op handler per
    event, ack each batch in one commit; exit once the group has acked `expect` events."""
    import engram
    log = engram.open(log_dir, durability=durability)
    g = log.group(TOPIC, GROUP)
    c = g.consumer(f"w{os.getpid()}", batch=batch, wait=0.2)
    lat: List[int] = []
    last = 0
    c.fetch(wait=0)  # nothing is there yet: this warms the handle up
    open(out + ".ready", "w").close()
    while True:
        evs = c.fetch()
        if not evs:
            if g.info().acked >= expect:
                break
            continue
        now = time.time_ns()
        for ev in evs:
            lat.append(now - int(ev.payload))  # the no-op handler: note when it ran
        g.ack_many([(ev.offset, ev.attempt) for ev in evs])
        last = time.time_ns()
    with open(out, "w") as f:
        json.dump({"lat_ns": lat, "last_ns": last}, f)
    log.close()


def run_engram(n: int, lat_n: int, rate: float, workers: int, batch: int,
               durability: str, kind: str) -> List[Dict[str, Any]]:
    import engram
    results = []
    for phase, count in (("throughput", n), ("latency", lat_n)):
        tmp = tempfile.mkdtemp(prefix="engram-bench-py-")
        try:
            log_dir = os.path.join(tmp, "log")
            with engram.open(log_dir) as log:
                log.create_topic(TOPIC, compress_threshold=1 << 30)
                log.group(TOPIC, GROUP, ack_wait=30)
            procs = []
            outs = []
            for i in range(workers):
                out = os.path.join(tmp, f"w{i}.json")
                outs.append(out)
                procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", f"engram-{kind}",
                                               "--log", log_dir, "--out", out, "--expect", str(count),
                                               "--batch", str(batch), "--durability", durability],
                                              env=env_with_binding()))
            log = engram.open(log_dir, durability=durability)
            deadline = time.monotonic() + 60
            while not all(os.path.exists(o + ".ready") for o in outs) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # and back in their waiting fetch
            t0 = time.time_ns()
            if phase == "throughput":
                for _ in range(count):
                    log.append_async(TOPIC, "bench.noop", str(time.time_ns()).encode())
                log.flush()
            else:
                gap = 1.0 / rate
                nxt = time.monotonic()
                for _ in range(count):
                    log.append(TOPIC, "bench.noop", str(time.time_ns()).encode())
                    nxt += gap
                    d = nxt - time.monotonic()
                    if d > 0:
                        time.sleep(d)
            sent = time.time_ns()
            for p in procs:
                p.wait(300)
            lat: List[int] = []
            last = 0
            for out in outs:
                with open(out) as f:
                    d = json.load(f)
                lat += d["lat_ns"]
                last = max(last, d["last_ns"])
            log.close()
            r = {"system": f"engram/{durability}" + ("/app" if kind == "app" else ""), "phase": phase, "events": count, "workers": workers,
                 "seconds": (last - t0) / 1e9, "events_per_s": count / ((last - t0) / 1e9),
                 "send_per_s": count / ((sent - t0) / 1e9),
                 "p50_ms": pct(lat, 50) / 1e6, "p99_ms": pct(lat, 99) / 1e6, "handled": len(lat)}
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


def run_celery(n: int, lat_n: int, rate: float, workers: int) -> List[Dict[str, Any]]:
    import redis
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server not found (apt-get install redis-server)")
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
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench_python:celery_app", "worker",
                               "-c", str(workers), "--pool", "prefork", "-l", "WARNING",
                               "--without-gossip", "--without-mingle", "--without-heartbeat"],
                              env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        for phase, count in (("throughput", n), ("latency", lat_n)):
            r.delete("lat")
            t0 = time.time_ns()
            if phase == "throughput":
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
            deadline = time.monotonic() + 600
            while r.llen("lat") < count and time.monotonic() < deadline:
                time.sleep(0.01)
            rows = [x.split() for x in r.lrange("lat", 0, -1)]
            lat = [int(a) for a, _ in rows]
            last = max(int(b) for _, b in rows)
            res = {"system": "celery+redis", "phase": phase, "events": count, "workers": workers,
                   "seconds": (last - t0) / 1e9, "events_per_s": count / ((last - t0) / 1e9),
                   "send_per_s": count / ((sent - t0) / 1e9),
                   "p50_ms": pct(lat, 50) / 1e6, "p99_ms": pct(lat, 99) / 1e6, "handled": len(lat)}
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
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
    p.add_argument("--engram-workers", default="consumer,app",
                   help="engram worker kinds: consumer (fetch + ack_many loop), app (engram.App)")
    p.add_argument("--durability", default="sync,async",
                   help="engram durability modes to run, comma-separated (default sync,async)")
    p.add_argument("--json", help="also write all results to this file")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.role == "engram-consumer":
        engram_worker(a.log, a.out, a.expect, a.batch, a.durability)
        return 0
    if a.role == "engram-app":
        engram_app_worker(a.log, a.out, a.expect, a.batch, a.durability)
        return 0
    res: List[Dict[str, Any]] = []
    if a.only in (None, "engram"):
        for kind in a.engram_workers.split(","):
            for mode in a.durability.split(","):
                res += run_engram(a.events, a.latency_events, a.rate, a.workers, a.batch, mode, kind)
    if a.only in (None, "celery"):
        res += run_celery(a.events, a.latency_events, a.rate, a.workers)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print(f"\n{'system':<22} {'phase':<11} {'events':>7} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in res:
        print(f"{r['system']:<22} {r['phase']:<11} {r['events']:>7} {r['events_per_s']:>10.0f} "
              f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}")
    byk = {(r["system"], r["phase"]): r for r in res}
    c, cl = byk.get(("celery+redis", "throughput")), byk.get(("celery+redis", "latency"))
    for name in sorted({r["system"] for r in res if r["system"].startswith("engram")}):
        e, el = byk.get((name, "throughput")), byk.get((name, "latency"))
        if e and c and el and cl:
            print(f"{name} vs celery: throughput {e['events_per_s'] / c['events_per_s']:.1f}x "
                  f"(target >= 10x), latency p50 {el['p50_ms'] / cl['p50_ms']:.2f} of celery's (target <= 0.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
