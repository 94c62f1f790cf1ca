/* emu_avx512.h: plain-C stand-ins for the AVX-512 intrinsics that
 * src/quant/dot_avx512.c uses, so that test_quant_dot can run those kernels
 * on a CPU without AVX-512 (this development machine, CI). Each follows the
 * intrinsic's pseudocode in Intel's guide. Not a general emulator: only
 * the intrinsics that file calls, and only for testing its logic (lane
 * order, shift counts, scale indices); real AVX-512 hardware is still the
 * final check. Include it after a `#pragma GCC target("avx2,...")` and before
 * the kernel file; 256-bit and narrower intrinsics stay native. */
#ifndef DS_EMU_AVX512_H
#define DS_EMU_AVX512_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef union {
    int8_t b[64];
    uint8_t ub[64];
    int16_t w[32];
    uint16_t uw[32];
    int32_t d[16];
    int64_t q[8];
    float f[16];
    __m256i h[2];
    __m128i l[4];
} ds_emu512;

/* The kernels' variables of type __m512i / __m512 become the union. */
#define __m512i ds_emu512
#define __m512 ds_emu512
#define DS_EMU static inline ds_emu512

/* Undefined upper parts (casts from narrower types) are filled with a
 * pattern, so a kernel that reads them fails the test instead of passing
 * by luck on zeros. */
static inline void ds_emu_undefined(ds_emu512 *v) { memset(v, 0x5A, sizeof *v); }

DS_EMU ds_emu_zero(void) { ds_emu512 r; memset(&r, 0, sizeof r); return r; }
DS_EMU ds_emu_castsi256_si512(__m256i a) { ds_emu512 r; ds_emu_undefined(&r); r.h[0] = a; return r; }
DS_EMU ds_emu_castsi128_si512(__m128i a) { ds_emu512 r; ds_emu_undefined(&r); r.l[0] = a; return r; }
static inline __m256i ds_emu_castsi512_si256(ds_emu512 a) { return a.h[0]; }
static inline __m256i ds_emu_extracti64x4(ds_emu512 a, int i) { return a.h[i & 1]; }
DS_EMU ds_emu_inserti64x4(ds_emu512 a, __m256i b, int i) { a.h[i & 1] = b; return a; }
DS_EMU ds_emu_broadcast_i64x4(__m256i a) { ds_emu512 r; r.h[0] = r.h[1] = a; return r; }
DS_EMU ds_emu_broadcast_i32x4(__m128i a) { ds_emu512 r; for (int i = 0; i < 4; i++) r.l[i] = a; return r; }
DS_EMU ds_emu_loadu_si512(const void *p) { ds_emu512 r; memcpy(&r, p, 64); return r; }
DS_EMU ds_emu_loadu_ps(const float *p) { ds_emu512 r; memcpy(r.f, p, 64); return r; }
DS_EMU ds_emu_set1_epi8(char c) { ds_emu512 r; memset(&r, c, 64); return r; }
DS_EMU ds_emu_set1_ps(float f) { ds_emu512 r; for (int i = 0; i < 16; i++) r.f[i] = f; return r; }

/* masked loads read only the selected elements (the hardware suppresses
 * faults on the others, and the kernels rely on that at row ends) */
DS_EMU ds_emu_maskz_loadu_ps(uint16_t k, const float *p) {
    ds_emu512 r = ds_emu_zero();
    for (int i = 0; i < 16; i++) if ((k >> i) & 1) r.f[i] = p[i];
    return r;
}
static inline __m256i ds_emu_maskz_loadu_epi16_256(uint16_t k, const void *p) {
    ds_emu512 r = ds_emu_zero();
    for (int i = 0; i < 16; i++) if ((k >> i) & 1) memcpy(&r.w[i], (const char *)p + 2 * i, 2);
    return r.h[0];
}

