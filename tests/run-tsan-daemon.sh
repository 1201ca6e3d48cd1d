#!/usr/bin/env bash
# run-tsan-daemon.sh — `engram serve` and its clients under ThreadSanitizer, each in a
# process of its own (`make tsan` runs it after the unit tests of run-tsan.sh).
#
# The daemon tests of tests/test_net.c fork their daemons from a process whose libzmq
# threads already run, which TSan cannot follow; here the daemon is the TSan build of the
# `engram` binary, started by exec, and the clients are the TSan build of the
# side-by-side client (bench/peers/peer_engram.c): one and eight connections, eight
# threads sharing one connection, batches, a group drain of four consumer processes
# (ack-and-fetch, and fetch then ack), and a consumer blocked in its fetch while eight
# producers append (on eight connections, then on one), in `sync` and `async`, and some of
# them again through CURVE (the ZAP handler's thread, encrypted messages),
# while a thread here reads the daemon's /metrics and dashboard API. A data race
# reported in either process fails the run: the client exits 66, the daemon exits 66
# at its SIGTERM, and both print the report.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/tsan}
ENGRAM="$BUILD/engram"
CLIENT="$BUILD/bench/peers/peer_engram"
[ -x "$ENGRAM" ] || { echo "run-tsan-daemon.sh: $ENGRAM missing (make tsan builds it)" >&2; exit 2; }

mkdir -p "$BUILD/bench/peers"
# -O1: TSan's own advice; -Werror as the other builds.
if ! cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -O1 -g -pthread \
  -fsanitize=thread -fno-omit-frame-pointer -Ibench -Iinclude -o "$CLIENT" \
  bench/peers/peer_engram.c bench/peers/driver.c bench/common/*.c \
  -Wl,--whole-archive "$BUILD/libengram.a" -Wl,--no-whole-archive \
  -lzstd -lprotobuf-c -lzmq -lmicrohttpd -llmdb -lpthread -lm; then
  echo "run-tsan-daemon.sh: the client did not build" >&2
  exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/engram-tsan-daemon.XXXXXX")
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 detect_deadlocks=0 suppressions=$PWD/tests/tsan.supp log_path=$WORK/tsan"

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Reads the daemon's HTTP pages once every 100 ms until told to stop, as an open
# dashboard and a Prometheus scraping do: the HTTP threads read the handle's state while
# requests change it.
scrape() { # port stopfile
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, sys, time, urllib.request
port, stop = sys.argv[1], sys.argv[2]
while not os.path.exists(stop):
    for page in ("/metrics", "/api/overview", "/api/workers", "/api/series"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=30).read()
        except OSError:
            pass
    time.sleep(0.1)
PY
}

failed=0
report() { # what
  failed=$((failed + 1))
  echo "FAIL  $1"
  cat "$WORK"/tsan.* 2>/dev/null | head -n 80 | sed 's/^/      /'
  rm -f "$WORK"/tsan.*
}

# CURVE: the daemon's key pair, and a client's that the daemon lets in.
"$ENGRAM" keygen --out "$WORK/server" >/dev/null && "$ENGRAM" keygen --out "$WORK/client" >/dev/null ||
  { echo "run-tsan-daemon.sh: engram keygen failed" >&2; exit 1; }

runs=(sync async curve)
for mode in "${runs[@]}"; do
  row=fsync durability=$mode serve_curve=() client_curve=()
  workloads=(append1 append8 append8:shared batch100 drain drain_split latency latency:shared)
  [ "$mode" = async ] && row=everyday
  if [ "$mode" = curve ]; then
    # The ZAP handler's thread checks every connection's key; CURVE encrypts each message.
    durability=sync
    serve_curve=(--curve-secret-file "$WORK/server.key" --allow-keys-file "$WORK/client.pub")
    client_curve=(--curve-server-key "$(sed -n 's/^public-key = //p' "$WORK/server.pub")"
      --curve-client-keys "$WORK/client.key")
    workloads=(append8 append8:shared drain latency)
  fi
  ep="ipc://$WORK/$mode.ipc"
  port=$(free_port)
  start=$(date +%s)
  "$ENGRAM" serve --data "$WORK/log-$mode" --listen "$ep" --durability "$durability" \
    --http "127.0.0.1:$port" "${serve_curve[@]}" >"$WORK/serve-$mode.log" 2>&1 &
  DAEMON_PID=$!
  up=0
  for _ in $(seq 300); do
    if "$CLIENT" --connect "$ep" --workload ping "${client_curve[@]}" >/dev/null 2>&1; then
      up=1
      break
    fi
    sleep 0.1
  done
  if [ $up = 0 ]; then
    tail -n 20 "$WORK/serve-$mode.log" | sed 's/^/      /'
    report "engram serve ($mode) did not come up"
    kill -9 "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=
    continue
  fi
  rm -f "$WORK/stop"
  scrape "$port" "$WORK/stop" &
  scraper=$!
  for wl in "${workloads[@]}"; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then break; fi # its report follows
    share=()
    [[ "$wl" == *:shared ]] && share=(--share-connection)
    if ! timeout 600 "$CLIENT" --connect "$ep" --durability "$durability" --workload "${wl%:shared}" \
      --row "$row" --quick "${share[@]}" "${client_curve[@]}" >"$WORK/client.out" 2>"$WORK/client.err"; then
      tail -n 5 "$WORK/client.err" | sed 's/^/      /'
      report "client $wl ($mode)"
    fi
  done
  touch "$WORK/stop"
  wait "$scraper"
  kill -TERM "$DAEMON_PID"
  wait "$DAEMON_PID"
  rc=$?
  DAEMON_PID=
  if [ $rc != 0 ]; then
    tail -n 5 "$WORK/serve-$mode.log" | sed 's/^/      /'
    report "engram serve ($mode) exited $rc"
  else
    printf 'PASS  %-30s %4ss\n' "engram serve ($mode)" "$(($(date +%s) - start))"
  fi
done
echo "tsan daemon: ${#runs[@]} daemons, $failed failed"
[ $failed = 0 ]
