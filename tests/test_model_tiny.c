/* test_model_tiny.c: the forward pass against HF transformers' float64
 * logits for dsv3_tiny (tests/data/models/dsv3_tiny), both attention
 * layouts, ref and cpu backends, F32 and F16 KV caches. */
#include "testutil.h"
#include "cases.h"

#include <math.h>
#include <stdlib.h>

static const char *k_cases[] = { "one", "short", "mid", "long" };

/* Bounds (rel L2 over all positions' logits):
 * - ref, F32 KV: 1e-5. Weights are exact in f16; activations are f32 between
 *   blocks with double accumulation, so only f32 rounding of intermediates
 *   separates us from HF's float64 (measured ~3e-7).
 * - cpu, F32 KV: 1e-4. Same weights, f32 accumulation in SIMD order.
 * - F16 KV: 2e-3 (measured below ~5e-4): the cached latent is rounded to
 *   f16 (rel 2^-11 per value), which perturbs every score and value. */
static void check_model(const char *file) {
    ds_model *m;
    ds_error err = { 0 };
    ds_model_params mp = { .path = ds_test_data(file) };
    if (ds_model_load(&mp, &m, &err)) {
        CHECK(0, "load %s: %s", file, err.msg);
        return;
    }
    struct { const char *dev; ds_type kv; double bound; } runs[] = {
        { "ref", DS_TYPE_F32, 1e-5 }, { "cpu", DS_TYPE_F32, 1e-4 },
        { "ref", DS_TYPE_F16, 2e-3 }, { "cpu", DS_TYPE_F16, 2e-3 },
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
