/* gemm_k_avx2.c: prefill GEMM on AVX2 for q3_K/q4_K/q5_K/q6_K weights against
 * q8_K activations (q8_0 weights against q8_0), 8 weight rows at a time with
 * the rows interleaved. Used by ds_matmul from DS_GEMM8_MIN_ROWS rows.
 *
 * Why: the dot kernels (dot_k_avx2.c) give each weight row its own 8-lane
 * accumulator, so every output ends in a horizontal sum and every 32
 * weights cost two multiplies (maddubs, then madd by the sub-block scale).
 * Here 8 weight rows are decoded once per 256-block into an interleaved
 * tile: 32 bytes = 4 consecutive weights of each of the 8 rows. One
 * activation dword broadcast against it gives, in int16 lane pair 2i/2i+1,
 * row i's 4 products; the products of a whole sub-block add up in int16
 * (the field values are small: see the bounds below), and one madd by the
 * rows' scales per sub-block widens them, with the 8 rows' sums landing in
 * 8 int32 lanes. No horizontal sums; 1.1-1.3 multiplies per 32 weights.
 *
 * Same integers as the dot kernels (each block's integer sum is exact),
 * only the float accumulation over blocks differs (one int->float per block
 * and row instead of 8 lane partials): results agree to float rounding. */
#include "dot_avx2_util.h"

/* one 256-block of 8 weight rows, decoded and interleaved */
typedef struct {
    __m256i q[64];  /* [kg] byte 4i + t = row i's field value of weight 4kg + t (unsigned) */
    __m256i sc[16]; /* [g] row i's scale of sub-block g as an int16 pair in dword i (madd operand) */
    __m256i mp[8];  /* [j] row i's pair of bias coefficients (c_2j, c_2j+1) in dword i */
    __m256 d, dmin; /* row i's block scales in lane i */
} gemm_tile;

/* 8x8 transpose of dwords: out[k] dword i = in[i] dword k */
DS_INLINE void transpose8(const __m256i in[8], __m256i out[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(in[i], in[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(in[i], in[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int k = 0; k < 4; k++) {
        out[k] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x20);
        out[k + 4] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x31);
    }
}

/* rows' 32-byte vectors at src + i*stride, transposed into dst[0..8) */
DS_INLINE void transpose8_from(const uint8_t *src, size_t stride, __m256i *dst) {
    __m256i in[8];
    for (int i = 0; i < 8; i++) in[i] = _mm256_loadu_si256((const __m256i *)(src + (size_t)i * stride));
    transpose8(in, dst);
}

/* int16 values v (sign-extended in dwords) -> each as the pair (v, v) */
DS_INLINE __m256i dup16(__m256i v) {
    return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(v, 16));
}

DS_INLINE int32_t ld32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- decode: one 256-block of 8 rows into a tile ----------------------------------
 * Per row the fields go to a row-major scratch (8 x 256 bytes), then each 32-byte
 * chunk of the 8 rows is transposed into 8 interleaved vectors. */

/* q6_K's 4 chunks of half h: chunk k (elements 128h + 32k ..) is the low
 * (k < 2) or high nibble of ql[64h + 32(k & 1) ..] with bits 2k..2k+1 of
 * qh[32h ..] as bits 4..5 */
DS_INLINE void q6_K_chunks(const block_q6_K *x, int h, __m256i c[4]) {
    const __m256i m15 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m256i l[2] = { _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h)),
                           _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32)) };
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
    for (int k = 0; k < 4; k++) {
        const __m256i lo = _mm256_and_si256(k < 2 ? l[k & 1] : _mm256_srli_epi16(l[k & 1], 4), m15);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3);
        c[k] = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
    }
}

/* The 16-weight sub-block types, q3_K (six = 0: fields 0..7, scales 6-bit)
 * and q6_K (six = 1: fields 0..63, int8 scales); the offsets come later
 * from the bsums (run_off16) */
