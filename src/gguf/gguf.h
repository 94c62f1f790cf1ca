/* gguf.h: read (mmap, validated) and write GGUF v2/v3 files, split shards too.
 *
 * Byte layout (little-endian):
 *   "GGUF" u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x  { str key | u32 type | value }       str = u64 len + bytes
 *   n_tensors x { str name | u32 n_dims (<=4) | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   padding to general.alignment (default 32), then tensor data; offsets are
 *   relative to the data start, aligned, and must lie inside the file.
 * Value types: 0 u8 1 i8 2 u16 3 i16 4 u32 5 i32 6 f32 7 bool 8 str 9 array
 *   (u32 elem type, u64 count, elems) 10 u64 11 i64 12 f64.
 * Split files "<base>-00001-of-0000N.gguf": each shard is a complete GGUF with
 * split.no (u16), split.count (u16), split.tensors.count (i32); the reader
 * opens all shards from the first and presents one key table (the first
 * shard's) and one tensor table.
 * Not a model loader: it knows nothing about deepseek2 names. */
#ifndef DS_GGUF_H
#define DS_GGUF_H

#include "../core/core.h"

typedef enum ds_gguf_vtype {
    DS_GGUF_U8 = 0, DS_GGUF_I8 = 1, DS_GGUF_U16 = 2, DS_GGUF_I16 = 3,
    DS_GGUF_U32 = 4, DS_GGUF_I32 = 5, DS_GGUF_F32 = 6, DS_GGUF_BOOL = 7,
    DS_GGUF_STR = 8, DS_GGUF_ARR = 9, DS_GGUF_U64 = 10, DS_GGUF_I64 = 11,
    DS_GGUF_F64 = 12,
} ds_gguf_vtype;

/* A string inside the mapping (or owned by an override): not NUL-terminated. */
typedef struct ds_gguf_str {
    const char *ptr;
    uint64_t len;
} ds_gguf_str;

typedef struct ds_gguf_value {
    ds_gguf_vtype type;
    union {
        uint64_t u64;  /* U8 U16 U32 U64 */
        int64_t i64;   /* I8 I16 I32 I64 */
        double f64;    /* F32 F64 */
        bool b;        /* BOOL */
        ds_gguf_str str;
        struct {
            ds_gguf_vtype type; /* element type; never ARR (nested arrays rejected) */
            uint64_t n;
            const void *data;   /* n packed elements (numeric/bool types), in the mapping */
            ds_gguf_str *strs;  /* n strings when type == STR (owned by the reader), else NULL */
        } arr;
    };
} ds_gguf_value;

typedef struct ds_gguf_kv {
    ds_gguf_str key;
    ds_gguf_value val;
} ds_gguf_kv;

typedef struct ds_gguf_tensor {
    ds_gguf_str name;
    uint32_t n_dims;
    int64_t ne[4];        /* ne[0] fastest; unused dims are 1 */
    uint32_t type;        /* ggml type id (ds_type) */
    uint64_t offset;      /* from the data start of its shard */
    uint64_t nbytes;      /* checked: ne product * type size, inside the shard */
    const uint8_t *data;  /* into the shard's read-only mapping */
    int shard;            /* 0-based shard index */
} ds_gguf_tensor;

typedef struct ds_gguf ds_gguf; /* opaque */

/* Opens path; if it is the first shard of a split set, finds and maps the
 * others (same directory, same naming). Every field is checked against the
 * file before use; errors name the file, the field and the byte offset.
 * Caller frees with ds_gguf_close. */
ds_status ds_gguf_open(const char *path, ds_gguf **out, ds_error *err);
/* Same over a caller-owned buffer (not copied; must outlive the handle).
 * Used by the fuzz target and tests. name appears in error messages. */
ds_status ds_gguf_open_memory(const void *buf, size_t len, const char *name,
                              ds_gguf **out, ds_error *err);
void ds_gguf_close(ds_gguf *g);

uint32_t ds_gguf_version(const ds_gguf *g);
int ds_gguf_n_shards(const ds_gguf *g);
uint64_t ds_gguf_total_bytes(const ds_gguf *g); /* all shards' file sizes */

/* keys */
int64_t ds_gguf_n_kv(const ds_gguf *g);
const ds_gguf_kv *ds_gguf_kv_at(const ds_gguf *g, int64_t i);
const ds_gguf_value *ds_gguf_find(const ds_gguf *g, const char *key); /* NULL if absent */
/* Typed getters: return true and store the value if the key exists and its
 * type converts without loss (any integer type to int64/uint32 in range,
 * F32/F64 to double/float, BOOL); false otherwise (out untouched). */
