#!/usr/bin/env bash
# gpu-check.sh: run on a lent GPU machine (the device tool) from the repo
# root: builds with CUDA on all cores, runs the CUDA tests and the CPU tests
# that exercise AVX-512, lists the embedded GPU code, runs compute-sanitizer,
# makes the full-width synth model in /tmp and times pp/tg on it. Every
# stage's output goes to $OUT/gpu-check.log (or ./gpu-check.log).
# Not CI: CI only compiles the CUDA code. STAGES="build test" picks stages.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUTDIR=${OUT:-$ROOT}
LOG=$OUTDIR/gpu-check.log
# tee -p: a reader that stops early (`| head`) must not kill the run (SIGPIPE)
exec > >(tee -p -a "$LOG") 2>&1
BUILD=${BUILD:-/tmp/build-gpu}
STAGES=${STAGES:-"env deps build test cpu elf bench hybrid fullwidth profile serve memcheck"}
# not in the default list: decode (A/B of the decode paths on ds10, 1 and 8 streams), kernels (ncu:
# the time of every kernel of one decode step of 1 and 8 rows), pkernels (the same for one pp512
# prefill, PK_TOKENS tokens), ab (decode A/B of the env knobs in
# AB_CFGS, default: base, unfused quantization, base again), depth (dsinfer bench tg128 at depths
# 0, 4096, 32768 under each of DEPTH_CFGS, then the attention tests under other split sizes),
# stalls (ncu --set full on chosen kernels of one step: occupancy and stall reasons), sass (one
# kernel's SASS with per-instruction executed counts and stall samples), pab (prefill A/B of the env
# knobs in PAB_CFGS, alternating rounds of cuda_bench pp512).
# Every call on a fresh machine needs "deps" before any stage that runs dsinfer (the server libraries).
JOBS=$(nproc)
export DS_TEST_DATA=$ROOT/tests/data DS_TEST_TMP=/tmp/dstest
mkdir -p "$DS_TEST_TMP"
has() { [[ " $STAGES " == *" $1 "* ]]; }
# the NVTX range and cuda_bench arguments of what the stalls and sass stages profile: one pp512
# prefill when $1 is set, else one 1-row decode step (at cache depth $2 when set, prefilled 512 a call)
one_launch() {
  if [ -n "$1" ]; then srange=prefill/; sargs="512 1 1"; else srange=step/; sargs="16 8 1 1 1024 8"; fi
  if [ -z "$1" ] && [ -n "$2" ]; then sargs="512 8 1 1 $(($2 + 1024)) 8"; fi
}
stage() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }

if has env; then
  stage env
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -2
  cmake --version | head -1
  lscpu | grep -E 'Model name|^CPU\(s\)|avx512f' | sed 's/Flags:.*avx512f.*/Flags: has avx512f/' | head -4
  git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null || echo "commit: (no git metadata)"
  for t in nsys ncu compute-sanitizer; do printf '%s: %s\n' $t "$(command -v $t || echo none)"; done
fi

# Dependencies: the image may lack the -dev packages (see deps-env.sh)
if has deps; then
  stage deps
  source "$ROOT/scripts/device/deps-env.sh"
fi

