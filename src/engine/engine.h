/* engine.h: an inference context over a loaded model — backend, KV cache,
 * scratch — and the forward pass (the layer loop of DESIGN.md §4) over a
 * batch of (token, position, sequence) rows, split into micro-batches.
 * Not scheduling or sampling: the server's scheduler and the CLI drive it. */
#ifndef DS_ENGINE_H
#define DS_ENGINE_H

#include "../backend/backend.h"

typedef struct ds_ctx_params {
    /* "ref" or "cpu": every block on that host backend, placement ignored.
     * "cuda": blocks run where the model's placement puts their weights
     * (model/placement.h): on the GPU, or on the CPU backend for blocks
     * placed on the host; a model with no GPU placement at all runs wholly
     * on CUDA0. */
    const char *device;
    /* the backend that runs blocks placed on CUDA0 (NULL = "cuda"); tests
     * name "ref" to check the per-block dispatch without a GPU */
    const char *gpu_backend;
    int n_threads;        /* 0 = all cores */
    int64_t n_ctx;        /* KV cache tokens over all sequences */
    int n_seq;            /* sequences that may be live at once */
    int n_ubatch;         /* rows per forward micro-batch (-ub) */
    ds_type kv_type;      /* F16 (default), BF16 or F32 */
    int kv_block;         /* tokens per KV block (0 = 64) */
    int gpu_experts;      /* hot routed experts of each CPU-placed layer kept on the GPU */
    const char *expert_profile; /* usage counts for that cache, loaded and saved (NULL = none) */
} ds_ctx_params;

void ds_ctx_params_default(ds_ctx_params *p);

typedef struct ds_ctx ds_ctx;

/* Creates the backend, the KV cache and all scratch; nothing is allocated
 * later by ds_ctx_decode. The model must outlive the context. */
ds_status ds_ctx_create(const ds_model *m, const ds_ctx_params *p, ds_ctx **out, ds_error *err);
void ds_ctx_free(ds_ctx *c);

typedef struct ds_batch {
    int n;
    const int32_t *tokens; /* [n] */
    const int32_t *pos;    /* [n] */
    const int32_t *seq;    /* [n] */
    const bool *logits;    /* [n] rows whose logits are wanted; NULL = all */
    /* optional [n_wanted]: each wanted row's ds_argmax_f32 id, computed where
     * the logits are (on the GPU: only ids cross the bus when the caller
     * passes no logits buffer) */
    int32_t *best;
} ds_batch;

/* Runs the batch; rows of one sequence must be in position order and the
 * positions before each row must be cached. Reserves KV for every row
 * first (DS_ERR_KV_FULL before any work if it does not fit). Writes the
 * wanted rows' logits consecutively into logits ([n_wanted][n_vocab]) and,
 * with b->best, their argmax ids; logits may be NULL (then no LM head runs
 * unless b->best asks for the ids). */
ds_status ds_ctx_decode(ds_ctx *c, const ds_batch *b, float *logits, ds_error *err);

/* Drops positions >= n_keep of seq (n_keep = 0 clears it). */
void ds_ctx_seq_truncate(ds_ctx *c, int seq, int64_t n_keep);
ds_kv *ds_ctx_kv(ds_ctx *c);
const ds_model *ds_ctx_model(const ds_ctx *c);

/* Routing capture and pinning for tests: record[il][row][k] receives the
 * chosen experts of each batch row; force (same shape) pins them. Arrays
 * are [n_layer][max_rows][n_expert_used] int32, row = index in the batch
 * given to ds_ctx_decode; a forced row whose first id is -1 is chosen
 * freely. margins (optional) [n_layer][max_rows]. Pass NULLs to turn off. */
void ds_ctx_set_routing(ds_ctx *c, int max_rows, int32_t *record, const int32_t *force, float *margins);

#endif
