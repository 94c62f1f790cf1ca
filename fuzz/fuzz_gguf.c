/* fuzz_gguf.c: libFuzzer target for the GGUF reader: parses the input with
 * ds_gguf_open_memory and touches every byte a consumer could reach.
 * Not a writer or split-set test (that needs files: tests/test_gguf.c). */
#include "gguf/gguf.h"
#include "gguf/gguf_internal.h"

#include <stdlib.h>
#include <string.h>

static volatile unsigned g_sink;

static unsigned sum_bytes(const void *p, uint64_t n) {
    const uint8_t *b = p;
    unsigned s = 0;
    for (uint64_t i = 0; i < n; i++) s += b[i];
    return s;
}

/* Looks the key up by name and through every getter, as a loader would. */
static unsigned probe_key(const ds_gguf *g, const ds_gguf_kv *kv) {
    char key[256], buf[64];
    if (kv->key.len >= sizeof key || memchr(kv->key.ptr, 0, kv->key.len)) return 0;
    memcpy(key, kv->key.ptr, kv->key.len);
    key[kv->key.len] = 0;
    if (ds_gguf_find(g, key) != &kv->val) abort(); /* keys are unique: find must hit it */
    int64_t i64;
    uint32_t u32;
    float f;
    bool b;
    unsigned s = 0;
    if (ds_gguf_get_i64(g, key, &i64)) s += (unsigned)i64;
    if (ds_gguf_get_u32(g, key, &u32)) s += u32;
    if (ds_gguf_get_f32(g, key, &f)) s += (unsigned)(f == f);
    if (ds_gguf_get_bool(g, key, &b)) s += b;
    if (ds_gguf_get_str(g, key, buf, sizeof buf)) s += (unsigned)strlen(buf);
    if (ds_gguf_get_arr(g, key, -1)) s++;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_gguf *g = NULL;
    ds_error err;
    if (ds_gguf_open_memory(data, size, "fuzz", &g, &err) != DS_OK) {
        if (g || !err.msg[0]) abort(); /* failure must come with a message and no handle */
        return 0;
    }
    unsigned s = 0;
    for (int64_t i = 0; i < ds_gguf_n_kv(g); i++) {
        const ds_gguf_kv *kv = ds_gguf_kv_at(g, i);
        const ds_gguf_value *v = &kv->val;
        s += sum_bytes(kv->key.ptr, kv->key.len);
        if (v->type == DS_GGUF_STR) s += sum_bytes(v->str.ptr, v->str.len);
        if (v->type == DS_GGUF_BOOL) s += v->b;
        if (v->type == DS_GGUF_ARR) {
            if (v->arr.type == DS_GGUF_ARR) abort();
            if (v->arr.type == DS_GGUF_STR) {
                for (uint64_t k = 0; k < v->arr.n; k++)
                    s += sum_bytes(v->arr.strs[k].ptr, v->arr.strs[k].len);
            } else {
                s += sum_bytes(v->arr.data, v->arr.n * ds_gguf_vtype_size(v->arr.type));
                if (v->arr.type == DS_GGUF_BOOL) /* must be valid C bools */
                    for (uint64_t k = 0; k < v->arr.n; k++) s += ((const bool *)v->arr.data)[k];
            }
        }
        s += probe_key(g, kv);
    }
    for (int64_t i = 0; i < ds_gguf_n_tensors(g); i++) {
        const ds_gguf_tensor *t = ds_gguf_tensor_at(g, i);
        if (t->data < data || t->nbytes > size || (size_t)(t->data - data) > size - t->nbytes)
            abort(); /* tensor outside the input */
        if (t->n_dims < 1 || t->n_dims > 4) abort();
        if (t->nbytes) s += t->data[0] + t->data[t->nbytes - 1];
        s += sum_bytes(t->name.ptr, t->name.len);
        char name[256];
        if (t->name.len < sizeof name && !memchr(t->name.ptr, 0, t->name.len)) {
            memcpy(name, t->name.ptr, t->name.len);
            name[t->name.len] = 0;
            if (ds_gguf_find_tensor(g, name) != t) abort();
        }
    }
    /* overrides on a parsed handle: replace and add */
    ds_gguf_override(g, "general.architecture=str:fuzz", &err);
    ds_gguf_override(g, "fuzz.k=int:1", &err);
    g_sink += s;
    ds_gguf_close(g);
    return 0;
}
