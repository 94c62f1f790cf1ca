/* dot_strided.cuh: the bandwidth paths of the GEMV for the K-quants and q8_0.
 * (1) The warp-row path (ds_cu_wr, decode and the MoE): a group of LG lanes
 * owns a whole row; each lane loads a 16- or 32-value share of a super-block
 * with 16-byte loads (q4_K, q5_K) or 2-byte loads (q3_K, q6_K, q8_0: their
 * blocks are only 2-byte aligned), several super-blocks in flight, decodes
 * scales once per run and turns quant fields into floats with exponent
 * tricks (no int->float conversions). (2) The older block-strided path
 * (ds_cu_block_rows: 4 warps per row, lane l owns elements i*32 + l), kept
 * for q2_K and misaligned weights. Dequantized values equal
 * ds_dequantize_row exactly on both (see dequant.cuh). Not for the other
 * types: they use the per-lane 32-chunk path of dequant.cuh. */
#ifndef DS_CUDA_DOT_STRIDED_CUH
#define DS_CUDA_DOT_STRIDED_CUH

#include "dequant.cuh"

template <int T> struct ds_cu_strided { static constexpr bool ok = false; };
template <> struct ds_cu_strided<DS_TYPE_Q2_K> { static constexpr bool ok = true; };
template <> struct ds_cu_strided<DS_TYPE_Q3_K> { static constexpr bool ok = true; };
template <> struct ds_cu_strided<DS_TYPE_Q4_K> { static constexpr bool ok = true; };
template <> struct ds_cu_strided<DS_TYPE_Q5_K> { static constexpr bool ok = true; };
template <> struct ds_cu_strided<DS_TYPE_Q6_K> { static constexpr bool ok = true; };
template <> struct ds_cu_strided<DS_TYPE_Q8_0> { static constexpr bool ok = true; };

/* v[i] = element sb*256 + i*32 + lane of the row (for q8_0: of 32-blocks 8sb..8sb+7) */
template <int T>
__device__ __forceinline__ void ds_cu_dq_lane(const uint8_t *__restrict__ row, int sb, int lane, float v[8]) {
    const int hi16 = lane >> 4; /* which 16-element scale group of a 32-run */
    if constexpr (T == DS_TYPE_Q3_K) {
        const uint8_t *b = row + (size_t)sb * 110;
        const uint8_t *sc = b + 96;
        const float d = ds_cu_h2f(b + 108);
        const int hm = b[lane], q[2] = { b[32 + lane], b[64 + lane] };
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int s = 0; s < 4; s++) {
                const int k = h * 8 + 2 * s + hi16; /* 16-element scale index */
                const int lo = (sc[k % 8] >> (4 * (k / 8))) & 0x0F;
                const int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 0x03;
                const float dl = d * (float)((lo | (hi << 4)) - 32);
                const int qv = ((q[h] >> (2 * s)) & 3) - (((hm >> (h * 4 + s)) & 1) ? 0 : 4);
                v[h * 4 + s] = dl * (float)qv;
            }
    } else if constexpr (T == DS_TYPE_Q2_K) {
        const uint8_t *b = row + (size_t)sb * 84;
        const float d = ds_cu_h2f(b + 80), dmin = ds_cu_h2f(b + 82);
        const int q[2] = { b[16 + lane], b[48 + lane] };
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int s = 0; s < 4; s++) {
                const int sc = b[h * 8 + 2 * s + hi16];
                const float dl = d * (float)(sc & 0x0F), ml = dmin * (float)(sc >> 4);
                v[h * 4 + s] = dl * (float)((q[h] >> (2 * s)) & 3) - ml;
            }
    } else if constexpr (T == DS_TYPE_Q4_K || T == DS_TYPE_Q5_K) {
        constexpr int bytes = T == DS_TYPE_Q4_K ? 144 : 176, qoff = T == DS_TYPE_Q4_K ? 16 : 48;
        const uint8_t *b = row + (size_t)sb * bytes;
        const float d = ds_cu_h2f(b), dmin = ds_cu_h2f(b + 2);
        const int qh = T == DS_TYPE_Q5_K ? b[16 + lane] : 0;
#pragma unroll
        for (int p = 0; p < 4; p++) {
            const int q = b[qoff + p * 32 + lane];
#pragma unroll
            for (int t = 0; t < 2; t++) {
                const int j = 2 * p + t;
                int sc, m;
                ds_cu_k_scale_min(b + 4, j, &sc, &m);
                int x = (q >> (4 * t)) & 0x0F;
                if constexpr (T == DS_TYPE_Q5_K) x |= ((qh >> j) & 1) << 4;
                v[j] = (d * (float)sc) * (float)x - dmin * (float)m;
            }
        }
    } else if constexpr (T == DS_TYPE_Q6_K) {
        const uint8_t *b = row + (size_t)sb * 210;
        const int8_t *scales = (const int8_t *)(b + 192);
        const float d = ds_cu_h2f(b + 208);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int qa = b[64 * h + lane], qb = b[64 * h + 32 + lane], qh = b[128 + 32 * h + lane];
#pragma unroll
            for (int s = 0; s < 4; s++) {
                const int lo = ((s & 1 ? qb : qa) >> (4 * (s >> 1))) & 0x0F;
                const int hi = (qh >> (2 * s)) & 0x03;
                const float dl = d * (float)scales[8 * h + 2 * s + hi16];
                v[h * 4 + s] = dl * (float)((lo | (hi << 4)) - 32);
            }
        }
    } else if constexpr (T == DS_TYPE_Q8_0) {
        const uint8_t *b = row + (size_t)sb * 8 * 34;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = (float)(int8_t)b[i * 34 + 2 + lane] * ds_cu_h2f(b + i * 34);
    }
}

