/* cuda_backend.c: C glue of the CUDA backend — uploads the weights, owns the
 * device scratch and the device KV pool, builds block tables, and composes
 * the kernels of gemv/rowops/attn/router/moe into the blocks of
 * backend.h and into the whole-micro-batch forward hook (one CUDA graph per
 * decode shape). Not kernels: those live in the .cu files beside it; not
 * the host-expert side of a hybrid placement: cuda_hybrid.c. */
#include "cuda_backend.h"
#include "cuda_internal.h"
#include "attn.h"
#include "cuda_check.h"
#include "gemm.h"
#include "gemv.h"
#include "gemv_q8.h"
#include "mla_tc.h"
#include "moe.h"
#include "router.h"
#include "rowops.h"

#include "../../model/placement.h"
#include "../../quant/iq_tables.h"
#include "../cuda_scratch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* the profile stage names, in P_* order */
static const char *const prof_names[P_N] = { "attn proj", "attn core", "attn out", "norm/add", "dense ffn",
                                             "router", "shared exp", "routed exp", "lm head" };

/* DSINFER_CUDA_DEVICE_MAP="0,0": logical GPU i (CUDA<i> of a placement)
 * runs on physical device map[i]. Lets a one-GPU machine test a two-GPU
 * layer split (both halves on one card); unset = the identity. */
