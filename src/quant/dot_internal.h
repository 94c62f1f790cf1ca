/* dot_internal.h: what the dot-kernel files share inside src/quant: the
 * per-level kernel tables, the 4-row kernel type, the SIMD activation
 * quantizers and the scale decoders of the K-quant blocks (plain C, inline).
 * Not public: callers use quant.h (ds_vec_dot_best, ds_matmul). */
#ifndef DS_QUANT_DOT_INTERNAL_H
#define DS_QUANT_DOT_INTERNAL_H

#include "quant.h"
#include "blocks.h"
#include "iq_tables.h" /* ds_iq4nl_values: the IQ4_NL / IQ4_XS code book */

#include <string.h>

/* s[r] = dot(w, a_r) for r < 4, a_r = (const char *)a + r * a_stride: one
 * weight row against four activation rows, so that unpacking the weights
 * is paid once for four products (prefill). */
typedef void (*ds_vec_dot_x4_fn)(int n, float *s, const void *w, const void *a,
                                 size_t a_stride);

/* Per-level kernel lookup; NULL where that level has no kernel for t. The
 * _avx2/_avx512 getters exist in every build (their files are always
 * compiled with the ISA flags) but must only be called on a CPU that has
 * the ISA: ds_vec_dot_at checks that. */
ds_vec_dot_fn ds_dot_scalar_get(ds_type t);
ds_vec_dot_fn ds_dot_avx2_get(ds_type t);
ds_vec_dot_fn ds_dot_avx512_get(ds_type t);
ds_vec_dot_x4_fn ds_dot_avx2_get_x4(ds_type t);
ds_vec_dot_x4_fn ds_dot_avx512_get_x4(ds_type t);
/* The same shape for nr = 2, 3 or 4 activation rows (s[0..nr)); nr = 4 is
 * the 4-row kernel. NULL where that level has no such form for t. */
ds_vec_dot_x4_fn ds_dot_avx2_get_xn(ds_type t, int nr);
ds_vec_dot_x4_fn ds_dot_avx512_get_xn(ds_type t, int nr);

/* m weight rows (a multiple of 8; w, rows rs bytes apart) against n
 * quantized activation rows (act, as bytes apart): y[r * ldy + i] =
 * dot(row i, act row r) for i < m. A GEMM over interleaved tiles of 8
 * rows (gemm_k_avx2.c), for prefill-sized n. */
typedef void (*ds_gemm8_fn)(int K, const uint8_t *w, size_t rs, int m, const uint8_t *act, size_t as, int n,
                            float *y, int64_t ldy);
ds_gemm8_fn ds_gemm8_avx2_get(ds_type t);
/* The 8-row GEMM for t at the effective level (AVX2 only for now: AVX-512
 * keeps its 4-row kernels); NULL if none or DSINFER_GEMM8=0. */
ds_gemm8_fn ds_gemm8_best(ds_type t);
/* Activation rows from which ds_matmul uses the 8-row GEMM. Below, the 2-4
 * row dot kernels win: the tile's decode is paid for few rows. In a pp64 of
 * the ds2 synth (q3_K 7168 x 2048 experts, 2 threads, DSINFER_CPU_PROFILE)
 * the GEMM ran 50/55/56 GMAC/s at 5/6/7 rows, where 4 rows on the 4-row
 * kernel ran 65 and 1-3 rows 36-45; from 8 rows it wins (dense 64 rows:
 * 90 against 69). */
#define DS_GEMM8_MIN_ROWS 8

/* The CPU's own level, ignoring DS_SIMD (ds_simd_detect honours it). */
ds_simd_level ds_simd_cpu_level(void);
/* Best 4-row kernel for t at the effective level; NULL if none. */
ds_vec_dot_x4_fn ds_vec_dot_x4_best(ds_type t);
/* Best nr-row kernel (nr = 2..4) at the effective level; NULL if none. */
ds_vec_dot_x4_fn ds_vec_dot_xn_best(ds_type t, int nr);

/* Activation quantizers of one level: the AVX2 ones are bit-identical to
 * the scalar ones in act_quant.c (same amax, same 127/amax, same
 * round-half-even); the public ds_quantize_row_* pick one. */
/* mm_profile.c: DSINFER_CPU_PROFILE=1 times every matmul by shape */
bool ds_mm_prof_on(void);
void ds_mm_prof_add(ds_type wt, int64_t K, int64_t M, int64_t n_rows, bool serial, double seconds);