if has build; then
  stage build
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" -DDSINFER_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$BUILD.cfg.log" 2>&1 ||
    { tail -30 "$BUILD.cfg.log"; echo "configure FAILED"; exit 1; }
  t0=$(date +%s)
  cmake --build "$BUILD" -j "$JOBS" 2>&1 | grep -E 'error|FAILED|warning: .*spill' | head -40
  [ -x "$BUILD/dsinfer" ] || { echo "build FAILED"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s with $JOBS jobs"
  gcc -O2 -std=gnu11 -I"$ROOT/src" -I/usr/local/cuda/include "$ROOT/scripts/device/cuda_bench.c" "$BUILD/libdsinfer.a" \
    -L/usr/local/cuda/lib64 -lcudart $(pkg-config --libs libpcre2-8 libmicrohttpd jansson) -lstdc++ -lm -lpthread -ldl \
    -o "$BUILD/cuda_bench" || echo "cuda_bench build FAILED"
fi

if has test; then
  stage "test (CUDA)"
  (cd "$BUILD" && timeout 300 ctest -R test_cuda --output-on-failure -V 2>&1 | grep -vE '^[0-9]+: (Test command|Working Directory|Environment)|^UpdateCTestConfiguration|^Parse|^ Add test|^Constructing|^Checking|^test [0-9]+$')
fi

if has test; then
  # default-off variants that are not measured yet: their tests, so a new knob is checked where it runs
  echo "-- test_cuda_gemm and test_cuda_model under DSINFER_CUDA_GEMM_SW32=1 (swizzled 32-row tiles)"
  (cd "$BUILD" && DSINFER_CUDA_GEMM_SW32=1 timeout 200 ctest -R 'test_cuda_(gemm|model)$' 2>&1 | grep -E "tests passed|Failed|\*\*\*")
fi

if has cpu; then
  stage "test (CPU, AVX-512 paths)"
  (cd "$BUILD" && timeout 240 ctest -R 'quant_dot|model_tiny|model_kq|decode' --output-on-failure 2>&1 | tail -15)
fi

if has elf; then
  stage "embedded GPU code"
  cuobjdump --list-elf "$BUILD/libdsinfer.a" 2>&1 | grep -oE 'sm_[0-9]+a?' | sort | uniq -c
  cuobjdump --list-elf "$BUILD/libdsinfer.a" 2>&1 | head -4
fi

if has bench; then
  stage "bench: synth ds10 (10 layers, 3 dense, q3_k_m, full width) in /tmp"
  t0=$(date +%s)
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  ls -l /tmp/ds10.gguf && echo "synth: $(( $(date +%s) - t0 )) s"
  timeout 240 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 512 128 3
  echo "-- dsinfer bench --device cuda (GPU bandwidth probe and roofline in the same run)"
  timeout 240 "$BUILD/dsinfer" bench -m /tmp/ds10.gguf --device cuda -p 512 -n 128 -r 3 2>&1 | grep -v "^.cuda: loading"
fi
if has hybrid; then
  stage "hybrid: ds10 with the routed experts on the CPU (-t $JOBS), hot experts, streamed prefill"
  "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe -t "$JOBS" -p 512 -n 64 -r 3 --verbose 2>&1 | grep -v "^.cuda: loading"
  "$BUILD/dsinfer" bench -m /tmp/ds10.gguf -ngl 99 --cpu-moe --gpu-experts 128 -t "$JOBS" -p 0 -n 128 -r 3 --verbose 2>&1 |
    grep -E "^\| deep|cuda hybrid|cuda: hot"
fi

if has fullwidth; then
  stage "full width: 2-layer synth, cuda vs ref logits (dsinfer logits)"
  [ -f /tmp/ds2.gguf ] || timeout 120 "$BUILD/dsinfer" synth -o /tmp/ds2.gguf --layers 2 --dense 1 --mix q3_k_m -t "$JOBS" >/dev/null
  toks=11,2000,300,45000,129000,7,81
  timeout 60 "$BUILD/dsinfer" logits -m /tmp/ds2.gguf --tokens $toks -o /tmp/ds2.cuda.f32 --device cuda 2>&1 | tail -2
  timeout 200 "$BUILD/dsinfer" logits -m /tmp/ds2.gguf --tokens $toks -o /tmp/ds2.ref.f32 --device ref -t "$JOBS" 2>&1 | tail -2
  python3 - <<'EOF'
import numpy as np
V = 129280
try:
    a = np.fromfile('/tmp/ds2.cuda.f32', np.float32).reshape(-1, V); b = np.fromfile('/tmp/ds2.ref.f32', np.float32).reshape(-1, V)
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    print(f"full width ds2: cuda vs ref rel {rel:.3e}, argmax agree {(a.argmax(1) == b.argmax(1)).sum()}/{len(a)}")
except Exception as e:
    print("full width compare failed:", e)
EOF
  stage "fixtures through the CLI: dsinfer logits --device cuda vs HF"
  for f in dsv3_tiny/dsv3_tiny-f16-mla dsv3_kq/dsv3_kq-Q3_K_M; do
    d=${f%%/*}
    ids=$(python3 -c "import json;print(','.join(map(str,json.load(open('tests/data/models/$d/cases.json'))['cases']['mid'])))")
    timeout 60 "$BUILD/dsinfer" logits -m tests/data/models/$f.gguf --tokens "$ids" -o /tmp/cli.f32 --device cuda 2>&1 | tail -1
    python3 -c "
import numpy as np
a=np.fromfile('/tmp/cli.f32',np.float32); b=np.fromfile('tests/data/models/$d/logits_mid.f32',np.float32)
print('$f mid: cuda vs HF rel %.4f' % (np.linalg.norm(a-b)/np.linalg.norm(b)))"
  done
fi

if has profile; then
  stage "profile (DSINFER_CUDA_PROFILE=1, no graphs) on the 2-layer full-width synth"
  [ -f /tmp/ds2.gguf ] || timeout 120 "$BUILD/dsinfer" synth -o /tmp/ds2.gguf --layers 2 --dense 1 --mix q3_k_m -t "$JOBS" >/dev/null
  echo "-- prefill-heavy: pp512 x2, tg1 x2"
  DSINFER_CUDA_PROFILE=1 timeout 120 "$BUILD/cuda_bench" /tmp/ds2.gguf cuda 512 1 1 2>&1 | grep -v '^loaded'
  echo "-- decode-heavy: pp16 x2, tg64 x2"
  DSINFER_CUDA_PROFILE=1 timeout 120 "$BUILD/cuda_bench" /tmp/ds2.gguf cuda 16 64 1 2>&1 | grep -v '^loaded'
  echo "-- ds2 with graphs"
  timeout 120 "$BUILD/cuda_bench" /tmp/ds2.gguf cuda 512 128 3 2>&1 | grep -v '^loaded'
fi

if has serve; then
  stage "serve on the GPU (ds10): batch-1 overhead vs raw decode, and 8 parallel streams"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  port=18080
  DSINFER_SCHED_STATS=1 DSINFER_CUDA_STEP_STATS=1 "$BUILD/dsinfer" serve -m /tmp/ds10.gguf --device cuda -c 1024 -np 8 --port $port --metrics \
    >/tmp/serve-gpu.log 2>&1 &
  spid=$!
  python3 -c "
import sys, time, urllib.request
for _ in range(240):
    try:
        if urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2).status == 200:
            print('serve: ready'); break
    except Exception:
        time.sleep(0.5)
else:
    print('serve: not ready after 120 s')"
  for conc in 1 8; do
    echo "-- soak, concurrency $conc, 25 s, max_tokens 128, non-streamed"
    timeout 60 "$BUILD/dsinfer" soak --url "http://127.0.0.1:$port" --duration 25 --concurrency $conc --stream-ratio 0 \
      --max-tokens 128 --pid $spid --report "$OUTDIR/soak_c$conc.json" 2>&1 | tail -5
    # the engine's own time on generated rows (forward calls only) against the
    # tokens: what the loop around them (sampling, detokenizing, HTTP) adds
    # (python: the device image has no curl; counters are totals since the server started)
    python3 -c "
import urllib.request
v = {}
for l in urllib.request.urlopen('http://127.0.0.1:$port/metrics', timeout=5).read().decode().splitlines():
    if l.startswith('dsinfer_') and ' ' in l: k, x = l.rsplit(' ', 1); v[k] = float(x)
n, t = v.get('dsinfer_tokens_predicted_total', 0), v.get('dsinfer_tokens_predicted_seconds_total', 0)
print('engine (totals so far): %d tokens, %.3f s of forward on generated rows, %d steps, %.1f tok/s of forward' %
      (n, t, v.get('dsinfer_decode_steps_total', 0), n / t if t else 0))" || echo "metrics scrape failed"
  done
  kill $spid; wait $spid 2>/dev/null
  grep -E "engine loop|cuda step stats" /tmp/serve-gpu.log # DSINFER_SCHED_STATS (the loop by part, both soaks together), DSINFER_CUDA_STEP_STATS
  tail -2 /tmp/serve-gpu.log
  echo "-- raw decode on the same file (cuda_bench: pp16, tg128, 3 reps, the server's -c 1024 -np 8): random"
  echo "   tokens, greedy on the GPU's ids, and ids from position 16 of sequence 3 (as a slot after its prompt)"
  DSINFER_CUDA_STEP_STATS=1 CUDA_BENCH_MODES=random,ids timeout 120 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 16 128 3 1 1024 8 \
    2>&1 | grep -vE '^loaded|loading'
  DSINFER_CUDA_STEP_STATS=1 CUDA_BENCH_MODES=ids CUDA_BENCH_DEPTH=16 CUDA_BENCH_SEQ0=3 timeout 120 "$BUILD/cuda_bench" \
    /tmp/ds10.gguf cuda 16 128 3 1 1024 8 2>&1 | grep -E '^pp|step stats'
  echo "   the same with -ub 512 (the server's and dsinfer bench's micro-batch)"
  DSINFER_CUDA_STEP_STATS=1 CUDA_BENCH_MODES=ids CUDA_BENCH_DEPTH=16 CUDA_BENCH_SEQ0=3 CUDA_BENCH_UB=512 timeout 120 \
    "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 16 128 3 1 1024 8 2>&1 | grep -E '^pp|step stats'
fi

if has decode; then
  stage "decode A/B on ds10: the MoE on f32 or int8 activations, int8 products up to 4/8/16 rows"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  for cfg in DSINFER_CUDA_MOE_Q8=0 DSINFER_CUDA_MOE_Q8=1; do
    echo "-- $cfg, one stream"
    env $cfg timeout 120 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 16 128 3 2>&1 | grep -E '^pp'
  done
  for cfg in "DSINFER_CUDA_MOE_Q8=0 DSINFER_Q8_MAX_ROWS=4" "DSINFER_Q8_MAX_ROWS=4" "DSINFER_Q8_MAX_ROWS=8" \
             "DSINFER_GEMM_MIN_ROWS=5"; do
    echo "-- $cfg, 8 streams"
    env $cfg timeout 120 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 16 64 2 8 2>&1 | grep -E '^pp'
  done
  for st in 1 8; do
    echo "-- where a decode step's time goes (DSINFER_CUDA_PROFILE=1: no graphs, a sync per block), $st stream(s)"
    DSINFER_CUDA_PROFILE=1 timeout 120 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 16 32 1 $st 2>&1 | grep -vE '^loaded|loading'
  done
fi

if has ab; then
  cfgs=${AB_CFGS:-"DSINFER_BASE=1 DSINFER_CUDA_FUSE=0 DSINFER_BASE=2"}
  stage "A/B on ds10, cuda_bench ids: tg128 one stream (the server's -c 1024 -np 8), tg64 eight streams; $cfgs"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  for cfg in $cfgs; do
    echo "-- $cfg"
    env "$cfg" DSINFER_CUDA_STEP_STATS=1 CUDA_BENCH_MODES=ids timeout 120 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 16 128 3 \
      1 1024 8 2>&1 | grep -E '^pp|of 1 row'
    env "$cfg" CUDA_BENCH_MODES=ids timeout 120 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 16 64 2 8 1024 8 2>&1 | grep -E '^pp'
  done
fi

if has pab; then
  # prefill A/B: cuda_bench pp512 (3 reps) under each of PAB_CFGS in turn, PAB_ROUNDS rounds (default 2),
  # alternating, so both sides see the same card and the same drift; "DSINFER_BASE=1" is the default code
  cfgs=${PAB_CFGS:-"DSINFER_BASE=1 DSINFER_CUDA_GEMM_SW32=1"}
  stage "pab: cuda_bench pp512 on ds10, alternating $cfgs, ${PAB_ROUNDS:-2} rounds"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  for round in $(seq "${PAB_ROUNDS:-2}"); do
    for cfg in $cfgs; do
      printf -- '-- round %s %s: ' "$round" "$cfg"
      env "$cfg" timeout 120 "$BUILD/cuda_bench" /tmp/ds10.gguf cuda 512 1 3 2>&1 | grep -E '^pp' | cut -d'|' -f1
    done
  done
fi

if has depth; then
  stage "depth: dsinfer bench tg128 at depths 0, 4096, 32768 (ds10), A/B of ${DEPTH_CFGS:-DSINFER_BASE=1 DSINFER_CUDA_MLA_CHUNK=256}"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  for cfg in ${DEPTH_CFGS:-DSINFER_BASE=1 DSINFER_CUDA_MLA_CHUNK=256}; do
    echo "-- $cfg"
    env "$cfg" timeout 280 "$BUILD/dsinfer" bench -m /tmp/ds10.gguf --device cuda -p 0 -n 128 -d 0,4096,32768 -r 2 2>&1 |
      grep -v "^.cuda: loading"
  done
  for cfg in DSINFER_CUDA_MLA_CHUNK=32 DSINFER_CUDA_MLA_CHUNK=256; do
    echo "-- the attention tests under $cfg"
    (cd "$BUILD" && env "$cfg" timeout 200 ctest -R 'test_cuda_mla|test_cuda_model' 2>&1 | grep -E "tests passed|Failed|\*\*\*")
  done
fi

if has kernels; then
  stage "kernels: ncu, every kernel of one ds10 decode step (1 and 8 rows), caches and clocks left as they run"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  # KDEPTH=D: the step at cache depth D (prefilled 512 tokens a call, untimed); KROWS: the row counts
  kpp=16; [ -n "${KDEPTH:-}" ] && kpp=512
  for S in ${KROWS:-1 8}; do
    echo "-- $S row(s), depth ${KDEPTH:-0}"
    CUDA_BENCH_DEPTH=${KDEPTH:-0} CUDA_BENCH_NVTX=1 CUDA_BENCH_MODES=ids timeout 280 ncu --nvtx --nvtx-include "step/" --cache-control none \
      --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --log-file /tmp/ncu_$S.csv \
      "$BUILD/cuda_bench" /tmp/ds10.gguf cuda $kpp 8 1 $S $((${KDEPTH:-0} + 1024)) 8 >/dev/null 2>&1
    python3 "$ROOT/scripts/device/ncu_table.py" /tmp/ncu_$S.csv 2>&1 | head -70
  done
fi

if has pkernels; then
  stage "pkernels: ncu, every kernel of one ds10 pp512 prefill, caches and clocks left as they run"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  CUDA_BENCH_NVTX=1 timeout 400 ncu --nvtx --nvtx-include "prefill/" --cache-control none \
    --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --log-file /tmp/ncu_pp.csv \
    "$BUILD/cuda_bench" /tmp/ds10.gguf cuda ${PK_TOKENS:-512} 1 1 >/dev/null 2>&1
  python3 "$ROOT/scripts/device/ncu_table.py" /tmp/ncu_pp.csv 2>&1 | head -60
fi

if has stalls; then
  # --set full on the kernels of one 1-row ds10 step whose names match STALL_KERNELS: occupancy,
  # issue activity and the stall reasons ncu's rules name; the whole details page goes to $OUT
  # STALL_PREFILL=1: the kernels of one pp512 prefill instead
  # STALL_DEPTH=D: the step at cache depth D
  one_launch "${STALL_PREFILL:-}" "${STALL_DEPTH:-}"
  stage "stalls: ncu --set full, one ds10 $srange, kernels ${STALL_KERNELS:=q8_gemv|route_kernel|q8_rmsnorm|mla_tc}"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  CUDA_BENCH_DEPTH=${STALL_DEPTH:-0} CUDA_BENCH_NVTX=1 CUDA_BENCH_MODES=ids timeout 400 ncu --nvtx --nvtx-include "$srange" --set full \
    --kernel-name "regex:$STALL_KERNELS" --launch-skip ${STALL_SKIP:-0} --launch-count ${STALL_COUNT:-40} -o /tmp/stalls -f \
    "$BUILD/cuda_bench" /tmp/ds10.gguf cuda $sargs >/dev/null 2>&1
  ncu --import /tmp/stalls.ncu-rep --page details > "$OUTDIR/ncu_stalls.txt" 2>&1
  grep -E '^  [a-z_]+.*\(|Duration|Achieved Occupancy|Registers Per|Issue Slots Busy|Warp Cycles Per Issued|Memory Throughput|Theoretical Occupancy' \
    "$OUTDIR/ncu_stalls.txt" | head -120
fi

if has sass; then
  # one kernel's SASS with ncu's per-instruction counts (executed instructions, stall samples) for
  # its SASS_SKIP+1-th launch in a 1-row ds10 decode step (SASS_PREFILL=1: in one pp512 prefill);
  # SASS_KERNEL is the mangled name
  : "${SASS_KERNEL:=_Z14q8_gemv_kernelILi11ELi1ELi4ELi2ELb0EEv7q8_args16ds_cu_q8_experts}"
  # SASS_DEPTH=D: the step at cache depth D
  one_launch "${SASS_PREFILL:-}" "${SASS_DEPTH:-}"
  stage "sass: $SASS_KERNEL, launch ${SASS_SKIP:=1} of the $srange"
  [ -f /tmp/ds10.gguf ] || timeout 240 "$BUILD/dsinfer" synth -o /tmp/ds10.gguf --layers 10 --dense 3 --mix q3_k_m -t "$JOBS" >/dev/null
  CUDA_BENCH_DEPTH=${SASS_DEPTH:-0} CUDA_BENCH_NVTX=1 CUDA_BENCH_MODES=ids timeout 300 ncu --nvtx --nvtx-include "$srange" --set full \
    --kernel-name-base mangled --kernel-name "$SASS_KERNEL" --launch-skip "$SASS_SKIP" --launch-count 1 \
    --import-source yes -o /tmp/sass -f "$BUILD/cuda_bench" /tmp/ds10.gguf cuda $sargs >/dev/null 2>&1
  ncu --import /tmp/sass.ncu-rep --page source --print-source sass --csv > "$OUTDIR/sass_counts.csv" 2>&1
  ncu --import /tmp/sass.ncu-rep --page details > "$OUTDIR/sass_details.txt" 2>&1
  grep -E "Duration|Executed Instructions  |Grid Size" "$OUTDIR/sass_details.txt"
  wc -l "$OUTDIR/sass_counts.csv"
fi

if has memcheck; then
  stage "compute-sanitizer memcheck"
  for t in ${MEMCHECK_TESTS:-test_cuda_gemm test_cuda_mla test_cuda_blocks test_cuda_gemv_q8 test_cuda_wgmma}; do
    DS_CUDA_TEST_QUICK=1 timeout ${MEMCHECK_TIMEOUT:-300} compute-sanitizer --tool memcheck --error-exitcode 9 \
      "$BUILD/tests/$t" 2>&1 | tail -3
    echo "memcheck $t (quick) exit ${PIPESTATUS[0]}"
  done
  # 20 tokens: the prefill takes the tensor-core GEMM (17+ rows) and MLA core, the LM head's
  # last chunk of 4 rows the int8 GEMV
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$BUILD/dsinfer" logits \
    -m tests/data/models/dsv3_kq/dsv3_kq-Q3_K_M.gguf --tokens 979,272,215,812,17,4,99,1000,23,5,6,7,8,9,10,11,12,13,14,15 \
    -o /tmp/ms.f32 --device cuda 2>&1 | tail -3
  echo "memcheck dsinfer logits --device cuda exit ${PIPESTATUS[0]}"
fi
stage done
