#!/usr/bin/env bash
# run-tests.sh — runs every built C test, the exported-symbols check, every fuzz corpus
# replay, the C examples, the CLI script and the Python tests, each under a timeout in a
# fresh temporary directory, and prints one tally line.
#
# Environment: BUILD (build or build/san, default build), ENGRAM_TEST_TIMEOUT (seconds per
# unit, default 120; Python units: ENGRAM_PY_TIMEOUT, default 300; the NATS mirror units: ENGRAM_MIRROR_TIMEOUT, default 300; the slowest unit takes about 15 s under the sanitizers), ONLY (run only units whose name contains it), VERBOSE=1 (print
# every unit's output, not only failing ones), ENGRAM_KEEP_TMP=1 (keep temp dirs).
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
TIMEOUT=${ENGRAM_TEST_TIMEOUT:-120}
ONLY=${ONLY:-}
VERBOSE=${VERBOSE:-0}

root=$(mktemp -d "${TMPDIR:-/tmp}/engram-tests.XXXXXX") || exit 2
cleanup() {
  if [ -n "${ENGRAM_KEEP_TMP:-}" ]; then echo "kept $root"; else rm -rf "$root"; fi
}
trap cleanup EXIT

passed=0
failed=0
failures=()

# run_unit NAME CMD...: runs CMD in a fresh temp dir (exported as ENGRAM_TEST_TMP and
# TMPDIR) under the timeout, from the repo root, and records the result.
run_unit() {
  local name=$1
  shift
  if [ -n "$ONLY" ] && [[ $name != *"$ONLY"* ]]; then return; fi
  local dir out start end rc secs
  dir=$(mktemp -d "$root/${name//\//_}.XXXXXX")
  out="$dir.out"
  start=$(date +%s%N)
  ENGRAM_TEST_TMP=$dir TMPDIR=$dir timeout -k 10 "$TIMEOUT" "$@" >"$out" 2>&1
  rc=$?
  end=$(date +%s%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'PASS  %-40s %6ss\n' "$name" "$secs"
    [ "$VERBOSE" = 1 ] && cat "$out"
  else
    failed=$((failed + 1))
    failures+=("$name")
    local why="exit $rc"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="timed out after ${TIMEOUT}s"
    printf 'FAIL  %-40s %6ss  (%s)\n' "$name" "$secs" "$why"
    if [ "$VERBOSE" = 1 ]; then
      cat "$out"
    else
      # The output without the lines of passing test cases, at most its last 70 lines.
      grep -vE '^\[ RUN      \]|^\[       OK \]' "$out" | tail -n 70 | sed 's/^/      /'
    fi
  fi
  rm -rf "$dir"
}

# C unit and integration tests.
if [ -d "$BUILD/tests" ]; then
  for t in "$BUILD"/tests/test_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    case $t in *.o | *.d) continue ;; esac
    case $t in
      # The power-cut run replays hundreds of crash images: more time on a loaded machine.
      */test_powercut) TIMEOUT=${ENGRAM_PC_TIMEOUT:-300} run_unit "$(basename "$t")" "$t" ;;
      *) run_unit "$(basename "$t")" "$t" ;;
    esac
  done
fi

# Only engram_* names are visible in libengram.so and libengram.a.
if [ -f "$BUILD/libengram.so" ] && [ -f "$BUILD/libengram.a" ]; then
  run_unit symbols env BUILD="$BUILD" bash tests/check-symbols.sh
fi

