#!/bin/sh
# fuzz-gguf.sh [SECONDS]: builds the GGUF libFuzzer target in build-fuzz (clang,
# ASan+UBSan) and fuzzes a scratch copy of fuzz/corpus/gguf for SECONDS
# (default 60). Exits non-zero if the fuzzer finds a crash, leak or timeout;
# the reproducer is left in build-fuzz/artifacts/.
set -eu
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
cd "$root"

# libFuzzer ships in Debian's libclang-rt-14-dev.
rt=$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null || true)
if [ ! -f "$rt" ] && ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "fuzz-gguf: installing libclang-rt-14-dev for libFuzzer"
        apt-get install -y libclang-rt-14-dev >/dev/null
    else
        echo "fuzz-gguf: libFuzzer runtime not found; install libclang-rt-14-dev" >&2
        exit 2
    fi
fi

CC=clang cmake -S . -B "$build" -DDSINFER_FUZZ=ON -DDSINFER_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target fuzz_gguf

# Work on a copy: new inputs the fuzzer keeps do not touch the checked-in seeds.
work="$build/corpus-gguf"
rm -rf "$work"
mkdir -p "$work" "$build/artifacts"
cp fuzz/corpus/gguf/* "$work/"

# Tokens the mutator cannot easily guess.
dict="$build/gguf.dict"
cat > "$dict" <<'DICT'
"GGUF"
"general.alignment"
"general.architecture"
"split.no"
"split.count"
"split.tensors.count"
"\x03\x00\x00\x00"
"\x02\x00\x00\x00"
"\x09\x00\x00\x00"
"\x08\x00\x00\x00"
"\x20\x00\x00\x00\x00\x00\x00\x00"
DICT

ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
"$build/fuzz/fuzz_gguf" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=16384 -dict="$dict" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/" "$work"
