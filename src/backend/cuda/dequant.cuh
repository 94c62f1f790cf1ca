/* dequant.cuh: device dequantization of one 32-element chunk of a weight
 * row, for every block type the CUDA backend reads (plain, legacy q4..q8,
 * K-quants, iq4_nl/iq4_xs). Shared by the GEMV, MoE, embedding and
 * dequantize-to-f32 kernels. Values equal ds_dequantize_row bit for bit
 * (every product is exact in f32; see quant/dequant.c). Not the IQ1-3 grids. */
#ifndef DS_CUDA_DEQUANT_CUH
#define DS_CUDA_DEQUANT_CUH

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

/* The ggml type ids used below (GGUF file-format constants, the same values
 * as ds_type in quant/quant.h, which is C11-only and not included here). */
enum {
    DS_TYPE_F32 = 0, DS_TYPE_F16 = 1, DS_TYPE_Q4_0 = 2, DS_TYPE_Q4_1 = 3, DS_TYPE_Q5_0 = 6, DS_TYPE_Q5_1 = 7,
    DS_TYPE_Q8_0 = 8, DS_TYPE_Q2_K = 10, DS_TYPE_Q3_K = 11, DS_TYPE_Q4_K = 12, DS_TYPE_Q5_K = 13,
    DS_TYPE_Q6_K = 14, DS_TYPE_IQ4_NL = 20, DS_TYPE_IQ4_XS = 23, DS_TYPE_BF16 = 30,
};

/* iq4_nl/iq4_xs levels: the file format's table (ds_iq4nl_values in
 * quant/iq_tables.c); one copy per translation unit, checked against the
 * host table by ds_cu_gemv_check_tables. */
static __constant__ int8_t ds_cu_iq4nl[16] = { -127, -104, -83, -65, -49, -35, -22, -10,
                                               1,    13,   25,  38,  53,  69,  89,  113 };

__device__ __forceinline__ float ds_cu_h2f(const uint8_t *p) {
    return __half2float(__ushort_as_half(*(const uint16_t *)p));
}
__device__ __forceinline__ float ds_cu_bf2f(uint16_t u) { return __uint_as_float((uint32_t)u << 16); }

/* Block traits for the row walk: elements and bytes of one block. */
template <int T> struct ds_cu_blk;
#define DS_CU_BLK(T, ELEMS, BYTES) \
    template <> struct ds_cu_blk<T> { static constexpr int elems = ELEMS, bytes = BYTES; }
DS_CU_BLK(DS_TYPE_F32, 32, 128);  /* plain types walk in 32-element "blocks" */
DS_CU_BLK(DS_TYPE_F16, 32, 64);
DS_CU_BLK(DS_TYPE_BF16, 32, 64);
DS_CU_BLK(DS_TYPE_Q4_0, 32, 18);
DS_CU_BLK(DS_TYPE_Q4_1, 32, 20);
DS_CU_BLK(DS_TYPE_Q5_0, 32, 22);
DS_CU_BLK(DS_TYPE_Q5_1, 32, 24);
DS_CU_BLK(DS_TYPE_Q8_0, 32, 34);
DS_CU_BLK(DS_TYPE_IQ4_NL, 32, 18);
DS_CU_BLK(DS_TYPE_Q2_K, 256, 84);
DS_CU_BLK(DS_TYPE_Q3_K, 256, 110);
DS_CU_BLK(DS_TYPE_Q4_K, 256, 144);
DS_CU_BLK(DS_TYPE_Q5_K, 256, 176);
DS_CU_BLK(DS_TYPE_Q6_K, 256, 210);
DS_CU_BLK(DS_TYPE_IQ4_XS, 256, 136);
#undef DS_CU_BLK

/* q4_K/q5_K 6-bit (scale, min) pair j of the 12 scale bytes s */
__device__ __forceinline__ void ds_cu_k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 0x3F;
        *m = s[j + 4] & 0x3F;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
        *m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
    }
}

