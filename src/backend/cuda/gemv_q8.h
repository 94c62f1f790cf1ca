/* gemv_q8.h: the decode GEMV on int8 activations — x rows quantized once
 * to q8 blocks (32 int8 + f32 scale d + f32 sum s), then y = W x with
 * __dp4a integer dot products and the weight block's scales applied once
 * per 16/32 weights. For 1..8 x rows per pass (any n, by passes), and an
 * expert mode for the decode MoE. Not the f32 GEMV (gemv.h), not prefill
 * GEMM.
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
 * rows = weight rows per lane group (1, 2 or 4; 2 at most for 3-8 x rows;
 * reduced until it divides group_rows), stages = weight steps in shared
 * memory per warp (1..8: stages - 1 steps of loads in flight while one is
 * computed). */
typedef struct ds_cu_gemv_q8_cfg {
    int rows;
    int stages;
} ds_cu_gemv_q8_cfg;
int ds_cu_gemv_q8_ex(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg);

/* Expert mode, for the decode MoE: n_pairs (row, slot) pairs, each its own
 * expert's matrix and x row, all in one launch (device-side ids, so a
 * decode step stays one graph). For each pair p with e = ids[p] >= 0:
 *   y[p][m] (=|+=) W_e[m] . x[p / x_div], W_e = p->w + e * expert_bytes,
 * and when w2 is set, in the same launch, y2[p][m] (=|+=) W2_e[m] . x[p / x_div]
 * (gate and up: same type, K, M, row_bytes and expert_bytes). Pairs with
 * e < 0 leave their y rows untouched. p->n and p->x are not read; p->ldx
 * is the quantized row length as in ds_cu_gemv_q8; no head groups. */
typedef struct ds_cu_q8_experts {
    const int32_t *ids; /* [n_pairs] on the device (host pointer for the _host twin) */
    int n_pairs;
    int x_div;          /* pairs per x row: k for gate/up (a token's k pairs share its x), 1 for down */
    size_t expert_bytes;
    const void *w2;     /* NULL, or the second weight set */
    float *y2;
} ds_cu_q8_experts;
int ds_cu_gemv_q8_experts(const ds_cu_gemv_params *p, const void *xq, const ds_cu_q8_experts *ex,
                          const ds_cu_gemv_q8_cfg *cfg);

/* xq (layout above, n rows of K) = q8(silu(g) * u), g and u [n][K] f32 on
 * the device (the SwiGLU product as ds_cu_silu_mul computes it, then
 * quantized as ds_cu_quantize_q8 does). */
int ds_cu_silu_quantize_q8(const float *g, const float *u, int64_t K, int n, void *xq, cudaStream_t s);

/* RMSNorm of n rows (dim % 32 == 0, dim <= DS_CU_RMSNORM_Q8_MAX_DIM) into
 * y, as ds_cu_rmsnorm writes it, and those rows quantized into xq as
 * ds_cu_quantize_q8 would: one launch instead of two in front of a decode
 * product. y may alias x. */
#define DS_CU_RMSNORM_Q8_MAX_DIM 8192
int ds_cu_rmsnorm_q8(const float *x, int64_t ldx, const float *w, int dim, float eps, int n, float *y, int64_t ldy,
                     void *xq, cudaStream_t s);

/* Test hooks, no GPU needed: the same computations on the CPU. quantize_host
 * writes bit for bit what ds_cu_quantize_q8 writes; gemv_q8_host runs the
 * kernel's per-lane code (index math, staging offsets, decoding, integer
 * dots) lane by lane, with p->w, p->y and xq host pointers. Slow. */
void ds_cu_quantize_q8_host(const float *x, int64_t ldx, int64_t K, int n, void *xq);
int ds_cu_gemv_q8_host(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg);
int ds_cu_gemv_q8_experts_host(const ds_cu_gemv_params *p, const void *xq, const ds_cu_q8_experts *ex,
                               const ds_cu_gemv_q8_cfg *cfg);

#ifdef __cplusplus
}
#endif
#endif
