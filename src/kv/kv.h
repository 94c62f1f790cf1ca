/* kv.h: the latent KV cache — one row of [c_kv | k_pe] (kv_lora + d_rope
 * values) per token per layer, in F32, F16 or BF16, paged in fixed blocks
 * of tokens. Sequences own ordered block tables; a block id addresses the
 * same slot in every layer. Not attention: backends read rows from here. */
#ifndef DS_KV_H
#define DS_KV_H

#include "../core/core.h"
#include "../quant/quant.h"

typedef struct ds_kv ds_kv;

typedef struct ds_kv_params {
    int n_layer;
    int row_dim;          /* kv_lora + d_rope (576 for V3) */
    ds_type type;         /* DS_TYPE_F32, DS_TYPE_F16 or DS_TYPE_BF16 */
    int64_t n_ctx;        /* total tokens over all sequences (rounded up to blocks) */
    int block_tokens;     /* tokens per block (e.g. 64) */
    int n_seq;            /* sequence slots */
    bool no_host;         /* keep only the block tables: a device backend holds the rows */
} ds_kv_params;

/* Allocates the whole pool up front (nothing is allocated later); an
 * allocation failure is DS_ERR_OOM with the size in the message. */
ds_status ds_kv_create(const ds_kv_params *p, ds_kv **out, ds_error *err);
void ds_kv_free(ds_kv *kv);

/* Makes room for positions [0, n_tokens) of seq, taking free blocks; on
 * DS_ERR_KV_FULL nothing changes and the message gives the numbers. */
ds_status ds_kv_reserve(ds_kv *kv, int seq, int64_t n_tokens, ds_error *err);
/* Keeps positions [0, n_tokens) of seq and returns the other blocks. */
void ds_kv_truncate(ds_kv *kv, int seq, int64_t n_tokens);

/* Row access; pos must be reserved. */
void ds_kv_store(ds_kv *kv, int layer, int seq, int64_t pos, const float *row);
void ds_kv_load(const ds_kv *kv, int layer, int seq, int64_t pos, float *row);
/* Raw block access for fast paths: pointer to the first row of the b-th
 * block of seq in that layer (block_tokens rows of row_dim elements). */
const void *ds_kv_block(const ds_kv *kv, int layer, int seq, int64_t b);

/* Pool index of the b-th block of seq (the same in every layer); a device
 * backend addresses its own storage of [n_layer][n_blocks][block_tokens]
 * [row_dim] with it. */
int64_t ds_kv_block_id(const ds_kv *kv, int seq, int64_t b);
int64_t ds_kv_n_blocks(const ds_kv *kv);
ds_type ds_kv_type(const ds_kv *kv);
int ds_kv_row_dim(const ds_kv *kv);
int ds_kv_block_tokens(const ds_kv *kv);
int ds_kv_n_seq(const ds_kv *kv);
int64_t ds_kv_used_tokens(const ds_kv *kv);     /* blocks in use * block_tokens */
int64_t ds_kv_capacity_tokens(const ds_kv *kv); /* all blocks * block_tokens */

#endif
