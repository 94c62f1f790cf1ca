/* gemv_q8.cu: the decode GEMV on q8 activations (gemv_q8.h has the
 * activation layout): weight bytes staged per warp into shared memory with
 * cp.async, decoded to packed int8/uint8 words, multiplied with __dp4a
 * (4 MACs per instruction) against the int8 activations, the weight
 * block's scales and mins applied in float once per 16 or 32 weights.
 * Types q8_0, q2_K, q3_K, q4_K, q5_K, q6_K. Not prefill (a GEMM does
 * that), not the f32 GEMV of gemv.cu, not bit-compatible with it.
 *
 * Work split. A warp holds 32/LG lane groups of LG lanes; a lane group
 * owns R consecutive weight rows and walks them in steps of LG/LPS
 * "units" (super-blocks; 32-blocks for q8_0), LPS lanes per unit. Per
 * step each row's bytes for those units are copied, in aligned 16-byte
 * chunks, into the warp's ring of `stages` shared-memory slots, so
 * stages - 1 steps of loads are in flight while one is computed; only
 * __syncwarp, no block barrier. Every lane then reads its share of a unit
 * from shared memory (funnel-shifting where a unit is only 2-byte aligned:
 * q3_K 110, q6_K 210, q8_0 34 bytes), loads the matching activations once
 * (16-byte int8 loads + the blocks' d/s), and uses them for all R rows.
 *
 * The lane code is __host__ __device__: ds_cu_gemv_q8_host runs it on the
 * CPU so tests check the index math without a GPU. */
#include "gemv_q8.h"
#include "cuda_check.h"
#include "rownorm.cuh"

#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define Q8_HD __host__ __device__ __forceinline__
#define Q8_WARPS 4 /* warps per block */
/* Stages a warp may ring through (a test's cfg may ask for up to this). The
 * plan caps itself at Q8_PLAN_STAGES: matrices of few rows (q_a, kv_a, the
 * shared expert: ~600-2000 warps on 132 SMs) keep only ~6 KB of weights in
 * flight per SM at 4, under the ~40 KB the plan aims for, but caps of 6 and 8
 * timed the same as 4 (tg128 343.5 / 343.6 / 343.8 on ds10, H200, session 8). */
#define Q8_MAX_STAGES 8
#define Q8_PLAN_STAGES 4

/* ds_type ids (GGUF file-format constants; quant/quant.h is C11-only) */
enum { Q8T_Q8_0 = 8, Q8T_Q2_K = 10, Q8T_Q3_K = 11, Q8T_Q4_K = 12, Q8T_Q5_K = 13, Q8T_Q6_K = 14 };

/* ---- primitives, each with a host twin ------------------------------------------ */

/* a T-sized load at a sizeof(T)-aligned address (uint16_t, uint32_t, uint2, uint4) */
template <typename T> Q8_HD T q8_ld(const uint8_t *p) {
#ifdef __CUDA_ARCH__
    return *(const T *)p;
#else
    T v;
    memcpy(&v, p, sizeof v);
    return v;
#endif
}
/* activations: read-only global, 16 int8 (16-byte aligned) or one float */
Q8_HD uint4 q8_ldg128(const int8_t *p) {
#ifdef __CUDA_ARCH__
    return __ldg((const uint4 *)p);
#else
    uint4 v;
    memcpy(&v, p, 16);
    return v;
#endif
}
Q8_HD float q8_ldgf(const float *p) {
#ifdef __CUDA_ARCH__
    return __ldg(p);
#else
    return *p;
#endif
}
Q8_HD float2 q8_ldgf2(const float2 *p) {
#ifdef __CUDA_ARCH__
    return __ldg(p);
#else
    return *p;
#endif
}
/* c + sum of the four signed byte products of a and b */
Q8_HD int q8_dp4a(uint32_t a, uint32_t b, int c) {
#ifdef __CUDA_ARCH__
    return __dp4a((int)a, (int)b, c);
#else
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(uint8_t)(a >> 8 * i) * (int)(int8_t)(uint8_t)(b >> 8 * i);
    return c;
#endif
}
/* PTX prmt.b32 in its generic mode: result byte n is byte (sel_n & 7) of
 * {b, a}, or that byte's sign spread over 8 bits when sel_n & 8
 * (__byte_perm drops that bit, hence the asm) */
Q8_HD uint32_t q8_prmt(uint32_t a, uint32_t b, uint32_t sel) {
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
#else
    const uint64_t src = ((uint64_t)b << 32) | a;
    uint32_t d = 0;
    for (int n = 0; n < 4; n++) {
        const uint32_t c = (sel >> 4 * n) & 15;
        uint32_t byte = (uint32_t)(src >> 8 * (c & 7)) & 0xFF;
        if (c & 8) byte = (byte & 0x80) ? 0xFF : 0;
        d |= byte << 8 * n;
    }
    return d;
#endif
}
/* low word of (hi:lo) >> sh, 0 <= sh < 32 */
Q8_HD uint32_t q8_fshr(uint32_t lo, uint32_t hi, int sh) {
#ifdef __CUDA_ARCH__
    return __funnelshift_r(lo, hi, sh);
#else
    return (uint32_t)((((uint64_t)hi << 32) | lo) >> (sh & 31));
#endif
}
Q8_HD float q8_h2f(uint16_t h) {
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    const int e = (h >> 10) & 31, m = h & 1023;
    const float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(1024 + m), e - 25);
    return (h & 0x8000) ? -v : v;
#endif
}
/* Chunks first, first + step, ... (< n) of 16 bytes from src (16-byte
 * aligned) to dst in shared memory, asynchronously (cp.async, L2 only: the
 * weights are read once). The loop only moves two addresses: a per-chunk
 * bounds check, 64-bit pointer math and shared-address conversion made the
 * issue ~30 instructions a chunk, a fifth of a q3_K GEMV's (ncu, session 8). */
Q8_HD void q8_copy_chunks(uint8_t *dst, const uint8_t *src, int first, int n, int step) {
#ifdef __CUDA_ARCH__
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst + 16 * first);
    const uint8_t *g = src + 16 * first;
    for (int c = first; c < n; c += step, d += 16 * step, g += 16 * step)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(__cvta_generic_to_global(g)) : "memory");
#else
    for (int c = first; c < n; c += step) memcpy(dst + 16 * c, src + 16 * c, 16);
#endif
}
/* The 16-byte chunk at src to dst, the first n bytes (1..15) read and the
 * rest zeroed, by plain byte loads: the short last chunk of a matrix, since
 * compute-sanitizer counts a cp.async with a smaller src-size as a 16-byte
 * read, past the end of a matrix that ends its allocation (once per matrix). */
Q8_HD void q8_copy_tail(uint8_t *dst, const uint8_t *src, int n) {
    for (int i = 0; i < 16; i++) dst[i] = i < n ? src[i] : 0;
}

/* N words of stage bytes [off, off + 4N); off is a multiple of A (2, 4, 8
 * or 16). Below 4 each word is cut from two aligned ones by a funnel shift
 * (N + 1 loads, N shifts); that reads up to 4 bytes past the range. */
template <int N, int A> Q8_HD void q8_ldw(const uint8_t *st, int off, uint32_t *o) {
    if constexpr (A >= 16 && N % 4 == 0) {
#pragma unroll
        for (int k = 0; k < N / 4; k++) {
            const uint4 v = q8_ld<uint4>(st + off + 16 * k);
            o[4 * k] = v.x, o[4 * k + 1] = v.y, o[4 * k + 2] = v.z, o[4 * k + 3] = v.w;
        }
    } else if constexpr (A >= 8 && N % 2 == 0) {
#pragma unroll
        for (int k = 0; k < N / 2; k++) {
            const uint2 v = q8_ld<uint2>(st + off + 8 * k);
            o[2 * k] = v.x, o[2 * k + 1] = v.y;
        }
    } else if constexpr (A >= 4) {
#pragma unroll
        for (int k = 0; k < N; k++) o[k] = q8_ld<uint32_t>(st + off + 4 * k);
    } else {
        const uint8_t *b = st + (off & ~3);
        const int sh = (off & 2) * 8;
        uint32_t a[N + 1];
#pragma unroll
        for (int k = 0; k <= N; k++) a[k] = q8_ld<uint32_t>(b + 4 * k);
#pragma unroll
        for (int k = 0; k < N; k++) o[k] = q8_fshr(a[k], a[k + 1], sh);
    }
}
template <int A, int B> struct q8_min { static constexpr int v = A < B ? A : B; };

