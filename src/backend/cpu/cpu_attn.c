/* cpu_attn.c: MLA attention on the cpu backend. Projections run on all
 * threads through ds_matmul; the per-head part (absorb q_nope through k_b,
 * attend over the latent cache tile by tile with an online softmax, expand
 * through v_b) is split by heads, each thread claiming heads and running
 * their small matmuls serially with its own scratch. Not the reference:
 * ref/ is the oracle this is tested against (tests/test_cpu_attn.c). */
#include "cpu_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

typedef struct attn_job {
    cpu_impl *C;
    const ds_model *m;
    const ds_layer *L;
    const ds_rows *rows;
    const ds_kv *kv;
    int il;
    /* heads past the first one per thread are claimed from here: a thread
     * slowed by another process takes fewer (a head's arithmetic does not
     * depend on which thread runs it) */
    _Alignas(64) _Atomic int next;
} attn_job;

/* RoPE with each row's cos/sin computed once (C->rope_cs) instead of once per
 * head: the same double arithmetic as ds_rope_apply, so the same bits. */
static void rope_table(const ds_model *m, int32_t pos, double *cs) {
    for (int i = 0; i < m->hp.d_rope / 2; i++) {
        double a = (double)pos * (double)m->rope_freq[i];
        cs[2 * i] = cos(a);
        cs[2 * i + 1] = sin(a);
    }
}

static void rope_apply_cs(float *x, int d_rope, const double *cs) {
    for (int i = 0; i < d_rope / 2; i++) {
        const double c = cs[2 * i], s = cs[2 * i + 1], x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = (float)(x0 * c - x1 * s);
        x[2 * i + 1] = (float)(x0 * s + x1 * c);
    }
}

/* One head's attention of every row of the batch over its sequence's cached
 * rows [0, pos], flash-style. The cache is read in tiles of up to
 * DS_ATTN_TILE tokens (never across a KV block): the scores of a tile are
 * one small matmul per run of rows of that sequence (the cached rows are
 * the weights, as f16/bf16/f32, each converted once for 4 query rows); for
 * the values the tile is converted to f32 once for all rows. Each row keeps
 * a running max and sum (online softmax, at most one rescale per tile).
 * A row's result depends only on its own query, sequence and pos, the tile
 * boundaries and which kernel form (1 to 4 rows) scored it: not on the
 * thread count.
 * q: [n][D] scaled [q_abs | roped q_pe]; olat: [n][kv_lora] output. */
static void attend_head(const attn_job *J, cpu_thread_scratch *s, const float *q, float *olat) {
    const ds_hparams *hp = &J->m->hp;
    const ds_cpu_vec *v = J->C->vec;
    const int LR = hp->kv_lora, D = hp->d_kv_row, n = J->rows->n, T = DS_ATTN_TILE;
    const int32_t *pos = J->rows->pos, *seq = J->rows->seq;
    const int bt = ds_kv_block_tokens(J->kv);
    const ds_type kt = ds_kv_type(J->kv);
    const size_t rs = (size_t)D * (kt == DS_TYPE_F32 ? 4 : 2); /* bytes per cached row */
    float *mx = s->msum, *sum = s->msum + J->C->max_rows;
    for (int r = 0; r < n; r++) {
        mx[r] = -INFINITY;
        sum[r] = 0;
    }
    memset(olat, 0, (size_t)n * LR * sizeof *olat);
    for (int r0 = 0; r0 < n; r0++) {
        /* each sequence once, at its first row: its rows are r0 and later ones */
        bool seen = false;
        for (int r = 0; r < r0 && !seen; r++) seen = seq[r] == seq[r0];
        if (seen) continue;
        const int32_t sq = seq[r0];
        int32_t last = 0;
        for (int r = r0; r < n; r++)
            if (seq[r] == sq && pos[r] > last) last = pos[r];
        int cnt;
        for (int32_t t0 = 0; t0 <= last; t0 += cnt) {
            const int in_blk = t0 % bt;
            cnt = bt - in_blk < T ? bt - in_blk : T;
            if (cnt > last + 1 - t0) cnt = last + 1 - t0;
            const uint8_t *src = (const uint8_t *)ds_kv_block(J->kv, J->il, sq, t0 / bt) + (size_t)in_blk * rs;
            /* scores: sc[r][i] = q[r] . cached row t0 + i, per run of consecutive rows
             * of this sequence that see the tile (later tokens of a partly seen tile
             * are scored too and masked below) */
            for (int r = r0; r < n;) {
                if (seq[r] != sq || pos[r] < t0) { r++; continue; }
                int e = r + 1;
                while (e < n && seq[e] == sq && pos[e] >= t0) e++;
                ds_matmul_serial_preq(kt, src, rs, D, cnt, q + (size_t)r * D, e - r, s->sc + (size_t)r * T, T);
                r = e;
            }
            /* values: an f32 cache is read in place */
            const float *lat = (const float *)src;
            if (kt != DS_TYPE_F32) {
                for (int i = 0; i < cnt; i++) v->row_to_f32(kt, src + (size_t)i * rs, s->lat + (size_t)i * D, LR);
                lat = s->lat;
            }
            for (int r = r0; r < n; r++) {
                if (seq[r] != sq || pos[r] < t0) continue;
                const int c = pos[r] + 1 - t0 < cnt ? pos[r] + 1 - t0 : cnt;
                const float *sc = s->sc + (size_t)r * T;
                float tmax = -INFINITY;
                for (int i = 0; i < c; i++)
                    if (sc[i] > tmax) tmax = sc[i];
                float *o = olat + (size_t)r * LR;
                if (tmax > mx[r]) {
                    if (sum[r] > 0) { /* nothing to rescale before the first tile */
                        const float f = expf(mx[r] - tmax);
                        for (int l = 0; l < LR; l++) o[l] *= f;
                        sum[r] *= f;
                    }
                    mx[r] = tmax;
                }
                for (int i = 0; i < c; i++) {
                    const float p = expf(sc[i] - mx[r]);
                    sum[r] += p;
                    v->axpy(p, lat + (size_t)i * D, o, LR);
                }
            }
        }
    }
    for (int r = 0; r < n; r++) {
        const float inv = 1.0f / sum[r];
        float *o = olat + (size_t)r * LR;
        for (int l = 0; l < LR; l++) o[l] *= inv;
    }
}