#define DS_CU_ROW_WARPS 4 /* warps that share one weight row, each taking every 4th piece of K */

/* Per-lane partial sums acc[r] += row . x[r] (r < nr) over warp w's pieces of
 * the row (super-blocks w, w+nw, ... on the strided path; 32-chunks
 * lane + 32w, lane + 32(w+nw), ... otherwise). Each row's sum is formed the
 * same way whatever NR is, so decode (1 row) and prefill (8) agree bit for bit. */
template <int T, int NR>
__device__ __forceinline__ void ds_cu_rows_partial(const uint8_t *__restrict__ row, int K, const float *__restrict__ x0,
                                                   int64_t ldx, int nr, float acc[NR], int w, int nw) {
    const int lane = threadIdx.x & 31;
    if constexpr (ds_cu_strided<T>::ok) {
        const int nsb = K / 256;
        /* U super-blocks per step, all loaded before any is used: U times more
         * bytes in flight per warp. Measured on an H100 (docs/cuda.md): U = 2 at
         * 16 rows took pp512 from 295 to 443 tok/s, but U = 4 at one row cost
         * decode 4% (more registers, fewer warps), so single rows keep U = 1.
         * Every U sums a row in the same order, so the bits do not change. */
        constexpr int U = NR == 1 ? 1 : NR <= 4 ? 4 : 2;
        for (int sb0 = w; sb0 < nsb; sb0 += U * nw) {
            float v[U][8];
#pragma unroll
            for (int u = 0; u < U; u++)
                if (sb0 + u * nw < nsb) ds_cu_dq_lane<T>(row, sb0 + u * nw, lane, v[u]);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int sb = sb0 + u * nw;
                if (sb >= nsb) break;
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    if (r >= nr) break;
                    const float *x = x0 + (size_t)r * ldx + (size_t)sb * 256 + lane;
                    float s = 0.f;
#pragma unroll
                    for (int i = 0; i < 8; i++) s += v[u][i] * x[i * 32];
                    acc[r] += s;
                }
            }
        }
        if constexpr (T == DS_TYPE_Q8_0) { /* rows of 32-blocks that end mid-256 (k_b: K = 128) */
            for (int blk = nsb * 8 + w; blk < K / 32; blk += nw) {
                const uint8_t *b = row + (size_t)blk * 34;
                const float wv = (float)(int8_t)b[2 + lane] * ds_cu_h2f(b);
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    if (r >= nr) break;
                    acc[r] += wv * x0[(size_t)r * ldx + (size_t)blk * 32 + lane];
                }
            }
        }
    } else {
        for (int c = lane + 32 * w; c < K / 32; c += 32 * nw) {
            float v[32];
            ds_cu_dq32<T>(row, c, v);
#pragma unroll
            for (int r = 0; r < NR; r++) {
                if (r >= nr) break;
                const float4 *xp = (const float4 *)(x0 + (size_t)r * ldx + (size_t)c * 32);
                float s = 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const float4 f = xp[i];
                    s += v[4 * i] * f.x + v[4 * i + 1] * f.y + v[4 * i + 2] * f.z + v[4 * i + 3] * f.w;
                }
                acc[r] += s;
            }
        }
    }
}

