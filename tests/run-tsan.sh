#!/usr/bin/env bash
# run-tsan.sh TEST... — runs C tests (the commit path, the write-ahead file, the
# consumer groups: the list is `make tsan`'s) under ThreadSanitizer, built by `make tsan`
# into $BUILD (build/tsan by default). A data race reported in engram's code fails the
# run and prints the report.
# Left out: tests that fork a child while threads run (TSan's child then exits 66 on its
# own report of the fork) and those that talk to `engram serve` (libzmq's threads).
# Lock-order reports are off: the cycles they name cannot close (tests/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/tsan}
TESTS=("$@")
logs=$(mktemp -d)
failed=0
for t in "${TESTS[@]}"; do
  tmp=$(mktemp -d)
  start=$(date +%s)
  ENGRAM_TEST_TMP=$tmp \
    TSAN_OPTIONS="halt_on_error=1 exitcode=66 detect_deadlocks=0 suppressions=$PWD/tests/tsan.supp log_path=$logs/$t" \
    timeout 900 "$BUILD/tests/$t" >"$logs/$t.out" 2>&1
  rc=$?
  rm -rf "$tmp"
  if [ $rc = 0 ]; then
    printf 'PASS  %-30s %4ss\n' "$t" "$(($(date +%s) - start))"
  else
    failed=$((failed + 1))
    printf 'FAIL  %-30s exit %s\n' "$t" "$rc"
    cat "$logs/$t".* 2>/dev/null | head -n 60 | sed 's/^/      /'
    tail -n 15 "$logs/$t.out" | sed 's/^/      /'
  fi
done
rm -rf "$logs"
echo "tsan: ${#TESTS[@]} tests, $failed failed"
[ $failed = 0 ]