static void attn_heads_task(void *ctx, int ith, int nth) {
    attn_job *J = ctx;
    cpu_impl *C = J->C;
    cpu_thread_scratch *s = &C->ts[ith];
    const ds_hparams *hp = &J->m->hp;
    const ds_layer *L = J->L;
    const int H = hp->n_head, DQK = hp->d_qk, DN = hp->d_nope, DR = hp->d_rope, LR = hp->kv_lora, DV = hp->d_v;
    const int D = hp->d_kv_row;
    const int n = J->rows->n;
    const float scale = (float)hp->kq_scale;
    (void)nth;
    for (int h = ith; h < H; h = atomic_fetch_add_explicit(&J->next, 1, memory_order_relaxed)) {
        for (int r = 0; r < n; r++)
            memcpy(s->qn + (size_t)r * DN, C->q + ((size_t)r * H + h) * DQK, (size_t)DN * sizeof(float));
        /* q_abs[r] = k_b[h] . q_nope[r]: k_b[h] is [LR][DN]; into the first LR of each D-row of qlat */
        ds_matmul(NULL, L->k_b.type, ds_tensor_row(&L->k_b, (int64_t)h * LR), L->k_b.row_bytes, DN, LR, s->qn, n,
                  s->qlat, D, s->act);
        for (int r = 0; r < n; r++) {
            float *qr = s->qlat + (size_t)r * D;
            memcpy(qr + LR, C->q + ((size_t)r * H + h) * DQK + DN, (size_t)DR * sizeof(float));
            rope_apply_cs(qr + LR, DR, C->rope_cs + (size_t)r * DR);
            /* the softmax scale folded into the query: one multiply per value, not per score */
            for (int i = 0; i < D; i++) qr[i] *= scale;
        }
        attend_head(J, s, s->qlat, s->olat);
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
    /* the first q projection and kv_a read the same normed rows: when their
     * types agree, kv_a reuses the rows ds_matmul quantized into C->act */
    const ds_tensor *qa = hp->q_lora > 0 ? &L->q_a : &L->q;
    if (hp->q_lora > 0) ds_cpu_matmul(C, qa, 0, hp->q_lora, C->xn, n, C->cq, hp->q_lora);
    else ds_cpu_matmul(C, qa, 0, QW, C->xn, n, C->q, QW);
    if (L->kv_a.type == qa->type) {
        const bool f32_act = ds_type_info(qa->type)->act_type == DS_TYPE_F32; /* then act is unused */
        DS_ASSERT(L->kv_a.ne[0] == qa->ne[0]);
        ds_matmul_preq(C->tp, L->kv_a.type, ds_tensor_row(&L->kv_a, 0), L->kv_a.row_bytes, L->kv_a.ne[0], D,
                       f32_act ? (const void *)C->xn : C->act, n, C->kvr, D);
    } else {
        ds_cpu_matmul(C, &L->kv_a, 0, D, C->xn, n, C->kvr, D);
    }
    if (hp->q_lora > 0) {
        for (int r = 0; r < n; r++) {
            float *cq = C->cq + (size_t)r * hp->q_lora;
            ds_rms_norm(cq, L->q_a_norm.data, hp->q_lora, hp->rms_eps, cq);
        }
        ds_cpu_matmul(C, &L->q_b, 0, QW, C->cq, n, C->q, QW);
    }
    for (int r = 0; r < n; r++) {
        double *cs = C->rope_cs + (size_t)r * hp->d_rope;
        rope_table(m, rows->pos[r], cs);
        float *kr = C->kvr + (size_t)r * D;
        ds_rms_norm(kr, L->kv_a_norm.data, LR, hp->rms_eps, kr);
        rope_apply_cs(kr + LR, hp->d_rope, cs);
        ds_kv_store(kv, il, rows->seq[r], rows->pos[r], kr);
    }
    for (int r = 0; r < n; r++)
        if (rows->pos[r] >= C->max_ctx) return DS_ERR_INVALID_ARG;

    attn_job J = { .C = C, .m = m, .L = L, .rows = rows, .kv = kv, .il = il };
    atomic_init(&J.next, ds_threadpool_size(C->tp));
    ds_threadpool_run(C->tp, attn_heads_task, &J);
    ds_cpu_matmul(C, &L->attn_out, 0, E, C->heads, n, out, E);
    return DS_OK;
}
