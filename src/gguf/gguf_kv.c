/* gguf_kv.c: key lookup (a name hash shared with the tensor table), typed
 * getters with lossless conversion, and llama.cpp-style --override-kv.
 * Not parsing (gguf_read.c) nor writing (gguf_write.c). */
#include "gguf_internal.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- name index ------------------------------------------------------------ */

static uint64_t hash_name(const char *s, uint64_t len) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static const ds_gguf_str *name_at(const void *base, size_t stride, uint64_t i) {
    return (const ds_gguf_str *)((const char *)base + i * stride);
}

static bool name_eq(const ds_gguf_str *a, const char *s, uint64_t len) {
    return a->len == len && (len == 0 || memcmp(a->ptr, s, len) == 0);
}

int64_t ds_gguf_index_find(const ds_gguf_index *ix, const void *base, size_t stride,
                           const char *s, uint64_t len) {
    if (ix->cap == 0) return -1;
    uint64_t m = ix->cap - 1;
    for (uint64_t h = hash_name(s, len) & m;; h = (h + 1) & m) {
        uint64_t v = ix->slot[h];
        if (v == 0) return -1;
        if (name_eq(name_at(base, stride, v - 1), s, len)) return (int64_t)(v - 1);
    }
}

/* Inserts without checking for duplicates; cap has room. */
static void slot_put(ds_gguf_index *ix, const void *base, size_t stride, uint64_t i) {
    const ds_gguf_str *nm = name_at(base, stride, i);
    uint64_t m = ix->cap - 1, h = hash_name(nm->ptr, nm->len) & m;
    while (ix->slot[h]) h = (h + 1) & m;
    ix->slot[h] = i + 1;
}

ds_status ds_gguf_index_add(ds_gguf_index *ix, const void *base, size_t stride, int64_t i,
                            int64_t *dup) {
    const ds_gguf_str *nm = name_at(base, stride, (uint64_t)i);
    *dup = ds_gguf_index_find(ix, base, stride, nm->ptr, nm->len);
    if (*dup >= 0) return DS_OK;
    if ((ix->n + 1) * 2 > ix->cap) { /* keep the load under 1/2 */
        uint64_t nc = ix->cap ? ix->cap * 2 : 64;
        uint64_t *ns = calloc(nc, sizeof *ns);
        if (!ns) return DS_ERR_OOM;
        ds_gguf_index old = *ix;
        ix->slot = ns;
        ix->cap = nc;
        for (uint64_t k = 0; k < old.cap; k++)
            if (old.slot[k]) slot_put(ix, base, stride, old.slot[k] - 1);
        free(old.slot);
    }
    slot_put(ix, base, stride, (uint64_t)i);
    ix->n++;
    return DS_OK;
}

void ds_gguf_index_free(ds_gguf_index *ix) {
    free(ix->slot);
    *ix = (ds_gguf_index){ 0 };
}

ds_status ds_gguf_own(ds_gguf *g, void *p) {
    if (g->n_owned == g->cap_owned) {
        int64_t nc = g->cap_owned ? g->cap_owned * 2 : 16;
        void **n = realloc(g->owned, (size_t)nc * sizeof *n);
        if (!n) { free(p); return DS_ERR_OOM; }
        g->owned = n;
        g->cap_owned = nc;
    }
    g->owned[g->n_owned++] = p;
    return DS_OK;
}

/* ---- keys -------------------------------------------------------------------- */

int64_t ds_gguf_n_kv(const ds_gguf *g) { return g->n_kv; }

const ds_gguf_kv *ds_gguf_kv_at(const ds_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kvs[i] : NULL;
}

const ds_gguf_value *ds_gguf_find(const ds_gguf *g, const char *key) {
    int64_t i = ds_gguf_index_find(&g->kv_index, g->kvs, sizeof(ds_gguf_kv), key, strlen(key));
    return i >= 0 ? &g->kvs[i].val : NULL;
}

/* Integer value as a sign + magnitude pair so both range checks are exact. */
static bool as_int(const ds_gguf_value *v, bool *neg, uint64_t *mag) {
    switch (v->type) {
    case DS_GGUF_U8: case DS_GGUF_U16: case DS_GGUF_U32: case DS_GGUF_U64:
        *neg = false;
        *mag = v->u64;
        return true;
    case DS_GGUF_I8: case DS_GGUF_I16: case DS_GGUF_I32: case DS_GGUF_I64:
        *neg = v->i64 < 0;
        *mag = *neg ? 0 - (uint64_t)v->i64 : (uint64_t)v->i64;
        return true;
    default: return false;
    }
}

bool ds_gguf_get_i64(const ds_gguf *g, const char *key, int64_t *out) {
    const ds_gguf_value *v = ds_gguf_find(g, key);
    bool neg;
    uint64_t mag;
    if (!v || !as_int(v, &neg, &mag)) return false;
    if (!neg && mag > (uint64_t)INT64_MAX) return false;
    *out = neg ? v->i64 : (int64_t)mag;
    return true;
}

bool ds_gguf_get_u32(const ds_gguf *g, const char *key, uint32_t *out) {
    const ds_gguf_value *v = ds_gguf_find(g, key);
    bool neg;
    uint64_t mag;
    if (!v || !as_int(v, &neg, &mag) || (neg && mag) || mag > UINT32_MAX) return false;
    *out = (uint32_t)mag;
    return true;
}

bool ds_gguf_get_f32(const ds_gguf *g, const char *key, float *out) {
    const ds_gguf_value *v = ds_gguf_find(g, key);
    if (!v || (v->type != DS_GGUF_F32 && v->type != DS_GGUF_F64)) return false;
    /* precision may go, range may not: a finite f64 beyond float is refused */
    if (isfinite(v->f64) && fabs(v->f64) > FLT_MAX) return false;
    *out = (float)v->f64;
    return true;
}

