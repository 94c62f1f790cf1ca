/* dot_avx2_util.h: small AVX2 helpers shared by the *_avx2.c and *_avx512.c
 * kernels (horizontal sums, nibble unpacking, signed int8 products, K-quant
 * scale decoding in registers), and the names of the kernels one AVX2 file
 * defines and the other's table lists.
 * Include only from files built with -mavx2 -mfma -mf16c. Not a kernel. */
#ifndef DS_QUANT_DOT_AVX2_UTIL_H
#define DS_QUANT_DOT_AVX2_UTIL_H

#include "dot_internal.h"

#include <immintrin.h>

#define DS_INLINE static inline __attribute__((always_inline))
/* Fixed-count loops over sub-blocks and rows must unroll: shift counts and
 * lane selectors become immediates, accumulator arrays become registers. */
#define DS_UNROLL _Pragma("GCC unroll 8")

/* fp16 scale field -> float, by the F16C instruction (no lookup table) */
DS_INLINE float ds_h2f(ds_half h) { return _cvtsh_ss(h); }

/* Software prefetch for the 1-row kernels, which stream weights from DRAM
 * once (decode): with the hardware prefetcher alone a core reached ~11
 * GB/s; the block DS_PF_AHEAD bytes ahead, every line of it, gave 13-15
 * (q6_K 7168 x 16384, one thread; 1024 and 1280 in between, 512 and 4096
 * little better than none). Two threads, medians of 6 alternating runs:
 * q4_K 21.9 -> 24.2 GB/s, q6_K 23.4 -> 25.6, q2_K 17.9 -> 19.2. Not in
 * q3_K's kernel: it is compute-bound at ~12 GB/s a core and lost ~3 %.
 * Never faults (a prefetch past the tensor is a hint). */
#define DS_PF_AHEAD 768
DS_INLINE void ds_prefetch_ahead(const void *blk, const int bytes) {
    const char *p = (const char *)blk + DS_PF_AHEAD;
    for (int o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

DS_INLINE float ds_hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 bytes of packed nibbles -> 32 bytes: low nibbles in the low lane
 * (elements 0..15), high nibbles in the high lane (elements 16..31); the
 * layout of every 32-element 4-bit block. */
DS_INLINE __m256i ds_unpack_nibbles16(const uint8_t *p) {
    const __m128i v = _mm_loadu_si128((const __m128i *)p);
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/* sum of products of 32 signed int8 pairs, as 8 int32 lanes. maddubs wants
 * unsigned x signed: |w| times a with w's sign moved onto a. Safe because
 * activations are never -128 (act_quant.c): |w| <= 128, |a| <= 127 keeps
 * each pair sum within int16. */
DS_INLINE __m256i ds_dot_i8_signed(__m256i w, __m256i a) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* same for unsigned w (0..127 here; products stay within int16) */
DS_INLINE __m256i ds_dot_u8_i8(__m256i w, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));
}

/* q3_K scales decoded in registers (a scalar decode stored to memory and
 * reloaded as one vector stalls on store forwarding): 16 int16, lane 0 =
 * scales 0..7, lane 1 = 8..15. Low nibbles from bytes 0..7 (scales 8..15
 * use the high nibble); bit pair k/4 of byte 8 + k%4 on top; minus 32. */
DS_INLINE __m256i ds_q3_K_scales16(const uint8_t *s) {
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i lo8 = _mm_loadl_epi64((const __m128i *)s);
    const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(lo8, m4), _mm_and_si128(_mm_srli_epi16(lo8, 4), m4));
    /* dword q of the shifted copy holds bit pair q of bytes 8..11: scales 4q..4q+3 */
    const __m128i h = _mm_srlv_epi32(_mm_set1_epi32((int)ds_dot_le32(s + 8)), _mm_setr_epi32(0, 2, 4, 6));
    const __m128i high = _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi8(3)), 4);
    return _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(32)));
}

/* Moves bit `bit` of every byte to bit `pos` (16-bit shifts never move a bit
 * across bytes here: only the target position survives the mask). */
DS_INLINE __m256i ds_bit_to_pos(__m256i v, const int bit, const int pos, __m256i mask) {
    if (bit > pos) v = _mm256_srli_epi16(v, bit - pos);
    else if (bit < pos) v = _mm256_slli_epi16(v, pos - bit);
    return _mm256_and_si256(v, mask);
}

