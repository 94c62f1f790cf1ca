/* act_quant.c: float activations -> Q8_0 / Q8_1 / Q8_K blocks for the dot
 * kernels, in plain C, with a switch to the bit-identical AVX2 versions.
 * Not weight quantization (dsinfer never writes quantized weights).
 *
 * Convention, relied on by the SIMD kernels: every block has scale
 * d = amax / 127 and q = round_half_even(x * (127 / amax)), so q lies in
 * [-127, 127] and never -128. That keeps the sign trick of the integer
 * kernels (|w| * sign(w)a, with _mm256_sign_epi8) free of overflow. ggml's
 * Q8_K uses -128 for the largest magnitude; ours is a valid Q8_K too. */
#include "quant.h"
#include "blocks.h"
#include "dot_internal.h"

#include <math.h>
#include <string.h>

/* Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves
 * the rounded integer in the low mantissa bits (default rounding mode).
 * Same result as _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT). */
static inline int ds_round_even(float v) {
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static float ds_absmax(const float *x, int n) {
    float m = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
    }
    return m;
}

/* q[0..n) = round(x * 127 / amax); returns d = amax / 127 */
static float ds_quant_block_i8(const float *x, int8_t *q, int n) {
    const float amax = ds_absmax(x, n);
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (int8_t)ds_round_even(x[i] * id);
    return amax / 127.0f;
}

void ds_quantize_row_q8_0_scalar(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++)
        y[b].d = ds_f32_to_fp16(ds_quant_block_i8(x + b * QK8_0, y[b].qs, QK8_0));
}

void ds_quantize_row_q8_1_scalar(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        y[b].d = ds_f32_to_fp16(ds_quant_block_i8(x + b * QK8_1, y[b].qs, QK8_1));
        int sum = 0;
        for (int i = 0; i < QK8_1; i++) sum += y[b].qs[i];
        /* s pairs with the stored (rounded) d, the one the kernels see */
        y[b].s = ds_f32_to_fp16(ds_fp16_to_f32(y[b].d) * (float)sum);
    }
}

void ds_quantize_row_q8_K_scalar(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++) {
        y[b].d = ds_quant_block_i8(x + b * QK_K, y[b].qs, QK_K);
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y[b].qs[16 * g + i];
            y[b].bsums[g] = (int16_t)sum;
        }
    }
}

void ds_quantize_row_q8_0(const float *x, void *y, int64_t n) {
    DS_ASSERT(n % QK8_0 == 0);
    if (ds_simd_detect() >= DS_SIMD_AVX2) ds_quantize_row_q8_0_avx2(x, y, n);
    else ds_quantize_row_q8_0_scalar(x, y, n);
}

void ds_quantize_row_q8_1(const float *x, void *y, int64_t n) {
    DS_ASSERT(n % QK8_1 == 0);
    if (ds_simd_detect() >= DS_SIMD_AVX2) ds_quantize_row_q8_1_avx2(x, y, n);
    else ds_quantize_row_q8_1_scalar(x, y, n);
}

void ds_quantize_row_q8_K(const float *x, void *y, int64_t n) {
    DS_ASSERT(n % QK_K == 0);
    if (ds_simd_detect() >= DS_SIMD_AVX2) ds_quantize_row_q8_K_avx2(x, y, n);
    else ds_quantize_row_q8_K_scalar(x, y, n);
}

size_t ds_act_row_bytes(ds_type t, int64_t n) {
    const ds_type_traits *tr = ds_type_info(t);
    DS_ASSERT(tr);
    return ds_row_bytes(tr->act_type, n);
}

void ds_quantize_act_row(ds_type t, const float *x, void *y, int64_t n) {
    const ds_type_traits *tr = ds_type_info(t);
    DS_ASSERT(tr);
    switch (tr->act_type) {
    case DS_TYPE_F32: memcpy(y, x, (size_t)n * sizeof(float)); break;
    case DS_TYPE_Q8_0: ds_quantize_row_q8_0(x, y, n); break;
    case DS_TYPE_Q8_1: ds_quantize_row_q8_1(x, y, n); break;
    case DS_TYPE_Q8_K: ds_quantize_row_q8_K(x, y, n); break;
    default: DS_ASSERT(!"unknown activation type");
    }
}
