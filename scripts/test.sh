#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it: a compile-only CUDA build,
# bounded fuzz runs of the GGUF and request parsers, the ctest suite under
# ASan+UBSan, and the Release build's ctest suite. Exits non-zero on any
# failure; the last line sums all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
logs=build-logs
mkdir -p "$logs"
passed=0 skipped=0

# runs ctest with the given arguments, keeps its output, and adds its counts
# to the totals printed at the end (set -e stops the script on a failure)
run_ctest() {
  local log="$logs/ctest-$1.log"; shift
  ctest "$@" 2>&1 | tee "$log"
  local line total failed skip
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  failed=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
  skip=$(grep -c '(Skipped)' "$log" || true)
  passed=$((passed + total - failed - skip))
  skipped=$((skipped + skip))
}

# Order: the checks without ctest output first (CUDA compile, fuzz), then the
# two ctest runs, so the log ends with the Release suite's results.
echo "== CUDA backend: compile-only (CI has nvcc, no GPU; the CUDA tests skip)"
bash scripts/device/cuda-compile-check.sh 2>&1 | tee "$logs/cuda-compile.log"
if grep -q 'no nvcc, skipped' "$logs/cuda-compile.log"; then skipped=$((skipped + 1)); else passed=$((passed + 1)); fi

echo "== fuzz: GGUF reader (${DS_FUZZ_SECONDS:-60} s)"
# libFuzzer's progress goes to a log; its summary and any crash report are printed
if ! scripts/fuzz-gguf.sh "${DS_FUZZ_SECONDS:-60}" >"$logs/fuzz-gguf.log" 2>&1; then
  tail -60 "$logs/fuzz-gguf.log"; exit 1
fi
grep -E '^(Done|stat::number_of_executed_units)' "$logs/fuzz-gguf.log" || true
passed=$((passed + 1))

echo "== fuzz: OpenAI request parser (20 s)"
# build-fuzz was configured by fuzz-gguf.sh; the fuzzer adds inputs to a
# scratch copy of the seeds, never to fuzz/corpus
cmake --build build-fuzz -j"$jobs" --target fuzz_request
rm -rf build-fuzz/corpus-request && cp -r fuzz/corpus/request build-fuzz/corpus-request
mkdir -p build-fuzz/artifacts
if ! build-fuzz/fuzz/fuzz_request -max_total_time=20 -artifact_prefix=build-fuzz/artifacts/ build-fuzz/corpus-request \
    >"$logs/fuzz-request.log" 2>&1; then
  tail -60 "$logs/fuzz-request.log"; exit 1
fi
grep -E '^Done' "$logs/fuzz-request.log" || true
passed=$((passed + 1))

echo "== ASan+UBSan build + tests"
scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_SANITIZE=ON
# the soak's RSS gate is the Release run's; under ASan 20 s of load and LSan at exit
DS_SOAK_SECONDS=20 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest asan --test-dir build-asan --output-on-failure -j"$jobs"

echo "== release build + tests"
scripts/build.sh build
# the Node API test uses the official `openai` package (pinned in package-lock.json)
if [ -f tests/node/package-lock.json ] && [ ! -d tests/node/node_modules/openai ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error || echo "npm ci failed: the node test will skip"
fi
run_ctest release --test-dir build --output-on-failure -j"$jobs"

# the closing line CI reads: ctest cases of both builds, the CUDA compile check
# and the two fuzz runs
echo "== all tests passed"
echo "tests: $passed passed, 0 failed, $skipped skipped"
