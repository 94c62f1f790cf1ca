#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it: a Release build and its ctest
# run, the same suite under ASan+UBSan, and a bounded fuzz run of the GGUF
# parser. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== release build + tests"
scripts/build.sh build
# the Node API test uses the official `openai` package (pinned in package-lock.json)
if [ -f tests/node/package-lock.json ] && [ ! -d tests/node/node_modules/openai ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error || echo "npm ci failed: the node test will skip"
fi
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== ASan+UBSan build + tests"
scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_SANITIZE=ON
# the soak's RSS gate is the Release run's; under ASan 20 s of load and LSan at exit
DS_SOAK_SECONDS=20 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"

echo "== CUDA backend: compile-only (CI has nvcc, no GPU; the CUDA tests skip)"
bash scripts/device/cuda-compile-check.sh

echo "== fuzz: GGUF reader (${DS_FUZZ_SECONDS:-60} s)"
scripts/fuzz-gguf.sh "${DS_FUZZ_SECONDS:-60}"

echo "== fuzz: OpenAI request parser (20 s)"
# build-fuzz was configured by fuzz-gguf.sh; the fuzzer adds inputs to a
# scratch copy of the seeds, never to fuzz/corpus
cmake --build build-fuzz -j"$jobs" --target fuzz_request
rm -rf build-fuzz/corpus-request && cp -r fuzz/corpus/request build-fuzz/corpus-request
mkdir -p build-fuzz/artifacts
build-fuzz/fuzz/fuzz_request -max_total_time=20 -artifact_prefix=build-fuzz/artifacts/ build-fuzz/corpus-request 2>&1 | tail -3
echo "== all tests passed"
