/* load.c: bind a deepseek2 GGUF's tensors to ds_model with shape checks, and
 * derive per-head k_b/v_b from attn_kv_b for legacy files (DESIGN.md §4.7).
 * Not hparams (hparams.c) and not placement policy (placement.c). */
#include "model.h"

#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

static void *own(ds_model *m, void *p) {
    if (!p) return NULL;
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **n = realloc(m->owned, (size_t)cap * sizeof *n);
        if (!n) { free(p); return NULL; }
        m->owned = n;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return p;
}

/* Binds tensor `name` into t, checking its shape against ne[0..n_dims) (-1 =
 * any). Absent + optional leaves t zeroed and returns DS_OK. */
static ds_status bind(ds_model *m, ds_tensor *t, const char *name, bool required, int n_dims,
                      const int64_t *ne, ds_error *err) {
    memset(t, 0, sizeof *t);
    const ds_gguf_tensor *gt = ds_gguf_find_tensor(m->gguf, name);
    if (!gt) {
        if (required) return ds_error_set(err, DS_ERR_FORMAT, "missing tensor '%s'", name);
        return DS_OK;
    }
    for (int i = 0; i < 4; i++) {
        int64_t want = i < n_dims ? ne[i] : 1;
        if (want >= 0 && gt->ne[i] != want)
            return ds_error_set(err, DS_ERR_FORMAT,
                                "tensor '%s' has shape {%lld,%lld,%lld,%lld}, expected ne[%d] = %lld",
                                name, (long long)gt->ne[0], (long long)gt->ne[1], (long long)gt->ne[2],
                                (long long)gt->ne[3], i, (long long)want);
    }
    const ds_type_traits *tr = ds_type_info(gt->type);
    if (!tr || !tr->can_dequant)
        return ds_error_set(err, DS_ERR_UNSUPPORTED, "tensor '%s' has type %s, which dsinfer cannot read",
                            name, tr ? tr->name : "unknown");
    if (n_dims == 1 && gt->type != DS_TYPE_F32)
        return ds_error_set(err, DS_ERR_UNSUPPORTED, "vector '%s' has type %s; norms and biases must be f32",
                            name, tr->name);
    t->name = own(m, strdup(name));
    if (!t->name) return ds_error_set(err, DS_ERR_OOM, "out of memory binding '%s'", name);
    t->type = (ds_type)gt->type;
    memcpy(t->ne, gt->ne, sizeof t->ne);
    t->data = gt->data;
    t->row_bytes = ds_row_bytes(t->type, t->ne[0]);
    t->device = 0;
    return DS_OK;
}

#define NE(...) ((const int64_t[]){ __VA_ARGS__ })
#define BIND(t, req, nd, ...)                                                  \
    do {                                                                       \
        snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix_##t);                  \
        if ((st = bind(m, &L->t, nm, req, nd, NE(__VA_ARGS__), err))) return st; \
    } while (0)

static const char *suffix_attn_norm = "attn_norm.weight", *suffix_q_a = "attn_q_a.weight",
                  *suffix_q_a_norm = "attn_q_a_norm.weight", *suffix_q_b = "attn_q_b.weight",
                  *suffix_q = "attn_q.weight", *suffix_kv_a = "attn_kv_a_mqa.weight",
                  *suffix_kv_a_norm = "attn_kv_a_norm.weight", *suffix_kv_b = "attn_kv_b.weight",
                  *suffix_k_b = "attn_k_b.weight", *suffix_v_b = "attn_v_b.weight",
                  *suffix_attn_out = "attn_output.weight", *suffix_ffn_norm = "ffn_norm.weight",
                  *suffix_ffn_gate = "ffn_gate.weight", *suffix_ffn_up = "ffn_up.weight",
                  *suffix_ffn_down = "ffn_down.weight", *suffix_gate_inp = "ffn_gate_inp.weight",
                  *suffix_exp_bias = "exp_probs_b.bias", *suffix_gate_exps = "ffn_gate_exps.weight",
                  *suffix_up_exps = "ffn_up_exps.weight", *suffix_gate_up_exps = "ffn_gate_up_exps.weight",
                  *suffix_down_exps = "ffn_down_exps.weight", *suffix_gate_shexp = "ffn_gate_shexp.weight",
                  *suffix_up_shexp = "ffn_up_shexp.weight", *suffix_down_shexp = "ffn_down_shexp.weight";

/* Legacy attn_kv_b [n_head*(d_nope+d_v)][kv_lora] -> k_b [n_head][kv_lora][d_nope]
 * (transposed: it maps q_nope onto the latent) and v_b [n_head][d_v][kv_lora].
 * Stored as F32 when the source is F32/BF16, else F16 (exact for F16 files). */