/* ---- the weight types ---------------------------------------------------------------
 * q8t<T>: SBB bytes / SBE elements per unit, LPS lanes per unit, and for
 * lane t of a unit: act = its activations of one x row (load_act from the
 * unit's first element xq and first block ds), wts = its weights of one
 * row (decode from stage bytes st + u, u = the unit's offset, even; AL =
 * the alignment u is known to have), dot = this lane's share of row . x.
 * Byte layouts are those of quant/blocks.h; offsets below are within a unit. */
template <int T> struct q8t;

/* q3_K (110 bytes: hmask[32], qs[64], scales[12], d): element e = 128h +
 * 32s + l has q = (qs[32h + l] >> 2s) & 3, minus 4 if bit 4h+s of
 * hmask[l] is clear, times d * (6-bit scale e/16 - 32). Lane t: h = t >> 1,
 * lh = t & 1, elements 128h + 32s + 16lh + j (s < 4, j < 16): run s is half
 * of q8 block 4h + s under one scale. Weights become signed bytes:
 * q | (hbit ? 0 : 0xFC) is q - 4 for a clear bit. */
template <> struct q8t<Q8T_Q3_K> {
    static constexpr int SBB = 110, SBE = 256, LPS = 4;
    struct act {
        uint32_t q[4][4];
        float d[4];
    };
    struct wts {
        uint32_t v[4][4];
        int sc[4];
        float d;
    };
    static Q8_HD void load_act(act &x, const int8_t *xq, const float2 *ds, int t) {
        const int h = t >> 1, lh = t & 1;
#pragma unroll
        for (int s = 0; s < 4; s++) {
            const uint4 v = q8_ldg128(xq + 128 * h + 32 * s + 16 * lh);
            x.q[s][0] = v.x, x.q[s][1] = v.y, x.q[s][2] = v.z, x.q[s][3] = v.w;
            x.d[s] = q8_ldgf(&ds[4 * h + s].x);
        }
    }
    template <int AL> static Q8_HD void decode(wts &w, const uint8_t *st, int u, int t) {
        const int h = t >> 1, lh = t & 1;
        uint32_t hm[4], q[4], sc[3];
        q8_ldw<4, AL>(st, u + 16 * lh, hm);
        q8_ldw<4, AL>(st, u + 32 + 32 * h + 16 * lh, q);
        q8_ldw<3, AL>(st, u + 96, sc);
        w.d = q8_h2f(q8_ld<uint16_t>(st + u + 108));
#pragma unroll
        for (int s = 0; s < 4; s++) {
            /* scale k = 8h + 2s + lh: low nibble h of scales[k % 8], top bits
             * 2(k / 4) of scales[8 + k % 4]; k % 4 = 2(s & 1) + lh = bi */
            const int bi = 2 * (s & 1) + lh;
            const int lo = (int)((s < 2 ? sc[0] : sc[1]) >> (8 * bi + 4 * h)) & 15;
            const int hi = (int)(sc[2] >> (8 * bi + 2 * (2 * h + (s >> 1)))) & 3;
            w.sc[s] = (lo | (hi << 4)) - 32;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                /* hmask bit 4h+s of each byte to its bit 7, then 0xFF/0x00 per byte */
                const uint32_t hb = q8_prmt(hm[i] << (7 - 4 * h - s), 0, 0xBA98);
                w.v[s][i] = ((q[i] >> (2 * s)) | 0xFCFCFCFCu) ^ (hb & 0xFCFCFCFCu);
            }
        }
    }
    static Q8_HD float dot(const wts &w, const act &x) {
        float f = 0.f;
#pragma unroll
        for (int s = 0; s < 4; s++) {
            int si = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) si = q8_dp4a(w.v[s][i], x.q[s][i], si);
            f += x.d[s] * (float)(si * w.sc[s]);
        }
        return w.d * f;
    }
};

/* q2_K (84 bytes: scales[16], qs[64], d, dmin): element e = 128h + 32s + l
 * is d * (scales[e/16] & 15) * ((qs[32h + l] >> 2s) & 3) - dmin *
 * (scales[e/16] >> 4). Lanes as q3_K; the min needs each run's sum of
 * activations (16 values: dp4a with ones, shared by the R rows). */
template <> struct q8t<Q8T_Q2_K> {
    static constexpr int SBB = 84, SBE = 256, LPS = 4;
    struct act {
        uint32_t q[4][4];
        float d[4];
        int sum[4];
    };
    struct wts {
        uint32_t v[4][4];
        int sc[4], m[4];
        float d, dmin;
    };
    static Q8_HD void load_act(act &x, const int8_t *xq, const float2 *ds, int t) {
        const int h = t >> 1, lh = t & 1;
#pragma unroll
        for (int s = 0; s < 4; s++) {
            const uint4 v = q8_ldg128(xq + 128 * h + 32 * s + 16 * lh);
            x.q[s][0] = v.x, x.q[s][1] = v.y, x.q[s][2] = v.z, x.q[s][3] = v.w;
            x.d[s] = q8_ldgf(&ds[4 * h + s].x);
            int sum = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) sum = q8_dp4a(x.q[s][i], 0x01010101u, sum);
            x.sum[s] = sum;
        }
    }
    template <int AL> static Q8_HD void decode(wts &w, const uint8_t *st, int u, int t) {
        const int h = t >> 1, lh = t & 1;
        uint32_t q[4], sc[2], dm[1];
        q8_ldw<4, AL>(st, u + 16 + 32 * h + 16 * lh, q);
        q8_ldw<2, q8_min<AL, 8>::v>(st, u + 8 * h, sc);
        q8_ldw<1, AL>(st, u + 80, dm);
        w.d = q8_h2f((uint16_t)(dm[0] & 0xFFFF));
        w.dmin = q8_h2f((uint16_t)(dm[0] >> 16));
#pragma unroll
        for (int s = 0; s < 4; s++) {
            /* scales[8h + 2s + lh] */
            const int b = (int)((s < 2 ? sc[0] : sc[1]) >> (8 * (2 * (s & 1) + lh))) & 0xFF;
            w.sc[s] = b & 15;
            w.m[s] = b >> 4;
#pragma unroll
            for (int i = 0; i < 4; i++) w.v[s][i] = (q[i] >> (2 * s)) & 0x03030303u;
        }
    }
    static Q8_HD float dot(const wts &w, const act &x) {
        float fd = 0.f, fm = 0.f;
#pragma unroll
        for (int s = 0; s < 4; s++) {
            int si = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) si = q8_dp4a(w.v[s][i], x.q[s][i], si);
            fd += x.d[s] * (float)(si * w.sc[s]);
            fm += x.d[s] * (float)(x.sum[s] * w.m[s]);
        }
        return w.d * fd - w.dmin * fm;
    }
};

/* q4_K (144 bytes: d, dmin, scales[12], qs[128]) and q5_K (176: d, dmin,
 * scales[12], qh[32], qs[128]): element 32j + l (sub-block j < 8) is
 * d * sc_j * q - dmin * m_j with q = (qs[32(j/2) + l] >> 4(j & 1)) & 15
 * (q5_K: | bit j of qh[l] << 4). Lane t < 4 takes sub-blocks 2t (low
 * nibbles) and 2t + 1 (high), each a whole q8 block: the min term is
 * dmin * m_j * s_j with the block's stored sum. */
