/* test_cuda_hybrid.c: placements that split a model between the GPU and the
 * CPU give the logits of the all-CPU and all-GPU runs — --cpu-moe through
 * the CUDA forward hook (experts on the host, the rest on the GPU), the same
 * one block at a time with routing pinned, --n-cpu-moe, and a layer split
 * (-ngl). Exits 77 ("skipped") without a CUDA device. */
#include "testutil.h"
#include "cases.h"
#include "backend/cuda/cuda_backend.h"
#include "model/placement.h"

#include <stdlib.h>
#include <string.h>

static void place_ts(ds_model *m, int ngl, bool cpu_moe, int n_cpu_moe, const char *ts) {
    ds_placement_spec s;
    ds_placement_spec_init(&s);
    s.n_gpu_layers = ngl;
    ds_error err = { 0 };
    if (cpu_moe) ds_placement_add_cpu_moe(&s, &err);
    if (n_cpu_moe) ds_placement_add_n_cpu_moe(&s, n_cpu_moe, &err);
    if (ts) ds_placement_parse_split(&s, ts, &err);
    CHECK(ds_placement_apply(m, &s, ts ? 2 : 1, &err) == DS_OK, "place: %s", err.msg);
}

static void place(ds_model *m, int ngl, bool cpu_moe, int n_cpu_moe) { place_ts(m, ngl, cpu_moe, n_cpu_moe, NULL); }

static int argmax(const float *v, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return (int)b;
}

/* how many logits of row v beat v[tok] (0 = tok is the argmax) */
static int rank_of(const float *v, size_t n, int tok) {
    int r = 0;
    for (size_t i = 0; i < n; i++) r += v[i] > v[tok];
    return r;
}

/* token-by-token decode of ids under --cpu-moe, with hot experts cached on the GPU */
static float *decode_hot(const ds_model *m, const int32_t *ids, int n, int gpu_experts, const char *profile) {
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    p.device = "cuda";
    p.n_ctx = n;
    p.gpu_experts = gpu_experts;
    p.expert_profile = profile;
    return ds_test_decode_steps_p(m, &p, ids, n);
}

/* bound: the cpu backend quantizes activations to 8 bits for quantized
 * weights (cpu vs ref 2.5e-2 on dsv3_kq, test_model_kq's bound 5e-2); on
 * f16 weights the backends agree to f32 rounding (1e-3, test_cuda_model) */
