/* test_gguf.c: the GGUF reader and writer: roundtrips of every value type and
 * several tensor types, split sets, hand-made malformed files, truncation at
 * every length, byte mutations of all metadata, --override-kv, the fixtures.
 * Not a model test: nothing here knows deepseek2 beyond the architecture key.
 * With DS_GGUF_WRITE_SEEDS=<dir> it also writes the fuzz seed corpus there. */
#include "testutil.h"
#include "gguf/gguf.h"
#include "gguf/gguf_internal.h"
#include "quant/quant.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t g_rng = 12345;

static bool str_eq(ds_gguf_str s, const char *lit) {
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

static bool msg_has(const ds_error *e, const char *sub) { return strstr(e->msg, sub) != NULL; }

/* ---- a writer with one key of every type and a mix of tensors ------------- */

typedef struct tensor_spec {
    const char *name;
    ds_type type;
    uint32_t n_dims;
    int64_t ne[4];
} tensor_spec;

static const tensor_spec k_tensors[] = {
    { "tok.f32", DS_TYPE_F32, 2, { 7, 3 } },
    { "vec.f16", DS_TYPE_F16, 1, { 16 } },
    { "blk.0.q4_0", DS_TYPE_Q4_0, 2, { 64, 2 } },
    { "blk.0.q8_0", DS_TYPE_Q8_0, 3, { 32, 1, 2 } },
    { "blk.1.q4_K", DS_TYPE_Q4_K, 2, { 256, 2 } },
    { "blk.1.bf16", DS_TYPE_BF16, 4, { 5, 1, 1, 2 } },
    { "blk.2.iq4_xs", DS_TYPE_IQ4_XS, 1, { 256 } },
    { "blk.2.q6_K", DS_TYPE_Q6_K, 2, { 256, 3 } },
};
#define N_TENSORS (int)(sizeof k_tensors / sizeof k_tensors[0])

static uint8_t *g_data[N_TENSORS]; /* random bytes for each tensor */

static uint64_t spec_bytes(const tensor_spec *s) {
    uint64_t n = ds_row_bytes(s->type, s->ne[0]);
    for (uint32_t d = 1; d < s->n_dims; d++) n *= (uint64_t)s->ne[d];
    return n;
}

static void make_data(void) {
    for (int i = 0; i < N_TENSORS; i++) {
        uint64_t n = spec_bytes(&k_tensors[i]);
        g_data[i] = malloc(n);
        for (uint64_t j = 0; j < n; j++) g_data[i][j] = (uint8_t)ds_test_rand(&g_rng);
    }
}

static const uint8_t k_u8s[] = { 0, 1, 255 };
static const int32_t k_i32s[] = { -7, 0, 2147483647 };
static const float k_f32s[] = { 1.5f, -0.25f };
static const bool k_bools[] = { true, false, true };
static const uint64_t k_u64s[] = { 1ull << 40 };
static const double k_f64s[] = { 3.25, -1e300 };
static const char *const k_strs[] = { "hello", "", "w\xc3\xb6rld" };

static void set_scalar(ds_gguf_writer *w, const char *key, ds_gguf_value v) {
    CHECK(ds_gguf_writer_set_value(w, key, &v) == DS_OK, "set %s", key);
}

/* Every key type plus the given tensors (n of k_tensors). */
static ds_gguf_writer *make_writer(int n_tensors) {
    ds_gguf_writer *w = ds_gguf_writer_create();
    CHECK(w != NULL, "writer_create");
    ds_gguf_writer_set_str(w, "general.architecture", "deepseek2");
    ds_gguf_writer_set_u32(w, "t.u32", 0); /* replaced below: must keep its place */
    set_scalar(w, "t.u8", (ds_gguf_value){ .type = DS_GGUF_U8, .u64 = 200 });
    set_scalar(w, "t.i8", (ds_gguf_value){ .type = DS_GGUF_I8, .i64 = -100 });
    set_scalar(w, "t.u16", (ds_gguf_value){ .type = DS_GGUF_U16, .u64 = 65535 });
    set_scalar(w, "t.i16", (ds_gguf_value){ .type = DS_GGUF_I16, .i64 = -32768 });
    ds_gguf_writer_set_i32(w, "t.i32", -123456);
    ds_gguf_writer_set_f32(w, "t.f32", 0.1f);
    ds_gguf_writer_set_bool(w, "t.bool", true);
    ds_gguf_writer_set_u64(w, "t.u64", 0xfedcba9876543210ull);
    set_scalar(w, "t.i64", (ds_gguf_value){ .type = DS_GGUF_I64, .i64 = INT64_MIN });
    set_scalar(w, "t.f64", (ds_gguf_value){ .type = DS_GGUF_F64, .f64 = 1e-300 });
    ds_gguf_writer_set_u32(w, "t.u32", 4000000000u);
    ds_gguf_writer_set_arr(w, "a.u8", DS_GGUF_U8, k_u8s, 3);
    ds_gguf_writer_set_arr(w, "a.i32", DS_GGUF_I32, k_i32s, 3);
    ds_gguf_writer_set_arr(w, "a.f32", DS_GGUF_F32, k_f32s, 2);
    ds_gguf_writer_set_arr(w, "a.bool", DS_GGUF_BOOL, k_bools, 3);
    ds_gguf_writer_set_arr(w, "a.u64", DS_GGUF_U64, k_u64s, 1);
    ds_gguf_writer_set_arr(w, "a.f64", DS_GGUF_F64, k_f64s, 2);
    ds_gguf_writer_set_arr(w, "a.empty", DS_GGUF_I16, NULL, 0);
    ds_gguf_writer_set_str_arr(w, "a.str", k_strs, NULL, 3);
    CHECK(ds_gguf_writer_set_arr(w, "a.bad", DS_GGUF_STR, NULL, 0) == DS_ERR_INVALID_ARG, "str via set_arr");
    CHECK(ds_gguf_writer_set_arr(w, "a.bad", DS_GGUF_U8, NULL, 2) == DS_ERR_INVALID_ARG, "NULL data");
    CHECK(ds_gguf_writer_set_value(w, "a.bad", &(ds_gguf_value){ .type = (ds_gguf_vtype)13 }) ==
          DS_ERR_INVALID_ARG, "unknown type");
    for (int i = 0; i < n_tensors; i++) {
        const tensor_spec *s = &k_tensors[i];
        ds_status st = ds_gguf_writer_add_tensor(w, s->name, s->type, s->n_dims, s->ne,
                                                 g_data[i], spec_bytes(s));
        CHECK(st == DS_OK, "add_tensor %s", s->name);
    }
    return w;
}

static const char *k_key_order[] = { "general.architecture", "t.u32", "t.u8", "t.i8", "t.u16",
                                     "t.i16", "t.i32", "t.f32", "t.bool", "t.u64", "t.i64",
                                     "t.f64", "a.u8", "a.i32", "a.f32", "a.bool", "a.u64",
                                     "a.f64", "a.empty", "a.str" };
#define N_KEYS (int)(sizeof k_key_order / sizeof k_key_order[0])

/* The keys make_writer set, with their values and the getters' conversions. */
static void check_keys(const ds_gguf *g) {
    CHECK(ds_gguf_n_kv(g) >= N_KEYS, "n_kv %lld", (long long)ds_gguf_n_kv(g));
    for (int i = 0; i < N_KEYS && i < ds_gguf_n_kv(g); i++)
        CHECK(str_eq(ds_gguf_kv_at(g, i)->key, k_key_order[i]), "key order at %d", i);
    const ds_gguf_value *v;
    int64_t i64 = 0;
    uint32_t u32 = 0;
    float f = 0;
    bool b = false;
    char buf[64];
    CHECK(ds_gguf_get_str(g, "general.architecture", buf, sizeof buf) && !strcmp(buf, "deepseek2"), "arch");
    CHECK(ds_gguf_get_str(g, "general.architecture", buf, 5) && !strcmp(buf, "deep"), "truncated str");
    CHECK(!ds_gguf_get_str(g, "t.u8", buf, sizeof buf), "str of u8");
    CHECK((v = ds_gguf_find(g, "t.u8")) && v->type == DS_GGUF_U8 && v->u64 == 200, "u8");
    CHECK((v = ds_gguf_find(g, "t.i8")) && v->type == DS_GGUF_I8 && v->i64 == -100, "i8");
    CHECK((v = ds_gguf_find(g, "t.u16")) && v->type == DS_GGUF_U16 && v->u64 == 65535, "u16");
    CHECK((v = ds_gguf_find(g, "t.i16")) && v->type == DS_GGUF_I16 && v->i64 == -32768, "i16");
    CHECK((v = ds_gguf_find(g, "t.u32")) && v->type == DS_GGUF_U32 && v->u64 == 4000000000u, "u32");
    CHECK((v = ds_gguf_find(g, "t.i32")) && v->type == DS_GGUF_I32 && v->i64 == -123456, "i32");
    CHECK((v = ds_gguf_find(g, "t.f32")) && v->type == DS_GGUF_F32 && v->f64 == (double)0.1f, "f32");
    CHECK((v = ds_gguf_find(g, "t.bool")) && v->type == DS_GGUF_BOOL && v->b, "bool");
    CHECK((v = ds_gguf_find(g, "t.u64")) && v->type == DS_GGUF_U64 && v->u64 == 0xfedcba9876543210ull, "u64");
    CHECK((v = ds_gguf_find(g, "t.i64")) && v->type == DS_GGUF_I64 && v->i64 == INT64_MIN, "i64");
    CHECK((v = ds_gguf_find(g, "t.f64")) && v->type == DS_GGUF_F64 && v->f64 == 1e-300, "f64");
    CHECK(ds_gguf_find(g, "t.nope") == NULL, "absent key");
    /* getters: lossless conversions only */
    CHECK(ds_gguf_get_i64(g, "t.u8", &i64) && i64 == 200, "i64 of u8");
    CHECK(ds_gguf_get_i64(g, "t.i64", &i64) && i64 == INT64_MIN, "i64 of i64");
    CHECK(!ds_gguf_get_i64(g, "t.u64", &i64), "u64 > INT64_MAX");
    CHECK(!ds_gguf_get_i64(g, "t.f32", &i64), "i64 of f32");
    CHECK(ds_gguf_get_u32(g, "t.u32", &u32) && u32 == 4000000000u, "u32 of u32");
    CHECK(ds_gguf_get_u32(g, "t.u16", &u32) && u32 == 65535, "u32 of u16");
    CHECK(!ds_gguf_get_u32(g, "t.i32", &u32), "u32 of negative");
    CHECK(!ds_gguf_get_u32(g, "t.u64", &u32), "u32 of big u64");
    CHECK(ds_gguf_get_f32(g, "t.f32", &f) && f == 0.1f, "f32");
    CHECK(ds_gguf_get_f32(g, "t.f64", &f), "f32 of f64");
    CHECK(!ds_gguf_get_f32(g, "t.i32", &f), "f32 of int");
    CHECK(ds_gguf_get_bool(g, "t.bool", &b) && b, "bool");
    CHECK(!ds_gguf_get_bool(g, "t.u8", &b), "bool of u8");
    /* arrays */
    CHECK((v = ds_gguf_get_arr(g, "a.u8", DS_GGUF_U8)) && v->arr.n == 3 &&
          !memcmp(v->arr.data, k_u8s, 3), "arr u8");
    CHECK(ds_gguf_get_arr(g, "a.u8", DS_GGUF_I8) == NULL, "arr type mismatch");
    CHECK(ds_gguf_get_arr(g, "a.u8", -1) != NULL, "arr any");
    CHECK(ds_gguf_get_arr(g, "t.u8", -1) == NULL, "scalar is not arr");
    CHECK((v = ds_gguf_get_arr(g, "a.i32", DS_GGUF_I32)) && v->arr.n == 3 &&
          !memcmp(v->arr.data, k_i32s, sizeof k_i32s), "arr i32");
    CHECK((v = ds_gguf_get_arr(g, "a.f32", DS_GGUF_F32)) && v->arr.n == 2 &&
          !memcmp(v->arr.data, k_f32s, sizeof k_f32s), "arr f32");
    CHECK((v = ds_gguf_get_arr(g, "a.bool", DS_GGUF_BOOL)) && v->arr.n == 3 &&
          ((const uint8_t *)v->arr.data)[0] == 1 && ((const uint8_t *)v->arr.data)[1] == 0, "arr bool");
    CHECK((v = ds_gguf_get_arr(g, "a.u64", DS_GGUF_U64)) && v->arr.n == 1 &&
          !memcmp(v->arr.data, k_u64s, 8), "arr u64");
    CHECK((v = ds_gguf_get_arr(g, "a.f64", DS_GGUF_F64)) && v->arr.n == 2 &&
          !memcmp(v->arr.data, k_f64s, 16), "arr f64");
    CHECK((v = ds_gguf_get_arr(g, "a.empty", DS_GGUF_I16)) && v->arr.n == 0, "arr empty");
    CHECK((v = ds_gguf_get_arr(g, "a.str", DS_GGUF_STR)) && v->arr.n == 3 && v->arr.strs &&
          str_eq(v->arr.strs[0], "hello") && v->arr.strs[1].len == 0 &&
          str_eq(v->arr.strs[2], k_strs[2]), "arr str");
}

/* Tensors 0..n-1 of k_tensors with their data; all inside their shard. */
static void check_tensors(const ds_gguf *g, int n) {
    CHECK(ds_gguf_n_tensors(g) == n, "n_tensors %lld != %d", (long long)ds_gguf_n_tensors(g), n);
    for (int i = 0; i < n && i < ds_gguf_n_tensors(g); i++) {
        const tensor_spec *s = &k_tensors[i];
        const ds_gguf_tensor *t = ds_gguf_tensor_at(g, i);
        CHECK(str_eq(t->name, s->name), "tensor %d name", i);
        CHECK(ds_gguf_find_tensor(g, s->name) == t, "find_tensor %s", s->name);
        CHECK(t->type == (uint32_t)s->type && t->n_dims == s->n_dims, "%s type/dims", s->name);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == (d < (int)s->n_dims ? s->ne[d] : 1), "%s ne[%d]", s->name, d);
        CHECK(t->nbytes == spec_bytes(s), "%s nbytes", s->name);
        CHECK(t->nbytes && !memcmp(t->data, g_data[i], t->nbytes), "%s data", s->name);
        CHECK(t->offset % 32 == 0, "%s offset aligned", s->name);
        const ds_gguf_shard *sh = &g->shards[t->shard];
        CHECK(t->data >= sh->buf && t->data + t->nbytes <= sh->buf + sh->len, "%s in file", s->name);
    }
    CHECK(ds_gguf_find_tensor(g, "nope") == NULL, "absent tensor");
    CHECK(ds_gguf_tensor_at(g, -1) == NULL && ds_gguf_tensor_at(g, n) == NULL, "tensor_at range");
}