/* The 3-bit values of the 4 chunks of half h. A qs byte holds the 2-bit
 * fields of chunks 0..3 at bits 0-1, 2-3, 4-5, 6-7: fields 0 and 2 (and 1
 * and 3) sit a nibble apart, so one table lookup of the half's 4 hmask bits
 * (hn, one nibble per byte) drops two chunks' high bits in place (bits 2 and
 * 6) and each chunk is then one nibble: 29 vector ops per block instead
 * of 37 field by field (the kernel is bound by vector ALU throughput). */
DS_INLINE void ds_q3_K_chunks(__m256i q, __m256i hn, __m256i w[4]) {
    /* nibble h0..h3 -> h0 << 2 | h2 << 6, and h1 << 2 | h3 << 6 */
    const __m256i t02 = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(0, 4, 0, 4, 64, 68, 64, 68, 0, 4, 0, 4, 64, 68, 64, 68));
    const __m256i t13 = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(0, 0, 4, 4, 0, 0, 4, 4, 64, 64, 68, 68, 64, 64, 68, 68));
    const __m256i m15 = _mm256_set1_epi8(0x0F), m33 = _mm256_set1_epi8(0x33);
    const __m256i c02 = _mm256_or_si256(_mm256_and_si256(q, m33), _mm256_shuffle_epi8(t02, hn));
    const __m256i c13 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2), m33), _mm256_shuffle_epi8(t13, hn));
    w[0] = _mm256_and_si256(c02, m15);
    w[1] = _mm256_and_si256(c13, m15);
    w[2] = _mm256_and_si256(_mm256_srli_epi16(c02, 4), m15);
    w[3] = _mm256_and_si256(_mm256_srli_epi16(c13, 4), m15);
}

/* q4_K/q5_K scales and mins in registers: bytes 0..7 = scales, 8..15 = mins
 * (the layout of ds_dot_k4_scales). Reads 16 bytes from s: the 12 scale
 * bytes are followed by qh/qs of the same block. */
DS_INLINE __m128i ds_k4_scales_mins(const uint8_t *s) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)s); /* u0 u1 u2 (u3 unused) */
    const __m128i x = _mm_srlv_epi32(_mm_shuffle_epi32(raw, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4));
    const __m128i p = _mm_and_si128(x, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i y = _mm_srli_epi32(_mm_shuffle_epi32(raw, _MM_SHUFFLE(1, 1, 0, 0)), 6);
    const __m128i q = _mm_and_si128(y, _mm_setr_epi32(0, 0x03030303, 0, 0x03030303));
    return _mm_or_si128(p, _mm_slli_epi32(q, 4));
}

/* q8_0, q4_0 and iq4_nl blocks as 32 signed int8 weights: they differ only
 * in this step (table: the iq4_nl code book in both lanes). */
typedef enum { DS_W8_Q8_0, DS_W8_Q4_0, DS_W8_IQ4_NL } ds_w8_kind;

DS_INLINE __m256i ds_w8_load(const void *blk, ds_w8_kind kind, __m256i table) {
    switch (kind) {
    case DS_W8_Q8_0: return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)blk)->qs);
    case DS_W8_Q4_0:
        return _mm256_sub_epi8(ds_unpack_nibbles16(((const block_q4_0 *)blk)->qs), _mm256_set1_epi8(8));
    case DS_W8_IQ4_NL:
        return _mm256_shuffle_epi8(table, ds_unpack_nibbles16(((const block_iq4_nl *)blk)->qs));
    }
    return _mm256_setzero_si256();
}

DS_INLINE const void *ds_row_at(const void *a, size_t stride, int r) {
    return (const char *)a + (size_t)r * stride;
}

/* Kernels of dot_legacy_avx2.c, listed by the table in dot_k_avx2.c. */
void ds_dot_f32_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_f16_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_bf16_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_q4_0_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_q4_1_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_q5_0_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_q5_1_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_q8_0_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_iq4_nl_avx2(int n, float *s, const void *w, const void *a);
void ds_dot_f32_avx2_x4(int n, float *s, const void *w, const void *a, size_t as);
void ds_dot_f16_avx2_x4(int n, float *s, const void *w, const void *a, size_t as);
void ds_dot_bf16_avx2_x4(int n, float *s, const void *w, const void *a, size_t as);
void ds_dot_q4_0_avx2_x4(int n, float *s, const void *w, const void *a, size_t as);
void ds_dot_q8_0_avx2_x4(int n, float *s, const void *w, const void *a, size_t as);
void ds_dot_iq4_nl_avx2_x4(int n, float *s, const void *w, const void *a, size_t as);

#endif
