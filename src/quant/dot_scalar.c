/* dot_scalar.c: portable dot kernels for every readable weight type against
 * its activation format (quant.h). Integer sums per block, one float product
 * per scale; IQ grid types go through ds_dequantize_row in chunks.
 * Not the oracle (that is backend/ref with plain floats) and not fast: the
 * fallback when no SIMD kernel exists, and the reference the SIMD kernels
 * are first compared with. */
#include "dot_internal.h"

static inline float ds_h(ds_half h) { return ds_fp16_to_f32(h); }

/* ---- plain types against f32 ---------------------------------------------------
 * Double accumulation: speed does not matter here, accuracy does. */

static void dot_f32(int n, float *s, const void *w, const void *a) {
    const float *x = w, *y = a;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (double)x[i] * y[i];
    *s = (float)sum;
}

static void dot_f16(int n, float *s, const void *w, const void *a) {
    const uint16_t *x = w;
    const float *y = a;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (double)ds_fp16_to_f32(x[i]) * y[i];
    *s = (float)sum;
}

static void dot_bf16(int n, float *s, const void *w, const void *a) {
    const uint16_t *x = w;
    const float *y = a;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (double)ds_bf16_to_f32(x[i]) * y[i];
    *s = (float)sum;
}

/* ---- 32-element blocks against q8_0 / q8_1 --------------------------------------
 * Element j < 16 of a 4-bit block is the low nibble of qs[j], j + 16 the high. */

static void dot_q4_0(int n, float *s, const void *w, const void *a) {
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK4_0; b++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ((x[b].qs[j] & 0x0F) - 8) * y[b].qs[j];
            isum += ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        }
        sum += ds_h(x[b].d) * ds_h(y[b].d) * (float)isum;
    }
    *s = sum;
}

/* q4_1 / q5_1: w = d q + m, so w.a = d da sum(q qa) + m (da sum(qa)) = ... + m s */
static void dot_q4_1(int n, float *s, const void *w, const void *a) {
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK4_1; b++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += (x[b].qs[j] & 0x0F) * y[b].qs[j];
            isum += (x[b].qs[j] >> 4) * y[b].qs[j + 16];
        }
        sum += ds_h(x[b].d) * ds_h(y[b].d) * (float)isum + ds_h(x[b].m) * ds_h(y[b].s);
    }
    *s = sum;
}

/* q5: bit j of the little-endian u32 qh is bit 4 of element j */
static void dot_q5_0(int n, float *s, const void *w, const void *a) {
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK5_0; b++) {
        const uint32_t qh = ds_dot_le32(x[b].qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[b].qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            isum += (lo - 16) * y[b].qs[j] + (hi - 16) * y[b].qs[j + 16];
        }
        sum += ds_h(x[b].d) * ds_h(y[b].d) * (float)isum;
    }
    *s = sum;
}

static void dot_q5_1(int n, float *s, const void *w, const void *a) {
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK5_1; b++) {
        const uint32_t qh = ds_dot_le32(x[b].qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[b].qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            isum += lo * y[b].qs[j] + hi * y[b].qs[j + 16];
        }
        sum += ds_h(x[b].d) * ds_h(y[b].d) * (float)isum + ds_h(x[b].m) * ds_h(y[b].s);
    }
    *s = sum;
}

static void dot_q8_0(int n, float *s, const void *w, const void *a) {
    const block_q8_0 *x = w;
    const block_q8_0 *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK8_0; b++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += x[b].qs[j] * y[b].qs[j];
        sum += ds_h(x[b].d) * ds_h(y[b].d) * (float)isum;
    }
    *s = sum;
}

static void dot_iq4_nl(int n, float *s, const void *w, const void *a) {
    const block_iq4_nl *x = w;
    const block_q8_0 *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK4_NL; b++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ds_iq4nl_values[x[b].qs[j] & 0x0F] * y[b].qs[j];
            isum += ds_iq4nl_values[x[b].qs[j] >> 4] * y[b].qs[j + 16];
        }
        sum += ds_h(x[b].d) * ds_h(y[b].d) * (float)isum;
    }
    *s = sum;
}

/* ---- K-quants against q8_K ---------------------------------------------------------
 * Each 256-block: an exact integer sum over its sub-blocks with their integer
 * scales, times d * d_a; min terms use the activation's bsums (sums of 16). */

/* q2_K: element e = 128h + 32j + l takes bits 2j..2j+1 of qs[32h + l];
 * sub-block g = e / 16 has scale nibble scales[g] & 15 and min scales[g] >> 4 */