static void test_roundtrip(void) {
    ds_error err = { 0 };
    ds_gguf_writer *w = make_writer(N_TENSORS);
    const char *path = ds_test_tmp("gguf_roundtrip.gguf");
    CHECK(ds_gguf_writer_write(w, path, &err) == DS_OK, "write: %s", err.msg);
    ds_gguf_writer_free(w);

    ds_gguf *g = NULL;
    CHECK(ds_gguf_open(path, &g, &err) == DS_OK, "open: %s", err.msg);
    if (!g) return;
    CHECK(ds_gguf_version(g) == 3 && ds_gguf_n_shards(g) == 1, "version/shards");
    CHECK(ds_gguf_n_kv(g) == N_KEYS, "n_kv %lld", (long long)ds_gguf_n_kv(g));
    check_keys(g);
    check_tensors(g, N_TENSORS);

    /* copy_kv + re-add tensors gives an identical file */
    ds_gguf_writer *w2 = ds_gguf_writer_create();
    CHECK(ds_gguf_writer_copy_kv(w2, g) == DS_OK, "copy_kv");
    for (int64_t i = 0; i < ds_gguf_n_tensors(g); i++) {
        const ds_gguf_tensor *t = ds_gguf_tensor_at(g, i);
        CHECK(ds_gguf_writer_add_tensor(w2, k_tensors[i].name, t->type, t->n_dims, t->ne,
                                        t->data, t->nbytes) == DS_OK, "re-add");
    }
    const char *path2 = ds_test_tmp("gguf_roundtrip2.gguf");
    CHECK(ds_gguf_writer_write(w2, path2, &err) == DS_OK, "rewrite: %s", err.msg);
    ds_gguf_writer_free(w2);
    size_t n1, n2;
    uint8_t *b1 = ds_test_read_file(path, &n1), *b2 = ds_test_read_file(path2, &n2);
    CHECK(b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1), "rewrite is byte-identical");
    CHECK(ds_gguf_total_bytes(g) == n1, "total_bytes");
    ds_gguf_close(g);

    /* the same bytes through open_memory; then as v2 */
    CHECK(ds_gguf_open_memory(b1, n1, "mem", &g, &err) == DS_OK, "open_memory: %s", err.msg);
    if (g) { check_keys(g); check_tensors(g, N_TENSORS); ds_gguf_close(g); }
    b1[4] = 2;
    CHECK(ds_gguf_open_memory(b1, n1, "v2", &g, &err) == DS_OK, "v2: %s", err.msg);
    if (g) { CHECK(ds_gguf_version(g) == 2, "v2 version"); ds_gguf_close(g); }
    b1[4] = 1;
    CHECK(ds_gguf_open_memory(b1, n1, "v1", &g, &err) == DS_ERR_FORMAT && msg_has(&err, "v1"),
          "v1 rejected: %s", err.msg);
    b1[4] = 0; b1[7] = 3;
    CHECK(ds_gguf_open_memory(b1, n1, "be", &g, &err) == DS_ERR_FORMAT && msg_has(&err, "big-endian"),
          "big-endian rejected: %s", err.msg);
    free(b1);
    free(b2);

    CHECK(ds_gguf_open(ds_test_tmp("does-not-exist.gguf"), &g, &err) == DS_ERR_NOT_FOUND &&
          g == NULL && msg_has(&err, "does-not-exist.gguf"), "missing file: %s", err.msg);
}