DS_INLINE void tile_off16(gemm_tile *T, const uint8_t *w, size_t rs, int b, const int six) {
    _Alignas(32) uint8_t f[8][256];
    _Alignas(32) int32_t scd[8][16], scp[8][8];
    float d[8];
    const __m256i m15 = _mm256_set1_epi8(0x0F);
    for (int i = 0; i < 8; i++) {
        const block_q3_K *x3 = (const block_q3_K *)(w + (size_t)i * rs) + b;
        const block_q6_K *x6 = (const block_q6_K *)(w + (size_t)i * rs) + b;
        const __m256i sc16 = six ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x6->scales))
                                 : ds_q3_K_scales16(x3->scales);
        _mm256_store_si256((__m256i *)scp[i], sc16); /* dword j = (sc_2j, sc_2j+1) */
        _mm256_store_si256((__m256i *)scd[i], dup16(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(sc16))));
        _mm256_store_si256((__m256i *)scd[i] + 1, dup16(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(sc16, 1))));
        const __m256i hm = six ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)x3->hmask);
        for (int h = 0; h < 2; h++) {
            __m256i c[4];
            if (six) {
                q6_K_chunks(x6, h, c);
            } else {
                ds_q3_K_chunks(_mm256_loadu_si256((const __m256i *)(x3->qs + 32 * h)),
                               _mm256_and_si256(h ? _mm256_srli_epi16(hm, 4) : hm, m15), c);
            }
            for (int j = 0; j < 4; j++) _mm256_store_si256((__m256i *)(f[i] + 128 * h + 32 * j), c[j]);
        }
        d[i] = ds_h2f(six ? x6->d : x3->d);
    }
    for (int c = 0; c < 8; c++) transpose8_from(f[0] + 32 * c, 256, &T->q[8 * c]);
    transpose8_from((const uint8_t *)scd[0], 64, &T->sc[0]);
    transpose8_from((const uint8_t *)scd[0] + 32, 64, &T->sc[8]);
    transpose8_from((const uint8_t *)scp[0], 32, T->mp);
    T->d = _mm256_loadu_ps(d);
}

/* q4_K (five = 0) and q5_K (five = 1) */
DS_INLINE void tile_q45_K(gemm_tile *T, const uint8_t *w, size_t rs, int b, const int five) {
    _Alignas(32) uint8_t f[8][256];
    _Alignas(32) int32_t scd[8][8], mnp[8][8];
    float d[8], dmin[8];
    const __m256i m15 = _mm256_set1_epi8(0x0F), m16 = _mm256_set1_epi8(0x10);
    const size_t bb = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    for (int i = 0; i < 8; i++) {
        const uint8_t *blk = w + (size_t)i * rs + (size_t)b * bb;
        const block_q4_K *x4 = (const block_q4_K *)blk; /* d, dmin, scales: same place in both */
        const uint8_t *qs = five ? ((const block_q5_K *)blk)->qs : x4->qs;
        const __m128i scm = ds_k4_scales_mins(x4->scales); /* bytes 0..7 scales, 8..15 mins */
        _mm256_store_si256((__m256i *)scd[i], dup16(_mm256_cvtepu8_epi32(scm)));
        /* mins as int16 pairs (m_2j, m_2j+1) in dwords 0..3; 4..7 unused */
        _mm256_store_si256((__m256i *)mnp[i], _mm256_cvtepu8_epi16(_mm_srli_si128(scm, 8)));
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh)
                                : _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
            __m256i lo = _mm256_and_si256(q, m15), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m15);
            if (five) {
                lo = _mm256_or_si256(lo, ds_bit_to_pos(qh, 2 * k, 4, m16));
                hi = _mm256_or_si256(hi, ds_bit_to_pos(qh, 2 * k + 1, 4, m16));
            }
            _mm256_store_si256((__m256i *)(f[i] + 64 * k), lo);
            _mm256_store_si256((__m256i *)(f[i] + 64 * k + 32), hi);
        }
        d[i] = ds_h2f(x4->d);
        dmin[i] = ds_h2f(x4->dmin);
    }
    for (int c = 0; c < 8; c++) transpose8_from(f[0] + 32 * c, 256, &T->q[8 * c]);
    transpose8_from((const uint8_t *)scd[0], 32, T->sc);
    transpose8_from((const uint8_t *)mnp[0], 32, T->mp);
    T->d = _mm256_loadu_ps(d);
    T->dmin = _mm256_loadu_ps(dmin);
}

