/* model.h: a deepseek2-architecture model bound to GGUF tensors — its
 * hyperparameters (DESIGN.md §3), per-layer weights with shapes, placement
 * (which device holds each tensor) and the small pieces of model math every
 * backend shares (YaRN frequencies, attention scale, expert selection).
 * Not a forward pass: see engine/ and backend/. */
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include "../core/core.h"
#include "../gguf/gguf.h"
#include "../quant/quant.h"

#define DS_MAX_LAYERS 256
#define DS_MAX_EXPERTS 1024
#define DS_MAX_EXPERTS_USED 64
#define DS_MAX_DEVICES 16

typedef enum ds_gating { DS_GATING_SOFTMAX = 1, DS_GATING_SIGMOID = 2 } ds_gating;

typedef struct ds_hparams {
    int n_layer;          /* decoder layers run by the forward pass (MTP layers excluded) */
    int n_layer_file;     /* block_count as stored (includes nextn layers) */
    int n_nextn;          /* MTP layers at the end (nextn_predict_layers) */
    int n_ctx_train;
    int n_embd;           /* 7168 */
    int n_ff;             /* dense FFN width, 18432 */
    int n_head;           /* 128 */
    int q_lora;           /* 1536; 0 when the file has attn_q (V2-Lite style) */
    int kv_lora;          /* 512 */
    int d_nope;           /* 128 */
    int d_rope;           /* 64 */
    int d_v;              /* 128 */
    int n_vocab;
    int n_dense_lead;     /* leading dense layers (3) */
    int n_expert;         /* 256 */
    int n_expert_used;    /* 8 */
    int n_expert_shared;  /* 1 */
    int n_ff_exp;         /* 2048 */
    int n_group;          /* 8; 0 = no group limit (key absent) */
    int n_group_used;     /* 4 */
    ds_gating gating;
    bool expert_weights_norm;
    float expert_weights_scale; /* 2.5 */
    float rms_eps;
    float rope_base;
    bool yarn;            /* rope.scaling.type == yarn */
    float yarn_factor;    /* 40 */
    int yarn_orig_ctx;    /* 4096 */
    float yarn_log_mul;   /* 0.1 (= 0.1 * mscale_all_dim) */
    float yarn_beta_fast, yarn_beta_slow; /* 32, 1 */
    bool mla_layout;      /* file has attn_k_b / attn_v_b (else attn_kv_b) */
    /* derived */
    int d_qk;             /* d_nope + d_rope (192) */
    int d_kv_row;         /* kv_lora + d_rope: one cached latent row (576) */
    double kq_scale;      /* mscale^2 / sqrt(d_qk) */
} ds_hparams;

/* A weight bound to the file: shape [ne3][ne2][ne1][ne0], ne0 fastest. */
typedef struct ds_tensor {
    const char *name;     /* NUL-terminated copy (owned by the model) */
    ds_type type;
    int64_t ne[4];
    const void *data;     /* mmap'd file data, or model-owned derived data */
    size_t row_bytes;     /* bytes of one ne0 row */
    int device;           /* index into the model's device list (0 = cpu) */
} ds_tensor;

static inline bool ds_tensor_present(const ds_tensor *t) { return t->data != NULL; }
static inline const void *ds_tensor_row(const ds_tensor *t, int64_t row) {
    return (const uint8_t *)t->data + (size_t)row * t->row_bytes;
}