static int device_map(int *map, int cap) {
    const char *e = getenv("DSINFER_CUDA_DEVICE_MAP");
    if (!e || !*e) return 0;
    int n = 0;
    for (const char *q = e; *q && n < cap;) {
        char *end;
        long v = strtol(q, &end, 10);
        if (end == q || v < 0) return 0;
        map[n++] = (int)v;
        q = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return n;
}

static int physical_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

int ds_cuda_device_count(void) {
    int map[DS_MAX_DEVICES], n = device_map(map, DS_MAX_DEVICES);
    const int phys = physical_count();
    if (!n) return phys;
    for (int i = 0; i < n; i++)
        if (map[i] >= phys) return 0;
    return n;
}

static int physical_device(int gpu) {
    int map[DS_MAX_DEVICES], n = device_map(map, DS_MAX_DEVICES);
    return gpu < n ? map[gpu] : gpu;
}

/* ---- weights ------------------------------------------------------------------ */

static uint64_t tensor_bytes(const ds_tensor *t) {
    if (!ds_tensor_present(t)) return 0;
    return (uint64_t)t->row_bytes * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}


/* visits every tensor the forward pass reads: fn(ctx, host tensor, its device slot) */
typedef int (*tensor_fn)(void *ctx, const ds_tensor *t, cu_w *dst);
static int for_each_tensor(const ds_model *m, cu_impl *C, tensor_fn fn, void *ctx) {
    int rc;
#define T(host, dev) if ((rc = fn(ctx, &(host), &(dev)))) return rc;
    T(m->token_embd, C->token_embd)
    T(m->output_norm, C->output_norm)
    T(m->output, C->output)
    for (int il = 0; il < m->hp.n_layer; il++) {
        const ds_layer *H = &m->layers[il];
        cu_layer *D = &C->L[il];
#define TL(f) T(H->f, D->f)
        TL(attn_norm) TL(q_a) TL(q_a_norm) TL(q_b) TL(q) TL(kv_a) TL(kv_a_norm) TL(k_b) TL(v_b) TL(attn_out)
        TL(ffn_norm) TL(ffn_gate) TL(ffn_up) TL(ffn_down) TL(gate_inp) TL(exp_bias) TL(gate_exps) TL(up_exps)
        TL(gate_up_exps) TL(down_exps) TL(gate_shexp) TL(up_shexp) TL(down_shexp)
#undef TL
    }
#undef T
    return 0;
}

typedef struct upload_ctx {
    cu_impl *C;
    size_t off;          /* running offset in wbuf */
    size_t shown;        /* offset at the last progress line */
    uint64_t total;
    const ds_tensor *bad;
    const void *embd_src; /* tied output shares token_embd's device copy */
} upload_ctx;

/* a weight this backend holds: all of them, or CUDA0's when placed */
static bool held(const cu_impl *C, const ds_tensor *t) {
    return ds_tensor_present(t) && (!C->placed || t->device == DS_DEV_CUDA(C->gpu));
}

static int count_tensor(void *ctx, const ds_tensor *t, cu_w *dst) {
    upload_ctx *u = ctx;
    if (!held(u->C, t)) return 0;
    /* matrices go through the GEMV (32-element chunks); 1-D f32 vectors
     * (norms, the router bias) are read directly, any width */
    const bool matrix = t->type != DS_TYPE_F32 || t->ne[1] > 1;
    if (!ds_cu_type_supported(t->type) || (matrix && t->ne[0] % 32)) {
        u->bad = t;
        return 1;
    }
    if (t == &u->C->m->output && t->data == u->C->m->token_embd.data && held(u->C, &u->C->m->token_embd)) return 0;
    u->total += align256(tensor_bytes(t));
    return 0;
}

/* progress on stderr while gigabytes go up (a 300 GB model takes minutes) */
static void upload_progress(upload_ctx *u, bool done) {
    const uint64_t step = (uint64_t)1 << 30;
    ds_progress_report(done ? u->total : u->off, u->total);
    if (u->total < 4 * step) return;
    if (!done && u->off / step == u->shown / step) return;
    u->shown = u->off;
    const int w = 40, fill = (int)((double)u->off / (double)u->total * w);
    fprintf(stderr, "\rcuda: loading weights [%.*s%*s] %6.2f / %.2f GiB", fill, "########################################",
            w - fill, "", u->off / 1073741824.0, u->total / 1073741824.0);
    if (done) fputc('\n', stderr);
}

static int upload_tensor(void *ctx, const ds_tensor *t, cu_w *dst) {
    upload_ctx *u = ctx;
    memset(dst, 0, sizeof *dst);
    if (!held(u->C, t)) return 0;
    dst->type = t->type;
    dst->K = t->ne[0];
    dst->rows = t->ne[1] * t->ne[2] * t->ne[3];
    dst->row_bytes = t->row_bytes;
    if (t == &u->C->m->output && t->data == u->C->m->token_embd.data && u->C->token_embd.d) {
        dst->d = u->C->token_embd.d;
        return 0;
    }
    dst->d = u->C->wbuf + u->off;
    DS_CU_TRY(cudaMemcpy(u->C->wbuf + u->off, t->data, tensor_bytes(t), cudaMemcpyHostToDevice));
    u->off += align256(tensor_bytes(t));
    upload_progress(u, false);
    return 0;
}

/* ---- small helpers ------------------------------------------------------------- */

/* A product of n activation rows runs on the tensor-core GEMM from
 * gemm_min_rows rows on (prefill), else on the GEMV (decode, and graphs). */
static bool use_gemm(const cu_impl *C, int type, int n, int64_t ldx, int64_t group_rows, int64_t group_stride) {
    return C->gemm_min_rows > 0 && n >= C->gemm_min_rows && ds_cu_gemm_supported(type, ldx, group_rows, group_stride);
}

/* x's rows (cols wide, ldx apart) to f16 in C->xh, unless the caller said
 * (C->x_ready) that x is unchanged since the last conversion and that
 * conversion was of these rows: the second of two products with one input
 * (gate and up, q_a and kv_a) */
/* True if the copy keyed *k may be reused for these rows (and consumes
 * x_ready); otherwise *k names them, and the caller converts. */
static bool x_reuse(cu_impl *C, cu_xkey *k, const float *x, int64_t ldx, int64_t cols, int n) {
    const bool same = C->x_ready && k->src == x && k->ldx == ldx && k->cols == cols && k->n == n;
    C->x_ready = false;
    if (!same) *k = (cu_xkey){ x, ldx, cols, n };
    return same;
}

static int x_to_half(cu_impl *C, const float *x, int64_t ldx, int64_t cols, int n) {
    if (x_reuse(C, &C->xh_key, x, ldx, cols, n)) return 0;
    return ds_cu_to_half_rows(x, ldx, cols, n, C->xh, C->xinv, C->s);
}

/* decode rows (up to q8_max_rows) on the int8 GEMV, when it reads the type */
static bool use_q8(const cu_impl *C, const cu_w *W, int n, int64_t ldx, int64_t group_rows, int64_t group_stride) {
    return C->gemv_q8 && n <= C->q8_max_rows && ldx % 32 == 0 && group_stride % 32 == 0 &&
           ds_cu_gemv_q8_supported(W->type, W->K, group_rows);
}

/* product()'s choice for a plain (not per-head) product of W on n rows ldx
 * apart: true when it will run on the int8 GEMV, so a producer may write
 * its input straight into C->xq */
static bool takes_q8(const cu_impl *C, const cu_w *W, int n, int64_t ldx) {
    return !use_gemm(C, W->type, n, ldx, 0, 0) && use_q8(C, W, n, ldx, 0, 0);
}

/* x's rows (cols of them, ldx apart) to q8 blocks in C->xq; reuses the last
 * conversion under the same rule as x_to_half */
static int x_to_q8(cu_impl *C, const float *x, int64_t ldx, int64_t cols, int n) {
    if (x_reuse(C, &C->xq_key, x, ldx, cols, n)) return 0;
    return ds_cu_quantize_q8(x, ldx, cols, n, C->xq, C->s);
}

/* y[n][ldy] (=|+=) W[row0 .. row0+M) x, x rows ldx apart; per head when
 * group_rows > 0 (W rows [n_group][group_rows], group g reads x + g*group_stride) */
static int product(cu_impl *C, const cu_w *W, int64_t row0, int64_t M, const float *x, int64_t ldx,
                   int64_t group_rows, int64_t group_stride, int n, float *y, int64_t ldy, int accumulate) {
    if (use_gemm(C, W->type, n, ldx, group_rows, group_stride)) {
        const int64_t cols = group_rows > 0 ? ldx : W->K; /* per head: the whole row of slices */
        int rc = x_to_half(C, x, ldx, cols, n);
        if (rc) return rc;
        ds_cu_gemm_params p = { .w = W->d + (size_t)row0 * W->row_bytes, .type = W->type, .K = W->K, .M = M,
                                .row_bytes = W->row_bytes, .xh = C->xh, .inv = C->xinv, .ldx = ldx,
                                .group_rows = group_rows, .group_stride = group_stride, .y = y, .ldy = ldy, .n = n,
                                .accumulate = accumulate, .stream = C->s };
        return ds_cu_gemm(&p);
    }
    if (use_q8(C, W, n, ldx, group_rows, group_stride)) {
        const int64_t cols = group_rows > 0 ? ldx : W->K; /* per head: the whole row of slices */
        int rc = x_to_q8(C, x, ldx, cols, n);
        if (rc) return rc;
        ds_cu_gemv_params p = { .w = W->d + (size_t)row0 * W->row_bytes, .type = W->type, .K = W->K, .M = M,
                                .row_bytes = W->row_bytes, .ldx = cols, .group_rows = group_rows,
                                .group_stride = group_stride, .y = y, .ldy = ldy, .n = n, .accumulate = accumulate,
                                .stream = C->s };
        return ds_cu_gemv_q8(&p, C->xq);
    }
    C->x_ready = false;
    ds_cu_gemv_params p = { .w = W->d + (size_t)row0 * W->row_bytes, .type = W->type, .K = W->K, .M = M,
                            .row_bytes = W->row_bytes, .x = x, .ldx = ldx, .group_rows = group_rows,
                            .group_stride = group_stride, .y = y, .ldy = ldy, .n = n, .accumulate = accumulate,
                            .stream = C->s };
    return ds_cu_gemv(&p);
}

/* y[n][ldy] (=|+=) W[row0 .. row0+M) x, x rows ldx apart */
static int gemv(cu_impl *C, const cu_w *W, int64_t row0, int64_t M, const float *x, int64_t ldx, int n, float *y,
                int64_t ldy, int accumulate) {
    return product(C, W, row0, M, x, ldx, 0, 0, n, y, ldy, accumulate);
}

/* per-head product: W rows [n_group][group_rows], group g reads x + g*group_stride */
static int gemv_heads(cu_impl *C, const cu_w *W, const float *x, int64_t ldx, int64_t group_rows,
                      int64_t group_stride, int n, float *y, int64_t ldy) {
    return product(C, W, 0, W->rows, x, ldx, group_rows, group_stride, n, y, ldy, 0);
}

/* RMSNorm of n rows into y. When the product that reads y next (next, K
 * = dim) runs on the int8 GEMV, the same launch quantizes y for it and xq
 * is marked as holding y (x_ready, as if x_to_q8 had just run): one launch
 * fewer in front of q_a, q_b, the FFN's gate and the LM head. */
static int norm_rows(cu_impl *C, const float *x, int64_t ldx, const cu_w *norm, int dim, int n, float *y, int64_t ldy,
                     const cu_w *next) {
    const float eps = C->m->hp.rms_eps, *w = (const float *)norm->d;
    if (C->fuse_q8 && next && next->d && next->K == dim && dim <= DS_CU_RMSNORM_Q8_MAX_DIM &&
        takes_q8(C, next, n, ldy)) {
        int rc = ds_cu_rmsnorm_q8(x, ldx, w, dim, eps, n, y, ldy, C->xq, C->s);
        if (rc) return rc;
        C->xq_key = (cu_xkey){ y, ldy, dim, n };
        C->x_ready = true;
        return 0;
    }
    return ds_cu_rmsnorm(x, ldx, w, dim, eps, n, y, ldy, C->s);
}

/* a CUDA error (already printed with file:line) as the block's status */
static ds_status cu_fail(int rc, const char *what) {
    if (!rc) return DS_OK;
    fprintf(stderr, "cuda backend: %s failed (cuda error %d)\n", what, rc);
    return DS_ERR_INTERNAL;
}

/* ---- KV binding and per-call inputs --------------------------------------------- */

static int bind_kv(cu_impl *C, const ds_kv *kv) {
    if (C->kv == kv) return 0;
    const ds_hparams *hp = &C->m->hp;
    if (C->kv_pool) {
        DS_CU_TRY(cudaFree(C->kv_pool));
        C->kv_pool = NULL;
    }
    cudaFree(C->d_in);
    cudaFreeHost(C->h_in);
    C->d_in = NULL;
    C->h_in = NULL;
    const int elem = ds_kv_type(kv) == DS_TYPE_F32 ? 4 : 2;
    const int64_t nb = ds_kv_n_blocks(kv);
    const size_t pool = (size_t)hp->n_layer * nb * ds_kv_block_tokens(kv) * ds_kv_row_dim(kv) * elem;
    DS_CU_TRY(cudaMalloc(&C->kv_pool, pool));
    DS_CU_TRY(cudaMemset(C->kv_pool, 0, pool));
    C->n_tab = ds_kv_n_seq(kv) < C->max_rows ? ds_kv_n_seq(kv) : C->max_rows;
    C->in_len = (size_t)4 * C->max_rows + (size_t)C->n_tab * nb;
    DS_CU_TRY(cudaMalloc((void **)&C->d_in, C->in_len * sizeof(int32_t)));
    DS_CU_TRY(cudaMallocHost((void **)&C->h_in, C->in_len * sizeof(int32_t)));
    const int R = C->max_rows;
    C->view = (ds_cu_kv_view){ .pool = C->kv_pool, .kv_type = ds_kv_type(kv), .row_dim = ds_kv_row_dim(kv),
                               .block_tokens = ds_kv_block_tokens(kv), .n_blocks = nb,
                               .tables = C->d_in + 4 * R, .max_blocks = (int)nb,
                               .row_tab = C->d_in + 2 * R, .pos = C->d_in + R };
    C->kv = kv;
    /* the attention core's kernel depends on the cache type: decided once here, not per layer */
    C->mla_tc_ok = C->mla_tc && ds_cu_mla_tc_supported(C->view.kv_type, hp->kv_lora, hp->d_rope, hp->n_head);
    for (int i = 0; i < N_GRAPHS; i++) { /* graphs hold the old pointers */
        if (C->graphs[i].n) cudaGraphExecDestroy(C->graphs[i].exec);
        C->graphs[i].n = 0;
    }
    return 0;
}

/* Fills the host mirror with tokens, positions, each row's table index,
 * the wanted-row list and the block tables, and copies it to the device
 * (async on the stream). Returns the number of wanted rows in *nw. */
static int upload_inputs(cu_impl *C, const ds_rows *rows, const int32_t *tokens, const bool *want, const ds_kv *kv,
                         int *nw) {
    const int R = C->max_rows, n = rows->n;
    int32_t *tok = C->h_in, *pos = C->h_in + R, *tab = C->h_in + 2 * R, *widx = C->h_in + 3 * R;
    int32_t *tables = C->h_in + 4 * R;
    const int bt = ds_kv_block_tokens(kv);
    const int64_t nb = ds_kv_n_blocks(kv);
    int seqs[GRAPH_MAX_ROWS * 64], n_seqs = 0, maxpos[GRAPH_MAX_ROWS * 64];
    int k = 0;
    for (int r = 0; r < n; r++) {
        tok[r] = tokens ? tokens[r] : 0;
        pos[r] = rows->pos[r];
        int t = 0;
        while (t < n_seqs && seqs[t] != rows->seq[r]) t++;
        if (t == n_seqs) {
            if (n_seqs == C->n_tab || n_seqs == (int)(sizeof seqs / sizeof *seqs)) return (int)cudaErrorInvalidValue;
            seqs[n_seqs] = rows->seq[r];
            maxpos[n_seqs++] = rows->pos[r];
        }
        if (rows->pos[r] > maxpos[t]) maxpos[t] = rows->pos[r];
        tab[r] = t;
        if (!want || want[r]) widx[k++] = r;
    }
    for (int t = 0; t < n_seqs; t++)
        for (int64_t b = 0; b <= maxpos[t] / bt; b++) tables[(size_t)t * nb + b] = (int32_t)ds_kv_block_id(kv, seqs[t], b);
    *nw = k;
    /* the row arrays and the tables of the sequences in this batch (rows nb apart) */
    const size_t len = (size_t)4 * R + (size_t)n_seqs * nb;
    DS_CU_TRY(cudaMemcpyAsync(C->d_in, C->h_in, len * sizeof(int32_t), cudaMemcpyHostToDevice, C->s));
    return 0;
}

/* ---- blocks on device pointers ---------------------------------------------------- */

/* attention of n rows of h into out, or added onto out when acc (the
 * residual: the product's store adds, the same f32 sum as a separate add
 * launch) */
static int dev_attn(cu_impl *C, int il, int n, const float *h, float *out, int acc) {
    const ds_hparams *hp = &C->m->hp;
    const cu_layer *L = &C->L[il];
    const int E = hp->n_embd, H = hp->n_head, DQK = hp->d_qk, LR = hp->kv_lora, DR = hp->d_rope, DV = hp->d_v;
    int rc;
    prof_begin(C);
    if ((rc = norm_rows(C, h, E, &L->attn_norm, E, n, C->xn, E, hp->q_lora > 0 ? &L->q_a : &L->q))) return rc;
    if (hp->q_lora > 0) {
        if ((rc = gemv(C, &L->q_a, 0, hp->q_lora, C->xn, E, n, C->cq, hp->q_lora, 0))) return rc;
        C->x_ready = true; /* kv_a reads xn too */
        if ((rc = gemv(C, &L->kv_a, 0, LR + DR, C->xn, E, n, C->kvrow, LR + DR, 0))) return rc;
        if ((rc = norm_rows(C, C->cq, hp->q_lora, &L->q_a_norm, hp->q_lora, n, C->cq, hp->q_lora, &L->q_b)))
            return rc;
        if ((rc = gemv(C, &L->q_b, 0, (int64_t)H * DQK, C->cq, hp->q_lora, n, C->q, (int64_t)H * DQK, 0))) return rc;
    } else {
        if ((rc = gemv(C, &L->q, 0, (int64_t)H * DQK, C->xn, E, n, C->q, (int64_t)H * DQK, 0))) return rc;
        C->x_ready = true;
        if ((rc = gemv(C, &L->kv_a, 0, LR + DR, C->xn, E, n, C->kvrow, LR + DR, 0))) return rc;
    }
    prof_end(C, P_APROJ, 0);
    prof_begin(C);
    if ((rc = ds_cu_kv_store(C->kvrow, n, LR, DR, (const float *)L->kv_a_norm.d, hp->rms_eps, C->freq, &C->view, il,
                             C->s)))
        return rc;
    if ((rc = ds_cu_rope_q(C->q, n, H, DQK, hp->d_nope, DR, C->freq, C->view.pos, C->s))) return rc;
    /* q_nope -> latent per head (k_b rows [H][LR], x = q[r][h][0..d_nope)) */
    if ((rc = gemv_heads(C, &L->k_b, C->q, (int64_t)H * DQK, LR, DQK, n, C->qabs, (int64_t)H * LR))) return rc;
    if (C->mla_tc_ok)
        rc = ds_cu_mla_tc(C->qabs, C->q, n, H, DQK, hp->d_nope, LR, DR, (float)hp->kq_scale, &C->view, il, C->olat,
                          C->mla_work, C->mla_work_floats, C->s);
    else
        rc = ds_cu_mla(C->qabs, C->q, n, H, DQK, hp->d_nope, LR, DR, (float)hp->kq_scale, &C->view, il, C->olat, C->s);
    if (rc) return rc;
    /* latent -> v per head (v_b rows [H][DV], x = olat[r][h]) */
    if ((rc = gemv_heads(C, &L->v_b, C->olat, (int64_t)H * LR, DV, LR, n, C->heads, (int64_t)H * DV))) return rc;
    prof_end(C, P_ACORE, 0);
    return PROF(C, P_AOUT, gemv(C, &L->attn_out, 0, E, C->heads, (int64_t)H * DV, n, out, E, acc));
}

/* out (=|+= when acc) down(silu(gate y) * up y), rows of gate/up from g0/u0, F wide */
static int dev_ffn(cu_impl *C, const cu_w *gate, int64_t g0, const cu_w *up, int64_t u0, const cu_w *down, int64_t F,
                   int n, const float *y, float *out, int acc) {
    const int E = C->m->hp.n_embd;
    int rc;
    if ((rc = gemv(C, gate, g0, F, y, E, n, C->ffa, F, 0))) return rc;
    C->x_ready = true; /* up reads y too */
    if ((rc = gemv(C, up, u0, F, y, E, n, C->ffb, F, 0))) return rc;
    if (C->fuse_q8 && takes_q8(C, down, n, F)) { /* use_q8 checks F % 32 too, as silu_quantize needs */
        /* SwiGLU straight into the down product's q8 input: ffa keys the
         * quantized rows, whose float values are never written out */
        if ((rc = ds_cu_silu_quantize_q8(C->ffa, C->ffb, F, n, C->xq, C->s))) return rc;
        C->xq_key = (cu_xkey){ C->ffa, F, F, n };
        C->x_ready = true;
    } else if ((rc = ds_cu_silu_mul(C->ffa, C->ffb, F, F, n, C->ffa, F, C->s))) {
        return rc;
    }
    return gemv(C, down, 0, E, C->ffa, F, n, out, E, acc);
}

static int dev_dense(cu_impl *C, int il, int n, const float *y, float *out, int acc) {
    const cu_layer *L = &C->L[il];
    return dev_ffn(C, &L->ffn_gate, 0, &L->ffn_up, 0, &L->ffn_down, C->m->hp.n_ff, n, y, out, acc);
}

int cu_dev_shared(cu_impl *C, int il, int n, const float *y, float *out) {
    const cu_layer *L = &C->L[il];
    if (!L->gate_shexp.d) {
        DS_CU_TRY(cudaMemsetAsync(out, 0, (size_t)n * C->m->hp.n_embd * sizeof(float), C->s));
        return 0;
    }
    return dev_ffn(C, &L->gate_shexp, 0, &L->up_shexp, 0, &L->down_shexp, L->gate_shexp.rows, n, y, out, 0);
}

static int dev_route(cu_impl *C, int il, int n, const float *y, const int32_t *forced) {
    const ds_hparams *hp = &C->m->hp;
    const cu_layer *L = &C->L[il];
    int rc;
    /* router logits always in f32 (the GEMV): f16 inputs could flip near-tied
     * expert choices, and this matrix is small; f32 router weights (the
     * GGUFs') take the tiled kernel, whose sums do not depend on n */
    ds_cu_gemv_params gp = { .w = L->gate_inp.d, .type = L->gate_inp.type, .K = L->gate_inp.K, .M = hp->n_expert,
                             .row_bytes = L->gate_inp.row_bytes, .x = y, .ldx = hp->n_embd, .y = C->rlogit,
                             .ldy = hp->n_expert, .n = n, .stream = C->s };
    if ((rc = gp.type == DS_TYPE_F32 ? ds_cu_gemv_f32_tiles(&gp) : ds_cu_gemv(&gp))) return rc;
    ds_cu_route_params p = { .logits = C->rlogit, .bias = L->exp_bias.d ? (const float *)L->exp_bias.d : NULL,
                             .forced = forced, .ids = C->ids, .weights = C->rw, .margin = C->margin, .n = n,
                             .n_expert = hp->n_expert, .k = hp->n_expert_used, .n_group = hp->n_group,
                             .n_group_used = hp->n_group_used, .sigmoid = hp->gating == DS_GATING_SIGMOID,
                             .norm = hp->expert_weights_norm, .scale = hp->expert_weights_scale, .stream = C->s };
    return ds_cu_route(&p);
}

/* The decode MoE on int8 activations (gemv_q8.h's expert mode): y
 * quantized once; gate and up of every (row, slot) pair in one launch;
 * SwiGLU fused into quantizing the down input; down per pair; the weighted
 * sum in slot order. 5 launches, all graph-capturable (ids stay on the device). */
static bool moe_q8_usable(const cu_impl *C, const ds_cu_moe_params *p) {
    return C->moe_q8 && p->n <= DS_CU_Q8_MAX_ROWS && p->gate.type == p->up.type &&
           p->gate.expert_bytes == p->up.expert_bytes && p->gate.row_bytes == p->up.row_bytes && p->E % 32 == 0 &&
           p->F % 32 == 0 && ds_cu_gemv_q8_supported(p->gate.type, p->E, 0) &&
           ds_cu_gemv_q8_supported(p->down.type, p->F, 0);
}

static int dev_moe_q8(cu_impl *C, const ds_cu_moe_params *p) {
    const int nk = p->n * p->k;
    int rc;
    if ((rc = x_to_q8(C, p->y, p->E, p->E, p->n))) return rc;
    ds_cu_gemv_params g = { .w = p->gate.w, .type = p->gate.type, .K = p->E, .M = p->F,
                            .row_bytes = p->gate.row_bytes, .ldx = p->E, .y = C->act, .ldy = p->F, .n = nk,
                            .stream = C->s };
    ds_cu_q8_experts gx = { .ids = p->ids, .n_pairs = nk, .x_div = p->k, .expert_bytes = p->gate.expert_bytes,
                            .w2 = p->up.w, .y2 = C->moe_u };
    if ((rc = ds_cu_gemv_q8_experts(&g, C->xq, &gx, NULL))) return rc;
    C->xq_key.src = NULL; /* xq is about to hold the experts' activations */
    if ((rc = ds_cu_silu_quantize_q8(C->act, C->moe_u, p->F, nk, C->xq, C->s))) return rc;
    ds_cu_gemv_params d = { .w = p->down.w, .type = p->down.type, .K = p->F, .M = p->E,
                            .row_bytes = p->down.row_bytes, .ldx = p->F, .y = C->moe_y, .ldy = p->E, .n = nk,
                            .stream = C->s };
    ds_cu_q8_experts dx = { .ids = p->ids, .n_pairs = nk, .x_div = 1, .expert_bytes = p->down.expert_bytes };
    if ((rc = ds_cu_gemv_q8_experts(&d, C->xq, &dx, NULL))) return rc;
    return ds_cu_moe_combine_pairs(C->moe_y, p->ids, p->weights, p->n, p->k, p->E, p->out, C->s);
}

/* out += routed experts of ids/weights (device arrays [n][k]) */
static int dev_moe(cu_impl *C, int il, int n, const float *y, const int32_t *ids, const float *w, float *out) {
    const ds_hparams *hp = &C->m->hp;
    const cu_layer *L = &C->L[il];
    const int64_t F = hp->n_ff_exp, E = hp->n_embd;
    ds_cu_moe_params p = { .E = E, .F = F, .y = y, .ids = ids, .weights = w, .act = C->act, .out = out, .n = n,
                           .k = hp->n_expert_used, .stream = C->s };
    if (L->gate_up_exps.d) {
        const cu_w *g = &L->gate_up_exps;
        p.gate = (ds_cu_exps){ g->d, g->type, g->row_bytes, (size_t)2 * F * g->row_bytes };
        p.up = (ds_cu_exps){ g->d + (size_t)F * g->row_bytes, g->type, g->row_bytes, (size_t)2 * F * g->row_bytes };
    } else {
        p.gate = (ds_cu_exps){ L->gate_exps.d, L->gate_exps.type, L->gate_exps.row_bytes, (size_t)F * L->gate_exps.row_bytes };
        p.up = (ds_cu_exps){ L->up_exps.d, L->up_exps.type, L->up_exps.row_bytes, (size_t)F * L->up_exps.row_bytes };
    }
    p.down = (ds_cu_exps){ L->down_exps.d, L->down_exps.type, L->down_exps.row_bytes,
                           (size_t)E * L->down_exps.row_bytes };
    return moe_q8_usable(C, &p) ? dev_moe_q8(C, &p) : ds_cu_moe(&p);
}

/* The used experts of a grouped prefill on the tensor-core GEMM, one launch
 * per matrix: tiles of up to tile_rows gathered rows, each naming its expert
 * (cnt/off: rows per expert and their first gathered row; inputs in moe_y,
 * outputs to moe_y). */
static int moe_grouped_gemm(cu_impl *C, int il, const int *cnt, const int *off, int total) {
    const ds_hparams *hp = &C->m->hp;
    const cu_layer *L = &C->L[il];
    const int64_t F = hp->n_ff_exp, E = hp->n_embd;
    int used = 0;
    for (int e = 0; e < hp->n_expert; e++) used += cnt[e] > 0;
    const int tr = ds_cu_gemm_tile_rows(used ? (total + used - 1) / used : 1);
    int nt = 0;
    for (int e = 0; e < hp->n_expert; e++)
        for (int r = 0; r < cnt[e]; r += tr) {
            C->h_moe_tiles[3 * nt] = e;
            C->h_moe_tiles[3 * nt + 1] = off[e] + r;
            C->h_moe_tiles[3 * nt + 2] = cnt[e] - r < tr ? cnt[e] - r : tr;
            nt++;
        }
    DS_CU_TRY(cudaMemcpyAsync(C->moe_tiles, C->h_moe_tiles, (size_t)nt * 3 * sizeof(int32_t), cudaMemcpyHostToDevice,
                              C->s));
    const bool fused = L->gate_up_exps.d != NULL;
    const cu_w *g = fused ? &L->gate_up_exps : &L->gate_exps, *u = fused ? &L->gate_up_exps : &L->up_exps;
    const size_t gstride = (size_t)(fused ? 2 * F : F) * g->row_bytes;
    C->xh_key.src = NULL; /* xh now holds the gathered rows */
    int rc;
    if ((rc = ds_cu_to_half_rows(C->moe_y, E, E, total, C->xh, C->xinv, C->s))) return rc;
    ds_cu_gemm_params p = { .w = g->d, .type = g->type, .K = E, .M = F, .row_bytes = g->row_bytes,
                            .expert_bytes = gstride, .xh = C->xh, .inv = C->xinv, .ldx = E, .y = C->act, .ldy = F,
                            .tiles = C->moe_tiles, .n_tiles = nt, .tile_rows = tr, .stream = C->s };
    if ((rc = ds_cu_gemm(&p))) return rc;
    p.w = fused ? g->d + (size_t)F * g->row_bytes : u->d;
    p.type = u->type;
    p.row_bytes = u->row_bytes;
    p.expert_bytes = fused ? gstride : (size_t)F * u->row_bytes;
    p.y = C->moe_u;
    if ((rc = ds_cu_gemm(&p))) return rc;
    if ((rc = ds_cu_silu_mul(C->act, C->moe_u, F, F, total, C->act, F, C->s))) return rc;
    if ((rc = ds_cu_to_half_rows(C->act, F, F, total, C->xh, C->xinv, C->s))) return rc;
    const cu_w *d = &L->down_exps;
    p = (ds_cu_gemm_params){ .w = d->d, .type = d->type, .K = F, .M = E, .row_bytes = d->row_bytes,
                             .expert_bytes = (size_t)E * d->row_bytes, .xh = C->xh, .inv = C->xinv, .ldx = F,
                             .y = C->moe_y, .ldy = E, .tiles = C->moe_tiles, .n_tiles = nt, .tile_rows = tr,
                             .stream = C->s };
    return ds_cu_gemm(&p);
}

/* out += routed experts for a prefill: the (row, slot) pairs are grouped by
 * expert on the host (ids in host memory), the rows gathered, and each used
 * expert runs its GEMVs once over its rows (weights read ceil(rows/16) times
 * instead of once per pair); a combine kernel adds the weighted outputs in
 * slot order, so results do not depend on the grouping. w: device [n][k]. */
int cu_dev_moe_grouped(cu_impl *C, int il, int n, const float *y, const int32_t *ids, const float *w,
                           float *out) {
    const ds_hparams *hp = &C->m->hp;
    const cu_layer *L = &C->L[il];
    const int k = hp->n_expert_used, NE = hp->n_expert;
    const int64_t F = hp->n_ff_exp, E = hp->n_embd;
    int32_t *grow = C->h_moe_idx, *slot = C->h_moe_idx + (size_t)C->max_rows * k;
    int cnt[DS_MAX_EXPERTS + 1] = { 0 }, off[DS_MAX_EXPERTS + 1];
    for (int p = 0; p < n * k; p++)
        if (ids[p] >= 0 && ids[p] < NE) cnt[ids[p]]++;
    off[0] = 0;
    for (int e = 0; e < NE; e++) off[e + 1] = off[e] + cnt[e];
    const int total = off[NE];
    int fill[DS_MAX_EXPERTS];
    memcpy(fill, off, sizeof(int) * NE);
    for (int p = 0; p < n * k; p++) {
        const int e = ids[p];
        if (e < 0 || e >= NE) { slot[p] = -1; continue; }
        slot[p] = fill[e];
        grow[fill[e]++] = p / k;
    }
    int rc;
    DS_CU_TRY(cudaMemcpyAsync(C->moe_idx, grow, (size_t)total * sizeof(int32_t), cudaMemcpyHostToDevice, C->s));
    DS_CU_TRY(cudaMemcpyAsync(C->moe_idx + (size_t)C->max_rows * k, slot, (size_t)n * k * sizeof(int32_t),
                              cudaMemcpyHostToDevice, C->s));
    if ((rc = ds_cu_gather_rows(y, C->moe_idx, total, E, C->moe_y, C->s))) return rc;
    const bool fused = L->gate_up_exps.d != NULL;
    if (use_gemm(C, fused ? L->gate_up_exps.type : L->gate_exps.type, n, E, 0, 0) &&
        (fused || ds_cu_gemm_supported(L->up_exps.type, E, 0, 0)) && ds_cu_gemm_supported(L->down_exps.type, F, 0, 0)) {
        if ((rc = moe_grouped_gemm(C, il, cnt, off, total))) return rc;
        return ds_cu_moe_combine(C->moe_y, C->moe_idx + (size_t)C->max_rows * k, w, n, k, E, out, C->s);
    }
    for (int e = 0; e < NE; e++) {
        if (!cnt[e]) continue;
        const float *xe = C->moe_y + (size_t)off[e] * E;
        const cu_w *g = fused ? &L->gate_up_exps : &L->gate_exps, *u = fused ? &L->gate_up_exps : &L->up_exps;
        const int64_t g0 = fused ? (int64_t)e * 2 * F : (int64_t)e * F, u0 = fused ? g0 + F : (int64_t)e * F;
        if ((rc = gemv(C, g, g0, F, xe, E, cnt[e], C->act + (size_t)off[e] * F, F, 0)) ||
            (rc = gemv(C, u, u0, F, xe, E, cnt[e], C->moe_u + (size_t)off[e] * F, F, 0)))
            return rc;
    }
    if ((rc = ds_cu_silu_mul(C->act, C->moe_u, F, F, total, C->act, F, C->s))) return rc;
    for (int e = 0; e < NE; e++) { /* gathered inputs are consumed: outputs reuse moe_y */
        if (!cnt[e]) continue;
        if ((rc = gemv(C, &L->down_exps, (int64_t)e * E, E, C->act + (size_t)off[e] * F, F, cnt[e],
                       C->moe_y + (size_t)off[e] * E, E, 0)))
            return rc;
    }
    return ds_cu_moe_combine(C->moe_y, C->moe_idx + (size_t)C->max_rows * k, w, n, k, E, out, C->s);
}

/* logits of n rows of h (device) into d_logits [n][V] (n <= LM_CHUNK), and
 * each row's argmax id into best[n] (device) unless best is NULL */
static int dev_lm_head(cu_impl *C, int n, const float *h, int32_t *best) {
    const ds_hparams *hp = &C->m->hp;
    int rc;
    if ((rc = norm_rows(C, h, hp->n_embd, &C->output_norm, hp->n_embd, n, C->xn, hp->n_embd, &C->output)) ||
        (rc = gemv(C, &C->output, 0, hp->n_vocab, C->xn, hp->n_embd, n, C->logits, hp->n_vocab, 0)))
        return rc;
    return best ? ds_cu_argmax_rows(C->logits, n, hp->n_vocab, best, C->s) : 0;
}

/* ---- the block interface (host activations in and out) --------------------------- */

static int to_dev(cu_impl *C, void *d, const void *h, size_t bytes) {
    DS_CU_TRY(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, C->s));
    return 0;
}
static int to_host(cu_impl *C, void *h, const void *d, size_t bytes) {
    DS_CU_TRY(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, C->s));
    DS_CU_TRY(cudaStreamSynchronize(C->s));
    return 0;
}

