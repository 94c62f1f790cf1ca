/* dot_strided.cuh: the bandwidth path of the GEMV for the K-quants and q8_0.
 * A warp walks a row one 256-element super-block at a time; lane l owns
 * elements i*32 + l (i < 8), which is how these formats pack their quant
 * bytes, so the quant bytes and the activations are read coalesced and each
 * lane dequantizes 8 values from ~10 loads. Values equal ds_dequantize_row
 * exactly (same products, see dequant.cuh). Not for the other types: they
 * use the per-lane 32-chunk path of dequant.cuh. */
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

#endif
