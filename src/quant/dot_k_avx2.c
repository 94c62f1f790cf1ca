/* dot_k_avx2.c: AVX2 dot kernels of the 256-element types (q2_K..q6_K,
 * iq4_xs) against q8_K, each in a 1-row and a 4-activation-row form, and the
 * AVX2 kernel tables. Not the 32-element blocks (dot_legacy_avx2.c).
 *
 * Shape of every kernel: per 256-block, unsigned (or table-mapped) weights
 * times int8 activations through maddubs (int16 pair sums), weighted by the
 * integer sub-block scales through madd (int32), summed exactly over the
 * block; constant offsets (-4 in q3_K, -32 in q6_K) and mins come from the
 * activation's bsums. One int->float conversion and FMA per block and row.
 * Bodies take nr (1..4) activation rows; always_inline with a constant nr
 * lets the compiler keep the per-row accumulators in registers. */
#include "dot_avx2_util.h"

/* For the 16-sub-block types: sc_half holds 8 int16 scales in both lanes;
 * pair k (0..3) gives scale 2k in the low lane and 2k+1 in the high lane,
 * matching a 32-byte chunk whose halves are consecutive sub-blocks. */
DS_INLINE __m256i ds_scale_pair(__m256i sc_half, const int k) {
    const short lo = (short)((4 * k) | ((4 * k + 1) << 8));
    const short hi = (short)((4 * k + 2) | ((4 * k + 3) << 8));
    return _mm256_shuffle_epi8(sc_half, _mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi)));
}

/* For the 8-sub-block types: sc holds 8 int16 scales in both lanes; gives
 * scale j in every int16 (a chunk of 32 bytes = one sub-block). */
DS_INLINE __m256i ds_scale_bcast(__m256i sc, const int j) {
    return _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)((2 * j) | ((2 * j + 1) << 8))));
}

DS_INLINE __m256i ds_load_act(const block_q8_K *y, int off) {
    return _mm256_loadu_si256((const __m256i *)(y->qs + off));
}

DS_INLINE __m256i ds_madd_scaled(__m256i w, __m256i a, __m256i sc) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), sc);
}

/* ---- q2_K -----------------------------------------------------------------------
 * qs byte 32h + l holds elements 128h + 32j + l (j = 0..3) in bits 2j..2j+1;
 * sub-block g = e/16 has scale scales[g] & 15 and min scales[g] >> 4. */
DS_INLINE void ds_q2_K_rows(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_q2_K *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int b = 0; b < n / QK_K; b++) {
        if (nr == 1) ds_prefetch_ahead(&x[b], (int)sizeof x[b]);
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)x[b].scales);
        const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0x0F)));
        const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
        __m256i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm256_setzero_si256();
        const __m256i sc_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00); /* scales 0..7 */
        const __m256i sc_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11); /* scales 8..15 */
        DS_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m256i sch = h ? sc_hi : sc_lo;
            const __m256i q = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * h));
            DS_UNROLL
            for (int j = 0; j < 4; j++) {
                const __m256i wq = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                const __m256i scp = ds_scale_pair(sch, j);
                DS_UNROLL
                for (int r = 0; r < nr; r++)
                    isum[r] = _mm256_add_epi32(isum[r], ds_madd_scaled(wq, ds_load_act(&y[r][b], 128 * h + 32 * j), scp));
            }
        }
        const float d = ds_h2f(x[b].d), dmin = ds_h2f(x[b].dmin);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i msum = _mm256_madd_epi16(mn16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * y[r][b].d), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* ---- q3_K -----------------------------------------------------------------------
 * The low 2 bits as in q2_K; bit 4h + j of hmask[l] is bit 2 of the 3-bit
 * value q, and the weight is q - 4. The -4 is applied once per block:
 * sum_g sc_g (sum q a - 4 bsum_g). */

