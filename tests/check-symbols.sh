#!/usr/bin/env bash
# check-symbols.sh — the libraries a user links show only engram_* names: the dynamic
# symbols libengram.so defines and the global symbols libengram.a defines are exactly the
# public functions of include/engram.h (generated protobuf-c code, engram__*, included
# among the forbidden). Prints each stray name; exits 1 when there is one.
#
# Environment: BUILD (build or build/san, default build).
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
status=0

# The public names: every function declared in the header.
public=$(grep -oE '^ENGRAM_API [^(]*\bengram_[a-z0-9_]+\(' include/engram.h |
  grep -oE 'engram_[a-z0-9_]+' | sort -u)
if [ -z "$public" ]; then
  echo "check-symbols: no ENGRAM_API declarations found in include/engram.h" >&2
  exit 2
fi

# check WHAT NAMES: every name must be a public one, and every public one must be there.
check() {
  local what=$1 names=$2
  local stray missing
  stray=$(comm -23 <(echo "$names" | sort -u) <(echo "$public"))
  missing=$(comm -13 <(echo "$names" | sort -u) <(echo "$public"))
  if [ -n "$stray" ]; then
    echo "$what exports $(echo "$stray" | wc -l) name(s) that are not public:"
    echo "$stray" | head -n 50 | sed 's/^/  /'
    status=1
  fi
  if [ -n "$missing" ]; then
    echo "$what lacks $(echo "$missing" | wc -l) public function(s) of include/engram.h:"
    echo "$missing" | sed 's/^/  /'
    status=1
  fi
  [ -z "$stray" ] && [ -z "$missing" ] && echo "$what: $(echo "$names" | wc -l) names, all public"
}

for f in "$BUILD/libengram.so" "$BUILD/libengram.a"; do
  if [ ! -f "$f" ]; then
    echo "check-symbols: $f not built (run make)" >&2
    exit 2
  fi
done
check "$BUILD/libengram.so" "$(nm -D --defined-only "$BUILD/libengram.so" | awk 'NF == 3 { print $3 }')"
check "$BUILD/libengram.a" "$(nm -g --defined-only "$BUILD/libengram.a" | awk 'NF == 3 { print $3 }')"
exit $status
