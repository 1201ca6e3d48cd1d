#!/usr/bin/env bash
# check-deps.sh — fails when an #include points the wrong way between engram's layers.
#
# Layers, lowest first: common -> log -> consumers -> api -> net; each may include the
# layers below it (log/ only common/; net/ reaches the others through api/api.h); cli/,
# bench/ and bindings/ use only include/engram.h (plus headers of their own folder).
# Also: the exported engram_* functions are defined only in api/ (and the error table's
# in common/errors.c), so each public call is written once, over every backend. Generated protobuf-c headers
# (build/gen/schema/*.pb-c.h) count as the "schema" layer. Nothing below net/ knows about
# ZeroMQ. Each violation is reported on one line; the exit status is 1 when there is any.
set -u
cd "$(dirname "$0")/.." || exit 2

# Where a quoted or angle include resolves, as the project folder it lands in
# ("include", "common", "log", ..., "schema"), or "" for a header outside the project.
# Quoted includes search the including file's folder first, then the -I paths in the
# Makefile's order: the layer's own folder (-Ibench for bench/), include, common, .,
# build/gen.
resolve() {
  local file=$1 inc=$2 quoted=$3 base path
  local bases=("${file%%/*}" include common . build/gen)
  [ "$quoted" = 1 ] && bases=("$(dirname "$file")" "${bases[@]}")
  for base in "${bases[@]}"; do
    path="$base/$inc"
    if [ -f "$path" ]; then
      path=$(realpath --relative-to=. "$path")
      case $path in
        build/*/gen/schema/* | build/gen/schema/*) echo schema ;;
        ../* | /*) echo "" ;;
        *) echo "${path%%/*}" ;;
      esac
      return
    fi
  done
  # Not built yet or not present: judge by its spelling.
  case $inc in
    schema/*.pb-c.h | *.pb-c.h) echo schema ;;
    common/* | log/* | consumers/* | api/* | net/* | include/*) echo "${inc%%/*}" ;;
    *) echo "" ;;
  esac
}

violations=0
report() {
  echo "check-deps: $1"
  violations=$((violations + 1))
}

files=$(find common log consumers api net cli bench bindings -type f \( -name '*.c' -o -name '*.h' \) \
  -not -path '*/build/*' 2>/dev/null | sort)

for f in $files; do
  layer=${f%%/*}
  while IFS= read -r hit; do
    line=${hit%%:*}
    text=${hit#*:}
    if [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]]; then
      inc=${BASH_REMATCH[1]}
      quoted=1
    elif [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\<([^\>]+)\> ]]; then
      inc=${BASH_REMATCH[1]}
      quoted=0
    else
      continue
    fi
    if [ "$inc" = zmq.h ] || [ "$inc" = zmq_utils.h ] || [ "$inc" = czmq.h ]; then
      case $layer in
        common | log | consumers | api) report "$f:$line includes <$inc> ($layer/ must not know about ZeroMQ)" ;;
      esac
      continue
    fi
    target=$(resolve "$f" "$inc" "$quoted")
    [ -n "$target" ] || continue
    [ "$target" = "$layer" ] && continue
    case $layer in
      common)
        [ "$target" = include ] || report "$f:$line includes $inc from $target/ (common/ depends on nothing)" ;;
      log)
        case $target in consumers | api | net) report "$f:$line includes $inc from $target/ (log/ may include only common/)" ;; esac ;;
      consumers)
        case $target in api | net) report "$f:$line includes $inc from $target/ (consumers/ may include only log/ and common/)" ;; esac ;;
      api)
        [ "$target" = net ] && report "$f:$line includes $inc from net/ (api/ may include only consumers/, log/ and common/)" ;;
      net)
        case $target in log | consumers) report "$f:$line includes $inc from $target/ (net/ reaches the layers below through api/api.h)" ;; esac ;;
      cli | bench | bindings)
        if [ "$target" != include ] || [ "$(basename "$inc")" != engram.h ]; then
          report "$f:$line includes $inc from $target/ ($layer/ may use only engram.h)"
        fi ;;
    esac
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' "$f")
done

# Public functions defined outside api/: a definition is a line at column 0 that names
# engram_x( and does not end its declaration with ';'.
for f in $(find common log consumers net -name '*.c' -not -path '*/build/*' | sort); do
  [ "$f" = common/errors.c ] && continue
  while IFS= read -r hit; do
    report "$f:${hit%%:*} defines ${hit#*:} (public functions are defined only in api/)"
  done < <(grep -nE '^[a-z][a-z_ ]*[ *]engram_[a-z0-9_]+\(' "$f" | grep -v ';[[:space:]]*$' |
    sed -E 's/^([0-9]+):.*(engram_[a-z0-9_]+)\(.*/\1:\2/')
done

[ "$violations" -eq 0 ] || exit 1
exit 0
