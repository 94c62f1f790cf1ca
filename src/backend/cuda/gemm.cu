/* gemm.cu: the prefill GEMM on tensor cores (see gemm.h).
 *
 * A block of 4 warps computes a 64 (weight rows) x BN (activation rows)
 * tile of y. Quantized weights come in passes of 256 columns: the tile's
 * raw blocks are copied to shared memory by cp.async in 16-byte chunks
 * (a thread per weight row reading its own blocks from global memory made
 * every load touch 16 rows' cache lines: ~200 GB/s of dequantized weights).
 * Per K step of 64: each thread dequantizes one 32-element chunk of one
 * weight row from there (ds_cu_dq32, the same values as the CPU) to f16,
 * the f16 activation rows come by cp.async too, and each warp runs
 * mma.sync m16n8k16 (f16 in, f32 accumulate) on its 32 x BN/2 part,
 * fragments read with ldmatrix. The steps are pipelined (gemm_kernel):
 * loads run ahead, dequantization overlaps the MMAs. Rows in shared memory
 * are padded by 16 bytes so the 8 rows an ldmatrix phase reads hit distinct
 * banks. Plain f32/f16/bf16 weights are read directly with 16-byte loads.
 *
 * The first version (one raw pass at a time by 2-byte loads, a barrier
 * between loading, dequantizing and multiplying) ran the MoE expert tiles
 * of a ds10 pp512 at ~0.95 TB/s of weights, latency-bound (ncu, H200,
 * session 9).
 *
 * Why f16 and not bf16: 11 significant bits against 8; weights of these
 * models are far inside f16's range, and activations are scaled per row by
 * a power of two (ds_cu_to_half_rows) so no value overflows and the scale
 * comes back exactly. Each product is then exact to about 2^-11 relative,
 * with f32 sums — test_cuda_gemm bounds it.
 *
 * Dense: the grid's x runs over the activation tiles, so the blocks that run
 * at the same time share a weight tile (read from DRAM once) and the f16
 * activations stay in L2. A grouped launch (MoE) takes its activation tiles
 * from a list: tile i = rows [row0, row0 + rows) of expert e's gathered
 * inputs, which use expert e's weights. There x runs over the weight tiles
 * (w_fast): the blocks of one expert run together and share its activation
 * tile in L2, whose weights no other tile reads. With the tiles on x, a
 * ds10 pp512's routed products read ~2x their weight bytes from DRAM (ncu,
 * session 9): ~270 experts' activations per weight tile do not stay in L2. */
#include "gemm.h"
#include "dequant.cuh"
#include "dot_strided.cuh" /* ds_cu_bytes4, ds_cu_ld4a2 */
#include "cuda_check.h"

#include <cuda_fp16.h>
#include <stdlib.h>

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

/* N words from the 2-byte aligned shared address p, each shifted right by
 * rs (0..15) bits: N + 1 aligned loads and a funnel shift each (reads up to
 * 4 bytes past p + 4N; bits shifted in at the top come from the next word) */
template <int N> __device__ __forceinline__ void gm_ldw(const uint8_t *p, uint32_t *o, int rs = 0) {
    /* p minus its misalignment, as pointer arithmetic: an integer mask loses
     * the shared address space and the loads become generic (LD, not LDS) */
    const uint32_t *a = (const uint32_t *)(p - ((uintptr_t)p & 3));
    const int sh = (int)((uintptr_t)p & 2) * 8 + rs;
    uint32_t w[N + 1];
#pragma unroll
    for (int k = 0; k <= N; k++) w[k] = a[k];
#pragma unroll
    for (int k = 0; k < N; k++) o[k] = __funnelshift_r(w[k], w[k + 1], sh);
}