/* v[0..32) = elements [32c, 32c+32) of the row starting at `row`. */
template <int T>
__device__ __forceinline__ void ds_cu_dq32(const uint8_t *__restrict__ row, int c, float v[32]) {
    if constexpr (T == DS_TYPE_F32) {
        const float4 *p = (const float4 *)(row + (size_t)c * 128);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 f = p[i];
            v[4 * i] = f.x; v[4 * i + 1] = f.y; v[4 * i + 2] = f.z; v[4 * i + 3] = f.w;
        }
    } else if constexpr (T == DS_TYPE_F16 || T == DS_TYPE_BF16) {
        const uint4 *p = (const uint4 *)(row + (size_t)c * 64);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 u = p[i];
            uint32_t w[4] = { u.x, u.y, u.z, u.w };
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint16_t lo = (uint16_t)(w[k] & 0xFFFF), hi = (uint16_t)(w[k] >> 16);
                if constexpr (T == DS_TYPE_F16) {
                    v[8 * i + 2 * k] = __half2float(__ushort_as_half(lo));
                    v[8 * i + 2 * k + 1] = __half2float(__ushort_as_half(hi));
                } else {
                    v[8 * i + 2 * k] = ds_cu_bf2f(lo);
                    v[8 * i + 2 * k + 1] = ds_cu_bf2f(hi);
                }
            }
        }
    } else if constexpr (T == DS_TYPE_Q4_0 || T == DS_TYPE_IQ4_NL) {
        const uint8_t *b = row + (size_t)c * 18;
        const float d = ds_cu_h2f(b);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int q = b[2 + j];
            if constexpr (T == DS_TYPE_Q4_0) {
                v[j] = d * (float)((q & 0x0F) - 8);
                v[j + 16] = d * (float)((q >> 4) - 8);
            } else {
                v[j] = d * (float)ds_cu_iq4nl[q & 0x0F];
                v[j + 16] = d * (float)ds_cu_iq4nl[q >> 4];
            }
        }
    } else if constexpr (T == DS_TYPE_Q4_1) {
        const uint8_t *b = row + (size_t)c * 20;
        const float d = ds_cu_h2f(b), m = ds_cu_h2f(b + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int q = b[4 + j];
            v[j] = d * (float)(q & 0x0F) + m;
            v[j + 16] = d * (float)(q >> 4) + m;
        }
    } else if constexpr (T == DS_TYPE_Q5_0 || T == DS_TYPE_Q5_1) {
        constexpr int bytes = T == DS_TYPE_Q5_0 ? 22 : 24, hoff = T == DS_TYPE_Q5_0 ? 2 : 4;
        const uint8_t *b = row + (size_t)c * bytes;
        const float d = ds_cu_h2f(b);
        const float m = T == DS_TYPE_Q5_1 ? ds_cu_h2f(b + 2) : 0.0f;
        const uint32_t qh = (uint32_t)b[hoff] | ((uint32_t)b[hoff + 1] << 8) | ((uint32_t)b[hoff + 2] << 16) |
                            ((uint32_t)b[hoff + 3] << 24);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int q = b[hoff + 4 + j];
            const int lo = (q & 0x0F) | (int)(((qh >> j) & 1) << 4);
            const int hi = (q >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            if constexpr (T == DS_TYPE_Q5_0) {
                v[j] = d * (float)(lo - 16);
                v[j + 16] = d * (float)(hi - 16);
            } else {
                v[j] = d * (float)lo + m;
                v[j + 16] = d * (float)hi + m;
            }
        }
    } else if constexpr (T == DS_TYPE_Q8_0) {
        const uint8_t *b = row + (size_t)c * 34;
        const float d = ds_cu_h2f(b);
#pragma unroll
        for (int j = 0; j < 32; j++) v[j] = (float)(int8_t)b[2 + j] * d;
    } else {
        /* 256-element super-blocks: chunk c is sub-block j of super-block c/8 */
        const int j = c & 7;
        const uint8_t *b = row + (size_t)(c >> 3) * ds_cu_blk<T>::bytes;
        if constexpr (T == DS_TYPE_Q2_K) {
            const uint8_t *scales = b, *qs = b + 16;
            const float d = ds_cu_h2f(b + 80), dmin = ds_cu_h2f(b + 82);
            const int half = j >> 2, shift = 2 * (j & 3);
#pragma unroll
            for (int l = 0; l < 32; l++) {
                const int q = (qs[half * 32 + l] >> shift) & 3;
                const uint8_t sc = scales[2 * j + l / 16];
                const float dl = d * (float)(sc & 0x0F), ml = dmin * (float)(sc >> 4);
                v[l] = dl * (float)q - ml;
            }
        } else if constexpr (T == DS_TYPE_Q3_K) {
            const uint8_t *hmask = b, *qs = b + 32, *s = b + 96;
            const float d = ds_cu_h2f(b + 108);
            const int half = j >> 2, shift = 2 * (j & 3);
            float dl[2];
#pragma unroll
            for (int t = 0; t < 2; t++) {
                const int k = 2 * j + t; /* 16-element scale index */
                const int lo = (s[k % 8] >> (4 * (k / 8))) & 0x0F;
                const int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 0x03;
                dl[t] = d * (float)((lo | (hi << 4)) - 32);
            }
#pragma unroll
            for (int l = 0; l < 32; l++) {
                const int lo = (qs[half * 32 + l] >> shift) & 3;
                const int hbit = (hmask[l] >> j) & 1;
                v[l] = dl[l / 16] * (float)(lo - (hbit ? 0 : 4));
            }
        } else if constexpr (T == DS_TYPE_Q4_K || T == DS_TYPE_Q5_K) {
            const float d = ds_cu_h2f(b), dmin = ds_cu_h2f(b + 2);
            int sc, m;
            ds_cu_k_scale_min(b + 4, j, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            const uint8_t *q = b + (T == DS_TYPE_Q4_K ? 16 : 48) + (j / 2) * 32;
            const int shift = 4 * (j & 1);
#pragma unroll
            for (int l = 0; l < 32; l++) {
                int x = (q[l] >> shift) & 0x0F;
                if constexpr (T == DS_TYPE_Q5_K) x |= ((b[16 + l] >> j) & 1) << 4;
                v[l] = dl * (float)x - ml;
            }
        } else if constexpr (T == DS_TYPE_Q6_K) {
            const uint8_t *ql = b, *qh = b + 128;
            const int8_t *scales = (const int8_t *)(b + 192);
            const float d = ds_cu_h2f(b + 208);
            const int h = j >> 2, s = j & 3;
            const float dl0 = d * (float)scales[2 * j], dl1 = d * (float)scales[2 * j + 1];
#pragma unroll
            for (int l = 0; l < 32; l++) {
                const int lo = (ql[64 * h + l + 32 * (s & 1)] >> (4 * (s >> 1))) & 0x0F;
                const int hi = (qh[32 * h + l] >> (2 * s)) & 0x03;
                v[l] = (l < 16 ? dl0 : dl1) * (float)((lo | (hi << 4)) - 32);
            }
        } else if constexpr (T == DS_TYPE_IQ4_XS) {
            const float d = ds_cu_h2f(b);
            const int scales_h = *(const uint16_t *)(b + 2);
            const int ls = ((b[4 + j / 2] >> (4 * (j & 1))) & 0x0F) | (((scales_h >> (2 * j)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            const uint8_t *qs = b + 8 + 16 * j;
#pragma unroll
            for (int l = 0; l < 16; l++) {
                v[l] = dl * (float)ds_cu_iq4nl[qs[l] & 0x0F];
                v[l + 16] = dl * (float)ds_cu_iq4nl[qs[l] >> 4];
            }
        }
    }
}

/* Expands to X(type) for every type the kernels are instantiated for. */
#define DS_CU_FOR_TYPES(X)                                                                              \
    X(DS_TYPE_F32) X(DS_TYPE_F16) X(DS_TYPE_BF16) X(DS_TYPE_Q4_0) X(DS_TYPE_Q4_1) X(DS_TYPE_Q5_0)      \
    X(DS_TYPE_Q5_1) X(DS_TYPE_Q8_0) X(DS_TYPE_IQ4_NL) X(DS_TYPE_Q2_K) X(DS_TYPE_Q3_K) X(DS_TYPE_Q4_K) \
    X(DS_TYPE_Q5_K) X(DS_TYPE_Q6_K) X(DS_TYPE_IQ4_XS)

#endif
