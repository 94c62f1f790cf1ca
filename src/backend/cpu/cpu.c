/* cpu.c: the cpu backend — blocks built on the threaded quantized matmul
 * (quant/ds_matmul) with activations quantized to each weight's dot type.
 * Attention is in cpu_attn.c, routed experts in cpu_moe.c. */
#include "cpu_internal.h"

#include <stdlib.h>
#include <string.h>

void ds_cpu_matmul(cpu_impl *C, const ds_tensor *W, int64_t row0, int64_t M, const float *x, int n, float *y,
                   int64_t ldy) {
    DS_ASSERT(ds_matmul_act_bytes(W->type, W->ne[0], n) <= C->act_bytes);
    ds_matmul(C->tp, W->type, ds_tensor_row(W, row0), W->row_bytes, W->ne[0], M, x, n, y, ldy, C->act);
}

/* The element-wise and quantization steps between the matmuls of one FFN,
 * split over the pool (serial, they cost ~1% of a 64-row prefill: 1.2M expf
 * for the dense FFN). Same arithmetic as a plain loop: results do not
 * depend on the thread count. */
typedef struct ffn_job {
    ds_type wt;        /* quantize: weight type whose act_type x goes to */
    const float *x;    /* quantize: [n][K] */
    uint8_t *act;      /* quantize: [n] rows of ds_act_row_bytes(wt, K) */
    int64_t K;
    float *ga;         /* glu: [len] gate, overwritten with silu(ga) * gb */
    const float *gb;   /* glu: [len] */
    int64_t len;       /* glu: elements; quantize: rows */
} ffn_job;

static void ffn_quant_task(void *ctx, int ith, int nth) {
    const ffn_job *j = ctx;
    const size_t rb = ds_act_row_bytes(j->wt, j->K);
    for (int64_t r = j->len * ith / nth; r < j->len * (ith + 1) / nth; r++)
        ds_quantize_act_row(j->wt, j->x + r * j->K, j->act + r * rb, j->K);
}

static void ffn_glu_task(void *ctx, int ith, int nth) {
    const ffn_job *j = ctx;
    /* split on 16-float boundaries: no cache line of ga written by two threads */
    const int64_t blocks = (j->len + 15) / 16;
    int64_t i0 = blocks * ith / nth * 16, i1 = blocks * (ith + 1) / nth * 16;
    if (i1 > j->len) i1 = j->len;
    for (int64_t i = i0; i < i1; i++) j->ga[i] = ds_silu(j->ga[i]) * j->gb[i];
}

/* runs fn on the pool when the work is worth a wake-up (~4K elements) */
static void ffn_run(cpu_impl *C, ds_task_fn fn, ffn_job *j, int64_t work) {
    if (C->tp && C->n_threads > 1 && work >= 4096) ds_threadpool_run(C->tp, fn, j);
    else fn(j, 0, 1);
}

void ds_cpu_ffn(cpu_impl *C, const ds_tensor *gate, int64_t g0, const ds_tensor *up, int64_t u0,
                const ds_tensor *down, int64_t d0, int64_t F, int E, int n, const float *x, float *out) {
    const int64_t K = gate->ne[0];
    /* gate and up read the same activations: quantize once when types agree */
    if (gate->type == up->type) {
        ffn_job q = { .wt = gate->type, .x = x, .act = C->act, .K = K, .len = n };
        DS_ASSERT(ds_matmul_act_bytes(gate->type, K, n) <= C->act_bytes);
        /* a row quantizes in a few microseconds: as ds_matmul, threads only for many */
        ffn_run(C, ffn_quant_task, &q, n >= 2 * C->n_threads ? (int64_t)n * K : 0);
        ds_matmul_preq(C->tp, gate->type, ds_tensor_row(gate, g0), gate->row_bytes, K, F, C->act, n, C->ga, F);
        ds_matmul_preq(C->tp, up->type, ds_tensor_row(up, u0), up->row_bytes, K, F, C->act, n, C->gb, F);
    } else {
        ds_cpu_matmul(C, gate, g0, F, x, n, C->ga, F);
        ds_cpu_matmul(C, up, u0, F, x, n, C->gb, F);
    }
    ffn_job g = { .ga = C->ga, .gb = C->gb, .len = (int64_t)n * F };
    ffn_run(C, ffn_glu_task, &g, g.len);
    ds_cpu_matmul(C, down, d0, E, C->ga, n, out, E);
}

static ds_status cpu_dense_ffn(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out) {
    const ds_layer *L = &m->layers[il];
    ds_cpu_ffn(be->impl, &L->ffn_gate, 0, &L->ffn_up, 0, &L->ffn_down, 0, m->hp.n_ff, m->hp.n_embd, n, y, out);
    return DS_OK;
}

static ds_status cpu_shared_expert(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out) {
    const ds_layer *L = &m->layers[il];
    if (!ds_tensor_present(&L->gate_shexp)) {
        memset(out, 0, (size_t)n * m->hp.n_embd * sizeof *out);
        return DS_OK;
    }
    ds_cpu_ffn(be->impl, &L->gate_shexp, 0, &L->up_shexp, 0, &L->down_shexp, 0, L->gate_shexp.ne[1],
               m->hp.n_embd, n, y, out);
    return DS_OK;
}