typedef struct ds_layer {
    bool is_moe;
    ds_tensor attn_norm;      /* [n_embd] f32 */
    ds_tensor q_a;            /* [q_lora][n_embd] */
    ds_tensor q_a_norm;       /* [q_lora] */
    ds_tensor q_b;            /* [n_head*d_qk][q_lora], per head [nope | rope] */
    ds_tensor q;              /* [n_head*d_qk][n_embd] when q_lora == 0 */
    ds_tensor kv_a;           /* [kv_lora + d_rope][n_embd], rows [c_kv | k_pe] */
    ds_tensor kv_a_norm;      /* [kv_lora] */
    ds_tensor k_b;            /* [n_head][kv_lora][d_nope]: maps q_nope -> latent */
    ds_tensor v_b;            /* [n_head][d_v][kv_lora]: maps latent -> v */
    ds_tensor kv_b;           /* legacy [n_head*(d_nope+d_v)][kv_lora] (source of k_b/v_b) */
    ds_tensor attn_out;       /* [n_embd][n_head*d_v] */
    ds_tensor ffn_norm;       /* [n_embd] */
    /* dense */
    ds_tensor ffn_gate, ffn_up; /* [n_ff][n_embd] */
    ds_tensor ffn_down;         /* [n_embd][n_ff] */
    /* MoE */
    ds_tensor gate_inp;       /* [n_expert][n_embd] f32 router */
    ds_tensor exp_bias;       /* [n_expert] f32 selection bias (may be absent) */
    ds_tensor gate_exps, up_exps; /* [n_expert][n_ff_exp][n_embd] */
    ds_tensor gate_up_exps;   /* fused [n_expert][2*n_ff_exp][n_embd], gate rows first */
    ds_tensor down_exps;      /* [n_expert][n_embd][n_ff_exp] */
    ds_tensor gate_shexp, up_shexp; /* [n_ff_exp*n_shared][n_embd] */
    ds_tensor down_shexp;     /* [n_embd][n_ff_exp*n_shared] */
} ds_layer;

typedef struct ds_model {
    ds_gguf *gguf;            /* owned */
    char arch[32];
    char name[128];
    ds_hparams hp;
    ds_tensor token_embd;     /* [n_vocab][n_embd] */
    ds_tensor output_norm;    /* [n_embd] */
    ds_tensor output;         /* [n_vocab][n_embd] (token_embd when tied) */
    ds_layer *layers;         /* [n_layer] */
    float *rope_freq;         /* [d_rope/2] YaRN-corrected angular frequency per pair */
    void **owned;             /* model-owned buffers (derived k_b/v_b, names) */
    int n_owned, cap_owned;
    void *host_copy;          /* --no-mmap: host-resident weights copied out of the file mapping */
    size_t host_copy_bytes;   /* (an anonymous mapping, freed with munmap) */
} ds_model;

typedef struct ds_model_params {
    const char *path;
    const char *const *overrides; /* --override-kv specs */
    int n_overrides;
} ds_model_params;

/* Opens the GGUF (split files too), applies overrides, reads hparams, binds
 * every tensor with shape checks, derives k_b/v_b from attn_kv_b for legacy
 * files. Errors say which key or tensor is wrong. Free with ds_model_free. */
ds_status ds_model_load(const ds_model_params *p, ds_model **out, ds_error *err);
void ds_model_free(ds_model *m);

/* Reads hparams from keys (exposed for info/tests). */
ds_status ds_hparams_read(const ds_gguf *g, ds_hparams *hp, ds_error *err);

/* Bytes a batch-1 decode step reads: always-active weights, one embedding
 * row and n_expert_used experts per MoE layer (KV excluded). */
uint64_t ds_model_decode_bytes(const ds_model *m);

/* ---- shared model math (model_math.c) ------------------------------------ */
/* freq[i] for pair i < d_rope/2: base^(-2i/d_rope) blended with /factor by the
 * YaRN ramp (DESIGN.md §4 step 5). */
void ds_rope_freqs(const ds_hparams *hp, float *freq);
/* Rotates adjacent pairs (2i, 2i+1) of x[d_rope] by pos*freq[i]. */
void ds_rope_apply(float *x, int d_rope, const float *freq, int32_t pos);
/* Expert selection from router logits[n_expert] (DESIGN.md §4 step 10):
 * gating, bias, group limit, top-k, normalisation and scale. Writes ids[k]
 * and weights[k], best first. If forced_ids is non-NULL and forced_ids[0]
 * >= 0, those experts are used instead of the top-k (routing pinned for
 * tests) with weights from this router. Ties break to the lower expert id.
 * Returns the selection margin: the gap between the k-th chosen and the best
 * rejected biased score (for reports; +inf when pinned). */
float ds_moe_select(const ds_hparams *hp, const float *logits, const float *bias,
                    const int32_t *forced_ids, int32_t *ids, float *weights);

#endif
