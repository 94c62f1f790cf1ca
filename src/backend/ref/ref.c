/* ref.c: the reference backend — plain scalar C, weights dequantized row by
 * row, every dot product and softmax accumulated in double. It is the
 * oracle every optimized path is tested against: keep it obvious, never
 * optimize it, never build it with fast-math. */
#include "../backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_impl {
    int max_rows, max_ctx;
    float *wrow;    /* [max K] one dequantized weight row */
    float *xn;      /* [n_embd] normed input */
    float *cq;      /* [q_lora] */
    float *q;       /* [max_rows][n_head * d_qk] */
    float *kvrow;   /* [d_kv_row] */
    float *qabs;    /* [kv_lora] */
    float *qpe;     /* [d_rope] */
    double *score;  /* [max_ctx] */
    double *acc;    /* [kv_lora] */
    float *olat;    /* [kv_lora] */
    float *heads;   /* [n_head * d_v] */
    float *ffa, *ffb; /* [max(n_ff, n_ff_exp*shared, n_ff_exp)] */
    float *logit;   /* [n_expert] */
    float *tmp;     /* [n_embd] one expert's output */
} ref_impl;

/* y[i] = W[row0 + i] . x for i < M, in double. */
static void ref_matvec(ref_impl *R, const ds_tensor *W, int64_t row0, int64_t M, const float *x, float *y) {
    const int64_t K = W->ne[0];
    for (int64_t i = 0; i < M; i++) {
        ds_dequantize_row(W->type, ds_tensor_row(W, row0 + i), R->wrow, K);
        double s = 0;
        for (int64_t k = 0; k < K; k++) s += (double)R->wrow[k] * x[k];
        y[i] = (float)s;
    }
}

static double silu_d(double x) { return x / (1.0 + exp(-x)); }

static ds_status ref_attn(ds_backend *be, const ds_model *m, int il, const ds_rows *rows, const float *h,
                          float *out, ds_kv *kv) {
    ref_impl *R = be->impl;
    const ds_hparams *hp = &m->hp;
    const ds_layer *L = &m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, DQK = hp->d_qk, DN = hp->d_nope, DR = hp->d_rope;
    const int LR = hp->kv_lora, DV = hp->d_v;

    /* pass 1: projections of every row; the latent goes to the cache */
    for (int r = 0; r < rows->n; r++) {
        float *q = R->q + (size_t)r * H * DQK;
        ds_rms_norm(h + (size_t)r * E, L->attn_norm.data, E, hp->rms_eps, R->xn);
        if (hp->q_lora > 0) {
            ref_matvec(R, &L->q_a, 0, hp->q_lora, R->xn, R->cq);
            ds_rms_norm(R->cq, L->q_a_norm.data, hp->q_lora, hp->rms_eps, R->cq);
            ref_matvec(R, &L->q_b, 0, (int64_t)H * DQK, R->cq, q);
        } else {
            ref_matvec(R, &L->q, 0, (int64_t)H * DQK, R->xn, q);
        }
        ref_matvec(R, &L->kv_a, 0, LR + DR, R->xn, R->kvrow);
        ds_rms_norm(R->kvrow, L->kv_a_norm.data, LR, hp->rms_eps, R->kvrow);
        ds_rope_apply(R->kvrow + LR, DR, m->rope_freq, rows->pos[r]);
        ds_kv_store(kv, il, rows->seq[r], rows->pos[r], R->kvrow);
    }
    /* pass 2: absorbed MLA per row and head over the cached latents */
    for (int r = 0; r < rows->n; r++) {
        const int32_t pos = rows->pos[r], seq = rows->seq[r];
        for (int hd = 0; hd < H; hd++) {
            const float *qh = R->q + (size_t)r * H * DQK + (size_t)hd * DQK;
            memcpy(R->qpe, qh + DN, (size_t)DR * sizeof(float));
            ds_rope_apply(R->qpe, DR, m->rope_freq, pos);
            ref_matvec(R, &L->k_b, (int64_t)hd * LR, LR, qh, R->qabs); /* q_nope -> latent */
            double mx = -INFINITY;
            for (int32_t t = 0; t <= pos; t++) {
                ds_kv_load(kv, il, seq, t, R->kvrow);
                double s = 0;
                for (int l = 0; l < LR; l++) s += (double)R->qabs[l] * R->kvrow[l];
                for (int i = 0; i < DR; i++) s += (double)R->qpe[i] * R->kvrow[LR + i];
                R->score[t] = s * hp->kq_scale;
                if (R->score[t] > mx) mx = R->score[t];
            }
            double sum = 0;
            for (int32_t t = 0; t <= pos; t++) sum += (R->score[t] = exp(R->score[t] - mx));
            double *acc = R->acc;
            memset(acc, 0, (size_t)LR * sizeof *acc);
            for (int32_t t = 0; t <= pos; t++) {
                ds_kv_load(kv, il, seq, t, R->kvrow);
                double p = R->score[t] / sum;
                for (int l = 0; l < LR; l++) acc[l] += p * R->kvrow[l]; /* values = c_kv */
            }
            for (int l = 0; l < LR; l++) R->olat[l] = (float)acc[l];
            ref_matvec(R, &L->v_b, (int64_t)hd * DV, DV, R->olat, R->heads + (size_t)hd * DV);
        }
        ref_matvec(R, &L->attn_out, 0, E, R->heads, out + (size_t)r * E);
    }
    return DS_OK;
}

