#!/usr/bin/env bash
# gen-man.sh — man pages from the help texts (help2man), so they never drift: engram.1
# from `engram --help` and engram-COMMAND.1 from `engram COMMAND --help`, its NAME line
# the command's summary in `engram --help`.
# Usage: bash cli/gen-man.sh BUILD/engram OUTDIR VERSION
set -euo pipefail
bin=$1 out=$2 version=$3
command -v help2man >/dev/null || {
  echo "gen-man: help2man is missing (apt-get install help2man, or make deps)" >&2
  exit 1
}
mkdir -p "$out"
help2man -N --no-discard-stderr --version-string="$version" \
  -n "a durable event log with consumer groups" -o "$out/engram.1" "$bin"
# The "commands:" block of engram --help: "  NAME  summary" lines up to the blank line.
"$bin" --help | sed -n '/^commands:/,/^$/p' | sed '1d;/^$/d' |
  while read -r cmd summary; do
    help2man -N --no-discard-stderr --version-string="$version" -n "$summary" \
      -o "$out/engram-$cmd.1.tmp" "$bin $cmd"
    # The page's title is the command's own (engram-append), as man engram-append finds it.
    sed "s/^\.TH ENGRAM /.TH ENGRAM-${cmd^^} /" "$out/engram-$cmd.1.tmp" >"$out/engram-$cmd.1"
    rm -f "$out/engram-$cmd.1.tmp"
  done