/* out[r] = row . x0[r*ldx ..] for r < nr, computed by the whole block (blockDim.x ==
 * 32 * DS_CU_ROW_WARPS, every thread must call it); every thread gets out.
 * Fixed reduction order (lanes by shuffle, then warps 0..3): deterministic. */
template <int T, int NR>
__device__ __forceinline__ void ds_cu_block_rows(const uint8_t *__restrict__ row, int K, const float *__restrict__ x0,
                                                 int64_t ldx, int nr, float out[NR]) {
    __shared__ float red[DS_CU_ROW_WARPS][NR];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float acc[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) acc[r] = 0.f;
    ds_cu_rows_partial<T, NR>(row, K, x0, ldx, nr, acc, w, DS_CU_ROW_WARPS);
#pragma unroll
    for (int r = 0; r < NR; r++) {
        float v = acc[r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) red[w][r] = v;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < NR; r++) {
        float t = 0.f;
#pragma unroll
        for (int i = 0; i < DS_CU_ROW_WARPS; i++) t += red[i][r];
        out[r] = t;
    }
    __syncthreads(); /* red[] may be reused by the next call in this kernel */
}

/* one row times one x vector by the whole block */
template <int T>
__device__ __forceinline__ float ds_cu_block_dot(const uint8_t *__restrict__ row, const float *__restrict__ x, int K) {
    float out[1];
    ds_cu_block_rows<T, 1>(row, K, x, 0, 1, out);
    return out[0];
}

/* ---- the warp-row path ---------------------------------------------------------- */

/* 4 bytes at a 2-byte aligned address (q3_K/q6_K/q8_0 blocks are 110/210/34 bytes) */
__device__ __forceinline__ uint32_t ds_cu_ld4a2(const uint8_t *p) {
    const uint16_t *q = (const uint16_t *)p;
    return (uint32_t)q[0] | ((uint32_t)q[1] << 16);
}

/* The unsigned field (w & mask), lowest bit B, mask within bits [B, 23), as
 * float minus off: OR-ing in the exponent of 2^(23-B) makes a float equal to
 * 2^(23-B) + field, and subtracting 2^(23-B) + off is exact. Two ALU ops
 * where an int->float convert would run at a quarter of the FMA rate. */
template <int B> __device__ __forceinline__ float ds_cu_fld(uint32_t w, uint32_t mask, float off) {
    return __uint_as_float((w & mask) | ((uint32_t)(150 - B) << 23)) - ((float)(1 << (23 - B)) + off);
}
/* the four byte fields (w & m << 8i) >> 8i, i < 4, of width <= 8, minus off */
__device__ __forceinline__ void ds_cu_bytes4(uint32_t w, uint32_t m, float off, float *v) {
    const uint32_t h = w >> 16;
    v[0] = ds_cu_fld<0>(w, m, off);
    v[1] = ds_cu_fld<8>(w, m << 8, off);
    v[2] = ds_cu_fld<0>(h, m, off);
    v[3] = ds_cu_fld<8>(h, m << 8, off);
}

/* One lane's share of one super-block: load() issues the loads (raw bytes
 * kept in a few registers, so several super-blocks can be in flight), then
 * decode() writes v[RUNS*RL] = the share's weights, run g being RL
 * consecutive elements from base[g] (a multiple of 8) of the super-block.
 * LPS lanes cover a super-block of SBE elements / SBB bytes; weights and
 * row_bytes must be ALIGN-byte aligned. t = lane index within the LPS. */
template <int T> struct ds_cu_wr { static constexpr bool ok = false; };

