#!/usr/bin/env bash
# demo.sh — what `make run` shows: memory events appended, read back, consumed by a group.
# Safe to run again: events are appended only while the topic holds fewer than 200, and
# the group is created only when missing. Env: BUILD (default build), DATA (default
# ./engram-data), EVENTS (a JSON-lines file of memory events).
set -euo pipefail

BUILD=${BUILD:-build}
DATA=${DATA:-./engram-data}
ENGRAM=("$BUILD/engram" --data "$DATA")
TOPIC=memory
GROUP=indexer
WANT=200

# The sample events live next to the repository, never inside it; EVENTS overrides.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
events=${EVENTS:-$(dirname "$repo")/shared/data/memory-events.jsonl}

step() { printf '\n== %s\n' "$*"; }

# A few memory events in the same shape as the sample file, for when it is absent.
generate() {
  local i type
  for ((i = 1; i <= WANT; i++)); do
    case $((i % 10)) in
      0) type=memory.queried ;;
      5) type=memory.updated ;;
      *) type=memory.saved ;;
    esac
    printf '{"type":"%s","user_id":"demo:user-%d","session":"demo/s%d","ts":"2024-01-12T10:%02d:%02dZ","text":"demo memory number %d","memory_id":"demo:%d","kind":"turn"}\n' \
      "$type" $((i % 3)) $((i / 50 + 1)) $((i / 60 % 60)) $((i % 60)) "$i" "$i"
  done
}

# The topic's event count, 0 when it (or the log) does not exist yet.
count() {
  local out
  out=$("${ENGRAM[@]}" topic show "$TOPIC" --json 2>/dev/null) || {
    echo 0
    return
  }
  out=${out#*\"count\":}
  echo "${out%%,*}"
}

have=$(count)
step "append: $TOPIC holds $have events"
if ((have < WANT)); then
  if [[ -r $events ]]; then
    echo "appending $((WANT - have)) events from $events"
    sed -n "$((have + 1)),${WANT}p;${WANT}q" "$events" |
      "${ENGRAM[@]}" append "$TOPIC" --batch --create
  else
    echo "no $events here: appending generated memory events"
    generate | tail -n +$((have + 1)) | "${ENGRAM[@]}" append "$TOPIC" --batch --create
  fi
else
  echo "already $have events, nothing to append"
fi

step "read: the last 5 events as JSON"
"${ENGRAM[@]}" read "$TOPIC" --last 5 --json

step "topics"
"${ENGRAM[@]}" topics

step "group: $GROUP"
if "${ENGRAM[@]}" group show "$TOPIC" "$GROUP" >/dev/null 2>&1; then
  echo "group $GROUP exists"
else
  "${ENGRAM[@]}" group create "$TOPIC" "$GROUP" --filter 'memory.*' --ack-wait 30s \
    --max-deliver 5 --backoff 1s,5s,30s
fi

step "consume: 10 events for $GROUP, acked with a result"
"${ENGRAM[@]}" consume "$TOPIC" "$GROUP" --consumer demo-worker --count 10 --json \
  --result indexed

step "stat"
"${ENGRAM[@]}" stat