/* out = down(silu(gate y) * up y) with gate/up rows starting at g0/u0 and
 * down rows at d0 (expert slices of 3-D tensors). */
static void ref_ffn(ref_impl *R, const ds_tensor *gate, int64_t g0, const ds_tensor *up, int64_t u0,
                    const ds_tensor *down, int64_t d0, int64_t F, int E, const float *y, float *out) {
    ref_matvec(R, gate, g0, F, y, R->ffa);
    ref_matvec(R, up, u0, F, y, R->ffb);
    for (int64_t i = 0; i < F; i++) R->ffa[i] = (float)(silu_d(R->ffa[i]) * R->ffb[i]);
    ref_matvec(R, down, d0, E, R->ffa, out);
}

static ds_status ref_dense_ffn(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out) {
    const ds_layer *L = &m->layers[il];
    const int E = m->hp.n_embd;
    for (int r = 0; r < n; r++)
        ref_ffn(be->impl, &L->ffn_gate, 0, &L->ffn_up, 0, &L->ffn_down, 0, m->hp.n_ff, E, y + (size_t)r * E,
                out + (size_t)r * E);
    return DS_OK;
}

static ds_status ref_moe_route(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                               const int32_t *forced, int32_t *ids, float *weights, float *margin) {
    ref_impl *R = be->impl;
    const ds_layer *L = &m->layers[il];
    const ds_hparams *hp = &m->hp;
    const int k = hp->n_expert_used;
    const float *bias = ds_tensor_present(&L->exp_bias) ? L->exp_bias.data : NULL;
    for (int r = 0; r < n; r++) {
        ref_matvec(R, &L->gate_inp, 0, hp->n_expert, y + (size_t)r * hp->n_embd, R->logit);
        float mg = ds_moe_select(hp, R->logit, bias, forced ? forced + (size_t)r * k : NULL,
                                 ids + (size_t)r * k, weights + (size_t)r * k);
        if (margin) margin[r] = mg;
    }
    return DS_OK;
}

static ds_status ref_moe_experts(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                                 const int32_t *ids, const float *weights, float *out) {
    ref_impl *R = be->impl;
    const ds_layer *L = &m->layers[il];
    const ds_hparams *hp = &m->hp;
    const int E = hp->n_embd, k = hp->n_expert_used;
    const int64_t F = hp->n_ff_exp;
    float *tmp = R->tmp;
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < k; j++) {
            int e = ids[(size_t)r * k + j];
            if (e < 0) continue;
            if (ds_tensor_present(&L->gate_up_exps))
                ref_ffn(R, &L->gate_up_exps, e * 2 * F, &L->gate_up_exps, e * 2 * F + F, &L->down_exps,
                        (int64_t)e * E, F, E, y + (size_t)r * E, tmp);
            else
                ref_ffn(R, &L->gate_exps, e * F, &L->up_exps, e * F, &L->down_exps, (int64_t)e * E, F, E,
                        y + (size_t)r * E, tmp);
            const float w = weights[(size_t)r * k + j];
            for (int i = 0; i < E; i++) out[(size_t)r * E + i] += w * tmp[i];
        }
    }
    return DS_OK;
}