DS_INLINE void ds_q3_K_rows(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_q3_K *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m256i m15 = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < n / QK_K; b++) {
        const __m256i sc16 = ds_q3_K_scales16(x[b].scales);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x[b].hmask);
        __m256i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm256_setzero_si256();
        const __m256i sc_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00); /* scales 0..7 */
        const __m256i sc_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11); /* scales 8..15 */
        DS_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m256i sch = h ? sc_hi : sc_lo;
            const __m256i hn = _mm256_and_si256(h ? _mm256_srli_epi16(hm, 4) : hm, m15);
            __m256i wq[4];
            ds_q3_K_chunks(_mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * h)), hn, wq);
            DS_UNROLL
            for (int j = 0; j < 4; j++) {
                const __m256i scp = ds_scale_pair(sch, j);
                DS_UNROLL
                for (int r = 0; r < nr; r++)
                    isum[r] = _mm256_add_epi32(isum[r], ds_madd_scaled(wq[j], ds_load_act(&y[r][b], 128 * h + 32 * j), scp));
            }
        }
        const float d = ds_h2f(x[b].d);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            const __m256i tot = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(off, 2));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(d * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* ---- q4_K / q5_K -------------------------------------------------------------------
 * Sub-block j (32 elements) is the low (j even) or high nibble of the 32 bytes
 * qs[32(j/2)..]; q5_K adds bit j of qh[l] as bit 4. Mins: sum_j m_j (bsum_2j
 * + bsum_2j+1), one madd against the mins repeated per pair of bsums. */
DS_INLINE void ds_q45_K_rows(int n, float *s, const void *w, const void *a, size_t as, const int nr,
                             const int five) {
    const uint8_t *x = w;
    const size_t bb = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m256i m15 = _mm256_set1_epi8(0x0F), m16 = _mm256_set1_epi8(0x10);
    /* mins (bytes 8..15) each repeated for its pair of bsums */
    const __m128i dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    for (int b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = x + (size_t)b * bb;
        if (nr == 1) ds_prefetch_ahead(blk, (int)bb);
        const block_q4_K *x4 = (const block_q4_K *)blk; /* d, dmin, scales: same place in both */
        const uint8_t *qs = five ? ((const block_q5_K *)blk)->qs : x4->qs;
        const __m128i scm = ds_k4_scales_mins(x4->scales);
        const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
        const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, dup));
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh)
                                : _mm256_setzero_si256();
        __m256i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm256_setzero_si256();
        DS_UNROLL
        for (int k = 0; k < 4; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
            __m256i wlo = _mm256_and_si256(q, m15), whi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m15);
            if (five) {
                wlo = _mm256_or_si256(wlo, ds_bit_to_pos(qh, 2 * k, 4, m16));
                whi = _mm256_or_si256(whi, ds_bit_to_pos(qh, 2 * k + 1, 4, m16));
            }
            const __m256i slo = ds_scale_bcast(sc16, 2 * k), shi = ds_scale_bcast(sc16, 2 * k + 1);
            DS_UNROLL
            for (int r = 0; r < nr; r++) {
                isum[r] = _mm256_add_epi32(isum[r], ds_madd_scaled(wlo, ds_load_act(&y[r][b], 64 * k), slo));
                isum[r] = _mm256_add_epi32(isum[r], ds_madd_scaled(whi, ds_load_act(&y[r][b], 64 * k + 32), shi));
            }
        }
        const float d = ds_h2f(x4->d), dmin = ds_h2f(x4->dmin);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i msum = _mm256_madd_epi16(mn16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * y[r][b].d), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* ---- q6_K -----------------------------------------------------------------------
 * Half h: 64 bytes of ql and 32 of qh give 4 chunks of 32 (k = 0..3): low
 * nibbles of ql[0..32) / ql[32..64), then their high nibbles; top 2 bits from
 * bits 2k..2k+1 of qh. Weight = q - 32, applied once per block via bsums. */
