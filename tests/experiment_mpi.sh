#!/usr/bin/env bash
# The experiment under mpiexec -np 2: trains data-parallel with no other
# option, only rank 0 writes, and a job whose rank 0 is killed with SIGKILL
# resumes (--resume) to the same final checkpoint, byte for byte, as a job
# that was never interrupted.
#   experiment_mpi.sh <fashion_mnist_experiment> <scratch dir> <mpiexec> [mpiexec flags...]
set -euo pipefail
exe=$1
work=$2
mpiexec=$3
shift 3
launch=("$mpiexec" "$@" -np 2)
rm -rf "$work"
mkdir -p "$work"
args=(--quick --models 2 --epochs 2 --verbose 2 --threads 1)

timeout 300 "${launch[@]}" "$exe" "${args[@]}" --out "$work/straight" > "$work/straight.log"
grep -q "processes 2, threads 1 each" "$work/straight.log"
[ "$(grep -c '^Epoch 2/2' "$work/straight.log")" = 1 ]  # printed once, by rank 0
test -f "$work/straight/results.json"
grep -q '"processes": 2' "$work/straight/results.json"

# SIGKILL to rank 0 as soon as its first checkpoint exists (after epoch 1): the whole job ends.
timeout 300 "${launch[@]}" "$exe" "${args[@]}" --out "$work/killed" > "$work/killed1.log" 2>&1 &
pid=$!
for _ in $(seq 1200); do
  [ -f "$work/killed/checkpoints/model2.loom" ] && break
  sleep 0.1
done
rank=$(pgrep -P "$pid" | head -1)
kill -KILL "$rank" 2>/dev/null || true
if wait "$pid"; then
  echo "the job whose rank was killed exited 0"
  exit 1
fi
test -f "$work/killed/checkpoints/model2.loom"
timeout 300 "${launch[@]}" "$exe" "${args[@]}" --out "$work/killed" --resume > "$work/killed2.log"
grep -q Resuming "$work/killed2.log"
cmp "$work/straight/checkpoints/model2.loom" "$work/killed/checkpoints/model2.loom"
echo "mpiexec -np 2, rank 0 killed + --resume: same final checkpoint as the straight run"
