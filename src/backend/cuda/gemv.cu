/* gemv.cu: the GEMV — f32 accumulate, up to 16 activation rows per pass.
 * At one or two x rows (decode), q3_K/q4_K/q5_K/q6_K/q8_0 take the
 * warp-row path (dot_strided.cuh: a lane group per 4 or 2 weight rows that
 * share the x loads, 16-byte weight loads, staged through shared memory for
 * the 2-byte aligned types; 4 warps per block, no block barrier). From 4 x
 * rows on, and for q2_K and misaligned weights, the block-strided path
 * (4 warps per row). The other types dequantize 32-element chunks per lane.
 * Also the dequantize-rows and embedding kernels. Not a tensor-core GEMM:
 * prefill makes one pass per 16 rows, all passes in one launch (grid y). */
#include "gemv.h"
#include "dot_strided.cuh"
#include "cuda_check.h"

#include <string.h>

#define GEMV_NR 16 /* activation rows per pass */

/* x rows [GEMV_NR * blockIdx.y, + GEMV_NR) of n: every pass of a product in
 * one launch (a pass's sums do not depend on the others or on NR) */
template <typename X, typename Y>
__device__ __forceinline__ int gemv_pass(X &x, int64_t ldx, Y &y, int64_t ldy, int n) {
    const int r0 = GEMV_NR * (int)blockIdx.y;
    x += (size_t)r0 * ldx;
    y += (size_t)r0 * ldy;
    return n - r0 < GEMV_NR ? n - r0 : GEMV_NR;
}

/* one block per weight row m and pass: y[r][m] (+)= row . x[r] */
template <int T, int NR>
__global__ void __launch_bounds__(DS_CU_ROW_WARPS * 32)
gemv_kernel(const uint8_t *__restrict__ w, int64_t K, size_t row_bytes, const float *__restrict__ x, int64_t ldx,
            int64_t group_rows, int64_t group_stride, float *__restrict__ y, int64_t ldy, int n, int accumulate) {
    const int64_t m = blockIdx.x;
    const int nr = gemv_pass(x, ldx, y, ldy, n);
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

#define WR_WARPS 4 /* warps per block on the warp-row path */

/* each warp: 32 / LG lane groups of LG lanes, each on R consecutive rows
 * m; y[r][m] (+)= row . x[r] */
template <int T, int NR, int R>
__global__ void __launch_bounds__(WR_WARPS * 32)
gemv_wr_kernel(const uint8_t *__restrict__ w, int64_t K, size_t row_bytes, int64_t M, const float *__restrict__ x,
               int64_t ldx, int64_t group_rows, int64_t group_stride, float *__restrict__ y, int64_t ldy, int n,
               int accumulate, int LG) {
    const int nr = gemv_pass(x, ldx, y, ldy, n);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % LG;
    const int64_t m0 = (((int64_t)blockIdx.x * WR_WARPS + warp) * (32 / LG) + lane / LG) * R;
    const int nrow = M - m0 < R ? (int)(M - m0) : R;
    float acc[R][NR];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int r = 0; r < NR; r++) acc[i][r] = 0.f;
    __shared__ __align__(16) uint8_t stage[WR_WARPS][ds_cu_wr_stage_warp<T, R>()];
    /* group_rows % R == 0 (checked at launch): the R rows read one x slice */
    const int64_t goff = group_rows > 0 && nrow > 0 ? (m0 / group_rows) * group_stride : 0;
    ds_cu_wr_partial<T, NR, R>(w + (size_t)(nrow > 0 ? m0 : 0) * row_bytes, row_bytes, nrow, K / ds_cu_wr<T>::SBE,
                               x + goff, ldx, nr, LG, sub, acc, stage[warp]);
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int r = 0; r < NR; r++) acc[i][r] = ds_cu_group_sum(acc[i][r], LG);
    if (sub == 0) {
#pragma unroll
        for (int i = 0; i < R; i++) {
            if (i >= nrow) break;
#pragma unroll
            for (int r = 0; r < NR; r++) {
                if (r >= nr) break;
                float *dst = y + (size_t)r * ldy + m0 + i;
                *dst = accumulate ? *dst + acc[i][r] : acc[i][r];
            }
        }
    }
}

/* the warp-row path reads this weight: type, whole super-blocks, alignment
 * (staged types: the M rows start and end 16-byte aligned) */
template <int T> static bool wr_usable(const void *w, size_t row_bytes, int64_t K, int64_t M) {
    if constexpr (ds_cu_wr<T>::ok) {
        const int a = ds_cu_wr_staged<T>::on ? 16 : ds_cu_wr<T>::ALIGN;
        return K % ds_cu_wr<T>::SBE == 0 && (uintptr_t)w % a == 0 && row_bytes % ds_cu_wr<T>::ALIGN == 0 &&
               (size_t)M * row_bytes % a == 0;
    } else {
        return false;
    }
}

