/* kv.c: paged latent KV cache (see kv.h). A free-list of block ids; each
 * sequence a table of block ids in position order. */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

struct ds_kv {
    ds_kv_params p;
    size_t elem;          /* bytes per value */
    size_t block_bytes;   /* block_tokens * row_dim * elem */
    int64_t n_blocks;
    uint8_t *pool;        /* [n_layer][n_blocks][block_tokens][row_dim] */
    int64_t *free_ids;    /* stack of free block ids */
    int64_t n_free;
    int64_t **table;      /* [n_seq] -> block ids, capacity n_blocks each */
    int64_t *n_table;     /* [n_seq] */
};

ds_status ds_kv_create(const ds_kv_params *p, ds_kv **out, ds_error *err) {
    *out = NULL;
    if (p->type != DS_TYPE_F32 && p->type != DS_TYPE_F16 && p->type != DS_TYPE_BF16)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "kv cache type must be f32, f16 or bf16");
    if (p->n_layer < 1 || p->row_dim < 1 || p->block_tokens < 1 || p->n_seq < 1 || p->n_ctx < 1)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "bad kv cache size");
    ds_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    kv->p = *p;
    kv->elem = p->type == DS_TYPE_F32 ? 4 : 2;
    kv->block_bytes = (size_t)p->block_tokens * p->row_dim * kv->elem;
    kv->n_blocks = (p->n_ctx + p->block_tokens - 1) / p->block_tokens;
    uint64_t total;
    if (!ds_mul_ok(kv->block_bytes, (uint64_t)kv->n_blocks * p->n_layer, &total)) {
        free(kv);
        return ds_error_set(err, DS_ERR_INVALID_ARG, "kv cache size overflows");
    }
    kv->pool = p->no_host ? NULL : ds_aligned_alloc(total);
    kv->free_ids = malloc((size_t)kv->n_blocks * sizeof *kv->free_ids);
    kv->table = calloc((size_t)p->n_seq, sizeof *kv->table);
    kv->n_table = calloc((size_t)p->n_seq, sizeof *kv->n_table);
    bool ok = (kv->pool || p->no_host) && kv->free_ids && kv->table && kv->n_table;
    for (int s = 0; ok && s < p->n_seq; s++) ok = (kv->table[s] = malloc((size_t)kv->n_blocks * sizeof(int64_t))) != NULL;
    if (!ok) {
        long long tokens = (long long)(kv->n_blocks * p->block_tokens);
        ds_kv_free(kv);
        return ds_error_set(err, DS_ERR_OOM, "cannot allocate the kv cache: %.1f MiB for %lld tokens x %d layers",
                            total / 1048576.0, tokens, p->n_layer);
    }
    if (kv->pool) memset(kv->pool, 0, total); /* touch now: fail at start, not mid-request */
    for (int64_t i = 0; i < kv->n_blocks; i++) kv->free_ids[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    *out = kv;
    return DS_OK;
}

void ds_kv_free(ds_kv *kv) {
    if (!kv) return;
    if (kv->table)
        for (int s = 0; s < kv->p.n_seq; s++) free(kv->table[s]);
    free(kv->table);
    free(kv->n_table);
    free(kv->free_ids);
    ds_aligned_free(kv->pool);
    free(kv);
}

ds_status ds_kv_reserve(ds_kv *kv, int seq, int64_t n_tokens, ds_error *err) {
    DS_ASSERT(seq >= 0 && seq < kv->p.n_seq);
    int64_t need = (n_tokens + kv->p.block_tokens - 1) / kv->p.block_tokens - kv->n_table[seq];
    if (need <= 0) return DS_OK;
    if (need > kv->n_free)
        return ds_error_set(err, DS_ERR_KV_FULL,
                            "kv cache full: sequence %d needs %lld tokens, %lld of %lld cache tokens are free",
                            seq, (long long)n_tokens, (long long)(kv->n_free * kv->p.block_tokens),
                            (long long)(kv->n_blocks * kv->p.block_tokens));
    while (need-- > 0) kv->table[seq][kv->n_table[seq]++] = kv->free_ids[--kv->n_free];
    return DS_OK;
}

