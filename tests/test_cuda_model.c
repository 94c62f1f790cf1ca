/* test_cuda_model.c: the CUDA backend end to end on the fixtures (dsv3_tiny
 * f16 in both attention layouts, dsv3_kq Q3_K_M and IQ4_XS): with routing
 * pinned to ref's choice the logits match ref; unpinned (the forward hook,
 * graphs for decode) the argmax agrees with ref on short/mid and the
 * distance to HF stays in llama.cpp's neighbourhood; decoding token by token
 * equals the prefill. Those checks run the f32 GEMV for every product
 * (DSINFER_GEMM_MIN_ROWS=0); the tensor-core GEMM (f16 products, every row
 * count) is then checked against them with its own bound. Exits 77
 * ("skipped") without a CUDA device. */
#include "testutil.h"
#include "cases.h"
#include "backend/cuda/cuda_backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int argmax(const float *v, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return (int)b;
}

static void check_file(const char *dir, const char *file, const char *ll_type) {
    const bool quantized = ll_type != NULL;
    char path[256];
    snprintf(path, sizeof path, "models/%s/%s", dir, file);
    ds_model *m = ds_test_load_model(path);
    if (!m) return;
    char cases_path[256];
    snprintf(cases_path, sizeof cases_path, "models/%s/cases.json", dir);
    const char *cases[] = { "one", "short", "mid", "long" };
    const int L = m->hp.n_layer, k = m->hp.n_expert_used;
    const size_t V = (size_t)m->hp.n_vocab;
    for (int ci = 0; ci < 4; ci++) {
        int32_t ids[512];
        int n = ds_test_case_tokens(ds_test_data(cases_path), cases[ci], ids, 512);
        CHECK(n > 0, "case %s", cases[ci]);
        if (n <= 0) continue;
        int32_t *route = calloc((size_t)L * n * k, sizeof *route);
        float *ref = ds_test_prefill(m, "ref", DS_TYPE_F16, 512, 1, ids, n, route, NULL, NULL);
        ds_test_cuda_f32();
        setenv("DSINFER_CUDA_FORWARD", "0", 1);
        float *pinned = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 1, ids, n, NULL, route, NULL);
        unsetenv("DSINFER_CUDA_FORWARD");
        float *cuda = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 1, ids, n, NULL, NULL, NULL);
        float *dec = ci < 3 ? ds_test_decode_steps(m, "cuda", DS_TYPE_F16, 0, 0, ids, n) : NULL;
        /* the same runs on tensor cores: the GEMM from one row on, the MLA core */
        ds_test_cuda_tc(1);
        setenv("DSINFER_CUDA_FORWARD", "0", 1);
        setenv("DSINFER_CUDA_MOE_Q8", "0", 1); /* f16 GEMM and f32 experts: the 5e-3 bound below */
        float *tc_pinned = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 1, ids, n, NULL, route, NULL);
        unsetenv("DSINFER_CUDA_MOE_Q8");
        /* int8 activations wherever the backend takes them for these rows (the
         * decode MoE up to 16 rows, products up to 16): the CPU backend's scheme */
        ds_test_cuda_tc(17);
        float *q8_pinned = n <= 16 ? ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 1, ids, n, NULL, route, NULL) : NULL;
        ds_test_cuda_tc(1);
        unsetenv("DSINFER_CUDA_FORWARD");
        float *tc = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 1, ids, n, NULL, NULL, NULL);
        ds_test_cuda_tc(17); /* decode rows on the backend's decode GEMV (int8 activations where it reads the type) */
        float *tc_dec = ci < 3 ? ds_test_decode_steps(m, "cuda", DS_TYPE_F16, 0, 0, ids, n) : NULL;
        ds_test_cuda_default();
        CHECK(tc_pinned && tc && (tc_dec || ci == 3), "tensor-core prefill %s %s", file, cases[ci]);
        if (tc_pinned && tc && ref) {
            /* Bound 5e-3: each GEMM output is within 2^-10 of sum|w x| (f16
             * rounding of both factors; test_cuda_gemm), the MLA core within 4u
             * (u = 2^-11, test_cuda_mla), a few in a row per layer; measured
             * values are printed */
            const double e_tp = ds_test_rel_l2(tc_pinned, ref, n * V), e_t = ds_test_rel_l2(tc, ref, n * V);
            const double e_td = tc_dec ? ds_test_rel_l2(tc_dec, tc, n * V) : 0;
            int agree_tc = 0;
            for (int i = 0; i < n; i++) agree_tc += argmax(tc + i * V, V) == argmax(ref + i * V, V);
            printf("%-28s %-5s n %3d: tensor cores pinned vs ref %.2e | unpinned vs ref %.2e, argmax %d/%d | "
                   "decode vs prefill %.2e\n", file, cases[ci], n, e_tp, e_t, agree_tc, n, e_td);
            CHECK(e_tp <= 5e-3, "%s %s tensor cores pinned vs ref %.3e", file, cases[ci], e_tp);
            if (q8_pinned) {
                /* Bound 5e-2 as test_model_kq's for the CPU's int8 activations (it
                 * measures 2.5e-2 there); f16 files never take them (5e-3) */
                const double e_q = ds_test_rel_l2(q8_pinned, ref, n * V);
                printf("%-28s %-5s n %3d: int8 activations (decode MoE, GEMV), pinned vs ref %.2e\n", file, cases[ci],
                       n, e_q);
                CHECK(e_q <= (quantized ? 5e-2 : 5e-3), "%s %s int8 activations pinned vs ref %.3e", file, cases[ci],
                      e_q);
            }
            if (ci <= 2) CHECK(agree_tc == n, "%s %s tensor cores: argmax agrees on %d of %d", file, cases[ci], agree_tc, n);
            /* decode on the int8-activation GEMV for the quantized files (the CPU
             * backend's scheme: 2.3e-2 on "one"): unpinned, that moves near-tied
             * expert choices of dsv3_kq (seen: 0.10 on "short", 0.06 on "mid"), as
             * the CPU's does in test_cuda_hybrid, so there each decoded argmax must
             * be in the prefill's top 3 — on one/short: "mid" has a routing near-tie
             * (margin 7.5e-6, test_model_tiny) after which the decode follows the
             * other expert for the rest of the case (seen: rank 12), which the
             * hybrid test leaves out for the same reason; f16 weights stay on the
             * f32 GEMV */
            if (tc_dec && quantized) {
                int worst = 0;
                for (int i = 0; i < n; i++) {
                    const int a = argmax(tc_dec + i * V, V);
                    int r = 0;
                    for (size_t j = 0; j < V; j++) r += tc[i * V + j] > tc[i * V + a];
                    worst = r > worst ? r : worst;
                }
                printf("%-28s %-5s n %3d: int8 decode GEMV, unpinned: worst argmax rank in the prefill %d\n", file,
                       cases[ci], n, worst);
                if (ci <= 1) CHECK(worst <= 2, "%s %s tensor cores: decode argmax rank %d in the prefill", file, cases[ci], worst);
            } else if (tc_dec) {
                CHECK(e_td <= 5e-3, "%s %s tensor cores: decode vs prefill %.3e", file, cases[ci], e_td);
            }
        }
        free(tc_pinned);
        free(q8_pinned);
        free(tc);
        free(tc_dec);
        CHECK(ref && pinned && cuda && (dec || ci == 3), "prefill %s %s", file, cases[ci]);
        if (ref && pinned && cuda) {
            /* Bound 1e-3 (the issue's): same routing, same f16 cache rounding,
             * f32 sums against ref's double; measured values are printed. */
            double e_pin = ds_test_rel_l2(pinned, ref, n * V);
            double e_cuda = ds_test_rel_l2(cuda, ref, n * V);
            double e_dec = dec ? ds_test_rel_l2(dec, cuda, n * V) : 0;
            int agree = 0;
            for (int i = 0; i < n; i++) agree += argmax(cuda + i * V, V) == argmax(ref + i * V, V);
            char hf_path[256];
            snprintf(hf_path, sizeof hf_path, "models/%s/logits_%s.f32", dir, cases[ci]);
            size_t l1 = 0;
            float *hf = ds_test_read_file(ds_test_data(hf_path), &l1);
            double e_hf = hf && l1 == n * V * 4 ? ds_test_rel_l2(cuda, hf, n * V) : NAN;
            double e_ll = NAN;
            if (ll_type) {
                char ll_path[256];
                snprintf(ll_path, sizeof ll_path, "models/%s/llamacpp_logits/%s-%s.f32", dir, ll_type, cases[ci]);
                size_t l2 = 0;
                float *ll = ds_test_read_file(ds_test_data(ll_path), &l2);
                if (ll && hf && l2 == n * V * 4) e_ll = ds_test_rel_l2(ll, hf, n * V);
                free(ll);
            }
            printf("%-28s %-5s n %3d: pinned vs ref %.2e | unpinned vs ref %.2e, argmax %d/%d | decode vs prefill "
                   "%.2e | vs HF %.4f (llama.cpp %.4f)\n",
                   file, cases[ci], n, e_pin, e_cuda, agree, n, e_dec, e_hf, e_ll);
            CHECK(e_pin <= 1e-3, "%s %s pinned vs ref %.3e", file, cases[ci], e_pin);
            if (ci <= 2) CHECK(agree == n, "%s %s argmax agrees on %d of %d", file, cases[ci], agree, n);
            if (dec) CHECK(e_dec <= 1e-5, "%s %s decode vs prefill %.3e", file, cases[ci], e_dec);
            if (!isnan(e_ll)) CHECK(e_hf <= 1.5 * e_ll, "%s %s vs HF %.4f > 1.5 x llama.cpp %.4f", file, cases[ci], e_hf, e_ll);
            free(hf);
        }
        free(route); free(ref); free(pinned); free(cuda); free(dec);
    }
    ds_model_free(m);
}

