/* forward.c: the context (backend + KV cache + scratch) and the layer loop.
 * Each block runs on the backend that holds its weights; the residual
 * stream, the FFN norm and the embedding lookup stay in host memory. */
#include "engine.h"
#include "../model/placement.h"

#include <stdlib.h>
#include <string.h>

struct ds_ctx {
    const ds_model *m;
    ds_ctx_params p;
    ds_backend *be;       /* the main backend: runs every block unless mixed */
    ds_backend *host;     /* with a GPU placement: the CPU backend for host-placed blocks */
    ds_backend *gpus[DS_MAX_DEVICES - 1]; /* with a GPU placement: the backend of each GPU used (be is the first) */
    bool mixed;           /* blocks dispatched one by one to be or host by placement */
    ds_kv *kv;
    /* scratch, [n_ubatch][...] */
    float *h, *a, *y, *f; /* [ub][n_embd] residual, attn out, normed, ffn out */
    int32_t *ids;         /* [ub][k] */
    float *w;             /* [ub][k] */
    float *margin;        /* [ub] */
    int32_t *ub_pos, *ub_seq;
    float *lbest;         /* logits for ds_batch.best when the caller keeps none */
    size_t lbest_rows;
    /* routing capture/pinning (tests) */
    int route_rows;
    int32_t *route_record;
    const int32_t *route_force;
    float *route_margin;
};

void ds_ctx_params_default(ds_ctx_params *p) {
    memset(p, 0, sizeof *p);
    p->device = "cpu";
    p->n_ctx = 4096;
    p->n_seq = 1;
    p->n_ubatch = 512;
    p->kv_type = DS_TYPE_F16;
    p->kv_block = 64;
}

/* The backends a placement needs. "ref"/"cpu" (or no GPU placement on a host
 * device): one backend. Otherwise a CPU backend for host-placed blocks and
 * the GPU backend; when everything but some routed experts is on CUDA0 the
 * GPU backend's forward hook runs whole micro-batches and calls the host
 * backend for those experts, else blocks are dispatched one by one. */
static ds_status create_backends(ds_ctx *c, ds_backend_params *bp, ds_error *err) {
    const ds_model *m = c->m;
    const char *dev = c->p.device ? c->p.device : "cpu";
    if (strcmp(dev, "cuda") || !ds_placement_uses_gpu(m)) return ds_backend_create(dev, m, bp, &c->be, err);
    bool used[DS_MAX_DEVICES] = { false };
    int top = 0;
    for (int il = -1; il < m->hp.n_layer; il++)
        for (int k = 0; k < DS_BLK_COUNT; k++) {
            const int d = ds_block_device(m, (ds_block_kind)k, il);
            if (d > 0 && d < DS_MAX_DEVICES) used[d] = true, top = d > top ? d : top;
        }
    ds_status st = ds_backend_create("cpu", m, bp, &c->host, err);
    if (st) return st;
    const char *gpu = c->p.gpu_backend ? c->p.gpu_backend : "cuda";
    /* the forward hook: one GPU holding everything but some routed experts */
    const bool hook = top == DS_DEV_CUDA(0) && ds_placement_gpu_with_cpu_experts(m);
    for (int d = 1; d <= top; d++) {
        if (!used[d]) continue;
        ds_backend_params gp = *bp;
        gp.placed = true;
        gp.gpu = d - 1;
        gp.host = hook ? c->host : NULL;
        gp.gpu_experts = c->p.gpu_experts;
        gp.expert_profile = c->p.expert_profile;
        if ((st = ds_backend_create(gpu, m, &gp, &c->gpus[d - 1], err))) return st;
        if (!c->be) c->be = c->gpus[d - 1];
    }
    c->mixed = !(hook && c->be->forward);
    return DS_OK;
}

/* the backend that runs block kind of layer il */
static ds_backend *block_backend(ds_ctx *c, ds_block_kind kind, int il) {
    if (!c->mixed) return c->be;
    const int d = ds_block_device(c->m, kind, il);
    return d <= DS_DEV_CPU ? c->host : c->gpus[d - 1]; /* -1: absent block, host no-op */
}