void ds_kv_truncate(ds_kv *kv, int seq, int64_t n_tokens) {
    DS_ASSERT(seq >= 0 && seq < kv->p.n_seq);
    int64_t keep = (n_tokens + kv->p.block_tokens - 1) / kv->p.block_tokens;
    while (kv->n_table[seq] > keep) kv->free_ids[kv->n_free++] = kv->table[seq][--kv->n_table[seq]];
}

int64_t ds_kv_block_id(const ds_kv *kv, int seq, int64_t b) {
    DS_ASSERT(seq >= 0 && seq < kv->p.n_seq && b >= 0 && b < kv->n_table[seq]);
    return kv->table[seq][b];
}

int64_t ds_kv_n_blocks(const ds_kv *kv) { return kv->n_blocks; }

static uint8_t *row_ptr(const ds_kv *kv, int layer, int seq, int64_t pos) {
    DS_ASSERT(kv->pool != NULL);
    DS_ASSERT(layer >= 0 && layer < kv->p.n_layer && seq >= 0 && seq < kv->p.n_seq);
    int64_t b = pos / kv->p.block_tokens;
    DS_ASSERT(pos >= 0 && b < kv->n_table[seq]);
    int64_t id = kv->table[seq][b];
    size_t off = ((size_t)layer * kv->n_blocks + id) * kv->block_bytes +
                 (size_t)(pos % kv->p.block_tokens) * kv->p.row_dim * kv->elem;
    return kv->pool + off;
}

void ds_kv_store(ds_kv *kv, int layer, int seq, int64_t pos, const float *row) {
    uint8_t *dst = row_ptr(kv, layer, seq, pos);
    const int n = kv->p.row_dim;
    if (kv->p.type == DS_TYPE_F32) { memcpy(dst, row, (size_t)n * 4); return; }
    uint16_t *d = (uint16_t *)dst;
    if (kv->p.type == DS_TYPE_F16) for (int i = 0; i < n; i++) d[i] = ds_f32_to_fp16(row[i]);
    else for (int i = 0; i < n; i++) d[i] = ds_f32_to_bf16(row[i]);
}

void ds_kv_load(const ds_kv *kv, int layer, int seq, int64_t pos, float *row) {
    const uint8_t *src = row_ptr(kv, layer, seq, pos);
    const int n = kv->p.row_dim;
    if (kv->p.type == DS_TYPE_F32) { memcpy(row, src, (size_t)n * 4); return; }
    const uint16_t *s = (const uint16_t *)src;
    if (kv->p.type == DS_TYPE_F16) for (int i = 0; i < n; i++) row[i] = ds_fp16_to_f32(s[i]);
    else for (int i = 0; i < n; i++) row[i] = ds_bf16_to_f32(s[i]);
}

const void *ds_kv_block(const ds_kv *kv, int layer, int seq, int64_t b) {
    DS_ASSERT(kv->pool != NULL && b >= 0 && b < kv->n_table[seq]);
    return kv->pool + ((size_t)layer * kv->n_blocks + kv->table[seq][b]) * kv->block_bytes;
}

ds_type ds_kv_type(const ds_kv *kv) { return kv->p.type; }
int ds_kv_row_dim(const ds_kv *kv) { return kv->p.row_dim; }
int ds_kv_block_tokens(const ds_kv *kv) { return kv->p.block_tokens; }
int ds_kv_n_seq(const ds_kv *kv) { return kv->p.n_seq; }
int64_t ds_kv_used_tokens(const ds_kv *kv) { return (kv->n_blocks - kv->n_free) * kv->p.block_tokens; }
int64_t ds_kv_capacity_tokens(const ds_kv *kv) { return kv->n_blocks * kv->p.block_tokens; }