DS_INLINE void ds_q6_K_rows(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_q6_K *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m256i m15 = _mm256_set1_epi8(0x0F), m48 = _mm256_set1_epi8(0x30);
    for (int b = 0; b < n / QK_K; b++) {
        if (nr == 1) ds_prefetch_ahead(&x[b], (int)sizeof x[b]);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[b].scales));
        __m256i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm256_setzero_si256();
        const __m256i sc_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00); /* scales 0..7 */
        const __m256i sc_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11); /* scales 8..15 */
        DS_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m256i sch = h ? sc_hi : sc_lo;
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(x[b].qh + 32 * h));
            __m256i wq[4];
            wq[0] = _mm256_or_si256(_mm256_and_si256(ql0, m15), ds_bit_to_pos(qh, 0, 4, m48));
            wq[1] = _mm256_or_si256(_mm256_and_si256(ql1, m15), ds_bit_to_pos(qh, 2, 4, m48));
            wq[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m15), ds_bit_to_pos(qh, 4, 4, m48));
            wq[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15), ds_bit_to_pos(qh, 6, 4, m48));
            DS_UNROLL
            for (int k = 0; k < 4; k++) {
                const __m256i scp = ds_scale_pair(sch, k);
                DS_UNROLL
                for (int r = 0; r < nr; r++)
                    isum[r] = _mm256_add_epi32(isum[r], ds_madd_scaled(wq[k], ds_load_act(&y[r][b], 128 * h + 32 * k), scp));
            }
        }
        const float d = ds_h2f(x[b].d);
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y[r][b].bsums));
            const __m256i tot = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(off, 5));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(d * y[r][b].d), acc[r]);
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* ---- iq4_xs -----------------------------------------------------------------------
 * Sub-block j: 16 bytes qs[16j..], low nibbles = elements 0..15, high = 16..31,
 * mapped through the iq4_nl code book (signed: sign trick per row). 32 bytes
 * of qs cover sub-blocks 2k and 2k+1; lane permutes restore element order. */
DS_INLINE void ds_iq4_xs_rows(int n, float *s, const void *w, const void *a, size_t as, const int nr) {
    const block_iq4_xs *x = w;
    const block_q8_K *y[4];
    __m256 acc[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) { y[r] = ds_row_at(a, as, r); acc[r] = _mm256_setzero_ps(); }
    const __m256i m15 = _mm256_set1_epi8(0x0F);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ds_iq4nl_values));
    for (int b = 0; b < n / QK_K; b++) {
        if (nr == 1) ds_prefetch_ahead(&x[b], (int)sizeof x[b]);
        const __m128i sc8 = _mm_cvtsi64_si128((long long)ds_dot_iq4_xs_scales(x[b].scales_l, x[b].scales_h));
        const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8));
        __m256i isum[4];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm256_setzero_si256();
        DS_UNROLL
        for (int k = 0; k < 4; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * k));
            const __m256i lo = _mm256_and_si256(q, m15), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m15);
            __m256i wq[2];
            wq[0] = _mm256_shuffle_epi8(table, _mm256_permute2x128_si256(lo, hi, 0x20));
            wq[1] = _mm256_shuffle_epi8(table, _mm256_permute2x128_si256(lo, hi, 0x31));
            DS_UNROLL
            for (int t = 0; t < 2; t++) {
                const __m256i wabs = _mm256_sign_epi8(wq[t], wq[t]);
                const __m256i scj = ds_scale_bcast(sc16, 2 * k + t);
                DS_UNROLL
                for (int r = 0; r < nr; r++) {
                    const __m256i av = _mm256_sign_epi8(ds_load_act(&y[r][b], 64 * k + 32 * t), wq[t]);
                    isum[r] = _mm256_add_epi32(isum[r], ds_madd_scaled(wabs, av, scj));
                }
            }
        }
        const float d = ds_h2f(x[b].d);
        DS_UNROLL
        for (int r = 0; r < nr; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * y[r][b].d), acc[r]);
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) s[r] = ds_hsum_ps(acc[r]);
}

/* ---- entry points --------------------------------------------------------------------- */

static void dot_q2_K(int n, float *s, const void *w, const void *a) { ds_q2_K_rows(n, s, w, a, 0, 1); }
static void dot_q3_K(int n, float *s, const void *w, const void *a) { ds_q3_K_rows(n, s, w, a, 0, 1); }
static void dot_q4_K(int n, float *s, const void *w, const void *a) { ds_q45_K_rows(n, s, w, a, 0, 1, 0); }
static void dot_q5_K(int n, float *s, const void *w, const void *a) { ds_q45_K_rows(n, s, w, a, 0, 1, 1); }
static void dot_q6_K(int n, float *s, const void *w, const void *a) { ds_q6_K_rows(n, s, w, a, 0, 1); }
static void dot_iq4_xs(int n, float *s, const void *w, const void *a) { ds_iq4_xs_rows(n, s, w, a, 0, 1); }

