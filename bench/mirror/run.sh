#!/usr/bin/env bash
# run.sh — `make bench-mirror`: engram mirror against a 3-node JetStream cluster (three
# nats-server processes on free 127.0.0.1 ports, stream R3), side by side with the
# cluster's own ceiling:
#   ceiling   nats_ceiling: COUNT asynchronous publishes of SIZE bytes with a Msg-Id and
#             the mirror's headers, at most 4000 awaiting their ack (what the mirror sends)
#   backlog   COUNT events already in the log, `engram mirror --once` into a stream made
#             just before (ceiling and backlog in turns, ROUNDS times, with the ratio of
#             each round and their median)
#   steady    steady_append at RATES events/s for SECONDS while `engram mirror` follows:
#             the lag sampled every 500 ms, then the time to drain it
# Writes $OUT/mirror.jsonl (one JSON object per line) and prints a summary.
# Environment: BUILD (build), OUT (bench/results), COUNT (100000), SIZE (300),
# MIRROR_ARGS (more options of engram mirror, e.g. "--batch 4000"),
# RATES ("20000 50000"), DURATION (10 s), ROUNDS (3), ENGRAM_BIN (the engram to measure,
# default $BUILD/engram). --quick: COUNT 20000, DURATION 5, RATES 20000, ROUNDS 2.
set -u
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
OUT=${OUT:-bench/results}
COUNT=${COUNT:-100000}
SIZE=${SIZE:-300}
RATES=${RATES:-20000 50000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
if [ "${1:-}" = --quick ]; then COUNT=20000 DURATION=5 RATES=20000 ROUNDS=2; fi
BIN=${ENGRAM_BIN:-$PWD/$BUILD/engram}
mkdir -p "$OUT" "$BUILD/bench"
TMP=$(mktemp -d)
declare -A PIDS
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
CFLAGS_B="-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Iinclude"
cc $CFLAGS_B -o "$BUILD/bench/nats_ceiling" bench/mirror/nats_ceiling.c -lnats || exit 1
cc $CFLAGS_B -o "$BUILD/bench/steady_append" bench/mirror/steady_append.c "$BUILD/libengram.a" \
  -llmdb -lzstd -lprotobuf-c -lzmq -lmicrohttpd -lpthread -lm || exit 1

read -r -a P <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')"
URL="nats://127.0.0.1:${P[0]},nats://127.0.0.1:${P[1]},nats://127.0.0.1:${P[2]}"
for i in 0 1 2; do
  routes=""
  for j in 0 1 2; do [ "$j" != "$i" ] && routes+="${routes:+,}nats://127.0.0.1:${P[$((j + 3))]}"; done
  nats-server -js -n "n$i" -a 127.0.0.1 -p "${P[$i]}" -sd "$TMP/n$i" --cluster_name bench \
    --cluster "nats://127.0.0.1:${P[$((i + 3))]}" --routes "$routes" >"$TMP/n$i.log" 2>&1 &
  PIDS[n$i]=$!
done
log() { echo "== $(date +%T) $*"; }
RES=$OUT/mirror.jsonl
: >"$RES"
log "nats-server $(nats-server --version | head -1), 3 nodes, R3; $COUNT events of $SIZE bytes"

# Ceiling and backlog in turns, ROUNDS times: on a machine shared with other work the
# rates drift by tens of percent within minutes, so each backlog run is read against
# the ceiling measured just before it (the ratio per round, and their median).
log "backlog"
# The backlog log is made once: COUNT events, then copied for every round.
"$BUILD/bench/steady_append" "$TMP/backlog" memory none 1000000000 600 "$SIZE" "$COUNT" >/dev/null
n=$("$BIN" --data "$TMP/backlog" topic show memory --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_offset"])')
for r in $(seq "$ROUNDS"); do
  "$BUILD/bench/nats_ceiling" "$URL" "CEIL$r" "$COUNT" "$SIZE" 3 4000 | tee -a "$RES"
  rm -rf "$TMP/b$r"
  cp -r "$TMP/backlog" "$TMP/b$r"
  # The stream is made first, so the timed run is what the mirror does per event (the
  # ceiling's time does not include making its stream either).
  "$BUILD/bench/nats_ceiling" "$URL" "BACKLOG$r" 0 "$SIZE" 3 4000 >/dev/null
  t0=$(date +%s.%N)
  "$BIN" --data "$TMP/b$r" mirror --nats "$URL" --topic memory --stream "BACKLOG$r" --replicas 3 \
    --subject-prefix "BACKLOG$r.m" --once ${MIRROR_ARGS:-} 2>"$TMP/backlog.err"
  t1=$(date +%s.%N)
  python3 -c "print('{\"what\":\"backlog\",\"round\":$r,\"events\":%d,\"secs\":%.3f,\"rate\":%.0f}' % ($n, $t1 - $t0, $n / ($t1 - $t0)))" | tee -a "$RES"
done
python3 - "$RES" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ceil = [r["rate"] for r in rows if r["what"] == "nats_ceiling"]
back = [r["rate"] for r in rows if r["what"] == "backlog"]
ratios = [round(b / c, 2) for b, c in zip(back, ceil)]
print(json.dumps({"what": "backlog_vs_ceiling", "ratios": ratios,
                  "median": statistics.median(ratios)}))
EOF
for rate in $RATES; do
  log "steady $rate events/s for $DURATION s"
  d=$TMP/steady-$rate
  "$BIN" --data "$d" topic create memory >/dev/null 2>&1 || "$BIN" --data "$d" append memory memory.saved --create --payload x >/dev/null
  "$BIN" --data "$d" mirror --nats "$URL" --topic memory --stream "S$rate" --replicas 3 ${MIRROR_ARGS:-} 2>"$d.err" &
  PIDS[mirror]=$!
  sleep 1
  "$BUILD/bench/steady_append" "$d" memory "mirror.S$rate" "$rate" "$DURATION" "$SIZE" >"$d.samples"
  tail -n 1 "$d.samples" | tee -a "$RES"
  kill -TERM "${PIDS[mirror]}"
  wait "${PIDS[mirror]}" 2>/dev/null
  unset "PIDS[mirror]"
done
echo "== results in $RES"
