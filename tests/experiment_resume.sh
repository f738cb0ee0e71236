#!/usr/bin/env bash
# Killed at any moment, the experiment resumes and ends with the same weights:
# a straight run, a run killed with SIGKILL then resumed, and a run stopped by
# Ctrl-C (SIGINT) then resumed must leave byte-identical checkpoints.
#   experiment_resume.sh <fashion_mnist_experiment> <scratch dir>
set -euo pipefail
exe=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
args=(--quick --models 2 --epochs 3 --verbose 0 --threads 2)

"$exe" "${args[@]}" --out "$work/straight" > "$work/straight.log"

# SIGKILL in the middle of training (loading takes ~2 s, an epoch ~3 s), then resume.
"$exe" "${args[@]}" --out "$work/killed" > "$work/killed1.log" 2>&1 &
pid=$!
sleep 6
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" || true
"$exe" "${args[@]}" --out "$work/killed" --resume > "$work/killed2.log"
cmp "$work/straight/checkpoints/model2.loom" "$work/killed/checkpoints/model2.loom"
echo "SIGKILL + --resume: same final checkpoint as the straight run ($(grep -c Resuming "$work/killed2.log") resume)"

# Ctrl-C: stops after the current batch, writes a checkpoint, says how to resume, exits 130.
"$exe" "${args[@]}" --out "$work/int" > "$work/int1.log" 2> "$work/int1.err" &
pid=$!
sleep 6
kill -INT "$pid" 2>/dev/null || true
set +e
wait "$pid"
rc=$?
set -e
if [ "$rc" -eq 130 ]; then
  grep -q -- "rerun with the same options and --resume" "$work/int1.err"
  [ "$(wc -l < "$work/int1.err")" -eq 1 ]
  "$exe" "${args[@]}" --out "$work/int" --resume > "$work/int2.log"
  echo "SIGINT: exit 130 with one line: $(cat "$work/int1.err")"
else
  [ "$rc" -eq 0 ]  # it had finished before the signal came
  echo "SIGINT came after the run had finished (exit $rc)"
fi
cmp "$work/straight/checkpoints/model2.loom" "$work/int/checkpoints/model2.loom"
echo "SIGINT + --resume: same final checkpoint as the straight run"