/* Rows per lane group on the warp-row path: 4 share each x load (measured
 * on attn_out: 850 -> 1350 GB/s), but a matrix of few rows then leaves SMs
 * idle (q3_K 7168 x 2048 at 4 rows: 0.24 waves, 365 GB/s), so fewer rows
 * for small M; 2 at most from two x rows on (registers). Depends on the
 * matrix, not on the row count n, except for that cap: sums do not depend
 * on R, so decode and prefill still agree bit for bit. */
static int wr_rows(int64_t M, int64_t group_rows, int nr) {
    int R = M >= 4096 ? 4 : M >= 1024 ? 2 : 1;
    if (nr > 1 && R > 2) R = 2;
    while (R > 1 && group_rows % R) R /= 2;
    return R;
}

static unsigned gemv_passes(int n) { return (unsigned)((n + GEMV_NR - 1) / GEMV_NR); }

template <int T, int NR, int R> static void launch_wr(const ds_cu_gemv_params *p, const float *x, float *y, int n) {
    const int lg = ds_cu_wr_lanes(p->K / ds_cu_wr<T>::SBE, ds_cu_wr<T>::LPS);
    const int64_t rows_per_block = (int64_t)WR_WARPS * (32 / lg) * R;
    const dim3 grid((unsigned)((p->M + rows_per_block - 1) / rows_per_block), gemv_passes(n));
    gemv_wr_kernel<T, NR, R><<<grid, WR_WARPS * 32, 0, p->stream>>>((const uint8_t *)p->w, p->K, p->row_bytes, p->M,
                                                                     x, p->ldx, p->group_rows, p->group_stride, y,
                                                                     p->ldy, n, p->accumulate, lg);
}

template <int T, int NR> static void launch_gemv(const ds_cu_gemv_params *p, const float *x, float *y, int n) {
    /* the warp-row path for every row count, so decode steps and prefill
     * passes form each row's sum the same way (test_cuda_blocks checks) */
    if constexpr (ds_cu_wr<T>::ok) {
        if (wr_usable<T>(p->w, p->row_bytes, p->K, p->M)) {
            const int R = wr_rows(p->M, p->group_rows, NR);
            if constexpr (NR == 1) {
                if (R == 4) return launch_wr<T, NR, 4>(p, x, y, n);
            }
            if (R >= 2) return launch_wr<T, NR, 2>(p, x, y, n);
            return launch_wr<T, NR, 1>(p, x, y, n);
        }
    }
    gemv_kernel<T, NR><<<dim3((unsigned)p->M, gemv_passes(n)), DS_CU_ROW_WARPS * 32, 0, p->stream>>>(
        (const uint8_t *)p->w, p->K, p->row_bytes, x, p->ldx, p->group_rows, p->group_stride, y, p->ldy, n,
        p->accumulate);
}

/* the smallest row count template that holds a pass: fewer registers, more
 * warps in flight; n > GEMV_NR rows run as passes of GEMV_NR in one launch */
template <int T> static void launch_gemv_nr(const ds_cu_gemv_params *p, const float *x, float *y, int n) {
    if (n == 1) launch_gemv<T, 1>(p, x, y, n);
    else if (n == 2) launch_gemv<T, 2>(p, x, y, n);
    else if (n <= 4) launch_gemv<T, 4>(p, x, y, n);
    else if (n <= 8) launch_gemv<T, 8>(p, x, y, n);
    else launch_gemv<T, GEMV_NR>(p, x, y, n);
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
    if (p->n > 65535 * GEMV_NR) {
        fprintf(stderr, "cuda error %s:%d: gemv: %d rows, at most %d\n", __FILE__, __LINE__, p->n, 65535 * GEMV_NR);
        return (int)cudaErrorInvalidValue;
    }
    switch (p->type) {
#define X(t) case t: launch_gemv_nr<t>(p, p->x, p->y, p->n); break;
        DS_CU_FOR_TYPES(X)
#undef X
    default:
        fprintf(stderr, "cuda error %s:%d: gemv: weight type %d has no CUDA kernel\n", __FILE__, __LINE__, p->type);
        return (int)cudaErrorInvalidValue;
    }
    DS_CU_TRY_LAUNCH();
    return 0;
}

/* ---- f32 weights in tiles (the router) ------------------------------------------- */

#define F32T_SEGS 8 /* warps of a block: each sums one K segment */