template <int T> struct q8t_k45 {
    static constexpr bool Q5 = T == Q8T_Q5_K;
    static constexpr int SBB = Q5 ? 176 : 144, SBE = 256, LPS = 4;
    struct act {
        uint32_t q[2][8];
        float2 ds[2];
    };
    struct wts {
        uint32_t lo[8], hi[8];
        int sc[2], m[2];
        float d, dmin;
    };
    static Q8_HD void load_act(act &x, const int8_t *xq, const float2 *ds, int t) {
#pragma unroll
        for (int b = 0; b < 2; b++) {
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const uint4 v = q8_ldg128(xq + 64 * t + 32 * b + 16 * k);
                x.q[b][4 * k] = v.x, x.q[b][4 * k + 1] = v.y, x.q[b][4 * k + 2] = v.z, x.q[b][4 * k + 3] = v.w;
            }
            x.ds[b] = q8_ldgf2(ds + 2 * t + b);
        }
    }
    template <int AL> static Q8_HD void decode(wts &w, const uint8_t *st, int u, int t) {
        uint32_t hd[4], q[8];
        q8_ldw<4, AL>(st, u, hd); /* d | dmin << 16, scales[0..4), [4..8), [8..12) */
        q8_ldw<8, AL>(st, u + (Q5 ? 48 : 16) + 32 * t, q);
        w.d = q8_h2f((uint16_t)(hd[0] & 0xFFFF));
        w.dmin = q8_h2f((uint16_t)(hd[0] >> 16));
        /* 6-bit (scale, min) of sub-blocks 4(t >> 1) .. +3, one per byte:
         * j < 4: scales[j] & 63, scales[j + 4] & 63; j >= 4: the nibbles of
         * scales[j + 4] with the top bits of scales[j - 4] / scales[j] */
        const uint32_t scw = t < 2 ? hd[1] & 0x3F3F3F3Fu : (hd[3] & 0x0F0F0F0Fu) | ((hd[1] >> 2) & 0x30303030u);
        const uint32_t mw = t < 2 ? hd[2] & 0x3F3F3F3Fu : ((hd[3] >> 4) & 0x0F0F0F0Fu) | ((hd[2] >> 2) & 0x30303030u);
#pragma unroll
        for (int b = 0; b < 2; b++) {
            const int sh = 8 * (2 * (t & 1) + b);
            w.sc[b] = (int)(scw >> sh) & 0xFF;
            w.m[b] = (int)(mw >> sh) & 0xFF;
        }
        if constexpr (Q5) {
            uint32_t qh[8];
            q8_ldw<8, AL>(st, u + 16, qh);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const uint32_t hs = qh[i] >> (2 * t); /* bit 2t of each byte at bit 0, 2t + 1 at bit 1 */
                w.lo[i] = (q[i] & 0x0F0F0F0Fu) | ((hs << 4) & 0x10101010u);
                w.hi[i] = ((q[i] >> 4) & 0x0F0F0F0Fu) | ((hs << 3) & 0x10101010u);
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                w.lo[i] = q[i] & 0x0F0F0F0Fu;
                w.hi[i] = (q[i] >> 4) & 0x0F0F0F0Fu;
            }
        }
    }
    static Q8_HD float dot(const wts &w, const act &x) {
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            s0 = q8_dp4a(w.lo[i], x.q[0][i], s0);
            s1 = q8_dp4a(w.hi[i], x.q[1][i], s1);
        }
        const float fd = (float)(s0 * w.sc[0]) * x.ds[0].x + (float)(s1 * w.sc[1]) * x.ds[1].x;
        const float fm = (float)w.m[0] * x.ds[0].y + (float)w.m[1] * x.ds[1].y;
        return w.d * fd - w.dmin * fm;
    }
};
template <> struct q8t<Q8T_Q4_K> : q8t_k45<Q8T_Q4_K> {};
template <> struct q8t<Q8T_Q5_K> : q8t_k45<Q8T_Q5_K> {};

/* q6_K (210 bytes: ql[128], qh[64], scales[16] int8, d): element e = 128h +
 * 32s + l is d * scales[e/16] * (((ql[64h + l + 32(s & 1)] >> 4(s >> 1)) & 15
 * | ((qh[32h + l] >> 2s) & 3) << 4) - 32). Lanes as q3_K. The 6-bit fields
 * go to dp4a unsigned (0..63) and the -32 comes off through the run's
 * activation sum, which the R rows share. */
template <> struct q8t<Q8T_Q6_K> {
    static constexpr int SBB = 210, SBE = 256, LPS = 4;
    using act = q8t<Q8T_Q2_K>::act; /* the same runs of activations and their sums */
    struct wts {
        uint32_t v[4][4];
        int sc[4];
        float d;
    };
    static Q8_HD void load_act(act &x, const int8_t *xq, const float2 *ds, int t) {
        q8t<Q8T_Q2_K>::load_act(x, xq, ds, t);
    }
    template <int AL> static Q8_HD void decode(wts &w, const uint8_t *st, int u, int t) {
        const int h = t >> 1, lh = t & 1;
        uint32_t qa[4], qb[4], qh[4], sc[2];
        q8_ldw<4, AL>(st, u + 64 * h + 16 * lh, qa);      /* ql for s = 0, 2 */
        q8_ldw<4, AL>(st, u + 64 * h + 32 + 16 * lh, qb); /* ql for s = 1, 3 */
        q8_ldw<4, AL>(st, u + 128 + 32 * h + 16 * lh, qh);
        q8_ldw<2, q8_min<AL, 8>::v>(st, u + 192 + 8 * h, sc);
        w.d = q8_h2f(q8_ld<uint16_t>(st + u + 208));
#pragma unroll
        for (int s = 0; s < 4; s++) {
            /* scales[8h + 2s + lh] */
            w.sc[s] = (int)(int8_t)(uint8_t)((s < 2 ? sc[0] : sc[1]) >> (8 * (2 * (s & 1) + lh)));
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const uint32_t l = (s & 1 ? qb[i] : qa[i]) >> (4 * (s >> 1));
                /* qh bits 2s, 2s + 1 of each byte to bits 4, 5 */
                const uint32_t hh = s == 0 ? qh[i] << 4 : s == 1 ? qh[i] << 2 : s == 2 ? qh[i] : qh[i] >> 2;
                w.v[s][i] = (l & 0x0F0F0F0Fu) | (hh & 0x30303030u);
            }
        }
    }
    static Q8_HD float dot(const wts &w, const act &x) {
        float f = 0.f;
#pragma unroll
        for (int s = 0; s < 4; s++) {
            int si = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) si = q8_dp4a(w.v[s][i], x.q[s][i], si);
            f += x.d[s] * (float)((si - 32 * x.sum[s]) * w.sc[s]);
        }
        return w.d * f;
    }
};

/* q8_0 (34 bytes: d, qs[32] int8): the unit is one block, one lane each. */
template <> struct q8t<Q8T_Q8_0> {
    static constexpr int SBB = 34, SBE = 32, LPS = 1;
    struct act {
        uint32_t q[8];
        float d;
    };
    struct wts {
        uint32_t q[8];
        float d;
    };
    static Q8_HD void load_act(act &x, const int8_t *xq, const float2 *ds, int t) {
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const uint4 v = q8_ldg128(xq + 16 * k);
            x.q[4 * k] = v.x, x.q[4 * k + 1] = v.y, x.q[4 * k + 2] = v.z, x.q[4 * k + 3] = v.w;
        }
        x.d = q8_ldgf(&ds[0].x);
    }
    template <int AL> static Q8_HD void decode(wts &w, const uint8_t *st, int u, int t) {
        w.d = q8_h2f(q8_ld<uint16_t>(st + u));
        q8_ldw<8, q8_min<AL, 2>::v>(st, u + 2, w.q);
    }
    static Q8_HD float dot(const wts &w, const act &x) {
        int si = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) si = q8_dp4a(w.q[i], x.q[i], si);
        return (w.d * x.d) * (float)si;
    }
};

