/* dot_avx512.c: AVX-512 (F/BW/VL + VNNI) dot kernels: f32/f16/bf16 against
 * f32, q8_0/q4_0/iq4_nl against q8_0, q2_K..q6_K/iq4_xs against q8_K, with
 * 4-activation-row forms. q4_1/q5_0/q5_1 fall back to the AVX2 kernels.
 * Not a new algorithm: each kernel is its AVX2 twin (dot_*_avx2.c) at twice
 * the width, 64 weights per step, with VNNI doing the int16 -> int32 step
 * (dpwssd = madd + add) or the whole int8 product (dpbusd). The development
 * machine has no AVX-512: test_quant_dot checks these on an AVX-512 host. */
#include "dot_avx2_util.h"

/* [lo | hi] from two 256-bit halves */
DS_INLINE __m512i ds_cat256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* the same 32 bytes in both halves */
DS_INLINE __m512i ds_bcast256(const void *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

/* 32 int16: a in words 0..15, b in words 16..31 (shift counts for srlv_epi16,
 * or indices for permutexvar_epi16: one value per 32 weights) */
DS_INLINE __m512i ds_words2(const int a, const int b) {
    return ds_cat256(_mm256_set1_epi16((short)a), _mm256_set1_epi16((short)b));
}

/* 32 int16: g, g+1, g+2, g+3 in words 0..7, 8..15, 16..23, 24..31 (indices:
 * one scale per 16 weights, the 16-sub-block types) */
DS_INLINE __m512i ds_words4(const int g) {
    return ds_cat256(_mm256_setr_m128i(_mm_set1_epi16((short)g), _mm_set1_epi16((short)(g + 1))),
                     _mm256_setr_m128i(_mm_set1_epi16((short)(g + 2)), _mm_set1_epi16((short)(g + 3))));
}

/* 16 int32 lanes folded to 8 (the 256-bit accumulators of the block tails) */
DS_INLINE __m256i ds_fold512(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

/* u8 weights times s8 activations, pair sums (maddubs), times int16 scales
 * and accumulated into int32 (VNNI dpwssd) */
DS_INLINE __m512i ds_acc_scaled(__m512i acc, __m512i w, __m512i a, __m512i sc) {
    return _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(w, a), sc);
}

DS_INLINE __m512i ds_load_act512(const block_q8_K *y, int off) {
    return _mm512_loadu_si512((const void *)(y->qs + off));
}

/* The sign trick without vpsignb (absent from AVX-512): a negated where the
 * weight is negative, under a mask. */
DS_INLINE __m512i ds_apply_sign(__m512i a, __mmask64 neg) {
    return _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
}

/* ---- plain types against f32 ---------------------------------------------------------
 * The tail (n % 16) uses masked loads: no scalar loop. Masked-off lanes are
 * not read, so the tail never touches memory past the row. */

DS_INLINE __m512 ds_load_w16(const void *w, int i, ds_type t, __mmask16 m) {
    if (t == DS_TYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)w + i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
    if (t == DS_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bf16 */
}

/* nr activation rows share each widened weight vector; U * nr FMA chains
 * (4 for one row, 8 for four); each lane sums at most n/32 products */
DS_INLINE void ds_plain_rows512(int n, float *s, const void *w, const void *a, size_t as,
                                const int nr, ds_type t) {
    enum { UMAX = 4 };
    const int U = nr == 1 ? 4 : 2;
    const float *y[4];
    __m512 acc[UMAX][4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        y[r] = ds_row_at(a, as, r);
        DS_UNROLL
        for (int u = 0; u < U; u++) acc[u][r] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 16 * U <= n; i += 16 * U) {
        DS_UNROLL
        for (int u = 0; u < U; u++) {
            const __m512 wv = ds_load_w16(w, i + 16 * u, t, 0xFFFF);
            DS_UNROLL
            for (int r = 0; r < nr; r++) acc[u][r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(y[r] + i + 16 * u), acc[u][r]);
        }
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 wv = ds_load_w16(w, i, t, m);
        DS_UNROLL
        for (int r = 0; r < nr; r++) acc[0][r] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, y[r] + i), acc[0][r]);
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        __m512 v = acc[0][r];
        DS_UNROLL
        for (int u = 1; u < U; u++) v = _mm512_add_ps(v, acc[u][r]);
        s[r] = _mm512_reduce_add_ps(v);
    }
}

