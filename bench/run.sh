#!/usr/bin/env bash
# run.sh — runs engram's benches in sequence, writes bench/results/*.json, prints the tables.
#
#   BUILD=build bash bench/run.sh [--quick] [NAME...]     (make bench runs it)
#
# NAME is log, groups, net, python or retention (default: all that are built). --quick gives each bench
# short bounds for a smoke run. Each bench prints its table; a summary of the targets
# follows. Logs are created under $TMPDIR (default /tmp): point it at the disk you want
# measured.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RESULTS=bench/results
QUICK=()
NAMES=()
for a in "$@"; do
  case "$a" in
    --quick) QUICK=(--quick) ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    log|groups|net|python|retention) NAMES+=("$a") ;;
    *) echo "run.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
[ ${#NAMES[@]} -gt 0 ] || NAMES=(log groups net python retention)
mkdir -p "$RESULTS"

ran=()
failed=()
for name in "${NAMES[@]}"; do
  out="$RESULTS/$name.json"
  case "$name" in
    python)
      [ -f bench/bench_python.py ] || continue
      if ! ls bindings/python/engram/_engram*.so >/dev/null 2>&1; then
        echo "== bench_python: the binding is not built (make python), skipped"
        continue
      fi
      if ! "${PYTHON:-/usr/bin/python3}" -c 'import celery, redis' >/dev/null 2>&1; then
        echo "== bench_python: Celery or redis-py missing (make bench-deps), skipped"
        continue
      fi
      cmd=("${PYTHON:-/usr/bin/python3}" bench/bench_python.py --engram "$BUILD/engram" --json "$out")
      [ ${#QUICK[@]} -eq 0 ] || cmd+=(--events 5000 --latency-events 300)
      ;;
    *)
      bin="$BUILD/bench/bench_$name"
      if [ ! -x "$bin" ]; then
        echo "== bench_$name: not built ($bin missing), skipped"
        continue
      fi
      cmd=("$bin" --json "$out" "${QUICK[@]}")
      [ "$name" != log ] || cmd+=(--pipelined)
      ;;
  esac
  echo "== ${cmd[*]}"
  start=$(date +%s)
  if "${cmd[@]}"; then
    ran+=("$out")
  else
    failed+=("$name")
    echo "== bench_$name failed" >&2
  fi
  echo "== bench_$name: $(( $(date +%s) - start )) s"
  echo
done

if [ ${#ran[@]} -gt 0 ] && command -v python3 >/dev/null; then
  echo "== targets (ratios measured within each bench's own run; the machine is shared, so"
  echo "   absolute rates drift between runs)"
  python3 - "${ran[@]}" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    try:
        doc = json.load(open(path))
    except Exception as e:  # a bench that died mid-file
        print(f"  {path}: unreadable ({e})")
        continue
    if not isinstance(doc, dict):
        continue
    for r in doc.get("results", []):
        if not isinstance(r, dict):
            continue
        if "target_text" not in r:
            continue
        met = {True: "MET", False: "MISSED", None: "n/a"}[r.get("met")]
        what = f'{r["workload"]} [{r["durability"]}]'
        ratio = f'{r["ratio"]:.3f} x {r["ratio_to"]}' if "ratio" in r else ""
        print(f'  {doc.get("bench", "?"):7} {what:38} {r["events_per_s"]:>12,.0f} ev/s  {ratio:40} '
              f'target {r["target_text"]}: {met}')
EOF
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