/* ---- one lane's walk over its rows ----------------------------------------------- */

/* Kernel arguments (by value; a POD). */
struct q8_args {
    const uint8_t *w;     /* [M] weight rows, rb bytes apart, nunits units each */
    const uint8_t *wend;  /* w + M * rb: the copy of the last chunk stops here */
    size_t rb;
    int64_t M;
    int nunits;           /* K / SBE */
    const uint8_t *xq;    /* [nr] quantized x rows, xrs bytes apart (gemv_q8.h layout) */
    size_t xrs;
    int64_t kq;           /* elements per quantized row; its ds[] start at byte kq */
    int64_t group_rows;   /* 0, or rows per x slice; row m reads xq from element (m / group_rows) * group_stride */
    int64_t group_stride;
    float *y;             /* [nr][ldy] */
    int64_t ldy;
    int nr, accumulate;
    int lg;               /* lanes per row group: a power of 2, LPS..32 */
    int stages;           /* shared-memory slots per warp, 1..Q8_MAX_STAGES */
    int str;              /* stage bytes per weight row per slot (a multiple of 16) */
};

/* Expert mode (ds_cu_q8_experts, gemv_q8.h; ids != NULL): blockIdx.y is
 * a pair p (p - n_pairs in the second set w2/y2); its matrix is expert
 * ids[p], its x row p / x_div, its y row p; pairs of id < 0 return at
 * once. A kernel argument of its own: the plain kernels never touch it. */
Q8_HD bool q8_bind_pair(q8_args &a, const ds_cu_q8_experts &x, int by) {
    const bool second = by >= x.n_pairs;
    const int p = second ? by - x.n_pairs : by;
#ifdef __CUDA_ARCH__
    const int e = __ldg(x.ids + p);
#else
    const int e = x.ids[p];
#endif
    if (e < 0) return false;
    a.w = (second ? (const uint8_t *)x.w2 : a.w) + (size_t)e * x.expert_bytes;
    a.wend = a.w + (size_t)a.M * a.rb;
    a.xq += (size_t)(p / x.x_div) * a.xrs;
    a.y = (second ? x.y2 : a.y) + (size_t)p * a.ldy;
    return true;
}

/* Stage bytes per row for spg units of SBB bytes: the chunks cover up to 14
 * bytes before the first unit and 15 after the last, and q8_ldw may read 4
 * past; 16-byte multiple so every row's stage stays aligned. */
static inline int q8_stage_row(int spg, int sbb) { return (spg * sbb + 14 + 15) / 16 * 16 + 16; }

template <int T, int NR, int R, int AL> struct q8_lane {
    using W = q8t<T>;
    int lg, g, sub, t, ui, spg, nrow;
    int64_t m0, goff;
    float acc[R][NR];
    typename W::act x[NR <= 2 ? NR : 1]; /* this step's activations (1-2 x rows) */

    /* lane `lane` of global warp gw: group g owns rows m0 .. m0 + nrow */
    Q8_HD void init(const q8_args &a, int64_t gw, int lane) {
        lg = a.lg;
        g = lane / lg;
        sub = lane % lg;
        spg = lg / W::LPS;
        ui = sub / W::LPS;
        t = sub % W::LPS;
        m0 = (gw * (32 / lg) + g) * R;
        const int64_t left = a.M - m0;
        nrow = left <= 0 ? 0 : left < R ? (int)left : R;
        /* R divides group_rows (the launcher sees to it): the R rows read one slice */
        goff = a.group_rows > 0 && nrow > 0 ? (m0 / a.group_rows) * a.group_stride : 0;
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int r = 0; r < NR; r++) acc[i][r] = 0.f;
    }
    Q8_HD int nsteps(const q8_args &a) const { return (a.nunits + spg - 1) / spg; }
    /* first byte of row i's units of this step */
    Q8_HD const uint8_t *src(const q8_args &a, int i, int step) const {
        return a.w + (size_t)(m0 + i) * a.rb + (size_t)step * spg * W::SBB;
    }
    /* byte offset of src(a, i, step) in its 16-byte chunk: 32-bit math, only
     * the low bits matter */
    Q8_HD int src_off(const q8_args &a, int i, int step) const {
        return (int)(((uint32_t)(uintptr_t)a.w + (uint32_t)(m0 + i) * (uint32_t)a.rb + (uint32_t)(step * spg * W::SBB)) &
                     15u);
    }
    /* Starts copying this step's bytes of the group's rows into slot (row i
     * at (g * R + i) * str, from the 16-byte chunk holding its first byte);
     * nothing past the last step. Every chunk but a matrix's short last one
     * goes by cp.async, that one by q8_copy_tail. */
    Q8_HD void issue(const q8_args &a, int step, uint8_t *slot) const {
        const int left = a.nunits - step * spg;
        if (left <= 0) return;
        const int nb = (left < spg ? left : spg) * W::SBB;
#pragma unroll
        for (int i = 0; i < R; i++) {
            if (i >= nrow) break;
            const uint8_t *s = src(a, i, step);
            const int off = src_off(a, i, step);
            const uint8_t *c0 = s - off;
            const int nch = (off + nb + 15) >> 4;
            int full = nch; /* chunks wholly inside the matrix: all but maybe the last row's last */
            if (m0 + i == a.M - 1) {
                const ptrdiff_t room = (a.wend - c0) >> 4;
                if (room < nch) full = (int)room;
            }
            uint8_t *d = slot + (g * R + i) * a.str;
            q8_copy_chunks(d, c0, sub, full, lg);
            if (full < nch && sub == full % lg)
                q8_copy_tail(d + 16 * full, c0 + 16 * full, (int)(a.wend - (c0 + 16 * full)));
        }
    }
    Q8_HD void load(typename W::act &x, const q8_args &a, int r, int64_t e0) const {
        const uint8_t *row = a.xq + (size_t)r * a.xrs;
        W::load_act(x, (const int8_t *)row + e0, (const float2 *)(row + a.kq) + e0 / 32, t);
    }
    /* Decode (1-2 x rows) keeps the step's activations in registers, loaded
     * before the wait for the weights so the two latencies overlap; each
     * weight row is then decoded once and used for them. 3-8 x rows load
     * each x row's share once a step (L1 hits) after the R weight rows are
     * decoded, and use it for all R. */
    Q8_HD void load_x(const q8_args &a, int step) {
        const int k = step * spg + ui;
        if constexpr (NR <= 2) {
            if (nrow <= 0 || k >= a.nunits) return;
#pragma unroll
            for (int r = 0; r < NR; r++)
                if (r < a.nr) load(x[r], a, r, goff + (int64_t)k * W::SBE);
        }
    }
    /* acc[i][r] += this lane's share of unit (step * spg + ui) of row i times
     * x row r (load_x(step) first) */
    Q8_HD void compute(const q8_args &a, int step, const uint8_t *slot) {
        const int k = step * spg + ui;
        if (nrow <= 0 || k >= a.nunits) return;
        const int64_t e0 = goff + (int64_t)k * W::SBE;
        if constexpr (NR <= 2) {
#pragma unroll
            for (int i = 0; i < R; i++) {
                if (i >= nrow) break;
                typename W::wts w;
                W::template decode<AL>(w, slot, unit_at(a, i, step), t);
#pragma unroll
                for (int r = 0; r < NR; r++)
                    if (r < a.nr) acc[i][r] += W::dot(w, x[r]);
            }
        } else {
            /* x row outside: one activation load serves R weight rows (the
             * weight-row-outside order loaded each x row R times a step: 8-row
             * products took 4-7x the time of 1-row ones, ncu, session 13).
             * Each acc[i][r] still gets the same one term a step. */
            typename W::wts w[R];
#pragma unroll
            for (int i = 0; i < R; i++)
                if (i < nrow) W::template decode<AL>(w[i], slot, unit_at(a, i, step), t);
#pragma unroll
            for (int r = 0; r < NR; r++) {
                if (r >= a.nr) break;
                load(x[0], a, r, e0);
#pragma unroll
                for (int i = 0; i < R; i++)
                    if (i < nrow) acc[i][r] += W::dot(w[i], x[0]);
            }
        }
    }
    /* offset of this lane's unit of row i in the step's slot */
    Q8_HD int unit_at(const q8_args &a, int i, int step) const {
        return (g * R + i) * a.str + src_off(a, i, step) + ui * W::SBB;
    }
    /* y[r][m0 + i] (+)= v by the group's lane 0 */
    Q8_HD void store(const q8_args &a, int i, int r, float v) const {
        float *dst = a.y + (size_t)r * a.ldy + m0 + i;
        *dst = a.accumulate ? *dst + v : v;
    }
};

