#!/usr/bin/env bash
# run.sh — engram against Redis Streams and NATS JetStream, side by side, in one run.
#
#   bash bench/peers/run.sh [--quick] [--systems LIST] [--workloads LIST] [--rows LIST]
#                           [--no-install]                    (make bench-peers runs it)
#
#   --systems    engram,engram-remote,redis,nats,zmq-echo (default all); zmq-echo is a bare
#                ZeroMQ DEALER/ROUTER echo of engram-sized requests: the floor under the
#                served rows (append workloads only)
#   --workloads  append1,append8,append8p,batch100,drain,drain_split,latency (default all);
#                drain_split is engram's drain by fetch, then ack (two calls a batch) where
#                drain settles each batch with the fetch of the next (engram_ack_fetch);
#                the peers run drain only
#   --rows       fsync,everyday (default both): fsync = a write is on disk before its ack
#                (engram sync, Redis appendfsync always; NATS 2.9 cannot, its rows say so);
#                everyday = engram async, Redis appendfsync everysec, NATS defaults
#   --quick      short bounds (a smoke run of about two minutes)
#   --no-install do not install missing Debian packages
#
# Installs what is missing (redis-server nats-server libhiredis-dev libnats-dev gnuplot-nox,
# as root or through sudo), builds the clients into $BUILD/bench/peers, starts every server
# on 127.0.0.1 with throw-away data under $TMPDIR, runs the workloads with the systems in
# rotating order (so drift on a shared machine hits all alike), stops every server it
# started (also on failure), runs `engram verify` on the logs each row wrote, then prints
# one table and writes bench/results/latest.json and bench/results/latest.svg. Exits 1
# when a log failed verify (the table's notes say which).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RESULTS=bench/results
SYSTEMS=engram,engram-remote,redis,nats,zmq-echo
WORKLOADS=append1,append8,append8p,batch100,drain,drain_split,latency
ROWS=fsync,everyday
QUICK=()
INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=(--quick) ;;
    --systems) SYSTEMS=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --rows) ROWS=$2; shift ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
has() { [[ ",$1," == *",$2,"* ]]; }
log() { echo "[peers $(date +%H:%M:%S)] $*" >&2; }
START=$(date +%s)