static ds_status ref_shared_expert(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out) {
    const ds_layer *L = &m->layers[il];
    const int E = m->hp.n_embd;
    if (!ds_tensor_present(&L->gate_shexp)) {
        memset(out, 0, (size_t)n * E * sizeof *out);
        return DS_OK;
    }
    for (int r = 0; r < n; r++)
        ref_ffn(be->impl, &L->gate_shexp, 0, &L->up_shexp, 0, &L->down_shexp, 0, L->gate_shexp.ne[1], E,
                y + (size_t)r * E, out + (size_t)r * E);
    return DS_OK;
}

static ds_status ref_lm_head(ds_backend *be, const ds_model *m, int n, const float *h, float *logits) {
    ref_impl *R = be->impl;
    const int E = m->hp.n_embd;
    for (int r = 0; r < n; r++) {
        ds_rms_norm(h + (size_t)r * E, m->output_norm.data, E, m->hp.rms_eps, R->xn);
        ref_matvec(R, &m->output, 0, m->hp.n_vocab, R->xn, logits + (size_t)r * m->hp.n_vocab);
    }
    return DS_OK;
}

static void ref_free(ds_backend *be) {
    if (!be) return;
    ref_impl *R = be->impl;
    if (R) {
        float *bufs[] = { R->wrow, R->xn, R->cq, R->q, R->kvrow, R->qabs, R->qpe, R->olat, R->heads, R->ffa, R->ffb, R->logit, R->tmp };
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
        free(R->score);
        free(R->acc);
        free(R);
    }
    free(be);
}

static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

ds_status ds_backend_ref_create(const ds_model *m, const ds_backend_params *p, ds_backend **out, ds_error *err) {
    *out = NULL;
    const ds_hparams *hp = &m->hp;
    ds_backend *be = calloc(1, sizeof *be);
    ref_impl *R = calloc(1, sizeof *R);
    if (!be || !R) { free(be); free(R); return ds_error_set(err, DS_ERR_OOM, "out of memory"); }
    be->impl = R;
    be->name = "ref";
    R->max_rows = p->max_rows > 0 ? p->max_rows : 1;
    R->max_ctx = p->max_ctx > 0 ? p->max_ctx : hp->n_ctx_train;
    int64_t kmax = max_i64(max_i64(hp->n_embd, hp->n_ff), max_i64((int64_t)hp->n_head * hp->d_v, hp->kv_lora));
    kmax = max_i64(kmax, max_i64(hp->q_lora, (int64_t)hp->n_ff_exp * max_i64(1, hp->n_expert_shared)));
    int64_t ffmax = max_i64(hp->n_ff, (int64_t)hp->n_ff_exp * max_i64(1, hp->n_expert_shared));
    R->wrow = malloc((size_t)kmax * sizeof(float));
    R->xn = malloc((size_t)hp->n_embd * sizeof(float));
    R->cq = malloc((size_t)max_i64(1, hp->q_lora) * sizeof(float));
    R->q = malloc((size_t)R->max_rows * hp->n_head * hp->d_qk * sizeof(float));
    R->kvrow = malloc((size_t)hp->d_kv_row * sizeof(float));
    R->qabs = malloc((size_t)hp->kv_lora * sizeof(float));
    R->qpe = malloc((size_t)hp->d_rope * sizeof(float));
    R->score = malloc((size_t)R->max_ctx * sizeof(double));
    R->acc = malloc((size_t)hp->kv_lora * sizeof(double));
    R->olat = malloc((size_t)hp->kv_lora * sizeof(float));
    R->heads = malloc((size_t)hp->n_head * hp->d_v * sizeof(float));
    R->ffa = malloc((size_t)ffmax * sizeof(float));
    R->ffb = malloc((size_t)ffmax * sizeof(float));
    R->logit = malloc((size_t)max_i64(1, hp->n_expert) * sizeof(float));
    R->tmp = malloc((size_t)hp->n_embd * sizeof(float));
    if (!R->wrow || !R->xn || !R->cq || !R->q || !R->kvrow || !R->qabs || !R->qpe || !R->score || !R->acc || !R->olat ||
        !R->heads || !R->ffa || !R->ffb || !R->logit || !R->tmp) {
        ref_free(be);
        return ds_error_set(err, DS_ERR_OOM, "out of memory for the ref backend's scratch");
    }
    be->attn = ref_attn;
    be->dense_ffn = ref_dense_ffn;
    be->moe_route = ref_moe_route;
    be->moe_experts = ref_moe_experts;
    be->shared_expert = ref_shared_expert;
    be->lm_head = ref_lm_head;
    be->free = ref_free;
    *out = be;
    return DS_OK;
}