template <> struct ds_cu_wr<DS_TYPE_Q4_K> {
    static constexpr bool ok = true;
    static constexpr int LPS = 8, RUNS = 2, RL = 16, SBE = 256, SBB = 144, ALIGN = 16;
    uint4 hd, q; /* d, dmin, scales[12]; qs[32p + 16c ..+16) */
    __device__ __forceinline__ void load(const uint8_t *b, int t) {
        hd = *(const uint4 *)b;
        q = *(const uint4 *)(b + 16 + 16 * t); /* 32p + 16c with p = t >> 1, c = t & 1 */
    }
    /* low nibbles: elements 64p + 16c + i (sub-block 2p), high: +32 (sub-block 2p+1) */
    __device__ __forceinline__ void decode(int t, float *v, int *base) const {
        const int p = t >> 1, c = t & 1;
        base[0] = 64 * p + 16 * c;
        base[1] = base[0] + 32;
        const float d = __half2float(__ushort_as_half((unsigned short)(hd.x & 0xFFFF)));
        const float dmin = __half2float(__ushort_as_half((unsigned short)(hd.x >> 16)));
        /* the 6-bit (scale, min) of sub-blocks 0..3 or 4..7, one per byte (ds_cu_k_scale_min) */
        const uint32_t scw = p < 2 ? hd.y & 0x3F3F3F3Fu : (hd.w & 0x0F0F0F0Fu) | ((hd.y >> 2) & 0x30303030u);
        const uint32_t mw = p < 2 ? hd.z & 0x3F3F3F3Fu : ((hd.w >> 4) & 0x0F0F0F0Fu) | ((hd.z >> 2) & 0x30303030u);
        const int sh = 16 * (p & 1);
        const float dl0 = d * (float)((scw >> sh) & 0xFF), ml0 = dmin * (float)((mw >> sh) & 0xFF);
        const float dl1 = d * (float)((scw >> (sh + 8)) & 0xFF), ml1 = dmin * (float)((mw >> (sh + 8)) & 0xFF);
        const uint32_t w[4] = { q.x, q.y, q.z, q.w };
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float lo[4], hi[4];
            ds_cu_bytes4(w[i], 0x0F, 0.f, lo);
            ds_cu_bytes4(w[i] >> 4, 0x0F, 0.f, hi);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                v[4 * i + e] = fmaf(dl0, lo[e], -ml0); /* dl*q is exact: one rounding, as on the host */
                v[16 + 4 * i + e] = fmaf(dl1, hi[e], -ml1);
            }
        }
    }
};

template <> struct ds_cu_wr<DS_TYPE_Q5_K> {
    static constexpr bool ok = true;
    static constexpr int LPS = 8, RUNS = 2, RL = 16, SBE = 256, SBB = 176, ALIGN = 16;
    uint4 hd, q, h; /* d, dmin, scales[12]; qs[32p + 16c ..+16); qh[16c ..+16) */
    __device__ __forceinline__ void load(const uint8_t *b, int t) {
        hd = *(const uint4 *)b;
        q = *(const uint4 *)(b + 48 + 16 * t);
        h = *(const uint4 *)(b + 16 + 16 * (t & 1));
    }
    __device__ __forceinline__ void decode(int t, float *v, int *base) const {
        const int p = t >> 1, c = t & 1;
        base[0] = 64 * p + 16 * c;
        base[1] = base[0] + 32;
        const float d = __half2float(__ushort_as_half((unsigned short)(hd.x & 0xFFFF)));
        const float dmin = __half2float(__ushort_as_half((unsigned short)(hd.x >> 16)));
        const uint32_t scw = p < 2 ? hd.y & 0x3F3F3F3Fu : (hd.w & 0x0F0F0F0Fu) | ((hd.y >> 2) & 0x30303030u);
        const uint32_t mw = p < 2 ? hd.z & 0x3F3F3F3Fu : ((hd.w >> 4) & 0x0F0F0F0Fu) | ((hd.z >> 2) & 0x30303030u);
        const int sh = 16 * (p & 1);
        const float dl0 = d * (float)((scw >> sh) & 0xFF), ml0 = dmin * (float)((mw >> sh) & 0xFF);
        const float dl1 = d * (float)((scw >> (sh + 8)) & 0xFF), ml1 = dmin * (float)((mw >> (sh + 8)) & 0xFF);
        const uint32_t w[4] = { q.x, q.y, q.z, q.w }, hb[4] = { h.x, h.y, h.z, h.w };
#pragma unroll
        for (int i = 0; i < 4; i++) {
            /* 5-bit fields: nibble | qh bit (2p for low nibbles, 2p+1 for high) << 4 */
            const uint32_t flo = (w[i] & 0x0F0F0F0Fu) | (((hb[i] >> (2 * p)) << 4) & 0x10101010u);
            const uint32_t fhi = ((w[i] >> 4) & 0x0F0F0F0Fu) | (((hb[i] >> (2 * p + 1)) << 4) & 0x10101010u);
            float lo[4], hi[4];
            ds_cu_bytes4(flo, 0x1F, 0.f, lo);
            ds_cu_bytes4(fhi, 0x1F, 0.f, hi);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                v[4 * i + e] = fmaf(dl0, lo[e], -ml0);
                v[16 + 4 * i + e] = fmaf(dl1, hi[e], -ml1);
            }
        }
    }
};