# Fuzz corpora, replayed by a plain main so no clang is needed.
if [ -d "$BUILD/fuzz" ]; then
  for r in "$BUILD"/fuzz/*-replay; do
    [ -f "$r" ] && [ -x "$r" ] || continue
    name=$(basename "$r" -replay)
    corpus="tests/fuzz/corpus/$name"
    if [ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ]; then
      run_unit "fuzz/$name" "$r" "$corpus"
    else
      failed=$((failed + 1))
      failures+=("fuzz/$name")
      printf 'FAIL  %-40s         (no corpus in %s)\n' "fuzz/$name" "$corpus"
    fi
  done
fi

# The C programs of examples/, run as a user runs them (one against `engram serve`).
if [ -f examples/run-examples.sh ] && [ -x "$BUILD/examples/producer" ]; then
  run_unit examples env BUILD="$BUILD" bash examples/run-examples.sh
fi

# The engram command end to end, as a user runs it.
if [ -f cli/test-cli.sh ] && [ -x "$BUILD/engram" ]; then
  run_unit cli env BUILD="$BUILD" bash cli/test-cli.sh
fi

# The NATS mirror against real nats-server processes (a 3-node JetStream cluster): the
# mirror and nodes killed, restore, serve's mirror, auth and TLS (mirror); restores while
# a replica catches up (mirror/lag).
if [ -f cli/test-mirror.sh ] && [ -x "$BUILD/engram" ] && command -v nats-server >/dev/null; then
  TIMEOUT=${ENGRAM_MIRROR_TIMEOUT:-300} run_unit mirror env BUILD="$BUILD" MIRROR_PART=main \
    bash cli/test-mirror.sh
  TIMEOUT=${ENGRAM_MIRROR_TIMEOUT:-300} run_unit mirror/lag env BUILD="$BUILD" MIRROR_PART=lag \
    bash cli/test-mirror.sh
fi

# make install / uninstall into a staging directory: man pages, completion, unit, config.
if [ -f tests/check-install.sh ] && [ -x "$BUILD/engram" ]; then
  run_unit install env BUILD="$BUILD" bash tests/check-install.sh
fi

# The examples of README.md and docs/*.md marked runnable, run as written.
if [ -f tests/check-docs.py ] && [ -x "$BUILD/engram" ]; then
  run_unit docs env BUILD="$BUILD" /usr/bin/python3 tests/check-docs.py
fi


# Python tests, when the binding and its tests exist.
if [ -d tests/python ]; then
  if [ ! -d bindings/python ]; then
    echo "SKIP  python (bindings/python does not exist)"
  else
    # The first python3 on PATH, else the system's (e.g. when a pyenv shim without pytest
    # comes first); the tests build the extension for the interpreter that runs them.
    py=""
    for cand in python3 /usr/bin/python3; do
      if "$cand" -m pytest --version >/dev/null 2>&1; then
        py=$cand
        break
      fi
    done
    if [ -z "$py" ]; then
      echo "SKIP  python (no python3 with pytest: apt-get install python3-pytest)"
    else
      # Four units, each under its own timeout (ENGRAM_PY_TIMEOUT, default 300 s): the
      # package, the task runtime, the daemon's HTTP, and the seed systems' ported examples.
      # A test still running after 100 s has the stack of every Python thread printed,
      # so that a hang names itself before the unit's timeout ends it.
      export PYTHONPATH="$PWD/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
      pytest_cmd=("$py" -m pytest -q -o faulthandler_timeout=100)
      TIMEOUT=${ENGRAM_PY_TIMEOUT:-300} run_unit python "${pytest_cmd[@]}" tests/python \
        --ignore=tests/python/seeds --ignore=tests/python/test_tasks.py \
        --ignore=tests/python/test_http.py --ignore=tests/python/test_top.py
      TIMEOUT=${ENGRAM_PY_TIMEOUT:-300} run_unit python/tasks "${pytest_cmd[@]}" \
        tests/python/test_tasks.py
      # The daemon's HTTP with a real Chromium, Prometheus and tmux.
      TIMEOUT=${ENGRAM_PY_TIMEOUT:-300} run_unit python/http "${pytest_cmd[@]}" \
        tests/python/test_http.py tests/python/test_top.py
      TIMEOUT=${ENGRAM_PY_TIMEOUT:-300} run_unit python/seeds "${pytest_cmd[@]}" tests/python/seeds
    fi
  fi
fi

if [ "$failed" -gt 0 ]; then echo "failed: ${failures[*]}"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
