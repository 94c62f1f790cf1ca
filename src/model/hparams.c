/* hparams.c: deepseek2 hyperparameters from GGUF keys (DESIGN.md §3).
 * Missing required keys are errors naming the key; optional ones get the
 * documented defaults. Not tensor binding: see load.c. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const ds_gguf *g;
    const char *arch;
    ds_error *err;
    ds_status st;
} key_reader;

static const char *key_name(key_reader *r, const char *suffix, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%s", r->arch, suffix);
    return buf;
}

/* Required integer key: records the first error. */
static int req_int(key_reader *r, const char *suffix) {
    char k[160];
    int64_t v = 0;
    if (!ds_gguf_get_i64(r->g, key_name(r, suffix, k, sizeof k), &v)) {
        if (r->st == DS_OK)
            r->st = ds_error_set(r->err, DS_ERR_FORMAT, "missing or non-integer key '%s'", k);
        return 0;
    }
    if (v < 0 || v > (1 << 30)) {
        if (r->st == DS_OK)
            r->st = ds_error_set(r->err, DS_ERR_FORMAT, "key '%s' = %lld is out of range", k, (long long)v);
        return 0;
    }
    return (int)v;
}

static int opt_int(key_reader *r, const char *suffix, int def) {
    char k[160];
    int64_t v;
    if (!ds_gguf_get_i64(r->g, key_name(r, suffix, k, sizeof k), &v)) return def;
    if (v < 0 || v > (1 << 30)) {
        if (r->st == DS_OK)
            r->st = ds_error_set(r->err, DS_ERR_FORMAT, "key '%s' = %lld is out of range", k, (long long)v);
        return def;
    }
    return (int)v;
}

static float opt_f32(key_reader *r, const char *suffix, float def) {
    char k[160];
    float v;
    return ds_gguf_get_f32(r->g, key_name(r, suffix, k, sizeof k), &v) ? v : def;
}

static bool opt_bool(key_reader *r, const char *suffix, bool def) {
    char k[160];
    bool v;
    return ds_gguf_get_bool(r->g, key_name(r, suffix, k, sizeof k), &v) ? v : def;
}

static bool has_key(key_reader *r, const char *suffix) {
    char k[160];
    return ds_gguf_find(r->g, key_name(r, suffix, k, sizeof k)) != NULL;
}

