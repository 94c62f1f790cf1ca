#!/usr/bin/env bash
# gemm-check.sh: the tensor-core prefill GEMM on a lent GPU machine — build
# (no server), its tests and the CUDA model tests, then prefill/decode on the
# 2- and 10-layer full-width synths with the GEMM on and off (A/B in one job,
# same card), and the prefill stage profile. Log: $OUT/gemm-check.log.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-/tmp/build-gemm}
LOG=${OUT:-.}/gemm-check.log
exec > >(tee -a "$LOG") 2>&1
cd "$ROOT"
source scripts/device/deps-env.sh >/dev/null
export DS_TEST_DATA=$ROOT/tests/data DS_TEST_TMP=/tmp/dstest
mkdir -p "$DS_TEST_TMP"
TESTS=${TESTS:-"test_cuda_gemm test_cuda_mla test_cuda_blocks test_cuda_model test_cuda_hybrid"}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON -DDSINFER_SERVER=OFF >/dev/null &&
  cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -E "error|FAILED"
gcc -O2 -std=gnu11 -Isrc -I/usr/local/cuda/include scripts/device/cuda_bench.c "$BUILD/libdsinfer.a" \
  -L/usr/local/cuda/lib64 -lcudart -lpcre2-8 -lstdc++ -lm -lpthread -o "$BUILD/cuda_bench" || echo "cuda_bench build FAILED"
if [ -n "${Q8BENCH:-}" ]; then
  gcc -O2 -std=gnu11 -Isrc -I/usr/local/cuda/include scripts/device/gemv_q8_bench.c "$BUILD/libdsinfer.a" \
    -L/usr/local/cuda/lib64 -lcudart -lpcre2-8 -lstdc++ -lm -lpthread -o "$BUILD/gemv_q8_bench" &&
    timeout 200 "$BUILD/gemv_q8_bench" H200 all 2>&1 | tail -60
fi
for t in $TESTS; do
  echo "=== $t ($(date -u +%H:%M:%S))"
  timeout 300 "$BUILD/tests/$t" >/tmp/$t.log 2>&1
  echo "$t: rc=$?"; grep -E "FAIL|worst|tensor.core|streamed|passed" /tmp/$t.log | head -${LINES_PER_TEST:-60}
done
[ -n "${NO_BENCH:-}" ] && exit 0
[ -f /tmp/ds2.gguf ] || timeout 120 "$BUILD/dsinfer" synth -o /tmp/ds2.gguf --layers 2 --dense 1 --mix q3_k_m -t "$(nproc)" >/dev/null
echo "=== ds2 prefill profile, GEMM on"
DSINFER_CUDA_PROFILE=1 timeout 120 "$BUILD/cuda_bench" /tmp/ds2.gguf cuda 512 1 1 2>&1 | grep -v -e '^loaded' -e loading
[ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$(nproc)" >/dev/null
IFS=';' read -ra CFGS <<<"${CFGS:-;DSINFER_CUDA_MLA_TC=0;DSINFER_GEMM_MIN_ROWS=0 DSINFER_CUDA_MLA_TC=0}"
for cfg in "${CFGS[@]}"; do
  echo "=== ds10, ${cfg:-tensor cores (default)}"
  env $cfg timeout 240 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 512 128 3 2>&1 | grep -v -e '^loaded' -e loading
done
if [ -n "${HYBRID:-}" ]; then
  echo "=== ds10 hybrid: -ngl 99 --cpu-moe -t $(nproc)"
  timeout 300 "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$(nproc)" -p 512 -n 64 -r 2 --verbose 2>&1 |
    grep -vE 'loading|^dsinfer: note'
fi
[ -n "${NO_DEPTH:-}" ] && exit 0
# the f32 attention core is quadratic and slow in prefill: depth 4096 at most
for cfg in "" "DSINFER_CUDA_MLA_TC=0"; do
  d=${DEPTHS:-0,4096,16384}; [ -n "$cfg" ] && d=0,4096
  echo "=== ds10 decode at depth, ${cfg:-tensor cores (default)}"
  env $cfg timeout 300 "$BUILD/dsinfer" bench -m /tmp/ds10.gguf --device cuda -p 0 -n 32 -d $d -r 1 2>&1 | grep -E '^\|'
done
