/* dot_legacy_avx2.c: AVX2 dot kernels for the plain types (f32/f16/bf16
 * against f32) and the 32-element blocks (q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl
 * against q8_0/q8_1), plus 4-activation-row versions of the hot ones.
 * Not the K-quants (dot_k_avx2.c) and not dispatch (dot_dispatch.c). */
#include "dot_avx2_util.h"

/* ---- plain types ---------------------------------------------------------------
 * One body for f32/f16/bf16 weights: 8 weights per step are widened to f32
 * once and used for nr activation rows. U * nr independent FMA chains (16
 * for one row, 8 for four) hide the FMA latency; each float lane sums at
 * most n/16 products (the tolerance in test_quant_dot relies on that). */

/* bf16 is the top half of an f32: widen to 32 bits and shift into place */
DS_INLINE __m256 ds_load_plain8(const void *w, int i, ds_type t) {
    if (t == DS_TYPE_F32) return _mm256_loadu_ps((const float *)w + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (t == DS_TYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

DS_INLINE float ds_plain_at(const void *w, int i, ds_type t) {
    if (t == DS_TYPE_F32) return ((const float *)w)[i];
    const uint16_t h = ((const uint16_t *)w)[i];
    return t == DS_TYPE_F16 ? ds_h2f(h) : ds_bf16_to_f32(h);
}

DS_INLINE void ds_plain_rows(int n, float *s, const void *w, const void *a, size_t as,
                             const int nr, ds_type t) {
    enum { UMAX = 4 };
    const int U = nr == 1 ? 4 : 2;
    const float *y[4];
    __m256 acc[UMAX][4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        y[r] = ds_row_at(a, as, r);
        DS_UNROLL
        for (int u = 0; u < U; u++) acc[u][r] = _mm256_setzero_ps();
    }
    int i = 0;
    for (; i + 8 * U <= n; i += 8 * U) {
        DS_UNROLL
        for (int u = 0; u < U; u++) {
            const __m256 wv = ds_load_plain8(w, i + 8 * u, t);
            DS_UNROLL
            for (int r = 0; r < nr; r++) acc[u][r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y[r] + i + 8 * u), acc[u][r]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = ds_load_plain8(w, i, t);
        DS_UNROLL
        for (int r = 0; r < nr; r++) acc[0][r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(y[r] + i), acc[0][r]);
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        __m256 v = acc[0][r];
        DS_UNROLL
        for (int u = 1; u < U; u++) v = _mm256_add_ps(v, acc[u][r]);
        float sum = ds_hsum_ps(v);
        for (int k = i; k < n; k++) sum += ds_plain_at(w, k, t) * y[r][k];
        s[r] = sum;
    }
}

void ds_dot_f32_avx2(int n, float *s, const void *w, const void *a) { ds_plain_rows(n, s, w, a, 0, 1, DS_TYPE_F32); }
void ds_dot_f16_avx2(int n, float *s, const void *w, const void *a) { ds_plain_rows(n, s, w, a, 0, 1, DS_TYPE_F16); }
void ds_dot_bf16_avx2(int n, float *s, const void *w, const void *a) { ds_plain_rows(n, s, w, a, 0, 1, DS_TYPE_BF16); }
void ds_dot_f32_avx2_x4(int n, float *s, const void *w, const void *a, size_t as) {
    ds_plain_rows(n, s, w, a, as, 4, DS_TYPE_F32);
}
void ds_dot_f16_avx2_x4(int n, float *s, const void *w, const void *a, size_t as) {
    ds_plain_rows(n, s, w, a, as, 4, DS_TYPE_F16);
}
void ds_dot_bf16_avx2_x4(int n, float *s, const void *w, const void *a, size_t as) {
    ds_plain_rows(n, s, w, a, as, 4, DS_TYPE_BF16);
}

/* ---- signed 32-element blocks against q8_0 ----------------------------------------
 * q4_0, iq4_nl and q8_0 differ only in how the 32 weights become int8; the
 * rest (sign trick, one float product per block) is shared. nr activation
 * rows (1..4, a compile-time constant after inlining) reuse each unpacked
 * weight block. Two accumulator sets alternate between even and odd blocks
 * to hide the FMA latency when nr is 1. */

/* one weight block against nr activation rows, into acc[0..nr) */
DS_INLINE void ds_w8_block(const uint8_t *blk, const block_q8_0 *const *y, int b, __m256 *acc,
                           const int nr, ds_w8_kind kind, __m256i table) {
    const __m256i wq = ds_w8_load(blk, kind, table);
    const __m256i wabs = _mm256_sign_epi8(wq, wq);
    ds_half dh;
    memcpy(&dh, blk, sizeof dh); /* d comes first in all three block types */
    const float dw = ds_h2f(dh);
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        const __m256i av = _mm256_loadu_si256((const __m256i *)y[r][b].qs);
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wq)),
                                            _mm256_set1_epi16(1));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * ds_h2f(y[r][b].d)), acc[r]);
    }
}