static void check_file(const char *rel, const char *cases_rel, double bound) {
    ds_model *m = ds_test_load_model(rel);
    if (!m) return;
    /* not "mid": it has a routing near-tie (margin 7.5e-6, test_model_tiny) that
     * unpinned runs with differently rounded activations may resolve either way */
    const char *cases[] = { "one", "short" };
    const size_t V = (size_t)m->hp.n_vocab;
    for (int ci = 0; ci < 2; ci++) {
        int32_t ids[512];
        const int n = ds_test_case_tokens(ds_test_data(cases_rel), cases[ci], ids, 512);
        CHECK(n > 0, "case");
        if (n <= 0) continue;
        int32_t *route = calloc((size_t)m->hp.n_layer * n * m->hp.n_expert_used, sizeof *route);
        place(m, 0, false, 0);
        float *cpu = ds_test_prefill(m, "cpu", DS_TYPE_F16, 512, 0, ids, n, route, NULL, NULL);
        float *gpu = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, NULL, NULL);
        /* the hook: experts on the host, everything else on the GPU, unpinned */
        place(m, 99, true, 0);
        float *hook = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, NULL, NULL);
        float *hook_dec = ds_test_decode_steps(m, "cuda", DS_TYPE_F16, 0, 0, ids, n);
        float *hook_ub = ds_test_prefill(m, "cuda", DS_TYPE_F16, 5, 0, ids, n, NULL, NULL, NULL);
        /* block by block with routing pinned to the cpu's choice */
        setenv("DSINFER_CUDA_FORWARD", "0", 1);
        float *blocks = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, route, NULL);
        place(m, 2, false, 0);
        float *layers = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, route, NULL);
        unsetenv("DSINFER_CUDA_FORWARD");
        /* two GPUs (-ts 1,1, experts of the first MoE layers on the CPU): both
         * logical GPUs on this card when there is only one */
        if (ds_cuda_device_count() < 2) setenv("DSINFER_CUDA_DEVICE_MAP", "0,0", 1);
        place_ts(m, 99, false, 2, "1,1");
        float *two = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, route, NULL);
        unsetenv("DSINFER_CUDA_DEVICE_MAP");
        CHECK(two != NULL, "%s two GPUs ran", rel);
        if (two && cpu) {
            const double e2 = ds_test_rel_l2(two, cpu, n * V);
            printf("%-34s %-5s n %3d: -ts 1,1 --n-cpu-moe 2 pinned vs cpu %.2e\n", rel, cases[ci], n, e2);
            CHECK(e2 <= bound, "%s %s two GPUs vs cpu %.3e", rel, cases[ci], e2);
        }
        free(two);
        place(m, 99, false, 2);
        float *ncm = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, NULL, NULL);
        CHECK(cpu && gpu && hook && hook_dec && hook_ub && blocks && layers && ncm, "%s %s ran", rel, cases[ci]);
        if (cpu && gpu && hook && hook_dec && hook_ub && blocks && layers && ncm) {
            int agree = 0, worst = 0;
            for (int i = 0; i < n; i++) {
                const int r = rank_of(gpu + i * V, V, argmax(hook + i * V, V));
                agree += r == 0;
                worst = r > worst ? r : worst;
            }
            const double e_blocks = ds_test_rel_l2(blocks, cpu, n * V), e_layers = ds_test_rel_l2(layers, cpu, n * V);
            const double e_hook = ds_test_rel_l2(hook, gpu, n * V), e_dec = ds_test_rel_l2(hook_dec, hook, n * V);
            const double e_ub = ds_test_rel_l2(hook_ub, hook, n * V), e_ncm = ds_test_rel_l2(ncm, gpu, n * V);
            printf("%-34s %-5s n %3d: cpu-moe pinned vs cpu %.2e | -ngl 2 pinned vs cpu %.2e | hook vs gpu %.2e "
                   "(argmax %d/%d) | hook decode vs prefill %.2e, ub 5 %.2e | n-cpu-moe 2 vs gpu %.2e\n",
                   rel, cases[ci], n, e_blocks, e_layers, e_hook, agree, n, e_dec, e_ub, e_ncm);
            CHECK(e_blocks <= bound && e_layers <= bound, "%s %s pinned hybrids vs cpu %.3e %.3e", rel, cases[ci], e_blocks,
                  e_layers);
            CHECK(e_hook <= bound && e_ncm <= bound, "%s %s hook vs gpu %.3e, n-cpu-moe %.3e", rel, cases[ci], e_hook, e_ncm);
            /* 8-bit activations on the host can swap near-tied leaders of the quantized
             * model (seen: 6 of 7 agree); the hook's choice must still be among the GPU's top 3 */
            CHECK(bound < 1e-2 ? agree == n : worst <= 2, "%s %s argmax agrees on %d of %d, worst rank %d", rel,
                  cases[ci], agree, n, worst);
            /* each row's experts are computed the same way whatever the batch: bit-close */
            CHECK(e_dec <= 1e-5 && e_ub <= 1e-5, "%s %s hook decode %.3e, ub 5 %.3e vs prefill", rel, cases[ci], e_dec, e_ub);
        }
        /* streamed prefill (every micro-batch streams its used experts to the
         * GPU's stage; the first layer always does), on the f32 GEMV and on the
         * tensor-core GEMM (f16 products: its own bound, 5e-3 as in test_cuda_model) */
        place(m, 99, true, 0);
        setenv("DSINFER_STREAM_ROWS", "1", 1);
        float *streamed = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, NULL, NULL);
        ds_test_cuda_tc(1);
        float *streamed_tc = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, NULL, NULL);
        unsetenv("DSINFER_STREAM_ROWS");
        place(m, 0, false, 0);
        float *gpu_tc = ds_test_prefill(m, "cuda", DS_TYPE_F16, 512, 0, ids, n, NULL, NULL, NULL);
        ds_test_cuda_f32();
        CHECK(streamed && streamed_tc && gpu_tc, "%s %s streamed prefill ran", rel, cases[ci]);
        if (streamed && streamed_tc && gpu_tc && gpu) {
            int worst = 0;
            for (int i = 0; i < n; i++) {
                const int r = rank_of(gpu_tc + i * V, V, argmax(streamed_tc + i * V, V));
                worst = r > worst ? r : worst;
            }
            const double e_s = ds_test_rel_l2(streamed, gpu, n * V), e_st = ds_test_rel_l2(streamed_tc, gpu_tc, n * V);
            printf("%-34s %-5s n %3d: streamed experts vs gpu %.2e, both on tensor cores %.2e (worst rank %d)\n", rel,
                   cases[ci], n, e_s, e_st, worst);
            CHECK(e_s <= bound, "%s %s streamed vs gpu %.3e", rel, cases[ci], e_s);
            /* on tensor cores the streamed experts run on the grouped GEMM, the
             * resident ones (<= 16 rows) on the f32 fused kernel: on the f16
             * model that stays within the bound; the quantized one has routing
             * near-ties (see "mid" above) that such differences may flip (seen:
             * 0.10 on "short"), so there the argmax must stay in the GPU's top 3 */
            CHECK(bound < 1e-2 ? e_st <= bound : worst <= 2, "%s %s streamed on tensor cores vs gpu %.3e, rank %d", rel,
                  cases[ci], e_st, worst);
        }
        free(streamed); free(streamed_tc); free(gpu_tc);
        free(route); free(cpu); free(gpu); free(hook); free(hook_dec); free(hook_ub); free(blocks); free(layers); free(ncm);
    }
    /* the hot-expert cache: half the experts of each CPU layer on the GPU; the
     * long case runs enough steps for the cache to fill (refresh every 16) */
    int32_t ids[512];
    const int n = ds_test_case_tokens(ds_test_data(cases_rel), "long", ids, 512);
    place(m, 99, true, 0);
    const char *prof = ds_test_tmp("hybrid_expert_profile.txt");
    remove(prof);
    float *plain = n > 0 ? decode_hot(m, ids, n, 0, NULL) : NULL;
    float *hot = n > 0 ? decode_hot(m, ids, n, m->hp.n_expert / 2, prof) : NULL;
    /* the profile was written at free; a second run starts from it (warm cache) */
    size_t plen = 0;
    char *ptext = ds_test_read_file(prof, &plen);
    CHECK(ptext && !strncmp(ptext, "dsinfer expert usage v1", 23) && plen > 40, "%s: expert profile written", rel);
    free(ptext);
    float *warm = n > 0 ? decode_hot(m, ids, n, m->hp.n_expert / 2, prof) : NULL;
    if (warm && plain) {
        const double e = ds_test_rel_l2(warm, plain, n * V);
        printf("%-34s long  n %3d: warm-started cache vs none %.2e\n", rel, n, e);
        CHECK(e <= bound, "%s warm cache vs host experts %.3e", rel, e);
    }
    CHECK(warm != NULL, "%s: warm-started run", rel);
    free(warm);
    CHECK(plain && hot, "%s hot-expert decode ran", rel);
    if (plain && hot) {
        const double e = ds_test_rel_l2(hot, plain, n * V);
        printf("%-34s long  n %3d: --gpu-experts %d vs none %.2e\n", rel, n, m->hp.n_expert / 2, e);
        /* > 0: cached experts really ran on the GPU (other rounding than the host's) */
        CHECK(e <= bound && e > 0, "%s hot experts vs host experts %.3e", rel, e);
    }
    free(plain);
    free(hot);
    ds_model_free(m);
}

int main(void) {
    if (ds_cuda_device_count() < 1) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    /* the f32 paths (tight bounds between placements); the streamed check also runs on tensor cores */
    ds_test_cuda_f32();
    check_file("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf", "models/dsv3_tiny/cases.json", 1e-3);
    check_file("models/dsv3_tiny/dsv3_tiny-f16-legacy.gguf", "models/dsv3_tiny/cases.json", 1e-3);
    check_file("models/dsv3_kq/dsv3_kq-Q3_K_M.gguf", "models/dsv3_kq/cases.json", 5e-2);
    return ds_test_finish("test_cuda_hybrid");
}