/* Writer argument checks and a non-default alignment. */
static void test_writer_args(void) {
    ds_error err = { 0 };
    ds_gguf_writer *w = ds_gguf_writer_create();
    int64_t ne[2] = { 64, 2 };
    uint8_t buf[256] = { 0 };
    CHECK(ds_gguf_writer_add_tensor(w, "a", DS_TYPE_Q4_0, 2, ne, buf, 71) == DS_ERR_INVALID_ARG, "bad nbytes");
    CHECK(ds_gguf_writer_add_tensor(w, "a", DS_TYPE_Q4_0, 2, ne, buf, 72) == DS_OK, "good");
    CHECK(ds_gguf_writer_add_tensor(w, "a", DS_TYPE_Q4_0, 2, ne, buf, 72) == DS_ERR_INVALID_ARG, "dup");
    ne[0] = 48;
    CHECK(ds_gguf_writer_add_tensor(w, "b", DS_TYPE_Q4_0, 2, ne, buf, 54) == DS_ERR_INVALID_ARG, "ne0 %% block");
    CHECK(ds_gguf_writer_add_tensor(w, "b", 4, 1, ne, buf, 0) == DS_ERR_INVALID_ARG, "unknown type");
    CHECK(ds_gguf_writer_add_tensor(w, "b", DS_TYPE_F32, 5, ne, buf, 0) == DS_ERR_INVALID_ARG, "n_dims 5");
    ne[0] = 3;
    CHECK(ds_gguf_writer_add_tensor(w, "c", DS_TYPE_F32, 1, ne, buf, 12) == DS_OK, "f32");
    ds_gguf_writer_set_u32(w, "general.alignment", 3);
    CHECK(ds_gguf_writer_write(w, ds_test_tmp("gguf_align.gguf"), &err) == DS_ERR_INVALID_ARG,
          "alignment 3 rejected");
    ds_gguf_writer_set_u32(w, "general.alignment", 64);
    CHECK(ds_gguf_writer_write(w, ds_test_tmp("gguf_align.gguf"), &err) == DS_OK, "align 64: %s", err.msg);
    ds_gguf *g = NULL;
    CHECK(ds_gguf_open(ds_test_tmp("gguf_align.gguf"), &g, &err) == DS_OK, "open align 64: %s", err.msg);
    if (g) {
        CHECK(ds_gguf_n_tensors(g) == 2 && ds_gguf_tensor_at(g, 1)->offset == 128, "64-aligned offsets");
        CHECK(((uintptr_t)ds_gguf_tensor_at(g, 0)->data & 63) == 0, "data 64-aligned");
        ds_gguf_close(g);
    }
    CHECK(ds_gguf_writer_write_split(w, ds_test_tmp("gguf_x"), 3, &err) == DS_ERR_INVALID_ARG,
          "more shards than tensors");
    ds_gguf_writer_free(w);
}

