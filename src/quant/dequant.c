/* dequant.c: the reference dequantization of plain (f32/f16/bf16), legacy
 * (q4_0..q8_0) and K-quant (q2_K..q6_K) blocks, bit-exact with gguf-py.
 * Not fast and not the IQ types (dequant_iq.c); dot kernels live in dot_*.c. */
#include "quant.h"
#include "blocks.h"
#include "iq_tables.h"

#include <string.h>

/* Why plain float code is bit-exact with gguf-py in any operation order:
 * every product here is exact in float32. An fp16 scale has 11 significant
 * bits; the sub-scale and the quant (or grid value) add at most 13 more
 * (worst cases q6_K 11+7+5, iq4_xs 11+5+7), within float's 24, and no
 * product can overflow or underflow. So the only rounding is the one
 * addition of a min term (q4_1, q5_1, q2_K, q4_K, q5_K); reordering products
 * or fusing a*b+c into an FMA changes nothing, and SIMD dequantizers can
 * match this file exactly too. */

/* fp16 field of a block (the structs keep 2-byte alignment) */
static inline float ds_h(ds_half h) { return ds_fp16_to_f32(h); }

/* little-endian u32 from a possibly unaligned place */
static inline uint32_t ds_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- legacy 32-element blocks ------------------------------------------------
 * Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble. */

static void dq_q4_0(const block_q4_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        const float d = ds_h(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = d * (float)((b[i].qs[j] & 0x0F) - 8);
            y[j + QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void dq_q4_1(const block_q4_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK4_1) {
        const float d = ds_h(b[i].d), m = ds_h(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = d * (float)(b[i].qs[j] & 0x0F) + m;
            y[j + QK4_1 / 2] = d * (float)(b[i].qs[j] >> 4) + m;
        }
    }
}

/* q5: bit j of the little-endian u32 qh is bit 4 of element j */
static void dq_q5_0(const block_q5_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK5_0) {
        const float d = ds_h(b[i].d);
        const uint32_t qh = ds_le32(b[i].qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            int lo = (b[i].qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (float)(lo - 16);
            y[j + QK5_0 / 2] = d * (float)(hi - 16);
        }
    }
}

static void dq_q5_1(const block_q5_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK5_1) {
        const float d = ds_h(b[i].d), m = ds_h(b[i].m);
        const uint32_t qh = ds_le32(b[i].qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            int lo = (b[i].qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (float)lo + m;
            y[j + QK5_1 / 2] = d * (float)hi + m;
        }
    }
}

static void dq_q8_0(const block_q8_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK8_0) {
        const float d = ds_h(b[i].d);
        for (int j = 0; j < QK8_0; j++) y[j] = (float)b[i].qs[j] * d;
    }
}

/* ---- K-quants (256-element super-blocks) --------------------------------------
 * Scales are formed in float first (d * sc), then multiplied by the quant,
 * then the min term (dmin * m) is subtracted: gguf-py's order. */

/* q2_K: 16 sub-blocks of 16; each qs byte holds 4 values that lie 32 apart */
static void dq_q2_K(const block_q2_K *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK_K) {
        const float d = ds_h(b[i].d), dmin = ds_h(b[i].dmin);
        for (int e = 0; e < QK_K; e++) {
            const int half = e / 128, shift = (e % 128) / 32, l = e % 32;
            const int q = (b[i].qs[half * 32 + l] >> (2 * shift)) & 3;
            const uint8_t sc = b[i].scales[e / 16];
            const float dl = d * (float)(sc & 0x0F);
            const float ml = dmin * (float)(sc >> 4);
            y[e] = dl * (float)q - ml;
        }
    }
}

/* q3_K's 16 signed 6-bit scales: low nibbles in bytes 0..7 (scales 0..7 use
 * the low nibble, 8..15 the high one), top 2 bits in bytes 8..11. */
static void ds_q3_K_scales(const uint8_t s[12], int out[16]) {
    for (int k = 0; k < 16; k++) {
        int lo = (s[k % 8] >> (4 * (k / 8))) & 0x0F;
        int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 0x03;
        out[k] = (lo | (hi << 4)) - 32;
    }
}

/* q3_K: 2 low bits as in q2_K; a clear hmask bit means "subtract 4" */
static void dq_q3_K(const block_q3_K *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK_K) {
        const float d = ds_h(b[i].d);
        int sc[16];
        ds_q3_K_scales(b[i].scales, sc);
        for (int e = 0; e < QK_K; e++) {
            const int half = e / 128, shift = (e % 128) / 32, l = e % 32;
            const int lo = (b[i].qs[half * 32 + l] >> (2 * shift)) & 3;
            const int hbit = (b[i].hmask[l] >> (e / 32)) & 1;
            const float dl = d * (float)sc[e / 16];
            y[e] = dl * (float)(lo - (hbit ? 0 : 4));
        }
    }
}

