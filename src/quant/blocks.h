/* blocks.h: the byte layout of every ggml block type dsinfer reads.
 * These structs ARE the file format: sizes are checked at compile time.
 * Not code: dequantization lives in dequant_*.c, dot kernels in dot_*.c. */
#ifndef DS_QUANT_BLOCKS_H
#define DS_QUANT_BLOCKS_H

#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK4_NL 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t ds_half; /* IEEE binary16 bits */

typedef struct { ds_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0;                 /* 18 */
typedef struct { ds_half d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;              /* 20 */
typedef struct { ds_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;  /* 22 */
typedef struct { ds_half d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1; /* 24 */
typedef struct { ds_half d; int8_t qs[QK8_0]; } block_q8_0;                      /* 34 */
/* activation type for q4_1/q5_1: s = d * sum(qs) */
typedef struct { ds_half d, s; int8_t qs[QK8_1]; } block_q8_1;                   /* 36 */

typedef struct {              /* 2.625 bits/weight */
    uint8_t scales[QK_K / 16]; /* 4-bit scale | 4-bit min per 16 weights */
    uint8_t qs[QK_K / 4];      /* 2-bit quants */
    ds_half d, dmin;
} block_q2_K;                  /* 84 */
typedef struct {              /* 3.4375 bits/weight */
    uint8_t hmask[QK_K / 8];   /* high bit */
    uint8_t qs[QK_K / 4];      /* low 2 bits */
    uint8_t scales[12];        /* 16 x 6-bit scales */
    ds_half d;
} block_q3_K;                  /* 110 */
typedef struct {              /* 4.5 bits/weight */
    ds_half d, dmin;
    uint8_t scales[K_SCALE_SIZE]; /* 8 x (6-bit scale, 6-bit min) */
    uint8_t qs[QK_K / 2];
} block_q4_K;                  /* 144 */
typedef struct {              /* 5.5 bits/weight */
    ds_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;                  /* 176 */
typedef struct {              /* 6.5625 bits/weight */
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    ds_half d;
} block_q6_K;                  /* 210 */
/* activation type for all 256-blocks: bsums are sums of 16 consecutive qs */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K; /* 292 */

typedef struct { ds_half d; uint16_t qs[QK_K / 8]; } block_iq2_xxs;               /* 66 */
typedef struct { ds_half d; uint16_t qs[QK_K / 8]; uint8_t scales[QK_K / 32]; } block_iq2_xs; /* 74 */
typedef struct { ds_half d; uint8_t qs[QK_K / 4]; uint8_t qh[QK_K / 32]; uint8_t scales[QK_K / 32]; } block_iq2_s; /* 82 */
typedef struct { ds_half d; uint8_t qs[3 * QK_K / 8]; } block_iq3_xxs;            /* 98 */
typedef struct {
    ds_half d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t signs[QK_K / 8];
    uint8_t scales[QK_K / 64];
} block_iq3_s;                 /* 110 */
typedef struct { ds_half d; uint8_t qs[QK_K / 8]; uint16_t qh[QK_K / 32]; } block_iq1_s; /* 50 */
/* iq1_m has no d field: the fp16 scale is spread over the top nibbles of scales */
typedef struct { uint8_t qs[QK_K / 8]; uint8_t qh[QK_K / 16]; uint8_t scales[QK_K / 32]; } block_iq1_m; /* 56 */
typedef struct { ds_half d; uint8_t qs[QK4_NL / 2]; } block_iq4_nl;               /* 18 */
typedef struct {
    ds_half d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;                /* 136 */

#define DS_BLOCK_SIZE_CHECK(t, n) _Static_assert(sizeof(t) == (n), #t " size")
DS_BLOCK_SIZE_CHECK(block_q4_0, 18);
DS_BLOCK_SIZE_CHECK(block_q4_1, 20);
DS_BLOCK_SIZE_CHECK(block_q5_0, 22);
DS_BLOCK_SIZE_CHECK(block_q5_1, 24);
DS_BLOCK_SIZE_CHECK(block_q8_0, 34);
DS_BLOCK_SIZE_CHECK(block_q8_1, 36);
DS_BLOCK_SIZE_CHECK(block_q2_K, 84);
DS_BLOCK_SIZE_CHECK(block_q3_K, 110);
DS_BLOCK_SIZE_CHECK(block_q4_K, 144);
DS_BLOCK_SIZE_CHECK(block_q5_K, 176);
DS_BLOCK_SIZE_CHECK(block_q6_K, 210);
DS_BLOCK_SIZE_CHECK(block_q8_K, 292);
DS_BLOCK_SIZE_CHECK(block_iq2_xxs, 66);
DS_BLOCK_SIZE_CHECK(block_iq2_xs, 74);
DS_BLOCK_SIZE_CHECK(block_iq2_s, 82);
DS_BLOCK_SIZE_CHECK(block_iq3_xxs, 98);
DS_BLOCK_SIZE_CHECK(block_iq3_s, 110);
DS_BLOCK_SIZE_CHECK(block_iq1_s, 50);
DS_BLOCK_SIZE_CHECK(block_iq1_m, 56);
DS_BLOCK_SIZE_CHECK(block_iq4_nl, 18);
DS_BLOCK_SIZE_CHECK(block_iq4_xs, 136);

#endif