static void test_split(void) {
    ds_error err = { 0 };
    ds_gguf_writer *w = make_writer(N_TENSORS);
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "%s", ds_test_tmp("gguf_split"));
    CHECK(ds_gguf_writer_write_split(w, prefix, 3, &err) == DS_OK, "write_split: %s", err.msg);
    ds_gguf_writer_free(w);
    char p1[1100], p2[1100], p3[1100];
    snprintf(p1, sizeof p1, "%s-00001-of-00003.gguf", prefix);
    snprintf(p2, sizeof p2, "%s-00002-of-00003.gguf", prefix);
    snprintf(p3, sizeof p3, "%s-00003-of-00003.gguf", prefix);

    ds_gguf *g = NULL;
    CHECK(ds_gguf_open(p1, &g, &err) == DS_OK, "open split: %s", err.msg);
    if (g) {
        CHECK(ds_gguf_n_shards(g) == 3, "3 shards");
        check_keys(g);
        check_tensors(g, N_TENSORS);
        uint32_t no = 9, cnt = 0;
        int64_t total = 0;
        CHECK(ds_gguf_get_u32(g, "split.no", &no) && no == 0, "split.no");
        CHECK(ds_gguf_get_u32(g, "split.count", &cnt) && cnt == 3, "split.count");
        CHECK(ds_gguf_get_i64(g, "split.tensors.count", &total) && total == N_TENSORS, "split.tensors.count");
        int per[3] = { 0 };
        for (int64_t i = 0; i < ds_gguf_n_tensors(g); i++) {
            int s = ds_gguf_tensor_at(g, i)->shard;
            CHECK(s >= 0 && s < 3, "shard index");
            if (s >= 0 && s < 3) per[s]++;
            if (i) CHECK(s >= ds_gguf_tensor_at(g, i - 1)->shard, "tensors in order");
        }
        CHECK(per[0] && per[1] && per[2], "every shard has tensors (%d %d %d)", per[0], per[1], per[2]);
        size_t a, b, c;
        free(ds_test_read_file(p1, &a)); free(ds_test_read_file(p2, &b)); free(ds_test_read_file(p3, &c));
        CHECK(ds_gguf_total_bytes(g) == a + b + c, "total bytes");

        /* re-merge through copy_kv: split keys must not leak into a single file */
        ds_gguf_writer *w2 = ds_gguf_writer_create();
        ds_gguf_writer_copy_kv(w2, g);
        for (int64_t i = 0; i < ds_gguf_n_tensors(g); i++) {
            const ds_gguf_tensor *t = ds_gguf_tensor_at(g, i);
            ds_gguf_writer_add_tensor(w2, k_tensors[i].name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
        }
        CHECK(ds_gguf_writer_write(w2, ds_test_tmp("gguf_merged.gguf"), &err) == DS_OK, "merge: %s", err.msg);
        ds_gguf_writer_free(w2);
        ds_gguf_close(g);
        g = NULL;
        CHECK(ds_gguf_open(ds_test_tmp("gguf_merged.gguf"), &g, &err) == DS_OK, "open merged: %s", err.msg);
        if (g) {
            CHECK(ds_gguf_find(g, "split.count") == NULL, "no split keys in merged file");
            check_tensors(g, N_TENSORS);
            ds_gguf_close(g);
        }
    }
    g = NULL;
    CHECK(ds_gguf_open(p2, &g, &err) == DS_ERR_INVALID_ARG && g == NULL &&
          msg_has(&err, "-00001-of-00003.gguf") && msg_has(&err, "first shard"),
          "open shard 2: %s", err.msg);
    /* a lone first shard in memory is incomplete */
    size_t n;
    uint8_t *b = ds_test_read_file(p1, &n);
    CHECK(ds_gguf_open_memory(b, n, "shard1", &g, &err) != DS_OK && g == NULL, "first shard in memory");
    free(b);
    /* wrong split.no in shard 3: put shard 2 in its place */
    b = ds_test_read_file(p3, &n);
    size_t n2;
    uint8_t *b2 = ds_test_read_file(p2, &n2);
    FILE *f = fopen(p3, "wb");
    fwrite(b2, 1, n2, f);
    fclose(f);
    CHECK(ds_gguf_open(p1, &g, &err) != DS_OK && g == NULL && msg_has(&err, "split.no"),
          "shard 3 holds shard 2: %s", err.msg);
    f = fopen(p3, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    free(b);
    free(b2);
    CHECK(ds_gguf_open(p1, &g, &err) == DS_OK, "restored: %s", err.msg);
    ds_gguf_close(g);
    g = NULL;
    unlink(p3);
    CHECK(ds_gguf_open(p1, &g, &err) == DS_ERR_NOT_FOUND && g == NULL &&
          msg_has(&err, "gguf_split-00003-of-00003.gguf") && msg_has(&err, "missing"),
          "missing shard: %s", err.msg);
}

/* ---- hand-made malformed files ------------------------------------------------ */

typedef struct tb { uint8_t b[1024]; size_t n; } tb;
static void tb_put(tb *t, const void *p, size_t n) { memcpy(t->b + t->n, p, n); t->n += n; }
static void tb_u32(tb *t, uint32_t v) { tb_put(t, &v, 4); }
static void tb_u64(tb *t, uint64_t v) { tb_put(t, &v, 8); }
static void tb_str(tb *t, const char *s) { tb_u64(t, strlen(s)); tb_put(t, s, strlen(s)); }
static void tb_head(tb *t, uint64_t n_t, uint64_t n_kv) {
    t->n = 0;
    tb_put(t, "GGUF", 4); tb_u32(t, 3); tb_u64(t, n_t); tb_u64(t, n_kv);
}
/* tensor info: name, 1..4 dims, type, offset */
static void tb_tensor(tb *t, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    tb_str(t, name); tb_u32(t, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) tb_u64(t, ne[d]);
    tb_u32(t, type); tb_u64(t, off);
}
static void tb_pad(tb *t, size_t total) { while (t->n < total) t->b[t->n++] = 0; }

/* Opens t from an exact-size copy; expects failure with sub in the message. */
static void expect_fail(const tb *t, const char *what, const char *sub) {
    uint8_t *c = malloc(t->n);
    memcpy(c, t->b, t->n);
    ds_gguf *g = NULL;
    ds_error err = { 0 };
    ds_status st = ds_gguf_open_memory(c, t->n, "bad", &g, &err);
    CHECK(st != DS_OK && g == NULL && msg_has(&err, sub) && msg_has(&err, "bad: ") &&
          msg_has(&err, "at offset"), "%s: status %d, message '%s' (want '%s')", what, st, err.msg, sub);
    ds_gguf_close(g);
    free(c);
}

static void test_malformed(void) {
    tb t;
    uint64_t ne1[1] = { 32 }, ne5[5] = { 1, 1, 1, 1, 1 };
    tb_head(&t, 0, 0); t.b[0] = 'X';
    expect_fail(&t, "magic", "magic");
    tb_head(&t, 0, 1); tb_str(&t, "k"); tb_u32(&t, 13); tb_u32(&t, 0);
    expect_fail(&t, "unknown value type", "unknown value type 13");
    tb_head(&t, 0, 1); tb_str(&t, "k"); tb_u32(&t, DS_GGUF_ARR); tb_u32(&t, DS_GGUF_ARR); tb_u64(&t, 0);
    expect_fail(&t, "nested array", "nested");
    tb_head(&t, 0, 1); tb_str(&t, "k"); tb_u32(&t, DS_GGUF_ARR); tb_u32(&t, DS_GGUF_U32); tb_u64(&t, 1ull << 62);
    expect_fail(&t, "huge array", "array count");
    tb_head(&t, 0, 1); tb_str(&t, "k"); tb_u32(&t, DS_GGUF_ARR); tb_u32(&t, DS_GGUF_STR); tb_u64(&t, 1000);
    expect_fail(&t, "huge str array", "array count");
    tb_head(&t, 0, 1); tb_str(&t, "k"); tb_u32(&t, DS_GGUF_BOOL); t.b[t.n++] = 2;
    expect_fail(&t, "bool 2", "not 0 or 1");
    tb_head(&t, 0, 2); tb_str(&t, "k"); tb_u32(&t, DS_GGUF_U8); t.b[t.n++] = 1;
    tb_str(&t, "k"); tb_u32(&t, DS_GGUF_U8); t.b[t.n++] = 1;
    expect_fail(&t, "duplicate key", "duplicate key");
    tb_head(&t, 0, 1); tb_str(&t, "general.alignment"); tb_u32(&t, DS_GGUF_U32); tb_u32(&t, 48);
    expect_fail(&t, "alignment 48", "power of two");
    tb_head(&t, 0, 1); tb_str(&t, "general.alignment"); tb_u32(&t, DS_GGUF_U64); tb_u64(&t, 32);
    expect_fail(&t, "alignment u64", "must be u32");
    tb_head(&t, 0, 1); tb_str(&t, "split.count"); tb_u32(&t, DS_GGUF_I32); tb_u32(&t, (uint32_t)-1);
    expect_fail(&t, "split.count -1", "split.count");
    tb_head(&t, 0, 1); t.b[t.n++] = 0xff;
    expect_fail(&t, "key count vs bytes", "kv count");
    tb_head(&t, 1000, 0); tb_pad(&t, 100);
    expect_fail(&t, "tensor count vs bytes", "tensor count");
    tb_head(&t, 1, 0); tb_tensor(&t, "t", 5, ne5, 0, 0); tb_pad(&t, 200);
    expect_fail(&t, "n_dims 5", "n_dims");
    tb_head(&t, 1, 0); tb_tensor(&t, "t", 1, ne1, 4, 0); tb_pad(&t, 200);
    expect_fail(&t, "type 4", "unknown ggml type id 4");
    tb_head(&t, 1, 0); tb_tensor(&t, "t", 1, (uint64_t[]){ 48 }, DS_TYPE_Q4_0, 0); tb_pad(&t, 200);
    expect_fail(&t, "ne0 not a block multiple", "not a multiple");
    tb_head(&t, 1, 0); tb_tensor(&t, "t", 2, (uint64_t[]){ 1ull << 62, 4 }, DS_TYPE_F32, 0); tb_pad(&t, 200);
    expect_fail(&t, "element count overflow", "overflows");
    tb_head(&t, 1, 0); tb_tensor(&t, "t", 1, ne1, DS_TYPE_F32, 16); tb_pad(&t, 256);
    expect_fail(&t, "misaligned offset", "not a multiple of the alignment");
    tb_head(&t, 1, 0); tb_tensor(&t, "t", 1, ne1, DS_TYPE_F32, 32); tb_pad(&t, 160);
    expect_fail(&t, "data past the end", "past the file");
    tb_head(&t, 1, 0); tb_tensor(&t, "t", 1, ne1, DS_TYPE_F32, ~0ull << 5); tb_pad(&t, 256);
    expect_fail(&t, "offset overflow", "past the file");
    tb_head(&t, 2, 0); tb_tensor(&t, "t", 1, ne1, DS_TYPE_F32, 0); tb_tensor(&t, "t", 1, ne1, DS_TYPE_F32, 128);
    tb_pad(&t, 512);
    expect_fail(&t, "duplicate tensor", "duplicate tensor");
    tb_head(&t, 0, 1); tb_str(&t, "k"); tb_u32(&t, DS_GGUF_STR); tb_u64(&t, 1ull << 63);
    expect_fail(&t, "string length", "string length");

    /* a valid hand-made file: 1 tensor, ne = 0 (empty), vocab-style no padding */
    tb_head(&t, 1, 0); tb_tensor(&t, "z", 1, (uint64_t[]){ 0 }, DS_TYPE_F32, 0); tb_pad(&t, 64);
    ds_gguf *g = NULL;
    ds_error err = { 0 };
    CHECK(ds_gguf_open_memory(t.b, t.n, "ok", &g, &err) == DS_OK, "empty tensor: %s", err.msg);
    if (g) CHECK(ds_gguf_tensor_at(g, 0)->nbytes == 0, "nbytes 0");
    ds_gguf_close(g);
    tb_head(&t, 0, 0);
    CHECK(ds_gguf_open_memory(t.b, t.n, "ok", &g, &err) == DS_OK, "empty file: %s", err.msg);
    ds_gguf_close(g);
}

/* ---- truncation and mutation ------------------------------------------------- */

/* A small complete file: every key type, three tensors. */
static uint8_t *small_file(size_t *len) {
    ds_error err = { 0 };
    ds_gguf_writer *w = make_writer(3);
    const char *path = ds_test_tmp("gguf_small.gguf");
    CHECK(ds_gguf_writer_write(w, path, &err) == DS_OK, "write small: %s", err.msg);
    ds_gguf_writer_free(w);
    return ds_test_read_file(path, len);
}

/* Reads every byte a consumer may touch, so ASan sees any escape. */
static unsigned walk(const ds_gguf *g, const uint8_t *buf, size_t len) {
    unsigned sum = 0;
    for (int64_t i = 0; i < ds_gguf_n_kv(g); i++) {
        const ds_gguf_kv *kv = ds_gguf_kv_at(g, i);
        for (uint64_t j = 0; j < kv->key.len; j++) sum += (unsigned char)kv->key.ptr[j];
        const ds_gguf_value *v = &kv->val;
        if (v->type == DS_GGUF_STR)
            for (uint64_t j = 0; j < v->str.len; j++) sum += (unsigned char)v->str.ptr[j];
        if (v->type == DS_GGUF_ARR && v->arr.type == DS_GGUF_STR)
            for (uint64_t k = 0; k < v->arr.n; k++)
                for (uint64_t j = 0; j < v->arr.strs[k].len; j++) sum += (unsigned char)v->arr.strs[k].ptr[j];
        else if (v->type == DS_GGUF_ARR)
            for (uint64_t j = 0; j < v->arr.n * ds_gguf_vtype_size(v->arr.type); j++)
                sum += ((const uint8_t *)v->arr.data)[j];
    }
    for (int64_t i = 0; i < ds_gguf_n_tensors(g); i++) {
        const ds_gguf_tensor *t = ds_gguf_tensor_at(g, i);
        bool inside = t->data >= buf && t->nbytes <= len && t->data - buf <= (ptrdiff_t)(len - t->nbytes);
        CHECK(inside, "tensor %lld outside the buffer", (long long)i);
        if (inside && t->nbytes) sum += t->data[0] + t->data[t->nbytes - 1];
    }
    return sum;
}

static void test_truncation(const uint8_t *file, size_t size) {
    int bad = 0;
    for (size_t n = 0; n < size; n++) {
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, file, n);
        ds_gguf *g = NULL;
        ds_error err = { 0 };
        ds_status st = ds_gguf_open_memory(c, n, "trunc", &g, &err);
        if (st != DS_ERR_FORMAT || g || !msg_has(&err, "trunc: ") || !msg_has(&err, "at offset")) {
            if (bad++ < 5) CHECK(false, "truncated to %zu: status %d '%s'", n, st, err.msg);
        }
        ds_gguf_close(g);
        free(c);
    }
    CHECK(bad == 0, "%d truncations of %zu misbehaved", bad, size);
}

