/* gguf_internal.h: the handle layout and helpers shared by the src/gguf/ files
 * (and tests/test_gguf.c, which also uses the generic writer setter).
 * Not an interface for other modules: use gguf.h. */
#ifndef DS_GGUF_INTERNAL_H
#define DS_GGUF_INTERNAL_H

#include "gguf.h"

#define DS_GGUF_DEFAULT_ALIGNMENT 32u

/* One file of the set (or the caller's buffer). */
typedef struct ds_gguf_shard {
    const uint8_t *buf;  /* [len] the whole shard: mapping or caller memory */
    size_t len;
    void *map;           /* mmap base to munmap (== buf); NULL when not ours */
    char *path;          /* owned copy; the name used in messages */
    uint32_t version;
    uint64_t data_start; /* aligned start of tensor data (may be > len when no data) */
} ds_gguf_shard;

/* Open-addressing hash of names -> array index. The names live in the array
 * (a ds_gguf_str at offset 0 of each element, stride bytes apart), so every
 * call passes the array's current base. */
typedef struct ds_gguf_index {
    uint64_t *slot; /* [cap] index + 1, 0 = empty */
    uint64_t cap;   /* power of two, or 0 */
    uint64_t n;
} ds_gguf_index;

/* The split.* keys of one shard, as read (validated integer types). */
typedef struct ds_gguf_split {
    bool has_no, has_count, has_total;
    uint32_t no, count; /* u16 range */
    int64_t total;      /* i32 range, >= 0 */
    size_t no_at;       /* byte offset of split.no's value, for messages */
} ds_gguf_split;

struct ds_gguf {
    ds_gguf_shard *shards; /* [n_shards] */
    int n_shards;

    ds_gguf_kv *kvs;       /* [n_kv] the first shard's keys, then overrides */
    int64_t n_kv, cap_kv;
    ds_gguf_index kv_index;

    ds_gguf_tensor *tensors; /* [n_tensors] all shards, in file order */
    int64_t n_tensors, cap_tensors;
    ds_gguf_index tensor_index;

    void **owned;          /* [n_owned] string arrays, override copies: freed at close */
    int64_t n_owned, cap_owned;
};

/* gguf_read.c: parses g->shards[shard] (buf/len/path filled in by the caller).
 * Appends the shard's tensors to g->tensors (duplicates across shards are an
 * error). Shard 0's keys become g's key table; other shards' keys are checked
 * and dropped. split gets the shard's split.* values; for shards after the
 * first, expect_count is the set's split.count, and split.no/split.count are
 * checked before the tensor infos. On error g may hold a partial table; the
 * caller closes it. */
ds_status ds_gguf_parse_shard(ds_gguf *g, int shard, uint32_t expect_count, ds_gguf_split *split,
                              ds_error *err);

/* Bytes of one packed element of a numeric/bool value type; 0 for STR, ARR
 * and unknown ids. */
size_t ds_gguf_vtype_size(uint32_t t);

/* gguf_kv.c: index primitives. find returns the array index or -1. add
 * inserts element i unless its name is already present, in which case *dup
 * gets the existing index (else -1); returns DS_ERR_OOM on allocation failure. */
int64_t ds_gguf_index_find(const ds_gguf_index *ix, const void *base, size_t stride,
                           const char *s, uint64_t len);
ds_status ds_gguf_index_add(ds_gguf_index *ix, const void *base, size_t stride,
                            int64_t i, int64_t *dup);
void ds_gguf_index_free(ds_gguf_index *ix);

/* Registers p to be freed at ds_gguf_close. On failure frees p and returns
 * DS_ERR_OOM. */
ds_status ds_gguf_own(ds_gguf *g, void *p);

/* gguf_write.c: sets key to any value (every scalar type, arrays of any
 * element type; strings and array data copied). What the typed setters and
 * copy_kv use; tests use it for the types without a public setter. */
ds_status ds_gguf_writer_set_value(ds_gguf_writer *w, const char *key, const ds_gguf_value *v);

#endif