/* ---- the products of one tile against nr activation rows ---------------------------
 * Bounds of the int16 sums (activations are within [-127, 127], act_quant.c):
 * a maddubs lane pair is at most 2 * 127 * vmax: q3_K (0..7) 1778, so a
 * 16-weight sub-block (4 maddubs) stays far inside int16; q4_K (0..15) 3810,
 * 8 maddubs = 30480 < 32767 for a 32-weight sub-block; q5_K (0..31) 7874, so
 * 4 maddubs (31496) per madd, two per sub-block; q6_K (0..63) 16002, 2
 * maddubs per madd. */

DS_INLINE __m256i bcast_act(const block_q8_K *y, int kg) { return _mm256_set1_epi32(ld32(y->qs + 4 * kg)); }

/* isum[r] = sum over sub-blocks of scale * (fields . activations of row r):
 * per maddubs summed in int16, then one madd by the rows' scales of the
 * sub-block (kg_per_sub dword groups of 4 weights each) */
DS_INLINE void scaled_sums(const gemm_tile *T, const block_q8_K *const *y, const int nr, const int per,
                           const int kg_per_sub, __m256i *isum) {
    DS_UNROLL
    for (int r = 0; r < nr; r++) isum[r] = _mm256_setzero_si256();
    for (int s = 0; s < 64 / per; s++) {
        __m256i p[4];
        DS_UNROLL
        for (int t = 0; t < per; t++) {
            const __m256i w = T->q[s * per + t];
            DS_UNROLL
            for (int r = 0; r < nr; r++) {
                const __m256i m = _mm256_maddubs_epi16(w, bcast_act(y[r], s * per + t));
                p[r] = t ? _mm256_add_epi16(p[r], m) : m;
            }
        }
        const __m256i sc = T->sc[s * per / kg_per_sub];
        DS_UNROLL
        for (int r = 0; r < nr; r++) isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(p[r], sc));
    }
}

/* 16-weight sub-blocks with a constant offset (q3_K: fields 0..7, offset 4,
 * shift 2; q6_K: fields 0..63, offset 32, shift 5; q6_K's 16002 per lane
 * pair allows only 2 maddubs per int16 sum, so 2 madds per sub-block) */
DS_INLINE void run_off16(const gemm_tile *T, const block_q8_K *const *y, float *acc, const int nr, const int six) {
    const int per = six ? 2 : 4;
    __m256i isum[4], bias[4];
    scaled_sums(T, y, nr, per, 4, isum);
    /* the offset of every field: sum_g sc_g * bsum_g, two sub-blocks per madd
     * (zeroed only now: 4 fewer registers live in the loop above) */
    DS_UNROLL
    for (int r = 0; r < nr; r++) bias[r] = _mm256_setzero_si256();
    DS_UNROLL
    for (int j = 0; j < 8; j++) {
        DS_UNROLL
        for (int r = 0; r < nr; r++)
            bias[r] = _mm256_add_epi32(bias[r], _mm256_madd_epi16(T->mp[j], _mm256_set1_epi32(ld32(y[r]->bsums + 2 * j))));
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        const __m256i tot = _mm256_sub_epi32(isum[r], six ? _mm256_slli_epi32(bias[r], 5) : _mm256_slli_epi32(bias[r], 2));
        const __m256 s = _mm256_mul_ps(T->d, _mm256_set1_ps(y[r]->d));
        _mm256_store_ps(acc + 8 * r, _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), s, _mm256_load_ps(acc + 8 * r)));
    }
}

DS_INLINE void run_q45_K(const gemm_tile *T, const block_q8_K *const *y, float *acc, const int nr, const int five) {
    const int per = five ? 4 : 8; /* maddubs summed in int16 before one madd */
    __m256i isum[4], msum[4];
    scaled_sums(T, y, nr, per, 8, isum);
    /* the mins: sum_j m_j * (bsum_2j + bsum_2j+1), two sub-blocks per madd */
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        msum[r] = _mm256_setzero_si256();
        _Alignas(16) int32_t bs[4]; /* dword j = the int16 pair (bs_2j, bs_2j+1) */
        _mm_store_si128((__m128i *)bs, _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)y[r]->bsums),
                                                      _mm_loadu_si128((const __m128i *)(y[r]->bsums + 8))));
        DS_UNROLL
        for (int j = 0; j < 4; j++) msum[r] = _mm256_add_epi32(msum[r], _mm256_madd_epi16(T->mp[j], _mm256_set1_epi32(bs[j])));
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        const __m256 yd = _mm256_set1_ps(y[r]->d);
        __m256 a = _mm256_load_ps(acc + 8 * r);
        a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(T->d, yd), a);
        a = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[r]), _mm256_mul_ps(T->dmin, yd), a);
        _mm256_store_ps(acc + 8 * r, a);
    }
}

