/* test_decode.c: the same tokens give the same logits however they are fed:
 * one prefill, micro-batches of 1/3/7 rows, token-by-token decode, and two
 * sequences interleaved in one batch (what the server's batching does). */
#include "testutil.h"
#include "cases.h"

#include <stdlib.h>
#include <string.h>

/* Bound: 1e-5 rel L2. Micro-batch size changes only which kernel form
 * (1-row or 4-row) and so the float summation order of a row's products,
 * never which rows meet (activation rows are independent): measured 0 to
 * 5e-7. "long" has no routing near-tie below 1e-4, so nothing flips at that
 * noise level. */
#define BOUND 1e-5

/* Two sequences: A = ids[0..na), B = ids2[0..nb), fed as one interleaved
 * batch per step; returns A's and B's logits rows in their own order. */
static void interleaved(const ds_model *m, const int32_t *a, int na, const int32_t *b, int nb, float *la, float *lb) {
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    p.kv_type = DS_TYPE_F32;
    p.n_ctx = na + nb;
    p.n_seq = 2;
    p.n_threads = 2;
    p.kv_block = 16; /* small blocks: both sequences' tables interleave in the pool */
    ds_ctx *c;
    ds_error err = { 0 };
    CHECK(ds_ctx_create(m, &p, &c, &err) == DS_OK, "ctx: %s", err.msg);
    const int V = m->hp.n_vocab;
    float *tmp = malloc(2 * (size_t)V * sizeof *tmp);
    /* first a 5-token chunk of A alone, then one row of each per step */
    int ia = 0, ib = 0;
    {
        int32_t pos[5] = { 0, 1, 2, 3, 4 }, seq[5] = { 0 };
        ds_batch bt = { 5, a, pos, seq, NULL, NULL };
        float *five = malloc(5 * (size_t)V * sizeof *five);
        CHECK(ds_ctx_decode(c, &bt, five, &err) == DS_OK, "decode: %s", err.msg);
        memcpy(la, five, 5 * (size_t)V * sizeof *five);
        free(five);
        ia = 5;
    }
    while (ia < na || ib < nb) {
        int32_t tk[2], pos[2], seq[2];
        int n = 0;
        if (ib < nb) { tk[n] = b[ib]; pos[n] = ib; seq[n] = 1; n++; }
        if (ia < na) { tk[n] = a[ia]; pos[n] = ia; seq[n] = 0; n++; }
        ds_batch bt = { n, tk, pos, seq, NULL, NULL };
        CHECK(ds_ctx_decode(c, &bt, tmp, &err) == DS_OK, "decode: %s", err.msg);
        for (int r = 0; r < n; r++)
            memcpy(seq[r] ? lb + (size_t)ib * V : la + (size_t)ia * V, tmp + (size_t)r * V, (size_t)V * sizeof *tmp);
        for (int r = 0; r < n; r++) { if (seq[r]) ib++; else ia++; }
    }
    free(tmp);
    ds_ctx_free(c);
}

