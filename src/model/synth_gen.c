/* synth_gen.c: random tensor rows for `synth` — quantized blocks filled with
 * random bits whose fp16 scales are then set so the dequantized weights have
 * zero mean and a chosen standard deviation; F16/F32 rows from tables.
 * Not a quantizer (no float weights are ever rounded to blocks) and not the
 * model layout (synth.c decides names, shapes, types and sigmas). */
#include "synth.h"
#include "../quant/blocks.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- PRNG -------------------------------------------------------------------
 * wyrand: one 64x64->128 multiply per 8 random bytes, so filling is bound by
 * memory, not by the generator. Statistical quality is ample for weights. */
static inline uint64_t rng_next(uint64_t *s) {
    *s += 0xa0761d6478bd642full;
    __uint128_t t = (__uint128_t)*s * (*s ^ 0xe7037ed1a0b428dbull);
    return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

/* splitmix64's finaliser: turns (seed, row) into well-separated streams. */
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline float rng_unit(uint64_t *s) { /* uniform [-1, 1) */
    return (float)((rng_next(s) >> 40) * (2.0 / 16777216.0) - 1.0);
}

static void fill_bytes(uint8_t *p, size_t n, uint64_t *s) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = rng_next(s);
        memcpy(p + i, &r, 8);
    }
    if (i < n) {
        uint64_t r = rng_next(s);
        memcpy(p + i, &r, n - i);
    }
}

/* ---- block layouts ----------------------------------------------------------
 * Where d (and the min) live, and how the mean is cancelled. Types whose
 * value is d * (signed code) get a random sign on d per block. Types with a
 * min term (value = d*sc*q - dmin*m, codes q >= 0) get each sub-block's min
 * code m equal to its scale code sc and dmin = E[q] * d, so every sub-block
 * is d*sc*(q - E[q]): centred, as real weights are, instead of offset by a
 * random min. Q4_1/Q5_1 add m (value = d*q + m), so m = -E[q]*d. */
typedef enum { TIE_NONE = 0, TIE_K4, TIE_Q2K } tie_mode;

typedef struct {
    ds_type type;
    int d_off, m_off;
    float m_ratio;    /* dmin / d (0 with sign flipping) */
    tie_mode tie;     /* how to make the min codes equal the scale codes */
    int scales_off;
} block_layout;

static const block_layout k_layouts[] = {
    { DS_TYPE_Q4_0, offsetof(block_q4_0, d), -1, 0, TIE_NONE, 0 },
    { DS_TYPE_Q4_1, offsetof(block_q4_1, d), offsetof(block_q4_1, m), -7.5f, TIE_NONE, 0 },
    { DS_TYPE_Q5_0, offsetof(block_q5_0, d), -1, 0, TIE_NONE, 0 },
    { DS_TYPE_Q5_1, offsetof(block_q5_1, d), offsetof(block_q5_1, m), -15.5f, TIE_NONE, 0 },
    { DS_TYPE_Q8_0, offsetof(block_q8_0, d), -1, 0, TIE_NONE, 0 },
    { DS_TYPE_Q2_K, offsetof(block_q2_K, d), offsetof(block_q2_K, dmin), 1.5f, TIE_Q2K, offsetof(block_q2_K, scales) },
    { DS_TYPE_Q3_K, offsetof(block_q3_K, d), -1, 0, TIE_NONE, 0 },
    { DS_TYPE_Q4_K, offsetof(block_q4_K, d), offsetof(block_q4_K, dmin), 7.5f, TIE_K4, offsetof(block_q4_K, scales) },
    { DS_TYPE_Q5_K, offsetof(block_q5_K, d), offsetof(block_q5_K, dmin), 15.5f, TIE_K4, offsetof(block_q5_K, scales) },
    { DS_TYPE_Q6_K, offsetof(block_q6_K, d), -1, 0, TIE_NONE, 0 },
    { DS_TYPE_IQ4_NL, offsetof(block_iq4_nl, d), -1, 0, TIE_NONE, 0 },
    { DS_TYPE_IQ4_XS, offsetof(block_iq4_xs, d), -1, 0, TIE_NONE, 0 },
};

