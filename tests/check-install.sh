#!/usr/bin/env bash
# check-install.sh — `make install` into a staging directory with a multiarch LIBDIR, as a
# Debian package would: the libraries where LIBDIR says (and engram.pc saying so), a man
# page per command of `engram --help`, bash and zsh completion, the example config (which
# `engram serve` accepts) and the systemd unit; then `make uninstall` leaves no file.
# Usage: BUILD=build bash tests/check-install.sh
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
T=$(mktemp -d)
trap 'kill "$SP" 2>/dev/null; rm -rf "$T"' EXIT
SP=
fails=0
ok() { printf 'ok   %s\n' "$1"; }
bad() {
  printf 'FAIL %s\n' "$1"
  fails=$((fails + 1))
}
check() { # check NAME COMMAND...
  local name=$1
  shift
  if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi
}
command -v help2man >/dev/null || {
  echo "SKIP check-install: no help2man (apt-get install help2man)"
  exit 0
}
MA=lib/x86_64-linux-gnu
ST=$T/stage
args=(DESTDIR="$ST" PREFIX=/usr LIBDIR=/usr/$MA BUILD="$BUILD")
# The sanitizer build installs with the flags it was built with (nothing is rebuilt).
[[ $BUILD == */san ]] && args+=(SAN=1)
make -s install "${args[@]}" >"$T/install.log" 2>&1 || {
  cat "$T/install.log"
  exit 1
}
check "libraries in the multiarch LIBDIR" test -f "$ST/usr/$MA/libengram.so.0" -a -f "$ST/usr/$MA/libengram.a"
check "engram.pc names that LIBDIR" grep -qx "libdir=/usr/$MA" "$ST/usr/$MA/pkgconfig/engram.pc"
missing=""
for cmd in $("$BUILD/engram" --help | sed -n '/^commands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }'); do
  [[ -f $ST/usr/share/man/man1/engram-$cmd.1 ]] || missing+=" $cmd"
done
check "a man page for every command (missing:${missing:-none})" test -z "$missing"
check "engram.1 lists the commands" grep -q consume "$ST/usr/share/man/man1/engram.1"
check "engram-consume.1 is its help text" grep -q -- 'consumer NAME' "$ST/usr/share/man/man1/engram-consume.1"
if command -v man >/dev/null; then
  check "the pages render" bash -c "man -l '$ST/usr/share/man/man1/engram-serve.1' | grep -q allow-keys-file"
fi
check "bash completion installed" test -f "$ST/usr/share/bash-completion/completions/engram"
# bash: _engram called as bash calls it, with COMP_WORDS / COMP_CWORD of each line.
bcomp() { # bcomp WORD...: the completions of the last word
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _engram
    echo "${COMPREPLY[*]}"' - "$ST/usr/share/bash-completion/completions/engram" "$BUILD/engram" "$@"
}
check "bash completion completes commands" test "$(bcomp con)" = consume
check "... a command's options" test "$(bcomp consume t g --con)" = --consumer
check "... subcommands alone right after their command" test "$(bcomp group '')" = "consumers create delete list reset show"
check "... a subcommand's own options" test "$(bcomp group create t g --ack)" = --ack-wait
check "... the command after global options and their values" test "$(bcomp --data /tmp con)" = consume
check "... the values of --durability" test "$(bcomp --durability '')" = "sync nometasync async"
check "... serve's --log-file" test "$(bcomp serve --log-f)" = --log-file
check "zsh completion installed" test -f "$ST/usr/share/zsh/vendor-completions/_engram"
# zsh: typed into an interactive zsh with compinit on a pseudo-terminal, then TAB
# (tests/zsh-complete.zsh); a completed line shows as <BUF:...>, choices as a list.
if command -v zsh >/dev/null; then
  mkdir -p "$T/zc"
  repo=$PWD bindir=$(cd "$BUILD" && pwd)
  zout=$(cd "$T/zc" && printf '%s\n' 'engram con' 'engram consume t g --con' 'engram group ' \
    'engram group create t g --ack' 'engram --data /tmp con' 'engram --durability ' \
    'engram serve --log-f' | timeout 120 zsh -f "$repo/tests/zsh-complete.zsh" \
    "$ST/usr/share/zsh/vendor-completions" "$bindir" 2>&1)
  zcase() { # zcase LINE: what the terminal showed for LINE
    printf '%s\n' "$zout" | awk -v l="== $1" '$0 == l { on = 1; next } /^== / { on = 0 } on'
  }
  check "zsh completion completes commands" grep -qF '<BUF:engram consume >' <<<"$(zcase 'engram con')"
  check "... a command's options" grep -qF '<BUF:engram consume t g --consumer >' <<<"$(zcase 'engram consume t g --con')"
  check "... lists the subcommands right after their command" \
    grep -qE 'consumers +create +delete +list +reset +show' <<<"$(zcase 'engram group ')"
  check "... a subcommand's own options" grep -qF '<BUF:engram group create t g --ack-wait >' <<<"$(zcase 'engram group create t g --ack')"
  check "... the command after global options and their values" \
    grep -qF '<BUF:engram --data /tmp consume >' <<<"$(zcase 'engram --data /tmp con')"
  check "... lists the values of --durability" grep -qE 'async +nometasync +sync' <<<"$(zcase 'engram --durability ')"
  check "... serve's --log-file" grep -qF '<BUF:engram serve --log-file >' <<<"$(zcase 'engram serve --log-f')"
else
  echo "SKIP zsh completion checks: no zsh (apt-get install zsh)"
fi
check "the unit file runs the installed engram with readiness" \
  grep -q '^ExecStart=/usr/bin/engram serve' "$ST/usr/share/doc/engram/engram.service"
check "... Type=notify" grep -qx 'Type=notify' "$ST/usr/share/doc/engram/engram.service"
# The example config as shipped: serve starts with it (data and listen overridden).
"$BUILD/engram" serve --config "$ST/usr/share/doc/engram/engram.conf.example" --data "$T/log" \
  --listen "ipc://$T/s.ipc" --notify "ipc://$T/n.ipc" 2>"$T/serve.err" &
SP=$!
for _ in $(seq 1 300); do
  grep -q 'listen: requests on' "$T/serve.err" && break
  kill -0 "$SP" 2>/dev/null || break
  sleep 0.1
done
check "serve accepts the example config" grep -q 'listen: requests on' "$T/serve.err"
kill "$SP" 2>/dev/null
wait "$SP" 2>/dev/null
SP=
make -s uninstall "${args[@]}" >/dev/null 2>&1
left=$(find "$ST" -type f | head -5)
check "make uninstall removes every file (left: ${left:-none})" test -z "$left"
echo "check-install: $fails failures"
((fails == 0))
