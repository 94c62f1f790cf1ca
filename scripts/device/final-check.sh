#!/usr/bin/env bash
# final-check.sh: the quickest full check of the CUDA and hybrid code on a lent
# GPU machine: build (no server), the CUDA tests and the placement tests, with
# each test's full output in $OUT/final-check.log and its last line printed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-cuda}
LOG=${OUT:-.}/final-check.log
cd "$ROOT"
source scripts/device/deps-env.sh >/dev/null
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON -DDSINFER_SERVER=OFF >/dev/null &&
  cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -E "error|FAILED"
for t in test_placement test_cpu_moe test_cuda_blocks test_cuda_model test_cuda_hybrid; do
  echo "=== $t" >>"$LOG"
  DS_TEST_DATA=tests/data timeout 120 "$BUILD/tests/$t" >>"$LOG" 2>&1
  echo "$t: rc=$? $(tail -1 "$LOG")"
done
grep -E "FAIL|two GPUs|warm-started|gpu-experts" "$LOG" | grep -v "^dsinfer: note" | head -30
