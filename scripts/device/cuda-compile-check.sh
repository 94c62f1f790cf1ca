#!/usr/bin/env bash
# cuda-compile-check.sh [BUILD_DIR]: what CI can do for the CUDA backend
# without a GPU — configure with -DDSINFER_CUDA=ON, compile everything (sm_90a
# and sm_120 device code), and run the CUDA tests, which exit 77 and count as
# skipped when no device is visible. Skips itself (exit 0) without nvcc.
# Not the GPU run: scripts/device/gpu-check.sh does that on a lent machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "cuda-compile-check: no nvcc, skipped"
  exit 0
fi
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
dir=${1:-build-cuda}
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON >/dev/null
cmake --build "$dir" -j"$(nproc)"
# the CUDA tests' ctest output goes to a log (all of them skip without a GPU);
# one line says how they ended
log="$dir/ctest-cuda.log"
if ! ctest --test-dir "$dir" -R test_cuda --output-on-failure >"$log" 2>&1; then cat "$log"; exit 1; fi
echo "cuda-compile-check: built; $(grep -cE 'Test +#[0-9]+: .*(Skipped|Passed)' "$log") CUDA tests ran without a GPU (skip, exit 77) - see $log"