static ds_status derive_kb_vb(ds_model *m, ds_layer *L, int il, ds_error *err) {
    const ds_hparams *hp = &m->hp;
    const int H = hp->n_head, R = hp->kv_lora, dn = hp->d_nope, dv = hp->d_v;
    bool f32 = L->kv_b.type == DS_TYPE_F32 || L->kv_b.type == DS_TYPE_BF16;
    size_t es = f32 ? 4 : 2;
    uint8_t *kb = own(m, malloc((size_t)H * R * dn * es));
    uint8_t *vb = own(m, malloc((size_t)H * dv * R * es));
    float *row = malloc((size_t)R * sizeof *row);
    if (!kb || !vb || !row) {
        free(row);
        return ds_error_set(err, DS_ERR_OOM, "out of memory deriving k_b/v_b of layer %d", il);
    }
    for (int h = 0; h < H; h++) {
        for (int j = 0; j < dn + dv; j++) {
            ds_dequantize_row(L->kv_b.type, ds_tensor_row(&L->kv_b, (int64_t)h * (dn + dv) + j), row, R);
            for (int l = 0; l < R; l++) {
                size_t idx = j < dn ? ((size_t)h * R + l) * dn + j : ((size_t)h * dv + (j - dn)) * R + l;
                uint8_t *dst = (j < dn ? kb : vb) + idx * es;
                if (f32) memcpy(dst, &row[l], 4);
                else { uint16_t v = ds_f32_to_fp16(row[l]); memcpy(dst, &v, 2); }
            }
        }
    }
    free(row);
    ds_type t = f32 ? DS_TYPE_F32 : DS_TYPE_F16;
    /* named as the newer layout names them, so -ot rules match either layout */
    char kn[64], vn[64];
    snprintf(kn, sizeof kn, "blk.%d.attn_k_b.weight", il);
    snprintf(vn, sizeof vn, "blk.%d.attn_v_b.weight", il);
    const char *kname = own(m, strdup(kn)), *vname = own(m, strdup(vn));
    if (!kname || !vname) return ds_error_set(err, DS_ERR_OOM, "out of memory deriving k_b/v_b of layer %d", il);
    L->k_b = (ds_tensor){ .name = kname, .type = t, .ne = { dn, R, H, 1 }, .data = kb,
                          .row_bytes = (size_t)dn * es, .device = L->kv_b.device };
    L->v_b = (ds_tensor){ .name = vname, .type = t, .ne = { R, dv, H, 1 }, .data = vb,
                          .row_bytes = (size_t)R * es, .device = L->kv_b.device };
    return DS_OK;
}

static ds_status bind_layer(ds_model *m, int il, ds_error *err) {
    const ds_hparams *hp = &m->hp;
    ds_layer *L = &m->layers[il];
    char nm[128];
    ds_status st;
    const int64_t E = hp->n_embd, H = hp->n_head, QK = hp->d_qk, R = hp->kv_lora;

    BIND(attn_norm, true, 1, E);
    if (hp->q_lora > 0) {
        BIND(q_a, true, 2, E, hp->q_lora);
        BIND(q_a_norm, true, 1, hp->q_lora);
        BIND(q_b, true, 2, hp->q_lora, H * QK);
    } else {
        BIND(q, true, 2, E, H * QK);
    }
    BIND(kv_a, true, 2, E, R + hp->d_rope);
    BIND(kv_a_norm, true, 1, R);
    if (hp->mla_layout) {
        BIND(k_b, true, 3, hp->d_nope, R, H);
        BIND(v_b, true, 3, R, hp->d_v, H);
        BIND(kv_b, false, 2, R, H * (hp->d_nope + hp->d_v)); /* some files carry both */
    } else {
        BIND(kv_b, true, 2, R, H * (hp->d_nope + hp->d_v));
        if ((st = derive_kb_vb(m, L, il, err))) return st;
    }
    BIND(attn_out, true, 2, H * hp->d_v, E);
    BIND(ffn_norm, true, 1, E);

    L->is_moe = il >= hp->n_dense_lead;
    if (!L->is_moe) {
        BIND(ffn_gate, true, 2, E, hp->n_ff);
        BIND(ffn_up, true, 2, E, hp->n_ff);
        BIND(ffn_down, true, 2, hp->n_ff, E);
        return DS_OK;
    }
    const int64_t X = hp->n_expert, F = hp->n_ff_exp;
    BIND(gate_inp, true, 2, E, X);
    if (L->gate_inp.type != DS_TYPE_F32 && L->gate_inp.type != DS_TYPE_F16 && L->gate_inp.type != DS_TYPE_BF16)
        return ds_error_set(err, DS_ERR_UNSUPPORTED, "router '%s' must be f32/f16/bf16", L->gate_inp.name);
    BIND(exp_bias, false, 1, X);
    if (ds_tensor_present(&L->exp_bias) && L->exp_bias.type != DS_TYPE_F32)
        return ds_error_set(err, DS_ERR_UNSUPPORTED, "'%s' must be f32", L->exp_bias.name);
    BIND(gate_up_exps, false, 3, E, 2 * F, X);
    if (!ds_tensor_present(&L->gate_up_exps)) {
        BIND(gate_exps, true, 3, E, F, X);
        BIND(up_exps, true, 3, E, F, X);
    }
    BIND(down_exps, true, 3, F, E, X);
    if (hp->n_expert_shared > 0) {
        const int64_t FS = F * hp->n_expert_shared;
        BIND(gate_shexp, true, 2, E, FS);
        BIND(up_shexp, true, 2, E, FS);
        BIND(down_shexp, true, 2, FS, E);
    }
    return DS_OK;
}

