/* gemm.cu: the prefill GEMM on tensor cores (see gemm.h).
 *
 * A block of 4 warps computes a 64 (weight rows) x BN (activation rows)
 * tile of y. Quantized weights come in 256 columns at a time: the tile's
 * raw blocks are copied to shared memory with coalesced 2-byte loads (a
 * thread per weight row reading its own blocks from global memory made
 * every load touch 16 rows' cache lines: ~200 GB/s of dequantized weights).
 * Per K step of 64: each thread dequantizes one 32-element chunk of one
 * weight row from there (ds_cu_dq32, the same values as the CPU) to f16,
 * the f16 activation rows are copied in with 16-byte loads, and each warp
 * runs mma.sync m16n8k16 (f16 in, f32 accumulate) on its 32 x BN/2 part,
 * fragments read with ldmatrix. Rows in shared memory are padded by 16
 * bytes so the 8 rows an ldmatrix phase reads hit distinct banks. Plain
 * f32/f16/bf16 weights are read directly with 16-byte loads.
 *
 * Why f16 and not bf16: 11 significant bits against 8; weights of these
 * models are far inside f16's range, and activations are scaled per row by
 * a power of two (ds_cu_to_half_rows) so no value overflows and the scale
 * comes back exactly. Each product is then exact to about 2^-11 relative,
 * with f32 sums — test_cuda_gemm bounds it.
 *
 * The grid's x runs over the activation tiles, so the blocks that run at the
 * same time share a weight tile (read from DRAM once) and the f16
 * activations stay in L2. A grouped launch (MoE) takes its activation tiles
 * from a list: tile i = rows [row0, row0 + rows) of expert e's gathered
 * inputs, which use expert e's weights. */
#include "gemm.h"
#include "dequant.cuh"
#include "dot_strided.cuh" /* ds_cu_bytes4, ds_cu_ld4a2 */
#include "cuda_check.h"

#include <cuda_fp16.h>

#define GM_BM 64      /* weight rows per block */
#define GM_BK 64      /* K per step: two 32-element chunks per weight row */
#define GM_PAD 8      /* f16 elements of padding per shared row */
#define GM_LD (GM_BK + GM_PAD)
#define GM_THREADS 128
#define GM_RAW_K 256  /* weight columns staged raw per pass */

/* raw bytes of GM_RAW_K columns of a quantized row (0: read directly) */
template <int T> __host__ __device__ constexpr int gm_raw_bytes() {
    if constexpr (T == DS_TYPE_F32 || T == DS_TYPE_F16 || T == DS_TYPE_BF16) return 0;
    else return GM_RAW_K / ds_cu_blk<T>::elems * ds_cu_blk<T>::bytes;
}
/* their stride in shared memory: 16-byte multiples, so the K-quants' fields
 * (all at 4-byte multiples inside a super-block) take 4-byte loads */
template <int T> __host__ __device__ constexpr int gm_raw_stride() { return (gm_raw_bytes<T>() + 15) & ~15; }


/* 32 elements of chunk c (of a super-block, or 32-element block c) from a
 * raw row in shared memory to f16 pairs: each value is the exact f32 value
 * ds_cu_dq32 gives (these types' products are exact in f32), rounded once,
 * so both paths give the same bits. The K-quants and q8_0 unpack four
 * values per 32-bit word with the GEMV's ds_cu_bytes4 (fields to floats by
 * OR-ing in an exponent: no int-to-float conversions, which run at a quarter
 * of the FMA rate and bounded the first version of this dequantization);
 * the other types go through ds_cu_dq32. */