DS_EMU ds_emu_and(ds_emu512 a, ds_emu512 b) { for (int i = 0; i < 8; i++) a.q[i] &= b.q[i]; return a; }
DS_EMU ds_emu_or(ds_emu512 a, ds_emu512 b) { for (int i = 0; i < 8; i++) a.q[i] |= b.q[i]; return a; }
DS_EMU ds_emu_slli_epi16(ds_emu512 a, unsigned c) {
    for (int i = 0; i < 32; i++) a.uw[i] = c > 15 ? 0 : (uint16_t)(a.uw[i] << c);
    return a;
}
DS_EMU ds_emu_srli_epi16(ds_emu512 a, unsigned c) {
    for (int i = 0; i < 32; i++) a.uw[i] = c > 15 ? 0 : (uint16_t)(a.uw[i] >> c);
    return a;
}
DS_EMU ds_emu_srlv_epi16(ds_emu512 a, ds_emu512 c) {
    for (int i = 0; i < 32; i++) a.uw[i] = c.uw[i] > 15 ? 0 : (uint16_t)(a.uw[i] >> c.uw[i]);
    return a;
}
DS_EMU ds_emu_slli_epi32(ds_emu512 a, unsigned c) {
    for (int i = 0; i < 16; i++) a.d[i] = c > 31 ? 0 : (int32_t)((uint32_t)a.d[i] << c);
    return a;
}
DS_EMU ds_emu_abs_epi8(ds_emu512 a) {
    for (int i = 0; i < 64; i++) a.b[i] = a.b[i] == -128 ? -128 : (int8_t)(a.b[i] < 0 ? -a.b[i] : a.b[i]);
    return a;
}
static inline uint64_t ds_emu_movepi8_mask(ds_emu512 a) {
    uint64_t k = 0;
    for (int i = 0; i < 64; i++) if (a.b[i] < 0) k |= 1ull << i;
    return k;
}
DS_EMU ds_emu_mask_sub_epi8(ds_emu512 src, uint64_t k, ds_emu512 a, ds_emu512 b) {
    for (int i = 0; i < 64; i++) if ((k >> i) & 1) src.b[i] = (int8_t)(a.b[i] - b.b[i]);
    return src;
}
/* dst word i = a word (idx word i mod 32) */
DS_EMU ds_emu_permutexvar_epi16(ds_emu512 idx, ds_emu512 a) {
    ds_emu512 r;
    for (int i = 0; i < 32; i++) r.w[i] = a.w[idx.uw[i] & 31];
    return r;
}
/* byte shuffle within each 128-bit lane; an index with bit 7 set gives 0 */
DS_EMU ds_emu_shuffle_epi8(ds_emu512 a, ds_emu512 idx) {
    ds_emu512 r;
    for (int i = 0; i < 64; i++) r.b[i] = idx.b[i] < 0 ? 0 : a.b[(i & ~15) + (idx.b[i] & 15)];
    return r;
}
/* 128-bit lanes 0, 1 from a and 2, 3 from b, each picked by 2 bits of imm */
DS_EMU ds_emu_shuffle_i64x2(ds_emu512 a, ds_emu512 b, int imm) {
    ds_emu512 r;
    r.l[0] = a.l[imm & 3];
    r.l[1] = a.l[(imm >> 2) & 3];
    r.l[2] = b.l[(imm >> 4) & 3];
    r.l[3] = b.l[(imm >> 6) & 3];
    return r;
}
/* u8 x s8 pairs summed into s16 with saturation */
DS_EMU ds_emu_maddubs_epi16(ds_emu512 a, ds_emu512 b) {
    ds_emu512 r;
    for (int i = 0; i < 32; i++) {
        int v = a.ub[2 * i] * b.b[2 * i] + a.ub[2 * i + 1] * b.b[2 * i + 1];
        r.w[i] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }
    return r;
}
/* VNNI: src + sum of 4 u8 x s8 products / of 2 s16 x s16 products, no saturation */
DS_EMU ds_emu_dpbusd_epi32(ds_emu512 s, ds_emu512 a, ds_emu512 b) {
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 4; k++) s.d[i] += (int32_t)a.ub[4 * i + k] * b.b[4 * i + k];
    return s;
}
static inline __m256i ds_emu_dpbusd_epi32_256(__m256i s, __m256i a, __m256i b) {
    ds_emu512 S, A, B;
    S.h[0] = s; A.h[0] = a; B.h[0] = b;
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 4; k++) S.d[i] += (int32_t)A.ub[4 * i + k] * B.b[4 * i + k];
    return S.h[0];
}
DS_EMU ds_emu_dpwssd_epi32(ds_emu512 s, ds_emu512 a, ds_emu512 b) {
    for (int i = 0; i < 16; i++)
        s.d[i] += (int32_t)a.w[2 * i] * b.w[2 * i] + (int32_t)a.w[2 * i + 1] * b.w[2 * i + 1];
    return s;
}
DS_EMU ds_emu_cvtepu16_epi32(__m256i h) {
    ds_emu512 s, r;
    s.h[0] = h;
    for (int i = 0; i < 16; i++) r.d[i] = s.uw[i];
    return r;
}
DS_EMU ds_emu_cvtph_ps(__m256i h) {
    ds_emu512 r;
    const __m256 lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h)), hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
    memcpy(r.f, &lo, 32);
    memcpy(r.f + 8, &hi, 32);
    return r;
}
DS_EMU ds_emu_castsi512_ps(ds_emu512 a) { return a; }
DS_EMU ds_emu_cvtepi32_ps(ds_emu512 a) { for (int i = 0; i < 16; i++) a.f[i] = (float)a.d[i]; return a; }
DS_EMU ds_emu_add_ps(ds_emu512 a, ds_emu512 b) { for (int i = 0; i < 16; i++) a.f[i] += b.f[i]; return a; }
DS_EMU ds_emu_fmadd_ps(ds_emu512 a, ds_emu512 b, ds_emu512 c) {
    for (int i = 0; i < 16; i++) c.f[i] = fmaf(a.f[i], b.f[i], c.f[i]);
    return c;
}
/* dst = k bit set ? b : a */
DS_EMU ds_emu_mask_blend_ps(uint16_t k, ds_emu512 a, ds_emu512 b) {
    for (int i = 0; i < 16; i++) if ((k >> i) & 1) a.f[i] = b.f[i];
    return a;
}
static inline float ds_emu_reduce_add_ps(ds_emu512 a) {
    float s = 0;
    for (int i = 0; i < 16; i++) s += a.f[i];
    return s;
}