static void dot_f32(int n, float *s, const void *w, const void *a) { ds_plain_rows512(n, s, w, a, 0, 1, DS_TYPE_F32); }
static void dot_f16(int n, float *s, const void *w, const void *a) { ds_plain_rows512(n, s, w, a, 0, 1, DS_TYPE_F16); }
static void dot_bf16(int n, float *s, const void *w, const void *a) { ds_plain_rows512(n, s, w, a, 0, 1, DS_TYPE_BF16); }
static void dot_f32_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_plain_rows512(n, s, w, a, as, 4, DS_TYPE_F32); }
static void dot_f16_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_plain_rows512(n, s, w, a, as, 4, DS_TYPE_F16); }
static void dot_bf16_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_plain_rows512(n, s, w, a, as, 4, DS_TYPE_BF16); }

/* ---- q8_0 / q4_0 / iq4_nl against q8_0 ---------------------------------------------------
 * Two blocks per 512-bit step: dpbusd gives 8 int32 lanes per block, one
 * float scale per half (mask blend). An odd last block takes the 256-bit
 * VNNI path. */
DS_INLINE void ds_w8_rows512(int n, float *s, const void *w, const void *a, size_t as,
                             const int nr, ds_w8_kind kind) {
    const size_t wb = kind == DS_W8_Q8_0 ? sizeof(block_q8_0) : sizeof(block_q4_0);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
    const uint8_t *x = w;
    const block_q8_0 *y[4];
    __m512 acc[4];
    __m256 tail[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        y[r] = ds_row_at(a, as, r);
        acc[r] = _mm512_setzero_ps();
        tail[r] = _mm256_setzero_ps();
    }
    const int nb = n / QK8_0;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const uint8_t *b0 = x + (size_t)b * wb, *b1 = b0 + wb;
        const __m512i wq = ds_cat256(ds_w8_load(b0, kind, table), ds_w8_load(b1, kind, table));
        const __m512i wabs = _mm512_abs_epi8(wq);
        const __mmask64 neg = _mm512_movepi8_mask(wq);
        ds_half h0, h1;
        memcpy(&h0, b0, 2); /* d comes first in all three block types */
        memcpy(&h1, b1, 2);
        const float d0 = ds_h2f(h0), d1 = ds_h2f(h1);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m512i av = ds_cat256(_mm256_loadu_si256((const __m256i *)y[r][b].qs),
                                         _mm256_loadu_si256((const __m256i *)y[r][b + 1].qs));
            const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wabs, ds_apply_sign(av, neg));
            const __m512 sc = _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(d0 * ds_h2f(y[r][b].d)),
                                                   _mm512_set1_ps(d1 * ds_h2f(y[r][b + 1].d)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc[r]);
        }
    }
    if (b < nb) {
        const uint8_t *b0 = x + (size_t)b * wb;
        const __m256i wq = ds_w8_load(b0, kind, table);
        const __m256i wabs = _mm256_sign_epi8(wq, wq);
        ds_half h0;
        memcpy(&h0, b0, 2);
        const float d0 = ds_h2f(h0);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i av = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[r][b].qs), wq);
            const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wabs, av);
            tail[r] = _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d0 * ds_h2f(y[r][b].d)));
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = _mm512_reduce_add_ps(acc[r]) + ds_hsum_ps(tail[r]);
}

static void dot_q8_0(int n, float *s, const void *w, const void *a) { ds_w8_rows512(n, s, w, a, 0, 1, DS_W8_Q8_0); }
static void dot_q4_0(int n, float *s, const void *w, const void *a) { ds_w8_rows512(n, s, w, a, 0, 1, DS_W8_Q4_0); }
static void dot_iq4_nl(int n, float *s, const void *w, const void *a) { ds_w8_rows512(n, s, w, a, 0, 1, DS_W8_IQ4_NL); }
static void dot_q8_0_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_w8_rows512(n, s, w, a, as, 4, DS_W8_Q8_0); }
static void dot_q4_0_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_w8_rows512(n, s, w, a, as, 4, DS_W8_Q4_0); }
static void dot_iq4_nl_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_w8_rows512(n, s, w, a, as, 4, DS_W8_IQ4_NL); }

/* ---- K-quants ------------------------------------------------------------------------------
 * Per block: int32 sums in 16 lanes (dpwssd), folded to 8 lanes at the end
 * of the block, where the offsets/mins (from bsums, 256-bit as in AVX2) are
 * applied and one FMA per row adds the block to a 256-bit float accumulator. */