static void test_mutation(const uint8_t *file, size_t size) {
    ds_gguf *g = NULL;
    ds_error err = { 0 };
    CHECK(ds_gguf_open_memory(file, size, "orig", &g, &err) == DS_OK, "small file: %s", err.msg);
    if (!g) return;
    size_t meta = (size_t)(ds_gguf_tensor_at(g, 0)->data - file) - ds_gguf_tensor_at(g, 0)->offset;
    ds_gguf_close(g);
    int n_ok = 0, n_fail = 0, bad = 0;
    uint8_t *c = malloc(size);
    for (size_t i = 0; i < meta; i++) {
        uint8_t x = file[i], vals[4] = { 0x00, 0xff, (uint8_t)(x ^ 0x80), (uint8_t)(x + 1) };
        for (int k = 0; k < 4; k++) {
            if (vals[k] == x) continue;
            memcpy(c, file, size);
            c[i] = vals[k];
            g = NULL;
            err.msg[0] = 0;
            ds_status st = ds_gguf_open_memory(c, size, "mut", &g, &err);
            if (st == DS_OK) {
                n_ok++;
                walk(g, c, size);
                ds_gguf_close(g);
            } else {
                n_fail++;
                if (g || !msg_has(&err, "mut: ")) {
                    if (bad++ < 5) CHECK(false, "byte %zu = %02x: status %d '%s'", i, vals[k], st, err.msg);
                }
            }
        }
    }
    free(c);
    printf("mutations of %zu metadata bytes: %d opened, %d rejected\n", meta, n_ok, n_fail);
    CHECK(bad == 0 && n_fail > 0, "mutations: %d ok, %d failed, %d misbehaved", n_ok, n_fail, bad);
}

