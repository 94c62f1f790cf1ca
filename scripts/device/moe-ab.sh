#!/usr/bin/env bash
# moe-ab.sh: on a lent GPU machine, A/B of the CPU routed-expert paths in the
# hybrid (--cpu-moe): DSINFER_CPU_MOE_FAST=0 (three jobs per expert) against
# the default small-batch path, alternating, on the 10-layer synth. Not CI.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-cuda}
cd "$ROOT"
source scripts/device/deps-env.sh
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON -DDSINFER_SERVER=OFF >/dev/null &&
  cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -E "error|FAILED"
DS_TEST_DATA=tests/data "$BUILD/tests/test_cpu_moe" | tail -3
DS_TEST_DATA=tests/data "$BUILD/tests/test_cuda_hybrid" 2>&1 | tail -1
[ -f /tmp/ds10.gguf ] || "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m --width full >/dev/null
for i in 1 2; do
  for f in 0 1; do
    echo "-- DSINFER_CPU_MOE_FAST=$f"
    DSINFER_CPU_MOE_FAST=$f "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$(nproc)" -p 0 -n 64 -r 3 \
      --verbose 2>&1 | grep -E "^\| deep|cuda hybrid|host read"
  done
done