/* q2_K: 64 weights = two shifts (2j, 2j+2) of the 32 qs bytes of half h */
DS_INLINE void ds_q2_K_rows512(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_q2_K *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m512i m3 = _mm512_set1_epi8(3);
    for (int b = 0; b < n / QK_K; b++) {
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)x[b].scales);
        const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0x0F)));
        const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
        const __m512i sc512 = _mm512_castsi256_si512(sc16); /* indices stay below 16 */
        __m512i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm512_setzero_si512();
        DS_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m512i q = ds_bcast256(x[b].qs + 32 * h);
            DS_UNROLL
            for (int j = 0; j < 4; j += 2) {
                const __m512i wq = _mm512_and_si512(_mm512_srlv_epi16(q, ds_words2(2 * j, 2 * j + 2)), m3);
                const __m512i scp = _mm512_permutexvar_epi16(ds_words4(8 * h + 2 * j), sc512);
                DS_UNROLL
                for (int r = 0; r < nr; r++)
                    isum[r] = ds_acc_scaled(isum[r], wq, ds_load_act512(&y[r][b], 128 * h + 32 * j), scp);
            }
        }
        const float d = ds_h2f(x[b].d), dmin = ds_h2f(x[b].dmin);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i msum = _mm256_madd_epi16(mn16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ds_fold512(isum[r])), _mm256_set1_ps(d * y[r][b].d), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* q3_K: q2_K's layout plus hmask bits 4h+j, 4h+j+1 as bit 2; -4 via bsums */
DS_INLINE void ds_q3_K_rows512(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_q3_K *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m512i m3 = _mm512_set1_epi8(3), m1 = _mm512_set1_epi8(1);
    for (int b = 0; b < n / QK_K; b++) {
        const __m256i sc16 = ds_q3_K_scales16(x[b].scales);
        const __m512i sc512 = _mm512_castsi256_si512(sc16);
        const __m512i hm = ds_bcast256(x[b].hmask);
        __m512i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm512_setzero_si512();
        DS_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m512i q = ds_bcast256(x[b].qs + 32 * h);
            DS_UNROLL
            for (int j = 0; j < 4; j += 2) {
                const __m512i lo = _mm512_and_si512(_mm512_srlv_epi16(q, ds_words2(2 * j, 2 * j + 2)), m3);
                const __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(hm, ds_words2(4 * h + j, 4 * h + j + 1)), m1);
                const __m512i wq = _mm512_or_si512(lo, _mm512_slli_epi16(hb, 2));
                const __m512i scp = _mm512_permutexvar_epi16(ds_words4(8 * h + 2 * j), sc512);
                DS_UNROLL
                for (int r = 0; r < nr; r++)
                    isum[r] = ds_acc_scaled(isum[r], wq, ds_load_act512(&y[r][b], 128 * h + 32 * j), scp);
            }
        }
        const float d = ds_h2f(x[b].d);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            const __m256i tot = _mm256_sub_epi32(ds_fold512(isum[r]), _mm256_slli_epi32(off, 2));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(d * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* q4_K / q5_K: 32 qs bytes = 64 weights (low nibbles, then high nibbles),
 * q5_K's bits 2k and 2k+1 of qh as bit 4 */
DS_INLINE void ds_q45_K_rows512(int n, float *s, const void *w, const void *a, size_t as, const int nr,
                                const int five) {
    const uint8_t *x = w;
    const size_t bb = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m512i m15 = _mm512_set1_epi8(0x0F), m1 = _mm512_set1_epi8(1);
    const __m128i dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    for (int b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = x + (size_t)b * bb;
        const block_q4_K *x4 = (const block_q4_K *)blk; /* d, dmin, scales: same place in both */
        const uint8_t *qs = five ? ((const block_q5_K *)blk)->qs : x4->qs;
        const __m128i scm = ds_k4_scales_mins(x4->scales);
        const __m512i sc512 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(scm)); /* indices stay below 8 */
        const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, dup));
        const __m512i qh = five ? ds_bcast256(((const block_q5_K *)blk)->qh) : _mm512_setzero_si512();
        __m512i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm512_setzero_si512();
        DS_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i wq = _mm512_and_si512(_mm512_srlv_epi16(ds_bcast256(qs + 32 * k), ds_words2(0, 4)), m15);
            if (five) {
                const __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, ds_words2(2 * k, 2 * k + 1)), m1);
                wq = _mm512_or_si512(wq, _mm512_slli_epi16(hb, 4));
            }
            const __m512i scp = _mm512_permutexvar_epi16(ds_words2(2 * k, 2 * k + 1), sc512);
            DS_UNROLL
            for (int r = 0; r < nr; r++)
                isum[r] = ds_acc_scaled(isum[r], wq, ds_load_act512(&y[r][b], 64 * k), scp);
        }
        const float d = ds_h2f(x4->d), dmin = ds_h2f(x4->dmin);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i msum = _mm256_madd_epi16(mn16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ds_fold512(isum[r])), _mm256_set1_ps(d * y[r][b].d), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* q6_K: the 64 ql bytes of half h are [chunk 0 | chunk 1] as low nibbles and
 * [chunk 2 | chunk 3] as high nibbles; qh bit pairs (0, 2) and (4, 6) */