/* ---- overrides -------------------------------------------------------------------- */

static void test_override(const uint8_t *file, size_t size) {
    ds_gguf *g = NULL;
    ds_error err = { 0 };
    CHECK(ds_gguf_open_memory(file, size, "ov", &g, &err) == DS_OK, "open: %s", err.msg);
    if (!g) return;
    int64_t n0 = ds_gguf_n_kv(g), i64 = 0;
    uint32_t u32 = 0;
    float f = 0;
    bool b = true;
    char buf[64];
    CHECK(ds_gguf_override(g, "t.u32=int:7", &err) == DS_OK, "replace: %s", err.msg);
    CHECK(ds_gguf_get_u32(g, "t.u32", &u32) && u32 == 7 && ds_gguf_n_kv(g) == n0, "replaced in place");
    CHECK(str_eq(ds_gguf_kv_at(g, 1)->key, "t.u32"), "position kept");
    CHECK(ds_gguf_override(g, "new.int=int:-9000000000", &err) == DS_OK, "add int");
    CHECK(ds_gguf_get_i64(g, "new.int", &i64) && i64 == -9000000000ll && ds_gguf_n_kv(g) == n0 + 1, "int added");
    CHECK(ds_gguf_override(g, "new.f=float:1.5e-3", &err) == DS_OK, "float");
    CHECK(ds_gguf_get_f32(g, "new.f", &f) && f == 1.5e-3f, "float value");
    CHECK(ds_gguf_override(g, "new.big=float:-1e300", &err) == DS_OK && !ds_gguf_get_f32(g, "new.big", &f),
          "f64 beyond float range is refused");
    CHECK(ds_gguf_override(g, "t.bool=bool:false", &err) == DS_OK, "bool");
    CHECK(ds_gguf_get_bool(g, "t.bool", &b) && !b, "bool value");
    CHECK(ds_gguf_override(g, "general.architecture=str:a=b:c", &err) == DS_OK, "str");
    CHECK(ds_gguf_get_str(g, "general.architecture", buf, sizeof buf) && !strcmp(buf, "a=b:c"), "str value");
    CHECK(ds_gguf_override(g, "e=str:", &err) == DS_OK && ds_gguf_get_str(g, "e", buf, sizeof buf) &&
          buf[0] == 0, "empty str");
    int64_t n1 = ds_gguf_n_kv(g);
    static const char *bad[] = { "noequals", "=int:1", "k=int", "k=int:abc", "k=int:",
                                 "k=int:99999999999999999999", "k=int:1.5", "k=float:xyz",
                                 "k=float:", "k=float:inf", "k=bool:yes", "k=bool:1",
                                 "k=double:1", "k=:1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        CHECK(ds_gguf_override(g, bad[i], &err) == DS_ERR_INVALID_ARG && msg_has(&err, bad[i]),
              "bad spec '%s': '%s'", bad[i], err.msg);
    }
    CHECK(ds_gguf_override(g, NULL, &err) == DS_ERR_INVALID_ARG, "NULL spec");
    CHECK(ds_gguf_n_kv(g) == n1 && ds_gguf_find(g, "k") == NULL, "bad specs add nothing");
    ds_gguf_close(g);
}

