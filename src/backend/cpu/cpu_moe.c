/* cpu_moe.c: routed experts on the cpu backend. Rows are grouped by
 * expert so each selected expert's weights stream from memory once per
 * micro-batch, whatever the number of rows that chose it.
 *
 * Small batches (decode, and the hybrid's host experts) take one threaded
 * pass per stage over all selected experts at once — gate+up of every
 * expert, then the GLU, then down with each thread owning a slice of the
 * output — instead of three thread-pool jobs per expert: 24 short jobs and
 * their barriers per layer left the cores idle for a large share of a
 * decode step. Both paths use the same kernels, the same grouping of
 * activation rows and the same order of sums, so they give the same bits. */
#include "cpu_internal.h"

#include <stdatomic.h>
#include <string.h>

#define GU_CHUNK 64   /* gate/up rows per work item */
#define DOWN_CHUNK 32 /* output rows per work item (a multiple of 16: no shared cache lines) */

typedef struct moe_job {
    cpu_impl *C;
    const ds_layer *L;
    bool fused;
    int64_t E, F;
    int n_used;
    int ex[DS_MAX_EXPERTS_USED * DS_MAX_ROWS_FAST]; /* used experts, ascending */
    int p0[DS_MAX_EXPERTS_USED * DS_MAX_ROWS_FAST + 1]; /* pairs of ex[u]: [p0[u], p0[u+1]) */
    int prow[DS_MAX_EXPERTS_USED * DS_MAX_ROWS_FAST];   /* batch row of pair p */
    float pw[DS_MAX_EXPERTS_USED * DS_MAX_ROWS_FAST];   /* weight of pair p */
    size_t rbg, rbu, rbd;  /* activation row bytes: gate, up (of E), down (of F) */
    const uint8_t *act_g, *act_u; /* [P] quantized input rows, per pair, for gate and up */
    int64_t n_items;
    _Atomic int64_t next;
    float *out;
} moe_job;

/* gate/up: item -> (used expert, gate or up, row chunk) */
static void gate_up_task(void *ctx, int ith, int nth) {
    moe_job *j = ctx;
    const int64_t per = (j->F + GU_CHUNK - 1) / GU_CHUNK;
    for (int64_t it = ith; it < j->n_items; it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) {
        const int u = (int)(it / (2 * per)), up = (int)(it / per % 2);
        const int64_t f0 = it % per * GU_CHUNK, len = j->F - f0 < GU_CHUNK ? j->F - f0 : GU_CHUNK;
        const int e = j->ex[u], c = j->p0[u + 1] - j->p0[u];
        const ds_tensor *W = j->fused ? &j->L->gate_up_exps : up ? &j->L->up_exps : &j->L->gate_exps;
        const int64_t row0 = j->fused ? (int64_t)e * 2 * j->F + (up ? j->F : 0) + f0 : (int64_t)e * j->F + f0;
        const uint8_t *act = up ? j->act_u : j->act_g;
        const size_t rb = up ? j->rbu : j->rbg;
        float *y = (up ? j->C->gb : j->C->ga) + (size_t)j->p0[u] * j->F + f0;
        ds_matmul_serial_preq(W->type, ds_tensor_row(W, row0), W->row_bytes, j->E, len, act + (size_t)j->p0[u] * rb, c,
                              y, j->F);
    }
    (void)nth;
}

/* GLU and quantization for down, one pair per item */
static void glu_task(void *ctx, int ith, int nth) {
    moe_job *j = ctx;
    const ds_type dt = j->L->down_exps.type;
    for (int64_t p = ith; p < j->n_items; p += nth) {
        float *ga = j->C->ga + (size_t)p * j->F;
        const float *gb = j->C->gb + (size_t)p * j->F;
        for (int64_t f = 0; f < j->F; f++) ga[f] = ds_silu(ga[f]) * gb[f];
        ds_quantize_act_row(dt, ga, j->C->mq_d + (size_t)p * j->rbd, j->F);
    }
}

/* down: a thread owns output rows [i0, i0 + len) of every batch row and
 * adds the experts' contributions in ascending expert order */
static void down_task(void *ctx, int ith, int nth) {
    moe_job *j = ctx;
    const ds_tensor *D = &j->L->down_exps;
    float tmp[DS_MAX_ROWS_FAST * DOWN_CHUNK];
    for (int64_t it = ith; it < j->n_items; it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) {
        const int64_t i0 = it * DOWN_CHUNK, len = j->E - i0 < DOWN_CHUNK ? j->E - i0 : DOWN_CHUNK;
        for (int u = 0; u < j->n_used; u++) {
            const int e = j->ex[u], p0 = j->p0[u], c = j->p0[u + 1] - p0;
            ds_matmul_serial_preq(D->type, ds_tensor_row(D, (int64_t)e * j->E + i0), D->row_bytes, j->F, len,
                                  j->C->mq_d + (size_t)p0 * j->rbd, c, tmp, len);
            for (int q = 0; q < c; q++)
                j->C->vec->axpy(j->pw[p0 + q], tmp + (size_t)q * len, j->out + (size_t)j->prow[p0 + q] * j->E + i0,
                                (int)len);
        }
    }
    (void)nth;
}

static void run(cpu_impl *C, ds_task_fn fn, moe_job *j, int64_t n_items) {
    j->n_items = n_items;
    atomic_store_explicit(&j->next, C->n_threads, memory_order_relaxed);
    if (C->tp && C->n_threads > 1) ds_threadpool_run(C->tp, fn, j);
    else fn(j, 0, 1);
}