static void dot_q2_K(int n, float *s, const void *w, const void *a) {
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int isum = 0, msum = 0;
        for (int g = 0; g < 16; g++) msum += (x[b].scales[g] >> 4) * y[b].bsums[g];
        for (int e0 = 0; e0 < QK_K; e0 += 16) {
            const int h = e0 / 128, j = (e0 % 128) / 32, l0 = e0 % 32;
            int gsum = 0;
            for (int l = l0; l < l0 + 16; l++)
                gsum += ((x[b].qs[32 * h + l] >> (2 * j)) & 3) * y[b].qs[128 * h + 32 * j + l];
            isum += (x[b].scales[e0 / 16] & 0x0F) * gsum;
        }
        sum += y[b].d * (ds_h(x[b].d) * (float)isum - ds_h(x[b].dmin) * (float)msum);
    }
    *s = sum;
}

/* q3_K: the 2 low bits as in q2_K; a clear bit (4h + j) of hmask[l] means -4 */
static void dot_q3_K(int n, float *s, const void *w, const void *a) {
    const block_q3_K *x = w;
    const block_q8_K *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int8_t sc[16];
        ds_dot_q3_K_scales(x[b].scales, sc);
        int isum = 0;
        for (int e0 = 0; e0 < QK_K; e0 += 16) {
            const int h = e0 / 128, j = (e0 % 128) / 32, l0 = e0 % 32;
            int gsum = 0;
            for (int l = l0; l < l0 + 16; l++) {
                int q = (x[b].qs[32 * h + l] >> (2 * j)) & 3;
                q -= ((x[b].hmask[l] >> (4 * h + j)) & 1) ? 0 : 4;
                gsum += q * y[b].qs[128 * h + 32 * j + l];
            }
            isum += sc[e0 / 16] * gsum;
        }
        sum += y[b].d * ds_h(x[b].d) * (float)isum;
    }
    *s = sum;
}

/* q4_K: sub-block j of 32 is the low (j even) or high nibble of qs[32(j/2) + l] */
static void dot_q4_K(int n, float *s, const void *w, const void *a) {
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        uint8_t sc[8], mn[8];
        ds_dot_k4_scales(x[b].scales, sc, mn);
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = x[b].qs + 32 * (j / 2);
            const int8_t *qa = y[b].qs + 32 * j;
            int gsum = 0;
            for (int l = 0; l < 32; l++) gsum += ((q[l] >> (4 * (j % 2))) & 0x0F) * qa[l];
            isum += sc[j] * gsum;
            msum += mn[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        sum += y[b].d * (ds_h(x[b].d) * (float)isum - ds_h(x[b].dmin) * (float)msum);
    }
    *s = sum;
}

/* q5_K: q4_K plus bit j of qh[l] as bit 4 of element 32j + l */
static void dot_q5_K(int n, float *s, const void *w, const void *a) {
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        uint8_t sc[8], mn[8];
        ds_dot_k4_scales(x[b].scales, sc, mn);
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = x[b].qs + 32 * (j / 2);
            const int8_t *qa = y[b].qs + 32 * j;
            int gsum = 0;
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> (4 * (j % 2))) & 0x0F) | (((x[b].qh[l] >> j) & 1) << 4);
                gsum += v * qa[l];
            }
            isum += sc[j] * gsum;
            msum += mn[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        sum += y[b].d * (ds_h(x[b].d) * (float)isum - ds_h(x[b].dmin) * (float)msum);
    }
    *s = sum;
}

/* q6_K: element e = 128h + 32k + l: low nibble of ql[64h + 32(k&1) + l] (high
 * nibble for k >= 2), top 2 bits = bits 2k..2k+1 of qh[32h + l]; minus 32 */
static void dot_q6_K(int n, float *s, const void *w, const void *a) {
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int isum = 0;
        for (int e0 = 0; e0 < QK_K; e0 += 16) {
            const int h = e0 / 128, k = (e0 % 128) / 32, l0 = e0 % 32;
            int gsum = 0;
            for (int l = l0; l < l0 + 16; l++) {
                int lo = (x[b].ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0x0F;
                int hi = (x[b].qh[32 * h + l] >> (2 * k)) & 3;
                gsum += ((lo | (hi << 4)) - 32) * y[b].qs[e0 - l0 + l];
            }
            isum += x[b].scales[e0 / 16] * gsum;
        }
        sum += y[b].d * ds_h(x[b].d) * (float)isum;
    }
    *s = sum;
}