/* A block computes an MR (weight rows) x NR (x rows) tile of y. K is cut
 * into F32T_SEGS segments of whole 32-element steps; warp w sums segment w,
 * lane l taking k = l, l + 32, ... in order with fmaf; an xor-shuffle tree
 * adds the lanes, and the segments are added in order. A value's bits
 * depend only on K, not on MR, NR or n, so a decode step's router logits
 * equal a prefill's (the same experts), while a prefill reads each x row
 * once per MR weight rows: the block path read all x rows once per weight
 * row (7 launches of 1 ms in a ds10 pp512, H200, session 9). The segments
 * give a decode row 8 warps; one warp a row took 31 us a launch. */
template <int MR, int NR>
__global__ void __launch_bounds__(F32T_SEGS * 32)
gemv_f32_tile_kernel(const float *__restrict__ w, int64_t K, int64_t ldw, int64_t M, const float *__restrict__ x,
                     int64_t ldx, int n, float *__restrict__ y, int64_t ldy, int accumulate) {
    __shared__ float part[F32T_SEGS][MR][NR];
    const int lane = threadIdx.x & 31, seg = threadIdx.x >> 5;
    const int64_t m0 = (int64_t)blockIdx.x * MR;
    const int r0 = (int)blockIdx.y * NR;
    const int64_t steps = K / 32, per = (steps + F32T_SEGS - 1) / F32T_SEGS;
    const int64_t k0 = seg * per * 32, k1 = (seg + 1) * per * 32 < K ? (seg + 1) * per * 32 : K;
    const float *wp[MR], *xp[NR];
#pragma unroll
    for (int i = 0; i < MR; i++) wp[i] = w + (size_t)(m0 + i < M ? m0 + i : 0) * ldw + lane;
#pragma unroll
    for (int r = 0; r < NR; r++) xp[r] = x + (size_t)(r0 + r < n ? r0 + r : 0) * ldx + lane;
    float acc[MR][NR];
#pragma unroll
    for (int i = 0; i < MR; i++)
#pragma unroll
        for (int r = 0; r < NR; r++) acc[i][r] = 0.f;
#pragma unroll 4
    for (int64_t k = k0; k < k1; k += 32) {
        float wv[MR], xv[NR];
#pragma unroll
        for (int i = 0; i < MR; i++) wv[i] = __ldg(wp[i] + k);
#pragma unroll
        for (int r = 0; r < NR; r++) xv[r] = __ldg(xp[r] + k);
#pragma unroll
        for (int i = 0; i < MR; i++)
#pragma unroll
            for (int r = 0; r < NR; r++) acc[i][r] = __fmaf_rn(wv[i], xv[r], acc[i][r]);
    }
#pragma unroll
    for (int i = 0; i < MR; i++)
#pragma unroll
        for (int r = 0; r < NR; r++) {
            float v = acc[i][r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
            if (lane == 0) part[seg][i][r] = v;
        }
    __syncthreads();
    if (threadIdx.x < MR * NR) {
        const int i = threadIdx.x / NR, r = threadIdx.x % NR;
        float v = part[0][i][r];
#pragma unroll
        for (int s = 1; s < F32T_SEGS; s++) v += part[s][i][r];
        if (m0 + i < M && r0 + r < n) {
            float *dst = y + (size_t)(r0 + r) * ldy + m0 + i;
            *dst = accumulate ? *dst + v : v;
        }
    }
}

template <int MR, int NR> static void launch_f32_tiles(const ds_cu_gemv_params *p) {
    const dim3 grid((unsigned)((p->M + MR - 1) / MR), (unsigned)((p->n + NR - 1) / NR));
    gemv_f32_tile_kernel<MR, NR><<<grid, F32T_SEGS * 32, 0, p->stream>>>(
        (const float *)p->w, p->K, (int64_t)(p->row_bytes / 4), p->M, p->x, p->ldx, p->n, p->y, p->ldy,
        p->accumulate);
}

extern "C" int ds_cu_gemv_f32_tiles(const ds_cu_gemv_params *p) {
    if (p->M <= 0 || p->n <= 0) return 0;
    if (p->type != DS_TYPE_F32 || p->K % 32 || p->group_rows || p->row_bytes % 4 || ((uintptr_t)p->w & 3) ||
        ((uintptr_t)p->x & 3) || (size_t)p->K * 4 > p->row_bytes || p->n > 65535 * 8) {
        fprintf(stderr, "cuda error %s:%d: gemv_f32_tiles: f32 weights, K %% 32 == 0, no head groups, aligned rows\n",
                __FILE__, __LINE__);
        return (int)cudaErrorInvalidValue;
    }
    /* a block a weight row while few x rows (decode: spread over the SMs) */
    if (p->n <= 2) launch_f32_tiles<1, 2>(p);
    else if (p->n <= 4) launch_f32_tiles<2, 4>(p);
    else launch_f32_tiles<4, 8>(p);
    DS_CU_TRY_LAUNCH();
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
