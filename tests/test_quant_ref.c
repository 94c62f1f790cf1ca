/* test_quant_ref.c: ds_dequantize_row against gguf-py's numpy dequantization
 * (tests/data/quant), bit for bit, for every type in INDEX.txt; plus type-table
 * consistency and sanity checks on the IQ tables. Not a speed test. */
#include "testutil.h"

#include "quant/iq_tables.h"
#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>

/* One INDEX.txt line: "Q4_0     block= 32 elems,  18 bytes; 64 blocks" */
typedef struct {
    char name[32];
    int block_elems, block_bytes;
} index_entry;

static int read_index(index_entry *out, int max) {
    size_t len = 0;
    char *txt = ds_test_read_file(ds_test_data("quant/INDEX.txt"), &len);
    if (!txt) return -1;
    txt = realloc(txt, len + 1);
    txt[len] = 0;
    int n = 0;
    for (char *line = strtok(txt, "\n"); line && n < max; line = strtok(NULL, "\n")) {
        index_entry e;
        if (sscanf(line, "%31s block=%d elems, %d bytes", e.name, &e.block_elems,
                   &e.block_bytes) == 3)
            out[n++] = e;
    }
    free(txt);
    return n;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Dequantizes TYPE.blocks and compares with TYPE.f32 bit for bit; no
 * tolerance, because none is needed: every product in these formats is exact
 * in float32 (see dequant.c), so the only rounding is the single min-term
 * add/subtract, which gguf-py also does once in float32. */
static void check_type(const index_entry *e, bool *seen) {
    char rel[96];
    int t = ds_type_from_name(e->name);
    CHECK(t >= 0, "INDEX type %s unknown to ds_type_from_name", e->name);
    if (t < 0) return;
    seen[t] = true;
    const ds_type_traits *tr = ds_type_info((uint32_t)t);
    CHECK(tr && tr->can_dequant, "%s: not marked can_dequant", e->name);
    CHECK(tr && tr->block_elems == e->block_elems && tr->block_bytes == e->block_bytes,
          "%s: traits %d elems/%d bytes, INDEX %d/%d", e->name, tr ? tr->block_elems : -1,
          tr ? tr->block_bytes : -1, e->block_elems, e->block_bytes);
    if (!tr || !tr->can_dequant) return;

    size_t blen = 0, flen = 0;
    snprintf(rel, sizeof rel, "quant/%.31s.blocks", e->name);
    void *blocks = ds_test_read_file(ds_test_data(rel), &blen);
    snprintf(rel, sizeof rel, "quant/%.31s.f32", e->name);
    float *want = ds_test_read_file(ds_test_data(rel), &flen);
    CHECK(blocks && want, "%s: cannot read fixture files", e->name);
    if (!blocks || !want) { free(blocks); free(want); return; }

    const int64_t n = (int64_t)(flen / sizeof(float));
    CHECK(flen % sizeof(float) == 0 && n % e->block_elems == 0, "%s: odd .f32 size %zu",
          e->name, flen);
    CHECK(ds_row_bytes((ds_type)t, n) == blen, "%s: ds_row_bytes(%lld) = %zu, file %zu",
          e->name, (long long)n, ds_row_bytes((ds_type)t, n), blen);
    CHECK(ds_row_bytes((ds_type)t, n + 1) == 0 || e->block_elems == 1,
          "%s: ds_row_bytes accepts a partial block", e->name);
    if (ds_row_bytes((ds_type)t, n) != blen) { free(blocks); free(want); return; }

    /* one guard float past the end catches a decoder that writes too far */
    float *got = malloc(((size_t)n + 1) * sizeof(float));
    const uint32_t guard = 0x7fc0dead;
    memcpy(&got[n], &guard, 4);
    ds_dequantize_row((ds_type)t, blocks, got, n);
    CHECK(f32_bits(got[n]) == guard, "%s: wrote past the end of the row", e->name);

    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (f32_bits(got[i]) != f32_bits(want[i]) && bad++ == 0) first = i;
    CHECK(bad == 0, "%s: %lld of %lld values differ; first at %lld: got %.9g (0x%08x), "
          "want %.9g (0x%08x)", e->name, (long long)bad, (long long)n, (long long)first,
          bad ? got[first] : 0.0, bad ? f32_bits(got[first]) : 0, bad ? want[first] : 0.0,
          bad ? f32_bits(want[first]) : 0);

    /* the same data decoded as two rows (first block, then the rest) must agree:
     * decoders keep no state across blocks */
    if (n > e->block_elems) {
        memset(got, 0, (size_t)n * sizeof(float));
        ds_dequantize_row((ds_type)t, blocks, got, e->block_elems);
        ds_dequantize_row((ds_type)t, (const char *)blocks + e->block_bytes,
                          got + e->block_elems, n - e->block_elems);
        int64_t bad2 = 0;
        for (int64_t i = 0; i < n; i++) bad2 += f32_bits(got[i]) != f32_bits(want[i]);
        CHECK(bad2 == 0, "%s: split rows: %lld values differ", e->name, (long long)bad2);
    }
    printf("  %-8s %6lld values: %s\n", e->name, (long long)n, bad ? "MISMATCH" : "exact");
    free(got);
    free(blocks);
    free(want);
}

/* f32 is a plain copy (no fixture: gguf-py's is a view) */
static void check_f32(void) {
    float src[5] = { 1.0f, -0.0f, 3.5e-41f, 1e30f, -2.25f }, dst[5];
    ds_dequantize_row(DS_TYPE_F32, src, dst, 5);
    CHECK(memcmp(src, dst, sizeof src) == 0, "f32 dequant is not a copy");
}

/* Level index of a grid byte, in level order (iq1: bytes -1, 0, 1). */
static int level_iq2(uint8_t b) { return b == 0x08 ? 0 : b == 0x19 ? 1 : b == 0x2b ? 2 : -1; }
static int level_iq1(uint8_t b) { return b == 0xff ? 0 : b == 0x00 ? 1 : b == 0x01 ? 2 : -1; }
static int level_iq3xxs(uint8_t b) {
    static const uint8_t lv[8] = { 0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3e };
    for (int i = 0; i < 8; i++) if (lv[i] == b) return i;
    return -1;
}
static int level_iq3s(uint8_t b) { return (b & 1) && b <= 15 ? b / 2 : -1; }

/* The published grids list their points sorted by the packed level indices
 * (element 0 least significant) without repeats, and the iq2 and iq3_xxs
 * points all have an even sum of level indices. Checking both catches a
 * damaged entry that the fixtures' random blocks happen not to reach. */
static void check_grid(const char *name, const void *grid, int n, int elems,
                       int (*level)(uint8_t), bool even_sum) {
    const uint8_t *g = grid; /* entries are little-endian u64/u32 */
    uint32_t prev = 0;
    int bad_level = 0, bad_order = 0, bad_sum = 0;
    for (int i = 0; i < n; i++) {
        uint32_t key = 0;
        int sum = 0;
        for (int k = elems - 1; k >= 0; k--) {
            int l = level(g[i * elems + k]);
            if (l < 0) { bad_level++; l = 0; }
            key = key * 8 + (uint32_t)l;
            sum += l;
        }
        if (i > 0 && key <= prev) bad_order++;
        if (even_sum && sum % 2) bad_sum++;
        prev = key;
    }
    CHECK(bad_level == 0 && bad_order == 0 && bad_sum == 0,
          "%s grid: %d bad levels, %d out of order, %d odd sums", name, bad_level, bad_order,
          bad_sum);
}

static void check_tables(void) {
    check_grid("iq2_xxs", ds_iq2xxs_grid, 256, 8, level_iq2, true);
    check_grid("iq2_xs", ds_iq2xs_grid, 512, 8, level_iq2, true);
    check_grid("iq2_s", ds_iq2s_grid, 1024, 8, level_iq2, true);
    check_grid("iq3_xxs", ds_iq3xxs_grid, 256, 4, level_iq3xxs, true);
    check_grid("iq3_s", ds_iq3s_grid, 512, 4, level_iq3s, false);
    check_grid("iq1_s", ds_iq1s_grid, 2048, 8, level_iq1, false);
    int bad = 0;
    for (int i = 0; i < 128; i++)
        bad += (ds_iq2_signs[i] & 0x7f) != i || __builtin_popcount(ds_iq2_signs[i]) % 2;
    CHECK(bad == 0, "iq2 sign table: %d entries wrong", bad);
    /* spot values of the sign table as published: 1 -> 0x81, 3 -> 0x03, 127 -> 0xff */
    CHECK(ds_iq2_signs[1] == 0x81 && ds_iq2_signs[3] == 0x03 && ds_iq2_signs[127] == 0xff,
          "iq2 sign table spot values");
}

int main(void) {
    index_entry idx[64];
    int n = read_index(idx, 64);
    CHECK(n > 0, "cannot read %s", ds_test_data("quant/INDEX.txt"));
    bool seen[DS_TYPE_COUNT] = { 0 };
    for (int i = 0; i < n; i++) check_type(&idx[i], seen);
    /* every type we claim to decode has a fixture (f32 is checked as a copy) */
    for (int t = 0; t < DS_TYPE_COUNT; t++) {
        const ds_type_traits *tr = ds_type_info((uint32_t)t);
        if (tr && tr->can_dequant && t != DS_TYPE_F32)
            CHECK(seen[t], "%s is can_dequant but has no fixture in INDEX.txt", tr->name);
    }
    check_f32();
    check_tables();
    return ds_test_finish("test_quant_ref");
}
