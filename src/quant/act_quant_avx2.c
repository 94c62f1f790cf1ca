/* act_quant_avx2.c: AVX2 versions of the activation quantizers, bit-identical
 * to the scalar ones in act_quant.c (see the convention stated there).
 * Not dispatch: act_quant.c picks between the two. */
#include "dot_internal.h"

#include <immintrin.h>

static inline float ds_hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline int ds_hsum8_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Quantizes n (multiple of 32) floats with one scale: q = round(x * 127/amax).
 * Returns d = amax / 127 and, in *sum, the sum of all q. */
static float ds_quant_i8_avx2(const float *x, int8_t *q, int n, int *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    const float amax = ds_hmax8(mx);
    const float idf = amax > 0.0f ? 127.0f / amax : 0.0f;
    const __m256 id = _mm256_set1_ps(idf);
    /* packs interleave 128-bit lanes; this restores element order */
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < n; i += 32) {
        __m256i v[4];
        for (int k = 0; k < 4; k++) {
            __m256 f = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), id);
            f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v[k] = _mm256_cvtps_epi32(f);
        }
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3])));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(p, perm));
    }
    if (sum) *sum = ds_hsum8_i32(acc);
    return amax / 127.0f;
}

void ds_quantize_row_q8_0_avx2(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        float d = ds_quant_i8_avx2(x + b * QK8_0, y[b].qs, QK8_0, NULL);
        y[b].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    }
}

void ds_quantize_row_q8_1_avx2(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        int sum;
        float d = ds_quant_i8_avx2(x + b * QK8_1, y[b].qs, QK8_1, &sum);
        y[b].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        y[b].s = _cvtss_sh(_cvtsh_ss(y[b].d) * (float)sum, _MM_FROUND_TO_NEAREST_INT);
    }
}

/* bsums of 4 chunks of 32 qs: dword k of the result is the sum of group
 * 2k (k < 4) or 2(k-4)+1 (k >= 4) of the 8 groups of 16 */
static inline __m256i ds_group_sums4(const int8_t *q) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i s[4];
    for (int c = 0; c < 4; c++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
        s[c] = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16);
    }
    return _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
}

void ds_quantize_row_q8_K_avx2(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++) {
        y[b].d = ds_quant_i8_avx2(x + b * QK_K, y[b].qs, QK_K, NULL);
        /* groups 0..7 and 8..15, each as g0 g2 g4 g6 | g1 g3 g5 g7 */
        __m256i lo = ds_group_sums4(y[b].qs), hi = ds_group_sums4(y[b].qs + 128);
        __m256i p = _mm256_packs_epi32(lo, hi); /* |sums| <= 2032: no saturation */
        __m128i even = _mm256_castsi256_si128(p), odd = _mm256_extracti128_si256(p, 1);
        _mm_storeu_si128((__m128i *)y[b].bsums, _mm_unpacklo_epi16(even, odd));
        _mm_storeu_si128((__m128i *)(y[b].bsums + 8), _mm_unpackhi_epi16(even, odd));
    }
}