/* q4_K/q5_K's 8 (scale, min) pairs of 6 bits in 12 bytes: pairs 0..3 in the
 * low 6 bits of bytes 0..3 / 4..7; pairs 4..7 take a nibble of bytes 8..11
 * plus the top 2 bits of bytes 0..3 (scale) or 4..7 (min). */
static void ds_k_scale_min(const uint8_t s[12], int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 0x3F;
        *m = s[j + 4] & 0x3F;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
        *m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
    }
}

/* q4_K: 8 sub-blocks of 32; byte l of chunk c holds elements 64c+l and 64c+32+l */
static void dq_q4_K(const block_q4_K *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK_K) {
        const float d = ds_h(b[i].d), dmin = ds_h(b[i].dmin);
        for (int j = 0; j < QK_K / 32; j++) {
            int sc, m;
            ds_k_scale_min(b[i].scales, j, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            const uint8_t *q = b[i].qs + (j / 2) * 32;
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++)
                y[j * 32 + l] = dl * (float)((q[l] >> shift) & 0x0F) - ml;
        }
    }
}

/* q5_K: q4_K plus bit j of qh[l] as bit 4 of element 32j+l */
static void dq_q5_K(const block_q5_K *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK_K) {
        const float d = ds_h(b[i].d), dmin = ds_h(b[i].dmin);
        for (int j = 0; j < QK_K / 32; j++) {
            int sc, m;
            ds_k_scale_min(b[i].scales, j, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            const uint8_t *q = b[i].qs + (j / 2) * 32;
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0x0F) | (((b[i].qh[l] >> j) & 1) << 4);
                y[j * 32 + l] = dl * (float)v - ml;
            }
        }
    }
}

/* q6_K: element e = 128h + 32s + l (s < 4): low nibble from ql[64h + l + 32(s&1)]
 * (high nibble if s >= 2), top 2 bits from qh[32h + l] >> 2s; signed via -32. */
static void dq_q6_K(const block_q6_K *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += QK_K) {
        const float d = ds_h(b[i].d);
        for (int e = 0; e < QK_K; e++) {
            const int h = e / 128, s = (e % 128) / 32, l = e % 32;
            const int lo = (b[i].ql[64 * h + l + 32 * (s & 1)] >> (4 * (s >> 1))) & 0x0F;
            const int hi = (b[i].qh[32 * h + l] >> (2 * s)) & 0x03;
            const float dl = d * (float)b[i].scales[e / 16];
            y[e] = dl * (float)((lo | (hi << 4)) - 32);
        }
    }
}

/* ---- dispatch ---------------------------------------------------------------------- */

void ds_dequantize_row(ds_type t, const void *src, float *dst, int64_t n) {
    const ds_type_traits *tr = ds_type_info(t);
    DS_ASSERT(tr && tr->can_dequant);
    DS_ASSERT(n >= 0 && n % tr->block_elems == 0);
    const int64_t nb = n / tr->block_elems;
    switch (t) {
    case DS_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case DS_TYPE_F16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++) dst[i] = ds_fp16_to_f32(h[i]);
        break;
    }
    case DS_TYPE_BF16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++) dst[i] = ds_bf16_to_f32(h[i]);
        break;
    }
    case DS_TYPE_Q4_0: dq_q4_0(src, dst, nb); break;
    case DS_TYPE_Q4_1: dq_q4_1(src, dst, nb); break;
    case DS_TYPE_Q5_0: dq_q5_0(src, dst, nb); break;
    case DS_TYPE_Q5_1: dq_q5_1(src, dst, nb); break;
    case DS_TYPE_Q8_0: dq_q8_0(src, dst, nb); break;
    case DS_TYPE_Q2_K: dq_q2_K(src, dst, nb); break;
    case DS_TYPE_Q3_K: dq_q3_K(src, dst, nb); break;
    case DS_TYPE_Q4_K: dq_q4_K(src, dst, nb); break;
    case DS_TYPE_Q5_K: dq_q5_K(src, dst, nb); break;
    case DS_TYPE_Q6_K: dq_q6_K(src, dst, nb); break;
    case DS_TYPE_IQ2_XXS: ds_dequant_iq2_xxs(src, dst, nb); break;
    case DS_TYPE_IQ2_XS: ds_dequant_iq2_xs(src, dst, nb); break;
    case DS_TYPE_IQ2_S: ds_dequant_iq2_s(src, dst, nb); break;
    case DS_TYPE_IQ3_XXS: ds_dequant_iq3_xxs(src, dst, nb); break;
    case DS_TYPE_IQ3_S: ds_dequant_iq3_s(src, dst, nb); break;
    case DS_TYPE_IQ1_S: ds_dequant_iq1_s(src, dst, nb); break;
    case DS_TYPE_IQ1_M: ds_dequant_iq1_m(src, dst, nb); break;
    case DS_TYPE_IQ4_NL: ds_dequant_iq4_nl(src, dst, nb); break;
    case DS_TYPE_IQ4_XS: ds_dequant_iq4_xs(src, dst, nb); break;
    default: DS_ASSERT(!"type marked can_dequant without a decoder");
    }
}