/* The warp's ring of S slots: step s is copied into slot s % S; iteration
 * `step` computes slot cs = step % S and first refills slot is = (step + S
 * - 1) % S, the one computed the iteration before, with step + S - 1. */
struct q8_ring {
    int S, cs, is;
    Q8_HD q8_ring(int stages) : S(stages), cs(0), is(stages - 1) {}
    Q8_HD void next() {
        is = cs;
        cs = cs + 1 == S ? 0 : cs + 1;
    }
};

template <int S> __device__ __forceinline__ void q8_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(S) : "memory");
}
__device__ __forceinline__ void q8_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

/* y (=|+=) W x for nr <= NR x rows: 4 warps per block, each warp 32 / lg
 * lane groups of R rows; dynamic shared memory: per warp `stages` slots
 * of (32 / lg) * R * str bytes. Launch bounds: ptxas's own register
 * choice for 128 threads (minBlocks 0 = unspecified; 40-86 registers at 1-2
 * x rows on sm_90a), but minBlocks 1 at 3-8 x rows, where the default held
 * q4_K to 72 registers on sm_120 and spilled. */
template <int T, int NR, int R, int AL>
__device__ __forceinline__ void q8_gemv_body(const q8_args &a) {
    extern __shared__ __align__(16) uint8_t q8_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    q8_lane<T, NR, R, AL> L;
    L.init(a, (int64_t)blockIdx.x * Q8_WARPS + warp, lane);
    if (__all_sync(0xFFFFFFFFu, L.nrow == 0)) return; /* the whole warp past M */
    const int S = a.stages, nsteps = L.nsteps(a);
    const size_t slot = (size_t)(32 / a.lg) * R * a.str;
    uint8_t *ws = q8_smem + (size_t)warp * S * slot;
    for (int s = 0; s < S - 1; s++) {
        L.issue(a, s, ws + s * slot);
        q8_commit();
    }
    q8_ring ring(S);
    for (int step = 0; step < nsteps; step++) {
        L.issue(a, step + S - 1, ws + ring.is * slot);
        q8_commit();
        L.load_x(a, step);
        switch (S) { /* this step's group done: at most S - 1 newer ones pending */
        case 1: q8_wait<0>(); break;
        case 2: q8_wait<1>(); break;
        case 3: q8_wait<2>(); break;
        case 4: q8_wait<3>(); break;
        case 5: q8_wait<4>(); break;
        case 6: q8_wait<5>(); break;
        case 7: q8_wait<6>(); break;
        default: q8_wait<7>(); break;
        }
        __syncwarp(); /* every lane's copies visible to the warp */
        L.compute(a, step, ws + ring.cs * slot);
        __syncwarp(); /* all reads of this slot done before it is refilled */
        ring.next();
    }
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int r = 0; r < NR; r++) {
            float v = L.acc[i][r];
            for (int o = a.lg >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
            if (L.sub == 0 && i < L.nrow && r < a.nr) L.store(a, i, r, v);
        }
}

/* Expert mode (EX) only where it is compiled in: its copy of the arguments
 * costs registers (8 bytes of q3_K spills at R 4 when every kernel had it). */
template <int T, int NR, int R, int AL, bool EX>
__global__ void __launch_bounds__(Q8_WARPS * 32, NR > 2 ? 1 : 0)
q8_gemv_kernel(const q8_args a0, const ds_cu_q8_experts px) {
    if constexpr (EX) {
        q8_args a = a0;
        if (q8_bind_pair(a, px, (int)blockIdx.y)) q8_gemv_body<T, NR, R, AL>(a);
    } else {
        q8_gemv_body<T, NR, R, AL>(a0);
    }
}

/* The same kernel, one lane at a time on the CPU, through the same ring of
 * slots; copies land at once, so a slot refilled too early shows up as
 * wrong sums. */
template <int T, int NR, int R, int AL>
static void q8_emulate(const q8_args &a0, const ds_cu_q8_experts &px, int64_t blocks, int grid_y) {
    const size_t slot = (size_t)(32 / a0.lg) * R * a0.str, bytes = slot * a0.stages;
    uint8_t *ws = (uint8_t *)aligned_alloc(16, bytes);
    memset(ws, 0xA5, bytes); /* garbage, as shared memory starts */
    q8_lane<T, NR, R, AL> *L = (q8_lane<T, NR, R, AL> *)malloc(32 * sizeof *L);
    for (int64_t gi = 0; gi < blocks * Q8_WARPS * grid_y; gi++) {
        const int64_t gw = gi % (blocks * Q8_WARPS);
        q8_args a = a0;
        if (px.ids && !q8_bind_pair(a, px, (int)(gi / (blocks * Q8_WARPS)))) continue;
        for (int l = 0; l < 32; l++) L[l].init(a, gw, l);
        for (int s = 0; s < a.stages - 1; s++)
            for (int l = 0; l < 32; l++) L[l].issue(a, s, ws + s * slot);
        q8_ring ring(a.stages);
        for (int step = 0; step < L[0].nsteps(a); step++) {
            for (int l = 0; l < 32; l++) L[l].issue(a, step + a.stages - 1, ws + ring.is * slot);
            for (int l = 0; l < 32; l++) {
                L[l].load_x(a, step);
                L[l].compute(a, step, ws + ring.cs * slot);
            }
            ring.next();
        }
        for (int l = 0; l < 32; l += a.lg)
            for (int i = 0; i < L[l].nrow; i++)
                for (int r = 0; r < a.nr; r++) {
                    float v = 0.f;
                    for (int k = 0; k < a.lg; k++) v += L[l + k].acc[i][r];
                    L[l].store(a, i, r, v);
                }
    }
    free(L);
    free(ws);
}

/* ---- launch ------------------------------------------------------------------------ */

struct q8_plan {
    int lg, R, S, AL, str;
    int64_t blocks;
    int grid_y; /* pairs (expert mode), else 1 */
    size_t smem;
};

/* Lanes per row group: 32, or fewer when a row has too few units to use
 * them. Then, for a matrix of M * lg >= 32768 rows (2048+ at 16 lanes), fewer
 * lanes when that leaves fewer unit slots idle in a row's last step (ties
 * to more lanes): at K 7168 a K-quant row has 28 units, 4 steps of 8 at 32
 * lanes (1/8 of the slots idle) but 7 of 4 at 16; q_b's 6 units fill 8
 * lanes' steps exactly. The q3_K products are ALU-bound (ncu, session 8),
 * so idle slots are lost issue; small matrices (q_a, kv_a) keep more lanes
 * a row for the latency. The choice reads the matrix's own K and M only, so
 * an expert-mode launch and a plain call on one of its matrices split the
 * rows alike and give the same bits. */
static int q8_lanes(int64_t nunits, int lps, int64_t M) {
    int lg = 32;
    while (lg > lps && (int64_t)(lg / 2) >= nunits * lps) lg /= 2;
    int best = lg;
    int64_t best_slots = (nunits + lg / lps - 1) / (lg / lps) * (lg / lps);
    for (int l = lg / 2; l >= lps && M * l >= 32768; l /= 2) {
        const int spg = l / lps;
        const int64_t slots = (nunits + spg - 1) / spg * spg;
        if (slots < best_slots) best = l, best_slots = slots;
    }
    return best;
}

