/* backend.h: the block-level interface every compute backend implements
 * (DESIGN.md §2): attention, dense FFN, MoE routing, routed experts, shared
 * expert and the LM head, each over a batch of rows of f32 activations in
 * host memory. Blocks (not tiny ops) let a backend fuse freely while the
 * forward pass stays backend-agnostic. Implementations: ref/ (the scalar
 * oracle) and cpu/ (SIMD + threads). Not the layer loop: see engine/. */
#ifndef DS_BACKEND_H
#define DS_BACKEND_H

#include "../kv/kv.h"
#include "../model/model.h"

/* Row metadata of a batch: row r is token position pos[r] of sequence seq[r]. */
typedef struct ds_rows {
    int n;
    const int32_t *pos; /* [n] */
    const int32_t *seq; /* [n] */
} ds_rows;

typedef struct ds_backend ds_backend;

typedef struct ds_backend_params {
    int n_threads;     /* cpu: pool size (0 = all cores) */
    int max_rows;      /* largest batch a block is called with (scratch size) */
    int max_ctx;       /* longest sequence attention will see */
    /* device backends: true = hold only the weights placed on this device
     * (ds_tensor.device, see model/placement.h); false = hold every weight */
    bool placed;
    int gpu;           /* device backends: which GPU (CUDA<gpu> of the placement) */
    /* device backends: the host backend that computes the blocks placed on
     * the CPU inside the forward hook (routed experts); NULL = none */
    ds_backend *host;
    /* device backends: routed experts of host-placed layers to keep on the
     * device, per layer, chosen by online usage counts (--gpu-experts) */
    int gpu_experts;
    /* with gpu_experts: usage counts read at create (if the file exists) and
     * written at free, so a restart begins with a warm cache; NULL = none */
    const char *expert_profile;
} ds_backend_params;

struct ds_backend {
    const char *name;
    void *impl;
    bool device_kv;   /* keeps the KV rows in its own (device) memory: the engine's
                         ds_kv then holds only block tables (ds_kv_params.no_host) */
    /* out[n][n_embd] = attention of layer il on residual h[n][n_embd]:
     * attn_norm, q and kv projections, RoPE, writes each row's latent
     * [c_kv | k_pe] to kv at (seq, pos), then MLA of row r over positions
     * [0, pos[r]] of its sequence, output projection. Positions below pos
     * must already be in the cache (earlier calls or earlier rows). */
    ds_status (*attn)(ds_backend *be, const ds_model *m, int il, const ds_rows *rows,
                      const float *h, float *out, ds_kv *kv);
    /* out[n][n_embd] = down(silu(gate y) * up y) for the layer's dense FFN;
     * y is the ffn-normed input. */
    ds_status (*dense_ffn)(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out);
    /* Router: ids[n][k] and weights[n][k] (k = n_expert_used); forced[n][k]
     * pins the experts (NULL = choose; a row whose first id is < 0 chooses
     * too); margin[n] (may be NULL) gets the selection margin of each row. */
    ds_status (*moe_route)(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                           const int32_t *forced, int32_t *ids, float *weights, float *margin);
    /* out[r] += sum_j weights[r][j] * expert_{ids[r][j]}(y[r]); ids < 0 are
     * skipped (experts computed elsewhere). */
    ds_status (*moe_experts)(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                             const int32_t *ids, const float *weights, float *out);
    /* out[n][n_embd] = shared expert(y) (overwrites). */
    ds_status (*shared_expert)(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out);
    /* logits[n][n_vocab] = output * (RMSNorm(h) * output_norm). */
    ds_status (*lm_head)(ds_backend *be, const ds_model *m, int n, const float *h, float *logits);
    /* Optional (NULL = the engine runs the blocks above): a whole micro-batch
     * — embedding, every layer, LM head — in one call, so a device backend
     * keeps activations resident and replays one captured graph per decode
     * step. tokens[rows->n]; want[n] selects the rows whose logits are
     * written consecutively to logits (NULL = all); best (optional) gets
     * each wanted row's ds_argmax_f32 id, also when logits is NULL. The KV
     * cache's block tables (ds_kv_block_id) say where each position lives; a
     * backend may keep its own storage of the same geometry (see
     * ds_kv_params.no_host). */
    ds_status (*forward)(ds_backend *be, const ds_model *m, const ds_rows *rows, const int32_t *tokens,
                         const bool *want, ds_kv *kv, float *logits, int32_t *best, int *n_logits);
    void (*free)(ds_backend *be);
};

ds_status ds_backend_ref_create(const ds_model *m, const ds_backend_params *p, ds_backend **out, ds_error *err);
ds_status ds_backend_cpu_create(const ds_model *m, const ds_backend_params *p, ds_backend **out, ds_error *err);
/* By name: "ref" or "cpu"; unknown names are DS_ERR_INVALID_ARG. */
ds_status ds_backend_create(const char *name, const ds_model *m, const ds_backend_params *p,
                            ds_backend **out, ds_error *err);

/* y[n] = x / sqrt(mean(x^2) + eps) * w, sum in double (shared by all host code). */
void ds_rms_norm(const float *x, const float *w, int n, float eps, float *y);
static inline float ds_silu(float x) { return x / (1.0f + __builtin_expf(-x)); }

#endif
