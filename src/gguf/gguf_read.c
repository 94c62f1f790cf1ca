/* gguf_read.c: parses and validates the bytes of one GGUF v2/v3 shard into
 * the handle's key and tensor tables (zero-copy: strings and data point into
 * the buffer). Not file handling or split discovery (gguf_open.c).
 *
 * Every count, length and offset is checked against the bytes left before it
 * is used, with overflow-safe arithmetic; errors read
 * "<file>: <field> at offset <n>: <problem>". Assumes a little-endian host,
 * as the zero-copy array data does. */
#include "gguf_internal.h"
#include "../quant/quant.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Smallest encodings, used to reject counts the remaining bytes cannot hold
 * before anything is allocated for them. */
#define MIN_KV_BYTES 13     /* u64 key len + u32 type + 1-byte value */
#define MIN_TENSOR_BYTES 32 /* u64 name len + u32 n_dims + u64 ne0 + u32 type + u64 offset */

/* A cursor over one shard plus what it is currently reading, so errors can
 * name the item without formatting a description for every field. */
typedef struct rd {
    const uint8_t *p;
    size_t len, off;
    const char *file;
    ds_error *err;
    const char *item;  /* "key", "tensor" or NULL (header) */
    int64_t item_i;
    ds_gguf_str item_name; /* len 0 until the name has been read */
} rd;

/* Copies at most cap-1 bytes of s into buf, replacing non-printable bytes so
 * garbage names cannot mangle the message. */
static void printable(char *buf, size_t cap, const char *s, uint64_t len) {
    size_t n = len < cap - 4 ? (size_t)len : cap - 4;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (n < len) { memcpy(buf + n, "...", 3); n += 3; }
    buf[n] = 0;
}