DS_INLINE void ds_q6_K_rows512(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_q6_K *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m512i m15 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(3);
    for (int b = 0; b < n / QK_K; b++) {
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[b].scales));
        const __m512i sc512 = _mm512_castsi256_si512(sc16);
        __m512i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm512_setzero_si512();
        DS_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512((const void *)(x[b].ql + 64 * h));
            const __m512i qh = ds_bcast256(x[b].qh + 32 * h);
            DS_UNROLL
            for (int p = 0; p < 2; p++) {
                const __m512i lo = _mm512_and_si512(p ? _mm512_srli_epi16(ql, 4) : ql, m15);
                const __m512i hi = _mm512_and_si512(_mm512_srlv_epi16(qh, ds_words2(4 * p, 4 * p + 2)), m3);
                const __m512i wq = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
                const __m512i scp = _mm512_permutexvar_epi16(ds_words4(8 * h + 4 * p), sc512);
                DS_UNROLL
                for (int r = 0; r < nr; r++)
                    isum[r] = ds_acc_scaled(isum[r], wq, ds_load_act512(&y[r][b], 128 * h + 64 * p), scp);
            }
        }
        const float d = ds_h2f(x[b].d);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            const __m256i tot = _mm256_sub_epi32(ds_fold512(isum[r]), _mm256_slli_epi32(off, 5));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(d * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* iq4_xs: 32 qs bytes = sub-blocks 2k, 2k+1; 128-bit lanes reordered to
 * [lo(2k) hi(2k) lo(2k+1) hi(2k+1)], then the code book, then the sign trick */
DS_INLINE void ds_iq4_xs_rows512(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_iq4_xs *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m256i m15 = _mm256_set1_epi8(0x0F);
    const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
    for (int b = 0; b < n / QK_K; b++) {
        const __m128i sc8 = _mm_cvtsi64_si128((long long)ds_dot_iq4_xs_scales(x[b].scales_l, x[b].scales_h));
        const __m512i sc512 = _mm512_castsi128_si512(_mm_cvtepi8_epi16(sc8)); /* indices stay below 8 */
        __m512i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm512_setzero_si512();
        DS_UNROLL
        for (int k = 0; k < 4; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * k));
            const __m512i lh = ds_cat256(_mm256_and_si256(q, m15), _mm256_and_si256(_mm256_srli_epi16(q, 4), m15));
            const __m512i idx = _mm512_shuffle_i64x2(lh, lh, _MM_SHUFFLE(3, 1, 2, 0));
            const __m512i wq = _mm512_shuffle_epi8(table, idx);
            const __m512i wabs = _mm512_abs_epi8(wq);
            const __mmask64 neg = _mm512_movepi8_mask(wq);
            const __m512i scp = _mm512_permutexvar_epi16(ds_words2(2 * k, 2 * k + 1), sc512);
            DS_UNROLL
            for (int r = 0; r < nr; r++)
                isum[r] = ds_acc_scaled(isum[r], wabs, ds_apply_sign(ds_load_act512(&y[r][b], 64 * k), neg), scp);
        }
        const float d = ds_h2f(x[b].d);
        DS_UNROLL
        for (int r = 0; r < nr; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ds_fold512(isum[r])), _mm256_set1_ps(d * y[r][b].d), acc[r]);
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* ---- entry points ------------------------------------------------------------------------- */

static void dot_q2_K(int n, float *s, const void *w, const void *a) { ds_q2_K_rows512(n, s, w, a, 0, 1); }
static void dot_q3_K(int n, float *s, const void *w, const void *a) { ds_q3_K_rows512(n, s, w, a, 0, 1); }
static void dot_q4_K(int n, float *s, const void *w, const void *a) { ds_q45_K_rows512(n, s, w, a, 0, 1, 0); }
static void dot_q5_K(int n, float *s, const void *w, const void *a) { ds_q45_K_rows512(n, s, w, a, 0, 1, 1); }
static void dot_q6_K(int n, float *s, const void *w, const void *a) { ds_q6_K_rows512(n, s, w, a, 0, 1); }
static void dot_iq4_xs(int n, float *s, const void *w, const void *a) { ds_iq4_xs_rows512(n, s, w, a, 0, 1); }