template <> struct ds_cu_wr<DS_TYPE_Q3_K> {
    static constexpr bool ok = true;
    static constexpr int LPS = 8, RUNS = 4, RL = 8, SBE = 256, SBB = 110, ALIGN = 2;
    uint32_t q[2], m[2], s[3]; /* qs[32h + 8c ..+8), hmask[8c ..+8), scales[12] */
    uint16_t d;
    __device__ __forceinline__ void load(const uint8_t *b, int t) {
        const int h = t >> 2, c = t & 3;
        q[0] = ds_cu_ld4a2(b + 32 + 32 * h + 8 * c);
        q[1] = ds_cu_ld4a2(b + 36 + 32 * h + 8 * c);
        m[0] = ds_cu_ld4a2(b + 8 * c);
        m[1] = ds_cu_ld4a2(b + 4 + 8 * c);
        s[0] = ds_cu_ld4a2(b + 96);
        s[1] = ds_cu_ld4a2(b + 100);
        s[2] = ds_cu_ld4a2(b + 104);
        d = *(const uint16_t *)(b + 108);
    }
    /* run s: elements 128h + 32s + 8c + (0..8), scale index k = 8h + 2s + (c >> 1) */
    __device__ __forceinline__ void decode(int t, float *v, int *base) const {
        const int h = t >> 2, c = t & 3, hc = c >> 1;
        const float df = __half2float(__ushort_as_half(d));
        const uint32_t l0 = (h ? s[0] >> 4 : s[0]) & 0x0F0F0F0Fu, l1 = (h ? s[1] >> 4 : s[1]) & 0x0F0F0F0Fu;
#pragma unroll
        for (int r = 0; r < 4; r++) {
            base[r] = 128 * h + 32 * r + 8 * c;
            const int bi = 8 * (2 * (r & 1) + hc); /* byte of scales[k % 8] in l0/l1, of scales[8 + k % 4] in s[2] */
            const int lo = ((r < 2 ? l0 : l1) >> bi) & 0x0F;
            const int hi = (s[2] >> (bi + 2 * (2 * h + (r >> 1)))) & 0x03;
            const float dl = df * (float)((lo | (hi << 4)) - 32);
#pragma unroll
            for (int i = 0; i < 2; i++) {
                /* 3-bit q2 | hbit << 2 per byte; the value is that minus 4 */
                const uint32_t a = q[i] >> (2 * r), hm = (m[i] >> (4 * h + r)) << 2;
                const uint32_t f = (a & 0x03030303u) | (hm & 0x04040404u);
                float x[4];
                ds_cu_bytes4(f, 0x07, 4.f, x);
#pragma unroll
                for (int e = 0; e < 4; e++) v[8 * r + 4 * i + e] = dl * x[e];
            }
        }
    }
};