static ds_status cpu_moe_route(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                               const int32_t *forced, int32_t *ids, float *weights, float *margin) {
    cpu_impl *C = be->impl;
    const ds_layer *L = &m->layers[il];
    const ds_hparams *hp = &m->hp;
    const int k = hp->n_expert_used, X = hp->n_expert;
    ds_cpu_matmul(C, &L->gate_inp, 0, X, y, n, C->logit, X);
    const float *bias = ds_tensor_present(&L->exp_bias) ? L->exp_bias.data : NULL;
    for (int r = 0; r < n; r++) {
        float mg = ds_moe_select(hp, C->logit + (size_t)r * X, bias, forced ? forced + (size_t)r * k : NULL,
                                 ids + (size_t)r * k, weights + (size_t)r * k);
        if (margin) margin[r] = mg;
    }
    return DS_OK;
}

static ds_status cpu_lm_head(ds_backend *be, const ds_model *m, int n, const float *h, float *logits) {
    cpu_impl *C = be->impl;
    const int E = m->hp.n_embd;
    for (int r = 0; r < n; r++)
        ds_rms_norm(h + (size_t)r * E, m->output_norm.data, E, m->hp.rms_eps, C->xn + (size_t)r * E);
    ds_cpu_matmul(C, &m->output, 0, m->hp.n_vocab, C->xn, n, logits, m->hp.n_vocab);
    return DS_OK;
}

static void cpu_free(ds_backend *be) {
    if (!be) return;
    cpu_impl *C = be->impl;
    if (C) {
        if (C->ts) {
            for (int t = 0; t < C->n_threads; t++) {
                cpu_thread_scratch *s = &C->ts[t];
                free(s->qn); free(s->olat);
                free(s->qlat); free(s->lat); free(s->msum); free(s->sc);
                ds_aligned_free(s->act);
            }
            free(C->ts);
        }
        free(C->xn); free(C->cq); free(C->q); free(C->kvr); free(C->heads); free(C->ga); free(C->gb);
        free(C->rope_cs);
        free(C->logit); free(C->eo); free(C->ey); free(C->erow); free(C->ew);
        ds_aligned_free(C->act);
        ds_aligned_free(C->mq_rows); ds_aligned_free(C->mq_g); ds_aligned_free(C->mq_u); ds_aligned_free(C->mq_d);
        ds_threadpool_free(C->tp);
        free(C);
    }
    free(be);
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Largest quantized-activation buffer any matmul of this model needs. */
static size_t model_act_bytes(const ds_model *m, int rows) {
    const ds_hparams *hp = &m->hp;
    size_t b = ds_matmul_act_bytes(m->output.type, hp->n_embd, rows);
    for (int il = 0; il < hp->n_layer; il++) {
        const ds_layer *L = &m->layers[il];
        const ds_tensor *ts[] = { &L->q_a, &L->q_b, &L->q, &L->kv_a, &L->attn_out, &L->ffn_gate, &L->ffn_up,
                                  &L->ffn_down, &L->gate_inp, &L->gate_exps, &L->up_exps, &L->gate_up_exps,
                                  &L->down_exps, &L->gate_shexp, &L->up_shexp, &L->down_shexp };
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++)
            if (ds_tensor_present(ts[i])) b = max_sz(b, ds_matmul_act_bytes(ts[i]->type, ts[i]->ne[0], rows));
    }
    return b;
}

