/* bench_common.h: what the GEMV benchmarks (gemv_bench.c, gemv_q8_bench.c)
 * share — the weight types they time, their row sizes and names, and a
 * CUDA-call check that exits. Scripts only: not part of the library. */
#ifndef DS_BENCH_COMMON_H
#define DS_BENCH_COMMON_H

#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { Q8_0 = 8, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

static inline size_t row_bytes(int type, int64_t K) {
    switch (type) {
    case Q8_0: return (size_t)K / 32 * 34;
    case Q3_K: return (size_t)K / 256 * 110;
    case Q4_K: return (size_t)K / 256 * 144;
    case Q5_K: return (size_t)K / 256 * 176;
    case Q6_K: return (size_t)K / 256 * 210;
    }
    return 0;
}
static inline const char *type_name(int t) {
    return t == Q8_0 ? "q8_0" : t == Q3_K ? "q3_K" : t == Q4_K ? "q4_K" : t == Q5_K ? "q5_K" : "q6_K";
}

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

#endif