/* Most weight rows a lane group takes at 3-8 x rows: DSINFER_Q8_WIDE_R
 * (1, 2 or 4; an A/B knob, read once), default 4. */
static int q8_wide_rows_cap(void) {
    static int cap = 0;
    if (!cap) {
        const char *e = getenv("DSINFER_Q8_WIDE_R");
        const int v = e ? atoi(e) : 4;
        cap = v >= 4 ? 4 : v >= 2 ? 2 : 1;
    }
    return cap;
}

/* R: 4 rows per lane group share each activation load and put 4 rows of
 * loads in flight, but a matrix of few rows then leaves SMs idle, so fewer
 * while that would give under 1024 warps; at most q8_wide_rows_cap()
 * for 3-8 x rows; a divisor of group_rows. Stages: enough that the warps an
 * SM holds (at most ~16; 132 SMs, an H100/H200) keep ~40 KB of weights in
 * flight (latency x bandwidth per SM), 2..4, never more than the steps.
 * AL: the alignment every unit start has in the stage. */
template <int T>
static void q8_make_plan(const ds_cu_gemv_params *p, const ds_cu_gemv_q8_cfg *cfg, int NR, const ds_cu_q8_experts *ex,
                         q8_plan *pl) {
    using W = q8t<T>;
    pl->grid_y = ex && ex->ids ? ex->n_pairs * (ex->w2 ? 2 : 1) : 1;
    const int64_t Mall = p->M * pl->grid_y; /* rows of all the launch's matrices: what fills the SMs */
    const int64_t nunits = p->K / W::SBE;
    pl->lg = q8_lanes(nunits, W::LPS, p->M);
    const int G = 32 / pl->lg, spg = pl->lg / W::LPS;
    int R = 4;
    if (cfg && cfg->rows > 0) R = cfg->rows >= 4 ? 4 : cfg->rows >= 2 ? 2 : 1;
    else
        while (R > 1 && Mall / ((int64_t)G * R) < 1024) R /= 2;
    if (NR > 2 && R > q8_wide_rows_cap()) R = q8_wide_rows_cap();
    while (R > 1 && p->group_rows % R) R /= 2;
    pl->R = R;
    const int64_t nsteps = (nunits + spg - 1) / spg, warps = (Mall + (int64_t)G * R - 1) / ((int64_t)G * R);
    const double wsm = warps / 132.0 < 16 ? warps / 132.0 : 16, step_bytes = (double)G * R * spg * W::SBB;
    const double want = 1 + ceil(40960.0 / (wsm * step_bytes));
    int S = want < 2 ? 2 : want > Q8_PLAN_STAGES ? Q8_PLAN_STAGES : (int)want;
    if (cfg && cfg->stages > 0) S = cfg->stages > Q8_MAX_STAGES ? Q8_MAX_STAGES : cfg->stages;
    if (S > nsteps) S = (int)nsteps;
    pl->str = q8_stage_row(spg, W::SBB);
    while (S > 1 && (size_t)Q8_WARPS * S * G * R * pl->str > 160 * 1024) S--; /* leave room for 1+ blocks per SM */
    pl->S = S;
    /* every matrix start counts: expert steps and the second set too */
    const uintptr_t wa = (uintptr_t)p->w | (ex && ex->ids ? (uintptr_t)ex->expert_bytes | (uintptr_t)ex->w2 : 0);
    pl->AL = 2;
    if ((T == Q8T_Q4_K || T == Q8T_Q5_K) && wa % 16 == 0 && p->row_bytes % 16 == 0) pl->AL = 16;
    if (T == Q8T_Q2_K && wa % 4 == 0 && p->row_bytes % 4 == 0) pl->AL = 4;
    pl->smem = (size_t)Q8_WARPS * pl->S * G * R * pl->str;
    const int64_t rows_per_block = (int64_t)Q8_WARPS * G * R;
    pl->blocks = (p->M + rows_per_block - 1) / rows_per_block;
}

template <int T, int NR, int R, int AL, bool EX>
static int q8_launch(const q8_args &a, const ds_cu_q8_experts &px, const q8_plan &pl, cudaStream_t s) {
    if (pl.smem > 48 * 1024)
        DS_CU_TRY(cudaFuncSetAttribute(q8_gemv_kernel<T, NR, R, AL, EX>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)pl.smem));
    const dim3 grid((unsigned)pl.blocks, (unsigned)pl.grid_y);
    q8_gemv_kernel<T, NR, R, AL, EX><<<grid, Q8_WARPS * 32, pl.smem, s>>>(a, px);
    DS_CU_TRY_LAUNCH();
    return 0;
}

template <int T, int NR, int R, int AL>
static int q8_run(const q8_args &a, const ds_cu_q8_experts &px, const q8_plan &pl, cudaStream_t s, bool host) {
    if (host) {
        q8_emulate<T, NR, R, AL>(a, px, pl.blocks, pl.grid_y);
        return 0;
    }
    if constexpr (NR == 1) { /* expert mode: one x row per pair */
        if (px.ids) return q8_launch<T, NR, R, AL, true>(a, px, pl, s);
    }
    return q8_launch<T, NR, R, AL, false>(a, px, pl, s);
}
template <int T, int NR, int AL>
static int q8_run_r(const q8_args &a, const ds_cu_q8_experts &px, const q8_plan &pl, cudaStream_t s, bool host) {
    if (pl.R == 4) return q8_run<T, NR, 4, AL>(a, px, pl, s, host);
    if (pl.R == 2) return q8_run<T, NR, 2, AL>(a, px, pl, s, host);
    return q8_run<T, NR, 1, AL>(a, px, pl, s, host);
}
template <int T, int NR>
static int q8_run_al(const q8_args &a, const ds_cu_q8_experts &px, const q8_plan &pl, cudaStream_t s, bool host) {
    if constexpr (T == Q8T_Q4_K || T == Q8T_Q5_K) {
        if (pl.AL == 16) return q8_run_r<T, NR, 16>(a, px, pl, s, host);
    }
    if constexpr (T == Q8T_Q2_K) {
        if (pl.AL == 4) return q8_run_r<T, NR, 4>(a, px, pl, s, host);
    }
    return q8_run_r<T, NR, 2>(a, px, pl, s, host);
}

/* passes of up to 8 x rows (one pass reads the weights once; 5-8 rows on
 * the 8-row kernel); expert mode (ex->ids): one pass of one x row per pair */
template <int T>
static int q8_gemv_type(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg,
                        const ds_cu_q8_experts *ex, bool host) {
    const size_t xrs = ds_cu_q8_row_bytes(p->ldx);
    const bool experts = ex && ex->ids;
    for (int r0 = 0; r0 < (experts ? 1 : p->n); r0 += 8) {
        const int nr = experts ? 1 : p->n - r0 < 8 ? p->n - r0 : 8;
        const int NR = nr == 1 ? 1 : nr == 2 ? 2 : nr <= 4 ? 4 : 8;
        q8_plan pl;
        q8_make_plan<T>(p, cfg, NR, ex, &pl);
        q8_args a;
        const ds_cu_q8_experts px = experts ? *ex : ds_cu_q8_experts{};
        a.w = (const uint8_t *)p->w;
        a.wend = a.w + (size_t)p->M * p->row_bytes;
        a.rb = p->row_bytes;
        a.M = p->M;
        a.nunits = (int)(p->K / q8t<T>::SBE);
        a.xq = (const uint8_t *)xq + (size_t)r0 * xrs;
        a.xrs = xrs;
        a.kq = p->ldx;
        a.group_rows = p->group_rows;
        a.group_stride = p->group_stride;
        a.y = p->y + (size_t)r0 * p->ldy;
        a.ldy = p->ldy;
        a.nr = nr;
        a.accumulate = p->accumulate;
        a.lg = pl.lg;
        a.stages = pl.S;
        a.str = pl.str;
        int rc = NR == 1   ? q8_run_al<T, 1>(a, px, pl, p->stream, host)
                 : NR == 2 ? q8_run_al<T, 2>(a, px, pl, p->stream, host)
                 : NR == 4 ? q8_run_al<T, 4>(a, px, pl, p->stream, host)
                           : q8_run_al<T, 8>(a, px, pl, p->stream, host);
        if (rc) return rc;
    }
    return 0;
}

