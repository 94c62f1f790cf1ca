/* gemv.cu: the GEMV — one warp per weight row, up to 16 activation rows per
 * pass, f32 accumulate, warp-shuffle reduce. K-quants and q8_0 take the
 * coalesced strided path (dot_strided.cuh); the other types dequantize
 * 32-element chunks per lane. Also the dequantize-rows and embedding
 * kernels. Not a tensor-core GEMM: prefill makes one pass per 16 rows. */
#include "gemv.h"
#include "dot_strided.cuh"
#include "cuda_check.h"

#include <string.h>

#define GEMV_NR 16 /* activation rows per pass */

/* one block per weight row m: y[r][m] (+)= row . x[r] */
template <int T, int NR>
__global__ void __launch_bounds__(DS_CU_ROW_WARPS * 32)
gemv_kernel(const uint8_t *__restrict__ w, int64_t K, size_t row_bytes, const float *__restrict__ x, int64_t ldx,
            int64_t group_rows, int64_t group_stride, float *__restrict__ y, int64_t ldy, int nr, int accumulate) {
    const int64_t m = blockIdx.x;
    const int64_t goff = group_rows > 0 ? (m / group_rows) * group_stride : 0;
    float out[NR];
    ds_cu_block_rows<T, NR>(w + (size_t)m * row_bytes, (int)K, x + goff, ldx, nr, out);
    if (threadIdx.x == 0) {
#pragma unroll
        for (int r = 0; r < NR; r++) {
            if (r >= nr) break;
            float *dst = y + (size_t)r * ldy + m;
            *dst = accumulate ? *dst + out[r] : out[r];
        }
    }
}

template <int T, int NR> static void launch_gemv(const ds_cu_gemv_params *p, const float *x, float *y, int nr) {
    gemv_kernel<T, NR><<<(unsigned)p->M, DS_CU_ROW_WARPS * 32, 0, p->stream>>>(
        (const uint8_t *)p->w, p->K, p->row_bytes, x, p->ldx, p->group_rows, p->group_stride, y, p->ldy, nr,
        p->accumulate);
}

/* the smallest row count template that holds nr: fewer registers, more warps in flight */
template <int T> static void launch_gemv_nr(const ds_cu_gemv_params *p, const float *x, float *y, int nr) {
    if (nr == 1) launch_gemv<T, 1>(p, x, y, nr);
    else if (nr == 2) launch_gemv<T, 2>(p, x, y, nr);
    else if (nr <= 4) launch_gemv<T, 4>(p, x, y, nr);
    else if (nr <= 8) launch_gemv<T, 8>(p, x, y, nr);
    else launch_gemv<T, GEMV_NR>(p, x, y, nr);
}

extern "C" int ds_cu_type_supported(int type) {
    switch (type) {
#define X(t) case t: return 1;
        DS_CU_FOR_TYPES(X)
#undef X
    default: return 0;
    }
}

extern "C" int ds_cu_gemv(const ds_cu_gemv_params *p) {
    if (p->M <= 0 || p->n <= 0) return 0;
    if (p->K % 32 || p->ldx % 4 || p->group_stride % 4 || ((uintptr_t)p->x & 15)) {
        fprintf(stderr, "cuda error %s:%d: gemv needs K %% 32 == 0 and 16-byte aligned x rows\n", __FILE__, __LINE__);
        return (int)cudaErrorInvalidValue;
    }
    for (int r0 = 0; r0 < p->n; r0 += GEMV_NR) {
        const int nr = p->n - r0 < GEMV_NR ? p->n - r0 : GEMV_NR;
        const float *x = p->x + (size_t)r0 * p->ldx;
        float *y = p->y + (size_t)r0 * p->ldy;
        switch (p->type) {
#define X(t) case t: launch_gemv_nr<t>(p, x, y, nr); break;
            DS_CU_FOR_TYPES(X)
#undef X
        default:
            fprintf(stderr, "cuda error %s:%d: gemv: weight type %d has no CUDA kernel\n", __FILE__, __LINE__,
                    p->type);
            return (int)cudaErrorInvalidValue;
        }
        DS_CU_TRY_LAUNCH();
    }
    return 0;
}

/* one thread per 32-element chunk: out[i][32c..] = dequant */
template <int T>
__global__ void dequant_rows_kernel(const uint8_t *__restrict__ w, int64_t K, size_t row_bytes, int64_t row0,
                                    int64_t n_rows, const int32_t *__restrict__ ids, float *__restrict__ out) {
    const int64_t nc = K / 32;
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= nc * n_rows) return;
    const int64_t i = idx / nc, c = idx % nc;
    const int64_t src = ids ? ids[i] : row0 + i;
    float v[32];
    ds_cu_dq32<T>(w + (size_t)src * row_bytes, (int)c, v);
    float4 *o = (float4 *)(out + (size_t)i * K + c * 32);
#pragma unroll
    for (int k = 0; k < 8; k++) o[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
}

static int launch_dequant(const void *w, int type, int64_t K, size_t row_bytes, int64_t row0, int64_t n_rows,
                          const int32_t *ids, float *out, cudaStream_t stream) {
    if (n_rows <= 0) return 0;
    if (K % 32) return (int)cudaErrorInvalidValue;
    const int64_t total = K / 32 * n_rows;
    const unsigned grid = (unsigned)((total + 127) / 128);
    switch (type) {
#define X(t)                                                                                                    \
    case t:                                                                                                     \
        dequant_rows_kernel<t><<<grid, 128, 0, stream>>>((const uint8_t *)w, K, row_bytes, row0, n_rows, ids, out); \
        break;
        DS_CU_FOR_TYPES(X)
#undef X
    default:
        fprintf(stderr, "cuda error %s:%d: dequant: type %d has no CUDA kernel\n", __FILE__, __LINE__, type);
        return (int)cudaErrorInvalidValue;
    }
    DS_CU_TRY_LAUNCH();
    return 0;
}

extern "C" int ds_cu_dequant_rows(const void *w, int type, int64_t K, size_t row_bytes, int64_t row0,
                                  int64_t n_rows, float *out, cudaStream_t stream) {
    return launch_dequant(w, type, K, row_bytes, row0, n_rows, NULL, out, stream);
}

extern "C" int ds_cu_embed(const void *embd, int type, int64_t K, size_t row_bytes, const int32_t *tokens, int n,
                           float *h, cudaStream_t stream) {
    return launch_dequant(embd, type, K, row_bytes, 0, n, tokens, h, stream);
}

extern "C" int ds_cu_gemv_check_tables(const int8_t *iq4nl16) {
    int8_t dev[16];
    DS_CU_TRY(cudaMemcpyFromSymbol(dev, ds_cu_iq4nl, 16));
    return memcmp(dev, iq4nl16, 16) == 0 ? 0 : (int)cudaErrorInvalidValue;
}