#undef _mm256_dpbusd_epi32 /* some GCC versions define it as a macro */
#define _mm512_setzero_si512 ds_emu_zero
#define _mm512_setzero_ps ds_emu_zero
#define _mm512_castsi256_si512 ds_emu_castsi256_si512
#define _mm512_castsi128_si512 ds_emu_castsi128_si512
#define _mm512_castsi512_si256 ds_emu_castsi512_si256
#define _mm512_extracti64x4_epi64 ds_emu_extracti64x4
#define _mm512_inserti64x4 ds_emu_inserti64x4
#define _mm512_broadcast_i64x4 ds_emu_broadcast_i64x4
#define _mm512_broadcast_i32x4 ds_emu_broadcast_i32x4
#define _mm512_loadu_si512 ds_emu_loadu_si512
#define _mm512_loadu_ps ds_emu_loadu_ps
#define _mm512_set1_epi8 ds_emu_set1_epi8
#define _mm512_set1_ps ds_emu_set1_ps
#define _mm512_maskz_loadu_ps ds_emu_maskz_loadu_ps
#define _mm256_maskz_loadu_epi16 ds_emu_maskz_loadu_epi16_256
#define _mm512_and_si512 ds_emu_and
#define _mm512_or_si512 ds_emu_or
#define _mm512_slli_epi16 ds_emu_slli_epi16
#define _mm512_srli_epi16 ds_emu_srli_epi16
#define _mm512_srlv_epi16 ds_emu_srlv_epi16
#define _mm512_slli_epi32 ds_emu_slli_epi32
#define _mm512_abs_epi8 ds_emu_abs_epi8
#define _mm512_movepi8_mask ds_emu_movepi8_mask
#define _mm512_mask_sub_epi8 ds_emu_mask_sub_epi8
#define _mm512_permutexvar_epi16 ds_emu_permutexvar_epi16
#define _mm512_shuffle_epi8 ds_emu_shuffle_epi8
#define _mm512_shuffle_i64x2 ds_emu_shuffle_i64x2
#define _mm512_maddubs_epi16 ds_emu_maddubs_epi16
#define _mm512_dpbusd_epi32 ds_emu_dpbusd_epi32
#define _mm256_dpbusd_epi32 ds_emu_dpbusd_epi32_256
#define _mm512_dpwssd_epi32 ds_emu_dpwssd_epi32
#define _mm512_cvtepu16_epi32 ds_emu_cvtepu16_epi32
#define _mm512_cvtph_ps ds_emu_cvtph_ps
#define _mm512_castsi512_ps ds_emu_castsi512_ps
#define _mm512_cvtepi32_ps ds_emu_cvtepi32_ps
#define _mm512_add_ps ds_emu_add_ps
#define _mm512_fmadd_ps ds_emu_fmadd_ps
#define _mm512_mask_blend_ps ds_emu_mask_blend_ps
#define _mm512_reduce_add_ps ds_emu_reduce_add_ps

#endif