/* ---- the C API --------------------------------------------------------------------- */

extern "C" size_t ds_cu_q8_row_bytes(int64_t K) { return (size_t)K + ((size_t)K / 4 + 15) / 16 * 16; }
extern "C" size_t ds_cu_q8_bytes(int64_t K, int n) { return (size_t)n * ds_cu_q8_row_bytes(K); }

/* One 32-block from its 32 values: the quantization both the kernel and the
 * host twin apply (max and integer sums do not depend on order, so the
 * device's 8-lane version gives the same bits). */
Q8_HD float q8_scale(float amax) { return amax / 127.f; }
Q8_HD float q8_inv_scale(float amax) { return amax > 0.f ? 127.f / amax : 0.f; }
Q8_HD int q8_round(float v) {
#ifdef __CUDA_ARCH__
    const int q = __float2int_rn(v);
#else
    const int q = (int)lrintf(v);
#endif
    return q > 127 ? 127 : q < -127 ? -127 : q;
}

/* silu(g) * u as ref's silu_d and ds_cu_silu_mul compute it, in f32 */
Q8_HD float q8_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/* The quantization of this thread's 4 consecutive values v (element 4c of
 * a row of K) into row: every lane of the warp calls it (8 lanes a 32-block
 * share the absmax and the sum by shuffles); only live lanes write. The
 * block's (d, d * sum) pair follows the K quants. */
__device__ __forceinline__ void q8_quant4(const float v[4], bool live, uint8_t *row, int64_t K, int64_t c) {
    float m = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
    const float id = q8_inv_scale(m);
    int q[4], sum = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) sum += q[k] = q8_round(v[k] * id);
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
    if (live) {
        *(uint32_t *)(row + 4 * c) = (uint32_t)(q[0] & 0xFF) | (uint32_t)(q[1] & 0xFF) << 8 |
                                     (uint32_t)(q[2] & 0xFF) << 16 | (uint32_t)(q[3] & 0xFF) << 24;
        if ((c & 7) == 0) {
            const float d = q8_scale(m);
            ((float2 *)(row + K))[c / 8] = make_float2(d, d * (float)sum);
        }
    }
}

/* 8 threads per 32-block, 4 values each (one float4 when VEC: x 16-byte
 * aligned, ldx % 4 == 0); every thread runs the shuffles, also past the end.
 * GLU: the values are silu(x) * u (x the gate, u the up projection). */
template <bool VEC, bool GLU = false>
__global__ void q8_quant_kernel(const float *__restrict__ x, int64_t ldx, int64_t K, int64_t total4,
                                uint8_t *__restrict__ xq, size_t xrs, const float *__restrict__ u = nullptr) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; /* which 4 values */
    const bool live = i < total4;
    const int64_t per_row = K / 4, r = live ? i / per_row : 0, c = live ? i % per_row : 0;
    float v[4] = { 0.f, 0.f, 0.f, 0.f };
    if (live) {
        const float *p = x + r * ldx + 4 * c;
        if constexpr (VEC) {
            const float4 f = *(const float4 *)p;
            v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
        } else {
#pragma unroll
            for (int k = 0; k < 4; k++) v[k] = p[k];
        }
        if constexpr (GLU) { /* x is the gate, u the up projection (same layout) */
            const float *pu = u + r * ldx + 4 * c;
#pragma unroll
            for (int k = 0; k < 4; k++) v[k] = q8_silu_mul(v[k], pu[k]);
        }
    }
    q8_quant4(v, live, xq + (size_t)r * xrs, K, c);
}

/* Both quantize entry points: the float4 loads where x (the gate, for GLU)
 * allows them. u: the up projection (GLU), same layout as x. */
template <bool GLU>
static int q8_quant_launch(const float *x, const float *u, int64_t ldx, int64_t K, int n, void *xq, cudaStream_t s,
                           const char *what) {
    if (n <= 0 || K <= 0) return 0;
    if (K % 32 || ldx < K || ((uintptr_t)xq & 15) || ((uintptr_t)x & 3) || ((uintptr_t)u & 3)) {
        fprintf(stderr, "cuda error %s:%d: %s needs K %% 32 == 0, K <= ldx, 16-byte aligned xq\n", __FILE__,
                __LINE__, what);
        return (int)cudaErrorInvalidValue;
    }
    const int64_t total4 = (int64_t)n * K / 4;
    const unsigned grid = (unsigned)((total4 + 255) / 256);
    const size_t xrs = ds_cu_q8_row_bytes(K);
    if ((uintptr_t)x % 16 == 0 && ldx % 4 == 0)
        q8_quant_kernel<true, GLU><<<grid, 256, 0, s>>>(x, ldx, K, total4, (uint8_t *)xq, xrs, u);
    else
        q8_quant_kernel<false, GLU><<<grid, 256, 0, s>>>(x, ldx, K, total4, (uint8_t *)xq, xrs, u);
    DS_CU_TRY_LAUNCH();
    return 0;
}

extern "C" int ds_cu_quantize_q8(const float *x, int64_t ldx, int64_t K, int n, void *xq, cudaStream_t s) {
    return q8_quant_launch<false>(x, nullptr, ldx, K, n, xq, s, "quantize_q8");
}

extern "C" int ds_cu_silu_quantize_q8(const float *g, const float *u, int64_t K, int n, void *xq, cudaStream_t s) {
    return q8_quant_launch<true>(g, u, K, K, n, xq, s, "silu_quantize_q8");
}

/* RMSNorm of each row into y and its q8 blocks into xq in one pass: what
 * ds_cu_rmsnorm then ds_cu_quantize_q8 write, bit for bit (rownorm.cuh's
 * sums and scale, the same f32 expression x * scale * w, the same block
 * rounding). dim % 32 == 0, dim <= RN_MAX_DIM.
 *
 * Grid (slices, rows): a decode step's norm is one row, and a single block
 * that also normalised and quantized all 7168 values took 6.6 us (ncu,
 * H200, session 7). Every block of a row computes the row's scale (the same
 * sums, so the same bits; the row is in L2) and then writes only its slice
 * of RN_SLICE values, 4 consecutive ones a thread (8 threads a 32-block),
 * read again from x (L1/L2). With y aliasing x the launcher gives a row one
 * block: another block's writes could land before this one's sums read x. */
#define RN_SLICE (RN_THREADS * 4)
__global__ void __launch_bounds__(RN_THREADS)
q8_rmsnorm_kernel(const float *x, int64_t ldx, const float *__restrict__ w, int dim, float eps, float *y, int64_t ldy,
                  uint8_t *__restrict__ xq, size_t xrs) {
    const float *xr = x + (size_t)blockIdx.y * ldx;
    float *yr = y + (size_t)blockIdx.y * ldy;
    uint8_t *row = xq + (size_t)blockIdx.y * xrs;
    float v[RN_MAXV];
    const float scale = rn_row_scale(xr, dim, eps, v);
    const int groups = dim / 4;
    for (int base = blockIdx.x * (RN_SLICE / 4); base < groups; base += gridDim.x * (RN_SLICE / 4)) {
        const int c = base + threadIdx.x;
        const bool live = c < groups; /* dim % 32 == 0: a 32-block is all live or all not */
        float u[4] = { 0.f, 0.f, 0.f, 0.f };
        if (live) /* in place (one block), this thread alone reads and writes these 4 after the barrier */
#pragma unroll
            for (int k = 0; k < 4; k++) u[k] = xr[4 * c + k] * scale * w[4 * c + k];
        if (live)
#pragma unroll
            for (int k = 0; k < 4; k++) yr[4 * c + k] = u[k];
        q8_quant4(u, live, row, dim, c);
    }
}

