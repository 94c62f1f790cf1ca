/* test_placement.c: llama.cpp's placement flags on a real model file —
 * -ot parsing and its errors, first-match precedence, -ngl by layer,
 * --cpu-moe / --n-cpu-moe, whole blocks, the plan's byte accounting — and
 * the engine's per-block dispatch, run without a GPU by letting the ref
 * backend stand in for CUDA0 ("cuda/ref"). */
#include "testutil.h"
#include "cases.h"
#include "model/placement.h"

#include <stdlib.h>
#include <string.h>

/* the device of the named tensor, -2 if absent */
static int dev_of(const ds_model *m, const char *name) {
    const ds_tensor *all[] = { &m->token_embd, &m->output, &m->output_norm };
    for (size_t i = 0; i < 3; i++)
        if (all[i]->name && !strcmp(all[i]->name, name)) return all[i]->device;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const ds_tensor *t = (const ds_tensor *)&m->layers[il].attn_norm;
        const ds_tensor *end = (const ds_tensor *)((const char *)&m->layers[il] + sizeof(ds_layer));
        for (; t < end; t++)
            if (ds_tensor_present(t) && !strcmp(t->name, name)) return t->device;
    }
    return -2;
}

static ds_status apply(ds_model *m, int ngl, const char *const *ot, int n_ot, int cpu_moe_at, int n_cpu_moe,
                       int n_gpus, ds_error *err) {
    ds_placement_spec s;
    ds_placement_spec_init(&s);
    s.n_gpu_layers = ngl;
    ds_status st;
    for (int i = 0; i < n_ot; i++) {
        if (cpu_moe_at == i && (st = ds_placement_add_cpu_moe(&s, err))) return st;
        if ((st = ds_placement_add_ot(&s, ot[i], err))) return st;
    }
    if (cpu_moe_at >= n_ot && (st = ds_placement_add_cpu_moe(&s, err))) return st;
    if (n_cpu_moe > 0 && (st = ds_placement_add_n_cpu_moe(&s, n_cpu_moe, err))) return st;
    return ds_placement_apply(m, &s, n_gpus, err);
}

