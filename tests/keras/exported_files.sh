#!/bin/bash
# Files loom writes for Keras, checked by readers that are not loom: a real
# Keras model goes through loom (keras_tool convert) into both formats; each
# output must have the structure Keras's loaders read (check_structure.py,
# h5py) and predict, read by the independent numpy reference, what loom
# predicts (reference_check.py). Exit 77 (skipped) without the models or h5py.
#
#   exported_files.sh KERAS_TOOL MODELS_DIR WORK_DIR
set -euo pipefail
tool=$1 models=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
[ -d "$models" ] || { echo "skipped: no Keras models at $models"; exit 77; }
"$python" -c 'import h5py, numpy' 2>/dev/null || { echo "skipped: $python cannot import h5py and numpy"; exit 77; }
rm -rf "$work" && mkdir -p "$work"
for source in fmnist_k3.9.2_bn_shiti.keras fmnist_k2.1.6_bn_evanchien.h5; do
  for ext in keras h5; do
    out="$work/${source%.*}.loom.$ext"
    "$tool" convert "$models/$source" "$out"
    "$python" "$here/check_structure.py" "$out"
    "$python" "$here/reference_check.py" "$out" --count 1000 --tool "$tool"
  done
done
