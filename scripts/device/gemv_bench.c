/* gemv_bench.c: GB/s of the CUDA GEMV and fused decode MoE at full V3
 * shapes, per weight type and activation-row count — the per-kernel view
 * that cuda_bench.c's tok/s hides. Weights are random bytes (timing does not
 * depend on values) in a pool larger than L2, walked so no call re-reads
 * what the last one left in L2. Links against the kernels' objects only
 * (gemv.cu, moe.cu), so an older copy of them can be timed in the same run:
 *   nvcc -O3 -arch=sm_90a -std=c++17 -c src/backend/cuda/{gemv,moe}.cu
 *   gcc -O2 -Isrc -I/usr/local/cuda/include scripts/device/gemv_bench.c gemv.o moe.o \
 *       -L/usr/local/cuda/lib64 -lcudart -lstdc++ -lm -o gemv_bench
 * Not a correctness test (tests/test_cuda_blocks.c is).
 * Usage: gemv_bench [label] [only]: only = one shape name (e.g. output) or moe, for a profiler. */
#include "backend/cuda/gemv.h"
#include "backend/cuda/moe.h"

#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h" /* row_bytes, type_name, CK */

static const char *only; /* run just this shape (n = 1) */
static uint8_t *pool;
static size_t pool_bytes = (size_t)6 << 30;
static float *dx, *dy;

/* average GB/s of weight bytes over `iters` calls, each on a fresh copy */
static void bench_gemv(const char *label, const char *what, int type, int64_t K, int64_t M, int n,
                       int64_t group_rows) {
    if (only && (strcmp(only, what) || n != 1)) return;
    const size_t rb = row_bytes(type, K), mat = ((size_t)M * rb + 255) & ~(size_t)255;
    const size_t copies = pool_bytes / mat < 64 ? pool_bytes / mat : 64;
    const int64_t n_group = group_rows ? M / group_rows : 1;
    ds_cu_gemv_params p = { .type = type, .K = K, .M = M, .row_bytes = rb, .x = dx, .ldx = K * n_group,
                            .group_rows = group_rows, .group_stride = group_rows ? K : 0, .y = dy, .ldy = M, .n = n };
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    const int iters = 200;
    for (int i = 0; i < 8; i++) { p.w = pool + (i % copies) * mat; CK((cudaError_t)ds_cu_gemv(&p)); }
    cudaEventRecord(a, 0);
    for (int i = 0; i < iters; i++) { p.w = pool + (i % copies) * mat; ds_cu_gemv(&p); }
    cudaEventRecord(b, 0);
    CK(cudaEventSynchronize(b));
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    const double us = 1e3 * ms / iters;
    printf("%-4s gemv %-8s %-5s K %6lld M %6lld n %2d: %8.1f us %7.0f GB/s\n", label, what, type_name(type),
           (long long)K, (long long)M, n, us, (double)M * rb / (us * 1e3));
}