/* ---- fixtures ----------------------------------------------------------------------- */

static void check_fixture(const char *path, bool is_model) {
    ds_gguf *g = NULL;
    ds_error err = { 0 };
    CHECK(ds_gguf_open(path, &g, &err) == DS_OK, "%s: %s", path, err.msg);
    if (!g) return;
    char arch[64] = "";
    CHECK(ds_gguf_get_str(g, "general.architecture", arch, sizeof arch), "%s: architecture", path);
    if (is_model) {
        CHECK(!strcmp(arch, "deepseek2"), "%s: architecture '%s'", path, arch);
        CHECK(ds_gguf_n_tensors(g) > 0, "%s: no tensors", path);
        CHECK(ds_gguf_find_tensor(g, "token_embd.weight") != NULL, "%s: token_embd", path);
    } else {
        const ds_gguf_value *v = ds_gguf_get_arr(g, "tokenizer.ggml.tokens", DS_GGUF_STR);
        CHECK(v && v->arr.n > 1000, "%s: tokens", path);
    }
    int bad = 0, unfound = 0;
    for (int64_t i = 0; i < ds_gguf_n_tensors(g); i++) {
        const ds_gguf_tensor *t = ds_gguf_tensor_at(g, i);
        const ds_gguf_shard *sh = &g->shards[t->shard];
        if (!(t->data >= sh->buf && t->data + t->nbytes <= sh->buf + sh->len)) bad++;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (ds_gguf_find_tensor(g, name) != t) unfound++;
    }
    CHECK(bad == 0, "%s: %d tensors outside the file", path, bad);
    CHECK(unfound == 0, "%s: %d tensors not found by name", path, unfound);
    ds_gguf_close(g);
}

