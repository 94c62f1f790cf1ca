/* gemv.h: quantized weight rows times a few f32 activation rows (decode
 * GEMV, and prefill by repeated passes), plus dequantizing weight rows to
 * f32 and fetching embedding rows. Launchers are plain C; each returns 0 or
 * the cudaError_t it hit (printed with file:line). Not attention, not MoE. */
#ifndef DS_CUDA_GEMV_H
#define DS_CUDA_GEMV_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_cu_gemv_params {
    const void *w;        /* [M] rows of row_bytes, each K elements of `type` */
    int type;             /* ds_type */
    int64_t K, M;         /* K % 32 == 0 */
    size_t row_bytes;
    const float *x;       /* [n][ldx]; row m reads x + r*ldx + (m / group_rows) * group_stride */
    int64_t ldx;
    int64_t group_rows;   /* 0: every row reads the same K values; else per-head x (k_b, v_b) */
    int64_t group_stride;
    float *y;             /* [n][ldy], y[r][m] */
    int64_t ldy;
    int n;                /* activation rows (any count; passes of 16) */
    int accumulate;       /* 1: y += W x */
    cudaStream_t stream;
} ds_cu_gemv_params;

/* True if the kernels read weights of this ds_type. */
int ds_cu_type_supported(int type);
int ds_cu_gemv(const ds_cu_gemv_params *p);
/* The same product for f32 weights (no head groups), summed in an order that
 * does not depend on n: the router's logits, equal for a row in a decode step
 * and in a prefill. Not bit-equal to ds_cu_gemv. */
int ds_cu_gemv_f32_tiles(const ds_cu_gemv_params *p);

/* out[i][0..K) = dequant(row rows0 + i), i < n_rows; out is [n_rows][K] f32. */
int ds_cu_dequant_rows(const void *w, int type, int64_t K, size_t row_bytes, int64_t row0, int64_t n_rows,
                       float *out, cudaStream_t stream);
/* h[r] = dequant(embd row tokens[r]) for r < n; tokens on the device. */
int ds_cu_embed(const void *embd, int type, int64_t K, size_t row_bytes, const int32_t *tokens, int n, float *h,
                cudaStream_t stream);
/* 0 if the device's iq4_nl table equals the host's ds_iq4nl_values. */
int ds_cu_gemv_check_tables(const int8_t *iq4nl16);

#ifdef __cplusplus
}
#endif
#endif
