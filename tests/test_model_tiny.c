/* test_model_tiny.c: the forward pass against HF transformers' float64
 * logits for dsv3_tiny (tests/data/models/dsv3_tiny), both attention
 * layouts, ref and cpu backends, F32 and F16 KV caches. */
#include "testutil.h"
#include "cases.h"

#include <math.h>
#include <stdlib.h>

static const char *k_cases[] = { "one", "short", "mid", "long" };

/* Routing margins below `tie` are near-ties. HF's DeepSeek-V3 router runs in
 * float32 even in a float64 model, so its rounding (~1e-6 on scores) decides
 * such ties, not the math: 1e-4 with an F32 cache. An F16 cache moves every
 * cached latent by up to 2^-11 relative, which moves router scores by ~1e-3,
 * so there a tie is anything under 1e-3 (the margin moved by 1.4e-4 here). */

/* A case that misses its bound is re-examined: find the smallest routing
 * margin; if it is a near-tie, pin that one row's weakest expert to each
 * alternative in turn (every other row still routes freely) and keep the
 * best result. Passing then means the only difference from HF is which side
 * of the tie was taken; the margin is printed. */
static double resolve_tie(const ds_model *m, const char *dev, ds_type kv, const int32_t *ids, int n,
                          const float *want, double tie) {
    const int L = m->hp.n_layer, k = m->hp.n_expert_used, V = m->hp.n_vocab;
    int32_t *rec = calloc((size_t)L * n * k, sizeof *rec), *force = malloc((size_t)L * n * k * sizeof *force);
    float *mg = malloc((size_t)L * n * sizeof *mg);
    float *base = ds_test_prefill(m, dev, kv, 512, 2, ids, n, rec, NULL, mg);
    double best = base ? ds_test_rel_l2(base, want, (size_t)n * V) : 1;
    int tl = -1, tr = -1;
    float tm = (float)tie;
    for (int l = 0; l < L; l++)
        for (int r = 0; r < n && m->layers[l].is_moe; r++)
            if (mg[(size_t)l * n + r] < tm) { tm = mg[(size_t)l * n + r]; tl = l; tr = r; }
    if (tl >= 0) {
        const int32_t *sel = rec + ((size_t)tl * n + tr) * k;
        int best_e = -1;
        for (int e = 0; e < m->hp.n_expert; e++) {
            bool chosen = false;
            for (int j = 0; j < k; j++) chosen |= sel[j] == e;
            if (chosen) continue;
            for (size_t i = 0; i < (size_t)L * n * k; i++) force[i] = -1;
            int32_t *row = force + ((size_t)tl * n + tr) * k;
            for (int j = 0; j < k; j++) row[j] = sel[j];
            row[k - 1] = e; /* the weakest chosen expert sits last */
            float *got = ds_test_prefill(m, dev, kv, 512, 2, ids, n, NULL, force, NULL);
            double err = got ? ds_test_rel_l2(got, want, (size_t)n * V) : 1;
            if (err < best) { best = err; best_e = e; }
            free(got);
        }
        printf("  near-tie: layer %d position %d, expert %d vs %d, margin %.2e -> rel L2 %.3e with it resolved\n",
               tl, tr, sel[k - 1], best_e, tm, best);
    }
    CHECK(tl >= 0, "%s misses its bound without a routing near-tie (smallest margin >= %.0e)", dev, tie);
    free(rec); free(force); free(mg); free(base);
    return best;
}

/* Bounds (rel L2 over all positions' logits):
 * - ref, F32 KV: 1e-5. Weights are exact in f16; activations are f32 between
 *   blocks with double accumulation, so only f32 rounding of intermediates
 *   separates us from HF's float64 (measured ~3e-7).
 * - cpu, F32 KV: 1e-4. Same weights, f32 accumulation in SIMD order.
 * - F16 KV: 2e-3 (measured below ~5e-4): the cached latent is rounded to
 *   f16 (rel 2^-11 per value), which perturbs every score and value. */
static void check_model(const char *file) {
    ds_model *m = ds_test_load_model(file);
    if (!m) return;
    struct { const char *dev; ds_type kv; double bound, tie; } runs[] = {
        { "ref", DS_TYPE_F32, 1e-5, 1e-4 }, { "cpu", DS_TYPE_F32, 1e-4, 1e-4 },
        { "ref", DS_TYPE_F16, 2e-3, 1e-3 }, { "cpu", DS_TYPE_F16, 2e-3, 1e-3 },
    };
    for (size_t c = 0; c < sizeof k_cases / sizeof *k_cases; c++) {
        int32_t ids[512];
        int n = ds_test_case_tokens(ds_test_data("models/dsv3_tiny/cases.json"), k_cases[c], ids, 512);
        CHECK(n > 0, "case %s", k_cases[c]);
        if (n <= 0) continue;
        char ref_path[128];
        snprintf(ref_path, sizeof ref_path, "models/dsv3_tiny/logits_%s.f32", k_cases[c]);
        size_t len;
        float *want = ds_test_read_file(ds_test_data(ref_path), &len);
        CHECK(want && len == (size_t)n * m->hp.n_vocab * 4, "%s size", ref_path);
        if (!want) continue;
        for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
            float *got = ds_test_prefill(m, runs[r].dev, runs[r].kv, 512, 2, ids, n, NULL, NULL, NULL);
            CHECK(got != NULL, "prefill");
            if (!got) continue;
            double e = ds_test_rel_l2(got, want, (size_t)n * m->hp.n_vocab);
            printf("%-28s %-5s %-3s kv=%s rel_l2=%.3e (bound %.0e)\n", file, k_cases[c], runs[r].dev,
                   ds_type_info(runs[r].kv)->name, e, runs[r].bound);
            if (e > runs[r].bound) e = resolve_tie(m, runs[r].dev, runs[r].kv, ids, n, want, runs[r].tie);
            CHECK(e <= runs[r].bound, "%s %s %s kv %s: rel L2 %.3e > %.0e", file, k_cases[c], runs[r].dev,
                  ds_type_info(runs[r].kv)->name, e, runs[r].bound);
            free(got);
        }
        free(want);
    }
    ds_model_free(m);
}

int main(void) {
    check_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf");
    check_model("models/dsv3_tiny/dsv3_tiny-f16-legacy.gguf");
    return ds_test_finish("test_model_tiny");
}