template <> struct ds_cu_wr<DS_TYPE_Q6_K> {
    static constexpr bool ok = true;
    static constexpr int LPS = 8, RUNS = 4, RL = 8, SBE = 256, SBB = 210, ALIGN = 2;
    uint32_t a[2], b2[2], g[2], s[2]; /* ql[64h + 8c..), ql[64h + 32 + 8c..), qh[32h + 8c..), scales[8h..8h+8) */
    uint16_t d;
    __device__ __forceinline__ void load(const uint8_t *b, int t) {
        const int h = t >> 2, c = t & 3;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            a[i] = ds_cu_ld4a2(b + 64 * h + 8 * c + 4 * i);
            b2[i] = ds_cu_ld4a2(b + 64 * h + 32 + 8 * c + 4 * i);
            g[i] = ds_cu_ld4a2(b + 128 + 32 * h + 8 * c + 4 * i);
            s[i] = ds_cu_ld4a2(b + 192 + 8 * h + 4 * i);
        }
        d = *(const uint16_t *)(b + 208);
    }
    /* run r: elements 128h + 32r + 8c + (0..8), scale 8h + 2r + (c >> 1) */
    __device__ __forceinline__ void decode(int t, float *v, int *base) const {
        const int h = t >> 2, c = t & 3, hc = c >> 1;
        const float df = __half2float(__ushort_as_half(d));
#pragma unroll
        for (int r = 0; r < 4; r++) {
            base[r] = 128 * h + 32 * r + 8 * c;
            const int sc = (int)(int8_t)((s[r >> 1] >> (8 * (2 * (r & 1) + hc))) & 0xFF);
            const float dl = df * (float)sc;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const uint32_t lo = r & 1 ? b2[i] : a[i];
                const uint32_t l4 = r < 2 ? lo : lo >> 4;
                /* qh bits 2r, 2r+1 to bits 4, 5 of each byte */
                const uint32_t hh = r == 0 ? g[i] << 4 : r == 1 ? g[i] << 2 : r == 2 ? g[i] : g[i] >> 2;
                const uint32_t f = (l4 & 0x0F0F0F0Fu) | (hh & 0x30303030u);
                float x[4];
                ds_cu_bytes4(f, 0x3F, 32.f, x);
#pragma unroll
                for (int e = 0; e < 4; e++) v[8 * r + 4 * i + e] = dl * x[e];
            }
        }
    }
};

template <> struct ds_cu_wr<DS_TYPE_Q8_0> {
    static constexpr bool ok = true;
    static constexpr int LPS = 2, RUNS = 1, RL = 16, SBE = 32, SBB = 34, ALIGN = 2;
    uint32_t q[4];
    uint16_t d;
    __device__ __forceinline__ void load(const uint8_t *b, int t) {
        d = *(const uint16_t *)b;
#pragma unroll
        for (int i = 0; i < 4; i++) q[i] = ds_cu_ld4a2(b + 2 + 16 * t + 4 * i);
    }
    __device__ __forceinline__ void decode(int t, float *v, int *base) const {
        base[0] = 16 * t;
        const float df = __half2float(__ushort_as_half(d));
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float x[4];
            ds_cu_bytes4(q[i] ^ 0x80808080u, 0xFF, 128.f, x); /* biased byte - 128 = the int8 */
#pragma unroll
            for (int e = 0; e < 4; e++) v[4 * i + e] = x[e] * df;
        }
    }
};

/* Lanes per row group for rows of nsb super-blocks: 32, or fewer (down to
 * LPS) when a row is too short to use them; a warp then holds 32 / lanes groups. */
static inline int ds_cu_wr_lanes(int64_t nsb, int lps) {
    int lg = 32;
    while (lg > lps && (int64_t)(lg / 2) >= nsb * lps) lg /= 2;
    return lg;
}

#ifndef DS_CU_WR_STAGE
#define DS_CU_WR_STAGE 1 /* 0: 2-byte aligned types load their shares straight from global (for A/B timing) */
#endif

/* Types whose super-blocks are only 2-byte aligned (q3_K, q6_K, q8_0) are
 * staged: a lane group copies each step's bytes of its R rows into shared
 * memory with aligned 16-byte loads (one coalesced load per lane instead of
 * ~15 two-byte loads that each touch 4 super-blocks' cache lines), then every
 * lane reads its share from there. The copy reads the 16-byte chunks that
 * hold the step's bytes, so the weight range must start and end 16-byte
 * aligned (the launchers check). */