ds_status ds_hparams_read(const ds_gguf *g, ds_hparams *hp, ds_error *err) {
    char arch[32] = "";
    memset(hp, 0, sizeof *hp);
    if (!ds_gguf_get_str(g, "general.architecture", arch, sizeof arch))
        return ds_error_set(err, DS_ERR_FORMAT, "missing key 'general.architecture'");
    if (strcmp(arch, "deepseek2") != 0)
        return ds_error_set(err, DS_ERR_UNSUPPORTED,
                            "architecture '%s' is not supported (dsinfer runs 'deepseek2')", arch);
    key_reader r = { g, arch, err, DS_OK };

    hp->n_layer_file = req_int(&r, "block_count");
    hp->n_nextn = opt_int(&r, "nextn_predict_layers", 0);
    hp->n_ctx_train = opt_int(&r, "context_length", 4096);
    hp->n_embd = req_int(&r, "embedding_length");
    hp->n_ff = req_int(&r, "feed_forward_length");
    hp->n_head = req_int(&r, "attention.head_count");
    hp->q_lora = opt_int(&r, "attention.q_lora_rank", 0);
    hp->kv_lora = req_int(&r, "attention.kv_lora_rank");
    hp->d_rope = req_int(&r, "rope.dimension_count");
    hp->n_dense_lead = opt_int(&r, "leading_dense_block_count", 0);
    hp->n_expert = opt_int(&r, "expert_count", 0);
    hp->n_expert_used = opt_int(&r, "expert_used_count", 0);
    hp->n_expert_shared = opt_int(&r, "expert_shared_count", 0);
    hp->n_ff_exp = opt_int(&r, "expert_feed_forward_length", 0);
    hp->n_group = opt_int(&r, "expert_group_count", 0);
    hp->n_group_used = opt_int(&r, "expert_group_used_count", 0);
    hp->gating = (ds_gating)opt_int(&r, "expert_gating_func", DS_GATING_SOFTMAX);
    hp->expert_weights_norm = opt_bool(&r, "expert_weights_norm", false);
    hp->expert_weights_scale = opt_f32(&r, "expert_weights_scale", 1.0f);
    hp->rms_eps = opt_f32(&r, "attention.layer_norm_rms_epsilon", 1e-6f);
    hp->rope_base = opt_f32(&r, "rope.freq_base", 10000.0f);

    /* The MLA layout is announced by key_length_mla; the legacy layout's
     * key_length is nope + rope per head. */
    hp->mla_layout = has_key(&r, "attention.key_length_mla");
    int d_k = hp->mla_layout ? req_int(&r, "attention.key_length_mla") : req_int(&r, "attention.key_length");
    hp->d_v = hp->mla_layout ? req_int(&r, "attention.value_length_mla") : req_int(&r, "attention.value_length");
    if (r.st) return r.st;
    hp->d_nope = d_k - hp->d_rope;

    char k[160], scaling[32] = "";
    ds_gguf_get_str(g, key_name(&r, "rope.scaling.type", k, sizeof k), scaling, sizeof scaling);
    hp->yarn = strcmp(scaling, "yarn") == 0;
    hp->yarn_factor = opt_f32(&r, "rope.scaling.factor", 1.0f);
    hp->yarn_orig_ctx = opt_int(&r, "rope.scaling.original_context_length", hp->n_ctx_train);
    hp->yarn_log_mul = opt_f32(&r, "rope.scaling.yarn_log_multiplier", 0.0f);
    hp->yarn_beta_fast = opt_f32(&r, "rope.scaling.yarn_beta_fast", 32.0f);
    hp->yarn_beta_slow = opt_f32(&r, "rope.scaling.yarn_beta_slow", 1.0f);

    /* vocab size: explicit key or the tokenizer's token list */
    int64_t nv = 0;
    if (!ds_gguf_get_i64(g, key_name(&r, "vocab_size", k, sizeof k), &nv)) {
        const ds_gguf_value *toks = ds_gguf_get_arr(g, "tokenizer.ggml.tokens", -1);
        nv = toks ? (int64_t)toks->arr.n : 0;
    }
    hp->n_vocab = (int)nv;
    if (r.st) return r.st;

    /* consistency */
    if (hp->n_nextn > hp->n_layer_file)
        return ds_error_set(err, DS_ERR_FORMAT, "nextn_predict_layers %d > block_count %d",
                            hp->n_nextn, hp->n_layer_file);
    hp->n_layer = hp->n_layer_file - hp->n_nextn;
    if (hp->n_layer < 1 || hp->n_layer > DS_MAX_LAYERS)
        return ds_error_set(err, DS_ERR_UNSUPPORTED, "layer count %d outside 1..%d", hp->n_layer, DS_MAX_LAYERS);
    if (hp->d_rope <= 0 || hp->d_rope % 2 || hp->d_nope <= 0 || hp->d_v <= 0 || hp->kv_lora <= 0 ||
        hp->n_head <= 0 || hp->n_embd <= 0)
        return ds_error_set(err, DS_ERR_FORMAT,
                            "inconsistent attention sizes: heads %d, nope %d, rope %d, v %d, kv_lora %d",
                            hp->n_head, hp->d_nope, hp->d_rope, hp->d_v, hp->kv_lora);
    if (hp->n_dense_lead > hp->n_layer) hp->n_dense_lead = hp->n_layer;
    if (hp->n_dense_lead < hp->n_layer) {
        if (hp->n_expert <= 0 || hp->n_expert > DS_MAX_EXPERTS || hp->n_expert_used <= 0 ||
            hp->n_expert_used > DS_MAX_EXPERTS_USED || hp->n_expert_used > hp->n_expert || hp->n_ff_exp <= 0)
            return ds_error_set(err, DS_ERR_FORMAT, "bad MoE sizes: %d experts, %d used, width %d",
                                hp->n_expert, hp->n_expert_used, hp->n_ff_exp);
        if (hp->gating != DS_GATING_SOFTMAX && hp->gating != DS_GATING_SIGMOID)
            return ds_error_set(err, DS_ERR_UNSUPPORTED, "expert_gating_func %d (1 softmax, 2 sigmoid)",
                                (int)hp->gating);
        if (hp->n_group > 1) {
            if (hp->n_expert % hp->n_group || hp->n_group_used < 1 || hp->n_group_used > hp->n_group ||
                hp->n_expert_used > hp->n_group_used * (hp->n_expert / hp->n_group))
                return ds_error_set(err, DS_ERR_FORMAT, "bad expert groups: %d groups, %d used, %d experts",
                                    hp->n_group, hp->n_group_used, hp->n_expert);
        } else {
            hp->n_group = 0; /* one group = no limit */
        }
    }
    if (hp->n_vocab <= 0) return ds_error_set(err, DS_ERR_FORMAT, "vocabulary size unknown (no vocab_size, no tokens)");

    hp->d_qk = hp->d_nope + hp->d_rope;
    hp->d_kv_row = hp->kv_lora + hp->d_rope;
    /* softmax scale: mscale^2/sqrt(d_qk), mscale = 1 + 0.1*mscale_all_dim*ln(factor)
     * with mscale_all_dim = yarn_log_multiplier / 0.1 (DESIGN.md §4 step 6). */
    double mscale = 1.0;
    if (hp->yarn && hp->yarn_factor > 1.0f)
        mscale = 1.0 + 0.1 * ((double)hp->yarn_log_mul / 0.1) * log((double)hp->yarn_factor);
    hp->kq_scale = mscale * mscale / sqrt((double)hp->d_qk);
    return DS_OK;
}