/* ---- q8_0 (against q8_0 activations): 32-blocks with a float scale each --------
 * Signed weights take the sign trick (|w| times a with w's sign): a lane pair
 * reaches 2 * 128 * 127 = 32512, so each maddubs is widened by itself. */
typedef struct {
    __m256i w[8], wabs[8]; /* [kg] 8 rows x 4 weights */
    __m256 d;
} gemm_tile32;

DS_INLINE void run_q8_0(const gemm_tile32 *T, const block_q8_0 *const *y, float *acc, const int nr) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i isum[4];
    DS_UNROLL
    for (int r = 0; r < nr; r++) isum[r] = _mm256_setzero_si256();
    DS_UNROLL
    for (int k = 0; k < 8; k++) {
        DS_UNROLL
        for (int r = 0; r < nr; r++) {
            const __m256i a = _mm256_sign_epi8(_mm256_set1_epi32(ld32(y[r]->qs + 4 * k)), T->w[k]);
            isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(_mm256_maddubs_epi16(T->wabs[k], a), ones));
        }
    }
    DS_UNROLL
    for (int r = 0; r < nr; r++) {
        const __m256 s = _mm256_mul_ps(T->d, _mm256_set1_ps(ds_h2f(y[r]->d)));
        _mm256_store_ps(acc + 8 * r, _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), s, _mm256_load_ps(acc + 8 * r)));
    }
}

static void tile_q8_0(gemm_tile32 *T, const uint8_t *w, size_t rs, int b) {
    __m256i in[8];
    float d[8];
    for (int i = 0; i < 8; i++) {
        const block_q8_0 *x = (const block_q8_0 *)(w + (size_t)i * rs) + b;
        in[i] = _mm256_loadu_si256((const __m256i *)x->qs);
        d[i] = ds_h2f(x->d);
    }
    transpose8(in, T->w);
    for (int k = 0; k < 8; k++) T->wabs[k] = _mm256_sign_epi8(T->w[k], T->w[k]);
    T->d = _mm256_loadu_ps(d);
}

/* ---- entry points ---------------------------------------------------------------
 * One call: m weight rows (a multiple of 8; w, rows rs bytes apart) against n
 * activation rows (act, as bytes apart), y[r * ldy + i] for weight row i.
 * Loop order: groups of up to 64 activation rows (their accumulators stay
 * in L1), then blocks along K, then tiles of 8 weight rows, then the
 * activation rows 4 at a time. With the tiles inside the block loop, the
 * block's activations (64 x 292 bytes) stay in L1 while every tile of the
 * call uses them; each tile's block is still decoded once per group. */

enum { GEMM_ROWS = 64, GEMM_TILES = 8, GEMM_PF = 2 };

/* The 8 rows' block GEMM_PF blocks ahead: a tile reads 8 rows at once, and
 * a run of tiles up to 64, more streams than the hardware prefetchers follow */
DS_INLINE void gemm_prefetch(const uint8_t *w, size_t rs, size_t off, size_t bytes) {
    for (int i = 0; i < 8; i++)
        for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(w + (size_t)i * rs + off + o), _MM_HINT_T0);
}