static ds_status cu_attn(ds_backend *be, const ds_model *m, int il, const ds_rows *rows, const float *h, float *out,
                         ds_kv *kv) {
    cu_impl *C = be->impl;
    if (cudaSetDevice(C->phys) != cudaSuccess) return cu_fail(1, "set device");
    const size_t bytes = (size_t)rows->n * m->hp.n_embd * sizeof(float);
    int nw, rc;
    if ((rc = bind_kv(C, kv)) || (rc = upload_inputs(C, rows, NULL, NULL, kv, &nw)) || (rc = to_dev(C, C->h, h, bytes)) ||
        (rc = dev_attn(C, il, rows->n, C->h, C->a, 0)) || (rc = to_host(C, out, C->a, bytes)))
        return cu_fail(rc, "attn");
    return DS_OK;
}

static ds_status cu_dense_ffn(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out) {
    cu_impl *C = be->impl;
    if (cudaSetDevice(C->phys) != cudaSuccess) return cu_fail(1, "set device");
    const size_t bytes = (size_t)n * m->hp.n_embd * sizeof(float);
    int rc;
    if ((rc = to_dev(C, C->y, y, bytes)) || (rc = dev_dense(C, il, n, C->y, C->f, 0)) || (rc = to_host(C, out, C->f, bytes)))
        return cu_fail(rc, "dense_ffn");
    return DS_OK;
}