static void dot_q2_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q2_K_rows512(n, s, w, a, as, 4); }
static void dot_q3_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q3_K_rows512(n, s, w, a, as, 4); }
static void dot_q4_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows512(n, s, w, a, as, 4, 0); }
static void dot_q5_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows512(n, s, w, a, as, 4, 1); }
static void dot_q6_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q6_K_rows512(n, s, w, a, as, 4); }
static void dot_iq4_xs_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_iq4_xs_rows512(n, s, w, a, as, 4); }

/* 2- and 3-row forms (see dot_k_avx2.c) */
static void dot_q2_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q2_K_rows512(n, s, w, a, as, 2); }
static void dot_q3_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q3_K_rows512(n, s, w, a, as, 2); }
static void dot_q4_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows512(n, s, w, a, as, 2, 0); }
static void dot_q5_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows512(n, s, w, a, as, 2, 1); }
static void dot_q6_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q6_K_rows512(n, s, w, a, as, 2); }
static void dot_iq4_xs_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_iq4_xs_rows512(n, s, w, a, as, 2); }
static void dot_q2_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q2_K_rows512(n, s, w, a, as, 3); }
static void dot_q3_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q3_K_rows512(n, s, w, a, as, 3); }
static void dot_q4_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows512(n, s, w, a, as, 3, 0); }
static void dot_q5_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows512(n, s, w, a, as, 3, 1); }
static void dot_q6_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q6_K_rows512(n, s, w, a, as, 3); }
static void dot_iq4_xs_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_iq4_xs_rows512(n, s, w, a, as, 3); }

ds_vec_dot_fn ds_dot_avx512_get(ds_type t) {
    switch (t) {
    case DS_TYPE_F32: return dot_f32;
    case DS_TYPE_F16: return dot_f16;
    case DS_TYPE_BF16: return dot_bf16;
    case DS_TYPE_Q8_0: return dot_q8_0;
    case DS_TYPE_Q4_0: return dot_q4_0;
    case DS_TYPE_IQ4_NL: return dot_iq4_nl;
    case DS_TYPE_Q2_K: return dot_q2_K;
    case DS_TYPE_Q3_K: return dot_q3_K;
    case DS_TYPE_Q4_K: return dot_q4_K;
    case DS_TYPE_Q5_K: return dot_q5_K;
    case DS_TYPE_Q6_K: return dot_q6_K;
    case DS_TYPE_IQ4_XS: return dot_iq4_xs;
    default: return NULL;
    }
}

ds_vec_dot_x4_fn ds_dot_avx512_get_x4(ds_type t) {
    switch (t) {
    case DS_TYPE_F32: return dot_f32_x4;
    case DS_TYPE_F16: return dot_f16_x4;
    case DS_TYPE_BF16: return dot_bf16_x4;
    case DS_TYPE_Q8_0: return dot_q8_0_x4;
    case DS_TYPE_Q4_0: return dot_q4_0_x4;
    case DS_TYPE_IQ4_NL: return dot_iq4_nl_x4;
    case DS_TYPE_Q2_K: return dot_q2_K_x4;
    case DS_TYPE_Q3_K: return dot_q3_K_x4;
    case DS_TYPE_Q4_K: return dot_q4_K_x4;
    case DS_TYPE_Q5_K: return dot_q5_K_x4;
    case DS_TYPE_Q6_K: return dot_q6_K_x4;
    case DS_TYPE_IQ4_XS: return dot_iq4_xs_x4;
    default: return NULL;
    }
}

ds_vec_dot_x4_fn ds_dot_avx512_get_xn(ds_type t, int nr) {
    if (nr == 4) return ds_dot_avx512_get_x4(t);
    if (nr != 2 && nr != 3) return NULL;
    switch (t) {
    case DS_TYPE_Q2_K: return nr == 2 ? dot_q2_K_x2 : dot_q2_K_x3;
    case DS_TYPE_Q3_K: return nr == 2 ? dot_q3_K_x2 : dot_q3_K_x3;
    case DS_TYPE_Q4_K: return nr == 2 ? dot_q4_K_x2 : dot_q4_K_x3;
    case DS_TYPE_Q5_K: return nr == 2 ? dot_q5_K_x2 : dot_q5_K_x3;
    case DS_TYPE_Q6_K: return nr == 2 ? dot_q6_K_x2 : dot_q6_K_x3;
    case DS_TYPE_IQ4_XS: return nr == 2 ? dot_iq4_xs_x2 : dot_iq4_xs_x3;
    default: return NULL;
    }
}
