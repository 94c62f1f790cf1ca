/* dequant_iq.c: reference dequantization of the IQ types (iq1_s, iq1_m,
 * iq2_xxs/xs/s, iq3_xxs/s, iq4_nl/xs), bit-exact with gguf-py.
 * Not the dispatcher (ds_dequantize_row in dequant.c), not the tables (iq_tables.c). */
#include "quant.h"
#include "blocks.h"
#include "iq_tables.h"

#include <string.h>

static inline uint32_t ds_le32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4); /* iq2_xxs/iq3_xxs words sit at 2-byte offsets */
    return v;
}
static inline uint16_t ds_le16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* 8 grid bytes times the group scale, negated where the sign byte has a bit:
 * y[k] = (db * g[k]) * (+-1), the product rounded once as in gguf-py. */
static inline void ds_put8(float *y, float db, uint64_t g, uint8_t signs) {
    for (int k = 0; k < 8; k++) {
        const float v = db * (float)(uint8_t)(g >> (8 * k));
        y[k] = (signs >> k) & 1 ? -v : v;
    }
}

/* iq2_xxs: per 32 elements two u32: 4 grid indices (bytes), then four 7-bit
 * sign indices and a 4-bit scale in the top bits. */
void ds_dequant_iq2_xxs(const void *src, float *y, int64_t nb) {
    const block_iq2_xxs *b = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ds_fp16_to_f32(b[i].d);
        const uint8_t *qs = (const uint8_t *)b[i].qs;
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32) {
            const uint32_t idx = ds_le32(qs + 8 * ib), aux = ds_le32(qs + 8 * ib + 4);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
            for (int l = 0; l < 4; l++)
                ds_put8(y + 8 * l, db, ds_iq2xxs_grid[(idx >> (8 * l)) & 0xFF],
                        ds_iq2_signs[(aux >> (7 * l)) & 127]);
        }
    }
}

/* iq2_xs: u16 per 8 elements = 9-bit grid index | 7-bit sign index << 9;
 * one 4-bit scale per 16 elements. */
void ds_dequant_iq2_xs(const void *src, float *y, int64_t nb) {
    const block_iq2_xs *b = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ds_fp16_to_f32(b[i].d);
        for (int t = 0; t < QK_K / 8; t++, y += 8) {
            const uint16_t q = b[i].qs[t];
            const int s = (b[i].scales[t / 4] >> (4 * ((t / 2) % 2))) & 0x0F;
            const float db = d * (0.5f + (float)s) * 0.25f;
            ds_put8(y, db, ds_iq2xs_grid[q & 511], ds_iq2_signs[q >> 9]);
        }
    }
}

/* iq2_s: 10-bit grid index (qs byte + 2 bits of qh), explicit sign bytes
 * (the second half of the qs field), a 4-bit scale per 16 elements. */
void ds_dequant_iq2_s(const void *src, float *y, int64_t nb) {
    const block_iq2_s *b = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ds_fp16_to_f32(b[i].d);
        const uint8_t *qs = b[i].qs, *signs = b[i].qs + QK_K / 8;
        for (int t = 0; t < QK_K / 8; t++, y += 8) {
            const int idx = qs[t] | (((b[i].qh[t / 4] >> (2 * (t % 4))) & 3) << 8);
            const int s = (b[i].scales[t / 4] >> (4 * ((t / 2) % 2))) & 0x0F;
            const float db = d * (0.5f + (float)s) * 0.25f;
            ds_put8(y, db, ds_iq2s_grid[idx], signs[t]);
        }
    }
}

/* iq3_xxs: 64 grid bytes (4 elements each), then per 32 elements one u32 of
 * four 7-bit sign indices and a 4-bit scale. */
void ds_dequant_iq3_xxs(const void *src, float *y, int64_t nb) {
    const block_iq3_xxs *b = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ds_fp16_to_f32(b[i].d);
        const uint8_t *qs = b[i].qs, *ss = b[i].qs + QK_K / 4;
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32) {
            const uint32_t aux = ds_le32(ss + 4 * ib);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
            for (int l = 0; l < 4; l++) {
                const uint64_t g = (uint64_t)ds_iq3xxs_grid[qs[8 * ib + 2 * l]] |
                                   (uint64_t)ds_iq3xxs_grid[qs[8 * ib + 2 * l + 1]] << 32;
                ds_put8(y + 8 * l, db, g, ds_iq2_signs[(aux >> (7 * l)) & 127]);
            }
        }
    }
}