ds_status ds_backend_cpu_create(const ds_model *m, const ds_backend_params *p, ds_backend **out, ds_error *err) {
    *out = NULL;
    const ds_hparams *hp = &m->hp;
    ds_backend *be = calloc(1, sizeof *be);
    cpu_impl *C = calloc(1, sizeof *C);
    if (!be || !C) { free(be); free(C); return ds_error_set(err, DS_ERR_OOM, "out of memory"); }
    be->impl = C;
    be->name = "cpu";
    be->free = cpu_free;
    C->n_threads = p->n_threads > 0 ? p->n_threads : ds_cpu_count();
    C->max_rows = p->max_rows > 0 ? p->max_rows : 1;
    C->max_ctx = p->max_ctx > 0 ? p->max_ctx : hp->n_ctx_train;
    C->vec = ds_cpu_vec_get();
    C->tp = ds_threadpool_create(C->n_threads);
    const size_t R = (size_t)C->max_rows, E = hp->n_embd;
    size_t ffw = max_sz((size_t)hp->n_ff, (size_t)hp->n_ff_exp * (size_t)(hp->n_expert_shared > 1 ? hp->n_expert_shared : 1));
    C->xn = malloc(R * E * sizeof(float));
    C->cq = malloc(R * max_sz(1, (size_t)hp->q_lora) * sizeof(float));
    C->q = malloc(R * hp->n_head * hp->d_qk * sizeof(float));
    C->kvr = malloc(R * hp->d_kv_row * sizeof(float));
    C->heads = malloc(R * hp->n_head * hp->d_v * sizeof(float));
    /* room for every (row, expert) pair of a small batch too */
    C->ffn_elems = max_sz(R * ffw, (size_t)DS_MAX_ROWS_FAST * (size_t)hp->n_expert_used * (size_t)hp->n_ff_exp);
    C->ga = malloc(C->ffn_elems * sizeof(float));
    C->gb = malloc(C->ffn_elems * sizeof(float));
    /* small-batch expert buffers, sized by the layers' expert types */
    const char *fast = getenv("DSINFER_CPU_MOE_FAST");
    C->moe_fast_off = fast && fast[0] == '0';
    size_t rb_in = 0, rb_down = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        const ds_layer *L = &m->layers[il];
        const ds_tensor *in[] = { &L->gate_exps, &L->up_exps, &L->gate_up_exps };
        for (int i = 0; i < 3; i++)
            if (ds_tensor_present(in[i])) rb_in = max_sz(rb_in, ds_act_row_bytes(in[i]->type, E));
        if (ds_tensor_present(&L->down_exps)) rb_down = max_sz(rb_down, ds_act_row_bytes(L->down_exps.type, hp->n_ff_exp));
    }
    const size_t pairs = (size_t)DS_MAX_ROWS_FAST * (size_t)(hp->n_expert_used > 0 ? hp->n_expert_used : 1);
    if (rb_in && rb_down) {
        C->mq_row_bytes = 2 * rb_in;
        C->mq_y_bytes = pairs * rb_in;
        C->mq_d_bytes = pairs * rb_down;
        C->mq_rows = ds_aligned_alloc(DS_MAX_ROWS_FAST * C->mq_row_bytes);
        C->mq_g = ds_aligned_alloc(C->mq_y_bytes);
        C->mq_u = ds_aligned_alloc(C->mq_y_bytes);
        C->mq_d = ds_aligned_alloc(C->mq_d_bytes);
        if (!C->mq_rows || !C->mq_g || !C->mq_u || !C->mq_d) { /* the path stays off */
            ds_aligned_free(C->mq_rows); ds_aligned_free(C->mq_g); ds_aligned_free(C->mq_u); ds_aligned_free(C->mq_d);
            C->mq_rows = C->mq_g = C->mq_u = C->mq_d = NULL;
        }
    }
    C->logit = malloc(R * max_sz(1, (size_t)hp->n_expert) * sizeof(float));
    C->eo = malloc(R * E * sizeof(float));
    C->ey = malloc(R * E * sizeof(float));
    C->erow = malloc(R * sizeof(int32_t));
    C->ew = malloc(R * sizeof(float));
    C->rope_cs = malloc(R * max_sz(1, (size_t)hp->d_rope) * sizeof(double));
    C->act_bytes = model_act_bytes(m, C->max_rows);
    C->act = ds_aligned_alloc(C->act_bytes);
    C->ts = calloc((size_t)C->n_threads, sizeof *C->ts);
    bool ok = C->tp && C->xn && C->cq && C->q && C->kvr && C->heads && C->ga && C->gb && C->logit && C->eo &&
              C->ey && C->erow && C->ew && C->act && C->ts &&
              C->rope_cs;
    for (int t = 0; ok && t < C->n_threads; t++) {
        cpu_thread_scratch *s = &C->ts[t];
        s->qn = malloc(R * hp->d_nope * sizeof(float));
        s->olat = malloc(R * hp->kv_lora * sizeof(float));
        s->qlat = malloc(R * hp->d_kv_row * sizeof(float));
        s->lat = malloc((size_t)DS_ATTN_TILE * hp->d_kv_row * sizeof(float));
        s->msum = malloc(2 * R * sizeof(float));
        s->sc = malloc(R * DS_ATTN_TILE * sizeof(float));
        s->act_bytes = 0;
        for (int il = 0; il < hp->n_layer; il++) {
            const ds_layer *L = &m->layers[il];
            s->act_bytes = max_sz(s->act_bytes, ds_matmul_act_bytes(L->k_b.type, L->k_b.ne[0], C->max_rows));
            s->act_bytes = max_sz(s->act_bytes, ds_matmul_act_bytes(L->v_b.type, L->v_b.ne[0], C->max_rows));
        }
        s->act = ds_aligned_alloc(s->act_bytes);
        ok = s->qn && s->olat && s->act && s->qlat && s->lat && s->msum && s->sc;
    }
    if (!ok) {
        cpu_free(be);
        return ds_error_set(err, DS_ERR_OOM, "out of memory for the cpu backend's scratch (%d rows, %d threads)",
                            C->max_rows, C->n_threads);
    }
    be->attn = ds_cpu_attn;
    be->dense_ffn = cpu_dense_ffn;
    be->moe_route = cpu_moe_route;
    be->moe_experts = ds_cpu_moe_experts;
    be->shared_expert = cpu_shared_expert;
    be->lm_head = cpu_lm_head;
    *out = be;
    return DS_OK;
}
