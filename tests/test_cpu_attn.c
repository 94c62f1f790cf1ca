/* test_cpu_attn.c: the cpu backend's attention block — against the ref
 * backend on the tiny models (f16 and Q3_K_M weights; f16, f32 and bf16 caches),
 * bit for bit the same with 1, 2 and 3 threads, over batches that span
 * several KV blocks and two interleaved sequences. With a model path as
 * argument it is a benchmark instead: `test_cpu_attn MODEL [threads] [rows]`
 * times layer 0's attention for one prefill of `rows` (default 64) rows and
 * 16 single-row decode steps after it. */
#include "testutil.h"
#include "cases.h"
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* process CPU seconds: on a shared machine less noisy than wall time */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct attn_run {
    ds_backend *be;
    ds_kv *kv;
} attn_run;

static bool run_init(attn_run *a, const ds_model *m, const char *name, int threads, int max_rows, int ctx,
                     ds_type kt, int block_tokens) {
    ds_backend_params p = { .n_threads = threads, .max_rows = max_rows, .max_ctx = ctx };
    ds_error err = { 0 };
    a->be = NULL;
    a->kv = NULL;
    if (ds_backend_create(name, m, &p, &a->be, &err)) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return false;
    }
    ds_kv_params kp = { .n_layer = m->hp.n_layer, .row_dim = m->hp.d_kv_row, .type = kt, .n_ctx = 2 * (ctx + block_tokens),
                        .block_tokens = block_tokens, .n_seq = 2 };
    if (ds_kv_create(&kp, &a->kv, &err) || ds_kv_reserve(a->kv, 0, ctx, &err) || ds_kv_reserve(a->kv, 1, ctx, &err)) {
        fprintf(stderr, "kv: %s\n", err.msg);
        return false;
    }
    return true;
}

static void run_free(attn_run *a) {
    if (a->be) a->be->free(a->be);
    ds_kv_free(a->kv);
}

/* The calls of one check: rows (seq, pos) per call, in order; every position
 * of a sequence is written by an earlier call or an earlier row. */
typedef struct call { int n, seq0, pos0, seq1, pos1, n1; } call;

/* out[total rows][E]: the calls' outputs, rows of all calls in order */
static int run_calls(attn_run *a, const ds_model *m, int il, const call *calls, int n_calls, const float *h,
                     float *out) {
    const int E = m->hp.n_embd;
    int done = 0;
    for (int c = 0; c < n_calls; c++) {
        int32_t pos[64], seq[64];
        int n = 0;
        /* n rows of seq0 from pos0, then n1 rows of seq1 from pos1, interleaved */
        for (int i = 0; i < calls[c].n || i < calls[c].n1; i++) {
            if (i < calls[c].n) { pos[n] = calls[c].pos0 + i; seq[n] = calls[c].seq0; n++; }
            if (i < calls[c].n1) { pos[n] = calls[c].pos1 + i; seq[n] = calls[c].seq1; n++; }
        }
        ds_rows rows = { n, pos, seq };
        CHECK(a->be->attn(a->be, m, il, &rows, h + (size_t)done * E, out + (size_t)done * E, a->kv) == DS_OK, "attn");
        done += n;
    }
    return done;
}