static void dot_q2_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q2_K_rows(n, s, w, a, as, 4); }
static void dot_q3_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q3_K_rows(n, s, w, a, as, 4); }
static void dot_q4_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows(n, s, w, a, as, 4, 0); }
static void dot_q5_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows(n, s, w, a, as, 4, 1); }
static void dot_q6_K_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_q6_K_rows(n, s, w, a, as, 4); }
static void dot_iq4_xs_x4(int n, float *s, const void *w, const void *a, size_t as) { ds_iq4_xs_rows(n, s, w, a, as, 4); }

/* 2- and 3-row forms: the remainder of a row count that is not a multiple
 * of 4 (MoE experts chosen by 1..3 rows of a micro-batch) still decodes
 * each weight block once. */
static void dot_q2_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q2_K_rows(n, s, w, a, as, 2); }
static void dot_q3_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q3_K_rows(n, s, w, a, as, 2); }
static void dot_q4_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows(n, s, w, a, as, 2, 0); }
static void dot_q5_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows(n, s, w, a, as, 2, 1); }
static void dot_q6_K_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_q6_K_rows(n, s, w, a, as, 2); }
static void dot_iq4_xs_x2(int n, float *s, const void *w, const void *a, size_t as) { ds_iq4_xs_rows(n, s, w, a, as, 2); }
static void dot_q2_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q2_K_rows(n, s, w, a, as, 3); }
static void dot_q3_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q3_K_rows(n, s, w, a, as, 3); }
static void dot_q4_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows(n, s, w, a, as, 3, 0); }
static void dot_q5_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q45_K_rows(n, s, w, a, as, 3, 1); }
static void dot_q6_K_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_q6_K_rows(n, s, w, a, as, 3); }
static void dot_iq4_xs_x3(int n, float *s, const void *w, const void *a, size_t as) { ds_iq4_xs_rows(n, s, w, a, as, 3); }

ds_vec_dot_fn ds_dot_avx2_get(ds_type t) {
    switch (t) {
    case DS_TYPE_F32: return ds_dot_f32_avx2;
    case DS_TYPE_F16: return ds_dot_f16_avx2;
    case DS_TYPE_BF16: return ds_dot_bf16_avx2;
    case DS_TYPE_Q4_0: return ds_dot_q4_0_avx2;
    case DS_TYPE_Q4_1: return ds_dot_q4_1_avx2;
    case DS_TYPE_Q5_0: return ds_dot_q5_0_avx2;
    case DS_TYPE_Q5_1: return ds_dot_q5_1_avx2;
    case DS_TYPE_Q8_0: return ds_dot_q8_0_avx2;
    case DS_TYPE_IQ4_NL: return ds_dot_iq4_nl_avx2;
    case DS_TYPE_Q2_K: return dot_q2_K;
    case DS_TYPE_Q3_K: return dot_q3_K;
    case DS_TYPE_Q4_K: return dot_q4_K;
    case DS_TYPE_Q5_K: return dot_q5_K;
    case DS_TYPE_Q6_K: return dot_q6_K;
    case DS_TYPE_IQ4_XS: return dot_iq4_xs;
    default: return NULL;
    }
}

ds_vec_dot_x4_fn ds_dot_avx2_get_x4(ds_type t) {
    switch (t) {
    case DS_TYPE_F32: return ds_dot_f32_avx2_x4;
    case DS_TYPE_F16: return ds_dot_f16_avx2_x4;
    case DS_TYPE_BF16: return ds_dot_bf16_avx2_x4;
    case DS_TYPE_Q4_0: return ds_dot_q4_0_avx2_x4;
    case DS_TYPE_Q8_0: return ds_dot_q8_0_avx2_x4;
    case DS_TYPE_IQ4_NL: return ds_dot_iq4_nl_avx2_x4;
    case DS_TYPE_Q2_K: return dot_q2_K_x4;
    case DS_TYPE_Q3_K: return dot_q3_K_x4;
    case DS_TYPE_Q4_K: return dot_q4_K_x4;
    case DS_TYPE_Q5_K: return dot_q5_K_x4;
    case DS_TYPE_Q6_K: return dot_q6_K_x4;
    case DS_TYPE_IQ4_XS: return dot_iq4_xs_x4;
    default: return NULL;
    }
}

ds_vec_dot_x4_fn ds_dot_avx2_get_xn(ds_type t, int nr) {
    if (nr == 4) return ds_dot_avx2_get_x4(t);
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
