#!/usr/bin/env python3
"""report.py — turns the side-by-side run's JSON lines into one table, latest.json and a chart."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SYSTEMS = ["engram", "engram-remote", "redis", "nats", "zmq-echo"]
PEERS = ["redis", "nats"]
THROUGHPUT = ["append1", "append8", "append8p", "batch100", "drain", "drain_split"]
ROWS = ["fsync", "everyday"]
TITLES = {
    "append1": "append, 1 producer, 1 event/request",
    "append8": "append, 8 producers, 1 event/request",
    "append8p": "append, 8 producer processes, 1 event/request",
    "batch100": "append, batches of 100",
    "drain": "group drain, 4 consumers, fetch 100 + ack (engram: the acks with the next fetch, one call)",
    "drain_split": "group drain, engram by fetch 100, then ack (two calls); peers as in drain",
    "latency": "end-to-end latency at 2,000 events/s",
}


def load(path):
    """JSON lines from the clients, or a latest.json written before (to redraw it)."""
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and "results" in doc:
            lim = doc.get("limits", [])
            if isinstance(lim, dict):
                lim = [r for v in lim.values() for r in v]
            return lim + doc["results"]
    except json.JSONDecodeError:
        pass
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def target_for(workload, row, peer):
    """The issue's target for engram / peer: >= 2x, except one producer with fsync per event
    (the physical limit caps everyone), where engram >= 0.95x Redis."""
    if peer == "zmq-echo":
        return None  # the transport's floor: a served row is measured against it, not judged
    if workload == "append1" and row == "fsync":
        return 0.95 if peer == "redis" else None
    if workload == "append8p" and row == "fsync":
        return 1.5 if peer == "redis" else None  # 8 processes against 8 connections
    return 2.0


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_us(v):
    if v is None:
        return "-"
    if v >= 1e4:
        return f"{v / 1e3:.1f}ms"
    return f"{v:.0f}us"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--notes")
    ap.add_argument("--elapsed", type=float, default=0)
    ap.add_argument("--redis", default="")
    ap.add_argument("--nats", default="")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    results = load(a.jsonl)
    notes = []
    if a.notes and os.path.exists(a.notes):
        notes = [l.strip() for l in open(a.notes) if l.strip()]
    # The machine's limits, measured at the start of each row (so drift between the rows
    # does not blur the fractions); "limits" alone is the row-less form.
    limits_by_row = {}
    for r in results:
        lr = str(r.get("row", ""))
        if not lr.startswith("limits"):
            continue
        key = r["workload"] + ("_" + r["durability"] if r["workload"].startswith("lmdb_commit") else "")
        limits_by_row.setdefault(lr[7:] or "*", {})[key] = r
    by = {}
    durab = {}
    failed = []
    for r in results:
        if r.get("row") not in ROWS:
            continue
        if str(r.get("note", "")).startswith("FAILED"):
            failed.append(f'{r["system"]} {r["workload"]} ({r["row"]}): {r["note"]}')
            continue
        by[(r["row"], r["workload"], r["system"])] = r
        durab[(r["row"], r["system"])] = r["durability"]

    present = [s for s in SYSTEMS if any(k[2] == s for k in by)]
    table = []
    lines = []
    lines.append("engram side by side with Redis Streams and NATS JetStream (events/s; ratio = engram / peer)")
    for row in ROWS:
        if not any(k[0] == row for k in by):
            continue
        limits = limits_by_row.get(row) or limits_by_row.get("*") or {}
        lines.append("")
        lines.append(f"== {row}: " + "; ".join(f"{s} = {durab[(row, s)]}" for s in present if (row, s) in durab))
        if limits:
            fs = limits.get("fdatasync_4k", {}).get("events_per_s")
            c1 = limits.get("lmdb_commit_1put_sync", {}).get("events_per_s")
            cn = limits.get("lmdb_commit_1put_nometasync", {}).get("events_per_s")
            ap1 = limits.get("lmdb_append_1txn", {}).get("events_per_s")
            lines.append(f"   limits measured at the start of this row: fdatasync 4 KiB {fmt_rate(fs)}/s; synced "
                         f"LMDB commit {fmt_rate(c1)}/s; MDB_NOMETASYNC commit {fmt_rate(cn)}/s; raw LMDB "
                         f"appends in one transaction {fmt_rate(ap1)}/s")
        head = f"{'workload':11} " + " ".join(f"{s:>13}" for s in present)
        ratio_cols = [(e, p) for e in ("engram", "engram-remote") if e in present for p in PEERS if p in present]
        if "engram-remote" in present and "zmq-echo" in present:
            ratio_cols.append(("engram-remote", "zmq-echo"))  # the served rows over their transport's floor
        head += "  " + " ".join(f"{(e.replace('engram-remote', 'remote') + '/' + p):>14}" for e, p in ratio_cols)
        lines.append(head)
        for wl in THROUGHPUT:
            # drain_split is engram's old way of draining: measured against the peers' drain.
            vals = {s: by.get((row, wl if s.startswith("engram") or wl != "drain_split" else "drain", s),
                              {}).get("events_per_s") for s in present}
            if not any(v for v in vals.values()):
                continue
            entry = {"row": row, "workload": wl, "title": TITLES[wl], "events_per_s": vals, "ratios": {},
                     "durability": {s: durab.get((row, s)) for s in present}}
            cells = []
            for e, p in ratio_cols:
                if vals.get(e) and vals.get(p):
                    ratio = vals[e] / vals[p]
                    t = target_for(wl, row, p)
                    verdict = "" if t is None or e != "engram" else (" ok" if ratio >= t else " <")
                    entry["ratios"][f"{e}/{p}"] = {"ratio": round(ratio, 4), "target": t,
                                                    "met": None if t is None else ratio >= t}
                    cells.append(f"{ratio:11.2f}x{verdict:2}")
                else:
                    cells.append(f"{'-':>14}")
            table.append(entry)
            lines.append(f"{wl:11} " + " ".join(f"{fmt_rate(vals[s]):>13}" for s in present) + "  " + " ".join(cells))
        p50 = {s: by.get((row, "append1", s), {}).get("p50_us") for s in present}
        if any(p50.values()):
            lines.append(f"{'append1 p50 us':10} " + " ".join(f"{(v if v is not None else '-'):>13}" for v in p50.values()))
        lat = {s: by.get((row, "latency", s)) for s in present}
        if any(lat.values()):
            entry = {"row": row, "workload": "latency", "title": TITLES["latency"], "latency_us": {}, "ratios": {}}
            for q, key in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")):
                vals = {s: (lat[s] or {}).get(key) for s in present}
                entry["latency_us"][q] = vals
                cells = []
                for e, p in ratio_cols:
                    if vals.get(e) and vals.get(p):
                        ratio = vals[e] / vals[p]
                        verdict = "" if e != "engram" or q == "p50" else (" ok" if ratio < 1 else " <")
                        entry["ratios"][f"{e}/{p} {q}"] = {"ratio": round(ratio, 4), "lower_is_better": True}
                        cells.append(f"{ratio:11.2f}x{verdict:2}")
                    else:
                        cells.append(f"{'-':>14}")
                lines.append(f"{'lat ' + q:10} " + " ".join(f"{fmt_us(vals[s]):>13}" for s in present) + "  " +
                             " ".join(cells))
            table.append(entry)
        cp_lines = []
        for s in ("engram", "engram-remote"):
            for wl in THROUGHPUT + ["latency"]:
                res = by.get((row, wl, s), {})
                cp = res.get("commit_path")
                if not cp:
                    continue
                hist = " ".join(str(x) for x in cp["commits_by_writes"]) if "commits_by_writes" in cp \
                    else "- (a daemon counts commits, not the writes in each)"
                gap = res["seconds"] * 1e6 / cp["commits"] if res.get("seconds") and cp.get("commits") else None
                cells = [f"{gap:7.0f}" if gap else f"{'-':>7}"]
                cells += [f"{cp[k]:7.0f}" if k in cp else f"{'-':>7}" for k in ("commit_us", "flush_us")]
                cp_lines.append(f"{s.replace('engram-remote', 'remote') + ' ' + wl:22} {cp['events_per_commit']:13.2f} "
                                f"{cp['flushes_per_commit']:14.2f} " + " ".join(cells) + f"  {hist}")
                for e in table:
                    if e.get("row") == row and e.get("workload") == wl:
                        e.setdefault("commit_path", {})[s] = cp
        if cp_lines:
            lines.append(f"{'commit path':22} {'events/commit':>13} {'flushes/commit':>14} {'us/cmt':>7} "
                         f"{'commit':>7} {'flush':>7}  commits carrying 1 2 3-4 5-8 9-16 17-32 33-64 65+ writes")
            lines.extend(cp_lines)
        if row == "fsync" and limits.get("fdatasync_4k"):
            fs = limits["fdatasync_4k"]["events_per_s"]
            parts = [f"{s} {by[(row, 'append1', s)]['events_per_s'] / fs:.2f}x" for s in present
                     if (row, "append1", s) in by]
            if parts:
                lines.append("append1 as a fraction of the raw fdatasync rate: " + ", ".join(parts))
    lines.append("")
    lines.append("targets: engram >= 2x each peer on throughput at equal durability, except append1/fsync "
                 "(>= 0.95x Redis) and append8p/fsync (>= 1.5x Redis); lower p99 and p99.9 latency than both (latency ratios: lower is better). "
                 "ok = met, < = missed.")
    lines.append("NATS 2.9 cannot fsync before acknowledging: its rows are the same server in both rows and "
                 "never fsync per write. Ratios hold within this run only: the machine is shared and noisy.")
    for n in notes + failed:
        lines.append("note: " + n)
    print("\n".join(lines))

    doc = {
        "bench": "peers",
        "run": {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": os.uname().nodename,
                "cpus": os.cpu_count(), "elapsed_s": a.elapsed, "quick": a.quick, "redis": a.redis,
                "nats": a.nats},
        "limits": {row: list(v.values()) for row, v in limits_by_row.items()},
        "table": table,
        "notes": notes + failed,
        "results": [r for r in results if r.get("row") in ROWS],
    }
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    chart(by, present, a.svg)


def chart(by, present, svg):
    if not shutil.which("gnuplot"):
        print(f"note: gnuplot not found; no chart written", file=sys.stderr)
        return
    tmp = tempfile.mkdtemp(prefix="engram-chart.")
    try:
        bars = os.path.join(tmp, "bars.dat")
        n_bars = 0
        with open(bars, "w") as f:
            f.write("label " + " ".join(f'"{s}"' for s in present) + "\n")
            for row in ROWS:
                for wl in THROUGHPUT:
                    vals = [by.get((row, wl, s), {}).get("events_per_s") for s in present]
                    if not any(vals):
                        continue
                    f.write(f'"{wl}\\n{row}" ' + " ".join(f"{v:.1f}" if v else "-" for v in vals) + "\n")
                    n_bars += 1
        cdfs = []
        for row in ROWS:
            for s in present:
                r = by.get((row, "latency", s))
                if not r or "latency_cdf_us" not in r:
                    continue
                p = os.path.join(tmp, f"cdf-{row}-{s}.dat")
                with open(p, "w") as f:
                    for pct, us in r["latency_cdf_us"]:
                        f.write(f"{max(us, 1) / 1000:.4f} {pct}\n")
                cdfs.append((row, s, p))
        colors = {"engram": "#1b9e77", "engram-remote": "#66a61e", "redis": "#d95f02", "nats": "#7570b3",
                  "zmq-echo": "#999999"}
        gp = [
            'set terminal svg size 1100,1000 dynamic enhanced font "sans,11" background "white"',
            f'set output "{os.path.abspath(svg)}"',
            'set datafile missing "-"',
            "set multiplot layout %d,1 title 'engram, Redis Streams, NATS JetStream — one run on this machine'"
            % ((n_bars > 0) + (len(cdfs) > 0)),
            "set title \"throughput (events/s, log scale; fsync = on disk before ack, everyday = each system's usual setting)\"",
            "set style data histograms",
            "set style histogram clustered gap 1",
            "set style fill solid 0.85 border -1",
            "set logscale y",
            "set format y '%.0s%c'",
            "set yrange [10:*]",
            "set grid ytics",
            "set key top left",
            "set xtics font ',9'",
        ]
        plots = []
        for i, s in enumerate(present):
            col = i + 2
            plots.append(f"'{bars}' using {col}:xtic(1) title columnhead({col}) lc rgb '{colors[s]}'")
        if n_bars:  # a run of the latency workload alone has no bars to plot
            gp.append("plot " + ", ".join(plots))
        gp += [
            "unset style", "unset logscale y", "set yrange [0:100]", "set logscale x",
            "set xrange [*:*]", "set xtics auto font ',10'", "set format x '%g'", "set format y '%g'",
            "set title 'end-to-end latency CDF at 2,000 events/s (solid = fsync row, dashed = everyday row)'",
            "set xlabel 'latency (milliseconds, log scale)'", "set ylabel 'percentile'",
            "set key outside right center",
        ]
        if cdfs:
            parts = []
            for row, s, p in cdfs:
                dt = 1 if row == "fsync" else 2
                parts.append(f"'{p}' using 1:2 with lines lw 2 dt {dt} lc rgb '{colors[s]}' title '{s} ({row})'")
            gp.append("plot " + ", ".join(parts))
        gp.append("unset multiplot")
        script = os.path.join(tmp, "chart.gp")
        with open(script, "w") as f:
            f.write("\n".join(gp) + "\n")
        r = subprocess.run(["gnuplot", script], capture_output=True, text=True)
        if r.returncode != 0:
            print("note: gnuplot failed: " + r.stderr.strip()[-300:], file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