static ds_status cu_moe_route(ds_backend *be, const ds_model *m, int il, int n, const float *y, const int32_t *forced,
                              int32_t *ids, float *weights, float *margin) {
    cu_impl *C = be->impl;
    if (cudaSetDevice(C->phys) != cudaSuccess) return cu_fail(1, "set device");
    const int k = m->hp.n_expert_used;
    int rc;
    if ((rc = to_dev(C, C->y, y, (size_t)n * m->hp.n_embd * sizeof(float)))) return cu_fail(rc, "route");
    if (forced && (rc = to_dev(C, C->forced, forced, (size_t)n * k * sizeof(int32_t)))) return cu_fail(rc, "route");
    if ((rc = dev_route(C, il, n, C->y, forced ? C->forced : NULL)) ||
        (rc = to_host(C, ids, C->ids, (size_t)n * k * sizeof(int32_t))) ||
        (rc = to_host(C, weights, C->rw, (size_t)n * k * sizeof(float))) ||
        (margin && (rc = to_host(C, margin, C->margin, (size_t)n * sizeof(float)))))
        return cu_fail(rc, "route");
    return DS_OK;
}

static ds_status cu_moe_experts(ds_backend *be, const ds_model *m, int il, int n, const float *y, const int32_t *ids,
                                const float *weights, float *out) {
    cu_impl *C = be->impl;
    if (cudaSetDevice(C->phys) != cudaSuccess) return cu_fail(1, "set device");
    const int k = m->hp.n_expert_used;
    const size_t bytes = (size_t)n * m->hp.n_embd * sizeof(float);
    int rc;
    if ((rc = to_dev(C, C->y, y, bytes)) || (rc = to_dev(C, C->f, out, bytes)) ||
        (rc = to_dev(C, C->ids, ids, (size_t)n * k * sizeof(int32_t))) ||
        (rc = to_dev(C, C->rw, weights, (size_t)n * k * sizeof(float))) ||
        (rc = n > GRAPH_MAX_ROWS ? cu_dev_moe_grouped(C, il, n, C->y, ids, C->rw, C->f)
                                 : dev_moe(C, il, n, C->y, C->ids, C->rw, C->f)) ||
        (rc = to_host(C, out, C->f, bytes)))
        return cu_fail(rc, "moe_experts");
    return DS_OK;
}

