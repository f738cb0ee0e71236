# Shared by scripts/run-tests and scripts/run-experiment: install what is
# missing from Debian's packages, then configure and build loom.
set -euo pipefail

LOOM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${LOOM_BUILD_DIR:-$LOOM_ROOT/build}"

# Everything loom's build, tests, example and benchmarks use, all from Debian.
LOOM_PACKAGES=(g++ cmake ninja-build libeigen3-dev doctest-dev libbenchmark-dev zlib1g-dev libcli11-dev
               nlohmann-json3-dev gnuplot-nox dataset-fashion-mnist libhdf5-dev libzip-dev pkg-config
               python3-h5py python3-numpy libopenmpi-dev openmpi-bin libonnx-dev libprotobuf-dev python3-onnx)

ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing missing packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# configure_and_build [cmake -D options...] [-- targets...]: everything, or only the targets named.
configure_and_build() {
  local options=() targets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do options+=("$1"); shift; done
  [ $# -gt 0 ] && shift && targets=("$@")
  cmake -S "$LOOM_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "${options[@]}"
  if [ ${#targets[@]} -eq 0 ]; then
    cmake --build "$BUILD_DIR" --parallel "$(nproc)"
  else
    cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target "${targets[@]}"
  fi
}