# --- packages -----------------------------------------------------------------------
PKGS=(redis-server nats-server libhiredis-dev libnats-dev gnuplot-nox python3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$INSTALL" = 1 ]; then
    log "installing: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
      SUDO=()
    elif command -v sudo >/dev/null; then
      SUDO=(sudo)
    else
      echo "run.sh: missing ${missing[*]}; run as root or install sudo (or pass --no-install)" >&2
      exit 1
    fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing packages (not installing): ${missing[*]}"
  fi
fi

# --- build --------------------------------------------------------------------------
if [ ! -f "$BUILD/libengram.a" ] || [ ! -x "$BUILD/engram" ]; then
  log "building engram"
  make -s all BUILD="$BUILD" >&2
fi
OUT="$BUILD/bench/peers"
mkdir -p "$OUT" "$RESULTS"
CC=${CC:-cc}
CF=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -O2 -g -pthread -Ibench)
COMMON=(bench/peers/driver.c bench/common/*.c)
NOTES=()
build() { # name, extra args...
  local name=$1; shift
  if "$CC" "${CF[@]}" -o "$OUT/$name" "bench/peers/$name.c" "${COMMON[@]}" "$@" -llmdb -lpthread -lm 2>"$OUT/$name.log"; then
    return 0
  fi
  log "cannot build $name (see $OUT/$name.log)"
  return 1
}
# The whole library is linked so that engram_connect is present exactly when this build
# has a client (peer_engram marks remote rows unsupported otherwise).
build peer_engram -Iinclude -Wl,--whole-archive "$BUILD/libengram.a" -Wl,--no-whole-archive \
  -lzstd -lprotobuf-c -lzmq -lmicrohttpd || { SYSTEMS=${SYSTEMS//engram-remote/}; SYSTEMS=${SYSTEMS//engram/}; NOTES+=("engram: client did not build"); }
if has "$SYSTEMS" redis && ! build peer_redis -lhiredis; then SYSTEMS=${SYSTEMS//redis/}; NOTES+=("redis: client did not build"); fi
if has "$SYSTEMS" zmq-echo && ! build peer_zmq_echo -lzmq; then SYSTEMS=${SYSTEMS//zmq-echo/}; NOTES+=("zmq-echo: did not build"); fi
if has "$SYSTEMS" nats && ! build peer_nats -lnats; then SYSTEMS=${SYSTEMS//nats/}; NOTES+=("nats: client did not build"); fi

# --- servers ------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/engram-peers.XXXXXX")
JSONL="$WORK/results.jsonl"
: >"$JSONL"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
# Waits until a client's ping succeeds; returns non-zero after ~10 s.
wait_up() {
  for _ in $(seq 100); do
    "$@" --workload ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
stop() { # pid
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

NATS_ARGS=()
if has "$SYSTEMS" nats; then
  port=$(free_port)
  mkdir -p "$WORK/nats"
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
  NATS_PID=$!
  PIDS+=("$NATS_PID")
  NATS_ARGS=(--url "nats://127.0.0.1:$port")
  if ! wait_up "$OUT/peer_nats" "${NATS_ARGS[@]}"; then
    log "nats-server did not start (see below); nats rows skipped"
    tail -5 "$WORK/nats.log" >&2 || true
    SYSTEMS=${SYSTEMS//nats/}
    NOTES+=("nats: server did not start")
  fi
  NATS_VERSION=$(nats-server --version 2>/dev/null | head -1)
fi

ECHO_ARGS=()
if has "$SYSTEMS" zmq-echo; then
  ECHO_EP="tcp://127.0.0.1:$(free_port)"
  "$OUT/peer_zmq_echo" --serve "$ECHO_EP" >"$WORK/echo.log" 2>&1 &
  PIDS+=("$!")
  ECHO_ARGS=(--connect "$ECHO_EP")
fi

# --- the run ------------------------------------------------------------------------
run_client() { # system row workload
  local sys=$1 row=$2 wl=$3 cmd
  if [ "$wl" = drain_split ] && [[ "$sys" != engram* ]]; then return 0; fi
  case "$sys" in
    engram) cmd=("$OUT/peer_engram" --data "$WORK/embedded-$row" --durability "$ENGRAM_MODE") ;;
    engram-remote) cmd=("$OUT/peer_engram" --connect "$SERVE_EP" --durability "$ENGRAM_MODE") ;;
    redis) cmd=("$OUT/peer_redis" --port "$REDIS_PORT" --durability "appendfsync $REDIS_FSYNC") ;;
    nats) cmd=("$OUT/peer_nats" "${NATS_ARGS[@]}") ;;
    zmq-echo)
      case "$wl" in append1|append8|batch100) ;; *) return 0 ;; esac
      cmd=("$OUT/peer_zmq_echo" "${ECHO_ARGS[@]}") ;;
  esac
  log "$row $wl $sys"
  if ! timeout 300 "${cmd[@]}" --workload "$wl" --row "$row" "${QUICK[@]}" >>"$JSONL" 2>"$WORK/client.err"; then
    log "$sys $wl failed: $(tail -2 "$WORK/client.err" | tr '\n' ' ')"
  fi
}

IFS=, read -ra row_list <<<"$ROWS"
IFS=, read -ra wl_list <<<"$WORKLOADS"
for row in "${row_list[@]}"; do
  case "$row" in
    fsync) ENGRAM_MODE=sync; REDIS_FSYNC=always ;;
    everyday) ENGRAM_MODE=async; REDIS_FSYNC=everysec ;;
    *) echo "run.sh: unknown row $row" >&2; exit 2 ;;
  esac
  active=()
  if has "$SYSTEMS" engram; then active+=(engram); fi
  if has "$SYSTEMS" redis; then
    REDIS_PORT=$(free_port)
    mkdir -p "$WORK/redis-$row"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis-$row" --appendonly yes \
      --appendfsync "$REDIS_FSYNC" --save '' --daemonize no --logfile "$WORK/redis-$row.log" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    if wait_up "$OUT/peer_redis" --port "$REDIS_PORT"; then
      active+=(redis)
    else
      log "redis-server did not start; redis $row rows skipped"
      NOTES+=("redis: server did not start ($row)")
    fi
  fi
  if has "$SYSTEMS" nats; then active+=(nats); fi
  if has "$SYSTEMS" zmq-echo; then active+=(zmq-echo); fi
  SERVE_PID=
  if has "$SYSTEMS" engram-remote; then
    SERVE_EP="tcp://127.0.0.1:$(free_port)"
    "$BUILD/engram" serve --data "$WORK/serve-$row" --listen "$SERVE_EP" --durability "$ENGRAM_MODE" \
      >"$WORK/serve-$row.log" 2>&1 &
    SERVE_PID=$!
    PIDS+=("$SERVE_PID")
    if wait_up "$OUT/peer_engram" --connect "$SERVE_EP"; then
      active+=(engram-remote)
    else
      why=$("$OUT/peer_engram" --connect "$SERVE_EP" --workload ping 2>&1 | tail -1)
      log "engram serve unreachable ($why); engram-remote $row rows skipped"
      NOTES+=("engram-remote: skipped in the $row row: ${why:-engram serve did not start}")
    fi
  fi
  if has "$SYSTEMS" engram; then
    log "$row limits: fdatasync, raw LMDB"
    "$OUT/peer_engram" --workload limits --row "limits-$row" "${QUICK[@]}" >>"$JSONL" 2>/dev/null || log "limits failed"
  fi
  i=0
  for wl in "${wl_list[@]}"; do
    # Rotate the order of the systems from one workload to the next.
    n=${#active[@]}
    for ((k = 0; k < n; k++)); do
      run_client "${active[$(((i + k) % n))]}" "$row" "$wl"
    done
    i=$((i + 1))
  done
  if [ -n "${REDIS_PID:-}" ]; then stop "$REDIS_PID"; REDIS_PID=; fi
  if [ -n "$SERVE_PID" ]; then stop "$SERVE_PID"; fi
  # The logs the row wrote must still open and verify: a workload that leaves its log
  # damaged is a defect, not a slow row.
  for d in "$WORK/embedded-$row" "$WORK/serve-$row"; do
    [ -e "$d/data.mdb" ] || continue
    if ! out=$("$BUILD/engram" --data "$d" verify 2>&1); then
      why=$(tail -1 <<<"$out")
      log "verify of ${d##*/} failed: $why"
      NOTES+=("verify: the ${d##*/} log failed: $why")
      VERIFY_FAILED=1
    fi
  done
  rm -rf "$WORK/embedded-$row" "$WORK/serve-$row" "$WORK/redis-$row"
done

# --- report -------------------------------------------------------------------------
ELAPSED=$(($(date +%s) - START))
printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$WORK/notes.txt"
python3 bench/peers/report.py --jsonl "$JSONL" --json "$RESULTS/latest.json" --svg "$RESULTS/latest.svg" \
  --notes "$WORK/notes.txt" --elapsed "$ELAPSED" --redis "$(redis-server --version 2>/dev/null | head -1)" \
  --nats "${NATS_VERSION:-}" ${QUICK:+--quick}
log "done in ${ELAPSED} s: $RESULTS/latest.json, $RESULTS/latest.svg"
if [ -n "${VERIFY_FAILED:-}" ]; then
  log "a log the benchmark wrote failed verify (see the notes above)"
  exit 1
fi