/* iq4_xs: 8 sub-blocks of 32 with 6-bit scales (low nibble in scales_l,
 * top 2 bits in scales_h), minus 32; weights from the iq4_nl code book */
static void dot_iq4_xs(int n, float *s, const void *w, const void *a) {
    const block_iq4_xs *x = w;
    const block_q8_K *y = a;
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        int isum = 0;
        for (int j = 0; j < 8; j++) {
            const int ls = ((x[b].scales_l[j / 2] >> (4 * (j % 2))) & 0x0F) |
                           (((x[b].scales_h >> (2 * j)) & 3) << 4);
            const uint8_t *q = x[b].qs + 16 * j;
            const int8_t *qa = y[b].qs + 32 * j;
            int gsum = 0;
            for (int l = 0; l < 16; l++) {
                gsum += ds_iq4nl_values[q[l] & 0x0F] * qa[l];
                gsum += ds_iq4nl_values[q[l] >> 4] * qa[l + 16];
            }
            isum += (ls - 32) * gsum;
        }
        sum += y[b].d * ds_h(x[b].d) * (float)isum;
    }
    *s = sum;
}

/* ---- IQ grid types: dequantize, then dot ---------------------------------------------
 * Their grids are large tables; dequantizing 256 weights at a time into a
 * stack buffer and dotting with the (integer) activations is simple and
 * exact enough. Any 256-block type with a ds_dequantize_row decoder works. */
static void dot_dequant_q8_K(ds_type t, int n, float *s, const void *w, const void *a) {
    const size_t bb = (size_t)ds_type_info(t)->block_bytes;
    const block_q8_K *y = a;
    float buf[QK_K];
    float sum = 0;
    for (int b = 0; b < n / QK_K; b++) {
        ds_dequantize_row(t, (const uint8_t *)w + (size_t)b * bb, buf, QK_K);
        double bs = 0; /* 256 products: double keeps this path exact enough */
        for (int i = 0; i < QK_K; i++) bs += (double)buf[i] * y[b].qs[i];
        sum += (float)bs * y[b].d;
    }
    *s = sum;
}

#define DS_DEQUANT_DOT(name, type)                                              \
    static void dot_##name(int n, float *s, const void *w, const void *a) {     \
        dot_dequant_q8_K(type, n, s, w, a);                                     \
    }
DS_DEQUANT_DOT(iq2_xxs, DS_TYPE_IQ2_XXS)
DS_DEQUANT_DOT(iq2_xs, DS_TYPE_IQ2_XS)
DS_DEQUANT_DOT(iq2_s, DS_TYPE_IQ2_S)
DS_DEQUANT_DOT(iq3_xxs, DS_TYPE_IQ3_XXS)
DS_DEQUANT_DOT(iq3_s, DS_TYPE_IQ3_S)
DS_DEQUANT_DOT(iq1_s, DS_TYPE_IQ1_S)
DS_DEQUANT_DOT(iq1_m, DS_TYPE_IQ1_M)
#undef DS_DEQUANT_DOT

ds_vec_dot_fn ds_dot_scalar_get(ds_type t) {
    switch (t) {
    case DS_TYPE_F32: return dot_f32;
    case DS_TYPE_F16: return dot_f16;
    case DS_TYPE_BF16: return dot_bf16;
    case DS_TYPE_Q4_0: return dot_q4_0;
    case DS_TYPE_Q4_1: return dot_q4_1;
    case DS_TYPE_Q5_0: return dot_q5_0;
    case DS_TYPE_Q5_1: return dot_q5_1;
    case DS_TYPE_Q8_0: return dot_q8_0;
    case DS_TYPE_IQ4_NL: return dot_iq4_nl;
    case DS_TYPE_Q2_K: return dot_q2_K;
    case DS_TYPE_Q3_K: return dot_q3_K;
    case DS_TYPE_Q4_K: return dot_q4_K;
    case DS_TYPE_Q5_K: return dot_q5_K;
    case DS_TYPE_Q6_K: return dot_q6_K;
    case DS_TYPE_IQ4_XS: return dot_iq4_xs;
    case DS_TYPE_IQ2_XXS: return dot_iq2_xxs;
    case DS_TYPE_IQ2_XS: return dot_iq2_xs;
    case DS_TYPE_IQ2_S: return dot_iq2_s;
    case DS_TYPE_IQ3_XXS: return dot_iq3_xxs;
    case DS_TYPE_IQ3_S: return dot_iq3_s;
    case DS_TYPE_IQ1_S: return dot_iq1_s;
    case DS_TYPE_IQ1_M: return dot_iq1_m;
    default: return NULL;
    }
}
