#!/usr/bin/env bash
# A rank that fails ends the whole MPI job, with a readable line, never a hang:
# rank 1 throws, holds different data, or is killed with SIGKILL in the middle
# of a 50-epoch fit. Each job must end (non-zero) within the timeout.
#   distributed_failures.sh <mpiexec> <distributed_tests> [mpiexec flags...]
set -uo pipefail
mpiexec=$1
exe=$2
shift 2
status=0
for case in "exception|loom: rank 1 of 2: an injected failure in batch 2" \
            "data|loom: rank 1 of 2: fit: every rank must be given the same data and options, but rank 1's differs from rank 0's: sum of y" \
            "kill|rank 1"; do
  how=${case%%|*}
  expect=${case#*|}
  start=$SECONDS
  out=$(timeout 60 "$mpiexec" "$@" -np 2 "$exe" --fail "$how" 2>&1)
  rc=$?
  if [ "$rc" -eq 124 ]; then
    echo "FAIL $how: the job hung (killed after 60 s)"
    status=1
  elif [ "$rc" -eq 0 ]; then
    echo "FAIL $how: the job exited 0"
    status=1
  elif ! grep -qF -- "$expect" <<< "$out"; then
    echo "FAIL $how: no line with '$expect' in:"
    echo "$out"
    status=1
  else
    echo "ok   $how: exit $rc after $((SECONDS - start)) s; $(grep -F -m1 -- "$expect" <<< "$out")"
  fi
done
exit $status