bool ds_gguf_get_i64(const ds_gguf *g, const char *key, int64_t *out);
bool ds_gguf_get_u32(const ds_gguf *g, const char *key, uint32_t *out);
bool ds_gguf_get_f32(const ds_gguf *g, const char *key, float *out);
bool ds_gguf_get_bool(const ds_gguf *g, const char *key, bool *out);
/* Returns a NUL-terminated copy into buf (truncated to cap-1); false if absent/not STR. */
bool ds_gguf_get_str(const ds_gguf *g, const char *key, char *buf, size_t cap);
/* Array accessor: returns the ARR value or NULL if absent / not an array of elem_type
 * (pass -1 for any element type). */
const ds_gguf_value *ds_gguf_get_arr(const ds_gguf *g, const char *key, int elem_type);

/* llama.cpp's --override-kv "KEY=TYPE:VALUE" (TYPE int|float|bool|str).
 * Replaces the key's value (or adds it) in this handle only. */
ds_status ds_gguf_override(ds_gguf *g, const char *spec, ds_error *err);

/* tensors */
int64_t ds_gguf_n_tensors(const ds_gguf *g);
const ds_gguf_tensor *ds_gguf_tensor_at(const ds_gguf *g, int64_t i);
const ds_gguf_tensor *ds_gguf_find_tensor(const ds_gguf *g, const char *name); /* NULL if absent */

/* ---- writer ---------------------------------------------------------------
 * Builds a GGUF v3 in memory (keys + tensor infos), streams tensor data from
 * the caller's buffers (or fill callbacks) when writing. Used by `synth` and tests. */
typedef struct ds_gguf_writer ds_gguf_writer;

ds_gguf_writer *ds_gguf_writer_create(void); /* NULL on OOM */
void ds_gguf_writer_free(ds_gguf_writer *w);
/* Setting an existing key replaces it. Strings are copied. */
ds_status ds_gguf_writer_set_u32(ds_gguf_writer *w, const char *key, uint32_t v);
ds_status ds_gguf_writer_set_i32(ds_gguf_writer *w, const char *key, int32_t v);
ds_status ds_gguf_writer_set_u64(ds_gguf_writer *w, const char *key, uint64_t v);
ds_status ds_gguf_writer_set_f32(ds_gguf_writer *w, const char *key, float v);
ds_status ds_gguf_writer_set_bool(ds_gguf_writer *w, const char *key, bool v);
ds_status ds_gguf_writer_set_str(ds_gguf_writer *w, const char *key, const char *v);
/* Numeric/bool array: n elements of elem_type packed in data (copied). */
ds_status ds_gguf_writer_set_arr(ds_gguf_writer *w, const char *key, ds_gguf_vtype elem_type,
                                 const void *data, uint64_t n);
ds_status ds_gguf_writer_set_str_arr(ds_gguf_writer *w, const char *key,
                                     const char *const *strs, const uint64_t *lens, uint64_t n);
/* Copies every key of g (used to re-write or re-split a file). */
ds_status ds_gguf_writer_copy_kv(ds_gguf_writer *w, const ds_gguf *g);
/* data is NOT copied: it must stay valid until the write call returns.
 * nbytes must equal the size implied by ne and type. */
ds_status ds_gguf_writer_add_tensor(ds_gguf_writer *w, const char *name, uint32_t type,
                                    uint32_t n_dims, const int64_t *ne,
                                    const void *data, uint64_t nbytes);
/* Streamed tensor data, for files too large to hold in memory (`synth`):
 * fill(ctx, offset, dst, len, err) must write bytes [offset, offset + len) of
 * the tensor to dst. During each file written it is called with consecutive
 * ranges from offset 0 up to nbytes, in order, len <= 16 MiB; it may be
 * called again for another write of the same writer. A non-OK return aborts
 * the write (the partial file is removed) with that status and err. */
typedef ds_status (*ds_gguf_fill_fn)(void *ctx, uint64_t offset, void *dst, size_t len, ds_error *err);
/* Like add_tensor, with data produced by fill at write time; ctx must stay
 * valid until the write call returns. */
ds_status ds_gguf_writer_add_tensor_fn(ds_gguf_writer *w, const char *name, uint32_t type,
                                       uint32_t n_dims, const int64_t *ne, uint64_t nbytes,
                                       ds_gguf_fill_fn fill, void *ctx);
/* Writes one file. */
ds_status ds_gguf_writer_write(ds_gguf_writer *w, const char *path, ds_error *err);
/* Writes n_split shards "<prefix>-0000i-of-0000N.gguf" with the tensors spread
 * in order (balanced by bytes), split.* keys set, all keys in every shard
 * (llama.cpp's gguf-split layout). */
ds_status ds_gguf_writer_write_split(ds_gguf_writer *w, const char *prefix, int n_split,
                                     ds_error *err);

#endif
