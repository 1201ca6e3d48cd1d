#!/usr/bin/env python3
"""memory_service.py — a small agent-memory service on engram: it appends memory events
and workers index them; one handler fails on some events, which end in the dead-letter
queue, and are redriven once the handler is fixed.

    python3 examples/memory_service.py demo [--data DIR] [--events N]
    python3 examples/memory_service.py produce --data DIR [--events N]
    python3 -m engram worker memory_service:app      (ENGRAM_EXAMPLE_DATA=DIR, from examples/)

Events come from ../shared/data/memory-events.jsonl (relative to the repository) when it
is there, else they are generated.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import threading
from collections import defaultdict
from typing import Dict, Iterator, List, Set

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

import engram  # noqa: E402

DATA = os.environ.get("ENGRAM_EXAMPLE_DATA") or os.path.join(tempfile.gettempdir(), "engram-memory-example")
SAMPLE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "memory-events.jsonl"))

app = engram.App(DATA, group="indexer", topic="memory", ack_wait=5, max_deliver=3,
                 backoff=[0.05, 0.1])

# The "search index" of this example: word -> memory ids, and the answers to questions.
index: Dict[str, Set[str]] = defaultdict(set)
answers: Dict[str, List[str]] = {}
lock = threading.Lock()
ANSWERER_FIXED = threading.Event()  # set once the bug below is "deployed away"


def words(text: str) -> Set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) > 2}


@app.on("memory.saved")
@app.on("memory.updated")
def index_memory(ev: engram.Event) -> dict:
    m = ev.json()
    ws = words(m.get("text", "")) | words(m.get("image_caption", ""))
    with lock:
        for w in ws:
            index[w].add(m["memory_id"])
    return {"indexed_words": len(ws)}


@app.on("memory.queried")
def answer_query(ev: engram.Event) -> dict:
    q = ev.json()
    # The bug: questions without an answer key (adversarial ones) crash the answerer.
    if "answer" not in q and not ANSWERER_FIXED.is_set():
        raise KeyError("answer")
    ws = words(q.get("text", ""))
    with lock:
        hits = sorted(set.union(*(index.get(w, set()) for w in ws)) if ws else set())[:5]
        answers[q["memory_id"]] = hits
    return {"hits": hits}


def events(n: int) -> Iterator[dict]:
    """The first n events of the sample file, else generated ones."""
    if os.path.exists(SAMPLE):
        with open(SAMPLE, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= n:
                    return
                yield json.loads(line)
        return
    rnd = random.Random(7)
    vocab = "coffee hiking painting tournament guitar sister recipe garden marathon novel".split()
    for i in range(n):
        user = f"conv-{i % 5}:User{i % 3}"
        if i % 10 == 9:
            q = {"type": "memory.queried", "user_id": f"conv-{i % 5}", "memory_id": f"q{i}",
                 "text": f"What about {rnd.choice(vocab)}?", "kind": "qa"}
            if i % 20 != 19:
                q["answer"] = rnd.choice(vocab)
            yield q
        else:
            yield {"type": "memory.saved", "user_id": user, "memory_id": f"conv-{i % 5}:D1:{i}",
                   "text": " ".join(rnd.choice(vocab) for _ in range(8)), "kind": "turn"}


def produce(log: engram.Log, n: int) -> int:
    """Validates and appends n memory events in batches; returns how many."""
    check = engram.MemoryValidator(resolve=False, max_text_bytes=8192)
    batch: List[engram.Message] = []
    count = 0
    for e in events(n):
        t = e.pop("type")
        check(t, e)
        batch.append(engram.Message(t, e, key=e["memory_id"]))
        if len(batch) == 500:
            count += len(log.append_many("memory", batch))
            batch.clear()
    if batch:
        count += len(log.append_many("memory", batch))
    return count


def demo(n: int) -> None:
    log = engram.open(DATA)
    print(f"log: {DATA}")
    print(f"appended {produce(log, n)} memory events from "
          f"{'the sample file' if os.path.exists(SAMPLE) else 'the generator'}")
    stats = app.run(concurrency=4, idle_timeout=1.0, wait=0.2, install_signals=False)
    info = app.group.info()
    print(f"workers handled {stats.handled}, failed attempts {stats.failed}; "
          f"group lag {info.lag}, dead-lettered {info.dead}")
    dead = app.group.dlq()
    for d in dead[:3]:
        print(f"  DLQ offset {d.offset}: {d.reason}; last error: {d.last_error}")
    if dead:
        ANSWERER_FIXED.set()
        print(f"handler fixed; redriving {app.group.redrive()} events")
        stats = app.run(concurrency=4, idle_timeout=1.0, wait=0.2, install_signals=False)
        print(f"workers handled {stats.handled} redriven events; DLQ now {len(app.group.dlq())}")
    print(f"index holds {len(index)} words; {len(answers)} questions answered")
    log.close()
    app.close()


def main() -> int:
    global DATA
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("demo", "produce"))
    p.add_argument("--data", default=None, help=f"log directory (default {DATA})")
    p.add_argument("--events", type=int, default=3000)
    a = p.parse_args()
    if a.data:
        os.environ["ENGRAM_EXAMPLE_DATA"] = DATA = a.data
        app._target = a.data
    if a.command == "produce":
        with engram.open(DATA) as log:
            print(produce(log, a.events))
    else:
        demo(a.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