/* the fused decode MoE: n rows, k = 8 of 256 experts each, E = 7168, F = 2048 */
static void bench_moe(const char *label, int tgu, int tdown, int n) {
    if (only && strcmp(only, "moe")) return;
    const int64_t E = 7168, F = 2048, NE = 256;
    const int k = 8, iters = 100;
    const size_t rgu = row_bytes(tgu, E), rd = row_bytes(tdown, F);
    const size_t bg = (size_t)F * rgu, bd = (size_t)E * rd;
    if (2 * NE * bg + NE * bd > pool_bytes) { printf("moe: pool too small\n"); return; }
    ds_cu_moe_params p = { .E = E, .F = F, .n = n, .k = k };
    p.gate = (ds_cu_exps){ pool, tgu, rgu, bg };
    p.up = (ds_cu_exps){ pool + NE * bg, tgu, rgu, bg };
    p.down = (ds_cu_exps){ pool + 2 * NE * bg, tdown, rd, bd };
    int32_t *hid = malloc(sizeof(int32_t) * (iters + 8) * n * k), *did;
    float *hw = malloc(sizeof(float) * n * k), *dw, *act, *out;
    for (int i = 0; i < (iters + 8) * n * k; i++) hid[i] = (int32_t)((i * 37 + i / (n * k) * 11) % NE);
    for (int i = 0; i < n * k; i++) hw[i] = 0.1f;
    CK(cudaMalloc((void **)&did, sizeof(int32_t) * (iters + 8) * n * k));
    CK(cudaMalloc((void **)&dw, sizeof(float) * n * k));
    CK(cudaMalloc((void **)&act, sizeof(float) * n * k * F));
    CK(cudaMalloc((void **)&out, sizeof(float) * n * E));
    CK(cudaMemcpy(did, hid, sizeof(int32_t) * (iters + 8) * n * k, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dw, hw, sizeof(float) * n * k, cudaMemcpyHostToDevice));
    p.y = dx;
    p.weights = dw;
    p.act = act;
    p.out = out;
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = 0; i < 8; i++) { p.ids = did + (size_t)(iters + i) * n * k; CK((cudaError_t)ds_cu_moe(&p)); }
    cudaEventRecord(a, 0);
    for (int i = 0; i < iters; i++) { p.ids = did + (size_t)i * n * k; ds_cu_moe(&p); }
    cudaEventRecord(b, 0);
    CK(cudaEventSynchronize(b));
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    const double us = 1e3 * ms / iters;
    /* distinct experts read per call (ids of a call may repeat across rows) */
    double bytes = (double)n * k * (2 * bg + bd);
    if (n > 1) {
        int seen[256] = { 0 }, d = 0;
        for (int i = 0; i < n * k; i++) d += !seen[hid[i]]++;
        bytes = (double)d * (2 * bg + bd);
    }
    printf("%-4s moe  %s+%s n %d k %d: %8.1f us %7.0f GB/s\n", label, type_name(tgu), type_name(tdown), n, k, us,
           bytes / (us * 1e3));
    cudaFree(did); cudaFree(dw); cudaFree(act); cudaFree(out);
    free(hid); free(hw);
}

int main(int argc, char **argv) {
    const char *label = argc > 1 ? argv[1] : "";
    only = argc > 2 ? argv[2] : NULL;
    CK(cudaMalloc((void **)&pool, pool_bytes));
    /* random bytes: fast, and values do not change the timing */
    CK(cudaMemset(pool, 0x3C, pool_bytes));
    CK(cudaMalloc((void **)&dx, (size_t)16 * 65536 * sizeof(float)));
    CK(cudaMalloc((void **)&dy, (size_t)16 * 131072 * sizeof(float)));
    CK(cudaMemset(dx, 0, (size_t)16 * 65536 * sizeof(float)));
    bench_gemv(label, "exp_gate", Q3_K, 7168, 2048, 1, 0);
    bench_gemv(label, "ffn_gate", Q3_K, 7168, 18432, 1, 0);
    bench_gemv(label, "q_b", Q3_K, 1536, 24576, 1, 0);
    bench_gemv(label, "q_a", Q3_K, 7168, 1536, 1, 0);
    bench_gemv(label, "exp_down", Q4_K, 2048, 7168, 1, 0);
    bench_gemv(label, "attn_out", Q4_K, 16384, 7168, 1, 0);
    bench_gemv(label, "v_b", Q4_K, 512, 16384, 1, 128);
    bench_gemv(label, "ffn_down", Q5_K, 18432, 7168, 1, 0);
    bench_gemv(label, "output", Q6_K, 7168, 129280, 1, 0);
    bench_gemv(label, "k_b", Q8_0, 128, 65536, 1, 512);
    bench_gemv(label, "q8_rows", Q8_0, 7168, 18432, 1, 0);
    const int ns[] = { 2, 4, 8, 16 };
    for (int i = 0; i < 4; i++) {
        bench_gemv(label, "ffn_gate", Q3_K, 7168, 18432, ns[i], 0);
        bench_gemv(label, "attn_out", Q4_K, 16384, 7168, ns[i], 0);
        bench_gemv(label, "output", Q6_K, 7168, 129280, ns[i], 0);
    }
    bench_moe(label, Q3_K, Q4_K, 1);
    bench_moe(label, Q3_K, Q4_K, 4);
    cudaFree(pool); cudaFree(dx); cudaFree(dy);
    return 0;
}