static ds_status cu_shared_expert(ds_backend *be, const ds_model *m, int il, int n, const float *y, float *out) {
    cu_impl *C = be->impl;
    if (cudaSetDevice(C->phys) != cudaSuccess) return cu_fail(1, "set device");
    const size_t bytes = (size_t)n * m->hp.n_embd * sizeof(float);
    int rc;
    if ((rc = to_dev(C, C->y, y, bytes)) || (rc = cu_dev_shared(C, il, n, C->y, C->f)) || (rc = to_host(C, out, C->f, bytes)))
        return cu_fail(rc, "shared_expert");
    return DS_OK;
}

static ds_status cu_lm_head(ds_backend *be, const ds_model *m, int n, const float *h, float *logits) {
    cu_impl *C = be->impl;
    if (cudaSetDevice(C->phys) != cudaSuccess) return cu_fail(1, "set device");
    const int E = m->hp.n_embd;
    const size_t V = (size_t)m->hp.n_vocab;
    int rc;
    for (int r0 = 0; r0 < n; r0 += LM_CHUNK) {
        const int c = n - r0 < LM_CHUNK ? n - r0 : LM_CHUNK;
        if ((rc = to_dev(C, C->h, h + (size_t)r0 * E, (size_t)c * E * sizeof(float))) || (rc = dev_lm_head(C, c, C->h, NULL)) ||
            (rc = to_host(C, logits + (size_t)r0 * V, C->logits, (size_t)c * V * sizeof(float))))
            return cu_fail(rc, "lm_head");
    }
    return DS_OK;
}

/* ---- the forward hook: a whole micro-batch on the device ------------------------------- */