/* iq3_s: 9-bit grid index (qs byte + 1 qh bit), explicit sign bits, an odd
 * scale 1 + 2*s per 32 elements. */
void ds_dequant_iq3_s(const void *src, float *y, int64_t nb) {
    const block_iq3_s *b = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ds_fp16_to_f32(b[i].d);
        for (int t = 0; t < QK_K / 8; t++, y += 8) {
            const int s = (b[i].scales[t / 8] >> (4 * ((t / 4) % 2))) & 0x0F;
            const float db = d * (float)(1 + 2 * s);
            uint64_t g = 0;
            for (int h = 0; h < 2; h++) {
                const int q = 2 * t + h;
                const int idx = b[i].qs[q] | (((b[i].qh[q / 8] >> (q % 8)) & 1) << 8);
                g |= (uint64_t)ds_iq3s_grid[idx] << (32 * h);
            }
            ds_put8(y, db, g, b[i].signs[t]);
        }
    }
}

/* 8 iq1 grid values: y[k] = dl * (g[k] + delta), the sum exact in float */
static inline void ds_put8_iq1(float *y, float dl, int idx, float delta) {
    const uint64_t g = ds_iq1s_grid[idx];
    for (int k = 0; k < 8; k++) y[k] = dl * ((float)(int8_t)(g >> (8 * k)) + delta);
}

/* iq1_s: per 32 elements a u16 qh = four 3-bit index extensions, a 3-bit
 * scale (bits 12..14) and the delta sign (bit 15). */
void ds_dequant_iq1_s(const void *src, float *y, int64_t nb) {
    const block_iq1_s *b = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ds_fp16_to_f32(b[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32) {
            const uint16_t qh = b[i].qh[ib];
            const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
            const float delta = qh & 0x8000 ? -DS_IQ1_DELTA : DS_IQ1_DELTA;
            for (int l = 0; l < 4; l++)
                ds_put8_iq1(y + 8 * l, dl, b[i].qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8),
                            delta);
        }
    }
}

/* iq1_m: the fp16 super-scale is the top nibbles of the four scale words;
 * their low 12 bits hold 3-bit scales, one per 16 elements. Each qh nibble
 * extends one grid index (3 bits) and carries that group's delta sign. */
void ds_dequant_iq1_m(const void *src, float *y, int64_t nb) {
    const block_iq1_m *b = src;
    for (int64_t i = 0; i < nb; i++) {
        uint16_t sc[4];
        for (int k = 0; k < 4; k++) sc[k] = ds_le16(b[i].scales + 2 * k);
        const uint16_t dbits = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) |
                                          ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000));
        const float d = ds_fp16_to_f32(dbits);
        for (int t = 0; t < QK_K / 8; t++, y += 8) {
            const int j = t / 2; /* 16-element scale index */
            const int s = (sc[j / 4] >> (3 * (j % 4))) & 7;
            const float dl = d * (float)(2 * s + 1);
            const int nib = (b[i].qh[t / 2] >> (4 * (t % 2))) & 0x0F;
            const float delta = nib & 8 ? -DS_IQ1_DELTA : DS_IQ1_DELTA;
            ds_put8_iq1(y, dl, b[i].qs[t] | ((nib & 7) << 8), delta);
        }
    }
}

/* iq4_nl: q4_0's layout with the 16 levels of ds_iq4nl_values */
void ds_dequant_iq4_nl(const void *src, float *y, int64_t nb) {
    const block_iq4_nl *b = src;
    for (int64_t i = 0; i < nb; i++, y += QK4_NL) {
        const float d = ds_fp16_to_f32(b[i].d);
        for (int j = 0; j < QK4_NL / 2; j++) {
            y[j] = d * (float)ds_iq4nl_values[b[i].qs[j] & 0x0F];
            y[j + QK4_NL / 2] = d * (float)ds_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

/* iq4_xs: 8 sub-blocks of 32 in iq4_nl's nibble order, each with a signed
 * 6-bit scale: low nibble from scales_l, top 2 bits from scales_h. */
void ds_dequant_iq4_xs(const void *src, float *y, int64_t nb) {
    const block_iq4_xs *b = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ds_fp16_to_f32(b[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32) {
            const int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) |
                           (((b[i].scales_h >> (2 * ib)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            const uint8_t *qs = b[i].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)ds_iq4nl_values[qs[j] & 0x0F];
                y[j + 16] = dl * (float)ds_iq4nl_values[qs[j] >> 4];
            }
        }
    }
}