template <int T> struct ds_cu_wr_staged {
    static constexpr bool on = DS_CU_WR_STAGE && ds_cu_wr<T>::ALIGN < 16;
};
/* staging bytes of one row of a lane group of LG lanes: its LG/LPS
 * super-blocks plus up to 15 bytes before and after, in 16-byte chunks */
template <int T> __host__ __device__ constexpr int ds_cu_wr_stage_row(int LG) {
    return ((LG / ds_cu_wr<T>::LPS) * ds_cu_wr<T>::SBB + 30 + 15) / 16 * 16;
}
/* staging bytes of one warp for R rows per lane group, for any LG (LG = LPS is the most) */
template <int T, int R> __host__ __device__ constexpr int ds_cu_wr_stage_warp() {
    return ds_cu_wr_staged<T>::on ? R * (32 / ds_cu_wr<T>::LPS) * ds_cu_wr_stage_row<T>(ds_cu_wr<T>::LPS) : 16;
}

/* acc[i][r] += this lane's share of row_i . x0[r*ldx ..] for the R weight
 * rows row + i*row_bytes (i < nrow; nrow <= 0: none, but every lane of the
 * warp must call, for the staging barriers) and r < nr. LG lanes walk the
 * rows (sub = this lane's index among them), LG / LPS super-blocks per step.
 * The R rows share each activation load (x is read from L1 once per R rows,
 * not once per row: for q3_K the L1 traffic of x is 9x that of the weights)
 * and put R rows of loads in flight per step. STAGE (the default for
 * q3_K/q6_K/q8_0) copies through stage: this warp's
 * ds_cu_wr_stage_warp<T, R>() bytes of shared memory (16-byte aligned).
 * Staged or not, the values and so the sums are the same.
 * Each (row, x row) sum is formed the same way whatever NR and R are, so
 * the MoE, decode and prefill give the same bits. */
