/* gemv_q8.h: the decode GEMV on int8 activations — x rows quantized once
 * to q8 blocks (32 int8 + f32 scale d + f32 sum s), then y = W x with
 * __dp4a integer dot products and the weight block's scales applied once
 * per 16/32 weights. For 1..4 x rows per pass (any n, by passes). Not the
 * f32 GEMV (gemv.h), not prefill GEMM, not the MoE.
 *
 * Quantized activation layout (what ds_cu_quantize_q8 writes, what
 * ds_cu_gemv_q8 reads), for n rows of Kq values (Kq % 32 == 0):
 *   row r starts at byte r * ds_cu_q8_row_bytes(Kq) of xq (a multiple of 16);
 *   bytes [0, Kq):            int8 q[Kq], element e of the f32 row;
 *   bytes [Kq, Kq + Kq/4):    float2 ds[Kq/32], {d, s} of block e/32:
 *                             d = absmax/127 (0 for an all-zero block),
 *                             q = round-to-nearest-even(x * 127/absmax), |q| <= 127,
 *                             s = d * sum(q) (the block's sum as the kernel sees it);
 *   then padding to a multiple of 16 bytes.
 * So each element is off by at most d/2 of its 32-block: |x - d*q| <= absmax/254.
 * xq must be 16-byte aligned (cudaMalloc is).
 *
 * Launchers are plain C; each returns 0 or the cudaError_t it hit (printed
 * with file:line). */
#ifndef DS_CUDA_GEMV_Q8_H
#define DS_CUDA_GEMV_Q8_H

#include "gemv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of one quantized row of K values, and of n rows (K % 32 == 0). */
size_t ds_cu_q8_row_bytes(int64_t K);
size_t ds_cu_q8_bytes(int64_t K, int n);

/* xq (layout above, n rows of K) = q8(x), x is [n][ldx] f32 on the device,
 * K % 32 == 0, K <= ldx. For a per-head GEMV quantize the whole x row
 * (K = the span every head slice lies in), so each head slice is whole
 * 32-blocks. */
int ds_cu_quantize_q8(const float *x, int64_t ldx, int64_t K, int n, void *xq, cudaStream_t s);

/* 1 if ds_cu_gemv_q8 reads weights of this ds_type with rows of K elements
 * (q8_0: K % 32 == 0; q2_K q3_K q4_K q5_K q6_K: K % 256 == 0); any group_rows >= 0. */
int ds_cu_gemv_q8_supported(int type, int64_t K, int64_t group_rows);

/* y[r][m] (=|+=) W[m] . x[r] as ds_cu_gemv does, with x read from xq:
 * - p->x is not read; xq holds p->n rows as ds_cu_quantize_q8 wrote them,
 *   and p->ldx is the K that quantize call was given (the quantized row
 *   length: x row r, element e is xq row r, element e);
 * - row m reads elements [goff, goff + K) with goff = (m / group_rows) * group_stride
 *   (0 without groups), so goff + K <= ldx and group_stride % 32 == 0;
 * - p->w and row_bytes need only 2-byte alignment (rows of 110-byte q3_K,
 *   210-byte q6_K and 34-byte q8_0 blocks are not 16-byte aligned in
 *   general); y any. */
int ds_cu_gemv_q8(const ds_cu_gemv_params *p, const void *xq);

/* Launch choices, for benchmarks and tests (0 = the launcher's choice):
 * rows = weight rows per lane group (1, 2 or 4; 2 at most for 3-4 x rows;
 * reduced until it divides group_rows), stages = weight steps in shared
 * memory per warp (1..4: stages - 1 steps of loads in flight while one is
 * computed). */
typedef struct ds_cu_gemv_q8_cfg {
    int rows;
    int stages;
} ds_cu_gemv_q8_cfg;
int ds_cu_gemv_q8_ex(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg);

/* Test hooks, no GPU needed: the same computations on the CPU. quantize_host
 * writes bit for bit what ds_cu_quantize_q8 writes; gemv_q8_host runs the
 * kernel's per-lane code (index math, staging offsets, decoding, integer
 * dots) lane by lane, with p->w, p->y and xq host pointers. Slow. */
void ds_cu_quantize_q8_host(const float *x, int64_t ldx, int64_t K, int n, void *xq);
int ds_cu_gemv_q8_host(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg);

#ifdef __cplusplus
}
#endif
#endif
