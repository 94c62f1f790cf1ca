#!/usr/bin/env bash
# build.sh [BUILD_DIR] [extra cmake args...]: configure and build dsinfer
# (Release) into BUILD_DIR (default build/), installing packages if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
