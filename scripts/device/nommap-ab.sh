#!/usr/bin/env bash
# nommap-ab.sh: on a lent GPU machine, the hybrid (--cpu-moe) decode with the
# host experts read from the file mapping vs copied to huge-page memory
# (--no-mmap), alternating, on the 10-layer synth. Not CI.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-cuda}
cd "$ROOT"
source scripts/device/deps-env.sh >/dev/null
cat /sys/kernel/mm/transparent_hugepage/enabled
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON -DDSINFER_SERVER=OFF >/dev/null &&
  cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -E "error|FAILED"
[ -f /tmp/ds10.gguf ] || "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m --width full >/dev/null
for i in 1 2; do
  for f in "" --no-mmap; do
    echo "-- ${f:-mmap}"
    "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$(nproc)" -p 0 -n 64 -r 3 $f --verbose 2>&1 |
      grep -E "^\| deep|cuda hybrid: [0-9]|host read|no-mmap:"
  done
done
grep -i AnonHugePages /proc/meminfo
