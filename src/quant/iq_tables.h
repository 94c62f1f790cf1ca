/* iq_tables.h: the IQ codebooks (lattice grids), the iq2/iq3 sign table and the
 * IQ4 non-linear values (part of the ggml block formats), plus the per-type IQ
 * decoders that ds_dequantize_row dispatches to. Not a public API: use quant.h. */
#ifndef DS_QUANT_IQ_TABLES_H
#define DS_QUANT_IQ_TABLES_H

#include <stdint.h>

/* Grid entries hold one element per byte, element k in byte k (little-endian),
 * so an entry can be loaded straight into a SIMD register as 8 or 4 bytes. */

/* [256] 8 x u8 in {0x08, 0x19, 0x2b}; index = one byte of iq2_xxs qs */
extern const uint64_t ds_iq2xxs_grid[256];
/* [512] 8 x u8 in {0x08, 0x19, 0x2b}; index = low 9 bits of an iq2_xs qs */
extern const uint64_t ds_iq2xs_grid[512];
/* [1024] 8 x u8 in {0x08, 0x19, 0x2b}; index = qs byte | 2 qh bits << 8 */
extern const uint64_t ds_iq2s_grid[1024];
/* [256] 4 x u8 in {0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3e} */
extern const uint32_t ds_iq3xxs_grid[256];
/* [512] 4 x u8 in {1, 3, 5, ..., 15}; index = qs byte | 1 qh bit << 8 */
extern const uint32_t ds_iq3s_grid[512];
/* [2048] 8 x i8 in {-1, 0, 1} (bytes 0xff, 0x00, 0x01); shared by iq1_s, iq1_m */
extern const uint64_t ds_iq1s_grid[2048];

/* [128] 7 stored sign bits plus an 8th that makes the count of set bits even:
 * bit k set = negate element k of the 8-element group (iq2_xxs, iq2_xs, iq3_xxs). */
extern const uint8_t ds_iq2_signs[128];

/* [16] the IQ4_NL / IQ4_XS non-linear 4-bit levels */
extern const int8_t ds_iq4nl_values[16];

/* iq1_s / iq1_m: every grid value is shifted by +-delta (sign from a qh bit) */
#define DS_IQ1_DELTA 0.125f

/* Reference IQ decoders (dequant_iq.c): nb blocks of src -> y[nb * block elems]. */
void ds_dequant_iq2_xxs(const void *src, float *y, int64_t nb);
void ds_dequant_iq2_xs(const void *src, float *y, int64_t nb);
void ds_dequant_iq2_s(const void *src, float *y, int64_t nb);
void ds_dequant_iq3_xxs(const void *src, float *y, int64_t nb);
void ds_dequant_iq3_s(const void *src, float *y, int64_t nb);
void ds_dequant_iq1_s(const void *src, float *y, int64_t nb);
void ds_dequant_iq1_m(const void *src, float *y, int64_t nb);
void ds_dequant_iq4_nl(const void *src, float *y, int64_t nb);
void ds_dequant_iq4_xs(const void *src, float *y, int64_t nb);

#endif
