#!/bin/sh
# The header check's compiler launcher: runs the compile command it is given
# (which has -fsyntax-only, so the compiler writes no object file), then
# creates the empty object file the build expects. Usage: syntax_only.sh CXX ARGS...
"$@" || exit
while [ $# -gt 1 ]; do
  if [ "$1" = -o ]; then
    : >"$2"
    exit 0
  fi
  shift
done
