/* types.c: the ggml type table (names, block geometry, activation format). */
#include "quant.h"
#include "blocks.h"

#include <strings.h>

#define T(id, nm, be, bb, dq, act) [id] = { nm, be, bb, dq, act }
static const ds_type_traits g_traits[DS_TYPE_COUNT] = {
    T(DS_TYPE_F32, "f32", 1, 4, true, DS_TYPE_F32),
    T(DS_TYPE_F16, "f16", 1, 2, true, DS_TYPE_F32),
    T(DS_TYPE_BF16, "bf16", 1, 2, true, DS_TYPE_F32),
    T(DS_TYPE_Q4_0, "q4_0", QK4_0, sizeof(block_q4_0), true, DS_TYPE_Q8_0),
    T(DS_TYPE_Q4_1, "q4_1", QK4_1, sizeof(block_q4_1), true, DS_TYPE_Q8_1),
    T(DS_TYPE_Q5_0, "q5_0", QK5_0, sizeof(block_q5_0), true, DS_TYPE_Q8_0),
    T(DS_TYPE_Q5_1, "q5_1", QK5_1, sizeof(block_q5_1), true, DS_TYPE_Q8_1),
    T(DS_TYPE_Q8_0, "q8_0", QK8_0, sizeof(block_q8_0), true, DS_TYPE_Q8_0),
    T(DS_TYPE_Q8_1, "q8_1", QK8_1, sizeof(block_q8_1), false, DS_TYPE_Q8_1),
    T(DS_TYPE_Q2_K, "q2_K", QK_K, sizeof(block_q2_K), true, DS_TYPE_Q8_K),
    T(DS_TYPE_Q3_K, "q3_K", QK_K, sizeof(block_q3_K), true, DS_TYPE_Q8_K),
    T(DS_TYPE_Q4_K, "q4_K", QK_K, sizeof(block_q4_K), true, DS_TYPE_Q8_K),
    T(DS_TYPE_Q5_K, "q5_K", QK_K, sizeof(block_q5_K), true, DS_TYPE_Q8_K),
    T(DS_TYPE_Q6_K, "q6_K", QK_K, sizeof(block_q6_K), true, DS_TYPE_Q8_K),
    T(DS_TYPE_Q8_K, "q8_K", QK_K, sizeof(block_q8_K), false, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ2_XXS, "iq2_xxs", QK_K, sizeof(block_iq2_xxs), true, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ2_XS, "iq2_xs", QK_K, sizeof(block_iq2_xs), true, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ2_S, "iq2_s", QK_K, sizeof(block_iq2_s), true, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ3_XXS, "iq3_xxs", QK_K, sizeof(block_iq3_xxs), true, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ3_S, "iq3_s", QK_K, sizeof(block_iq3_s), true, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ1_S, "iq1_s", QK_K, sizeof(block_iq1_s), true, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ1_M, "iq1_m", QK_K, sizeof(block_iq1_m), true, DS_TYPE_Q8_K),
    T(DS_TYPE_IQ4_NL, "iq4_nl", QK4_NL, sizeof(block_iq4_nl), true, DS_TYPE_Q8_0),
    T(DS_TYPE_IQ4_XS, "iq4_xs", QK_K, sizeof(block_iq4_xs), true, DS_TYPE_Q8_K),
    /* integer / f64 types: sizes known so files with them parse, not readable as weights */
    T(DS_TYPE_I8, "i8", 1, 1, false, DS_TYPE_F32),
    T(DS_TYPE_I16, "i16", 1, 2, false, DS_TYPE_F32),
    T(DS_TYPE_I32, "i32", 1, 4, false, DS_TYPE_F32),
    T(DS_TYPE_I64, "i64", 1, 8, false, DS_TYPE_F32),
    T(DS_TYPE_F64, "f64", 1, 8, false, DS_TYPE_F32),
};
#undef T

const ds_type_traits *ds_type_info(uint32_t type) {
    if (type >= DS_TYPE_COUNT || !g_traits[type].name) return NULL;
    return &g_traits[type];
}

int ds_type_from_name(const char *name) {
    for (int i = 0; i < DS_TYPE_COUNT; i++)
        if (g_traits[i].name && strcasecmp(g_traits[i].name, name) == 0) return i;
    return -1;
}

size_t ds_row_bytes(ds_type t, int64_t n) {
    const ds_type_traits *tr = ds_type_info(t);
    if (!tr || n < 0 || n % tr->block_elems) return 0;
    return (size_t)(n / tr->block_elems) * (size_t)tr->block_bytes;
}
