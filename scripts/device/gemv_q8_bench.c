/* gemv_q8_bench.c: GB/s of the int8-activation GEMV (gemv_q8.cu) next to
 * the f32 one (gemv.cu) at the full V3 decode shapes, plus the cost of
 * quantizing x, and a sweep of the q8 launch choices (rows per lane group x
 * stages) to tune the launcher's defaults. Weights are constant bytes in a
 * pool larger than L2, walked so no call re-reads what the last left in L2
 * (as scripts/device/gemv_bench.c). Not a correctness test
 * (tests/test_cuda_gemv_q8.c is).
 *   nvcc -O3 -arch=sm_90a -std=c++17 -c src/backend/cuda/gemv.cu src/backend/cuda/gemv_q8.cu
 *   gcc -O2 -Isrc -I/usr/local/cuda/include scripts/device/gemv_q8_bench.c gemv.o gemv_q8.o \
 *       -L/usr/local/cuda/lib64 -lcudart -lstdc++ -lm -o gemv_q8_bench
 * Usage: gemv_q8_bench [label] [only] [sweep]: only = one shape name (or
 * "all"; 1, 2 and 4 x rows each), sweep = 1 to time every rows/stages
 * choice too. */
#include "backend/cuda/gemv.h"
#include "backend/cuda/gemv_q8.h"

#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h" /* row_bytes, type_name, CK */

static const char *only;
static int sweep;
static uint8_t *pool;
static size_t pool_bytes = (size_t)6 << 30;
static float *dx, *dy;
static void *dxq;

enum { F32, Q8, QUANT };

/* average us per call over iters calls, each on a fresh copy of the weights */
static double time_calls(int what, ds_cu_gemv_params *p, size_t mat, size_t copies, const ds_cu_gemv_q8_cfg *cfg,
                         int64_t kq) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    const int iters = 200;
    for (int i = -8; i < iters; i++) {
        if (i == 0) cudaEventRecord(a, 0);
        p->w = pool + ((size_t)(i + 8) % copies) * mat;
        int rc = what == F32 ? ds_cu_gemv(p)
                 : what == Q8 ? ds_cu_gemv_q8_ex(p, dxq, cfg)
                              : ds_cu_quantize_q8(dx, kq, kq, p->n, dxq, 0);
        if (rc) {
            fprintf(stderr, "launch failed (%d)\n", rc);
            exit(1);
        }
    }
    cudaEventRecord(b, 0);
    CK(cudaEventSynchronize(b));
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return 1e3 * ms / iters;
}

static void bench(const char *label, const char *what, int type, int64_t K, int64_t M, int n, int64_t group_rows,
                  int64_t group_stride, int64_t ldx) {
    if (only && strcmp(only, "all") && strcmp(only, what)) return;
    const size_t rb = row_bytes(type, K), mat = ((size_t)M * rb + 255) & ~(size_t)255;
    const size_t copies = pool_bytes / mat < 64 ? pool_bytes / mat : 64;
    ds_cu_gemv_params p = { .type = type, .K = K, .M = M, .row_bytes = rb, .x = dx, .ldx = ldx,
                            .group_rows = group_rows, .group_stride = group_stride, .y = dy, .ldy = M, .n = n };
    const double gb = (double)M * rb / 1e3; /* GB/s = gb / us */
    CK((cudaError_t)ds_cu_quantize_q8(dx, ldx, ldx, n, dxq, 0));
    const double t32 = time_calls(F32, &p, mat, copies, NULL, ldx);
    const double tq = time_calls(QUANT, &p, mat, copies, NULL, ldx);
    const double t8 = time_calls(Q8, &p, mat, copies, NULL, ldx);
    printf("%-4s %-8s %-4s K %6lld M %6lld n %d: f32 %7.1f us %5.0f GB/s | q8 %7.1f us %5.0f GB/s (x%.2f) | "
           "quantize %5.1f us\n",
           label, what, type_name(type), (long long)K, (long long)M, n, t32, gb / t32, t8, gb / t8, t32 / t8, tq);
    if (!sweep) return;
    const int rows[] = { 1, 2, 4 };
    for (int ri = 0; ri < 3; ri++) {
        printf("%-4s   sweep rows %d: ", label, rows[ri]);
        for (int s = 1; s <= 4; s++) {
            const ds_cu_gemv_q8_cfg cfg = { rows[ri], s };
            const double t = time_calls(Q8, &p, mat, copies, &cfg, ldx);
            printf(" stages %d %5.0f GB/s", s, gb / t);
        }
        printf("\n");
    }
}

int main(int argc, char **argv) {
    const char *label = argc > 1 ? argv[1] : "";
    only = argc > 2 ? argv[2] : NULL;
    sweep = argc > 3 ? atoi(argv[3]) : 0;
    CK(cudaMalloc((void **)&pool, pool_bytes));
    CK(cudaMemset(pool, 0x3C, pool_bytes)); /* f16 scales 1.06: finite; values do not change the timing */
    CK(cudaMalloc((void **)&dx, (size_t)4 * 65536 * sizeof(float)));
    CK(cudaMalloc((void **)&dy, (size_t)4 * 131072 * sizeof(float)));
    CK(cudaMalloc(&dxq, ds_cu_q8_bytes(65536, 4)));
    float *hx = malloc((size_t)4 * 65536 * sizeof(float));
    for (size_t i = 0; i < (size_t)4 * 65536; i++) hx[i] = (float)((i * 2654435761u) % 2001) / 1000.f - 1.f;
    CK(cudaMemcpy(dx, hx, (size_t)4 * 65536 * sizeof(float), cudaMemcpyHostToDevice));
    free(hx);
    for (int n = 1; n <= 4; n *= 2) {
        bench(label, "exp_gate", Q3_K, 7168, 2048, n, 0, 0, 7168);
        bench(label, "ffn_gate", Q3_K, 7168, 18432, n, 0, 0, 7168);
        bench(label, "q_b", Q3_K, 1536, 24576, n, 0, 0, 1536);
        bench(label, "q_a", Q3_K, 7168, 1536, n, 0, 0, 7168);
        bench(label, "exp_down", Q4_K, 2048, 7168, n, 0, 0, 2048);
        bench(label, "attn_out", Q4_K, 16384, 7168, n, 0, 0, 16384);
        bench(label, "v_b", Q4_K, 512, 16384, n, 128, 512, 65536);
        bench(label, "ffn_down", Q5_K, 18432, 7168, n, 0, 0, 18432);
        bench(label, "output", Q6_K, 7168, 129280, n, 0, 0, 7168);
        bench(label, "k_b", Q8_0, 128, 65536, n, 512, 192, 24576);
        bench(label, "q8_rows", Q8_0, 7168, 18432, n, 0, 0, 7168);
    }
    cudaFree(pool); cudaFree(dx); cudaFree(dy); cudaFree(dxq);
    return 0;
}