template <int T> __device__ __forceinline__ void gm_dq32(const uint8_t *b, int c, __half2 h[16]) {
    if constexpr (T == DS_TYPE_Q4_K || T == DS_TYPE_Q5_K) {
        const int j = c & 7;
        const float d = ds_cu_h2f(b), dmin = ds_cu_h2f(b + 2);
        int sc, m;
        ds_cu_k_scale_min(b + 4, j, &sc, &m);
        const float dl = d * (float)sc, ml = dmin * (float)m;
        const uint32_t *q = (const uint32_t *)(b + (T == DS_TYPE_Q4_K ? 16 : 48) + (j / 2) * 32);
        const int shift = 4 * (j & 1);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            uint32_t x = (q[i] >> shift) & 0x0F0F0F0Fu;
            if constexpr (T == DS_TYPE_Q5_K) x |= ((((const uint32_t *)(b + 16))[i] >> j) & 0x01010101u) << 4;
            float f[4];
            ds_cu_bytes4(x, 0x1F, 0.f, f);
            h[2 * i] = __floats2half2_rn(fmaf(dl, f[0], -ml), fmaf(dl, f[1], -ml));
            h[2 * i + 1] = __floats2half2_rn(fmaf(dl, f[2], -ml), fmaf(dl, f[3], -ml));
        }
    } else if constexpr (T == DS_TYPE_Q3_K) {
        const int j = c & 7;
        const uint8_t *s = b + 96;
        const float d = ds_cu_h2f(b + 108);
        float dl[2];
#pragma unroll
        for (int t = 0; t < 2; t++) {
            const int k = 2 * j + t;
            const int lo = (s[k % 8] >> (4 * (k / 8))) & 0x0F, hi = (s[8 + k % 4] >> (2 * (k / 4))) & 0x03;
            dl[t] = d * (float)((lo | (hi << 4)) - 32);
        }
        const uint32_t *qs = (const uint32_t *)(b + 32 + (j >> 2) * 32), *hm = (const uint32_t *)b;
        const int shift = 2 * (j & 3);
#pragma unroll
        for (int i = 0; i < 8; i++) { /* x = low 2 bits | high bit << 2: the value is x - 4 */
            const uint32_t x = ((qs[i] >> shift) & 0x03030303u) | (((hm[i] >> j) & 0x01010101u) << 2);
            const float sc = dl[i / 4];
            float f[4];
            ds_cu_bytes4(x, 0x07, 4.f, f);
            h[2 * i] = __floats2half2_rn(sc * f[0], sc * f[1]);
            h[2 * i + 1] = __floats2half2_rn(sc * f[2], sc * f[3]);
        }
    } else if constexpr (T == DS_TYPE_Q6_K) {
        const int j = c & 7, hh = j >> 2, s = j & 3;
        const int8_t *scales = (const int8_t *)(b + 192);
        const float d = ds_cu_h2f(b + 208);
        const float dl0 = d * (float)scales[2 * j], dl1 = d * (float)scales[2 * j + 1];
        const uint32_t *ql = (const uint32_t *)(b + 64 * hh + 32 * (s & 1)), *qh = (const uint32_t *)(b + 128 + 32 * hh);
        const int sl = 4 * (s >> 1), sh = 2 * s;
#pragma unroll
        for (int i = 0; i < 8; i++) { /* x = 6 bits: the value is x - 32 */
            const uint32_t x = ((ql[i] >> sl) & 0x0F0F0F0Fu) | (((qh[i] >> sh) & 0x03030303u) << 4);
            const float sc = i < 4 ? dl0 : dl1;
            float f[4];
            ds_cu_bytes4(x, 0x3F, 32.f, f);
            h[2 * i] = __floats2half2_rn(sc * f[0], sc * f[1]);
            h[2 * i + 1] = __floats2half2_rn(sc * f[2], sc * f[3]);
        }
    } else if constexpr (T == DS_TYPE_Q8_0) {
        const uint8_t *blk = b + (size_t)c * 34; /* 2-byte aligned */
        const float d = ds_cu_h2f(blk);
#pragma unroll
        for (int i = 0; i < 8; i++) { /* signed bytes + 128 via the sign bit */
            float f[4];
            ds_cu_bytes4(ds_cu_ld4a2(blk + 2 + 4 * i) ^ 0x80808080u, 0xFF, 128.f, f);
            h[2 * i] = __floats2half2_rn(f[0] * d, f[1] * d);
            h[2 * i + 1] = __floats2half2_rn(f[2] * d, f[3] * d);
        }
    } else {
        float v[32];
        ds_cu_dq32<T>(b, c, v);
#pragma unroll
        for (int i = 0; i < 16; i++) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
    }
}

extern "C" int ds_cu_gemm_tile_rows(int avg_rows) { return avg_rows <= 32 ? 32 : avg_rows <= 64 ? 64 : 128; }

/* ---- activations to f16 ----------------------------------------------------- */

__global__ void to_half_kernel(const float *__restrict__ x, int64_t ldx, int64_t cols, __half *__restrict__ xh,
                               float *__restrict__ inv) {
    __shared__ float part[32];
    const int r = blockIdx.x;
    const float *src = x + (size_t)r * ldx;
    float mx = 0.f;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) mx = fmaxf(mx, fabsf(src[i]));
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = 0.f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) mx = fmaxf(mx, part[i]);
    /* absmax = f * 2^e with f in [0.5, 1): scaled by 2^(14 - e) it is in [2^13, 2^14) */
    int e = 0;
    if (mx > 0.f && isfinite(mx)) frexpf(mx, &e);
    if (e < -100) e = -100;
    const float sc = ldexpf(1.f, 14 - e);
    __half *dst = xh + (size_t)r * ldx;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = __float2half_rn(src[i] * sc);
    if (threadIdx.x == 0) inv[r] = ldexpf(1.f, e - 14);
}