/* routed experts of the router's device ids: fused kernels for decode
 * (graph-capturable), grouped by expert for prefill (reads ids back) */
static int dev_moe_any(cu_impl *C, int il, int n, const float *y, float *out) {
    if (n <= GRAPH_MAX_ROWS) return dev_moe(C, il, n, y, C->ids, C->rw, out);
    const size_t nk = (size_t)n * C->m->hp.n_expert_used;
    DS_CU_TRY(cudaMemcpyAsync(C->h_ids, C->ids, nk * sizeof(int32_t), cudaMemcpyDeviceToHost, C->s));
    DS_CU_TRY(cudaStreamSynchronize(C->s));
    return cu_dev_moe_grouped(C, il, n, y, C->h_ids, C->rw, out);
}

/* every layer on C->h (embedded already); wanted rows gathered into C->a */
static int dev_layers(cu_impl *C, int n, int nw) {
    const ds_hparams *hp = &C->m->hp;
    const size_t nE = (size_t)n * hp->n_embd;
    const int R = C->max_rows;
    int rc;
    for (int il = 0; il < hp->n_layer; il++) {
        /* attn_output and the dense FFN's down add onto the residual h as they store */
        if ((rc = dev_attn(C, il, n, C->h, C->h, 1))) return rc;
        const cu_layer *L = &C->L[il]; /* the FFN's first product reads y: gate (dense) or the shared expert's */
        const cu_w *first = !C->m->layers[il].is_moe ? &L->ffn_gate : L->gate_shexp.d ? &L->gate_shexp : NULL;
        if ((rc = PROF(C, P_NORM,
                       norm_rows(C, C->h, hp->n_embd, &L->ffn_norm, hp->n_embd, n, C->y, hp->n_embd, first))))
            return rc;
        if (!C->m->layers[il].is_moe) {
            if ((rc = PROF(C, P_DENSE, dev_dense(C, il, n, C->y, C->h, 1)))) return rc;
            continue;
        } else if (C->host_exps[il]) {
            const bool stream = cu_stream_cheaper(C, il, n);
            if ((rc = PROF(C, P_ROUTE, dev_route(C, il, n, C->y, NULL))) ||
                (rc = stream ? cu_stream_moe(C, il, n) : cu_host_moe(C, il, n)))
                return rc;
        } else if ((rc = PROF(C, P_ROUTE, dev_route(C, il, n, C->y, NULL))) ||
                   (rc = PROF(C, P_SHARED, cu_dev_shared(C, il, n, C->y, C->f))) ||
                   (rc = PROF(C, P_MOE, dev_moe_any(C, il, n, C->y, C->f)))) {
            return rc;
        }
        if ((rc = PROF(C, P_NORM, ds_cu_add(C->h, C->f, (int64_t)nE, C->s)))) return rc;
    }
    return nw > 0 ? ds_cu_gather_rows(C->h, C->d_in + 3 * R, nw, hp->n_embd, C->a, C->s) : 0;
}

/* embedding + layers (+ LM head of the first LM_CHUNK wanted rows when lm,
 * and their argmax ids when best) */
static int dev_step(cu_impl *C, int n, int nw, bool lm, bool best) {
    const ds_model *m = C->m;
    int rc;
    if (C->token_embd.d) {
        if ((rc = ds_cu_embed(C->token_embd.d, C->token_embd.type, m->hp.n_embd, C->token_embd.row_bytes, C->d_in, n,
                              C->h, C->s)))
            return rc;
    } else if (C->embd_raw) { /* token_embd stayed on the host: cu_forward copied its raw rows to h_embd */
        const size_t rb = m->token_embd.row_bytes;
        DS_CU_TRY(cudaMemcpyAsync(C->y, C->h_embd, (size_t)n * rb, cudaMemcpyHostToDevice, C->s));
        if ((rc = ds_cu_dequant_rows(C->y, m->token_embd.type, m->hp.n_embd, rb, 0, n, C->h, C->s))) return rc;
    } else { /* a type without a CUDA kernel: cu_forward dequantized into h_embd */
        DS_CU_TRY(cudaMemcpyAsync(C->h, C->h_embd, (size_t)n * m->hp.n_embd * sizeof(float), cudaMemcpyHostToDevice,
                                  C->s));
    }
    if ((rc = dev_layers(C, n, nw))) return rc;
    return lm && nw > 0 ? PROF(C, P_LM, dev_lm_head(C, nw < LM_CHUNK ? nw : LM_CHUNK, C->a, best ? C->best : NULL))
                        : 0;
}

/* a captured graph of dev_step for this (n, nw, best), captured on first use */
static int graph_for(cu_impl *C, int n, int nw, bool best, cudaGraphExec_t *out) {
    for (int i = 0; i < N_GRAPHS; i++)
        if (C->graphs[i].n == n && C->graphs[i].nw == nw && C->graphs[i].best == best) {
            *out = C->graphs[i].exec;
            return 0;
        }
    cu_graph *g = &C->graphs[C->next_graph];
    C->next_graph = (C->next_graph + 1) % N_GRAPHS;
    if (g->n) cudaGraphExecDestroy(g->exec);
    g->n = 0;
    cudaGraph_t graph;
    DS_CU_TRY(cudaStreamBeginCapture(C->s, cudaStreamCaptureModeThreadLocal));
    int rc = dev_step(C, n, nw, true, best);
    cudaError_t e = cudaStreamEndCapture(C->s, &graph);
    if (rc) return rc;
    DS_CU_TRY(e);
    e = cudaGraphInstantiate(&g->exec, graph, 0);
    cudaGraphDestroy(graph);
    DS_CU_TRY(e);
    g->n = n;
    g->nw = nw;
    g->best = best;
    *out = g->exec;
    return 0;
}

static ds_status cu_forward(ds_backend *be, const ds_model *m, const ds_rows *rows, const int32_t *tokens,
                            const bool *want, ds_kv *kv, float *logits, int32_t *best, int *n_logits) {
    cu_impl *C = be->impl;
    if (cudaSetDevice(C->phys) != cudaSuccess) return cu_fail(1, "set device");
    const double t_call = C->step_stats ? ds_time_s() : 0;
    bool graphed = false;
    const size_t V = (size_t)m->hp.n_vocab;
    const int n = rows->n;
    int nw = 0, rc;
    if (n > C->max_rows) return DS_ERR_INVALID_ARG;
    if ((rc = bind_kv(C, kv)) || (rc = upload_inputs(C, rows, tokens, want, kv, &nw))) return cu_fail(rc, "forward");
    if (!logits && !best) nw = 0;
    if (!C->token_embd.d) {
        /* the previous step's copy out of h_embd must be done before it is refilled */
        if (cudaStreamSynchronize(C->s) != cudaSuccess) return cu_fail(1, "sync");
        /* the rows as stored (a 512-token prompt's host dequantization kept the
         * GPU idle ~10 ms: dsinfer bench pp512 on ds10, H200, session 10) */
        const size_t rb = m->token_embd.row_bytes;
        for (int r = 0; r < n; r++) {
            const void *row = ds_tensor_row(&m->token_embd, tokens[r]);
            if (C->embd_raw) memcpy((uint8_t *)C->h_embd + (size_t)r * rb, row, rb);
            else ds_dequantize_row(m->token_embd.type, row, C->h_embd + (size_t)r * m->hp.n_embd, m->hp.n_embd);
        }
    }
    /* host experts wait on the CPU mid-step: no graph (its launches stay async) */
    if (C->use_graph && !C->any_host_exps && n <= GRAPH_MAX_ROWS) {
        cudaGraphExec_t exec;
        if ((rc = graph_for(C, n, nw, best != NULL, &exec))) return cu_fail(rc, "graph");
        if (C->step_stats) cudaEventRecord(C->sev0, C->s);
        if (cudaGraphLaunch(exec, C->s) != cudaSuccess) return cu_fail(1, "graph launch");
        if (C->step_stats) cudaEventRecord(C->sev1, C->s);
        graphed = true;
    } else if ((rc = dev_step(C, n, nw, true, best != NULL))) {
        return cu_fail(rc, "forward");
    }
    if (C->prof && n == 1) C->prof_steps++;
    /* the first chunk's logits (and ids) are in C->logits; later chunks run here */
    for (int r0 = 0; r0 < nw; r0 += LM_CHUNK) {
        const int c = nw - r0 < LM_CHUNK ? nw - r0 : LM_CHUNK;
        if (r0 > 0 && (rc = dev_lm_head(C, c, C->a + (size_t)r0 * m->hp.n_embd, best ? C->best + r0 : NULL)))
            return cu_fail(rc, "lm_head");
        if (logits && (rc = to_host(C, logits + (size_t)r0 * V, C->logits, (size_t)c * V * sizeof(float))))
            return cu_fail(rc, "logits");
    }
    if (best && nw > 0) { /* only the ids cross the bus when the caller took no logits */
        if ((rc = to_host(C, C->h_best, C->best, (size_t)nw * sizeof(int32_t)))) return cu_fail(rc, "argmax");
        memcpy(best, C->h_best, (size_t)nw * sizeof(int32_t));
    }
    /* with rows, the copy of the logits or of the ids synced the stream */
    if (nw == 0 && cudaStreamSynchronize(C->s) != cudaSuccess) return cu_fail(1, "sync");
    if (C->step_stats && graphed) {
        float ms = 0;
        cudaEventElapsedTime(&ms, C->sev0, C->sev1);
        const int b = n > 1;
        C->st_steps[b]++;
        C->st_gpu_ms[b] += ms;
        C->st_call_s[b] += ds_time_s() - t_call;
    }
    *n_logits = nw;
    return DS_OK;
}