bool ds_gguf_get_bool(const ds_gguf *g, const char *key, bool *out) {
    const ds_gguf_value *v = ds_gguf_find(g, key);
    if (!v || v->type != DS_GGUF_BOOL) return false;
    *out = v->b;
    return true;
}

bool ds_gguf_get_str(const ds_gguf *g, const char *key, char *buf, size_t cap) {
    const ds_gguf_value *v = ds_gguf_find(g, key);
    if (!v || v->type != DS_GGUF_STR || !buf || cap == 0) return false;
    size_t n = v->str.len < cap - 1 ? (size_t)v->str.len : cap - 1;
    if (n) memcpy(buf, v->str.ptr, n);
    buf[n] = 0;
    return true;
}

const ds_gguf_value *ds_gguf_get_arr(const ds_gguf *g, const char *key, int elem_type) {
    const ds_gguf_value *v = ds_gguf_find(g, key);
    if (!v || v->type != DS_GGUF_ARR) return NULL;
    if (elem_type >= 0 && (int)v->arr.type != elem_type) return NULL;
    return v;
}

/* ---- --override-kv ----------------------------------------------------------- */

/* Owned NUL-terminated copy of s[0..n), registered with g. */
static char *own_copy(ds_gguf *g, const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return ds_gguf_own(g, p) == DS_OK ? p : NULL;
}

/* Parses the TYPE:VALUE part; strings are copied into g. */
static ds_status parse_override_value(ds_gguf *g, const char *spec, const char *ty, size_t ty_len,
                                      const char *val, ds_gguf_value *v, ds_error *err) {
    char *end;
    if (ty_len == 3 && memcmp(ty, "int", 3) == 0) {
        errno = 0;
        long long x = strtoll(val, &end, 10);
        if (!*val || *end || errno == ERANGE)
            return ds_error_set(err, DS_ERR_INVALID_ARG,
                                "--override-kv '%s': '%s' is not a 64-bit integer", spec, val);
        v->type = DS_GGUF_I64;
        v->i64 = x;
    } else if (ty_len == 5 && memcmp(ty, "float", 5) == 0) {
        errno = 0;
        double x = strtod(val, &end);
        if (!*val || *end || errno == ERANGE || !isfinite(x))
            return ds_error_set(err, DS_ERR_INVALID_ARG,
                                "--override-kv '%s': '%s' is not a finite number", spec, val);
        v->type = DS_GGUF_F64;
        v->f64 = x;
    } else if (ty_len == 4 && memcmp(ty, "bool", 4) == 0) {
        if (strcmp(val, "true") && strcmp(val, "false"))
            return ds_error_set(err, DS_ERR_INVALID_ARG,
                                "--override-kv '%s': bool value must be true or false, not '%s'",
                                spec, val);
        v->type = DS_GGUF_BOOL;
        v->b = val[0] == 't';
    } else if (ty_len == 3 && memcmp(ty, "str", 3) == 0) {
        size_t n = strlen(val);
        char *p = own_copy(g, val, n);
        if (!p) return ds_error_set(err, DS_ERR_OOM, "--override-kv '%s': out of memory", spec);
        v->type = DS_GGUF_STR;
        v->str = (ds_gguf_str){ p, n };
    } else {
        return ds_error_set(err, DS_ERR_INVALID_ARG,
                            "--override-kv '%s': type '%.*s' is not int, float, bool or str",
                            spec, (int)ty_len, ty);
    }
    return DS_OK;
}

/* Replaces or appends the key. Appending may move g->kvs, so pointers from
 * earlier find/kv_at calls are invalidated: apply overrides right after open. */
ds_status ds_gguf_override(ds_gguf *g, const char *spec, ds_error *err) {
    const char *eq = spec ? strchr(spec, '=') : NULL;
    const char *colon = eq ? strchr(eq + 1, ':') : NULL;
    if (!eq || !colon || eq == spec)
        return ds_error_set(err, DS_ERR_INVALID_ARG,
                            "--override-kv '%s': expected KEY=TYPE:VALUE with TYPE int, float, "
                            "bool or str", spec ? spec : "(null)");
    ds_gguf_value v;
    memset(&v, 0, sizeof v);
    ds_status st = parse_override_value(g, spec, eq + 1, (size_t)(colon - eq - 1), colon + 1,
                                        &v, err);
    if (st) return st;

    size_t key_len = (size_t)(eq - spec);
    int64_t i = ds_gguf_index_find(&g->kv_index, g->kvs, sizeof(ds_gguf_kv), spec, key_len);
    if (i >= 0) {
        g->kvs[i].val = v;
        return DS_OK;
    }
    char *key = own_copy(g, spec, key_len);
    if (!key) return ds_error_set(err, DS_ERR_OOM, "--override-kv '%s': out of memory", spec);
    if (g->n_kv == g->cap_kv) {
        int64_t nc = g->cap_kv ? g->cap_kv * 2 : 16;
        ds_gguf_kv *n = realloc(g->kvs, (size_t)nc * sizeof *n);
        if (!n) return ds_error_set(err, DS_ERR_OOM, "--override-kv '%s': out of memory", spec);
        g->kvs = n;
        g->cap_kv = nc;
    }
    g->kvs[g->n_kv] = (ds_gguf_kv){ .key = { key, key_len }, .val = v };
    int64_t dup;
    if (ds_gguf_index_add(&g->kv_index, g->kvs, sizeof(ds_gguf_kv), g->n_kv, &dup))
        return ds_error_set(err, DS_ERR_OOM, "--override-kv '%s': out of memory", spec);
    g->n_kv++;
    return DS_OK;
}