/* Makes min code == scale code in every sub-block of one block's scales.
 * Q4_K/Q5_K pack 8 (scale, min) 6-bit pairs in 12 bytes: pairs 0-3 are the
 * low 6 bits of bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 take their low
 * nibbles from bytes 8-11 (scale low, min high) and their top 2 bits from the
 * top bits of bytes 0-3 (scales) and 4-7 (mins). So copying bytes 0-3 over
 * 4-7 and each low nibble of 8-11 into its high nibble ties all eight.
 * Q2_K: one byte per sub-block, scale low nibble, min high nibble. */
static void tie_mins(uint8_t *sc, tie_mode tie) {
    if (tie == TIE_K4) {
        memcpy(sc + 4, sc, 4);
        for (int i = 8; i < 12; i++) sc[i] = (uint8_t)((sc[i] & 0x0F) | (sc[i] << 4));
    } else if (tie == TIE_Q2K) {
        for (int i = 0; i < QK_K / 16; i++) sc[i] = (uint8_t)((sc[i] & 0x0F) | (sc[i] << 4));
    }
}

static const block_layout *find_layout(ds_type t) {
    for (size_t i = 0; i < sizeof k_layouts / sizeof *k_layouts; i++)
        if (k_layouts[i].type == t) return &k_layouts[i];
    return NULL;
}

/* fp16 of v, never 0 (a zero scale would silence whole blocks) nor inf. */
static uint16_t half_nonzero(float v) {
    uint16_t h = ds_f32_to_fp16(fabsf(v));
    if (h == 0) h = 1;            /* smallest subnormal */
    if (h >= 0x7c00) h = 0x7bff;  /* largest finite */
    return h;
}

static void quant_row(const ds_synth_gen *g, uint8_t *dst, uint64_t *s) {
    const ds_type_traits *tr = ds_type_info(g->type);
    const size_t bb = (size_t)tr->block_bytes;
    const int64_t nb = g->row_elems / tr->block_elems;
    fill_bytes(dst, g->row_bytes, s);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = dst + (size_t)b * bb;
        uint64_t r = rng_next(s);
        uint16_t d = g->d_tab[r & 63];
        if (g->sign_flip && ((r >> 6) & 1)) d |= 0x8000;
        memcpy(blk + g->d_off, &d, 2);
        if (g->m_off >= 0) {
            memcpy(blk + g->m_off, &g->m_tab[r & 63], 2);
            tie_mins(blk + g->scales_off, (tie_mode)g->tie);
        }
    }
}

static void f16_row(const ds_synth_gen *g, uint16_t *dst, uint64_t *s) {
    int64_t i = 0;
    for (; i + 4 <= g->row_elems; i += 4) {
        uint64_t r = rng_next(s);
        for (int k = 0; k < 4; k++) dst[i + k] = g->f16_tab[(r >> (16 * k)) & 4095];
    }
    for (; i < g->row_elems; i++) dst[i] = g->f16_tab[rng_next(s) & 4095];
}

static void f32_row(const ds_synth_gen *g, float *dst, uint64_t *s) {
    /* uniform with the requested standard deviation: half-width sqrt(3) sigma */
    const float w = g->kind == DS_SYNTH_WEIGHT ? g->sigma * 1.7320508f : g->kind == DS_SYNTH_NORM ? 0.1f : g->sigma;
    const float c = g->kind == DS_SYNTH_NORM ? 1.0f : 0.0f;
    for (int64_t i = 0; i < g->row_elems; i++) dst[i] = c + w * rng_unit(s);
}

void ds_synth_gen_rows(const ds_synth_gen *g, int64_t row0, int64_t n, void *dst) {
    uint8_t *p = dst;
    for (int64_t r = 0; r < n; r++, p += g->row_bytes) {
        uint64_t s = mix64(g->seed ^ mix64((uint64_t)(row0 + r) + 0x632be59bd9b4e019ull));
        if (g->type == DS_TYPE_F32) f32_row(g, (float *)p, &s);
        else if (g->type == DS_TYPE_F16) f16_row(g, (uint16_t *)p, &s);
        else quant_row(g, p, &s);
    }
}

