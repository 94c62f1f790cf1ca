#!/usr/bin/env bash
# hybrid-check.sh: on a lent GPU machine, builds with CUDA, runs the placement
# and hybrid tests, and benchmarks the 10-layer full-width synth all on the
# GPU and with the routed experts on the CPU (--cpu-moe), logging to
# $OUT/hybrid-check.log. Not CI. STAGES="build test bench" picks stages.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-cuda}
LOG=${OUT:-.}/hybrid-check.log
STAGES=${STAGES:-"build test bench"}
THREADS=${THREADS:-$(nproc)}
exec > >(tee -a "$LOG") 2>&1
has() { [[ " $STAGES " == *" $1 "* ]]; }
stage() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }
cd "$ROOT"
stage deps
source "$ROOT/scripts/device/deps-env.sh"
if has build; then
  stage build
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON -DDSINFER_SERVER=OFF >/dev/null &&
    cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -E "error|FAILED" ; echo "build done"
fi
if has test; then
  stage "tests: placement, hybrid, cuda model"
  (cd "$ROOT" && DS_TEST_DATA="$ROOT/tests/data" "$BUILD/tests/test_placement" | tail -4)
  (cd "$ROOT" && DS_TEST_DATA="$ROOT/tests/data" "$BUILD/tests/test_cuda_hybrid" 2>&1 | grep -v "^dsinfer: note")
fi
if has bench; then
  stage "bench: ds10 all on the GPU, then --cpu-moe -t $THREADS"
  [ -f /tmp/ds10.gguf ] || "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m --width full >/dev/null
  "$BUILD/dsinfer" bench -m /tmp/ds10.gguf --device cuda -p 512 -n 128 -r 3 2>&1 | grep -v "^.cuda: loading"
  "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$THREADS" -p 0 -n 64 -r 3 --verbose 2>&1 | grep -v "^.cuda: loading"
  for g in 64 128 256; do
    echo "-- --gpu-experts $g (hot experts of each CPU layer cached on the GPU)"
    "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe --gpu-experts $g -t "$THREADS" -p 0 -n 128 -r 2 --verbose 2>&1 | grep -E "^\| deep|cuda hybrid|cuda: hot"
  done
  echo "-- prefill with the experts streamed to the GPU (micro-batches of 32+ rows), -ub 512 and 2048"
  "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$THREADS" -p 512 -n 0 -r 3 --verbose 2>&1 | grep -E "^\||cuda hybrid"
  "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$THREADS" -p 2048 -ub 2048 -n 0 -r 2 --verbose 2>&1 | grep -E "^\||cuda hybrid"
  echo "-- prefill with the experts on the CPU (DSINFER_STREAM_ROWS=0)"
  DSINFER_STREAM_ROWS=0 "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$THREADS" -p 512 -n 0 -r 2 --verbose 2>&1 | grep -E "^\||cuda hybrid"
fi
stage done
