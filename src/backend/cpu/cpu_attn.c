/* cpu_attn.c: MLA attention on the cpu backend. Projections run on all
 * threads through ds_matmul; the per-head part (absorb q_nope through k_b,
 * attend over the latent cache with an online softmax, expand through v_b)
 * is split by heads, each thread running its heads' small matmuls serially
 * with its own scratch. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

typedef struct attn_job {
    cpu_impl *C;
    const ds_model *m;
    const ds_layer *L;
    const ds_rows *rows;
    const ds_kv *kv;
    int il;
} attn_job;

/* Attention of one row over its sequence's cached rows [0, pos] for one head:
 * single pass, online softmax (running max and sum), values = c_kv part. */
static void attend_row(const attn_job *J, cpu_thread_scratch *s, const float *qabs, const float *qpe, int32_t seq,
                       int32_t pos, float *olat) {
    const ds_hparams *hp = &J->m->hp;
    const ds_cpu_vec *v = J->C->vec;
    const int LR = hp->kv_lora, DR = hp->d_rope, D = hp->d_kv_row;
    const int bt = ds_kv_block_tokens(J->kv);
    const ds_type kt = ds_kv_type(J->kv);
    const size_t esz = kt == DS_TYPE_F32 ? 4 : 2;
    const float scale = (float)hp->kq_scale;
    float mx = -INFINITY, sum = 0;
    memset(olat, 0, (size_t)LR * sizeof *olat);
    for (int32_t t0 = 0; t0 <= pos; t0 += bt) {
        const uint8_t *blk = ds_kv_block(J->kv, J->il, seq, t0 / bt);
        int cnt = pos + 1 - t0 < bt ? pos + 1 - t0 : bt;
        for (int i = 0; i < cnt; i++) {
            v->row_to_f32(kt, blk + (size_t)i * D * esz, s->row, D);
            float sc = (v->dot(qabs, s->row, LR) + v->dot(qpe, s->row + LR, DR)) * scale;
            if (sc > mx) {
                float c = expf(mx - sc); /* 0 on the first row (mx = -inf) */
                for (int l = 0; l < LR; l++) olat[l] *= c;
                sum *= c;
                mx = sc;
            }
            float p = expf(sc - mx);
            sum += p;
            v->axpy(p, s->row, olat, LR);
        }
    }
    float inv = 1.0f / sum;
    for (int l = 0; l < LR; l++) olat[l] *= inv;
}

static void attn_heads_task(void *ctx, int ith, int nth) {
    const attn_job *J = ctx;
    cpu_impl *C = J->C;
    cpu_thread_scratch *s = &C->ts[ith];
    const ds_hparams *hp = &J->m->hp;
    const ds_layer *L = J->L;
    const int H = hp->n_head, DQK = hp->d_qk, DN = hp->d_nope, DR = hp->d_rope, LR = hp->kv_lora, DV = hp->d_v;
    const int n = J->rows->n;
    float qpe[256];
    DS_ASSERT(DR <= 256);
    for (int h = ith; h < H; h += nth) {
        for (int r = 0; r < n; r++)
            memcpy(s->qn + (size_t)r * DN, C->q + ((size_t)r * H + h) * DQK, (size_t)DN * sizeof(float));
        /* q_abs[r] = k_b[h] . q_nope[r]: k_b[h] is [LR][DN] */
        ds_matmul(NULL, L->k_b.type, ds_tensor_row(&L->k_b, (int64_t)h * LR), L->k_b.row_bytes, DN, LR, s->qn, n,
                  s->qabs, LR, s->act);
        for (int r = 0; r < n; r++) {
            memcpy(qpe, C->q + ((size_t)r * H + h) * DQK + DN, (size_t)DR * sizeof(float));
            ds_rope_apply(qpe, DR, J->m->rope_freq, J->rows->pos[r]);
            attend_row(J, s, s->qabs + (size_t)r * LR, qpe, J->rows->seq[r], J->rows->pos[r],
                       s->olat + (size_t)r * LR);
        }
        /* out_h[r] = v_b[h] . o_lat[r]: v_b[h] is [DV][LR] */
        ds_matmul(NULL, L->v_b.type, ds_tensor_row(&L->v_b, (int64_t)h * DV), L->v_b.row_bytes, LR, DV, s->olat, n,
                  C->heads + (size_t)h * DV, (int64_t)H * DV, s->act);
    }
}

ds_status ds_cpu_attn(ds_backend *be, const ds_model *m, int il, const ds_rows *rows, const float *h,
                      float *out, ds_kv *kv) {
    cpu_impl *C = be->impl;
    const ds_hparams *hp = &m->hp;
    const ds_layer *L = &m->layers[il];
    const int n = rows->n, E = hp->n_embd, LR = hp->kv_lora, D = hp->d_kv_row;
    DS_ASSERT(n <= C->max_rows);

    for (int r = 0; r < n; r++)
        ds_rms_norm(h + (size_t)r * E, L->attn_norm.data, E, hp->rms_eps, C->xn + (size_t)r * E);
    const int64_t QW = (int64_t)hp->n_head * hp->d_qk;
    if (hp->q_lora > 0) {
        ds_cpu_matmul(C, &L->q_a, 0, hp->q_lora, C->xn, n, C->cq, hp->q_lora);
        for (int r = 0; r < n; r++) {
            float *cq = C->cq + (size_t)r * hp->q_lora;
            ds_rms_norm(cq, L->q_a_norm.data, hp->q_lora, hp->rms_eps, cq);
        }
        ds_cpu_matmul(C, &L->q_b, 0, QW, C->cq, n, C->q, QW);
    } else {
        ds_cpu_matmul(C, &L->q, 0, QW, C->xn, n, C->q, QW);
    }
    ds_cpu_matmul(C, &L->kv_a, 0, D, C->xn, n, C->kvr, D);
    for (int r = 0; r < n; r++) {
        float *kr = C->kvr + (size_t)r * D;
        ds_rms_norm(kr, L->kv_a_norm.data, LR, hp->rms_eps, kr);
        ds_rope_apply(kr + LR, hp->d_rope, m->rope_freq, rows->pos[r]);
        ds_kv_store(kv, il, rows->seq[r], rows->pos[r], kr);
    }
    for (int r = 0; r < n; r++)
        if (rows->pos[r] >= C->max_ctx) return DS_ERR_INVALID_ARG;

    attn_job J = { C, m, L, rows, kv, il };
    ds_threadpool_run(C->tp, attn_heads_task, &J);
    ds_cpu_matmul(C, &L->attn_out, 0, E, C->heads, n, out, E);
    return DS_OK;
}