extern "C" int ds_cu_to_half_rows(const float *x, int64_t ldx, int64_t cols, int n, void *xh, float *inv,
                                  cudaStream_t s) {
    if (n <= 0) return 0;
    to_half_kernel<<<n, 256, 0, s>>>(x, ldx, cols, (__half *)xh, inv);
    DS_CU_TRY_LAUNCH();
    return 0;
}

/* ---- the tile kernel ---------------------------------------------------------- */

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* d += a (16x16, row) * b (16x8, col); f16 inputs, f32 accumulators */
__device__ __forceinline__ void mma_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Fragment ownership (PTX ISA, mma.m16n8k16 f16), lane = 4 g + t:
 *   A (16 x 16, rows m, cols k): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
 *   B (16 x 8, rows k, cols n):  b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
 *   C (16 x 8):                  c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..2t+1)
 * ldmatrix.x4 gives each lane, of matrix i (8 x 8 b16, addressed by lanes
 * 8i..8i+7, one row each), row lane/4, elements 2(lane%4)..+1. So A from
 * Ws[m][k]: lane addresses row m = lane % 16, k + 8 (lane / 16) -> a0..a3.
 * B from Xs[n][k] (k contiguous = B's columns): matrices (n 0-7, k 0-7),
 * (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) -> b0 b1 of two n8 tiles;
 * lane addresses row n = (lane & 7) + 8 (lane >> 4), k + 8 ((lane >> 3) & 1). */
template <int T, int BN>
__global__ void __launch_bounds__(GM_THREADS)
gemm_kernel(ds_cu_gemm_params p) {
    constexpr int NJ = BN / 16; /* n8 tiles per warp: warps split BN in two halves */
    constexpr int RAW = gm_raw_bytes<T>(), RAWS = gm_raw_stride<T>();
    __shared__ __align__(16) uint16_t raw[RAW ? GM_BM * RAWS / 2 : 1];
    __shared__ __align__(16) __half Ws[GM_BM][GM_LD];
    __shared__ __align__(16) __half Xs[BN][GM_LD];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int64_t m0 = (int64_t)blockIdx.y * GM_BM;
    int64_t r0;
    int nr;
    const uint8_t *wb = (const uint8_t *)p.w;
    if (p.tiles) {
        const int32_t *t = p.tiles + 3 * blockIdx.x;
        wb += (size_t)t[0] * p.expert_bytes;
        r0 = t[1];
        nr = t[2];
    } else {
        r0 = (int64_t)blockIdx.x * BN;
        nr = p.n - r0 < BN ? (int)(p.n - r0) : BN;
    }
    const int64_t goff = p.group_rows > 0 ? (m0 / p.group_rows) * p.group_stride : 0;
    const __half *xb = (const __half *)p.xh + (size_t)r0 * p.ldx + goff;

    float acc[2][NJ][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[i][j][c] = 0.f;

    /* this thread's weight chunk: row wr (of 64), chunk wc (of 2) per step */
    const int wr = tid >> 1, wc = tid & 1;
    const bool w_live = m0 + wr < p.M;
    const uint8_t *wrow = wb + (size_t)(w_live ? m0 + wr : 0) * p.row_bytes;
    const int nchunks = (int)(p.K / 32);

    for (int64_t k0 = 0; k0 < p.K; k0 += GM_BK) {
        if constexpr (RAW > 0) {
            if (k0 % GM_RAW_K == 0) { /* stage the next 256 columns of the 64 rows */
                constexpr int W16 = RAW / 2;
                const int64_t bytes0 = k0 / ds_cu_blk<T>::elems * ds_cu_blk<T>::bytes;
                const int64_t left = (p.K - k0) / ds_cu_blk<T>::elems * ds_cu_blk<T>::bytes; /* K % blk == 0 */
                const int live = left < RAW ? (int)left / 2 : W16;
                for (int i = tid; i < GM_BM * W16; i += GM_THREADS) {
                    const int row = i / W16, w16 = i - row * W16;
                    uint16_t v = 0;
                    if (m0 + row < p.M && w16 < live)
                        v = *(const uint16_t *)(wb + (size_t)(m0 + row) * p.row_bytes + bytes0 + 2 * w16);
                    raw[row * (RAWS / 2) + w16] = v;
                }
                __syncthreads();
            }
        }
        {
            const int c = (int)(k0 / 32) + wc;
            uint4 *dst = (uint4 *)&Ws[wr][wc * 32];
            if (w_live && c < nchunks) {
                __align__(16) __half2 h[16];
                if constexpr (RAW > 0) {
                    gm_dq32<T>((const uint8_t *)raw + wr * RAWS, (int)(k0 % GM_RAW_K) / 32 + wc, h);
                } else {
                    float v[32];
                    ds_cu_dq32<T>(wrow, c, v);
#pragma unroll
                    for (int i = 0; i < 16; i++) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
                }
#pragma unroll
                for (int q = 0; q < 4; q++) dst[q] = ((const uint4 *)h)[q];
            } else {
#pragma unroll
                for (int q = 0; q < 4; q++) dst[q] = make_uint4(0, 0, 0, 0);
            }
        }
        /* BN rows x 64 f16 = BN x 8 uint4 */
#pragma unroll
        for (int i = tid; i < BN * 8; i += GM_THREADS) {
            const int row = i >> 3, col = (i & 7) * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (row < nr && k0 + col < p.K) v = *(const uint4 *)(xb + (size_t)row * p.ldx + k0 + col);
            *(uint4 *)&Xs[row][col] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GM_BK; kk += 16) {
            uint32_t a[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++) ldmatrix_x4(a[i], &Ws[wm * 32 + i * 16 + (lane & 15)][kk + 8 * (lane >> 4)]);
#pragma unroll
            for (int j = 0; j < NJ; j += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, &Xs[wn * (BN / 2) + j * 8 + (lane & 7) + 8 * (lane >> 4)][kk + 8 * ((lane >> 3) & 1)]);
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    mma_16816(acc[i][j], a[i], b[0], b[1]);
                    mma_16816(acc[i][j + 1], a[i], b[2], b[3]);
                }
            }
        }
        __syncthreads();
    }

    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < 2; i++) {
#pragma unroll
        for (int j = 0; j < NJ; j++) {
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int64_t m = m0 + wm * 32 + i * 16 + g + (c >= 2 ? 8 : 0);
                const int n = wn * (BN / 2) + j * 8 + 2 * t + (c & 1);
                if (m < p.M && n < nr) {
                    float *dst = p.y + (size_t)(r0 + n) * p.ldy + m;
                    const float v = acc[i][j][c] * p.inv[r0 + n];
                    *dst = p.accumulate ? *dst + v : v;
                }
            }
        }
    }
}