#define GEMM8_BODY(TILE_T, YT, BLOCK_ELEMS, BLOCK_BYTES, DECODE, RUN)                                \
    const int nb = K / (BLOCK_ELEMS);                                                                \
    TILE_T T;                                                                                        \
    _Alignas(32) float accs[GEMM_TILES][GEMM_ROWS * 8];                                              \
    for (int t0 = 0; t0 < m / 8; t0 += GEMM_TILES) {                                                 \
        const int nt = m / 8 - t0 < GEMM_TILES ? m / 8 - t0 : GEMM_TILES;                            \
        for (int r0 = 0; r0 < n; r0 += GEMM_ROWS) {                                                  \
            const int nr_all = n - r0 < GEMM_ROWS ? n - r0 : GEMM_ROWS;                              \
            for (int t = 0; t < nt; t++) memset(accs[t], 0, sizeof(float) * 8 * (size_t)nr_all);     \
            for (int b = 0; b < nb; b++) {                                                           \
                for (int t = 0; t < nt; t++) {                                                       \
                    const uint8_t *wt = w + (size_t)(8 * (t0 + t)) * rs;                             \
                    float *acc = accs[t];                                                            \
                    if (b + GEMM_PF < nb) gemm_prefetch(wt, rs, (size_t)(b + GEMM_PF) * (BLOCK_BYTES), BLOCK_BYTES); \
                    DECODE;                                                                          \
                    int r = 0;                                                                       \
                    for (; r + 4 <= nr_all; r += 4) {                                                \
                        const YT *y[4];                                                              \
                        for (int i = 0; i < 4; i++) y[i] = (const YT *)(act + (size_t)(r0 + r + i) * as) + b; \
                        RUN(4);                                                                      \
                    }                                                                                \
                    for (; r < nr_all; r++) {                                                        \
                        const YT *y[1] = { (const YT *)(act + (size_t)(r0 + r) * as) + b };          \
                        RUN(1);                                                                      \
                    }                                                                                \
                }                                                                                    \
            }                                                                                        \
            for (int t = 0; t < nt; t++)                                                             \
                for (int r = 0; r < nr_all; r++)                                                     \
                    _mm256_storeu_ps(y_out + (size_t)(r0 + r) * ldy + 8 * (t0 + t), _mm256_load_ps(accs[t] + 8 * r)); \
        }                                                                                            \
    }

#define GEMM8_ARGS int K, const uint8_t *w, size_t rs, int m, const uint8_t *act, size_t as, int n, float *y_out, int64_t ldy

static void gemm8_q3_K(GEMM8_ARGS) {
#define RUN3(NR) run_off16(&T, y, acc + 8 * r, NR, 0)
    GEMM8_BODY(gemm_tile, block_q8_K, QK_K, sizeof(block_q3_K), tile_off16(&T, wt, rs, b, 0), RUN3)
#undef RUN3
}

static void gemm8_q4_K(GEMM8_ARGS) {
#define RUN4(NR) run_q45_K(&T, y, acc + 8 * r, NR, 0)
    GEMM8_BODY(gemm_tile, block_q8_K, QK_K, sizeof(block_q4_K), tile_q45_K(&T, wt, rs, b, 0), RUN4)
#undef RUN4
}

static void gemm8_q5_K(GEMM8_ARGS) {
#define RUN5(NR) run_q45_K(&T, y, acc + 8 * r, NR, 1)
    GEMM8_BODY(gemm_tile, block_q8_K, QK_K, sizeof(block_q5_K), tile_q45_K(&T, wt, rs, b, 1), RUN5)
#undef RUN5
}

static void gemm8_q6_K(GEMM8_ARGS) {
#define RUN6(NR) run_off16(&T, y, acc + 8 * r, NR, 1)
    GEMM8_BODY(gemm_tile, block_q8_K, QK_K, sizeof(block_q6_K), tile_off16(&T, wt, rs, b, 1), RUN6)
#undef RUN6
}

static void gemm8_q8_0(GEMM8_ARGS) {
#define RUN8(NR) run_q8_0(&T, y, acc + 8 * r, NR)
    GEMM8_BODY(gemm_tile32, block_q8_0, QK8_0, sizeof(block_q8_0), tile_q8_0(&T, wt, rs, b), RUN8)
#undef RUN8
}

ds_gemm8_fn ds_gemm8_avx2_get(ds_type t) {
    switch (t) {
    case DS_TYPE_Q3_K: return gemm8_q3_K;
    case DS_TYPE_Q4_K: return gemm8_q4_K;
    case DS_TYPE_Q5_K: return gemm8_q5_K;
    case DS_TYPE_Q6_K: return gemm8_q6_K;
    case DS_TYPE_Q8_0: return gemm8_q8_0;
    default: return NULL;
    }
}
