#!/usr/bin/env zsh -f
# zsh-complete.zsh — completion in a real interactive zsh, as a user gets it: a zsh on a
# pseudo-terminal (zpty) with compinit and the _engram in FPATH_DIR; each line of stdin is
# typed, then TAB, and what the terminal showed (the completed line as <BUF:...>, and any
# list of choices) is printed after "== LINE". Usage: zsh -f tests/zsh-complete.zsh
# FPATH_DIR BIN_DIR < lines  (BIN_DIR holds the `engram` to complete; run it in an empty
# directory: file names are offered too).
zmodload zsh/zpty || exit 2
fdir=$1 bdir=$2
zpty z env PATH="$bdir:$PATH" TERM=dumb HOME="$PWD" zsh -f -i
zpty -w z "PS1='>'; fpath=($fdir \$fpath); autoload -Uz compinit; compinit -u -d $PWD/.zcompdump;" \
  "setopt nobeep; zstyle ':completion:*' list-prompt ''; show() { print -r -- \"<BUF:\$BUFFER>\" };" \
  "zle -N show; bindkey '^T' show; print READY"
zpty -r z out '*READY*' || exit 2
while IFS= read -r line; do
  print -r -- "== $line"
  zpty -w -n z "$line"$'\t\x14'   # the line, TAB, then ^T: show the buffer
  out=
  zpty -r z out '*<BUF:*>*' || { print "no answer"; exit 1; }
  print -r -- "${out//$'\r'/}"
  zpty -w -n z $'\x15'            # ^U: an empty line for the next one
done
zpty -d z
