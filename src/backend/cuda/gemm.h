/* gemm.h: the prefill GEMM on tensor cores — quantized weight tiles
 * dequantized to f16 in shared memory, activations converted once to f16
 * with a power-of-two scale per row, mma.sync with f32 accumulation. Dense
 * (one weight for all rows, optionally per-head x slices) and grouped (MoE:
 * a tile list of (expert, rows) so every used expert runs in one launch).
 * Decode (few rows) stays on the GEMV (gemv.h). Launchers return 0 or the
 * cudaError_t they hit. */
#ifndef DS_CUDA_GEMM_H
#define DS_CUDA_GEMM_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of the GEMM's N tile; a grouped launch's tiles hold at most this many rows. */
int ds_cu_gemm_tile_rows(int avg_rows);

/* xh[r][0..cols) = x[r][0..cols) * 2^e_r as f16, e_r chosen per row so the
 * row's absmax lands in [2^13, 2^14) (exact scaling, no overflow); inv[r] = 2^-e_r.
 * xh rows are ldx apart like x's. */
int ds_cu_to_half_rows(const float *x, int64_t ldx, int64_t cols, int n, void *xh, float *inv, cudaStream_t s);

typedef struct ds_cu_gemm_params {
    const void *w;        /* [M] rows of row_bytes (grouped: expert e's rows at w + e*expert_bytes) */
    int type;             /* ds_type */
    int64_t K, M;         /* K % 32 == 0 */
    size_t row_bytes, expert_bytes;
    const void *xh;       /* f16 [rows][ldx] from ds_cu_to_half_rows; weight row m reads
                           * xh + r*ldx + (m / group_rows) * group_stride */
    const float *inv;     /* [rows] */
    int64_t ldx, group_rows, group_stride;
    float *y;             /* y[r][m] (=|+=) inv[r] * (W xh[r])[m], rows ldy apart */
    int64_t ldy;
    int n;                /* dense: activation rows */
    const int32_t *tiles; /* grouped: device [n_tiles][3] = {expert, first row, rows}; NULL: dense */
    int n_tiles, tile_rows; /* grouped: tile_rows = ds_cu_gemm_tile_rows(...) the tiles were cut with */
    int accumulate;
    cudaStream_t stream;
} ds_cu_gemm_params;

/* True if ds_cu_gemm handles this weight: type, per-head grouping in whole
 * 64-row tiles, f16 rows 16-byte aligned (ldx, group_stride % 8 == 0). */
int ds_cu_gemm_supported(int type, int64_t ldx, int64_t group_rows, int64_t group_stride);
int ds_cu_gemm(const ds_cu_gemm_params *p);

#ifdef __cplusplus
}
#endif
#endif