/* ---- create / free ---------------------------------------------------------------------- */

static void cu_free(ds_backend *be) {
    if (!be) return;
    cu_impl *C = be->impl;
    if (C) {
        cudaSetDevice(C->phys);
        if (C->prof) {
            double tot = 0;
            for (int i = 0; i < P_N; i++) tot += C->prof_ms[i];
            fprintf(stderr, "cuda profile (%d single-row steps among the calls; ms total, share):\n", C->prof_steps);
            for (int i = 0; i < P_N; i++)
                fprintf(stderr, "  %-11s %9.2f ms %5.1f%%\n", prof_names[i], C->prof_ms[i],
                        tot > 0 ? 100 * C->prof_ms[i] / tot : 0);
            cudaEventDestroy(C->ev0);
            cudaEventDestroy(C->ev1);
        }
        cu_hybrid_report(C);
        for (int b = 0; C->step_stats && b < 2; b++)
            if (C->st_steps[b])
                fprintf(stderr,
                        "cuda step stats: %ld graph steps of %s, us per step: %.1f in the call, %.1f on the GPU "
                        "(graph)\n",
                        C->st_steps[b], b ? "2+ rows" : "1 row", 1e6 * C->st_call_s[b] / C->st_steps[b],
                        1e3 * C->st_gpu_ms[b] / C->st_steps[b]);
        if (C->step_stats) {
            cudaEventDestroy(C->sev0);
            cudaEventDestroy(C->sev1);
        }
        for (int i = 0; i < N_GRAPHS; i++)
            if (C->graphs[i].n) cudaGraphExecDestroy(C->graphs[i].exec);
        cu_hybrid_free(C);
        void *pinned[] = { C->h_embd, C->h_y, C->h_w, C->h_xo, C->h_eids };
        for (size_t i = 0; i < sizeof pinned / sizeof *pinned; i++)
            if (pinned[i]) cudaFreeHost(pinned[i]);
        if (C->ev_y) cudaEventDestroy(C->ev_y);
        free(C->host_exps);
        void *bufs[] = { C->stage, C->wbuf, C->freq, C->h, C->a, C->y, C->f, C->xn, C->cq, C->q, C->kvrow, C->qabs, C->olat,
                         C->heads, C->ffa, C->ffb, C->rlogit, C->rw, C->margin, C->act, C->logits, C->ids,
                         C->forced, C->kv_pool, C->d_in, C->moe_y, C->moe_u, C->moe_idx, C->xh,
                         C->xinv, C->moe_tiles, C->mla_work, C->xq, C->best };
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            if (bufs[i]) cudaFree(bufs[i]);
        if (C->h_in) cudaFreeHost(C->h_in);
        if (C->h_moe_idx) cudaFreeHost(C->h_moe_idx);
        if (C->h_moe_tiles) cudaFreeHost(C->h_moe_tiles);
        if (C->h_ids) cudaFreeHost(C->h_ids);
        if (C->h_best) cudaFreeHost(C->h_best);
        if (C->s) cudaStreamDestroy(C->s);
        free(C->L);
        free(C);
    }
    free(be);
}

/* device scratch: the buffers of cuda_scratch.h, in its order */
static int alloc_scratch(cu_impl *C, size_t *total_out, bool dry) {
    void **ptr[DS_CS_COUNT] = {
        [DS_CS_H] = (void **)&C->h, [DS_CS_A] = (void **)&C->a, [DS_CS_Y] = (void **)&C->y, [DS_CS_F] = (void **)&C->f,
        [DS_CS_XN] = (void **)&C->xn, [DS_CS_CQ] = (void **)&C->cq, [DS_CS_Q] = (void **)&C->q,
        [DS_CS_KVROW] = (void **)&C->kvrow, [DS_CS_QABS] = (void **)&C->qabs, [DS_CS_OLAT] = (void **)&C->olat,
        [DS_CS_HEADS] = (void **)&C->heads, [DS_CS_FFA] = (void **)&C->ffa, [DS_CS_FFB] = (void **)&C->ffb,
        [DS_CS_RLOGIT] = (void **)&C->rlogit, [DS_CS_RW] = (void **)&C->rw, [DS_CS_MARGIN] = (void **)&C->margin,
        [DS_CS_ACT] = (void **)&C->act, [DS_CS_LOGITS] = (void **)&C->logits, [DS_CS_IDS] = (void **)&C->ids,
        [DS_CS_FORCED] = (void **)&C->forced, [DS_CS_FREQ] = (void **)&C->freq, [DS_CS_MOE_Y] = (void **)&C->moe_y,
        [DS_CS_MOE_U] = (void **)&C->moe_u, [DS_CS_MOE_IDX] = (void **)&C->moe_idx, [DS_CS_XH] = (void **)&C->xh,
        [DS_CS_XINV] = (void **)&C->xinv, [DS_CS_MOE_TILES] = (void **)&C->moe_tiles,
        [DS_CS_MLA_WORK] = (void **)&C->mla_work, [DS_CS_XQ] = (void **)&C->xq, [DS_CS_BEST] = (void **)&C->best,
    };
    int64_t n[DS_CS_COUNT];
    ds_cuda_scratch_elems(&C->m->hp, C->max_rows, n);
    size_t total = 0;
    for (int i = 0; i < DS_CS_COUNT; i++) {
        size_t bytes = align256((size_t)n[i] * 4);
        total += bytes;
        if (!dry) DS_CU_TRY(cudaMalloc(ptr[i], bytes));
    }
    C->mla_work_floats = (size_t)n[DS_CS_MLA_WORK];
    *total_out = total;
    return 0;
}

