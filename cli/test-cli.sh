#!/usr/bin/env bash
# test-cli.sh — end-to-end checks of the engram command on a fresh temporary log: exit
# statuses, error lines, JSON shapes, batches, groups and the dead-letter queue.
# Usage: BUILD=build bash cli/test-cli.sh   (exit 0 when every check passes; works on a
# SAN=1 build too: BUILD=build/san)
# Conditions are passed to check() in single quotes and evaluated there, on purpose:
# shellcheck disable=SC2016,SC2034
set -u

BUILD=${BUILD:-build}
BIN=$(cd "$BUILD" && pwd)/engram
[[ -x $BIN ]] || {
  echo "test-cli: no $BIN (run make first)" >&2
  exit 2
}
TMP=$(mktemp -d)
trap 'umount -l "$TMP/ro" 2>/dev/null; rm -rf "$TMP"' EXIT
DATA=$TMP/log
fails=0 checks=0

# A sanitizer report (in a SAN=1 build) fails the run whatever the command's status.
sanitized() {
  if grep -q 'Sanitizer\|runtime error' "$TMP/err"; then
    fails=$((fails + 1))
    printf 'FAIL sanitizer report for: %s\n' "$*"
    head -n 30 "$TMP/err"
  fi
}
# e ARGS...: runs engram on the test log with a time limit; output in $out / $err, status
# in $rc.
e() {
  out=$(timeout 60 "$BIN" --data "$DATA" "$@" 2>"$TMP/err") rc=$?
  sanitized "$@"
  err=$(cat "$TMP/err")
}
# ein INPUT ARGS...: the same with INPUT on stdin.
ein() {
  local input=$1
  shift
  out=$(printf '%s' "$input" | timeout 60 "$BIN" --data "$DATA" "$@" 2>"$TMP/err") rc=$?
  sanitized "$@"
  err=$(cat "$TMP/err")
}
check() { # check NAME CONDITION...
  local name=$1
  shift
  checks=$((checks + 1))
  if "$@"; then
    return 0
  fi
  fails=$((fails + 1))
  printf 'FAIL %s\n  rc=%s\n  out=%s\n  err=%s\n' "$name" "$rc" "${out:0:400}" "${err:0:400}"
}
has() { [[ $1 == *"$2"* ]]; }
lines() { [[ $(printf '%s' "$1" | grep -c '') == "$2" ]]; }
one_line_err() { [[ $(printf '%s\n' "$err" | grep -c '') == 1 && $err == "engram: "* ]]; }
HDR=$(cd "$(dirname "$0")/.." && pwd)/include/engram.h
# fields MACRO: the names of an info struct's field list in engram.h, in its order.
fields() {
  awk -v m="#define $1(" 'index($0, m) == 1 { on = 1 } on { print } on && !/\\$/ { exit }' "$HDR" |
    grep -oE '(X|NUM|TEXT)\([^,]+, *[a-z_]+\)' | sed -E 's/.*, *([a-z_]+)\)$/\1/'
}
# keys_in_order JSON KEY...: every "KEY": is in JSON, in this order (at least 5 keys).
keys_in_order() {
  local rest=$1 k
  shift
  (($# >= 5)) || return 1
  for k; do
    [[ $rest == *"\"$k\":"* ]] || return 1
    rest=${rest#*"\"$k\":"}
  done
}

# Ctrl-C while `consume --wait` waits: the command dies of SIGINT (status 130 in a shell),
# embedded and through the daemon alike. Python starts it with SIGINT at its default (a
# background job of this script would have it ignored).
ctrl_c() {
  python3 - "$BIN" "$@" <<'PY'
import signal, subprocess, sys, time
p = subprocess.Popen(sys.argv[1:] + ["consume", "memory", "idle", "--consumer", "w", "--wait", "1h"])
time.sleep(1)
p.send_signal(signal.SIGINT)
rc = p.wait(timeout=60)
sys.exit(128 - rc if rc < 0 else rc)  # as a shell reports it
PY
}

# --- the command line -------------------------------------------------------------
out=$("$BIN" --help) rc=$?
check "engram --help exits 0 and lists commands" eval '[[ $rc == 0 ]] && has "$out" consume'
for c in append read topics topic group consume ack nack reject cancel status dlq stat verify \
  backup sync compact "topic create" "group create" "group reset" "dlq redrive"; do
  # shellcheck disable=SC2086
  out=$("$BIN" $c --help) rc=$?
  check "engram $c --help exits 0" eval '[[ $rc == 0 && $out == usage:* ]]'
done
out=$("$BIN" --version) rc=$?
check "--version prints the version" eval '[[ $rc == 0 && $out == "engram "* ]]'
out=$("$BIN" 2>&1) rc=$?
check "no command is a usage error" eval '[[ $rc == 2 ]]'
out=$("$BIN" --data "$DATA" frobnicate 2>&1) rc=$?
check "unknown command is a usage error" eval '[[ $rc == 2 ]]'
out=$(env -u ENGRAM_DATA "$BIN" topics 2>&1) rc=$?
check "no --data and no ENGRAM_DATA is a usage error" eval '[[ $rc == 2 ]] && has "$out" ENGRAM_DATA'
e topics
check "a directory without a log is refused" eval '[[ $rc == 1 ]] && one_line_err'
check "... and not created" eval '[[ ! -e $DATA ]]'

# --- topics and single appends -------------------------------------------------------
e topic create memory
check "topic create" eval '[[ $rc == 0 ]]'
e topic create memory
check "topic create twice fails with one line" eval '[[ $rc == 1 ]] && one_line_err'
e append memory memory.saved --payload hello --key m-1 --header source=cli --header 'q=a=b'
check "append prints the offset" eval '[[ $rc == 0 && $out == 1 ]]'
ein "from stdin" append memory memory.saved --idem req-1 --json
check "append --json" eval '[[ $out == "{\"offset\":2,\"duplicate\":false}" ]]'
ein "again" append memory memory.saved --idem req-1 --json
check "idempotent append is a duplicate" eval '[[ $out == "{\"offset\":2,\"duplicate\":true}" ]]'
out=$(printf '\x00\xff\xfe' | "$BIN" --data "$DATA" append memory blob.raw 2>&1) rc=$?
check "binary payload from stdin" eval '[[ $rc == 0 && $out == 3 ]]'
e append memory 'bad type' --payload x
check "bad type is a usage error" eval '[[ $rc == 2 ]] && one_line_err'
# A bad name or type is quoted in the error escaped: one line, nothing for the terminal.
e append memory $'new\nline\x1b[2J' --payload x
check "a type holding a newline and an escape is refused on one escaped line" \
  eval '[[ $rc == 2 ]] && one_line_err && has "$err" "new\\nline\\x1b[2J"'
e append $'new\nline\xc2\x9b' memory.saved --payload x
check "a topic name holding a newline and a C1 control is refused on one escaped line" \
  eval '[[ $rc == 1 ]] && one_line_err && has "$err" "new\\x0aline\\u009b"'
esc=$'\x1b'
e group create memory $'g\x1b]0;t\x07'
check "a group name holding an escape sequence is refused on one line without it" \
  eval '[[ $rc != 0 && $err != *$esc* ]] && one_line_err'
e append nosuch memory.saved --payload x
check "append to a missing topic fails" eval '[[ $rc == 1 ]] && one_line_err'
e append auto memory.saved --payload x --create
check "append --create makes the topic" eval '[[ $rc == 0 && $out == 1 ]]'
e append memory memory.saved --delay 30 --payload x
check "a bare number is not a duration" eval '[[ $rc == 2 ]] && has "$err" unit'
head -c 2000000 /dev/zero >"$TMP/big"
out=$("$BIN" --data "$DATA" append memory big.x <"$TMP/big" 2>"$TMP/err") rc=$?
err=$(cat "$TMP/err")
check "payload over the topic limit fails with one line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" 2000000'

# A log keeps its max_topics; --max-topics raises it, for later commands too.
FEW="$TMP/few"
for t in a b c; do "$BIN" --data "$FEW" --max-topics 2 topic create "$t" >/dev/null 2>"$TMP/err"; done
rc=$? err=$(cat "$TMP/err")
check "the third topic of a log made with --max-topics 2 is refused, saying how to raise it" \
  eval '[[ $rc == 1 ]] && one_line_err && has "$err" "2 topics already" && has "$err" "--max-topics N"'
out=$("$BIN" --data "$FEW" topic create c 2>&1) rc=$?
check "a later command without --max-topics keeps the log's limit" eval '[[ $rc == 1 ]] && has "$out" "2 topics already"'
out=$("$BIN" --data "$FEW" --max-topics 3 topic create c 2>&1 && "$BIN" --data "$FEW" topics 2>&1) rc=$?
check "--max-topics 3 raises it" eval '[[ $rc == 0 ]] && has "$out" c'
out=$("$BIN" --data "$FEW" --max-topics 1 topic create d 2>&1) rc=$?
check "a smaller --max-topics does not lower it" eval '[[ $rc == 1 ]] && has "$out" "3 topics already"'
out=$("$BIN" --data "$FEW" --max-topics 0 stat 2>&1) rc=$?
check "--max-topics 0 is a usage error" eval '[[ $rc == 2 ]] && has "$out" "from 1 to 100000"'

# --- read ------------------------------------------------------------------------------
e read memory --json
check "read --json prints one object per event" eval 'lines "$out" 3'
first=$(printf '%s\n' "$out" | sed -n 1p)
check "event object fields" eval 'has "$first" "\"offset\":1" && has "$first" "\"key\":\"m-1\"" && has "$first" "\"headers\":{\"source\":\"cli\",\"q\":\"a=b\"}" && has "$first" "\"payload\":\"hello\"" && has "$first" "\"idempotency_key\":null" && has "$first" "\"content_type\":null"'
third=$(printf '%s\n' "$out" | sed -n 3p)
check "binary payload comes as payload_base64" eval 'has "$third" "\"payload_base64\":\"AP/+\""'
e read memory --last 1
check "read --last 1" eval 'lines "$out" 1 && [[ $out == 3* ]]'
e read memory --from 2 --count 1 --json
check "read --from --count" eval 'lines "$out" 1 && has "$out" "\"offset\":2"'
e read memory --from 0
check "offset 0 is a usage error" eval '[[ $rc == 2 ]]'

# --- batches ---------------------------------------------------------------------------
batch='{"type":"memory.saved","memory_id":"conv-1:D1:1","text":"raw memory event"}
{"type":"memory.updated","payload":{"a":[1,"\u00e9"]},"key":"k"}

{"type":"memory.saved","payload_base64":"aGk=","headers":{"h":"v"},"idempotency_key":"b-1"}
'
ein "$batch" append memory --batch --json
check "batch appends every line" eval '[[ $rc == 0 && $out == "{\"count\":3,\"duplicates\":0,\"first_offset\":4,\"last_offset\":6}" ]]'
e read memory --from 4 --json
l4=$(printf '%s\n' "$out" | sed -n 1p)
l5=$(printf '%s\n' "$out" | sed -n 2p)
check "raw event: line is the payload, memory_id the key" eval 'has "$l4" "\"key\":\"conv-1:D1:1\"" && has "$l4" "\"content_type\":\"application/json\"" && has "$l4" "raw memory event"'
check "JSON payload stored compactly" eval 'has "$l5" "\"payload\":\"{\\\"a\\\":[1,\\\"é\\\"]}\""'
ein '{"type":"x.y","payload":"ok"}
{"type":"x.y" "payload":"broken"}
' append memory --batch
check "bad line: exit 1, one line naming it" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "line 2"'
e topic show memory --json
check "... and nothing from its batch appended" eval 'has "$out" "\"head_offset\":6"'
e read memory --json
printf '%s\n' "$out" >"$TMP/all.jsonl"
out=$(timeout 60 "$BIN" --data "$TMP/copy" append memory --batch --create --json <"$TMP/all.jsonl" 2>&1) rc=$?
check "read --json output appends again" eval '[[ $rc == 0 ]] && has "$out" "\"count\":6"'
out=$(timeout 60 "$BIN" --data "$TMP/copy" read memory --json 2>&1)
copied=$(printf '%s\n' "$out" | sed 's/"timestamp_ns":[0-9]*//')
orig=$(sed 's/"timestamp_ns":[0-9]*//' "$TMP/all.jsonl")
check "... byte for byte" eval '[[ "$copied" == "$orig" ]]'
out=$(timeout 60 "$BIN" --data "$TMP/copy2" append memory --batch --create --keep-time <"$TMP/all.jsonl" 2>&1) rc=$?
out=$(timeout 60 "$BIN" --data "$TMP/copy2" read memory --json 2>&1)
check "append --batch --keep-time: the copy has the original append times too" eval '[[ "$out" == "$(cat "$TMP/all.jsonl")" ]]'
out=$(head -n 1 "$TMP/all.jsonl" | timeout 60 "$BIN" --data "$TMP/copy2" append memory --batch --keep-time 2>&1) rc=$?
check "... and a time older than the topic's newest event is refused" eval '[[ $rc == 1 ]] && has "$out" "older than the topic'"'"'s newest event"'

# --- groups ----------------------------------------------------------------------------
e group create memory g --max-deliver 0
check "max-deliver 0 is refused" eval '[[ $rc == 2 ]] && has "$err" "max-deliver must be at least 1"'
e group create memory g --ack-wait 31d
check "durations over 30 days are refused" eval '[[ $rc == 2 ]]'
# Each duration option is bounded by the library's own limit for it (ENGRAM_MAX_*_MS).
e group create memory g --ack-wait 99999999999d
check "a duration too large to count is refused, not wrapped" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "over the limit of 30d"'
e group create memory g --ack-wait 18446744073709551617ms
check "... also in milliseconds" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 30d"'
# A value the library refuses is a bad command line too: exit 2, as documented.
e group create memory g --filter 'memory*'
check "a filter the library refuses exits 2 with its reason" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "memory.*"'
e group list memory --json
check "... and no group was made" eval '! has "$out" "\"name\":\"g\""'
e consume memory g --consumer w --count 10001
check "consume --count over the fetch limit (10000) exits 2" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "at most 10000"'
e consume memory g --consumer w --wait 2h
check "consume --wait over an hour exits 2" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 1h"'
e group create memory ttl60 --result-ttl 60d
check "group create --result-ttl 60d is accepted (up to a year)" eval '[[ $rc == 0 ]]'
e group create memory idle --filter nothing.here
ctrl_c --data "$DATA"
rc=$?
check "Ctrl-C during consume --wait exits 130" eval '[[ $rc == 130 ]]'
e group create memory dur-max --ack-wait 30d --backoff 1s,30d --result-ttl 365d
check "each group duration at its maximum is accepted" eval '[[ $rc == 0 ]]'
e group show memory dur-max --json
check "... and kept" eval 'has "$out" "\"ack_wait_ms\":2592000000" && has "$out" "\"result_ttl_ms\":31536000000"'
e group create memory dur-over --ack-wait 30d1ms
check "ack-wait of the maximum + 1ms is refused" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 30d"'
e group create memory dur-over --backoff 1s,30d1ms
check "a backoff step of the maximum + 1ms is refused" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 30d"'
e group create memory dur-over --result-ttl 365d1ms
check "result-ttl of the maximum + 1ms is refused" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 365d"'
e consume memory dur-max --consumer w --wait 1h1ms
check "consume --wait over 1h is a usage error" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 1h"'
e nack memory dur-max 1 --delay 30d1ms
check "nack --delay over 30d is a usage error" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 30d"'
e append memory memory.saved --payload x --delay 30d1ms
check "append --delay over 30d is a usage error" eval '[[ $rc == 2 ]] && has "$err" "over the limit of 30d"'
e group delete memory dur-max
e group create memory g --filter 'memory.*' --max-deliver 2 --backoff 0s --ack-wait 30s
check "group create" eval '[[ $rc == 0 ]]'
e consume memory g --consumer w --count 2 --json --result 'done'
check "consume prints events with group and attempt" eval 'lines "$out" 2 && has "$out" "\"group\":\"g\"" && has "$out" "\"attempt\":1"'
e status memory g 1 --json
check "status after ack is done with the result" eval 'has "$out" "\"state\":\"done\"" && has "$out" "\"result\":\"done\""'
e ack memory g 1
check "acking twice succeeds" eval '[[ $rc == 0 ]]'
e consume memory g --consumer w --no-ack
check "consume --no-ack" eval 'lines "$out" 1'
e status memory g 4 --json
check "leased event is in flight" eval 'has "$out" "\"state\":\"in_flight\"" && has "$out" "\"consumer\":\"w\""'
e reject memory g 4 --reason "bad text" --attempt 1
check "reject" eval '[[ $rc == 0 ]]'
e dlq list memory g --json
check "dlq list" eval 'has "$out" "\"offset\":4" && has "$out" "bad text"'
check "dlq list --json: the fields of ENGRAM_DLQ_ENTRY_FIELDS in its order" \
  eval 'keys_in_order "$out" $(fields ENGRAM_DLQ_ENTRY_FIELDS)'
e dlq show memory g 4 --json
check "dlq show includes the event" eval 'has "$out" "\"event\":{"'
e dlq redrive memory g 4
check "dlq redrive" eval '[[ $rc == 0 ]] && has "$out" "1 entry"'
e consume memory g --consumer w --count 10 --nack --error boom
check "consume --nack" eval '[[ $rc == 0 ]]'
e consume memory g --consumer w --count 10 --nack
e dlq list memory g --json
check "nacks past max-deliver reach the dlq" eval 'has "$out" "max_deliver"'
e dlq purge memory g
check "dlq purge" eval '[[ $rc == 0 ]] && has "$out" purged'
e consume memory g --consumer w --count 5
check "consume with nothing left exits 0" eval '[[ $rc == 0 ]]'
e group reset memory g --to earliest
check "group reset" eval '[[ $rc == 0 ]]'
e group reset memory g --to @2024-01-12T10:00:00Z
check "group reset to a time" eval '[[ $rc == 0 ]]'
e group show memory g --json
check "group show --json" eval 'has "$out" "\"max_deliver\":2" && has "$out" "\"filters\":[\"memory.*\"]"'
check "group show --json: the counters of ENGRAM_GROUP_INFO_COUNTERS in its order" \
  eval 'keys_in_order "$out" group created_ns $(fields ENGRAM_GROUP_INFO_COUNTERS) oldest_unfinished_age_ms'
e topic show memory --json
check "topic show --json: the fields of ENGRAM_TOPIC_INFO_FIELDS in its order" \
  eval 'keys_in_order "$out" topic $(fields ENGRAM_TOPIC_INFO_FIELDS) config'
e stat --json
check "stat --json" eval 'has "$out" "\"topics\":[" && has "$out" "\"groups\":["'
logid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["log"]["id"])' <<<"$out")
check "stat --json names the log by its id (32 hex digits)" eval '[[ $logid =~ ^[0-9a-f]{32}$ ]]'
e stat
check "stat" eval '[[ $rc == 0 ]] && has "$out" OLDEST_UNFINISHED'
check "stat ends with the log id" eval 'has "$out" "log $logid, created "'

# --- consume settles only what its reader took ------------------------------------------
e topic create piped
ein "$(for i in $(seq 1 50); do printf '{"type":"x.y","payload":"%s"}\n' "$i"; done)" append piped --batch
e group create piped g --ack-wait 1s --backoff 0s
acked_of() { # acked_of GROUP: the group's acked counter
  e group show piped "$1" --json
  printf '%s' "$out" | sed -n 's/.*"acked":\([0-9]*\).*/\1/p'
}
timeout 60 "$BIN" --data "$DATA" consume piped g --consumer c --count 50 2>"$TMP/err" | head -1 >"$TMP/head"
rc=${PIPESTATUS[0]} out=$(cat "$TMP/head") err=$(cat "$TMP/err")
check "consume --count 50 | head -1: the reader gets one event" eval 'lines "$out" 1 && [[ $out == 1\ * ]]'
check "... consume exits 1 with one line saying the rest were not acked" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "were not acked"'
acked=$(acked_of g)
check "... only the event the reader took is acked, not all 50" eval '[[ $acked -ge 1 && $acked -le 2 ]]'
sleep 1.2
e consume piped g --consumer c --count 100 --json
check "... the others are delivered again after the ack wait" eval '[[ $rc == 0 ]] && lines "$out" $((50 - acked)) && has "$out" "\"attempt\":2" && ! has "$out" "\"attempt\":1"'
e group create piped file
timeout 60 "$BIN" --data "$DATA" consume piped file --consumer c --count 50 --json >"$TMP/file.jsonl" 2>"$TMP/err"
rc=$? out=$(cat "$TMP/file.jsonl") err=$(cat "$TMP/err")
acked=$(acked_of file)
check "consume into a file writes and acks all 50" eval '[[ $rc == 0 ]] && lines "$out" 50 && [[ $acked == 50 ]]'
e group create piped full --ack-wait 1s
timeout 60 "$BIN" --data "$DATA" consume piped full --consumer c --count 5 >/dev/full 2>"$TMP/err"
rc=$? err=$(cat "$TMP/err")
check "consume into a full disk exits 1 with one line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "No space left"'
acked=$(acked_of full)
check "... and acks nothing" eval '[[ $acked == 0 ]]'
timeout 60 "$BIN" --data "$DATA" consume piped full --consumer c --count 3 --reject 'gone' 2>"$TMP/err" | head -c 0
rc=${PIPESTATUS[0]} err=$(cat "$TMP/err")
check "consume --reject into a closed pipe exits 1" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "not rejected"'
e dlq list piped full --json
check "... and rejects nothing" eval '[[ $out == "[]" ]]'
e topic drop piped

# --- worker text never reaches the terminal raw ----------------------------------------
# no_ctl TEXT: TEXT holds no C0 control but newline and tab, no DEL and no C1 control.
no_ctl() { ! printf '%s' "$1" | LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]\\|\xc2[\x80-\x9f]'; }
red=$'\x1b[31mred\x07' want='\x1b[31mred\x07'
e topic create esc
e append esc x.y --payload $'pay\x1b[2Jload\xc2\x9b' --key $'k\x1b]0;t\x07' --header $'h=\x1bv'
e group create esc g
e consume esc g --consumer w --count 1 --no-ack
e reject esc g 1 --reason "$red"
check "reject with a reason full of escape sequences" eval '[[ $rc == 0 ]]'
e status esc g 1
check "status shows the reason escaped" eval 'has "$out" "$want" && no_ctl "$out"'
e dlq list esc g
check "dlq list shows the reason escaped" eval 'has "$out" "$want" && no_ctl "$out"'
e dlq show esc g 1
check "dlq show shows reason, key, header and payload escaped" eval 'has "$out" "$want" && has "$out" "pay\\x1b[2Jload\\u009b" && has "$out" "h=\\x1bv" && no_ctl "$out"'
e dlq list esc g --json
check "dlq list --json keeps its JSON escapes" eval 'has "$out" "\\u001b[31mred\\u0007"'
e read esc
check "read shows the key and payload escaped" eval 'has "$out" "k\\x1b]0;t\\x07" && no_ctl "$out"'
e append esc x.y --payload x
e consume esc g --consumer w --count 1 --nack --error $'boom\xc2\x9b2J\r'
e status esc g 2
check "a nack error with a C1 CSI is escaped" eval 'has "$out" "boom\\u009b2J\\r" && no_ctl "$out"'
e topic drop esc
# (The daemon's log: tests/test_net_garbage.c, client_text_reaches_the_daemon_log_escaped.)

# --- maintenance -----------------------------------------------------------------------
e verify
check "verify of a healthy log" eval '[[ $rc == 0 ]] && has "$out" "0 damaged"'
e backup "$TMP/backup"
check "backup" eval '[[ $rc == 0 ]]'
out=$(timeout 60 "$BIN" --data "$TMP/backup" read memory --json 2>&1)
check "backup holds the events" eval 'lines "$out" 6'
e sync
check "sync" eval '[[ $rc == 0 && -z $out ]]'
e group delete memory g
check "group delete" eval '[[ $rc == 0 ]]'
e topic drop memory
check "topic drop" eval '[[ $rc == 0 ]]'

# Four processes append with --create at once on a fresh log: each finds the topic
# missing, one creates it, the others see it made meanwhile; all must succeed.
mp_fail=0
for round in 1 2 3 4 5; do
  for i in 1 2 3 4; do
    timeout 60 "$BIN" --data "$TMP/mp$round" append mp memory.saved --payload x --create \
      >/dev/null 2>>"$TMP/mp.err" </dev/null || echo fail >>"$TMP/mp.fail" &
  done
  wait
  n=$(timeout 60 "$BIN" --data "$TMP/mp$round" read mp 2>/dev/null | grep -c '')
  [[ $n == 4 ]] || mp_fail=1
done
[[ -s $TMP/mp.fail ]] && mp_fail=1
err=$(cat "$TMP/mp.err" 2>/dev/null) out="" rc=$mp_fail
check "four concurrent append --create on a fresh log all succeed" eval '[[ $mp_fail == 0 && -z $err ]]'
# --- opening: what --data points at, and read-only logs --------------------------------
# ed DIR ARGS...: runs engram on the log in DIR.
ed() {
  local dir=$1
  shift
  out=$(timeout 60 "$BIN" --data "$dir" "$@" 2>"$TMP/err" </dev/null) rc=$?
  sanitized "$@"
  err=$(cat "$TMP/err")
}
mkdir "$TMP/empty"
ed "$TMP/empty/" append mp memory.saved --payload x --create
check "a trailing slash on an empty directory makes a log" eval '[[ $rc == 0 && $out == 1 ]]'
ed "$TMP/empty" read mp --json
check "and it opens later" eval '[[ $rc == 0 ]] && lines "$out" 1'
check "and leaves no .creating directory" eval '! ls -a "$TMP" "$TMP/empty" | grep -q creating'
printf 'x' >"$TMP/afile"
ed "$TMP/afile" topics
check "a regular file is named as such" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "is a file, not a log directory"'
ed "$TMP/no/such/log" append mp memory.saved --payload x --create
check "a missing parent is named" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "parent directory $TMP/no/such does not exist"'
mkdir "$TMP/bad"
: >"$TMP/bad/data.mdb"
ed "$TMP/bad" topics
check "an empty data.mdb is named" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "data.mdb is empty"'
head -c 20000 /dev/urandom >"$TMP/bad/data.mdb"
ed "$TMP/bad" topics
check "a random data.mdb is not an LMDB file" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "not an LMDB data file"'
rm "$TMP/bad/data.mdb" && mkdir "$TMP/bad/data.mdb"
ed "$TMP/bad" stat
check "data.mdb as a directory is named" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "data.mdb is a directory"'
if command -v mdb_load >/dev/null; then
  mkdir "$TMP/foreign"
  printf 'VERSION=3\nformat=print\ntype=btree\nHEADER=END\n key1\n val1\nDATA=END\n' |
    mdb_load -s accounts "$TMP/foreign"
  before=$(cd "$TMP/foreign" && ls -la --time-style=+ && cat ./* | md5sum)
  ed "$TMP/foreign" topics
  check "a foreign LMDB environment is refused" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "not an engram log" && has "$err" accounts'
  ed "$TMP/foreign" append mp memory.saved --payload x --create
  after=$(cd "$TMP/foreign" && ls -la --time-style=+ && cat ./* | md5sum)
  check "and left unchanged" eval '[[ $rc == 1 && $before == "$after" ]]'
fi
# Read-only: a bind mount remounted read-only (root only).
mkdir "$TMP/ro"
if [[ $(id -u) == 0 ]] && mount --bind "$TMP/empty" "$TMP/ro" 2>/dev/null; then
  if mount -o remount,bind,ro "$TMP/ro" 2>/dev/null; then
    before=$(cd "$TMP/empty" && cat ./* | md5sum)
    ed "$TMP/ro" append mp memory.saved --payload y
    check "a write on a read-only mount says so" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "read-only"'
    ed "$TMP/ro" read mp --json
    check "read works on a read-only mount" eval '[[ $rc == 0 ]] && lines "$out" 1'
    ed "$TMP/ro" topics
    check "topics works on a read-only mount" eval '[[ $rc == 0 ]] && has "$out" mp'
    ed "$TMP/ro" stat
    check "stat works on a read-only mount (no groups yet)" eval '[[ $rc == 0 ]]'
    ed "$TMP/ro" verify
    check "verify works on a read-only mount" eval '[[ $rc == 0 ]] && has "$out" "0 damaged"'
    ed "$TMP/ro" backup "$TMP/rocopy"
    check "backup works on a read-only mount" eval '[[ $rc == 0 ]]'
  fi
  umount -l "$TMP/ro"
fi
# Without write access (permission bits stop only an unprivileged user).
if [[ $(id -u) != 0 ]]; then
  chmod 444 "$TMP/empty/lock.mdb" && chmod 555 "$TMP/empty"
  ed "$TMP/empty" append mp memory.saved --payload y
  check "a write without write access says so" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "may not write"'
  ed "$TMP/empty" read mp --json
  check "read works without write access" eval '[[ $rc == 0 ]] && lines "$out" 1'
  chmod 755 "$TMP/empty" && chmod 644 "$TMP/empty/lock.mdb"
fi
# The same with a group, a finished event and a dead one.
ed "$TMP/empty" append mp memory.saved --payload z
ed "$TMP/empty" group create mp g
ed "$TMP/empty" consume mp g --consumer w --count 1
ed "$TMP/empty" consume mp g --consumer w --no-ack
ed "$TMP/empty" reject mp g 2 --reason "bad text" --attempt 1
check "a group with a dead event to read" eval '[[ $rc == 0 ]]'
if [[ $(id -u) == 0 ]] && mount --bind "$TMP/empty" "$TMP/ro" 2>/dev/null; then
  if mount -o remount,bind,ro "$TMP/ro" 2>/dev/null; then
    before=$(cd "$TMP/empty" && cat ./* | md5sum)
    ed "$TMP/ro" stat --json
    check "stat shows the group on a read-only mount" eval '[[ $rc == 0 ]] && has "$out" "\"groups\":[{"'
    ed "$TMP/ro" status mp g 1 --json
    check "status works on a read-only mount" eval '[[ $rc == 0 ]] && has "$out" offset'
    ed "$TMP/ro" dlq list mp g --json
    check "dlq list works on a read-only mount" eval '[[ $rc == 0 ]] && has "$out" "bad text"'
    ed "$TMP/ro" dlq show mp g 2 --json
    check "dlq show works on a read-only mount" eval '[[ $rc == 0 ]] && has "$out" "\"event\":{"'
    ed "$TMP/ro" group list mp
    check "group list works on a read-only mount" eval '[[ $rc == 0 ]] && has "$out" g'
    ed "$TMP/ro" dlq redrive mp g
    check "dlq redrive on a read-only mount says why it cannot" eval '[[ $rc == 1 ]] && one_line_err && has "$err" read-only'
    ed "$TMP/ro" backup "$TMP/rocopy2"
    check "backup works on a read-only mount" eval '[[ $rc == 0 ]]'
    after=$(cd "$TMP/empty" && cat ./* | md5sum)
    check "reading a read-only mount changed no file" eval '[[ $before == "$after" ]]'
  fi
  umount -l "$TMP/ro"
fi

# --- serve's config and key files ----------------------------------------------------
# Every case fails before the daemon would start, so no socket is opened.
CONF=$TMP/serve.conf
printf '# engram serve settings\n\nlisten = tcp://127.0.0.1:1\n\n   \n# a comment\nno-such-key = 1\n' >"$CONF"
e serve --config "$CONF"
check "a bad config line is named by its true line number" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "$CONF:7: unknown key '"'no-such-key'"'"'
printf 'workers = 4\nlisten = tcp://127.0.0.1:1\n\nworkers = 8\n' >"$CONF"
e serve --config "$CONF"
check "a key repeated in the config is refused, not the first value kept" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "$CONF:4:" && has "$err" "line 1"'
printf 'listen = tcp://127.0.0.1:1   # a comment\nworkers = 0\n' >"$CONF"
e serve --config "$CONF"
check "a bad value in the config names its line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "$CONF:2: workers '"'0'"': must be at least 1"'
printf 'durability = fast\n' >"$CONF"
e serve --config "$CONF"
check "a bad durability in the config names its line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "$CONF:1: durability must be sync, nometasync or async"'
printf '\nlisten\n' >"$CONF"
e serve --config "$CONF"
check "a config line without = names its line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "$CONF:2: expected"'
e serve --workers 0
check "serve --workers 0 is a usage error" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "--workers '"'0'"': must be at least 1"'
e serve --durability fast
check "serve --durability names the modes" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "--durability must be sync, nometasync or async, not '"'fast'"'"'
KEYS=$TMP/keys
printf '# keys\n\n%s\n\nshort\n' "$(printf 'k%.0s' {1..40})" >"$KEYS.allow"
printf 'secret-key = %s\n' "$(printf 's%.0s' {1..40})" >"$KEYS.key"
e serve --curve-secret-file "$KEYS.key" --allow-keys-file "$KEYS.allow"
check "a bad allowed key is named by its true line number" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "$KEYS.allow:5: a key is 40 Z85 characters"'
printf 'secret-key = %s\n\nsecret-key = %s\n' "$(printf 's%.0s' {1..40})" "$(printf 't%.0s' {1..40})" >"$KEYS.key"
e serve --curve-secret-file "$KEYS.key" --allow-keys-file "$KEYS.allow"
check "a second secret-key line is refused with its line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "$KEYS.key:3:"'

# --- workers and top ---------------------------------------------------------------
# (--lost-after 1h: under the sanitizers the fetch above can be more than 30 s ago.)
e workers --lost-after 1h
check "workers lists the consumers that fetched" eval '[[ $rc == 0 ]] && has "$out" alive && has "$out" "memory/g"'
e workers --json
check "workers --json is one array with the consumer w" eval '[[ $rc == 0 && $out == "["* ]] && has "$out" "\"name\":\"w\""'
e workers --lost-after 1ms
check "workers --lost-after marks the silent ones lost" eval '[[ $rc == 0 ]] && has "$out" lost'
e workers --lost-after 2
check "workers --lost-after wants a unit" eval '[[ $rc == 2 ]] && one_line_err'
e workers forget nobody
check "workers forget of an unknown name fails with one line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "no worker named nobody"'
e workers forget w
check "workers forget removes it" eval '[[ $rc == 0 ]]'
e workers --json
check "... and it is gone" eval '[[ $rc == 0 ]] && ! has "$out" "\"name\":\"w\""'
e top --once --sort name
check "top --once prints the groups" eval '[[ $rc == 0 ]] && has "$out" LAG && has "$out" "sort name"'
check "... with rates in the first frame (NACKS/S, DEAD/S, no '-' placeholders)" eval '[[ $rc == 0 ]] && has "$out" NACKS/S && has "$out" DEAD/S && has "$out" "rates over 1m"'
out=$(timeout 1.5 "$BIN" --data "$DATA" top --interval 200ms </dev/null 2>&1) rc=$?
check "top into a pipe: frames one after another, no terminal control sequences" \
  eval '[[ $rc == 124 && $out != *$'"'"'\e'"'"'* ]] && (( $(grep -c "^engram top" <<<"$out") >= 2 ))'
e top --once --window 15m
check "top --window 15m" eval '[[ $rc == 0 ]] && has "$out" "rates over 15m"'
e rates
check "rates prints a row per topic and group" eval '[[ $rc == 0 ]] && has "$out" "DEAD_LETTERED" && has "$out" "per second over the last 1m"'
e group create auto rates-g
e rates auto --json
check "rates --json: every window of every field, the topic's row with a null group" eval '[[ $rc == 0 ]] && has "$out" "\"window\":[\"1m\",\"5m\",\"15m\"]" && has "$out" "\"group\":null" && has "$out" "\"dead_lettered\":["'
e rates no-such-topic
check "rates of a missing topic fails with one line" eval '[[ $rc == 1 ]] && one_line_err'
e rates --window 2m
check "rates --window names the windows" eval '[[ $rc == 2 ]] && one_line_err'
e top --sort fast
check "top --sort names the keys" eval '[[ $rc == 2 ]] && one_line_err'
# Retention: limits at creation, changed by topic set, applied by compact.
e topic create kept --max-events 3 --max-age 7d
check "topic create takes retention limits" eval '[[ $rc == 0 ]]'
for i in 1 2 3 4 5 6 7 8; do e append kept memory.saved --payload "p$i"; done
e compact kept --json
check "compact removes the events over max-events" eval '[[ $rc == 0 ]] && has "$out" "\"removed\":5"'
e topic show kept --json
check "topic show gives the limits and the moved first offset" eval 'has "$out" "\"first_offset\":6" && has "$out" "\"max_events\":3" && has "$out" "\"max_age_ms\":604800000"'
e read kept --from 1 --count 1 --json
check "a read from below first starts at first" eval '[[ $rc == 0 ]] && has "$out" "\"offset\":6"'
e topic set kept --max-age 20y
check "topic set with a bad duration is a usage error" eval '[[ $rc == 2 ]] && one_line_err'
e topic set kept --force --no-force
check "topic set --force --no-force is a usage error" eval '[[ $rc == 2 ]] && one_line_err'
e topic set missing --max-events 1
check "topic set of a missing topic fails with one line" eval '[[ $rc == 1 ]] && one_line_err'
e topic set kept --max-events 0 --force
e topic show kept
check "topic set changes only what is given" eval '[[ $rc == 0 ]] && has "$out" "max events: none" && has "$out" "max age:   7d" && has "$out" forced'
e compact missing
check "compact of a missing topic fails with one line" eval '[[ $rc == 1 ]] && one_line_err'
# Key compaction: the newest event per key, tombstones by flag and by type, gaps in read.
e topic create latest --compact-by-key --tombstone-ttl 1ms --tombstone-type memory.deleted
check "topic create takes key compaction" eval '[[ $rc == 0 ]]'
e append latest memory.saved --key a --payload v1
e append latest memory.updated --key a --payload v2
e append latest memory.saved --key b --payload v1
e append latest memory.deleted --key b --payload ''
e append latest memory.queried --payload q
e append latest memory.forget --key c --tombstone --payload ''
e read latest --from 6 --json
check "append --tombstone stores the flag" eval '[[ $rc == 0 ]] && has "$out" "\"tombstone\":true"'
e append latest memory.forget --tombstone --payload x
check "append --tombstone without --key is a usage error" eval '[[ $rc == 2 ]] && one_line_err'
sleep 0.01 # the tombstones' ttl of 1 ms passes
e compact latest --json
check "compact removes superseded events and expired tombstones" eval '[[ $rc == 0 ]] && has "$out" "\"compacted\":4" && has "$out" "\"tombstones\":2"'
e read latest
check "read shows the gaps key compaction left" eval '[[ $rc == 0 ]] && has "$out" "offset 1 removed by key compaction" && has "$out" "offsets 3..4 removed" && has "$out" "offset 6 removed"'
e read latest --json
check "read --json names the gaps" eval '[[ $rc == 0 ]] && has "$out" "\"removed_from\":3,\"removed_to\":4"'
e read latest --from 1 --count 1
check "a read of a removed offset moves on to the next event" eval '[[ $rc == 0 ]] && has "$out" "v2"'
e topic show latest --json
check "topic show gives key compaction and its gaps" eval 'has "$out" "\"compact_by_key\":true" && has "$out" "\"tombstone_type\":\"memory.deleted\"" && has "$out" "\"tombstone_ttl_ms\":1" && has "$out" "\"compacted\":4"'
e append latest memory.saved --key c --payload again --json
check "offsets go on after the head's tombstone went" eval '[[ $rc == 0 ]] && has "$out" "\"offset\":7"'
e topic set latest --no-compact-by-key --tombstone-type ''
e topic show latest
check "topic set turns key compaction off" eval '[[ $rc == 0 ]] && has "$out" "key compaction:      off"'
e topic set latest --compact-by-key --no-compact-by-key
check "topic set --compact-by-key --no-compact-by-key is a usage error" eval '[[ $rc == 2 ]] && one_line_err'
e topic set latest --tombstone-type 'not a type'
check "topic set with a bad tombstone type fails with one line" eval '[[ $rc == 1 || $rc == 2 ]] && one_line_err'
e verify
check "verify is clean over the gaps" eval '[[ $rc == 0 ]]'
ein '{"type":"memory.deleted","key":"z","payload":"","tombstone":true}
{"type":"memory.saved","key":"z","payload":"","tombstone":false}' append latest --batch
e read latest --from 8 --json
check "append --batch takes the tombstone field that read --json prints" eval '[[ $rc == 0 ]] && lines "$out" 2 && has "$out" "\"tombstone\":true"'
ein '{"type":"memory.deleted","payload":"","tombstone":true}' append latest --batch
check "a batch tombstone without a key fails with its line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "line 1"'
# --- read --since and --follow ---------------------------------------------------------------
e topic create timed
e append timed old.one --payload a
T0=$(date +%s.%N)
e append timed new.one --payload b
e read timed --since "@$T0" --json
check "read --since @TIME starts at the first event appended at or after TIME" eval '[[ $rc == 0 ]] && lines "$out" 1 && has "$out" new.one'
e read timed --since 1h
check "read --since DURATION reads what came in that long ago" eval '[[ $rc == 0 ]] && lines "$out" 2'
e read timed --since yesterday
check "read --since with a bad value is a usage error" eval '[[ $rc == 2 ]] && one_line_err'
timeout 60 "$BIN" --data "$DATA" read timed --from 2 --follow --count 3 >"$TMP/follow.out" 2>&1 &
FP=$!
for _ in $(seq 1 600); do [[ -s $TMP/follow.out ]] && break; sleep 0.1; done
e append timed later.one --payload c
e append timed later.two --payload d
wait "$FP"
rc=$?
out=$(cat "$TMP/follow.out")
check "read --follow prints events appended while it waits, then stops at --count" eval '[[ $rc == 0 ]] && lines "$out" 3 && has "$out" later.two'

e stat --watch 100ms --count 2 --json
check "stat --watch --count 2 --json prints two objects of stat --json's shape plus rates" eval '[[ $rc == 0 ]] && lines "$out" 2 && has "$out" "\"rates\":{\"topics\":{" && has "$out" "\"groups\":["'
second=$(printf '%s\n' "$out" | sed -n 2p)
check "... the second with a number per topic" eval '[[ $second =~ \"rates\":\{\"topics\":\{\"[a-z]+\":[0-9] ]]'
first=$(printf '%s\n' "$out" | sed -n 1p)
check "... and the first too: the rates are the log's last minute, not the growth between prints" eval '[[ $first =~ \"rates\":\{\"topics\":\{\"[a-z]+\":[0-9] ]]'
e stat --watch 100ms --count 2
check "stat --watch in text: IN/S and ACK/S columns, a time line per print" eval '[[ $rc == 0 ]] && has "$out" "IN/S" && [[ $(grep -c "^--- " <<<"$out") == 2 ]]'
e stat --count 2
check "stat --count without --watch is a usage error" eval '[[ $rc == 2 ]]'

# --- --json on every command that writes -------------------------------------------------
jok() { [[ $rc == 0 && $out == '{"ok":true,"action":"'"$1"'"'* ]] && lines "$out" 1; }
e topic create jt --json
check "topic create --json" jok "topic create"
e group create jt jg --json
check "group create --json names topic and group" eval 'jok "group create" && has "$out" "\"topic\":\"jt\",\"group\":\"jg\""'
e append jt x.y --payload 1 --json
e append jt x.y --payload 2 --json
e consume jt jg --consumer w --count 2 --no-ack --json
e ack jt jg 1 --json
check "ack --json names the offset" eval 'jok ack && has "$out" "\"offset\":1"'
e reject jt jg 2 --reason bad --json
check "reject --json" jok reject
e dlq redrive jt jg --json
check "dlq redrive --json counts" eval 'jok "dlq redrive" && has "$out" "\"count\":1"'
e consume jt jg --consumer w --no-ack
e nack jt jg 2 --json
check "nack --json" jok nack
e dlq purge jt jg --json
check "dlq purge --json" eval 'jok "dlq purge" && has "$out" "\"count\":0"'
e group reset jt jg --to earliest --json
check "group reset --json" jok "group reset"
e cancel jt jg 1 --json
check "cancel --json" jok cancel
e sync --json
check "sync --json" jok sync
e backup "$TMP/jbackup" --json
check "backup --json" jok backup
e group delete jt jg --json
check "group delete --json" jok "group delete"
e topic drop jt --json
check "topic drop --json" jok "topic drop"

# Ctrl-C during append --batch: the batches appended stay, the one being read is not, and
# the message says from which line to resume; resuming appends every line exactly once.
seq 1 1200 | sed 's/.*/{"type":"n.x","payload":&}/' >"$TMP/big.jsonl"
out=$(python3 - "$BIN" "$DATA" "$TMP/big.jsonl" <<'PY' 2>&1
import json, signal, subprocess, sys, time
bin, data, path = sys.argv[1:]
lines = open(path, "rb").read().splitlines(keepends=True)
p = subprocess.Popen([bin, "--data", data, "append", "bigint", "--batch", "--create"],
                     stdin=subprocess.PIPE, stderr=subprocess.PIPE)
p.stdin.write(b"".join(lines[:1200]))   # two full batches and 200 lines; stdin stays open
p.stdin.flush()
deadline = time.time() + 60
while time.time() < deadline:          # wait until both batches are in
    r = subprocess.run([bin, "--data", data, "topic", "show", "bigint", "--json"],
                       capture_output=True, text=True)
    if r.returncode == 0 and json.loads(r.stdout)["count"] == 1000:
        break
    time.sleep(0.05)
p.send_signal(signal.SIGINT)
err = p.stderr.read().decode()
print("rc", p.wait(timeout=60))
print(err)
PY
)
check "Ctrl-C during append --batch exits 130 naming the line to resume from" eval 'has "$out" "rc 130" && has "$out" "lines 1..1000 were appended" && has "$out" "tail -n +1001"'
tail -n +1001 "$TMP/big.jsonl" | timeout 60 "$BIN" --data "$DATA" append bigint --batch >/dev/null
e read bigint --json
check "... and resuming there appends each line once" eval '[[ $(grep -c . <<<"$out") == 1200 ]] && [[ $(sed -n 1200p <<<"$out") == *"\"payload\":\"1200\""* ]]'

# --- group consumers: who holds what ------------------------------------------------------
e topic create held
for i in 1 2 3; do e append held h.x --payload "$i"; done
e group create held hg
e group consumers held hg
check "group consumers with nothing in flight says so" eval '[[ $rc == 0 ]] && has "$out" "no events in flight"'
e consume held hg --consumer w1 --count 2 --no-ack
e consume held hg --consumer w2 --no-ack
e group consumers held hg --json
check "group consumers --json: each holder, its count and offsets" eval '[[ $rc == 0 ]] && has "$out" "\"consumer\":\"w1\",\"in_flight\":2,\"offsets\":[1,2]" && has "$out" "\"consumer\":\"w2\",\"in_flight\":1,\"offsets\":[3]"'
e group consumers held hg
check "group consumers in text: since when and the next expiry" eval '[[ $rc == 0 ]] && has "$out" HOLDING_FOR && has "$out" w2'

# Long work shows progress on a terminal and is quiet otherwise.
out=$(python3 - "$BIN" "$DATA" "$TMP/pbackup" <<'PY'
import os, pty, subprocess, sys
bin, data, dest = sys.argv[1:]
for args in (["verify"], ["backup", dest]):
    m, s = pty.openpty()
    r = subprocess.run([bin, "--data", data, *args], stderr=s, stdout=subprocess.DEVNULL, timeout=60)
    os.close(s)
    got = b""
    try:
        while chunk := os.read(m, 4096):
            got += chunk
    except OSError:
        pass
    os.close(m)
    shown = got.startswith(b"\r") and (b"... 0s" in got or b": " in got) and got.endswith(b"\r\x1b[K")
    print(args[0], r.returncode, "progress-erased" if shown else repr(got))
PY
)
check "verify and backup show progress on a terminal, then erase it" eval 'has "$out" "verify 0 progress-erased" && has "$out" "backup 0 progress-erased"'
e verify
check "... and print nothing on stderr into a pipe" eval '[[ $rc == 0 && -z $err ]]'

# --- compact --reclaim: the space of a dropped topic goes back to the file system ----------
RL=$TMP/rlog
python3 -c '
import json, os
for i in range(3000): print(json.dumps({"type": "memory.saved", "payload": os.urandom(1500).hex()}))' >"$TMP/bulk.jsonl"
out=$(timeout 60 "$BIN" --data "$RL" append bulk --batch --create <"$TMP/bulk.jsonl" 2>"$TMP/err") rc=$?
ed "$RL" topic create kept
ed "$RL" append kept memory.saved --payload one --key m1 --idem k1
ed "$RL" group create kept g
ed "$RL" consume kept g --consumer w
ed "$RL" stat --json
used_full=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["space"]["used_bytes"])' <<<"$out")
ed "$RL" topic drop bulk
size_before=$(stat -c %s "$RL/data.mdb")
ed "$RL" stat --json
check "stat --json: the dropped topic's pages move from used to free" eval '[[ $rc == 0 ]] && python3 -c "
import json, sys
s = json.loads(sys.argv[1])[\"space\"]
assert s[\"file_bytes\"] == $size_before, s
assert s[\"free_bytes\"] > 4 << 20 and s[\"used_bytes\"] * 4 < $used_full, s
" "$out"'
ed "$RL" stat
check "stat shows data.mdb's size, used and free" eval '[[ $rc == 0 ]] && grep -qE "^data.mdb [0-9.]+ MiB: [0-9.]+ MiB used, [0-9.]+ MiB free \([0-9.]+%\)$" <<<"$out"'
check "... and no hint to reclaim under 64 MiB" eval '! has "$out" "compact --reclaim"' 
ed "$RL" compact --reclaim --json
check "compact --reclaim --json: the sizes before and after" eval '[[ $rc == 0 ]] && has "$out" "\"bytes_before\":$size_before" && has "$out" "\"removed\":0"'
size_after=$(stat -c %s "$RL/data.mdb")
check "... data.mdb shrank to a tenth or less" eval '(( size_after * 10 < size_before ))'
ed "$RL" read kept --json
check "... the events of the other topic are there" eval '[[ $rc == 0 ]] && lines "$out" 1 && has "$out" "\"key\":\"m1\""'
ed "$RL" group show kept g --json
check "... and its group's cursor" eval '[[ $rc == 0 ]] && has "$out" "\"floor\":1"'
ed "$RL" verify
check "... and it verifies clean" eval '[[ $rc == 0 ]] && has "$out" "0 damaged"'
ed "$RL" compact --reclaim
check "compact --reclaim prints the sizes" eval '[[ $rc == 0 ]] && has "$out" "data.mdb: " && has "$out" "bytes before"'
"$BIN" --data "$RL" consume kept g --consumer holder --wait 1h >/dev/null 2>&1 &
holder=$!
# Until it holds open.lock, seen in /proc/locks (a probe with a lock of our own could make
# its open fail: an exclusive lock is what a reclaim holds).
for _ in $(seq 600); do
  [[ -e $RL/open.lock ]] &&
    grep -qE "FLOCK +ADVISORY +READ +$holder [0-9a-f]+:[0-9a-f]+:$(stat -c %i "$RL/open.lock") " /proc/locks &&
    break
  sleep 0.1
done
ed "$RL" compact --reclaim
check "compact --reclaim is refused while another process has the log open, naming it" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "pid $holder" && has "$err" "nothing was changed"'
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
ed "$RL" compact --reclaim
check "... and runs once it has gone" eval '[[ $rc == 0 ]]'
out=$(timeout 60 "$BIN" --connect tcp://127.0.0.1:1 compact --reclaim 2>"$TMP/err") rc=$?
err=$(cat "$TMP/err")
check "compact --reclaim through --connect is refused: the daemon holds the log" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "--connect"'
timeout 60 "$BIN" --data "$RL" append bulk --batch --create <"$TMP/bulk.jsonl" >/dev/null 2>&1
out=$(python3 - "$BIN" "$RL" "$TMP/rbackup" <<'PY'
import os, pty, subprocess, sys
bin, data, dest = sys.argv[1:]
for args, want in ((["verify"], [b"verifying: checking records", b"checking databases"]),
                   (["backup", dest], [b"writing the backup: copying", b" MiB of "]),
                   (["compact"], [b"compacting: applying retention"]),
                   (["compact", "--reclaim"], [b"reclaiming: copying", b"reclaiming: swapping"])):
    m, s = pty.openpty()
    r = subprocess.run([bin, "--data", data, *args], stderr=s, stdout=subprocess.DEVNULL, timeout=60)
    os.close(s)
    got = b""
    try:
        while chunk := os.read(m, 4096):
            got += chunk
    except OSError:
        pass
    os.close(m)
    shown = all(w in got for w in want) and got.endswith(b"\r\x1b[K")
    print(args[-1], r.returncode, "progress-shown" if shown else repr(got[-300:]))
PY
)
check "verify, backup, compact and --reclaim show the library's progress on a terminal" eval 'has "$out" "verify 0 progress-shown" && has "$out" "rbackup 0 progress-shown" && has "$out" "compact 0 progress-shown" && has "$out" "--reclaim 0 progress-shown"'
ed "$RL" compact --reclaim
check "... and nothing into a pipe" eval '[[ $rc == 0 && -z $err ]]'

# --- CURVE from the command line ----------------------------------------------------------
CV=$TMP/curve
mkdir -p "$CV"
"$BIN" keygen --out "$CV/server" >/dev/null && "$BIN" keygen --out "$CV/client" >/dev/null &&
  "$BIN" keygen --out "$CV/stranger" >/dev/null
cp "$CV/client.pub" "$CV/allow"
SKEY=$(sed -n 's/^public-key = //p' "$CV/server.pub")
EP=ipc://$CV/s.ipc
timeout 120 "$BIN" --data "$CV/log" serve --listen "$EP" --notify "ipc://$CV/n.ipc" \
  --curve-secret-file "$CV/server.key" --allow-keys-file "$CV/allow" 2>"$CV/serve.err" &
SERVE_PID=$!
c() { # c ARGS...: the command against the CURVE daemon; $out, $err, $rc
  out=$(timeout 60 "$BIN" "$@" 2>"$TMP/err") rc=$?
  sanitized "$@"
  err=$(cat "$TMP/err")
}
for _ in $(seq 1 100); do
  c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key" topic create curved
  [[ $rc == 0 ]] && break
  sleep 0.2
done
check "--server-key and --client-key-file reach a CURVE daemon" eval '[[ $rc == 0 ]] && has "$out" "created topic curved"'
out=$(ENGRAM_CONNECT=$EP ENGRAM_SERVER_KEY=$SKEY ENGRAM_CLIENT_KEY_FILE=$CV/client.key \
  timeout 60 "$BIN" topics 2>&1) rc=$?
check "... and so do ENGRAM_CONNECT, ENGRAM_SERVER_KEY, ENGRAM_CLIENT_KEY_FILE" eval '[[ $rc == 0 ]] && has "$out" curved'
out=$(ENGRAM_CONNECT=$EP ENGRAM_DATA=$DATA timeout 60 "$BIN" topics 2>&1) rc=$?
check "ENGRAM_CONNECT with ENGRAM_DATA is refused as ambiguous" eval '[[ $rc == 2 ]] && has "$out" "both set"'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key" info --json
check "info --json shows the daemon's counters" eval '[[ $rc == 0 ]] && has "$out" "\"requests\":" && has "$out" "\"parked\":0" && has "$out" "\"workers\":"'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key" info
check "info in text" eval '[[ $rc == 0 ]] && has "$out" "parked"'
check "info names the daemon's log by its id" eval '[[ $out =~ log_id\ +[0-9a-f]{32} ]]'
c --data "$DATA" info
check "info on a directory is a usage error naming --connect" eval '[[ $rc == 2 ]] && has "$err" "--connect"'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/stranger.key" topics
check "a client key not allowed in fails with one line" eval '[[ $rc == 1 ]] && one_line_err'
c --connect "$EP" --server-key "$SKEY" topics
check "--server-key without a client key is a usage error" eval '[[ $rc == 2 ]] && has "$err" "--client-key-file"'
c --data "$DATA" --server-key "$SKEY" topics
check "--server-key with --data is a usage error" eval '[[ $rc == 2 ]]'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key" topic create memory
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key" group create memory idle
ctrl_c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key"
rc=$?
check "... also through the daemon" eval '[[ $rc == 130 ]]'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key" group delete memory idle
CKEY=$(sed -n 's/^public-key = //p' "$CV/client.pub")
check "an admin action through a CURVE daemon is logged with the client's key" eval 'grep -F "admin: group_delete group memory/idle by peer" "$CV/serve.err" | grep -qF "key $CKEY"'
# SIGHUP reads the allow-list again: the stranger's key is added, the client's removed.
reloaded() { # reloaded N: the daemon has logged its Nth allow-list reload
  for _ in $(seq 1 300); do
    (($(grep -c "sighup: allow-list reloaded" "$CV/serve.err") >= $1)) && return 0
    sleep 0.1
  done
  return 1
}
# (To the daemon itself, named by its lock file: timeout passes on one SIGHUP only.)
DPID=$(cat "$CV/log/daemon.lock")
{ echo "# rotated keys"; echo "public-key = $(sed -n 's/^public-key = //p' "$CV/stranger.pub")"; } >"$CV/allow"
kill -HUP "$DPID"
check "SIGHUP reloads the allow-list file" reloaded 1
check "... and logs how many keys it now holds" eval 'grep -q "allow-list reloaded: 1 client keys (were 1)" "$CV/serve.err"'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/stranger.key" topics
check "... a newly added client key is accepted" eval '[[ $rc == 0 ]] && has "$out" curved'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/client.key" topics
check "... a removed client key is refused" eval '[[ $rc == 1 ]] && one_line_err'
printf 'not a key\n' >>"$CV/allow"
kill -HUP "$DPID"
for _ in $(seq 1 300); do grep -q "allow-keys file $CV/allow:3: a key is 40 Z85" "$CV/serve.err" && break; sleep 0.1; done
check "... a bad file on SIGHUP is logged with its line and keeps the list" eval 'grep -q "allow-keys file $CV/allow:3: a key is 40 Z85 characters: keeping the 1 keys allowed before" "$CV/serve.err"'
c --connect "$EP" --server-key "$SKEY" --client-key-file "$CV/stranger.key" topics
check "... and the daemon still serves the keys it had" eval '[[ $rc == 0 ]] && has "$out" curved'
kill "$SERVE_PID" 2>/dev/null
wait "$SERVE_PID" 2>/dev/null

# --- serve --log-file: logrotate moves the file, SIGHUP makes the daemon open a new one.
LF=$TMP/logfile
mkdir -p "$LF"
timeout 120 "$BIN" --data "$LF/log" serve --listen "ipc://$LF/s.ipc" --notify "ipc://$LF/n.ipc" \
  --log-file "$LF/engram.log" 2>"$LF/serve.err" &
SERVE_PID=$!
for _ in $(seq 1 100); do
  c --connect "ipc://$LF/s.ipc" topics
  [[ $rc == 0 ]] && break
  sleep 0.2
done
check "serve --log-file writes its lines there, not on stderr" eval 'grep -q "info  start: engram" "$LF/engram.log" && ! [[ -s $LF/serve.err ]]'
mv "$LF/engram.log" "$LF/engram.log.1"
kill -HUP "$(cat "$LF/log/daemon.lock")"
for _ in $(seq 1 300); do grep -qs "log file $LF/engram.log reopened" "$LF/engram.log" && break; sleep 0.1; done
check "SIGHUP reopens --log-file after logrotate moved it" eval 'grep -q "log file $LF/engram.log reopened" "$LF/engram.log" && grep -q "SIGHUP: still serving" "$LF/engram.log.1"'
kill "$SERVE_PID" 2>/dev/null
wait "$SERVE_PID" 2>/dev/null
check "... and the lines after it go to the new file" eval 'grep -q "stopped: served" "$LF/engram.log" && ! grep -q "stopped: served" "$LF/engram.log.1"'
e serve --data "$LF/log2" --log-file "$LF/no/such/dir/engram.log"
check "a --log-file that cannot be opened fails with one line, leaving no log behind" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "log file $LF/no/such/dir/engram.log" && ! [[ -e $LF/log2 ]]'

# --- serve under systemd: sd_notify readiness and stopping, journald priorities, SIGHUP,
# admin actions logged with who did them. Python plays the service manager.
SD=$TMP/sd
mkdir -p "$SD"
out=$(timeout 120 python3 - "$BIN" "$SD" <<'PY' 2>&1
import os, signal, socket, subprocess, sys, time
bin, d = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(os.path.join(d, "notify.sock"))
sock.settimeout(60)
err = open(os.path.join(d, "serve.err"), "w")
st = os.fstat(err.fileno())
env = dict(os.environ, NOTIFY_SOCKET=os.path.join(d, "notify.sock"),
           JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
ep = "ipc://" + os.path.join(d, "s.ipc")
p = subprocess.Popen([bin, "--data", os.path.join(d, "log"), "serve", "--listen", ep,
                      "--notify", "ipc://" + os.path.join(d, "n.ipc")], env=env, stderr=err)
msg = sock.recv(4096).decode()
print("got:", msg.replace("\n", "|"))
assert msg.startswith("READY=1") and f"MAINPID={p.pid}" in msg, msg
def cli(*a):
    return subprocess.run([bin, "--connect", ep, *a], capture_output=True, text=True, timeout=60)
assert cli("topic", "create", "doomed").returncode == 0
p.send_signal(signal.SIGHUP)
time.sleep(0.5)
assert p.poll() is None, "SIGHUP killed the daemon"
r = cli("topic", "drop", "doomed")
assert r.returncode == 0, r.stderr
p.send_signal(signal.SIGTERM)
msg = sock.recv(4096).decode()
assert msg.startswith("STOPPING=1"), msg
print("exit", p.wait(timeout=60))
log = open(os.path.join(d, "serve.err")).read()
print(log)
PY
) rc=$?
check "serve tells the service manager READY=1 with its pid, then STOPPING=1, and exits 0" eval '[[ $rc == 0 ]] && has "$out" "exit 0"'
check "... SIGHUP is logged, not fatal" eval 'has "$out" "sighup: SIGHUP: still serving"'
check "... log lines carry journald priorities when stderr is the journal" eval '[[ $out == *"<6>"*"info  start: engram"* && $out == *"<6>"*"admin: topic_drop"* ]]'
check "... a topic drop is logged with who did it" eval 'has "$out" "admin: topic_drop topic doomed by peer"'

# --- schedules -----------------------------------------------------------------------
e topic create jobs
e schedule add nightly --cron "0 2 * * *" --tz Europe/Paris --topic jobs --type job.nightly --payload '{"n":1}' --header origin=cli
check "schedule add --cron --tz" eval '[[ $rc == 0 && $out == added ]]'
e schedule add five --every 5m --topic jobs --type job.five --missed all --max-catchup 10 --json
check "schedule add --every --json" eval '[[ $rc == 0 && $out == "{\"ok\":true,\"action\":\"schedule add\",\"topic\":\"jobs\"}" ]]'
e schedule add fast --every 500ms --topic jobs --type a
check "schedule add --every under a second names the bound as a duration" \
  eval '[[ $rc == 2 ]] && one_line_err && has "$err" "must be at least 1s"'
e schedule add nightly --every 5m --topic jobs --type a
check "schedule add of an existing name fails with one line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" exists'
e schedule add x --cron "61 * * * *" --topic jobs --type a
check "a bad cron expression is a usage error naming the field" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "minute"'
e schedule add x --cron "0 * * * *" --tz Mars/Olympus --topic jobs --type a
check "an unknown zone is a usage error naming it" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "Mars/Olympus"'
e schedule add "bad name" --every 5m --topic jobs --type a
check "a bad schedule name is a usage error" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "schedule name"'
e schedule add x --every 5m --cron "0 * * * *" --topic jobs --type a
check "both --every and --cron is a usage error" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "not both"'
e schedule add x --topic jobs --type a
check "neither --every nor --cron is a usage error" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "--every or --cron"'
e schedule add x --every 5m --topic jobs
check "schedule add without --type is a usage error" eval '[[ $rc == 2 ]] && one_line_err'
e schedule list --json
check "... and the refused ones left nothing behind" eval '[[ $rc == 0 ]] && ! has "$out" "\"name\":\"x\""'
e schedule list
check "schedule list shows both with their next slot" eval '[[ $rc == 0 ]] && has "$out" "cron 0 2 * * * Europe/Paris" && has "$out" "every 5m" && has "$out" NEXT_SLOT'
e schedule show nightly --json
check "schedule show --json has the config and the fire state" eval '[[ $rc == 0 ]] && has "$out" "\"tz\":\"Europe/Paris\"" && has "$out" "\"headers\":{\"origin\":\"cli\"}" && keys_in_order "$out" $(fields ENGRAM_SCHEDULE_INFO_FIELDS)'
e schedule show nightly
check "schedule show prints last and next fire" eval '[[ $rc == 0 ]] && has "$out" "next slot:" && has "$out" "last fire:"'
e schedule run-now nightly
check "schedule run-now appends at once" eval '[[ $rc == 0 && $out == "fired at offset 1" ]]'
e read jobs --json
check "... with the schedule's headers and a manual key" eval 'has "$out" "\"engram-schedule\":\"nightly\"" && has "$out" "nightly@manual-"'
e schedule pause five
check "schedule pause" eval '[[ $rc == 0 && $out == paused ]]'
e schedule show five --json
check "... shows paused" eval 'has "$out" "\"paused\":1"'
e schedule resume five
check "schedule resume" eval '[[ $rc == 0 && $out == resumed ]]'
e schedule remove five
check "schedule remove" eval '[[ $rc == 0 && $out == removed ]]'
e schedule remove five
check "removing a missing schedule fails with one line" eval '[[ $rc == 1 ]] && one_line_err && has "$err" "no schedule named five"'
SD=$TMP/sched
mkdir -p "$SD"
SEP=ipc://$SD/s.ipc
timeout 120 "$BIN" --data "$DATA" serve --listen "$SEP" --notify "ipc://$SD/n.ipc" 2>"$SD/serve.err" &
SPID=$!
for _ in $(seq 1 100); do
  out=$(timeout 10 "$BIN" --connect "$SEP" schedule list 2>"$TMP/err") rc=$?
  [[ $rc == 0 ]] && break
  sleep 0.1
done
check "schedule list --connect through the daemon" eval '[[ $rc == 0 ]] && has "$out" nightly'
out=$(timeout 60 "$BIN" --connect "$SEP" schedule add hourly --every 1h --topic jobs --type job.hourly 2>"$TMP/err") rc=$?
check "schedule add --connect" eval '[[ $rc == 0 && $out == added ]]'
out=$(timeout 60 "$BIN" --connect "$SEP" schedule add y --cron "* * *" --topic jobs --type a 2>"$TMP/err") rc=$? err=$(cat "$TMP/err")
check "a bad cron expression --connect is the same usage error" eval '[[ $rc == 2 ]] && one_line_err && has "$err" "3 fields"'
out=$(timeout 60 "$BIN" --connect "$SEP" schedule show hourly --json 2>"$TMP/err") rc=$?
check "schedule show --connect" eval '[[ $rc == 0 ]] && has "$out" "\"every_ms\":3600000"'
kill "$SPID" 2>/dev/null
wait "$SPID" 2>/dev/null

echo "test-cli: $((checks - fails)) of $checks checks passed"
((fails == 0))