/* models/<dir>/<file>, loaded (NULL and a failed check on error), and the
 * ids of case `name` of models/<dir>/cases.json in ids[cap] (*n: count or -1) */
static ds_model *load_with_case(const char *dir, const char *file, const char *name, int32_t *ids, int cap, int *n) {
    char path[256], cases_path[256];
    snprintf(path, sizeof path, "models/%s/%s", dir, file);
    snprintf(cases_path, sizeof cases_path, "models/%s/cases.json", dir);
    ds_model *m = ds_test_load_model(path);
    *n = m ? ds_test_case_tokens(ds_test_data(cases_path), name, ids, cap) : -1;
    return m;
}

/* ds_batch.best on the GPU: the argmax kernel's ids equal ds_argmax_f32 of
 * the logits the same call returns, and the same ids come back when the
 * caller takes no logits (only ids cross the bus). A prefill with every row
 * wanted (the LM head's chunks past the first 16 rows), then decode steps
 * (the captured graph with the argmax inside). Exact: the same floats. */
static void check_best_ids(const char *dir, const char *file) {
    int32_t ids[512];
    int n;
    ds_model *m = load_with_case(dir, file, "long", ids, 512, &n);
    if (!m) return;
    CHECK(n > 16, "long case has %d tokens", n);
    const size_t V = (size_t)m->hp.n_vocab;
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    p.device = "cuda";
    p.n_ctx = n;
    ds_ctx *c;
    ds_error err = { 0 };
    float *lg = malloc((size_t)n * V * sizeof *lg);
    int32_t *b1 = malloc((size_t)n * sizeof *b1), *b2 = malloc((size_t)n * sizeof *b2), pos[512], seq[512] = { 0 };
    for (int i = 0; i < n; i++) pos[i] = i;
    if (n <= 16 || !lg || !b1 || !b2 || ds_ctx_create(m, &p, &c, &err)) {
        CHECK(0, "best ids setup: %s", err.msg);
        free(lg); free(b1); free(b2);
        ds_model_free(m);
        return;
    }
    ds_batch b = { n, ids, pos, seq, NULL, b1 };
    CHECK(ds_ctx_decode(c, &b, lg, &err) == DS_OK, "prefill with best: %s", err.msg);
    int agree = 0, same = 0;
    for (int i = 0; i < n; i++) agree += b1[i] == ds_argmax_f32(lg + (size_t)i * V, V);
    ds_ctx_seq_truncate(c, 0, 0);
    b.best = b2;
    CHECK(ds_ctx_decode(c, &b, NULL, &err) == DS_OK, "prefill, ids only: %s", err.msg);
    for (int i = 0; i < n; i++) same += b2[i] == b1[i];
    /* decode: 8 steps with logits, then the same 8 again ids only */
    const int steps = 8;
    int dagree = 0, dsame = 0;
    for (int pass = 0; pass < 2; pass++) {
        ds_ctx_seq_truncate(c, 0, 0);
        for (int i = 0; i < steps; i++) {
            int32_t id = -1;
            ds_batch d = { 1, ids + i, pos + i, seq, NULL, &id };
            CHECK(ds_ctx_decode(c, &d, pass ? NULL : lg, &err) == DS_OK, "decode step: %s", err.msg);
            if (!pass) {
                b1[i] = id;
                dagree += id == ds_argmax_f32(lg, V);
            } else {
                dsame += id == b1[i];
            }
        }
    }
    printf("%-28s long  n %3d: argmax ids on the GPU: prefill %d/%d equal the logits' argmax, %d/%d ids only; "
           "decode %d/%d, %d/%d ids only\n", file, n, agree, n, same, n, dagree, steps, dsame, steps);
    CHECK(agree == n && same == n && dagree == steps && dsame == steps, "%s argmax ids", file);
    ds_ctx_free(c);
    free(lg); free(b1); free(b2);
    ds_model_free(m);
}