extern "C" int ds_cu_rmsnorm_q8(const float *x, int64_t ldx, const float *w, int dim, float eps, int n, float *y,
                                int64_t ldy, void *xq, cudaStream_t s) {
    if (n <= 0) return 0;
    if (dim <= 0 || dim % 32 || dim > DS_CU_RMSNORM_Q8_MAX_DIM || ((uintptr_t)xq & 15)) {
        fprintf(stderr, "cuda error %s:%d: rmsnorm_q8 needs dim %% 32 == 0, dim <= %d and 16-byte aligned xq\n",
                __FILE__, __LINE__, DS_CU_RMSNORM_Q8_MAX_DIM);
        return (int)cudaErrorInvalidValue;
    }
    /* rows that overlap their output: one block a row (see the kernel) */
    const bool alias = (const char *)y < (const char *)(x + (size_t)(n - 1) * ldx + dim) &&
                       (const char *)x < (const char *)(y + (size_t)(n - 1) * ldy + dim);
    const int slices = alias ? 1 : (dim + RN_SLICE - 1) / RN_SLICE;
    q8_rmsnorm_kernel<<<dim3((unsigned)slices, (unsigned)n), RN_THREADS, 0, s>>>(x, ldx, w, dim, eps, y, ldy,
                                                                                  (uint8_t *)xq,
                                                                                  ds_cu_q8_row_bytes(dim));
    DS_CU_TRY_LAUNCH();
    return 0;
}

static_assert(RN_MAX_DIM == DS_CU_RMSNORM_Q8_MAX_DIM, "gemv_q8.h's limit is rownorm's");

extern "C" void ds_cu_quantize_q8_host(const float *x, int64_t ldx, int64_t K, int n, void *xq) {
    const size_t xrs = ds_cu_q8_row_bytes(K);
    for (int r = 0; r < n; r++) {
        uint8_t *row = (uint8_t *)xq + (size_t)r * xrs;
        for (int64_t b = 0; b < K / 32; b++) {
            const float *v = x + (size_t)r * ldx + 32 * b;
            float m = 0.f;
            for (int k = 0; k < 32; k++) m = fmaxf(m, fabsf(v[k]));
            const float id = q8_inv_scale(m);
            int sum = 0;
            for (int k = 0; k < 32; k++) {
                const int q = q8_round(v[k] * id);
                row[32 * b + k] = (uint8_t)(q & 0xFF);
                sum += q;
            }
            const float d = q8_scale(m);
            const float2 ds = make_float2(d, d * (float)sum);
            memcpy(row + K + 8 * b, &ds, 8);
        }
    }
}

/* elements and bytes of a type's unit (0 for types without a kernel) */
static int q8_unit_elems(int type) {
    switch (type) {
    case Q8T_Q8_0: return 32;
    case Q8T_Q2_K: case Q8T_Q3_K: case Q8T_Q4_K: case Q8T_Q5_K: case Q8T_Q6_K: return 256;
    default: return 0;
    }
}
static int q8_unit_bytes(int type) {
    switch (type) {
    case Q8T_Q8_0: return q8t<Q8T_Q8_0>::SBB;
    case Q8T_Q2_K: return q8t<Q8T_Q2_K>::SBB;
    case Q8T_Q3_K: return q8t<Q8T_Q3_K>::SBB;
    case Q8T_Q4_K: return q8t<Q8T_Q4_K>::SBB;
    case Q8T_Q5_K: return q8t<Q8T_Q5_K>::SBB;
    case Q8T_Q6_K: return q8t<Q8T_Q6_K>::SBB;
    default: return 0;
    }
}

extern "C" int ds_cu_gemv_q8_supported(int type, int64_t K, int64_t group_rows) {
    const int e = q8_unit_elems(type);
    return e > 0 && K > 0 && K % e == 0 && K / e <= (1 << 30) && group_rows >= 0;
}

static int q8_dispatch(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg,
                       const ds_cu_q8_experts *experts, bool host) {
    if (experts) {
        if (experts->n_pairs <= 0 || p->M <= 0) return 0;
        const uintptr_t w2 = (uintptr_t)experts->w2;
        if (!experts->ids || experts->x_div < 1 || p->group_rows != 0 || experts->expert_bytes % 2 || (w2 & 1) ||
            (w2 && !experts->y2) || experts->expert_bytes < (size_t)p->M * p->row_bytes) {
            fprintf(stderr, "cuda error %s:%d: gemv_q8 experts: need ids, x_div >= 1, no head groups, even "
                            "expert_bytes >= M * row_bytes, and y2 with w2\n", __FILE__, __LINE__);
            return (int)cudaErrorInvalidValue;
        }
    } else if (p->M <= 0 || p->n <= 0) {
        return 0;
    }
    const int64_t span = p->group_rows > 0 ? ((p->M - 1) / p->group_rows) * p->group_stride + p->K : p->K;
    const int e = q8_unit_elems(p->type);
    if (!ds_cu_gemv_q8_supported(p->type, p->K, p->group_rows) || p->ldx % 32 || span > p->ldx ||
        (p->group_rows > 0 && (p->group_stride % 32 || p->group_stride < 0)) || ((uintptr_t)xq & 15) ||
        ((uintptr_t)p->w & 1) || p->row_bytes % 2 ||
        (e && p->row_bytes < (size_t)(p->K / e) * q8_unit_bytes(p->type))) {
        fprintf(stderr,
                "cuda error %s:%d: gemv_q8: type %d K %lld ldx %lld group %lld/%lld row_bytes %zu: unsupported "
                "(gemv_q8.h lists the needs)\n",
                __FILE__, __LINE__, p->type, (long long)p->K, (long long)p->ldx, (long long)p->group_rows,
                (long long)p->group_stride, p->row_bytes);
        return (int)cudaErrorInvalidValue;
    }
    switch (p->type) {
    case Q8T_Q8_0: return q8_gemv_type<Q8T_Q8_0>(p, xq, cfg, experts, host);
    case Q8T_Q2_K: return q8_gemv_type<Q8T_Q2_K>(p, xq, cfg, experts, host);
    case Q8T_Q3_K: return q8_gemv_type<Q8T_Q3_K>(p, xq, cfg, experts, host);
    case Q8T_Q4_K: return q8_gemv_type<Q8T_Q4_K>(p, xq, cfg, experts, host);
    case Q8T_Q5_K: return q8_gemv_type<Q8T_Q5_K>(p, xq, cfg, experts, host);
    default: return q8_gemv_type<Q8T_Q6_K>(p, xq, cfg, experts, host);
    }
}

extern "C" int ds_cu_gemv_q8_ex(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg) {
    return q8_dispatch(p, xq, cfg, NULL, false);
}
extern "C" int ds_cu_gemv_q8(const ds_cu_gemv_params *p, const void *xq) {
    return q8_dispatch(p, xq, NULL, NULL, false);
}
extern "C" int ds_cu_gemv_q8_host(const ds_cu_gemv_params *p, const void *xq, const ds_cu_gemv_q8_cfg *cfg) {
    return q8_dispatch(p, xq, cfg, NULL, true);
}
extern "C" int ds_cu_gemv_q8_experts(const ds_cu_gemv_params *p, const void *xq, const ds_cu_q8_experts *ex,
                                     const ds_cu_gemv_q8_cfg *cfg) {
    return ex ? q8_dispatch(p, xq, cfg, ex, false) : (int)cudaErrorInvalidValue;
}
extern "C" int ds_cu_gemv_q8_experts_host(const ds_cu_gemv_params *p, const void *xq, const ds_cu_q8_experts *ex,
                                          const ds_cu_gemv_q8_cfg *cfg) {
    return ex ? q8_dispatch(p, xq, cfg, ex, true) : (int)cudaErrorInvalidValue;
}