ds_status ds_ctx_create(const ds_model *m, const ds_ctx_params *p, ds_ctx **out, ds_error *err) {
    *out = NULL;
    const ds_hparams *hp = &m->hp;
    ds_ctx *c = calloc(1, sizeof *c);
    if (!c) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    c->m = m;
    c->p = *p;
    if (c->p.n_ubatch < 1) c->p.n_ubatch = 512;
    if (c->p.n_seq < 1) c->p.n_seq = 1;
    if (c->p.kv_block < 1) c->p.kv_block = 64;
    if (c->p.n_ctx < 1) c->p.n_ctx = 4096;
    const int ub = c->p.n_ubatch, E = hp->n_embd, k = hp->n_expert_used > 0 ? hp->n_expert_used : 1;

    ds_backend_params bp = { .n_threads = p->n_threads, .max_rows = ub, .max_ctx = (int)c->p.n_ctx };
    ds_status st = create_backends(c, &bp, err);
    if (st) goto fail;
    /* host KV rows unless one device backend holds them all */
    ds_kv_params kp = { .n_layer = hp->n_layer, .row_dim = hp->d_kv_row, .type = c->p.kv_type,
                        .n_ctx = c->p.n_ctx, .block_tokens = c->p.kv_block, .n_seq = c->p.n_seq,
                        .no_host = c->be->device_kv && !c->mixed };
    if ((st = ds_kv_create(&kp, &c->kv, err))) goto fail;
    c->h = malloc((size_t)ub * E * sizeof(float));
    c->a = malloc((size_t)ub * E * sizeof(float));
    c->y = malloc((size_t)ub * E * sizeof(float));
    c->f = malloc((size_t)ub * E * sizeof(float));
    c->ids = malloc((size_t)ub * k * sizeof(int32_t));
    c->w = malloc((size_t)ub * k * sizeof(float));
    c->margin = malloc((size_t)ub * sizeof(float));
    c->ub_pos = malloc((size_t)ub * sizeof(int32_t));
    c->ub_seq = malloc((size_t)ub * sizeof(int32_t));
    if (!c->h || !c->a || !c->y || !c->f || !c->ids || !c->w || !c->margin || !c->ub_pos ||
        !c->ub_seq) {
        st = ds_error_set(err, DS_ERR_OOM, "out of memory for forward scratch (micro-batch %d)", ub);
        goto fail;
    }
    *out = c;
    return DS_OK;
fail:
    ds_ctx_free(c);
    return st;
}

void ds_ctx_free(ds_ctx *c) {
    if (!c) return;
    if (c->gpus[0] || c->host) { /* placed: be is one of gpus */
        for (int g = 0; g < DS_MAX_DEVICES - 1; g++)
            if (c->gpus[g]) c->gpus[g]->free(c->gpus[g]);
    } else if (c->be) {
        c->be->free(c->be);
    }
    if (c->host) c->host->free(c->host); /* after the GPUs: a forward hook may call host */
    ds_kv_free(c->kv);
    free(c->h); free(c->a); free(c->y); free(c->f);
    free(c->ids); free(c->w); free(c->margin);
    free(c->ub_pos); free(c->ub_seq);
    free(c->lbest);
    free(c);
}

void ds_ctx_seq_truncate(ds_ctx *c, int seq, int64_t n_keep) { ds_kv_truncate(c->kv, seq, n_keep); }
ds_kv *ds_ctx_kv(ds_ctx *c) { return c->kv; }
const ds_model *ds_ctx_model(const ds_ctx *c) { return c->m; }

void ds_ctx_set_routing(ds_ctx *c, int max_rows, int32_t *record, const int32_t *force, float *margins) {
    c->route_rows = max_rows;
    c->route_record = record;
    c->route_force = force;
    c->route_margin = margins;
}

/* h[r] = token_embd[tokens[r]] (DeepSeek does not scale embeddings). */
static void embed(const ds_model *m, const int32_t *tokens, int n, float *h) {
    for (int r = 0; r < n; r++)
        ds_dequantize_row(m->token_embd.type, ds_tensor_row(&m->token_embd, tokens[r]),
                          h + (size_t)r * m->hp.n_embd, m->hp.n_embd);
}

