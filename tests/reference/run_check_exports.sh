#!/bin/bash
# ctest's keras_reference_exports: check_exports.py run by the reference
# environment's python (scripts/reference-env: Keras 3 and tf-keras; its
# folder from LOOM_REFERENCE_VENV, or LOOM_BUILD_DIR/reference-venv). Skipped
# (77) when there is no ready environment: it is never created from here.
#
#   run_check_exports.sh CORPUS_TOOL WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=$("$here/../../scripts/reference-env" --python 2>/dev/null) || {
  echo "skipped: no reference environment (scripts/reference-env creates one)"
  exit 77
}
exec "$python" "$here/check_exports.py" --corpus-tool "$1" --work "$2"