extern "C" int ds_cu_gemm_supported(int type, int64_t ldx, int64_t group_rows, int64_t group_stride) {
    switch (type) {
#define X(t) case t:
        DS_CU_FOR_TYPES(X)
#undef X
        break;
    default: return 0;
    }
    return ldx % 8 == 0 && group_stride % 8 == 0 && (group_rows == 0 || group_rows % GM_BM == 0);
}

template <int T> static void launch_gemm(const ds_cu_gemm_params *p, int bn, unsigned nx) {
    const dim3 grid(nx, (unsigned)((p->M + GM_BM - 1) / GM_BM));
    if (bn == 32) gemm_kernel<T, 32><<<grid, GM_THREADS, 0, p->stream>>>(*p);
    else if (bn == 64) gemm_kernel<T, 64><<<grid, GM_THREADS, 0, p->stream>>>(*p);
    else gemm_kernel<T, 128><<<grid, GM_THREADS, 0, p->stream>>>(*p);
}

extern "C" int ds_cu_gemm(const ds_cu_gemm_params *p) {
    if (p->M <= 0 || (p->tiles ? p->n_tiles <= 0 : p->n <= 0)) return 0;
    if (p->K % 32 || !ds_cu_gemm_supported(p->type, p->ldx, p->group_rows, p->group_stride) ||
        ((uintptr_t)p->xh & 15)) {
        fprintf(stderr, "cuda error %s:%d: gemm: unsupported shape (type %d, K %lld, ldx %lld, group %lld/%lld)\n",
                __FILE__, __LINE__, p->type, (long long)p->K, (long long)p->ldx, (long long)p->group_rows,
                (long long)p->group_stride);
        return (int)cudaErrorInvalidValue;
    }
    int bn;
    unsigned nx;
    if (p->tiles) {
        bn = p->tile_rows;
        nx = (unsigned)p->n_tiles;
    } else {
        bn = ds_cu_gemm_tile_rows(p->n);
        nx = (unsigned)((p->n + bn - 1) / bn);
    }
    if (bn != 32 && bn != 64 && bn != 128) return (int)cudaErrorInvalidValue;
    switch (p->type) {
#define X(t) case t: launch_gemm<t>(p, bn, nx); break;
        DS_CU_FOR_TYPES(X)
#undef X
    default: return (int)cudaErrorInvalidValue;
    }
    DS_CU_TRY_LAUNCH();
    return 0;
}
