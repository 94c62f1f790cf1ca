/* test_cpu_moe.c: the cpu backend's routed experts — the small-batch path
 * (one threaded pass per stage over all selected experts, batches of up to
 * 8 rows) gives the same bits as the grouped path on the same batch,
 * whatever the thread count; a different split of the rows changes only
 * which kernel form sums each expert's rows (the same bits for integer-dot
 * types, f32 rounding for float ones); and it matches the ref backend. */
#include "testutil.h"
#include "cases.h"
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

static ds_backend *make(const ds_model *m, const char *name, int threads) {
    ds_backend_params p = { .n_threads = threads, .max_rows = 16, .max_ctx = 64 };
    ds_backend *be = NULL;
    ds_error err = { 0 };
    if (ds_backend_create(name, m, &p, &be, &err)) fprintf(stderr, "%s: %s\n", name, err.msg);
    return be;
}

/* out[n][E] = experts of rows [r0, r0 + n) (zeroed first) */
static void experts(ds_backend *be, const ds_model *m, int il, int r0, int n, const float *y, const int32_t *ids,
                    const float *w, float *out) {
    const int E = m->hp.n_embd, k = m->hp.n_expert_used;
    memset(out, 0, (size_t)n * E * sizeof *out);
    CHECK(be->moe_experts(be, m, il, n, y + (size_t)r0 * E, ids + (size_t)r0 * k, w + (size_t)r0 * k, out) == DS_OK,
          "moe_experts");
}

static void check_model(const char *rel, double ref_bound) {
    ds_model *m = ds_test_load_model(rel);
    if (!m) return;
    const int E = m->hp.n_embd, k = m->hp.n_expert_used, NE = m->hp.n_expert, N = 9;
    int il = 0;
    while (il < m->hp.n_layer && !m->layers[il].is_moe) il++;
    float *y = malloc((size_t)N * E * sizeof *y), *w = malloc((size_t)N * k * sizeof *w);
    int32_t *ids = malloc((size_t)N * k * sizeof *ids);
    float *big = malloc((size_t)N * E * sizeof *big), *small = malloc((size_t)N * E * sizeof *small);
    float *ref = malloc((size_t)N * E * sizeof *ref), *t3 = malloc((size_t)N * E * sizeof *t3);
    uint64_t rng = 42;
    for (size_t i = 0; i < (size_t)N * E; i++) y[i] = ds_test_randf(&rng);
    for (int r = 0; r < N; r++) /* k distinct experts per row, some shared between rows */
        for (int q = 0; q < k; q++) {
            int e;
            bool dup;
            do {
                e = (int)(ds_test_rand(&rng) % (uint64_t)(r % 3 == 0 ? (k + 2 < NE ? k + 2 : NE) : NE));
                dup = false;
                for (int p = 0; p < q; p++) dup |= ids[r * k + p] == e;
            } while (dup);
            ids[r * k + q] = e;
            w[r * k + q] = 0.1f + 0.8f * (ds_test_randf(&rng) * 0.5f + 0.5f);
        }
    ids[4 * k + 1] = -1; /* a skipped pair (an expert computed elsewhere) */
    setenv("DSINFER_CPU_MOE_FAST", "0", 1);
    ds_backend *grouped = make(m, "cpu", 2);
    unsetenv("DSINFER_CPU_MOE_FAST");
    ds_backend *cpu2 = make(m, "cpu", 2), *cpu3 = make(m, "cpu", 3), *rb = make(m, "ref", 1);
    CHECK(grouped && cpu2 && cpu3 && rb, "backends");
    if (grouped && cpu2 && cpu3 && rb) {
        const bool int_dot = ds_type_info(m->layers[il].down_exps.type)->act_type != DS_TYPE_F32;
        experts(grouped, m, il, 0, 8, y, ids, w, big);     /* 8 rows, grouped path */
        experts(grouped, m, il, 8, 1, y, ids, w, big + (size_t)8 * E);
        experts(cpu2, m, il, 0, 8, y, ids, w, small);      /* the same batches, small-batch path */
        experts(cpu2, m, il, 8, 1, y, ids, w, small + (size_t)8 * E);
        experts(cpu3, m, il, 0, 3, y, ids, w, t3);         /* other threads, other split */
        experts(cpu3, m, il, 3, 6, y, ids, w, t3 + (size_t)3 * E);
        experts(rb, m, il, 0, N, y, ids, w, ref);
        CHECK(memcmp(big, small, (size_t)N * E * sizeof *big) == 0, "%s: small-batch path == grouped path, bit for bit",
              rel);
        const double split = ds_test_rel_l2(t3, big, (size_t)N * E);
        /* float-dot types: 1e-6 is f32 rounding of a sum over <= 2048 terms in another order */
        CHECK(int_dot ? memcmp(big, t3, (size_t)N * E * sizeof *big) == 0 : split <= 1e-6,
              "%s: another thread count and split: %.3e", rel, split);
        const double e = ds_test_rel_l2(big, ref, (size_t)N * E);
        printf("%-40s layer %d: cpu vs ref %.2e\n", rel, il, e);
        CHECK(e <= ref_bound, "%s: cpu vs ref %.3e", rel, e);
    }
    if (grouped) grouped->free(grouped);
    if (cpu2) cpu2->free(cpu2);
    if (cpu3) cpu3->free(cpu3);
    if (rb) rb->free(rb);
    free(y); free(w); free(ids); free(big); free(small); free(ref); free(t3);
    ds_model_free(m);
}

int main(void) {
    /* f16 weights: f32 sums against ref's double (test_model_tiny's cpu bound 1e-4);
     * Q3_K_M: 8-bit activations (test_model_kq's 5e-2) */
    check_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf", 1e-4);
    check_model("models/dsv3_kq/dsv3_kq-Q3_K_M.gguf", 5e-2);
    return ds_test_finish("test_cpu_moe");
}