static ds_status rd_fail(rd *r, size_t at, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static ds_status rd_fail(rd *r, size_t at, const char *field, const char *fmt, ...) {
    char what[256] = "", problem[512];
    if (r->item) {
        char nm[96] = "";
        if (r->item_name.len) printable(nm, sizeof nm, r->item_name.ptr, r->item_name.len);
        snprintf(what, sizeof what, "%s #%lld%s%s%s ", r->item, (long long)r->item_i,
                 nm[0] ? " '" : "", nm, nm[0] ? "'" : "");
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    ds_error_set(r->err, DS_ERR_FORMAT, "%s: %s%s at offset %zu: %s", r->file, what, field, at,
                 problem);
    return DS_ERR_FORMAT; /* a constant lets the compiler see every error path is nonzero */
}

static ds_status rd_oom(rd *r, const char *field) {
    ds_error_set(r->err, DS_ERR_OOM, "%s: %s at offset %zu: out of memory", r->file, field, r->off);
    return DS_ERR_OOM;
}

static size_t rd_left(const rd *r) { return r->len - r->off; }

/* Takes n bytes; *out points at them. Fails (nothing consumed) if fewer are left. */
static ds_status rd_bytes(rd *r, const char *field, uint64_t n, const uint8_t **out) {
    if (n > rd_left(r))
        return rd_fail(r, r->off, field, "needs %llu bytes, only %zu left in the file",
                       (unsigned long long)n, rd_left(r));
    *out = r->p + r->off;
    r->off += (size_t)n;
    return DS_OK;
}

static ds_status rd_u32(rd *r, const char *field, uint32_t *v) {
    const uint8_t *b = NULL;
    ds_status st = rd_bytes(r, field, 4, &b);
    if (st == DS_OK) memcpy(v, b, 4);
    return st;
}

static ds_status rd_u64(rd *r, const char *field, uint64_t *v) {
    const uint8_t *b = NULL;
    ds_status st = rd_bytes(r, field, 8, &b);
    if (st == DS_OK) memcpy(v, b, 8);
    return st;
}

/* u64 length + bytes; the string points into the buffer. */
static ds_status rd_str(rd *r, const char *field, ds_gguf_str *s) {
    size_t at = r->off;
    uint64_t n;
    ds_status st = rd_u64(r, field, &n);
    if (st) return st;
    if (n > rd_left(r)) {
        r->off = at;
        return rd_fail(r, at, field, "string length %llu exceeds the %zu bytes left",
                       (unsigned long long)n, rd_left(r) - 8);
    }
    s->ptr = (const char *)(r->p + r->off);
    s->len = n;
    r->off += (size_t)n;
    return DS_OK;
}

size_t ds_gguf_vtype_size(uint32_t t) {
    switch (t) {
    case DS_GGUF_U8: case DS_GGUF_I8: case DS_GGUF_BOOL: return 1;
    case DS_GGUF_U16: case DS_GGUF_I16: return 2;
    case DS_GGUF_U32: case DS_GGUF_I32: case DS_GGUF_F32: return 4;
    case DS_GGUF_U64: case DS_GGUF_I64: case DS_GGUF_F64: return 8;
    default: return 0;
    }
}

/* Decodes one packed scalar of numeric/bool type t at b into v. */
static void decode_scalar(uint32_t t, const uint8_t *b, ds_gguf_value *v) {
    v->type = (ds_gguf_vtype)t;
    switch (t) {
    case DS_GGUF_U8: v->u64 = b[0]; break;
    case DS_GGUF_I8: v->i64 = (int8_t)b[0]; break;
    case DS_GGUF_U16: { uint16_t x; memcpy(&x, b, 2); v->u64 = x; break; }
    case DS_GGUF_I16: { int16_t x; memcpy(&x, b, 2); v->i64 = x; break; }
    case DS_GGUF_U32: { uint32_t x; memcpy(&x, b, 4); v->u64 = x; break; }
    case DS_GGUF_I32: { int32_t x; memcpy(&x, b, 4); v->i64 = x; break; }
    case DS_GGUF_F32: { float x; memcpy(&x, b, 4); v->f64 = x; break; }
    case DS_GGUF_BOOL: v->b = b[0] != 0; break;
    case DS_GGUF_U64: { uint64_t x; memcpy(&x, b, 8); v->u64 = x; break; }
    case DS_GGUF_I64: { int64_t x; memcpy(&x, b, 8); v->i64 = x; break; }
    case DS_GGUF_F64: { double x; memcpy(&x, b, 8); v->f64 = x; break; }
    default: DS_ASSERT(0);
    }
}

static const char *vtype_name(uint32_t t) {
    static const char *names[] = { "u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                   "bool", "str", "array", "u64", "i64", "f64" };
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Array value: u32 element type, u64 count, elements. String arrays get a
 * malloc'd strs table, returned in *owned for the caller to keep or free. */
static ds_status rd_array(rd *r, ds_gguf_value *v, void **owned) {
    size_t at = r->off;
    uint32_t et;
    uint64_t n;
    ds_status st = rd_u32(r, "array element type", &et);
    if (st) return st;
    if (et == DS_GGUF_ARR)
        return rd_fail(r, at, "array element type", "nested arrays are not supported");
    if (et != DS_GGUF_STR && ds_gguf_vtype_size(et) == 0)
        return rd_fail(r, at, "array element type", "unknown value type %u", et);
    at = r->off;
    if ((st = rd_u64(r, "array count", &n))) return st;
    v->type = DS_GGUF_ARR;
    v->arr.type = (ds_gguf_vtype)et;
    v->arr.n = n;
    v->arr.data = r->p + r->off;
    v->arr.strs = NULL;

    if (et != DS_GGUF_STR) {
        uint64_t bytes;
        size_t esz = ds_gguf_vtype_size(et);
        if (!ds_mul_ok(n, esz, &bytes) || bytes > rd_left(r))
            return rd_fail(r, at, "array count",
                           "%llu elements of %s do not fit in the %zu bytes left",
                           (unsigned long long)n, vtype_name(et), rd_left(r));
        if (et == DS_GGUF_BOOL) /* a bool byte other than 0/1 is not a valid C bool */
            for (uint64_t i = 0; i < n; i++)
                if (r->p[r->off + i] > 1)
                    return rd_fail(r, r->off + (size_t)i, "array bool element",
                                   "value %u is not 0 or 1", r->p[r->off + i]);
        r->off += (size_t)bytes;
        return DS_OK;
    }

    if (n > rd_left(r) / 8)
        return rd_fail(r, at, "array count",
                       "%llu strings do not fit in the %zu bytes left",
                       (unsigned long long)n, rd_left(r));
    if (n == 0) return DS_OK;
    /* Grown as strings are read so a lying count in a big mapping costs at
     * most a few times the bytes actually parsed. */
    uint64_t cap = n < 4096 ? n : 4096;
    ds_gguf_str *strs = malloc(cap * sizeof *strs);
    if (!strs) return rd_oom(r, "array of strings");
    for (uint64_t i = 0; i < n; i++) {
        if (i == cap) {
            uint64_t nc = cap * 2 < n ? cap * 2 : n;
            ds_gguf_str *ns = realloc(strs, nc * sizeof *strs);
            if (!ns) { free(strs); return rd_oom(r, "array of strings"); }
            strs = ns;
            cap = nc;
        }
        if ((st = rd_str(r, "array string element", &strs[i]))) { free(strs); return st; }
    }
    v->arr.strs = strs;
    *owned = strs;
    return DS_OK;
}

/* One value of type t; *owned gets any allocation the value holds. */
static ds_status rd_value(rd *r, size_t type_at, uint32_t t, ds_gguf_value *v, void **owned) {
    *owned = NULL;
    if (t == DS_GGUF_STR) {
        v->type = DS_GGUF_STR;
        return rd_str(r, "value", &v->str);
    }
    if (t == DS_GGUF_ARR) return rd_array(r, v, owned);
    size_t sz = ds_gguf_vtype_size(t);
    if (sz == 0) return rd_fail(r, type_at, "value type", "unknown value type %u", t);
    const uint8_t *b = NULL;
    ds_status st = rd_bytes(r, "value", sz, &b);
    if (st) return st;
    if (t == DS_GGUF_BOOL && b[0] > 1)
        return rd_fail(r, r->off - 1, "value", "bool value %u is not 0 or 1", b[0]);
    decode_scalar(t, b, v);
    return DS_OK;
}

static bool str_is(ds_gguf_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* Integer value in [lo, hi] (any integer type), for the split.* keys. */
static bool int_in(const ds_gguf_value *v, int64_t lo, int64_t hi, int64_t *out) {
    switch (v->type) {
    case DS_GGUF_U8: case DS_GGUF_U16: case DS_GGUF_U32: case DS_GGUF_U64:
        if (v->u64 > (uint64_t)hi) return false;
        *out = (int64_t)v->u64;
        return *out >= lo;
    case DS_GGUF_I8: case DS_GGUF_I16: case DS_GGUF_I32: case DS_GGUF_I64:
        *out = v->i64;
        return v->i64 >= lo && v->i64 <= hi;
    default: return false;
    }
}

/* Keys with meaning to the reader: checked here, where the offset is known. */
static ds_status check_special_key(rd *r, size_t val_at, const ds_gguf_kv *kv,
                                   uint32_t *alignment, ds_gguf_split *split) {
    int64_t x;
    if (str_is(kv->key, "general.alignment")) {
        if (kv->val.type != DS_GGUF_U32)
            return rd_fail(r, val_at, "value", "general.alignment must be u32, not %s",
                           vtype_name(kv->val.type));
        uint64_t a = kv->val.u64;
        if (a == 0 || (a & (a - 1)))
            return rd_fail(r, val_at, "value",
                           "general.alignment %llu is not a nonzero power of two",
                           (unsigned long long)a);
        *alignment = (uint32_t)a;
    } else if (str_is(kv->key, "split.no") || str_is(kv->key, "split.count")) {
        bool is_no = kv->key.len == 8;
        if (!int_in(&kv->val, is_no ? 0 : 1, 65535, &x))
            return rd_fail(r, val_at, "value", "%s must be an integer in [%d, 65535]",
                           is_no ? "split.no" : "split.count", is_no ? 0 : 1);
        if (is_no) { split->has_no = true; split->no = (uint32_t)x; split->no_at = val_at; }
        else { split->has_count = true; split->count = (uint32_t)x; }
    } else if (str_is(kv->key, "split.tensors.count")) {
        if (!int_in(&kv->val, 0, INT32_MAX, &x))
            return rd_fail(r, val_at, "value",
                           "split.tensors.count must be an integer in [0, 2^31)");
        split->has_total = true;
        split->total = x;
    }
    return DS_OK;
}

/* Growable arrays used while parsing. */
typedef struct kvvec {
    ds_gguf_kv *kv; int64_t n, cap;
    void **own; int64_t n_own, cap_own;
    ds_gguf_index ix;
} kvvec;

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return true;
    int64_t nc = *cap ? *cap * 2 : 16;
    if (nc < need) nc = need;
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np) return false;
    *p = np;
    *cap = nc;
    return true;
}

static void kvvec_free(kvvec *v) {
    for (int64_t i = 0; i < v->n_own; i++) free(v->own[i]);
    free(v->own);
    free(v->kv);
    ds_gguf_index_free(&v->ix);
    memset(v, 0, sizeof *v);
}

static ds_status rd_kvs(rd *r, uint64_t n_kv, kvvec *out, uint32_t *alignment,
                        ds_gguf_split *split) {
    ds_status st;
    for (uint64_t i = 0; i < n_kv; i++) {
        ds_gguf_kv kv;
        void *own = NULL;
        r->item = "key";
        r->item_i = (int64_t)i;
        r->item_name.len = 0;
        size_t key_at = r->off;
        if ((st = rd_str(r, "name", &kv.key))) return st;
        r->item_name = kv.key;
        size_t type_at = r->off;
        uint32_t t;
        if ((st = rd_u32(r, "value type", &t))) return st;
        size_t val_at = r->off;
        if ((st = rd_value(r, type_at, t, &kv.val, &own))) return st;
        if (own) {
            if (!grow((void **)&out->own, &out->cap_own, out->n_own + 1, sizeof(void *))) {
                free(own);
                return rd_oom(r, "key table");
            }
            out->own[out->n_own++] = own;
        }
        if (!grow((void **)&out->kv, &out->cap, out->n + 1, sizeof(ds_gguf_kv)))
            return rd_oom(r, "key table");
        out->kv[out->n] = kv;
        int64_t dup;
        if (ds_gguf_index_add(&out->ix, out->kv, sizeof(ds_gguf_kv), out->n, &dup))
            return rd_oom(r, "key table");
        if (dup >= 0)
            return rd_fail(r, key_at, "name", "duplicate key (first is key #%lld)",
                           (long long)dup);
        out->n++;
        if ((st = check_special_key(r, val_at, &kv, alignment, split))) return st;
    }
    r->item = NULL;
    return DS_OK;
}

/* Tensor infos: appends to g->tensors; info_at[k] gets the offset of the
 * offset field of the k-th tensor of this shard (for later messages). */
static ds_status rd_tensors(rd *r, ds_gguf *g, int shard, uint64_t n_t, uint64_t **info_at) {
    ds_status st;
    int64_t cap_at = 0;
    for (uint64_t i = 0; i < n_t; i++) {
        ds_gguf_tensor t;
        memset(&t, 0, sizeof t);
        r->item = "tensor";
        r->item_i = (int64_t)i;
        r->item_name.len = 0;
        size_t name_at = r->off;
        if ((st = rd_str(r, "name", &t.name))) return st;
        r->item_name = t.name;
        size_t at = r->off;
        if ((st = rd_u32(r, "n_dims", &t.n_dims))) return st;
        if (t.n_dims < 1 || t.n_dims > 4)
            return rd_fail(r, at, "n_dims", "%u is not in 1..4", t.n_dims);
        for (int d = 0; d < 4; d++) t.ne[d] = 1;
        uint64_t n_el = 1;
        for (uint32_t d = 0; d < t.n_dims; d++) {
            uint64_t ne;
            at = r->off;
            if ((st = rd_u64(r, "ne", &ne))) return st;
            if (ne > (uint64_t)INT64_MAX || !ds_mul_ok(n_el, ne, &n_el) ||
                n_el > (uint64_t)INT64_MAX)
                return rd_fail(r, at, "ne", "ne[%u] = %llu overflows the element count", d,
                               (unsigned long long)ne);
            t.ne[d] = (int64_t)ne;
        }
        at = r->off;
        if ((st = rd_u32(r, "type", &t.type))) return st;
        const ds_type_traits *tr = ds_type_info(t.type);
        if (!tr) return rd_fail(r, at, "type", "unknown ggml type id %u", t.type);
        if (t.ne[0] % tr->block_elems)
            return rd_fail(r, at, "type", "ne[0] = %lld is not a multiple of the %s block (%d)",
                           (long long)t.ne[0], tr->name, tr->block_elems);
        /* ds_row_bytes does not check overflow: bound the row first. */
        uint64_t row, nb = 0;
        bool ok = ds_mul_ok((uint64_t)(t.ne[0] / tr->block_elems), (uint64_t)tr->block_bytes,
                            &row) && row <= SIZE_MAX;
        if (ok) {
            DS_ASSERT(row == ds_row_bytes((ds_type)t.type, t.ne[0]));
            ok = ds_mul_ok(row, (uint64_t)t.ne[1], &nb) && ds_mul_ok(nb, (uint64_t)t.ne[2], &nb) &&
                 ds_mul_ok(nb, (uint64_t)t.ne[3], &nb);
        }
        if (!ok) return rd_fail(r, at, "type", "tensor size overflows 64 bits");
        t.nbytes = nb;
        at = r->off;
        if ((st = rd_u64(r, "offset", &t.offset))) return st;
        t.shard = shard;

        if (!grow((void **)&g->tensors, &g->cap_tensors, g->n_tensors + 1, sizeof t) ||
            !grow((void **)info_at, &cap_at, (int64_t)i + 1, sizeof(uint64_t)))
            return rd_oom(r, "tensor table");
        g->tensors[g->n_tensors] = t;
        (*info_at)[i] = at;
        int64_t dup;
        if (ds_gguf_index_add(&g->tensor_index, g->tensors, sizeof t, g->n_tensors, &dup))
            return rd_oom(r, "tensor table");
        if (dup >= 0)
            return rd_fail(r, name_at, "name", "duplicate tensor name (first is tensor #%lld%s)",
                           (long long)dup, g->tensors[dup].shard != shard ? " of another shard" : "");
        g->n_tensors++;
    }
    r->item = NULL;
    return DS_OK;
}

/* "GGUF", version, counts. */
static ds_status rd_header(rd *r, uint32_t *version, uint64_t *n_t, uint64_t *n_kv) {
    const uint8_t *m = NULL;
    ds_status st = rd_bytes(r, "magic", 4, &m);
    if (st) return st;
    if (memcmp(m, "GGUF", 4) != 0) {
        char s[8];
        printable(s, sizeof s, (const char *)m, 4);
        return rd_fail(r, 0, "magic", "'%s' is not 'GGUF' (not a GGUF file)", s);
    }
    if ((st = rd_u32(r, "version", version))) return st;
    uint32_t v = *version;
    if (v == 1)
        return rd_fail(r, 4, "version", "GGUF v1 is not supported (re-convert the model)");
    if (v != 2 && v != 3) {
        uint32_t sw = __builtin_bswap32(v);
        if (sw >= 1 && sw <= 3)
            return rd_fail(r, 4, "version", "big-endian GGUF (v%u) is not supported", sw);
        return rd_fail(r, 4, "version", "unsupported GGUF version %u", v);
    }
    if ((st = rd_u64(r, "tensor count", n_t))) return st;
    if ((st = rd_u64(r, "kv count", n_kv))) return st;
    size_t left = rd_left(r);
    uint64_t need_t, need_kv, need;
    if (!ds_mul_ok(*n_kv, MIN_KV_BYTES, &need_kv) || need_kv > left)
        return rd_fail(r, 16, "kv count", "%llu keys cannot fit in the %zu bytes left",
                       (unsigned long long)*n_kv, left);
    if (!ds_mul_ok(*n_t, MIN_TENSOR_BYTES, &need_t) || !ds_add_ok(need_t, need_kv, &need) ||
        need > left)
        return rd_fail(r, 8, "tensor count", "%llu tensors cannot fit in the %zu bytes left",
                       (unsigned long long)*n_t, left);
    return DS_OK;
}

ds_status ds_gguf_parse_shard(ds_gguf *g, int shard, uint32_t expect_count, ds_gguf_split *split,
                              ds_error *err) {
    ds_gguf_shard *sh = &g->shards[shard];
    rd r = { .p = sh->buf, .len = sh->len, .file = sh->path, .err = err };
    uint64_t n_t = 0, n_kv = 0, *info_at = NULL;
    uint32_t alignment = DS_GGUF_DEFAULT_ALIGNMENT;
    kvvec kv = { 0 };
    int64_t first_t = g->n_tensors;
    memset(split, 0, sizeof *split);

    ds_status st = rd_header(&r, &sh->version, &n_t, &n_kv);
    if (!st) st = rd_kvs(&r, n_kv, &kv, &alignment, split);
    /* A sibling that is not the shard its name says (a stale or mixed-up set)
     * is reported as such, not as the duplicate tensors it would cause. */
    if (!st && shard > 0 && (!split->has_no || split->no != (uint32_t)shard))
        st = rd_fail(&r, split->has_no ? split->no_at : 24, "split.no",
                     "%s, expected %d for shard %d of %u", split->has_no ? "wrong value" : "missing",
                     shard, shard + 1, expect_count);
    if (!st && shard > 0 && (!split->has_count || split->count != expect_count))
        st = rd_fail(&r, 24, "split.count", "is not %u as in the first shard", expect_count);
    if (!st) st = rd_tensors(&r, g, shard, n_t, &info_at);
    if (st) goto done;

    /* Data starts at the next multiple of the alignment; with no tensor data
     * the file may end before it (vocab-only files do). */
    uint64_t pad = (alignment - r.off % alignment) % alignment;
    if (!ds_add_ok(r.off, pad, &sh->data_start)) {
        st = rd_fail(&r, r.off, "data start", "overflows 64 bits");
        goto done;
    }
    for (int64_t i = first_t; i < g->n_tensors; i++) {
        ds_gguf_tensor *t = &g->tensors[i];
        uint64_t start, end;
        r.item = "tensor";
        r.item_i = i - first_t;
        r.item_name = t->name;
        size_t at = (size_t)info_at[i - first_t];
        if (t->offset % alignment) {
            st = rd_fail(&r, at, "offset", "%llu is not a multiple of the alignment %u",
                         (unsigned long long)t->offset, alignment);
            goto done;
        }
        if (!ds_add_ok(sh->data_start, t->offset, &start) || !ds_add_ok(start, t->nbytes, &end) ||
            end > sh->len) {
            st = rd_fail(&r, at, "offset",
                         "data [%llu, +%llu) from the data start %llu ends past the file (%zu bytes)",
                         (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                         (unsigned long long)sh->data_start, sh->len);
            goto done;
        }
        t->data = sh->buf + start;
    }

    if (shard == 0) { /* the keys of the first shard become the handle's */
        for (int64_t i = 0; i < kv.n_own; i++)
            if ((st = ds_gguf_own(g, kv.own[i]))) {
                kv.own[i] = NULL;
                for (int64_t j = i + 1; j < kv.n_own; j++) free(kv.own[j]);
                kv.n_own = 0;
                st = ds_error_set(err, DS_ERR_OOM, "%s: key table: out of memory", sh->path);
                goto done;
            }
        kv.n_own = 0;
        g->kvs = kv.kv;
        g->n_kv = kv.n;
        g->cap_kv = kv.cap;
        g->kv_index = kv.ix;
        kv.kv = NULL;
        kv.ix = (ds_gguf_index){ 0 };
    }
done:
    kvvec_free(&kv);
    free(info_at);
    return st;
}
