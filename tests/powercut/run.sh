#!/usr/bin/env bash
# run.sh — the power-cut test over every scenario (see replay.py): a short run for
# `make test` (unit test_powercut), a long one for `make crashtest` (--long).
#
# Environment: BUILD (default build), PC_SEED (first seed, default 1; the long run uses
# PC_SEEDS seeds from it, default 5).
set -u
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
export ASAN_OPTIONS=${ASAN_OPTIONS:-verify_asan_link_order=0}
seed=${PC_SEED:-1}
long=
if [ "${1:-}" = --long ]; then
  long=1
  seeds=${PC_SEEDS:-5}
  opts=(--random 6 --between 0.2 --scale 3)
else
  seeds=1
  opts=(--random 1 --between 0.02 --max-points 15)
fi
py=python3
command -v "$py" >/dev/null || py=/usr/bin/python3
failed=0
for ((s = seed; s < seed + seeds; s++)); do
  # What must survive: every acknowledged operation in the default mode.
  for scen in create single threads threads8 pipeline batch groups ackfetch mixed train reclaim park freed; do
    "$py" tests/powercut/replay.py --build "$BUILD" --scenario "$scen" --seed "$s" "${opts[@]}" ||
      failed=$((failed + 1))
  done
  # Several processes at once (writers, and writers beside a consumer process), and a
  # daemon with remote clients: a cut right after every acknowledgement too, so that one
  # no completed flush covers shows.
  for scen in procs procs_group served served_many; do
    "$py" tests/powercut/replay.py --build "$BUILD" --scenario "$scen" --seed "$s" --ack-points \
      "${opts[@]}" || failed=$((failed + 1))
  done
  # nometasync acknowledges after the same single flush of the write-ahead file.
  for scen in single threads groups ${long:+procs}; do
    "$py" tests/powercut/replay.py --build "$BUILD" --scenario "$scen" --mode nometasync \
      --seed "$s" "${opts[@]}" || failed=$((failed + 1))
  done
  # A write-ahead file small enough to fill up: commits go on across checkpoints, and a
  # batch too big for it is made durable in data.mdb itself.
  for scen in threads pipeline batch ${long:+procs_group}; do
    ENGRAM_TEST_WAL_SIZE=262144 "$py" tests/powercut/replay.py --build "$BUILD" \
      --scenario "$scen" --seed "$s" "${opts[@]}" || failed=$((failed + 1))
  done
  # async: what was acknowledged before the newest completed flush began survives; with a
  # small file the committing leader flushes it itself whenever the flusher lags.
  ENGRAM_TEST_WAL_SIZE=262144 "$py" tests/powercut/replay.py --build "$BUILD" --scenario threads \
    --mode async --last-flush --last-flush-of wal --seed "$s" "${opts[@]}" ||
    failed=$((failed + 1))
  # Controls: ways that do lose acknowledged writes. The harness must see it.
  ENGRAM_TEST_WAL_NOREPLAY=1 "$py" tests/powercut/replay.py --build "$BUILD" \
    --scenario single --seed "$s" --expect-loss "${opts[@]}" || failed=$((failed + 1))
  # ... and with several processes: some writer process's acknowledged append lost.
  ENGRAM_TEST_WAL_NOREPLAY=1 "$py" tests/powercut/replay.py --build "$BUILD" \
    --scenario procs --seed "$s" --expect-loss --loss-of "lost: w" "${opts[@]}" ||
    failed=$((failed + 1))
  "$py" tests/powercut/replay.py --build "$BUILD" --scenario threads --mode async \
    --seed "$s" --expect-loss "${opts[@]}" || failed=$((failed + 1))
  # A parked ack-fetch answered without the flush its deferred acks wait for loses them.
  ENGRAM_TEST_ACK_NO_FLUSH=1 "$py" tests/powercut/replay.py --build "$BUILD" --scenario served \
    --seed "$s" --ack-points --expect-loss --loss-of "lost: ack" "${opts[@]}" ||
    failed=$((failed + 1))
  # A reclaim that renames its copy into place unflushed loses the log.
  ENGRAM_TEST_RECLAIM_NO_FSYNC=1 "$py" tests/powercut/replay.py --build "$BUILD" \
    --scenario reclaim --seed "$s" --expect-loss "${opts[@]}" || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || echo "power-cut test: $failed run(s) failed"
[ "$failed" -eq 0 ]