int main(void) {
    ds_model *m;
    ds_error err = { 0 };
    ds_model_params mp = { .path = ds_test_data("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf") };
    if (ds_model_load(&mp, &m, &err)) {
        CHECK(0, "load: %s", err.msg);
        return ds_test_finish("test_decode");
    }
    int32_t ids[256], ids2[64];
    int n = ds_test_case_tokens(ds_test_data("models/dsv3_tiny/cases.json"), "long", ids, 256);
    int n2 = ds_test_case_tokens(ds_test_data("models/dsv3_tiny/cases.json"), "short", ids2, 64);
    CHECK(n == 160 && n2 == 7, "cases");
    const size_t V = (size_t)m->hp.n_vocab;
    float *full = ds_test_prefill(m, "cpu", DS_TYPE_F32, 512, 2, ids, n, NULL, NULL, NULL);
    CHECK(full != NULL, "prefill");
    int ubs[] = { 1, 3, 7, 64 };
    for (size_t i = 0; full && i < sizeof ubs / sizeof *ubs; i++) {
        float *got = ds_test_prefill(m, "cpu", DS_TYPE_F32, ubs[i], 2, ids, n, NULL, NULL, NULL);
        double e = got ? ds_test_rel_l2(got, full, n * V) : 1;
        printf("micro-batch %3d vs one prefill: rel L2 %.3e\n", ubs[i], e);
        CHECK(e <= BOUND, "ubatch %d: %.3e", ubs[i], e);
        free(got);
    }
    float *tbt = ds_test_decode_steps(m, "cpu", DS_TYPE_F32, 0, 2, ids, n);
    double e = tbt && full ? ds_test_rel_l2(tbt, full, n * V) : 1;
    printf("token-by-token vs one prefill: rel L2 %.3e\n", e);
    CHECK(e <= BOUND, "token by token: %.3e", e);
    free(tbt);

    /* decode steps pinned to a prefill's routing give the free decode's
     * logits; pinned to other experts they do not (the pin takes effect) */
    const int L = m->hp.n_layer, k = m->hp.n_expert_used;
    int32_t *route = calloc((size_t)L * n2 * k, sizeof *route);
    float *rec = ds_test_prefill(m, "cpu", DS_TYPE_F32, 512, 2, ids2, n2, route, NULL, NULL);
    ds_ctx_params cp;
    ds_ctx_params_default(&cp);
    cp.device = "cpu";
    cp.kv_type = DS_TYPE_F32;
    cp.n_ctx = n2;
    cp.n_threads = 2;
    float *free_dec = ds_test_decode_steps_p(m, &cp, ids2, n2);
    float *pinned = ds_test_decode_steps_pinned(m, &cp, ids2, n2, route);
    for (int i = 0; i < L * n2 * k; i++)
        if (route[i] >= 0) route[i] = (route[i] + 1) % m->hp.n_expert;
    float *moved = ds_test_decode_steps_pinned(m, &cp, ids2, n2, route);
    CHECK(rec && free_dec && pinned && moved, "pinned decode runs");
    if (free_dec && pinned && moved) {
        const double ep = ds_test_rel_l2(pinned, free_dec, n2 * V), em = ds_test_rel_l2(moved, free_dec, n2 * V);
        printf("decode pinned to the prefill's experts vs free %.3e, to other experts %.3e\n", ep, em);
        CHECK(ep <= BOUND && em > 1e-3, "pinned decode %.3e, moved %.3e", ep, em);
    }
    free(route); free(rec); free(free_dec); free(pinned); free(moved);

    float *la = malloc(n * V * sizeof *la), *lb = malloc(n2 * V * sizeof *lb);
    interleaved(m, ids, n, ids2, n2, la, lb);
    float *b_alone = ds_test_prefill(m, "cpu", DS_TYPE_F32, 512, 2, ids2, n2, NULL, NULL, NULL);
    double ea = full ? ds_test_rel_l2(la, full, n * V) : 1, eb = b_alone ? ds_test_rel_l2(lb, b_alone, n2 * V) : 1;
    printf("two interleaved sequences vs alone: A %.3e, B %.3e\n", ea, eb);
    CHECK(ea <= BOUND && eb <= BOUND, "interleaved: %.3e %.3e", ea, eb);
    free(la); free(lb); free(b_alone); free(full);

    /* ds_batch.best: the argmax ids of the wanted rows, with the logits and
     * without (then the LM head runs into scratch), equal to ds_argmax_f32
     * of those logits */
    {
        ds_ctx_params bp;
        ds_ctx_params_default(&bp);
        bp.device = "cpu";
        bp.n_ctx = 2 * n;
        bp.n_threads = 2;
        ds_ctx *bc;
        CHECK(ds_ctx_create(m, &bp, &bc, &err) == DS_OK, "ctx: %s", err.msg);
        enum { NB = 9 };
        int32_t pos[NB], seq[NB] = { 0 }, best[NB], best2[NB];
        bool want[NB];
        int nw = 0;
        for (int r = 0; r < NB; r++) pos[r] = r, want[r] = r % 3 != 1, nw += want[r];
        float *lg = malloc((size_t)NB * V * sizeof *lg);
        ds_batch bb = { NB, ids, pos, seq, want, best };
        CHECK(ds_ctx_decode(bc, &bb, lg, &err) == DS_OK, "decode with best: %s", err.msg);
        int agree = 0;
        for (int r = 0; r < nw; r++) agree += best[r] == ds_argmax_f32(lg + (size_t)r * V, V);
        ds_ctx_seq_truncate(bc, 0, 0);
        bb.best = best2;
        CHECK(ds_ctx_decode(bc, &bb, NULL, &err) == DS_OK, "decode, ids only: %s", err.msg);
        int same = 0;
        for (int r = 0; r < nw; r++) same += best2[r] == best[r];
        printf("argmax ids of %d wanted rows: %d equal the logits' argmax, %d equal without logits\n", nw, agree, same);
        CHECK(agree == nw && same == nw, "best ids: %d and %d of %d", agree, same, nw);
        free(lg);
        ds_ctx_free(bc);
    }

    /* KV exhaustion is an error, not a crash, and leaves the context usable */
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    p.n_ctx = 8;
    p.kv_block = 4;
    ds_ctx *c;
    CHECK(ds_ctx_create(m, &p, &c, &err) == DS_OK, "ctx");
    int32_t pos[9] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 }, seq[9] = { 0 };
    ds_batch big = { 9, ids, pos, seq, NULL, NULL };
    CHECK(ds_ctx_decode(c, &big, NULL, &err) == DS_ERR_KV_FULL, "9 tokens in a context of 8 must fail");
    printf("expected error: %s\n", err.msg);
    ds_batch ok = { 8, ids, pos, seq, NULL, NULL };
    CHECK(ds_ctx_decode(c, &ok, NULL, &err) == DS_OK, "8 tokens fit: %s", err.msg);
    int32_t bad = 1 << 20;
    ds_batch badtok = { 1, &bad, pos, seq, NULL, NULL };
    CHECK(ds_ctx_decode(c, &badtok, NULL, &err) == DS_ERR_INVALID_ARG, "out-of-vocab token");
    ds_ctx_free(c);
    ds_model_free(m);
    return ds_test_finish("test_decode");
}