DS_INLINE void ds_w8_rows(int n, float *s, const void *w, const void *a, size_t as,
                          const int nr, ds_w8_kind kind) {
    /* q4_0 and iq4_nl blocks are 18 bytes, q8_0 34 */
    const size_t wb = kind == DS_W8_Q8_0 ? sizeof(block_q8_0) : sizeof(block_q4_0);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
    const uint8_t *x = w;
    const block_q8_0 *y[4];
    __m256 acc0[4], acc1[4];
    for (int r = 0; r < nr; r++) {
        y[r] = ds_row_at(a, as, r);
        acc0[r] = acc1[r] = _mm256_setzero_ps();
    }
    const int nb = n / QK8_0;
    int b = 0;
    for (; b + 1 < nb; b += 2) {
        ds_w8_block(x + (size_t)b * wb, y, b, acc0, nr, kind, table);
        ds_w8_block(x + (size_t)(b + 1) * wb, y, b + 1, acc1, nr, kind, table);
    }
    if (b < nb) ds_w8_block(x + (size_t)b * wb, y, b, acc0, nr, kind, table);
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(_mm256_add_ps(acc0[r], acc1[r]));
}

void ds_dot_q8_0_avx2(int n, float *s, const void *w, const void *a) {
    ds_w8_rows(n, s, w, a, 0, 1, DS_W8_Q8_0);
}
void ds_dot_q4_0_avx2(int n, float *s, const void *w, const void *a) {
    ds_w8_rows(n, s, w, a, 0, 1, DS_W8_Q4_0);
}
void ds_dot_iq4_nl_avx2(int n, float *s, const void *w, const void *a) {
    ds_w8_rows(n, s, w, a, 0, 1, DS_W8_IQ4_NL);
}
void ds_dot_q8_0_avx2_x4(int n, float *s, const void *w, const void *a, size_t as) {
    ds_w8_rows(n, s, w, a, as, 4, DS_W8_Q8_0);
}
void ds_dot_q4_0_avx2_x4(int n, float *s, const void *w, const void *a, size_t as) {
    ds_w8_rows(n, s, w, a, as, 4, DS_W8_Q4_0);
}
void ds_dot_iq4_nl_avx2_x4(int n, float *s, const void *w, const void *a, size_t as) {
    ds_w8_rows(n, s, w, a, as, 4, DS_W8_IQ4_NL);
}

/* ---- 5-bit blocks ---------------------------------------------------------------- */

/* 32 bits -> 32 bytes, byte j = 0xFF where bit j is set. Each 128-bit lane
 * of the broadcast holds all 4 bytes; the shuffle sends byte j/8 to byte j
 * (lane-local indices), the AND/compare tests bit j%8. */
DS_INLINE __m256i ds_bits_to_bytes(uint32_t bits) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* q5_0: q - 16 as int8 is the nibble with 0xF0 or'ed in where bit 4 is clear */
void ds_dot_q5_0_avx2(int n, float *s, const void *w, const void *a) {
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / QK5_0; b++) {
        const __m256i hb = ds_bits_to_bytes(ds_dot_le32(x[b].qh));
        const __m256i wq = _mm256_or_si256(ds_unpack_nibbles16(x[b].qs),
                                           _mm256_andnot_si256(hb, _mm256_set1_epi8((char)0xF0)));
        const __m256i p = ds_dot_i8_signed(wq, _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ds_h2f(x[b].d) * ds_h2f(y[b].d)), acc);
    }
    *s = ds_hsum_ps(acc);
}

/* q4_1 / q5_1 against q8_1: unsigned weights, min term m * s per block */
void ds_dot_q4_1_avx2(int n, float *s, const void *w, const void *a) {
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float msum = 0;
    for (int b = 0; b < n / QK4_1; b++) {
        const __m256i p = ds_dot_u8_i8(ds_unpack_nibbles16(x[b].qs), _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ds_h2f(x[b].d) * ds_h2f(y[b].d)), acc);
        msum += ds_h2f(x[b].m) * ds_h2f(y[b].s);
    }
    *s = ds_hsum_ps(acc) + msum;
}

void ds_dot_q5_1_avx2(int n, float *s, const void *w, const void *a) {
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float msum = 0;
    for (int b = 0; b < n / QK5_1; b++) {
        const __m256i hb = ds_bits_to_bytes(ds_dot_le32(x[b].qh));
        const __m256i wq = _mm256_or_si256(ds_unpack_nibbles16(x[b].qs), _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
        const __m256i p = ds_dot_u8_i8(wq, _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ds_h2f(x[b].d) * ds_h2f(y[b].d)), acc);
        msum += ds_h2f(x[b].m) * ds_h2f(y[b].s);
    }
    *s = ds_hsum_ps(acc) + msum;
}