static void add_into(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* One micro-batch of rows [r0, r0+n) of b through every layer. */
static ds_status forward_ubatch(ds_ctx *c, const ds_batch *b, int r0, int n, float *logits, int32_t *best,
                                int *n_out, ds_error *err) {
    const ds_model *m = c->m;
    const ds_hparams *hp = &m->hp;
    const int E = hp->n_embd, k = hp->n_expert_used;
    ds_backend *be = c->be;
    const size_t nE = (size_t)n * E;
    ds_rows rows = { n, b->pos + r0, b->seq + r0 };
    ds_status st;

    if (be->forward && !c->mixed) {
        if ((st = be->forward(be, m, &rows, b->tokens + r0, b->logits ? b->logits + r0 : NULL, c->kv, logits, best,
                              n_out)))
            goto fail;
        return DS_OK;
    }
    embed(m, b->tokens + r0, n, c->h);
    for (int il = 0; il < hp->n_layer; il++) {
        const ds_layer *L = &m->layers[il];
        be = block_backend(c, DS_BLK_ATTN, il);
        if ((st = be->attn(be, m, il, &rows, c->h, c->a, c->kv))) goto fail;
        add_into(c->h, c->a, nE);
        for (int r = 0; r < n; r++)
            ds_rms_norm(c->h + (size_t)r * E, L->ffn_norm.data, E, hp->rms_eps, c->y + (size_t)r * E);
        if (!L->is_moe) {
            be = block_backend(c, DS_BLK_DENSE, il);
            if ((st = be->dense_ffn(be, m, il, n, c->y, c->f))) goto fail;
        } else {
            const int32_t *force = NULL;
            size_t at = ((size_t)il * c->route_rows + r0) * k;
            bool track = c->route_rows > 0 && r0 + n <= c->route_rows;
            if (track && c->route_force) force = c->route_force + at;
            be = block_backend(c, DS_BLK_ROUTER, il);
            if ((st = be->moe_route(be, m, il, n, c->y, force, c->ids, c->w, c->margin))) goto fail;
            if (track && c->route_record) memcpy(c->route_record + at, c->ids, (size_t)n * k * sizeof(int32_t));
            if (track && c->route_margin)
                memcpy(c->route_margin + (size_t)il * c->route_rows + r0, c->margin, (size_t)n * sizeof(float));
            be = block_backend(c, DS_BLK_SHARED, il);
            if ((st = be->shared_expert(be, m, il, n, c->y, c->f))) goto fail;
            be = block_backend(c, DS_BLK_EXPERTS, il);
            if ((st = be->moe_experts(be, m, il, n, c->y, c->ids, c->w, c->f))) goto fail;
        }
        add_into(c->h, c->f, nE);
    }

    /* LM head only on wanted rows: gather them to the front of h */
    int nw = 0;
    for (int r = 0; r < n; r++) {
        if (b->logits && !b->logits[r0 + r]) continue;
        if (nw != r) memcpy(c->h + (size_t)nw * E, c->h + (size_t)r * E, (size_t)E * sizeof(float));
        nw++;
    }
    be = block_backend(c, DS_BLK_OUTPUT, -1);
    if (nw > 0 && !logits && best) { /* ids only: the logits go to scratch */
        if (c->lbest_rows < (size_t)nw) {
            float *lb = realloc(c->lbest, (size_t)nw * hp->n_vocab * sizeof(float));
            if (!lb) {
                st = DS_ERR_OOM;
                goto fail;
            }
            c->lbest = lb;
            c->lbest_rows = (size_t)nw;
        }
        logits = c->lbest;
    }
    if (nw > 0 && logits && (st = be->lm_head(be, m, nw, c->h, logits))) goto fail;
    for (int r = 0; best && r < nw; r++) best[r] = ds_argmax_f32(logits + (size_t)r * hp->n_vocab, (size_t)hp->n_vocab);
    *n_out = nw;
    return DS_OK;
fail:
    return ds_error_set(err, st, "%s backend failed in the forward pass (%s)", be->name, ds_status_name(st));
}

ds_status ds_ctx_decode(ds_ctx *c, const ds_batch *b, float *logits, ds_error *err) {
    const ds_hparams *hp = &c->m->hp;
    if (b->n <= 0) return DS_OK;
    /* validate and reserve before touching anything */
    for (int r = 0; r < b->n; r++) {
        if (b->tokens[r] < 0 || b->tokens[r] >= hp->n_vocab)
            return ds_error_set(err, DS_ERR_INVALID_ARG, "token id %d at batch row %d is outside the vocabulary (%d)",
                                b->tokens[r], r, hp->n_vocab);
        if (b->seq[r] < 0 || b->seq[r] >= c->p.n_seq)
            return ds_error_set(err, DS_ERR_INVALID_ARG, "sequence id %d outside 0..%d", b->seq[r], c->p.n_seq - 1);
        if (b->pos[r] < 0 || b->pos[r] >= c->p.n_ctx)
            return ds_error_set(err, DS_ERR_KV_FULL, "position %d does not fit the context of %lld tokens",
                                b->pos[r], (long long)c->p.n_ctx);
    }
    for (int r = 0; r < b->n; r++) {
        ds_status st = ds_kv_reserve(c->kv, b->seq[r], (int64_t)b->pos[r] + 1, err);
        if (st) return st;
    }
    size_t written = 0;
    for (int r0 = 0; r0 < b->n; r0 += c->p.n_ubatch) {
        int n = b->n - r0 < c->p.n_ubatch ? b->n - r0 : c->p.n_ubatch, nw = 0;
        ds_status st = forward_ubatch(c, b, r0, n, logits ? logits + written * hp->n_vocab : NULL,
                                      b->best ? b->best + written : NULL, &nw, err);
        if (st) return st;
        written += (size_t)nw;
    }
    return DS_OK;
}