void ds_quantize_row_q8_0_scalar(const float *x, void *y, int64_t n);
void ds_quantize_row_q8_1_scalar(const float *x, void *y, int64_t n);
void ds_quantize_row_q8_K_scalar(const float *x, void *y, int64_t n);
void ds_quantize_row_q8_0_avx2(const float *x, void *y, int64_t n);
void ds_quantize_row_q8_1_avx2(const float *x, void *y, int64_t n);
void ds_quantize_row_q8_K_avx2(const float *x, void *y, int64_t n);

static inline uint32_t ds_dot_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Subtracts 32 from each byte of w (bytes 0..63 -> -32..31 as int8). The top
 * bit set in every byte first keeps borrows from crossing into the next. */
static inline uint32_t ds_dot_bytes_minus32(uint32_t w) {
    return ((w | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
}

/* q3_K: 12 bytes -> 16 signed scales (6-bit value - 32). Scale k takes its
 * low nibble from byte k % 8 (high nibble when k >= 8) and its top 2 bits
 * from byte 8 + k % 4, bit pair k / 4. Done on 32-bit words, 4 scales at a
 * time: word q of the result holds scales 4q..4q+3. */
static inline void ds_dot_q3_K_scales(const uint8_t s[12], int8_t out[16]) {
    const uint32_t lo0 = ds_dot_le32(s), lo1 = ds_dot_le32(s + 4), hi = ds_dot_le32(s + 8);
    const uint32_t m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    uint32_t w[4];
    w[0] = (lo0 & m4) | (((hi >> 0) & m2) << 4);
    w[1] = (lo1 & m4) | (((hi >> 2) & m2) << 4);
    w[2] = ((lo0 >> 4) & m4) | (((hi >> 4) & m2) << 4);
    w[3] = ((lo1 >> 4) & m4) | (((hi >> 6) & m2) << 4);
    for (int q = 0; q < 4; q++) w[q] = ds_dot_bytes_minus32(w[q]);
    memcpy(out, w, 16);
}

/* q4_K/q5_K: 12 bytes -> 8 six-bit scales and 8 six-bit mins. Pairs 0..3 are
 * the low 6 bits of bytes 0..3 (scale) and 4..7 (min); pairs 4..7 take a
 * nibble of bytes 8..11 and the top 2 bits of bytes 0..3 / 4..7. */
static inline void ds_dot_k4_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]) {
    const uint32_t u0 = ds_dot_le32(s), u1 = ds_dot_le32(s + 4), u2 = ds_dot_le32(s + 8);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    uint32_t w[4];
    w[0] = u0 & m6;                                   /* scales 0..3 */
    w[1] = (u2 & m4) | (((u0 >> 6) & m2) << 4);       /* scales 4..7 */
    w[2] = u1 & m6;                                   /* mins 0..3 */
    w[3] = ((u2 >> 4) & m4) | (((u1 >> 6) & m2) << 4); /* mins 4..7 */
    memcpy(sc, w, 8);
    memcpy(mn, w + 2, 8);
}

/* iq4_xs: 8 six-bit scales minus 32, as 8 int8 packed little-endian in a
 * u64 (byte j = scale j): low nibble j from scales_l (byte j/2, low nibble
 * first), top 2 bits from bits 2j..2j+1 of scales_h. Bit spreading by shifts
 * and masks (pdep is slow on Zen 1/2); returned in a register, not stored,
 * so SIMD callers move it with one movq (no store-forwarding stall). */
static inline uint64_t ds_dot_iq4_xs_scales(const uint8_t scales_l[4], uint16_t scales_h) {
    uint64_t lo = ds_dot_le32(scales_l); /* 8 nibbles -> 8 bytes */
    lo = (lo | (lo << 16)) & 0x0000FFFF0000FFFFull;
    lo = (lo | (lo << 8)) & 0x00FF00FF00FF00FFull;
    lo = (lo | (lo << 4)) & 0x0F0F0F0F0F0F0F0Full;
    uint64_t hi = scales_h; /* 8 bit pairs -> bits 4..5 of 8 bytes */
    hi = (hi | (hi << 24)) & 0x000000FF000000FFull;
    hi = (hi | (hi << 12)) & 0x000F000F000F000Full;
    hi = (hi | (hi << 6)) & 0x0303030303030303ull;
    const uint64_t v = lo | (hi << 4);
    /* minus 32 per byte, borrows kept inside bytes as in ds_dot_bytes_minus32 */
    return ((v | 0x8080808080808080ull) - 0x2020202020202020ull) ^ 0x8080808080808080ull;
}

#endif