/* 32 elements of chunk c (of a super-block, or 32-element block c) from a
 * raw row in shared memory (b 2-byte aligned; 4-byte for q4_K/q5_K) to f16
 * pairs: each value is the exact f32 value ds_cu_dq32 gives (these types'
 * products are exact in f32), rounded once, so both paths give the same
 * bits (test_cuda_gemm's one-hot check). The K-quants and q8_0 unpack four
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
        /* in f16 arithmetic, with the same bits as the f32 way (value = d *
         * (sc - 32) * (x - 4), exact in f32, rounded once): x - 4 and its
         * product with sc - 32 (|.| <= 128) are exact f16 integers, and the
         * product with d rounds once (the _rn forms: never fused). Fields
         * come out of one funnel shift a word (alignment and field shift in
         * one), x = h * 4 + low bits in one LEA, and the two 6-bit scales of
         * the chunk are made f16 by an exponent byte (1024 + v, less 1056),
         * not by int-to-half conversions. */
        const int j = c & 7;
        const uint8_t *s = b + 96;
        const __half2 d = __half2half2(__ushort_as_half(*(const uint16_t *)(b + 108)));
        /* sub-blocks 2j and 2j + 1: low nibbles in bytes 2j % 8 and + 1 (the high
         * nibbles for j >= 4), high 2 bits in bytes 8 + 2j % 4 and + 1 */
        const uint32_t lo = (uint32_t)(*(const uint16_t *)(s + (2 * j) % 8) >> (4 * (j >> 2))) & 0x0F0Fu;
        const uint32_t hi = (uint32_t)(*(const uint16_t *)(s + 8 + (2 * j) % 4) >> (2 * (j >> 1))) & 0x0303u;
        const uint32_t v2 = __byte_perm(lo | hi << 4, 0x64646464u, 0x4140); /* f16 1024 + v, two of them */
        const __half2 sc2 = __hsub2_rn(*(const __half2 *)&v2, __half2half2(__ushort_as_half(0x6420))); /* 1056 */
        const __half2 sc[2] = { __low2half2(sc2), __high2half2(sc2) };
        uint32_t qs[8], hm[8];
        gm_ldw<8>(b + 32 + (j >> 2) * 32, qs, 2 * (j & 3));
        gm_ldw<8>(b, hm, j);
        const __half2 off = __half2half2(__ushort_as_half(0x6404)); /* 1028 */
#pragma unroll
        for (int i = 0; i < 8; i++) { /* x = low 2 bits | high bit << 2: the value is x - 4 */
            const uint32_t x = ((hm[i] & 0x01010101u) << 2) + (qs[i] & 0x03030303u);
            /* bytes 0,1 and 2,3 of x into f16 1024 + x (exponent byte 0x64) */
            const uint32_t e01 = __byte_perm(x, 0x64646464u, 0x4140), e23 = __byte_perm(x, 0x64646464u, 0x4342);
            h[2 * i] = __hmul2_rn(__hmul2_rn(__hsub2_rn(*(const __half2 *)&e01, off), sc[i / 4]), d);
            h[2 * i + 1] = __hmul2_rn(__hmul2_rn(__hsub2_rn(*(const __half2 *)&e23, off), sc[i / 4]), d);
        }
    } else if constexpr (T == DS_TYPE_Q6_K) {
        const int j = c & 7, hh = j >> 2, s = j & 3;
        const int8_t *scales = (const int8_t *)(b + 192);
        const float d = ds_cu_h2f(b + 208);
        const float dl0 = d * (float)scales[2 * j], dl1 = d * (float)scales[2 * j + 1];
        uint32_t ql[8], qh[8];
        gm_ldw<8>(b + 64 * hh + 32 * (s & 1), ql);
        gm_ldw<8>(b + 128 + 32 * hh, qh);
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

/* float4s a thread keeps in registers between the two passes: rows up to
 * 256 * 4 * 20 = 20480 columns (all of V3's) read DRAM once */
#define TH_REG 20

__global__ void __launch_bounds__(256) to_half_kernel(const float *__restrict__ x, int64_t ldx, int64_t cols,
                                                    __half *__restrict__ xh, float *__restrict__ inv, bool hold) {
    __shared__ float part[32];
    const int r = blockIdx.x;
    const float *src = x + (size_t)r * ldx;
    __half *dst = xh + (size_t)r * ldx;
    /* float4 loads where the row allows (all the model's rows): the scalar
     * loop ran at ~0.9 TB/s, 5 ms of a ds10 pp512 (session 9); rows that fit
     * stay in registers: reading them again for the second pass made the
     * kernel ~2 TB/s, 1.8 ms of a pp512 (ncu, session 13) */
    const bool vec = cols % 4 == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 7) == 0;
    const int64_t n4 = cols / 4;
    const bool held = vec && hold && n4 <= (int64_t)TH_REG * blockDim.x;
    float4 v[TH_REG];
    float mx = 0.f;
    if (held) {
#pragma unroll
        for (int q = 0; q < TH_REG; q++) {
            const int64_t i = threadIdx.x + (int64_t)q * blockDim.x;
            v[q] = i < n4 ? ((const float4 *)src)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int q = 0; q < TH_REG; q++)
            mx = fmaxf(mx, fmaxf(fmaxf(fabsf(v[q].x), fabsf(v[q].y)), fmaxf(fabsf(v[q].z), fabsf(v[q].w))));
    } else if (vec)
        for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) {
            const float4 f = ((const float4 *)src)[i];
            mx = fmaxf(mx, fmaxf(fmaxf(fabsf(f.x), fabsf(f.y)), fmaxf(fabsf(f.z), fabsf(f.w))));
        }
    else
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
    auto put4 = [&](int64_t i, float4 f) {
        __half2 h[2] = { __floats2half2_rn(f.x * sc, f.y * sc), __floats2half2_rn(f.z * sc, f.w * sc) };
        ((uint2 *)dst)[i] = *(const uint2 *)h;
    };
    if (held) {
#pragma unroll
        for (int q = 0; q < TH_REG; q++) {
            const int64_t i = threadIdx.x + (int64_t)q * blockDim.x;
            if (i < n4) put4(i, v[q]);
        }
    } else if (vec)
        for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) put4(i, ((const float4 *)src)[i]);
    else
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = __float2half_rn(src[i] * sc);
    if (threadIdx.x == 0) inv[r] = ldexpf(1.f, e - 14);
}