template <int T, int NR, int R, bool STAGE = ds_cu_wr_staged<T>::on>
__device__ __forceinline__ void ds_cu_wr_partial(const uint8_t *__restrict__ row, size_t row_bytes, int nrow,
                                                 int64_t nsb, const float *__restrict__ x0, int64_t ldx, int nr,
                                                 int LG, int sub, float acc[R][NR], uint8_t *stage) {
    using W = ds_cu_wr<T>;
    constexpr int NV = W::RUNS * W::RL;
    const int spg = LG / W::LPS, t = sub % W::LPS;
    const int rowsz = ds_cu_wr_stage_row<T>(LG);
    uint8_t *st = STAGE ? stage + (size_t)((threadIdx.x & 31) / LG) * R * rowsz : nullptr; /* this group's rows */
    for (int64_t sb0 = 0; sb0 < nsb; sb0 += spg) {
        const int64_t sb = sb0 + sub / W::LPS;
        const bool live = nrow > 0 && sb < nsb;
        W raw[STAGE ? 1 : R]; /* staged: one row at a time, re-read from shared memory */
        int off[R];
        if constexpr (STAGE) {
            constexpr int CPL = 2; /* chunks per lane: stage_row(LG) / 16 <= 2 * LG for every type and LG */
            const int nsbs = nsb - sb0 < spg ? (int)(nsb - sb0) : spg;
            uint4 c[R][CPL];
#pragma unroll
            for (int i = 0; i < R; i++) {
                const uint8_t *src = row + (size_t)i * row_bytes + (size_t)sb0 * W::SBB;
                off[i] = (int)((uintptr_t)src & 15);
                const uint4 *a = (const uint4 *)(src - off[i]);
                const int nch = (off[i] + nsbs * W::SBB + 15) >> 4;
#pragma unroll
                for (int k = 0; k < CPL; k++)
                    if (i < nrow && sub + k * LG < nch) c[i][k] = a[sub + k * LG];
            }
#pragma unroll
            for (int i = 0; i < R; i++) {
                const int nch = (off[i] + nsbs * W::SBB + 15) >> 4;
#pragma unroll
                for (int k = 0; k < CPL; k++)
                    if (i < nrow && sub + k * LG < nch) ((uint4 *)(st + i * rowsz))[sub + k * LG] = c[i][k];
            }
            __syncwarp();
            if (live) raw[0].load(st + off[0] + (sub / W::LPS) * W::SBB, t);
        } else {
#pragma unroll
            for (int i = 0; i < R; i++)
                if (i < nrow && sb < nsb) raw[i].load(row + (size_t)i * row_bytes + (size_t)sb * W::SBB, t);
        }
        if (live) {
            int base[W::RUNS];
            if constexpr (NR <= 2) {
                /* decode: the x rows in registers, the R weight rows decoded one at a time */
                float v[NV];
                raw[0].decode(t, v, base);
                float xv[NR][NV];
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    if (r >= nr) break;
                    const float *x = x0 + (size_t)r * ldx + (size_t)sb * W::SBE;
#pragma unroll
                    for (int g = 0; g < W::RUNS; g++)
#pragma unroll
                        for (int k = 0; k < W::RL / 4; k++) {
                            const float4 f = *(const float4 *)(x + base[g] + 4 * k);
                            xv[r][g * W::RL + 4 * k] = f.x;
                            xv[r][g * W::RL + 4 * k + 1] = f.y;
                            xv[r][g * W::RL + 4 * k + 2] = f.z;
                            xv[r][g * W::RL + 4 * k + 3] = f.w;
                        }
                }
#pragma unroll
                for (int i = 0; i < R; i++) {
                    if (i >= nrow) break;
                    if (i > 0) {
                        if constexpr (STAGE) {
                            raw[0].load(st + i * rowsz + off[i] + (sub / W::LPS) * W::SBB, t);
                            raw[0].decode(t, v, base);
                        } else {
                            raw[i].decode(t, v, base);
                        }
                    }
#pragma unroll
                    for (int r = 0; r < NR; r++) {
                        if (r >= nr) break;
                        float s = 0.f;
#pragma unroll
                        for (int k = 0; k < NV; k += 4)
                            s += v[k] * xv[r][k] + v[k + 1] * xv[r][k + 1] + v[k + 2] * xv[r][k + 2] +
                                 v[k + 3] * xv[r][k + 3];
                        acc[i][r] += s;
                    }
                }
            } else {
                /* prefill: the R weight rows in registers, the x rows streamed
                 * (same sums, term for term, as above) */
                float v[R][NV];
#pragma unroll
                for (int i = 0; i < R; i++) {
                    if constexpr (STAGE) {
                        if (i > 0 && i < nrow) raw[0].load(st + i * rowsz + off[i] + (sub / W::LPS) * W::SBB, t);
                        raw[0].decode(t, v[i], base);
                    } else {
                        raw[i].decode(t, v[i], base);
                    }
                }
#pragma unroll 1
                for (int r = 0; r < nr; r++) {
                    const float *x = x0 + (size_t)r * ldx + (size_t)sb * W::SBE;
                    float s[R];
#pragma unroll
                    for (int i = 0; i < R; i++) s[i] = 0.f;
#pragma unroll
                    for (int g = 0; g < W::RUNS; g++)
#pragma unroll
                        for (int k = 0; k < W::RL / 4; k++) {
                            const float4 f = *(const float4 *)(x + base[g] + 4 * k);
                            const int j = g * W::RL + 4 * k;
#pragma unroll
                            for (int i = 0; i < R; i++)
                                s[i] += v[i][j] * f.x + v[i][j + 1] * f.y + v[i][j + 2] * f.z + v[i][j + 3] * f.w;
                        }
#pragma unroll
                    for (int i = 0; i < R; i++) {
                        if (i >= nrow) break;
#pragma unroll
                        for (int rr = 0; rr < NR; rr++)
                            if (rr == r) acc[i][rr] += s[i];
                    }
                }
            }
        }
        if constexpr (STAGE) __syncwarp(); /* the next step overwrites the stage */
    }
}

/* sums v over the LG lanes of each lane group (xor tree: a fixed order) */
__device__ __forceinline__ float ds_cu_group_sum(float v, int LG) {
    for (int o = LG >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#endif