ds_status ds_model_load(const ds_model_params *p, ds_model **out, ds_error *err) {
    *out = NULL;
    ds_model *m = calloc(1, sizeof *m);
    if (!m) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    ds_status st = ds_gguf_open(p->path, &m->gguf, err);
    for (int i = 0; !st && i < p->n_overrides; i++) st = ds_gguf_override(m->gguf, p->overrides[i], err);
    if (!st) st = ds_hparams_read(m->gguf, &m->hp, err);
    if (st) goto fail;
    const ds_hparams *hp = &m->hp;
    ds_gguf_get_str(m->gguf, "general.architecture", m->arch, sizeof m->arch);
    if (!ds_gguf_get_str(m->gguf, "general.name", m->name, sizeof m->name)) snprintf(m->name, sizeof m->name, "%s", m->arch);

    const int64_t E = hp->n_embd, V = hp->n_vocab;
    if ((st = bind(m, &m->token_embd, "token_embd.weight", true, 2, NE(E, V), err))) goto fail;
    if ((st = bind(m, &m->output_norm, "output_norm.weight", true, 1, NE(E), err))) goto fail;
    if ((st = bind(m, &m->output, "output.weight", false, 2, NE(E, V), err))) goto fail;
    if (!ds_tensor_present(&m->output)) m->output = m->token_embd; /* tied */

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    m->rope_freq = calloc((size_t)hp->d_rope / 2, sizeof *m->rope_freq);
    if (!m->layers || !m->rope_freq) { st = ds_error_set(err, DS_ERR_OOM, "out of memory"); goto fail; }
    for (int il = 0; il < hp->n_layer; il++)
        if ((st = bind_layer(m, il, err))) goto fail;
    ds_rope_freqs(hp, m->rope_freq);
    *out = m;
    return DS_OK;
fail:
    ds_model_free(m);
    return st;
}

void ds_model_free(ds_model *m) {
    if (!m) return;
    if (m->host_copy) munmap(m->host_copy, m->host_copy_bytes);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->rope_freq);
    ds_gguf_close(m->gguf);
    free(m);
}

static uint64_t tbytes(const ds_tensor *t) {
    if (!ds_tensor_present(t)) return 0;
    return (uint64_t)t->row_bytes * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

uint64_t ds_model_decode_bytes(const ds_model *m) {
    const ds_hparams *hp = &m->hp;
    uint64_t b = m->token_embd.row_bytes + tbytes(&m->output_norm) + tbytes(&m->output);
    for (int il = 0; il < hp->n_layer; il++) {
        const ds_layer *L = &m->layers[il];
        b += tbytes(&L->attn_norm) + tbytes(&L->q_a) + tbytes(&L->q_a_norm) + tbytes(&L->q_b) + tbytes(&L->q) +
             tbytes(&L->kv_a) + tbytes(&L->kv_a_norm) + tbytes(&L->k_b) + tbytes(&L->v_b) + tbytes(&L->attn_out) +
             tbytes(&L->ffn_norm);
        if (!L->is_moe) {
            b += tbytes(&L->ffn_gate) + tbytes(&L->ffn_up) + tbytes(&L->ffn_down);
            continue;
        }
        b += tbytes(&L->gate_inp) + tbytes(&L->exp_bias) + tbytes(&L->gate_shexp) + tbytes(&L->up_shexp) +
             tbytes(&L->down_shexp);
        uint64_t per_expert = (tbytes(&L->gate_exps) + tbytes(&L->up_exps) + tbytes(&L->gate_up_exps) +
                               tbytes(&L->down_exps)) / (uint64_t)hp->n_expert;
        b += per_expert * (uint64_t)hp->n_expert_used;
    }
    return b;
}