/* Standard deviation of the dequantized values of 256 random blocks made
 * with |d| = 1 (and the layout's min ratio): the factor between d and sigma.
 * Measured through the reference dequantizer rather than derived by hand,
 * so the packing of sub-block scales cannot be got wrong. */
static double unit_std(ds_synth_gen *g) {
    const ds_type_traits *tr = ds_type_info(g->type);
    const int64_t n = 256 * (int64_t)tr->block_elems;
    ds_synth_gen u = *g;
    u.row_elems = n;
    u.row_bytes = ds_row_bytes(g->type, n);
    for (int k = 0; k < 64; k++) {
        u.d_tab[k] = 0x3c00; /* 1.0 */
        u.m_tab[k] = g->m_tab[k];
    }
    uint8_t *blocks = malloc(u.row_bytes);
    float *x = malloc((size_t)n * sizeof *x);
    double ss = 0;
    if (blocks && x) {
        ds_synth_gen_rows(&u, 0, 1, blocks);
        ds_dequantize_row(g->type, blocks, x, n);
        for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    }
    free(blocks);
    free(x);
    return ss > 0 ? sqrt(ss / (double)n) : 0;
}

ds_status ds_synth_gen_init(ds_synth_gen *g, ds_type type, int64_t row_elems, ds_synth_kind kind, float sigma,
                            uint64_t seed) {
    memset(g, 0, sizeof *g);
    g->type = type;
    g->kind = kind;
    g->row_elems = row_elems;
    g->row_bytes = ds_row_bytes(type, row_elems);
    g->sigma = sigma;
    g->seed = mix64(seed);
    g->m_off = -1;
    if (!g->row_bytes || !(sigma > 0) || !isfinite(sigma)) return DS_ERR_INVALID_ARG;
    if (type == DS_TYPE_F32) return DS_OK;
    if (kind != DS_SYNTH_WEIGHT) return DS_ERR_UNSUPPORTED; /* norms and biases are f32 */
    if (type == DS_TYPE_F16) {
        if (!(g->f16_tab = malloc(4096 * sizeof *g->f16_tab))) return DS_ERR_OOM;
        /* 4096 evenly spaced quantiles of the uniform distribution */
        for (int i = 0; i < 4096; i++)
            g->f16_tab[i] = ds_f32_to_fp16((float)(sigma * 1.7320508 * ((2 * i + 1) / 4096.0 - 1.0)));
        return DS_OK;
    }
    const block_layout *L = find_layout(type);
    if (!L) return DS_ERR_UNSUPPORTED;
    g->d_off = L->d_off;
    g->m_off = L->m_off;
    g->tie = (int)L->tie;
    g->scales_off = L->scales_off;
    g->sign_flip = L->m_off < 0;
    /* Calibrate with the min at its ratio to d = 1, then scale both. */
    uint16_t m_sign = L->m_ratio < 0 ? 0x8000 : 0;
    for (int k = 0; k < 64; k++) g->m_tab[k] = (uint16_t)(half_nonzero(L->m_ratio) | m_sign);
    double s_unit = unit_std(g);
    if (!(s_unit > 0)) return DS_ERR_OOM;
    /* |d| jitters over [0.7, 1.3] of its mean, as real scales vary by block */
    double rms_j = 0;
    for (int k = 0; k < 64; k++) rms_j += pow(0.7 + 0.6 * k / 63.0, 2);
    rms_j = sqrt(rms_j / 64);
    const double base = sigma / (s_unit * rms_j);
    for (int k = 0; k < 64; k++) {
        double d = base * (0.7 + 0.6 * k / 63.0);
        g->d_tab[k] = half_nonzero((float)d);
        g->m_tab[k] = m_sign | (g->m_off >= 0 ? half_nonzero((float)(fabsf(L->m_ratio) * d)) : 0);
    }
    return DS_OK;
}

void ds_synth_gen_free(ds_synth_gen *g) {
    if (!g) return;
    free(g->f16_tab);
    g->f16_tab = NULL;
}