extern "C" int ds_cu_to_half_rows(const float *x, int64_t ldx, int64_t cols, int n, void *xh, float *inv,
                                  cudaStream_t s) {
    if (n <= 0) return 0;
    static const bool hold = [] { /* DSINFER_CUDA_TO_HALF_HOLD=0: the two-pass loop (A/B runs) */
        const char *e = getenv("DSINFER_CUDA_TO_HALF_HOLD");
        return !e || atoi(e) != 0;
    }();
    to_half_kernel<<<n, 256, 0, s>>>(x, ldx, cols, (__half *)xh, inv, hold);
    DS_CU_TRY_LAUNCH();
    return 0;
}

/* ---- the tile kernel ---------------------------------------------------------- */

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* four 8x8 b16 matrices from shared memory (address a) */
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
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
/* 16 bytes global -> shared, asynchronously and L2 only (weights are read
 * once, activations stay in L2); zero: fill the 16 bytes with zeros, read nothing */
__device__ __forceinline__ void gm_cp16(uint32_t dst, const void *src, bool zero) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(__cvta_generic_to_global(src)),
                 "r"(zero ? 0 : 16)
                 : "memory");
}
__device__ __forceinline__ void gm_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void gm_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

/* Shared memory of one block (dynamic): two raw weight passes, two f16
 * weight tiles, NX activation tiles. A pass is GM_RAW_K columns of the 64
 * rows, each row copied in the aligned 16-byte chunks that cover its bytes
 * (q3_K/q6_K/q8_0 rows are only 2-byte aligned), so its bytes start at
 * (address & 15) in a slot with room for that offset, the chunk rounding
 * and the 4 bytes gm_ldw reads past its range. */
template <int T, int BN, bool SW = false> struct gm_smem {
    static constexpr int RAW = gm_raw_bytes<T>();
    /* q4_K/q5_K rows are 16-byte aligned (144/176-byte blocks; launch_gemm
     * checks), so a pass's bytes fill its slot exactly and nothing is read
     * past it: 8 KB less a block, which lets a q4_K block of 128 activation
     * rows run 3 to an SM (not 2) and one of 32 rows 4 (not 3) */
    static constexpr bool A16 = T == DS_TYPE_Q4_K || T == DS_TYPE_Q5_K;
    /* an odd number of 16-byte units: the 16 rows a warp dequantizes then
     * fall on 8 bank offsets, not 2 (q4_K's 192 bytes made 8-way conflicts) */
    static constexpr int SLOT = RAW ? (A16 ? RAW : ((RAW + 14 + 15 + 4 + 15) / 16 | 1) * 16) : 0;
    static_assert(!A16 || RAW % 32 == 16, "a slot of an odd number of 16-byte units");
    static constexpr int CHUNKS = A16 ? RAW / 16 : (RAW + 14 + 15) / 16; /* most chunks a row's pass takes */
    /* activation tiles: NX - 1 steps ahead */
    static constexpr int NX = SW || BN > 64 ? 2 : 3;
    /* f16 weight tile rows: padded by 16 bytes (ldmatrix's 8 rows on distinct
     * banks), or SW: 128 bytes with the 16-byte chunks swizzled (chunk c of
     * row m at c ^ (m & 7)), 2 KB less a buffer */
    static constexpr int WLD = SW ? GM_BK : GM_LD;
    static constexpr size_t ws_off = (size_t)2 * GM_BM * SLOT;
    static constexpr size_t xs_off = ws_off + (size_t)2 * GM_BM * WLD * 2;
    static constexpr size_t total = xs_off + (size_t)NX * BN * GM_LD * 2;
};