static void test_parse(void) {
    ds_placement_spec s;
    ds_error err = { 0 };
    int d;
    CHECK(ds_placement_parse_device("CPU", &d) && d == DS_DEV_CPU, "CPU");
    CHECK(ds_placement_parse_device("cuda1", &d) && d == DS_DEV_CUDA(1), "cuda1");
    CHECK(!ds_placement_parse_device("GPU0", &d) && !ds_placement_parse_device("CUDA", &d) &&
              !ds_placement_parse_device("CUDA-1", &d) && !ds_placement_parse_device("CUDAx", &d),
          "bad device names rejected");

    ds_placement_spec_init(&s);
    CHECK(ds_placement_add_ot(&s, "exps=CPU", &err) == DS_OK && s.n_ot == 1 && !strcmp(ds_ot_pattern(&s, 0), "exps") &&
              s.ot[0].device == DS_DEV_CPU, "one rule");
    CHECK(ds_placement_add_ot(&s, "blk\\.(1|2)\\.=CUDA0,attn=CUDA1", &err) == DS_OK && s.n_ot == 3 &&
              !strcmp(ds_ot_pattern(&s, 1), "blk\\.(1|2)\\.") && s.ot[2].device == DS_DEV_CUDA(1),
          "comma-separated rules");
    CHECK(ds_placement_add_ot(&s, "a(?=b)=CPU", &err) == DS_OK && !strcmp(ds_ot_pattern(&s, 3), "a(?=b)"),
          "'=' inside the regex: the device is after the last '='");

    const struct { const char *arg, *want; } bad[] = {
        { "(exps=CPU", "bad regex" }, { "exps=GPU", "unknown device 'GPU'" }, { "exps", "expected REGEX=DEVICE" },
        { "=CPU", "expected REGEX=DEVICE" }, { "exps=", "missing" }, { "a=CPU,,b=CPU", "expected REGEX=DEVICE" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ds_placement_spec_init(&s);
        err.msg[0] = 0;
        CHECK(ds_placement_add_ot(&s, bad[i].arg, &err) == DS_ERR_INVALID_ARG && strstr(err.msg, bad[i].want),
              "-ot '%s' -> '%s' (got '%s')", bad[i].arg, bad[i].want, err.msg);
    }
    ds_placement_spec_init(&s);
    CHECK(ds_placement_parse_split(&s, "3,1", &err) == DS_OK && s.n_split == 2 && s.split[0] == 3 && s.split[1] == 1,
          "-ts 3,1");
    CHECK(ds_placement_parse_split(&s, "0,0", &err) == DS_ERR_INVALID_ARG, "-ts all zero");
    CHECK(ds_placement_parse_split(&s, "1,x", &err) == DS_ERR_INVALID_ARG, "-ts garbage");
}

static void test_apply(ds_model *m) {
    ds_error err = { 0 };
    const int nl = m->hp.n_layer; /* 4 for dsv3_tiny: layer 0 dense, 1..3 MoE */
    CHECK(nl >= 3 && m->layers[1].is_moe && !m->layers[0].is_moe, "fixture shape");

    /* -ngl counts from the last layer; the output goes up only when ngl > n_layer; token_embd stays */
    CHECK(apply(m, 2, NULL, 0, -1, 0, 1, &err) == DS_OK, "ngl 2: %s", err.msg);
    char nm[64];
    for (int il = 0; il < nl; il++) {
        snprintf(nm, sizeof nm, "blk.%d.attn_output.weight", il);
        CHECK(dev_of(m, nm) == (il >= nl - 2 ? DS_DEV_CUDA(0) : DS_DEV_CPU), "ngl 2: layer %d", il);
    }
    CHECK(dev_of(m, "output.weight") == DS_DEV_CPU && dev_of(m, "token_embd.weight") == DS_DEV_CPU, "ngl 2: ends");
    CHECK(ds_placement_uses_gpu(m) && !ds_placement_gpu_with_cpu_experts(m), "ngl 2 is a layer split");
    CHECK(apply(m, nl + 1, NULL, 0, -1, 0, 1, &err) == DS_OK && dev_of(m, "output.weight") == DS_DEV_CUDA(0) &&
              dev_of(m, "output_norm.weight") == DS_DEV_CUDA(0) && dev_of(m, "token_embd.weight") == DS_DEV_CPU,
          "ngl n_layer+1 takes the output");
    CHECK(ds_placement_gpu_with_cpu_experts(m), "all on the GPU qualifies for the forward hook");
    CHECK(apply(m, 0, NULL, 0, -1, 0, 0, &err) == DS_OK && !ds_placement_uses_gpu(m), "ngl 0: all host");

    /* --cpu-moe with everything else up: the hybrid the forward hook runs */
    CHECK(apply(m, 99, NULL, 0, 0, 0, 1, &err) == DS_OK, "cpu-moe: %s", err.msg);
    for (int il = 1; il < nl; il++) {
        snprintf(nm, sizeof nm, "blk.%d.ffn_down_exps.weight", il);
        CHECK(dev_of(m, nm) == DS_DEV_CPU, "cpu-moe: %s", nm);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down_shexp.weight", il);
        CHECK(dev_of(m, nm) == DS_DEV_CUDA(0), "cpu-moe: shared expert stays: %s", nm);
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate_inp.weight", il);
        CHECK(dev_of(m, nm) == DS_DEV_CUDA(0), "cpu-moe: router stays: %s", nm);
    }
    CHECK(ds_placement_gpu_with_cpu_experts(m), "cpu-moe qualifies for the forward hook");

    /* first match wins: a rule before --cpu-moe keeps layer 2's experts up */
    const char *keep2[] = { "blk\\.2\\.ffn_.*_exps=CUDA0" };
    CHECK(apply(m, 99, keep2, 1, 1, 0, 1, &err) == DS_OK, "precedence: %s", err.msg);
    CHECK(dev_of(m, "blk.2.ffn_up_exps.weight") == DS_DEV_CUDA(0) && dev_of(m, "blk.1.ffn_up_exps.weight") == DS_DEV_CPU &&
              dev_of(m, "blk.3.ffn_up_exps.weight") == DS_DEV_CPU,
          "first matching rule wins");
    /* ... and after it, --cpu-moe wins */
    CHECK(apply(m, 99, keep2, 1, 0, 0, 1, &err) == DS_OK && dev_of(m, "blk.2.ffn_up_exps.weight") == DS_DEV_CPU,
          "--cpu-moe first wins");

    /* --n-cpu-moe 2: experts of layers 0 and 1 (layer 0 is dense: only 1 counts) */
    CHECK(apply(m, 99, NULL, 0, -1, 2, 1, &err) == DS_OK, "n-cpu-moe: %s", err.msg);
    CHECK(dev_of(m, "blk.1.ffn_gate_exps.weight") == DS_DEV_CPU && dev_of(m, "blk.2.ffn_gate_exps.weight") == DS_DEV_CUDA(0),
          "n-cpu-moe 2");

    /* a block is whole: one of its three expert tensors alone cannot move */
    const char *down[] = { "ffn_down_exps=CPU" };
    CHECK(apply(m, 99, down, 1, -1, 0, 1, &err) == DS_OK, "down only: %s", err.msg);
    CHECK(dev_of(m, "blk.1.ffn_down_exps.weight") == dev_of(m, "blk.1.ffn_gate_exps.weight"), "block kept whole");
    /* everything of a layer by regex, legacy and derived names alike */
    const char *lay[] = { "blk\\.1\\.=CPU" };
    CHECK(apply(m, 99, lay, 1, -1, 0, 1, &err) == DS_OK && dev_of(m, "blk.1.attn_k_b.weight") == DS_DEV_CPU &&
              dev_of(m, "blk.1.attn_output.weight") == DS_DEV_CPU && dev_of(m, "blk.2.attn_k_b.weight") == DS_DEV_CUDA(0),
          "layer regex");

    /* devices beyond those visible: an error naming the rule */
    const char *far[] = { "exps=CUDA3" };
    err.msg[0] = 0;
    CHECK(apply(m, 99, far, 1, -1, 0, 1, &err) == DS_ERR_INVALID_ARG && strstr(err.msg, "exps=CUDA3") &&
              strstr(err.msg, "1 GPU is visible"),
          "unknown GPU: '%s'", err.msg);
    err.msg[0] = 0;
    CHECK(apply(m, 2, NULL, 0, -1, 0, 0, &err) == DS_ERR_INVALID_ARG && strstr(err.msg, "0 GPUs"), "-ngl without a GPU: '%s'",
          err.msg);
}

/* the plan accounts for every byte once, and a step reads what ds_model_decode_bytes says */
static void test_plan(ds_model *m) {
    ds_error err = { 0 };
    CHECK(apply(m, 99, NULL, 0, 0, 0, 1, &err) == DS_OK, "cpu-moe");
    ds_plan p;
    ds_plan_compute(m, 1000, 2, 12345, &p);
    uint64_t w = 0, step = 0, kv = 0, file = 0;
    for (int d = 0; d < p.n_dev; d++) { w += p.weights[d]; step += p.step[d]; kv += p.kv[d]; }
    for (int64_t i = 0; i < ds_gguf_n_tensors(m->gguf); i++) file += ds_gguf_tensor_at(m->gguf, i)->nbytes;
    CHECK(p.n_dev == 2 && p.scratch[1] == 12345 && p.scratch[0] == 0, "devices and scratch");
    CHECK(kv == (uint64_t)1000 * m->hp.d_kv_row * 2 * m->hp.n_layer && p.kv[0] == 0, "kv all on the GPU");
    /* every weight once (the file may hold more: MTP layers, legacy kv_b) */
    CHECK(w > 0 && w <= file, "weights %llu of file %llu", (unsigned long long)w, (unsigned long long)file);
    CHECK(step == ds_model_decode_bytes(m), "step %llu vs decode bytes %llu", (unsigned long long)step,
          (unsigned long long)ds_model_decode_bytes(m));
    CHECK(p.experts_cpu_layers == m->hp.n_layer - m->hp.n_dense_lead, "experts-on-cpu layers");
}

/* the same logits whichever backend runs which block: cpu everywhere, ref
 * standing in for CUDA0 under several placements. Routing is pinned to
 * the cpu run's choice so a near-tie cannot flip an expert. */
static void test_dispatch(void) {
    ds_model *m = ds_test_load_model("models/dsv3_kq/dsv3_kq-Q3_K_M.gguf");
    CHECK(m != NULL, "load kq");
    if (!m) return;
    int32_t ids[64];
    const int n = ds_test_case_tokens(ds_test_data("models/dsv3_kq/cases.json"), "short", ids, 64);
    CHECK(n > 0, "case");
    const size_t V = (size_t)m->hp.n_vocab, rk = (size_t)m->hp.n_layer * n * m->hp.n_expert_used;
    int32_t *route = malloc(rk * sizeof *route);
    ds_error err = { 0 };
    CHECK(apply(m, 0, NULL, 0, -1, 0, 0, &err) == DS_OK, "host");
    float *cpu = ds_test_prefill(m, "cpu", DS_TYPE_F32, 7, 2, ids, n, route, NULL, NULL);
    float *ref = ds_test_prefill(m, "ref", DS_TYPE_F32, 7, 2, ids, n, NULL, route, NULL);
    CHECK(cpu && ref, "baselines");
    /* cpu quantizes activations to 8 bits, ref does not: they differ by ~2.5e-2 (test_model_kq) */
    const double base = cpu && ref ? ds_test_rel_l2(cpu, ref, n * V) : 1;
    CHECK(base < 5e-2 && base > 1e-3, "cpu vs ref %.3g (the difference that shows which backend ran)", base);
    const struct { int ngl, cpu_moe, two; const char *what; } cases[] = {
        { 99, 1, 0, "--cpu-moe: experts on cpu, the rest on 'gpu'" },
        { 2, 0, 0, "-ngl 2: a layer split" },
        { 99, 0, 0, "all on 'gpu'" },
        { 99, 0, 1, "-ts 1,1: layers over two 'gpus'" },
        { 3, 1, 1, "-ngl 3 -ts 1,1 --cpu-moe" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ds_placement_spec s;
        ds_placement_spec_init(&s);
        s.n_gpu_layers = cases[i].ngl;
        if (cases[i].cpu_moe) ds_placement_add_cpu_moe(&s, &err);
        if (cases[i].two) ds_placement_parse_split(&s, "1,1", &err);
        CHECK(ds_placement_apply(m, &s, 2, &err) == DS_OK, "%s: %s", cases[i].what, err.msg);
        const int first_gpu = m->hp.n_layer - cases[i].ngl > 0 ? m->hp.n_layer - cases[i].ngl : 0;
        if (cases[i].two)
            CHECK(ds_block_device(m, DS_BLK_ATTN, m->hp.n_layer - 1) == DS_DEV_CUDA(1) &&
                      ds_block_device(m, DS_BLK_ATTN, first_gpu) == DS_DEV_CUDA(0),
                  "%s: the first GPU layer on CUDA0, the last on CUDA1", cases[i].what);
        float *mix = ds_test_prefill(m, "cuda/ref", DS_TYPE_F32, 7, 2, ids, n, NULL, route, NULL);
        CHECK(mix != NULL, "%s ran", cases[i].what);
        if (mix && cpu && ref) {
            const double dc = ds_test_rel_l2(mix, cpu, n * V), dr = ds_test_rel_l2(mix, ref, n * V);
            printf("%-48s vs cpu %.3g, vs ref %.3g\n", cases[i].what, dc, dr);
            CHECK(dc < 5e-2 && dr < 5e-2, "%s: within the cpu/ref bound", cases[i].what);
            if (cases[i].ngl == 99 && !cases[i].cpu_moe) CHECK(dr < 1e-6, "%s is ref (%.3g)", cases[i].what, dr);
            else CHECK(dc > 1e-4 && dr > 1e-4, "%s: both backends ran blocks", cases[i].what);
        }
        free(mix);
    }
    /* --no-mmap: the same bits from the copies (all host-resident here) */
    CHECK(apply(m, 0, NULL, 0, -1, 0, 0, &err) == DS_OK, "host");
    uint64_t copied = 0;
    const void *before = m->layers[1].down_exps.data;
    CHECK(ds_placement_copy_host(m, 3, &copied, &err) == DS_OK && copied > 0 && m->host_copy &&
              m->layers[1].down_exps.data != before,
          "copy host weights: %s", err.msg);
    float *again = ds_test_prefill(m, "cpu", DS_TYPE_F32, 7, 2, ids, n, NULL, route, NULL);
    CHECK(again && cpu && !memcmp(again, cpu, (size_t)n * V * sizeof *cpu), "--no-mmap copies give the same logits");
    free(again);
    free(cpu);
    free(ref);
    free(route);
    ds_model_free(m);
}

int main(void) {
    test_parse();
    ds_model *legacy = ds_test_load_model("models/dsv3_tiny/dsv3_tiny-f16-legacy.gguf");
    ds_model *mla = ds_test_load_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf");
    CHECK(legacy && mla, "load tiny");
    if (legacy) test_apply(legacy);
    if (mla) {
        test_apply(mla);
        test_plan(mla);
    }
    ds_model_free(legacy);
    ds_model_free(mla);
    test_dispatch();
    return ds_test_finish("test_placement");
}
