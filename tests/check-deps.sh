#!/usr/bin/env bash
# check-deps.sh — fails when an #include points the wrong way between engram's layers.
#
# Layers, lowest first: common -> log -> consumers -> net; cli/, bench/ and bindings/ use
# only include/engram.h (plus headers of their own folder). Generated protobuf-c headers
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
    common/* | log/* | consumers/* | net/* | include/*) echo "${inc%%/*}" ;;
    *) echo "" ;;
  esac
}

violations=0
report() {
  echo "check-deps: $1"
  violations=$((violations + 1))
}

files=$(find common log consumers net cli bench bindings -type f \( -name '*.c' -o -name '*.h' \) \
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
        common | log | consumers) report "$f:$line includes <$inc> ($layer/ must not know about ZeroMQ)" ;;
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
        case $target in consumers | net) report "$f:$line includes $inc from $target/ (log/ must not include $target/)" ;; esac ;;
      consumers)
        [ "$target" = net ] && report "$f:$line includes $inc from net/ (consumers/ must not include net/)" ;;
      cli | bench | bindings)
        if [ "$target" != include ] || [ "$(basename "$inc")" != engram.h ]; then
          report "$f:$line includes $inc from $target/ ($layer/ may use only engram.h)"
        fi ;;
    esac
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' "$f")
done

[ "$violations" -eq 0 ] || exit 1
exit 0
