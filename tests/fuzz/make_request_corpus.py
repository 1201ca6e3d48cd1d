#!/usr/bin/env python3
"""make_request_corpus.py — writes the seed corpus of fuzz_request: requests to `engram
serve` encoded here, independently of the library (protobuf wire format by hand, field
numbers from schema/wire.proto), one per operation, plus truncated and malformed ones and
a few replies.

Usage: make_request_corpus.py [out-dir] (default: corpus/fuzz_request beside it).
"""
import os
import struct
import sys


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def tag(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def ld(field: int, data) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return tag(field, 2) + varint(len(data)) + data


def vi(field: int, n: int) -> bytes:
    return tag(field, 0) + varint(n)


def si(field: int, n: int) -> bytes:
    return tag(field, 0) + varint(zigzag(n))


def packed(field: int, values) -> bytes:
    return ld(field, b"".join(varint(v) for v in values))


def event(type_="memory.saved", key=None, payload=b'{"text":"hi"}', content_type="",
          headers=(), idem=None, deliver_at=0) -> bytes:
    m = ld(2, type_)
    if key is not None:
        m += vi(3, 1) + ld(4, key)
    if payload:
        m += ld(5, payload)
    if content_type:
        m += ld(6, content_type)
    for name, value in headers:
        m += ld(7, ld(1, name) + ld(2, value))
    if idem is not None:
        m += ld(8, idem) + vi(12, 1)
    if deliver_at:
        m += si(9, deliver_at)
    return m


def request(op_field: int, body: bytes, version=1, rid=1) -> bytes:
    return vi(1, version) + vi(2, rid) + ld(op_field, body)


def tg(topic="memory", group="g") -> bytes:
    return ld(1, topic) + ld(2, group)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "fuzz_request")
    os.makedirs(out, exist_ok=True)
    seeds = {}
    ev_full = event(key="conv-1:D1:1", content_type="application/json",
                    headers=[("source", "api"), ("trace", "")], idem="i-1",
                    deliver_at=1700000000000000000)
    seeds["hello"] = request(10, ld(1, "engram-c 0.1.0"))
    seeds["sync"] = request(11, b"")
    seeds["backup"] = request(12, ld(1, "copy"))
    seeds["topic-create"] = request(13, ld(1, "memory") + ld(2, vi(1, 256) + vi(2, 1 << 20) + vi(3, 4096)))
    seeds["topic-get"] = request(14, ld(1, "memory"))
    seeds["topic-list"] = request(15, b"")
    seeds["topic-drop"] = request(16, ld(1, "memory"))
    seeds["topic-train-dict"] = request(17, ld(1, "memory"))
    seeds["append-one"] = request(18, ld(1, "memory") + ld(2, event()))
    seeds["append-full"] = request(18, ld(1, "memory") + ld(2, ev_full))
    seeds["append-batch"] = request(18, ld(1, "memory") + ld(2, event()) + ld(2, event(key="")) + ld(2, ev_full))
    seeds["append-independent"] = request(18, ld(1, "memory") + ld(2, event()) + ld(2, event()) + vi(3, 1))
    seeds["read"] = request(19, ld(1, "memory") + vi(2, 1))
    seeds["read-range"] = request(20, ld(1, "memory") + vi(2, 1) + vi(3, 100))
    seeds["verify"] = request(21, b"")
    cfg = (ld(1, "memory.*") + ld(1, "memory.saved") + vi(2, 2) + vi(3, 5) + si(4, 0) + vi(5, 30000)
           + vi(6, 5) + packed(7, [1000, 5000, 30000]) + vi(8, 86400000) + vi(9, 1))
    seeds["group-create"] = request(22, tg() + ld(3, cfg))
    seeds["group-create-default"] = request(22, tg())
    seeds["group-get"] = request(23, tg())
    seeds["group-list"] = request(24, ld(1, "memory"))
    seeds["group-list-all"] = request(24, b"")
    seeds["group-delete"] = request(25, tg())
    seeds["group-reset"] = request(26, tg() + vi(3, 3) + vi(4, 0) + si(5, 1700000000000000000))
    seeds["fetch"] = request(27, tg() + ld(3, "worker-1") + vi(4, 10) + vi(5, 1000))
    item = vi(1, 1) + vi(2, 1) + vi(3, 1) + ld(4, b"done")
    seeds["ack"] = request(28, tg() + ld(3, item) + ld(3, vi(1, 2)))
    seeds["ack-fetch"] = request(200, tg() + ld(3, "worker-1") + ld(4, item) + ld(4, vi(1, 2)) +
                                 vi(5, 100) + vi(6, 1000))
    seeds["ack-fetch-no-acks"] = request(200, tg() + ld(3, "worker-1") + vi(5, 10))
    seeds["nack"] = request(29, tg() + vi(3, 1) + vi(4, 1) + si(5, -1) + vi(6, 1) + ld(7, "boom"))
    seeds["reject"] = request(30, tg() + vi(3, 1) + vi(4, 2) + vi(5, 1) + ld(6, "bad event"))
    seeds["extend"] = request(31, tg() + vi(3, 1) + vi(4, 1) + vi(5, 60000))
    seeds["cancel"] = request(32, tg() + vi(3, 7))
    seeds["status"] = request(33, tg() + vi(3, 1))
    seeds["dlq-list"] = request(34, tg() + vi(3, 0) + vi(4, 100))
    seeds["dlq-purge-all"] = request(35, tg() + vi(3, 1))
    seeds["dlq-purge-some"] = request(35, tg() + packed(4, [1, 2, 3]))
    seeds["dlq-redrive"] = request(36, tg() + packed(4, [5]))
    txn_ack = ld(1, ld(1, "memory") + ld(2, "g") + ld(3, vi(1, 3) + vi(2, 1)))
    txn_app = ld(2, ld(1, "derived") + ld(2, event(type_="memory.indexed")))
    seeds["txn"] = request(37, ld(1, txn_ack) + ld(1, txn_app))
    seeds["stats"] = request(38, b"")
    task = ld(1, "memory") + ld(2, "g") + vi(3, 5) + si(4, 1700000000000000000)
    worker = (ld(1, "w1") + ld(2, "box") + vi(3, 42) + vi(4, 4) + si(5, 1) + vi(7, 10) +
              vi(8, 1) + ld(10, "memory/g") + ld(11, task))
    seeds["worker-heartbeat"] = request(120, ld(1, worker))
    seeds["worker-list"] = request(121, vi(1, 30000))
    seeds["worker-forget"] = request(122, ld(1, "w1"))
    sched = (vi(1, 300000) + ld(5, "memory") + ld(6, "memory.cleanup") + ld(7, b'{"x":1}') +
             ld(8, "k") + ld(9, "application/json") + ld(10, ld(1, "origin") + ld(2, "beat")) +
             vi(11, 2) + vi(12, 10))
    cron = ld(3, "0 2 * * MON-FRI") + ld(4, "Europe/Paris") + ld(5, "memory") + ld(6, "memory.nightly")
    seeds["schedule-add"] = request(102, ld(1, "cleanup") + ld(2, sched))
    seeds["schedule-set-cron"] = request(103, ld(1, "nightly") + ld(2, cron))
    seeds["schedule-get"] = request(104, ld(1, "nightly"))
    seeds["schedule-list"] = request(105, b"")
    seeds["schedule-remove"] = request(106, ld(1, "nightly"))
    seeds["schedule-pause"] = request(107, ld(1, "nightly"))
    seeds["schedule-resume"] = request(108, ld(1, "nightly"))
    seeds["schedule-run-now"] = request(109, ld(1, "nightly"))
    seeds["schedule-tick"] = request(110, si(1, 1700000000000000000))
    seeds["log-info"] = request(170, b"")
    seeds["space"] = request(171, b"")
    # Malformed and unusual.
    good = seeds["append-full"]
    seeds["bad-empty"] = b""
    seeds["bad-truncated"] = good[: len(good) // 2]
    seeds["bad-truncated-tag"] = good + b"\x80"
    seeds["bad-version-2"] = request(18, ld(1, "memory") + ld(2, event()), version=2)
    seeds["bad-version-0"] = vi(2, 9) + ld(14, ld(1, "memory"))
    seeds["bad-unknown-op"] = vi(1, 1) + vi(2, 3) + ld(99, vi(1, 1))
    seeds["bad-no-op"] = vi(1, 1) + vi(2, 3)
    seeds["bad-nul-in-topic"] = request(14, ld(1, b"mem\x00ory"))
    seeds["bad-nul-in-header"] = request(18, ld(1, "memory") + ld(2, event(headers=[("a\x00b", "v")])))
    seeds["bad-length-past-end"] = vi(1, 1) + tag(19, 2) + varint(1000) + b"\x0a\x01m"
    seeds["bad-varint-11-bytes"] = vi(1, 1) + tag(2, 0) + b"\xff" * 10 + b"\x01"
    seeds["bad-group-wire-type"] = vi(1, 1) + tag(10, 3) + tag(10, 4)
    seeds["bad-field-zero"] = vi(1, 1) + b"\x02\x00"
    seeds["bad-wrong-wire-type"] = vi(1, 1) + tag(14, 0) + varint(5)
    nest = b""
    for _ in range(40):
        nest = ld(1, nest)
    seeds["bad-deep-nesting"] = vi(1, 1) + ld(37, nest)
    seeds["bad-two-ops"] = seeds["read"] + ld(16, ld(1, "memory"))
    seeds["bad-65-headers"] = request(18, ld(1, "memory") + ld(2, event(headers=[("h", "v")] * 65)))
    seeds["bad-txn-empty-op"] = request(37, ld(1, b""))
    seeds["bad-ack-empty-item"] = request(28, tg() + ld(3, b""))
    seeds["bad-worker-17-groups"] = request(120, ld(1, ld(1, "w1") + ld(10, "a/b") * 17))
    seeds["bad-worker-no-info"] = request(120, b"")
    seeds["bad-dlq-both"] = request(35, tg() + vi(3, 1) + packed(4, [1]))
    seeds["bad-schedule-no-config"] = request(102, ld(1, "x"))
    seeds["bad-schedule-65-headers"] = request(103, ld(1, "x") + ld(2, cron + ld(10, ld(1, "h") + ld(2, "v")) * 65))
    seeds["bad-schedule-cron"] = request(102, ld(1, "x") + ld(2, ld(3, "61 * * * *") + ld(5, "memory") + ld(6, "a")))
    # Replies, for the client's side of the target.
    seeds["reply-error"] = vi(1, 5) + si(2, -2) + ld(3, "topic memory: no such topic") + vi(4, 1)
    seeds["reply-append"] = vi(1, 6) + vi(4, 1) + ld(14, packed(1, [1, 2]) + packed(2, [0, 1]))
    seeds["reply-events"] = vi(1, 7) + vi(4, 1) + ld(15, ld(1, "memory") + ld(2, vi(1, 1) + event() + vi(11, 2)))
    seeds["reply-hello"] = vi(1, 1) + vi(4, 1) + ld(10, vi(1, 1) + ld(2, "0.1.0") + vi(3, 16 << 20))
    seeds["reply-workers"] = vi(1, 8) + vi(4, 1) + ld(120, ld(1, worker))
    seeds["reply-schedule"] = vi(1, 9) + vi(4, 1) + ld(102, ld(1, "nightly") + ld(2, cron) + si(3, 1) + vi(5, 3))
    seeds["reply-schedules"] = vi(1, 10) + vi(4, 1) + ld(103, ld(1, ld(1, "cleanup") + ld(2, sched)))
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")


if __name__ == "__main__":
    main()
