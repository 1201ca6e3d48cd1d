#!/usr/bin/env bash
# run-examples.sh — runs the C examples as a user would and checks what they print: the
# producer twice (the second run only finds duplicates), the worker until the group has
# no lag, and the remote client against a daemon (`engram serve`) started here.
# Environment: BUILD (default build), ENGRAM_TEST_TMP (scratch directory, else a new one).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
tmp=${ENGRAM_TEST_TMP:-$(mktemp -d)}
bin=$BUILD/examples
fail() {
  echo "run-examples: $*" >&2
  exit 1
}
expect() { # expect WHAT OUTPUT PATTERN
  echo "$2"
  grep -qE "$3" <<<"$2" || fail "$1: expected /$3/"
}

out=$("$bin/producer" "$tmp/log" 120)
expect "producer" "$out" '^appended 120 events \(0 duplicates\); topic memory holds offsets up to 120$'
out=$("$bin/producer" "$tmp/log" 120)
expect "producer again" "$out" '^appended 0 events \(120 duplicates\); .* up to 120$'
out=$("$bin/worker" "$tmp/log" w1)
expect "worker" "$out" '^w1: acked 120, rejected 0; group indexer: lag 0, in flight 0, dead 0$'
out=$("$bin/worker" "$tmp/log" w2)
expect "second worker" "$out" '^w2: acked 0, rejected 0; .*lag 0'

endpoint="ipc://$tmp/engram.ipc"
"$BUILD/engram" serve --data "$tmp/served" --listen "$endpoint" --notify "ipc://$tmp/notify.ipc" \
  2>"$tmp/serve.log" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  [ -S "$tmp/engram.ipc" ] && break
  kill -0 "$daemon" 2>/dev/null || fail "engram serve exited: $(cat "$tmp/serve.log")"
  sleep 0.1
done
out=$("$bin/remote" "$endpoint")
expect "remote" "$out" 'fetch  offset 3 attempt 1: fine, thanks'
out=$("$bin/remote" "$endpoint")
expect "remote again" "$out" 'offset 3 \(duplicate\)'
grep -q fetch <<<"$out" && fail "remote again: the acked events were delivered again"
kill -TERM "$daemon"
wait "$daemon" || fail "engram serve exited with $?: $(cat "$tmp/serve.log")"
trap - EXIT
echo "examples: all ran as expected"