/* the small-batch path; false if this batch or layer does not fit it */
static bool moe_fast(cpu_impl *C, const ds_model *m, int il, int n, const float *y, const int32_t *ids,
                     const float *weights, float *out) {
    const ds_hparams *hp = &m->hp;
    const ds_layer *L = &m->layers[il];
    const int k = hp->n_expert_used;
    if (n > DS_MAX_ROWS_FAST || k > DS_MAX_EXPERTS_USED || !C->mq_g || C->moe_fast_off) return false;
    static _Thread_local moe_job j; /* ~2 KiB of lists: not on the stack of every caller */
    j = (moe_job){ .C = C, .L = L, .fused = ds_tensor_present(&L->gate_up_exps), .E = hp->n_embd, .F = hp->n_ff_exp,
                   .out = out };
    const ds_type gt = j.fused ? L->gate_up_exps.type : L->gate_exps.type;
    const ds_type ut = j.fused ? gt : L->up_exps.type;
    j.rbg = ds_act_row_bytes(gt, j.E);
    j.rbu = ds_act_row_bytes(ut, j.E);
    j.rbd = ds_act_row_bytes(L->down_exps.type, j.F);
    /* pairs grouped by expert, ascending; rows ascending within */
    int P = 0;
    for (int e = 0; e < hp->n_expert; e++) {
        const int start = P;
        for (int r = 0; r < n; r++)
            for (int q = 0; q < k; q++)
                if (ids[(size_t)r * k + q] == e) {
                    j.prow[P] = r;
                    j.pw[P] = weights[(size_t)r * k + q];
                    P++;
                }
        if (P > start) {
            j.ex[j.n_used] = e;
            j.p0[j.n_used++] = start;
        }
    }
    j.p0[j.n_used] = P;
    if (!P) return true;
    if ((size_t)P * (size_t)j.F > C->ffn_elems || (size_t)P * (j.rbg > j.rbu ? j.rbg : j.rbu) > C->mq_y_bytes ||
        (size_t)P * j.rbd > C->mq_d_bytes || 2 * (j.rbg > j.rbu ? j.rbg : j.rbu) > C->mq_row_bytes)
        return false;
    /* each row quantized once (per type), then copied to its pairs' slots so
     * an expert's activation rows are contiguous */
    const size_t rbmax = j.rbg > j.rbu ? j.rbg : j.rbu;
    for (int r = 0; r < n; r++) {
        ds_quantize_act_row(gt, y + (size_t)r * j.E, C->mq_rows + (size_t)r * 2 * rbmax, j.E);
        if (ut != gt) ds_quantize_act_row(ut, y + (size_t)r * j.E, C->mq_rows + ((size_t)r * 2 + 1) * rbmax, j.E);
    }
    for (int p = 0; p < P; p++) {
        memcpy(C->mq_g + (size_t)p * j.rbg, C->mq_rows + (size_t)j.prow[p] * 2 * rbmax, j.rbg);
        if (ut != gt) memcpy(C->mq_u + (size_t)p * j.rbu, C->mq_rows + ((size_t)j.prow[p] * 2 + 1) * rbmax, j.rbu);
    }
    j.act_g = C->mq_g;
    j.act_u = ut == gt ? C->mq_g : C->mq_u;
    if (ut == gt) j.rbu = j.rbg;
    run(C, gate_up_task, &j, (int64_t)j.n_used * 2 * ((j.F + GU_CHUNK - 1) / GU_CHUNK));
    run(C, glu_task, &j, P);
    run(C, down_task, &j, (j.E + DOWN_CHUNK - 1) / DOWN_CHUNK);
    return true;
}

ds_status ds_cpu_moe_experts(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                             const int32_t *ids, const float *weights, float *out) {
    cpu_impl *C = be->impl;
    const ds_layer *L = &m->layers[il];
    const ds_hparams *hp = &m->hp;
    const int E = hp->n_embd, k = hp->n_expert_used;
    const int64_t F = hp->n_ff_exp;
    if (moe_fast(C, m, il, n, y, ids, weights, out)) return DS_OK;
    const bool fused = ds_tensor_present(&L->gate_up_exps);
    unsigned char used[DS_MAX_EXPERTS] = { 0 };
    for (int i = 0; i < n * k; i++)
        if (ids[i] >= 0) used[ids[i]] = 1;

    for (int e = 0; e < hp->n_expert; e++) {
        if (!used[e]) continue;
        int cnt = 0;
        for (int r = 0; r < n; r++)
            for (int j = 0; j < k; j++)
                if (ids[(size_t)r * k + j] == e) {
                    memcpy(C->ey + (size_t)cnt * E, y + (size_t)r * E, (size_t)E * sizeof(float));
                    C->erow[cnt] = r;
                    C->ew[cnt] = weights[(size_t)r * k + j];
                    cnt++;
                }
        if (fused)
            ds_cpu_ffn(C, &L->gate_up_exps, e * 2 * F, &L->gate_up_exps, e * 2 * F + F, &L->down_exps,
                       (int64_t)e * E, F, E, cnt, C->ey, C->eo);
        else
            ds_cpu_ffn(C, &L->gate_exps, e * F, &L->up_exps, e * F, &L->down_exps, (int64_t)e * E, F, E, cnt, C->ey,
                       C->eo);
        for (int i = 0; i < cnt; i++)
            C->vec->axpy(C->ew[i], C->eo + (size_t)i * E, out + (size_t)C->erow[i] * E, E);
    }
    return DS_OK;
}