ds_status ds_backend_cuda_create(const ds_model *m, const ds_backend_params *p, ds_backend **out, ds_error *err) {
    *out = NULL;
    const ds_hparams *hp = &m->hp;
    if (ds_cuda_device_count() < 1 + p->gpu)
        return ds_error_set(err, DS_ERR_IO, "device 'cuda': no CUDA device is visible (driver missing or no GPU)");
    ds_backend *be = calloc(1, sizeof *be);
    cu_impl *C = calloc(1, sizeof *C);
    if (!be || !C) { free(be); free(C); return ds_error_set(err, DS_ERR_OOM, "out of memory"); }
    be->impl = C;
    be->name = "cuda";
    be->device_kv = true;
    C->m = m;
    C->max_rows = ds_cuda_scratch_rows(p->max_rows > 0 ? p->max_rows : 1);
    C->placed = p->placed;
    C->host = p->host;
    C->gpu = p->gpu;
    C->phys = physical_device(p->gpu);
    const char *hs = getenv("DSINFER_HYBRID_STATS");
    C->hstats = hs && hs[0] == '1';
    C->max_ctx = p->max_ctx > 0 ? p->max_ctx : hp->n_ctx_train;
    const char *g = getenv("DSINFER_CUDA_GRAPH");
    C->use_graph = !(g && g[0] == '0');
    /* prefill products on tensor cores from this many rows (decode steps of up
     * to GRAPH_MAX_ROWS rows replay graphs of GEMVs); 0 turns the GEMM off */
    const char *gm = getenv("DSINFER_GEMM_MIN_ROWS");
    C->gemm_min_rows = gm ? atoi(gm) : GRAPH_MAX_ROWS + 1;
    /* the attention core on tensor cores (f16/bf16 caches); 0: the f32 kernel */
    /* decode products on int8 activations (gemv_q8.h; ds10 tg128 221 -> 269 t/s
     * on an H200); DSINFER_GEMV_Q8=0 keeps them on the f32 GEMV */
    const char *q8 = getenv("DSINFER_GEMV_Q8");
    C->gemv_q8 = !(q8 && q8[0] == '0');
    /* the decode MoE on them too (DSINFER_CUDA_MOE_Q8=0: the f32 kernels of moe.cu) */
    const char *mq = getenv("DSINFER_CUDA_MOE_Q8");
    C->moe_q8 = C->gemv_q8 && !(mq && mq[0] == '0');
    /* their inputs quantized by the RMSNorm or SwiGLU that makes them (DSINFER_CUDA_FUSE=0: separate launches) */
    const char *fq = getenv("DSINFER_CUDA_FUSE");
    C->fuse_q8 = !(fq && fq[0] == '0');
    /* products of up to this many rows on the int8 GEMV (passes of 8; beyond, the f32 GEMV's passes of 16);
     * the scratch holds DS_CU_Q8_MAX_ROWS */
    const char *qr = getenv("DSINFER_Q8_MAX_ROWS");
    C->q8_max_rows = qr ? atoi(qr) : DS_CU_Q8_MAX_ROWS;
    if (C->q8_max_rows > DS_CU_Q8_MAX_ROWS) C->q8_max_rows = DS_CU_Q8_MAX_ROWS;
    const char *mt = getenv("DSINFER_CUDA_MLA_TC");
    C->mla_tc = !(mt && mt[0] == '0');
    const char *pf = getenv("DSINFER_CUDA_PROFILE");
    C->prof = pf && pf[0] == '1';
    if (C->prof) C->use_graph = false; /* events with host syncs cannot sit in a graph */
    C->L = calloc((size_t)hp->n_layer, sizeof *C->L);
    C->host_exps = calloc((size_t)hp->n_layer, sizeof *C->host_exps);
    ds_status st = DS_ERR_INTERNAL;
    if (!C->L || !C->host_exps) { st = ds_error_set(err, DS_ERR_OOM, "out of memory"); goto fail; }
    for (int il = 0; C->placed && C->host && il < hp->n_layer; il++) { /* host experts: only in the forward hook */
        C->host_exps[il] = m->layers[il].is_moe && ds_block_device(m, DS_BLK_EXPERTS, il) == DS_DEV_CPU;
        C->any_host_exps |= C->host_exps[il];
    }
    if (C->any_host_exps && !C->host) {
        st = ds_error_set(err, DS_ERR_INVALID_ARG, "device 'cuda': routed experts are placed on the CPU but no host backend was given");
        goto fail;
    }
    if (cudaSetDevice(C->phys) != cudaSuccess || cudaStreamCreateWithFlags(&C->s, cudaStreamNonBlocking) != cudaSuccess) {
        st = ds_error_set(err, DS_ERR_IO, "device 'cuda': cannot create a stream on CUDA%d (device %d)", C->gpu, C->phys);
        goto fail;
    }
    const char *ss = getenv("DSINFER_CUDA_STEP_STATS");
    if (ss && ss[0] == '1') {
        if (cudaEventCreate(&C->sev0) != cudaSuccess || cudaEventCreate(&C->sev1) != cudaSuccess) {
            st = ds_error_set(err, DS_ERR_IO, "device 'cuda': cannot create step timing events");
            goto fail;
        }
        C->step_stats = true;
    }
    if (C->prof && (cudaEventCreate(&C->ev0) != cudaSuccess || cudaEventCreate(&C->ev1) != cudaSuccess)) {
        st = ds_error_set(err, DS_ERR_IO, "device 'cuda': cannot create profiling events");
        goto fail;
    }
    if (ds_cu_gemv_check_tables(ds_iq4nl_values)) {
        st = ds_error_set(err, DS_ERR_INTERNAL, "device 'cuda': the kernels' iq4_nl table differs from the host's");
        goto fail;
    }
    if (hp->d_kv_row > 2048 || hp->kv_lora > 1024 || hp->d_rope > 128 || hp->n_expert > 1024 || hp->n_group > 64) {
        st = ds_error_set(err, DS_ERR_UNSUPPORTED, "device 'cuda': model dimensions beyond the kernels' limits");
        goto fail;
    }
    /* count, check types, check memory, then upload */
    upload_ctx u = { .C = C };
    if (for_each_tensor(m, C, count_tensor, &u)) {
        const ds_type_traits *tr = ds_type_info(u.bad->type);
        st = ds_error_set(err, DS_ERR_UNSUPPORTED,
                          "device 'cuda': tensor '%s' has type %s (width %lld), which the CUDA kernels do not read yet",
                          u.bad->name, tr ? tr->name : "?", (long long)u.bad->ne[0]);
        goto fail;
    }
    size_t scratch;
    alloc_scratch(C, &scratch, true);
    /* the stage for streamed prefill experts: the largest host-expert layer */
    const char *sr = getenv("DSINFER_STREAM_ROWS");
    C->stream_rows = sr ? atoi(sr) : DS_CU_STREAM_ROWS;
    if (C->any_host_exps && C->stream_rows > 0) C->stage_bytes = ds_placement_stream_bytes(m);
    scratch += C->stage_bytes;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    if (u.total + scratch + ((size_t)256 << 20) > free_b) {
        st = ds_error_set(err, DS_ERR_OOM,
                          "device 'cuda': the model needs %.2f GiB of weights + %.2f GiB of scratch, the GPU has "
                          "%.2f GiB free of %.2f GiB",
                          u.total / 1073741824.0, scratch / 1073741824.0, free_b / 1073741824.0,
                          total_b / 1073741824.0);
        goto fail;
    }
    if (cudaMalloc((void **)&C->wbuf, u.total ? u.total : 256) != cudaSuccess) {
        st = ds_error_set(err, DS_ERR_OOM, "device 'cuda': cannot allocate %.2f GiB for the weights",
                          u.total / 1073741824.0);
        goto fail;
    }
    C->wbytes = u.total;
    if ((st = cu_hybrid_setup(C, p, err))) goto fail;
    if (C->stage_bytes && cudaMalloc((void **)&C->stage, C->stage_bytes) != cudaSuccess) {
        st = ds_error_set(err, DS_ERR_OOM, "device 'cuda': cannot allocate %.2f GiB to stream prefill experts "
                          "(DSINFER_STREAM_ROWS=0 turns streaming off)", C->stage_bytes / 1073741824.0);
        goto fail;
    }
    const size_t rk = (size_t)C->max_rows * (hp->n_expert_used > 0 ? hp->n_expert_used : 1);
    if (for_each_tensor(m, C, upload_tensor, &u) || (upload_progress(&u, true), 0) || alloc_scratch(C, &scratch, false) ||
        cudaMallocHost((void **)&C->h_moe_idx, 2 * rk * sizeof(int32_t)) != cudaSuccess ||
        cudaMallocHost((void **)&C->h_moe_tiles, 3 * (size_t)ds_cuda_moe_tiles(hp, C->max_rows) * sizeof(int32_t)) !=
            cudaSuccess ||
        cudaMallocHost((void **)&C->h_ids, rk * sizeof(int32_t)) != cudaSuccess ||
        cudaMallocHost((void **)&C->h_best, (size_t)ds_cuda_scratch_rows(C->max_rows) * sizeof(int32_t)) !=
            cudaSuccess ||
        cudaMallocHost((void **)&C->h_embd, (size_t)C->max_rows * hp->n_embd * sizeof(float)) != cudaSuccess ||
        cudaMallocHost((void **)&C->h_y, (size_t)C->max_rows * hp->n_embd * sizeof(float)) != cudaSuccess ||
        cudaMallocHost((void **)&C->h_xo, (size_t)C->max_rows * hp->n_embd * sizeof(float)) != cudaSuccess ||
        cudaMallocHost((void **)&C->h_w, rk * sizeof(float)) != cudaSuccess ||
        cudaMallocHost((void **)&C->h_eids, rk * sizeof(int32_t)) != cudaSuccess ||
        cudaEventCreateWithFlags(&C->ev_y, cudaEventDisableTiming) != cudaSuccess ||
        cudaMemcpy(C->freq, m->rope_freq, (size_t)(hp->d_rope / 2) * sizeof(float), cudaMemcpyHostToDevice)) {
        st = ds_error_set(err, DS_ERR_OOM, "device 'cuda': uploading weights or allocating scratch failed");
        goto fail;
    }
    /* a host token_embd goes up as stored rows when the GPU can dequantize them
     * (staged in h_embd and the y scratch, both [R][E] floats) */
    C->embd_raw = !C->token_embd.d && ds_tensor_present(&m->token_embd) && ds_cu_type_supported(m->token_embd.type) &&
                  hp->n_embd % 32 == 0 && m->token_embd.row_bytes <= (size_t)hp->n_embd * sizeof(float);
    be->attn = cu_attn;
    be->dense_ffn = cu_dense_ffn;
    be->moe_route = cu_moe_route;
    be->moe_experts = cu_moe_experts;
    be->shared_expert = cu_shared_expert;
    be->lm_head = cu_lm_head;
    const char *f = getenv("DSINFER_CUDA_FORWARD");
    be->forward = f && f[0] == '0' ? NULL : cu_forward;
    be->free = cu_free;
    *out = be;
    return DS_OK;
fail:
    cu_free(be);
    return st;
}
