#!/usr/bin/env python3
"""make_corpus.py — writes the seed corpus of fuzz_record: stored records encoded here,
independently of the library (protobuf wire format and CRC32C by hand), plus truncated
and malformed ones.

Each seed is 8 bytes of big-endian offset followed by a stored value:
u32 little-endian CRC32C over (u64 big-endian offset || message), then a Record message
(schema/record.proto). Usage: make_corpus.py [out-dir] (default: the corpus dir beside it).
"""
import os
import struct
import sys


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


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


def tag(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def ld(field: int, data) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return tag(field, 2) + varint(len(data)) + data


def vi(field: int, n: int) -> bytes:
    return tag(field, 0) + varint(n)


def sfixed64(field: int, n: int) -> bytes:
    return tag(field, 1) + struct.pack("<q", n)


def header(name: str, value: str) -> bytes:
    return ld(6, ld(1, name) + ld(2, value))


def record(type_="memory.saved", key=None, payload=b"", content_type="", headers=(),
           ts=1700000000123456789, idem="", deliver_at=0, compression=0, dict_id=0,
           raw_len=None, flags=0, extra=b"") -> bytes:
    m = ld(1, type_)
    if key is not None:
        m += vi(2, 1) + (ld(3, key) if key else b"")
    if payload:
        m += ld(4, payload)
    if content_type:
        m += ld(5, content_type)
    for h in headers:
        m += header(*h)
    if ts:
        m += sfixed64(7, ts)
    if idem:
        m += ld(8, idem)
    if deliver_at:
        m += sfixed64(9, deliver_at)
    if compression:
        m += vi(10, compression)
    if dict_id:
        m += vi(11, dict_id)
    if raw_len is None:
        raw_len = len(payload)
    if raw_len:
        m += vi(12, raw_len)
    if flags:
        m += vi(13, flags)
    return m + extra


def stored(offset: int, message: bytes) -> bytes:
    crc = crc32c(message, crc32c(struct.pack(">Q", offset)))
    return struct.pack("<I", crc) + message


def seed(offset: int, value: bytes) -> bytes:
    return struct.pack(">Q", offset) + value


def zstd_raw_frame(data: bytes) -> bytes:
    """A valid zstd frame holding data in one raw block (no compressor needed)."""
    assert len(data) < 256
    fhd = 0x20  # single segment, 1-byte content size, no checksum, no dict id
    block = 1 | (0 << 1) | (len(data) << 3)  # last block, raw
    return struct.pack("<I", 0xFD2FB528) + bytes([fhd, len(data)]) + block.to_bytes(3, "little") + data


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_record")
    os.makedirs(out, exist_ok=True)
    event = (b'{"type":"memory.saved","user_id":"conv-42:Nate","session":"conv-42/s1",'
             b'"text":"Hey Joanna! Long time no see!","memory_id":"conv-42:D1:1","kind":"turn"}')
    binary = bytes((i * 7) % 256 for i in range(1000))
    full = record(key="conv-42:D1:3", payload=event, content_type="application/json",
                  headers=[("trace-id", "4bf92f3577b34da6"), ("empty", ""), ("user", "conv-42:Nate")],
                  idem="req-7f3a", deliver_at=1700000999000000000)
    seeds = {
        "valid-minimal": seed(1, stored(1, record(type_="a", ts=0))),
        "valid-full": seed(17, stored(17, full)),
        "valid-empty-key": seed(2, stored(2, record(key="", payload=b"x"))),
        "valid-binary-payload": seed(3, stored(3, record(payload=binary, content_type="application/octet-stream"))),
        "valid-compressed": seed(4, stored(4, record(payload=zstd_raw_frame(b"hello hello hello"), compression=1, raw_len=17))),
        "valid-dict": seed(5, stored(5, record(payload=zstd_raw_frame(event[:200]), compression=1, dict_id=123456, raw_len=200))),
        "valid-unknown-fields": seed(6, stored(6, record(payload=b"p", extra=vi(14, 5) + ld(20, b"future") + tag(21, 5) + b"\x01\x02\x03\x04"))),
        "valid-negative-times": seed(7, stored(7, record(ts=-5, deliver_at=-1))),
        "valid-64-headers": seed(8, stored(8, record(headers=[("h%d" % i, "v") for i in range(64)]))),
        "valid-huge-offset": seed(1 << 63, stored(1 << 63, record(payload=b"far"))),
        "valid-long-type": seed(9, stored(9, record(type_="a." * 99 + "b"))),
        "valid-tombstone": seed(10, stored(10, record(type_="memory.deleted", key="m1", flags=1))),
        "bad-empty": seed(1, b""),
        "bad-three-bytes": seed(1, b"\x01\x02\x03"),
        "bad-crc-only": seed(1, stored(1, b"")),
        "bad-truncated": seed(17, stored(17, full)[: len(full) // 2]),
        "bad-wrong-offset": seed(18, stored(17, full)),
        "bad-varint-overflow": seed(1, stored(1, ld(1, "a") + tag(12, 0) + b"\xff" * 11)),
        "bad-length-too-long": seed(1, stored(1, tag(1, 2) + varint(1 << 40) + b"abc")),
        "bad-wire-type": seed(1, stored(1, ld(1, "a") + tag(7, 0) + varint(5))),
        "bad-field-zero": seed(1, stored(1, ld(1, "a") + vi(0, 1))),
        "bad-header-no-name": seed(1, stored(1, record(headers=[("", "v")]))),
        "bad-65-headers": seed(1, stored(1, record(headers=[("h", "v")] * 65))),
        "bad-compression-2": seed(1, stored(1, record(payload=b"zz", compression=2, raw_len=2))),
        "bad-raw-len": seed(1, stored(1, record(payload=b"abc", raw_len=4))),
        "bad-no-type": seed(1, stored(1, ld(4, b"payload only"))),
        "bad-key-without-flag": seed(1, stored(1, ld(1, "a") + ld(3, "k"))),
        "bad-unknown-flag": seed(1, stored(1, record(key="m1", flags=2))),
        "bad-garbage": seed(99, bytes((i * 131 + 17) % 256 for i in range(300))),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), out))


if __name__ == "__main__":
    main()