static void check_model(const char *rel, ds_type kt, double ref_bound) {
    ds_model *m = ds_test_load_model(rel);
    if (!m) return;
    /* block of 4 tokens: a row's history spans up to 6 blocks and partial ones */
    const call calls[] = {
        { 7, 0, 0, 1, 0, 0 },   /* 7 rows of seq 0 */
        { 1, 0, 7, 1, 0, 5 },   /* 1 of seq 0 with 5 of seq 1, interleaved */
        { 9, 0, 8, 1, 5, 1 },   /* 9 + 1: the rows cross blocks */
        { 1, 0, 17, 1, 6, 0 },  /* one decode row */
        { 5, 1, 6, 0, 0, 0 },   /* 5 rows of seq 1 only */
    };
    const int n_calls = sizeof calls / sizeof *calls, N = 7 + 6 + 10 + 1 + 5, E = m->hp.n_embd;
    float *h = malloc((size_t)N * E * sizeof *h);
    float *ref = malloc((size_t)N * E * sizeof *ref), *got[3];
    uint64_t rng = 7;
    for (size_t i = 0; i < (size_t)N * E; i++) h[i] = ds_test_randf(&rng);
    for (int l = 0; l < m->hp.n_layer; l++) {
        attn_run rr;
        if (!run_init(&rr, m, "ref", 1, 16, 32, kt, 4)) { CHECK(0, "ref backend"); run_free(&rr); break; }
        run_calls(&rr, m, l, calls, n_calls, h, ref);
        run_free(&rr);
        for (int t = 0; t < 3; t++) {
            got[t] = malloc((size_t)N * E * sizeof *got[t]);
            attn_run rc;
            if (!run_init(&rc, m, "cpu", t + 1, 16, 32, kt, 4)) { CHECK(0, "cpu backend"); run_free(&rc); continue; }
            run_calls(&rc, m, l, calls, n_calls, h, got[t]);
            run_free(&rc);
        }
        const double e = ds_test_rel_l2(got[1], ref, (size_t)N * E);
        printf("%-40s %s cache, layer %d: cpu vs ref %.2e\n", rel, kt == DS_TYPE_F16 ? "f16" : kt == DS_TYPE_BF16 ? "bf16" : "f32", l, e);
        CHECK(e <= ref_bound, "%s layer %d: cpu vs ref %.3e", rel, l, e);
        /* heads are split over threads, each head's arithmetic is the same */
        CHECK(memcmp(got[0], got[1], (size_t)N * E * sizeof(float)) == 0, "%s layer %d: 1 vs 2 threads", rel, l);
        CHECK(memcmp(got[0], got[2], (size_t)N * E * sizeof(float)) == 0, "%s layer %d: 1 vs 3 threads", rel, l);
        for (int t = 0; t < 3; t++) free(got[t]);
    }
    free(h);
    free(ref);
    ds_model_free(m);
}

/* Benchmark: layer 0, one prefill of `rows` rows, then 16 decode rows. */
static int bench(const char *path, int threads, int rows) {
    ds_model *m;
    ds_error err = { 0 };
    ds_model_params mp = { .path = path };
    if (ds_model_load(&mp, &m, &err)) {
        fprintf(stderr, "load %s: %s\n", path, err.msg);
        return 1;
    }
    const int E = m->hp.n_embd, ctx = rows + 16;
    float *h = malloc((size_t)rows * E * sizeof *h), *out = malloc((size_t)rows * E * sizeof *out);
    uint64_t rng = 7;
    for (size_t i = 0; i < (size_t)rows * E; i++) h[i] = ds_test_randf(&rng);
    attn_run a;
    if (!run_init(&a, m, "cpu", threads, rows, ctx, DS_TYPE_F16, 64)) return 1;
    double best_p = 1e9, best_d = 1e9, cpu_p = 1e9, cpu_d = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        const call pre = { rows, 0, 0, 1, 0, 0 };
        double t0 = ds_time_s(), c0 = cpu_s();
        run_calls(&a, m, 0, &pre, 1, h, out);
        double t1 = ds_time_s(), c1 = cpu_s();
        for (int i = 0; i < 16; i++) {
            const call dec = { 1, 0, rows + i, 1, 0, 0 };
            run_calls(&a, m, 0, &dec, 1, h, out);
        }
        double t2 = ds_time_s(), c2 = cpu_s();
        if (c1 - c0 < cpu_p) cpu_p = c1 - c0;
        if ((c2 - c1) / 16 < cpu_d) cpu_d = (c2 - c1) / 16;
        if (t1 - t0 < best_p) best_p = t1 - t0;
        if ((t2 - t1) / 16 < best_d) best_d = (t2 - t1) / 16;
        printf("rep %d: prefill %d rows %.2f ms, decode %.3f ms/row\n", rep, rows, (t1 - t0) * 1e3,
               (t2 - t1) / 16 * 1e3);
    }
    printf("best: prefill %.2f ms, decode %.3f ms/row (%d threads); CPU time: prefill %.2f ms, decode %.3f ms/row\n",
           best_p * 1e3, best_d * 1e3, threads, cpu_p * 1e3, cpu_d * 1e3);
    run_free(&a);
    free(h);
    free(out);
    ds_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1) return bench(argv[1], argc > 2 ? atoi(argv[2]) : 2, argc > 3 ? atoi(argv[3]) : 64);
    /* f16 weights: f32 sums against ref's double (test_model_tiny's cpu bound 1e-4);
     * Q3_K_M: 8-bit activations on every projection (test_model_kq's 5e-2) */
    check_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf", DS_TYPE_F16, 1e-4);
    check_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf", DS_TYPE_F32, 1e-4);
    check_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf", DS_TYPE_BF16, 1e-4);
    check_model("models/dsv3_kq/dsv3_kq-Q3_K_M.gguf", DS_TYPE_F16, 5e-2);
    return ds_test_finish("test_cpu_attn");
}