/* The end-to-end check: the same file on the CPU and on the GPU
 * (each with its defaults: int8 activations on both, graphs and the
 * tensor-core paths on the GPU): 64 greedy tokens after the "short"
 * prompt, where they part printed, and 5e-2 (the int8 decode bound above)
 * on the median step's logits up to there. */
static void check_greedy_cpu(const char *dir, const char *file) {
    int32_t ids[512];
    int n;
    ds_model *m = load_with_case(dir, file, "short", ids, 512, &n);
    if (!m) return;
    CHECK(n > 0, "short case");
    ds_test_cuda_default();
    if (n > 0) ds_test_greedy_pair(m, file, "cpu", "cuda", ids, n, 64, 5e-2);
    ds_model_free(m);
}

int main(void) {
    if (ds_cuda_device_count() < 1) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    check_file("dsv3_tiny", "dsv3_tiny-f16-mla.gguf", NULL);
    check_file("dsv3_tiny", "dsv3_tiny-f16-legacy.gguf", NULL);
    check_file("dsv3_kq", "dsv3_kq-Q3_K_M.gguf", "Q3_K_M");
    check_file("dsv3_kq", "dsv3_kq-IQ4_XS.gguf", "IQ4_XS");
    check_best_ids("dsv3_tiny", "dsv3_tiny-f16-mla.gguf");
    check_best_ids("dsv3_kq", "dsv3_kq-Q3_K_M.gguf");
    check_greedy_cpu("dsv3_kq", "dsv3_kq-Q3_K_M.gguf");
    return ds_test_finish("test_cuda_model");
}