/* A block computes y's 64 weight rows x BN activation rows in K steps of
 * 64, as a pipeline (one barrier a step): step s runs the MMAs on weight
 * tile s & 1 and activation tile s % NX while it dequantizes step s + 1's
 * weights into the other weight tile, with step s + NX - 1's activations
 * and the raw pass after next already on their way (cp.async). Raw pass P
 * (buffer P & 1) is issued at step 4P - 5 (passes 0 and 1 before the loop),
 * when step 4P - 6 has dequantized the last of pass P - 2. Every value, and
 * the order of the MMAs, is what a step-by-step version computes. */
template <int T, int BN, bool SW = false>
__global__ void __launch_bounds__(GM_THREADS)
gemm_kernel(ds_cu_gemm_params p, bool w_fast) {
    using SM = gm_smem<T, BN, SW>;
    constexpr int NJ = BN / 16; /* n8 tiles per warp: warps split BN in two halves */
    constexpr int RAW = SM::RAW, SLOT = SM::SLOT, NX = SM::NX;
    constexpr int SPP = GM_RAW_K / GM_BK; /* steps per raw pass */
    constexpr int XQ = BN * 8 / GM_THREADS; /* 16-byte activation chunks per thread a step */
    constexpr int RQ = (GM_BM * SM::CHUNKS + GM_THREADS - 1) / GM_THREADS; /* raw chunks per thread a pass */
    constexpr uint32_t WS_BYTES = GM_BM * SM::WLD * 2, XS_BYTES = BN * GM_LD * 2, ROW_BYTES = GM_LD * 2;
    extern __shared__ __align__(16) uint8_t gm_shared[];
    uint8_t *raw = gm_shared;
    __half(*Ws)[GM_BM][SM::WLD] = (__half(*)[GM_BM][SM::WLD])(gm_shared + SM::ws_off);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const unsigned xt = w_fast ? blockIdx.y : blockIdx.x; /* activation tile */
    const int64_t m0 = (int64_t)(w_fast ? blockIdx.x : blockIdx.y) * GM_BM;
    int64_t r0;
    int nr;
    const uint8_t *wb = (const uint8_t *)p.w;
    if (p.tiles) {
        const int32_t *t = p.tiles + 3 * xt;
        wb += (size_t)t[0] * p.expert_bytes;
        r0 = t[1];
        nr = t[2];
    } else {
        r0 = (int64_t)xt * BN;
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

    /* Every address a step uses is this thread's base plus a multiple of
     * the step (the first version recomputed them from the indices each
     * step: ~45 % of its instructions, ncu SASS counts, session 10). */
    const int nchunks = (int)(p.K / 32), steps = (int)((p.K + GM_BK - 1) / GM_BK);
    /* activation chunks: rows xr0 + 16 q, columns xc..xc+7 of the step's 64 */
    const int xr0 = tid >> 3, xc = (tid & 7) * 8;
    const __half *xsrc = xb + (size_t)xr0 * p.ldx + xc;
    const size_t xstep16 = (size_t)16 * p.ldx; /* elements between this thread's chunks */
    uint32_t xlive = 0;
#pragma unroll
    for (int q = 0; q < XQ; q++) xlive |= (uint32_t)(xr0 + 16 * q < nr) << q;
    const uint32_t xs_dst = smem_addr(gm_shared + SM::xs_off) + (uint32_t)(xr0 * GM_LD + xc) * 2;
    /* this thread's weight chunk: row wr (of 64), chunk wc (of 2) per step */
    const int wr = tid >> 1, wc = tid & 1;
    const bool w_live = m0 + wr < p.M;
    const uint8_t *wtile = wb + (size_t)m0 * p.row_bytes; /* the tile's first row */
    const uint8_t *wrow = wtile + (size_t)(w_live ? wr : 0) * p.row_bytes;
    const uint8_t *wend = wb + (size_t)p.M * p.row_bytes;
    /* a raw pass's first byte for row r is wtile + r * row_bytes + P * RAW: its
     * offset in 16 bytes, which the copy and the dequantization agree on */
    const uint32_t wrow_lo = (uint32_t)(uintptr_t)wrow & 15;
    /* raw chunks: thread chunk i = tid + 128 it is row i / CHUNKS, chunk i % CHUNKS */
    uint32_t rrow_off[RQ];
    uint32_t rlive = 0;
    if constexpr (RAW > 0) {
#pragma unroll
        for (int it = 0; it < RQ; it++) {
            const int i = tid + GM_THREADS * it, r = i / SM::CHUNKS;
            rrow_off[it] = (uint32_t)((size_t)r * p.row_bytes);
            rlive |= (uint32_t)(r < GM_BM && m0 + r < p.M) << it;
        }
    }

    auto issue_x = [&](int s, int buf) {
        if (s >= steps) return;
        const int64_t k0 = (int64_t)s * GM_BK;
        const bool kl = k0 + xc < p.K;
        const __half *src = xsrc + k0;
        const uint32_t dst = xs_dst + (uint32_t)buf * XS_BYTES;
#pragma unroll
        for (int q = 0; q < XQ; q++) {
            const bool live = kl && ((xlive >> q) & 1);
            gm_cp16(dst + q * 16 * ROW_BYTES, live ? src + q * xstep16 : xb, !live);
        }
    };
    /* raw pass P of the tile's live rows into buffer P & 1; a chunk that would
     * cross the matrix's end (its last row) is copied by plain loads */
    auto issue_raw = [&](int P) {
        if constexpr (RAW > 0) {
            if ((int64_t)P * GM_RAW_K >= p.K) return;
            constexpr int E = ds_cu_blk<T>::elems, B = ds_cu_blk<T>::bytes;
            const int64_t left = (p.K - (int64_t)P * GM_RAW_K) / E * B;
            const int nb = left < RAW ? (int)left : RAW; /* the last pass of 32-blocks may hold less */
            uint8_t *buf = raw + (P & 1) * GM_BM * SLOT;
#pragma unroll
            for (int it = 0; it < RQ; it++) {
                const int i = tid + GM_THREADS * it, r = i / SM::CHUNKS, ch = i - r * SM::CHUNKS;
                if (!((rlive >> it) & 1)) continue;
                const uint8_t *src = wtile + rrow_off[it] + (size_t)P * RAW;
                const int off = (int)((uintptr_t)src & 15);
                if (ch >= (off + nb + 15) >> 4) continue;
                const uint8_t *c = src - off + 16 * ch;
                uint8_t *d = buf + r * SLOT + 16 * ch;
                if (c + 16 <= wend) {
                    gm_cp16(smem_addr(d), c, false);
                } else {
                    for (int b = 0; b < 16; b++) d[b] = c + b < wend ? c[b] : 0;
                }
            }
        }
    };
    /* step s's weights, this thread's 32-element chunk, to f16 in weight tile s & 1 */
    auto dequant = [&](int s) {
        const int c = 2 * s + wc;
        /* chunks 4 wc .. 4 wc + 3 of row wr (SW: chunk c at c ^ (wr & 7)) */
        uint4 *dst = (uint4 *)&Ws[s & 1][wr][SW ? 0 : wc * 32];
        if (w_live && c < nchunks) {
            __align__(16) __half2 h[16];
            if constexpr (RAW > 0) {
                const int P = s / SPP;
                const int off = (int)((wrow_lo + (uint32_t)P * RAW) & 15);
                gm_dq32<T>(raw + ((P & 1) * GM_BM + wr) * SLOT + off, (s % SPP) * 2 + wc, h);
            } else {
                float v[32];
                ds_cu_dq32<T>(wrow, c, v);
#pragma unroll
                for (int i = 0; i < 16; i++) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
            }
#pragma unroll
            for (int q = 0; q < 4; q++) dst[SW ? (4 * wc + q) ^ (wr & 7) : q] = ((const uint4 *)h)[q];
        } else {
#pragma unroll
            for (int q = 0; q < 4; q++) dst[SW ? (4 * wc + q) ^ (wr & 7) : q] = make_uint4(0, 0, 0, 0);
        }
    };

    /* ldmatrix rows of this lane (see the fragment notes above) */
    /* padded: row wm * 32 + lane % 16, column 8 (lane / 16), plus i * 16 rows
     * and kk columns; SW: the row's start, and the swizzled chunk of each kk
     * (row & 7 = lane & 7 for every i) */
    const uint32_t a_base = smem_addr(&Ws[0][wm * 32 + (lane & 15)][SW ? 0 : 8 * (lane >> 4)]);
    auto a_chunk = [&](int kk) -> uint32_t {
        return SW ? 16u * (uint32_t)((kk / 8 + (lane >> 4)) ^ (lane & 7)) : 0u;
    };
    const uint32_t b_base = smem_addr(gm_shared + SM::xs_off) +
                            (uint32_t)((wn * (BN / 2) + (lane & 7) + 8 * (lane >> 4)) * GM_LD + 8 * ((lane >> 3) & 1)) * 2;

    for (int s = 0; s < NX - 1; s++) issue_x(s, s);
    issue_raw(0);
    issue_raw(1);
    gm_commit();
    gm_wait<0>();
    __syncthreads();
    dequant(0);
    __syncthreads();
    int xbuf = 0; /* s % NX */
    for (int s = 0; s < steps; s++) {
        /* two groups a step, activations then raw, so the wait below can leave
         * the raw pass (needed 4 steps later) in flight */
        issue_x(s + NX - 1, xbuf == 0 ? NX - 1 : xbuf - 1);
        gm_commit();
        if ((s + 1) % SPP == 0) issue_raw((s + 1) / SPP + 1);
        gm_commit();
        const uint32_t wa = a_base + (uint32_t)(s & 1) * WS_BYTES, xa = b_base + (uint32_t)xbuf * XS_BYTES;
#pragma unroll
        for (int kk = 0; kk < GM_BK; kk += 16) {
            uint32_t a[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
                ldmatrix_x4(a[i], SW ? wa + i * 16 * (SM::WLD * 2) + a_chunk(kk) : wa + (i * 16 * GM_LD + kk) * 2);
#pragma unroll
            for (int j = 0; j < NJ; j += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, xa + (j * 8 * GM_LD + kk) * 2);
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    mma_16816(acc[i][j], a[i], b[0], b[1]);
                    mma_16816(acc[i][j + 1], a[i], b[2], b[3]);
                }
            }
        }
        if (s + 1 < steps) dequant(s + 1);
        xbuf = xbuf == NX - 1 ? 0 : xbuf + 1;
        /* step s + 1's activations landed (issued NX - 1 steps ago; 2 NX - 3 groups are newer) */
        gm_wait<2 * NX - 3>();
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

template <int T, int BN, bool SW = false>
static int launch_bn(const ds_cu_gemm_params *p, unsigned nx, unsigned mt, bool w_fast) {
    /* DSINFER_CUDA_GEMM_SMEM_PAD (A/B runs of occupancy): bytes of shared
     * memory a block asks for beyond what it uses */
    static const size_t pad = [] {
        const char *e = getenv("DSINFER_CUDA_GEMM_SMEM_PAD");
        return e && atoi(e) > 0 ? (size_t)atoi(e) : 0;
    }();
    const size_t smem = gm_smem<T, BN, SW>::total + pad;
    /* the attribute is per device: set once on each (not a driver call per launch) */
    static bool attr_set[64];
    int dev = 0;
    DS_CU_TRY(cudaGetDevice(&dev));
    if (smem > 48 * 1024 && (dev >= 64 || !attr_set[dev])) {
        DS_CU_TRY(cudaFuncSetAttribute(gemm_kernel<T, BN, SW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        if (dev < 64) attr_set[dev] = true;
    }
    const dim3 grid = w_fast ? dim3(mt, nx) : dim3(nx, mt);
    gemm_kernel<T, BN, SW><<<grid, GM_THREADS, smem, p->stream>>>(*p, w_fast);
    return 0;
}

template <int T> static int launch_gemm(const ds_cu_gemm_params *p, int bn, unsigned nx) {
    /* q4_K/q5_K: 16-byte aligned rows (their raw slots have no room for an
     * offset; every device tensor and stage slice is 256-aligned and their
     * rows are multiples of 16 bytes); the dequantizers' word loads: 2-byte
     * aligned blocks for the other quantized types */
    const uintptr_t a = (uintptr_t)p->w | p->row_bytes | (p->tiles ? p->expert_bytes : 0);
    if (a % (T == DS_TYPE_Q4_K || T == DS_TYPE_Q5_K ? 16 : gm_raw_bytes<T>() ? 2 : 16)) {
        fprintf(stderr, "cuda error %s:%d: gemm: type %d weights, rows or experts misaligned\n", __FILE__, __LINE__,
                T);
        return (int)cudaErrorInvalidValue;
    }
    const unsigned mt = (unsigned)((p->M + GM_BM - 1) / GM_BM);
    /* DSINFER_CUDA_GEMM_WFAST (A/B runs): 0 activation tiles on x everywhere,
     * 1 weight tiles on x for grouped launches (default), 2 for all */
    static const int wf = [] {
        const char *e = getenv("DSINFER_CUDA_GEMM_WFAST");
        return e ? atoi(e) : 1;
    }();
    const bool w_fast = (wf >= 2 || (wf == 1 && p->tiles)) && nx <= 65535; /* grid y's limit */
    /* DSINFER_CUDA_GEMM_SW32=1 (not yet measured, off): q3_K/q4_K 32-row
     * tiles with the swizzled weight tile and a 2-deep activation ring,
     * 44032 bytes of shared memory, 5 blocks an SM (the routed experts of a
     * pp512: 4 blocks now; 8 KB more cost 6 % of pp512, session 13) */
    static const bool sw32 = [] {
        const char *e = getenv("DSINFER_CUDA_GEMM_SW32");
        return e && atoi(e) == 1;
    }();
    if constexpr (T == DS_TYPE_Q3_K || T == DS_TYPE_Q4_K) {
        static_assert(gm_smem<T, 32, true>::total <= 228 * 1024 / 5 - 1024,
                      "5 blocks of 32-row tiles an SM (228 KB, 1 KB each reserved)");
        if (bn == 32 && sw32) return launch_bn<T, 32, true>(p, nx, mt, w_fast);
    }
    if (bn == 32) return launch_bn<T, 32>(p, nx, mt, w_fast);
    if (bn == 64) return launch_bn<T, 64>(p, nx, mt, w_fast);
    return launch_bn<T, 128>(p, nx, mt, w_fast);
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
        /* narrower tiles while the grid would give under a block an SM (132 on
         * an H100/H200): kv_a's 9 weight tiles x 4 tiles of 128 rows left most
         * SMs idle (pp512 on ds10, session 9); each weight tile is dequantized
         * once per activation tile, so only small matrices take this. A/B of
         * the threshold with session 10's kernel (cuda_bench pp512, ds10,
         * H200): 132 gives 6144 / 6160, 264 6091 / 6101, 400 6051 */
        static const int min_blocks = [] { /* DSINFER_CUDA_GEMM_BLOCKS: the threshold, for A/B runs */
            const char *e = getenv("DSINFER_CUDA_GEMM_BLOCKS");
            return e && atoi(e) > 0 ? atoi(e) : 132;
        }();
        const int64_t mt = (p->M + GM_BM - 1) / GM_BM;
        bn = ds_cu_gemm_tile_rows(p->n);
        while (bn > 32 && mt * ((p->n + bn - 1) / bn) < min_blocks) bn /= 2;
        nx = (unsigned)((p->n + bn - 1) / bn);
    }
    if (bn != 32 && bn != 64 && bn != 128) return (int)cudaErrorInvalidValue;
    int rc;
    switch (p->type) {
#define X(t) case t: rc = launch_gemm<t>(p, bn, nx); break;
        DS_CU_FOR_TYPES(X)
#undef X
    default: return (int)cudaErrorInvalidValue;
    }
    if (rc) return rc;
    DS_CU_TRY_LAUNCH();
    return 0;
}