static int fixtures_in(const char *rel, bool is_model) {
    const char *dir = ds_test_data(rel);
    char dbuf[4096];
    snprintf(dbuf, sizeof dbuf, "%s", dir);
    DIR *d = opendir(dbuf);
    int n = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".gguf")) continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dbuf, e->d_name);
        check_fixture(p, is_model);
        n++;
    }
    closedir(d);
    return n;
}

static void test_fixtures(void) {
    int n = fixtures_in("models/dsv3_tiny", true) + fixtures_in("models/dsv3_kq", true);
    CHECK(n >= 4, "found %d model fixtures", n);
    CHECK(fixtures_in("tokenizer", false) >= 2, "tokenizer fixtures");
}

/* ---- fuzz seeds ------------------------------------------------------------------- */

static void write_seeds(const char *dir) {
    char p[4096];
    ds_error err = { 0 };
    ds_gguf_writer *w = make_writer(3);
    snprintf(p, sizeof p, "%s/all_types.gguf", dir);
    CHECK(ds_gguf_writer_write(w, p, &err) == DS_OK, "seed: %s", err.msg);
    ds_gguf_writer_free(w);

    w = ds_gguf_writer_create();
    static const char *toks[] = { "<s>", "</s>", "a", "b", "ab", " the", "\xe2\x96\x81x" };
    ds_gguf_writer_set_str(w, "general.architecture", "llama");
    ds_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ds_gguf_writer_set_str_arr(w, "tokenizer.ggml.tokens", toks, NULL, 7);
    ds_gguf_writer_set_u32(w, "general.alignment", 64);
    snprintf(p, sizeof p, "%s/vocab.gguf", dir);
    CHECK(ds_gguf_writer_write(w, p, &err) == DS_OK, "seed: %s", err.msg);
    ds_gguf_writer_free(w);

    w = ds_gguf_writer_create();
    ds_gguf_writer_set_str(w, "general.architecture", "deepseek2");
    for (int i = 0; i < 4; i++)
        ds_gguf_writer_add_tensor(w, k_tensors[i].name, k_tensors[i].type, k_tensors[i].n_dims,
                                  k_tensors[i].ne, g_data[i], spec_bytes(&k_tensors[i]));
    snprintf(p, sizeof p, "%s/split", dir);
    CHECK(ds_gguf_writer_write_split(w, p, 2, &err) == DS_OK, "seed: %s", err.msg);
    ds_gguf_writer_free(w);

    /* every tensor type, stamped as v2 */
    w = make_writer(N_TENSORS);
    snprintf(p, sizeof p, "%s/tensors_v2.gguf", dir);
    CHECK(ds_gguf_writer_write(w, p, &err) == DS_OK, "seed: %s", err.msg);
    ds_gguf_writer_free(w);
    size_t n;
    uint8_t *b = ds_test_read_file(p, &n);
    FILE *f = b ? fopen(p, "wb") : NULL;
    if (f) { b[4] = 2; fwrite(b, 1, n, f); fclose(f); }
    free(b);
}

int main(void) {
    double t0 = ds_time_s();
    make_data();
    test_roundtrip();
    test_writer_args();
    test_split();
    test_malformed();
    size_t size = 0;
    uint8_t *small = small_file(&size);
    CHECK(small && size > 0 && size < 8192, "small file is %zu bytes", size);
    if (small) {
        test_truncation(small, size);
        test_mutation(small, size);
        test_override(small, size);
        free(small);
    }
    test_fixtures();
    const char *seeds = getenv("DS_GGUF_WRITE_SEEDS");
    if (seeds) write_seeds(seeds);
    for (int i = 0; i < N_TENSORS; i++) free(g_data[i]);
    printf("test_gguf: %.2f s\n", ds_time_s() - t0);
    return ds_test_finish("test_gguf");
}
