#!/usr/bin/env bash
# run-fuzz.sh — builds every tests/fuzz/fuzz_*.c with clang's libFuzzer, ASan and UBSan
# against the library sources, and runs each for $1 seconds (default 20) on its corpus.
# Exits non-zero when a target crashes. New interesting inputs go to build/fuzz-clang/
# <name>-work; with FUZZ_MERGE=1 they are merged (minimised) into tests/fuzz/corpus/<name>.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}
OUT=build/fuzz-clang
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null || { echo "run-fuzz: $CLANG not found (make deps installs it)" >&2; exit 2; }

# Generated protobuf-c code, as the Makefile makes it.
shopt -s nullglob
for proto in schema/*.proto; do
  make -s "build/gen/schema/$(basename "$proto" .proto).pb-c.c" >/dev/null
done

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -pthread -Iinclude -Icommon -I. -Ibuild/gen $SAN"
LIBS="$(pkg-config --libs lmdb libzstd libprotobuf-c libzmq libmicrohttpd 2>/dev/null || echo -llmdb -lzstd -lprotobuf-c -lzmq -lmicrohttpd) -lpthread -lm"

mkdir -p "$OUT/obj"
objs=()
for src in common/*.c log/*.c consumers/*.c api/*.c net/*.c build/gen/schema/*.pb-c.c; do
  obj="$OUT/obj/$(echo "$src" | tr / _).o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ include/engram.h -nt "$obj" ]; then
    "$CLANG" $CFLAGS -fsanitize=fuzzer-no-link -Wno-unused -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done

status=0
for target in tests/fuzz/fuzz_*.c; do
  name=$(basename "$target" .c)
  bin="$OUT/$name"
  extra=() # the sources a target tests outside the library, as the Makefile links them
  case $name in fuzz_json) extra=(cli/json.c) ;; esac
  "$CLANG" $CFLAGS -fsanitize=fuzzer "$target" "${extra[@]}" "${objs[@]}" $LIBS -o "$bin"
  corpus="tests/fuzz/corpus/$name"
  work="$OUT/$name-work"
  mkdir -p "$corpus" "$work"
  echo "fuzzing $name for ${SECS}s"
  if ! "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$OUT/$name-" "$work" "$corpus"; then
    echo "run-fuzz: $name crashed; the input is in $OUT/$name-crash-* (replay: $bin <file>)" >&2
    status=1
    continue
  fi
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    "$bin" -merge=1 "$corpus" "$work" >/dev/null 2>&1
    echo "merged new inputs into $corpus"
  fi
done
exit $status
