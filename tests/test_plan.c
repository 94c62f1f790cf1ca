/* test_plan.c: `dsinfer plan` — the greedy placement respects the memory
 * limits it is given (tiny limits push experts to the host, large ones put
 * everything on the GPU, two GPUs keep the runnable spec on CUDA0), the
 * prediction equals its formulas on hand-computed loads and reproduces the
 * H200 calibration, and the command's usage errors exit 2. No GPU needed. */
#include "testutil.h"
#include "cases.h"
#include "backend/cuda_scratch.h"
#include "model/plan_predict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static ds_plan_limits limits(const ds_model *m, int n_gpu, uint64_t gpu0, uint64_t gpu1) {
    ds_plan_limits l;
    memset(&l, 0, sizeof l);
    l.n_gpu = n_gpu;
    l.gpu_mem[0] = gpu0;
    l.gpu_mem[1] = gpu1;
    l.gpu_margin = 0; /* byte-exact limits on a model of a few MiB */
    l.gpu_scratch = ds_cuda_scratch_bytes(&m->hp, 512);
    l.n_ctx = 4096;
    l.kv_elem = 2;
    return l;
}

static uint64_t dev_total(const ds_plan *p, int d) {
    return d < p->n_dev ? p->weights[d] + p->kv[d] + p->scratch[d] : 0;
}

/* CUDA0's need with all but the routed experts there (-ngl 99 --cpu-moe) */
static uint64_t non_expert_need(ds_model *m, const ds_plan_limits *lim) {
    ds_placement_spec s;
    ds_error err = { 0 };
    ds_plan p;
    ds_placement_spec_init(&s);
    s.n_gpu_layers = 99;
    ds_placement_add_cpu_moe(&s, &err);
    CHECK(ds_plan_eval(m, &s, lim, &p, &err) == DS_OK, "eval: %s", err.msg);
    return dev_total(&p, 1);
}

static int experts_on(const ds_model *m, int dev) {
    int n = 0;
    for (int il = 0; il < m->hp.n_layer; il++) n += ds_block_device(m, DS_BLK_EXPERTS, il) == dev;
    return n;
}

static void test_choose(const char *rel) {
    ds_model *m = ds_test_load_model(rel);
    CHECK(m != NULL, "load %s", rel);
    if (!m) return;
    const int nl = m->hp.n_layer, n_moe = nl - m->hp.n_dense_lead;
    ds_error err = { 0 };
    ds_plan_choice c;

    /* large limits: everything on CUDA0, one runnable spec */
    ds_plan_limits lim = limits(m, 1, (uint64_t)1 << 30, 0);
    lim.cpu_mem = (uint64_t)1 << 30;
    CHECK(ds_plan_choose(m, &lim, &c, &err) == DS_OK, "%s: choose: %s", rel, err.msg);
    CHECK(c.mode == DS_PLAN_ALL_GPU && c.n_moe == n_moe, "%s: mode %d, n_moe %d", rel, c.mode, c.n_moe);
    CHECK(experts_on(m, DS_DEV_CUDA(0)) == n_moe && ds_block_device(m, DS_BLK_OUTPUT, -1) == DS_DEV_CUDA(0) &&
              ds_block_device(m, DS_BLK_EMBED, -1) == DS_DEV_CPU, "%s: all on CUDA0 but token_embd", rel);
    CHECK(c.run_spec.n_ot == 0 && c.host_fits && c.run_host_fits && c.gpu_fits, "%s: -ngl alone", rel);
    const uint64_t all_need = dev_total(&c.plan, 1);

    /* the non-expert part and a little: no expert layer fits, all on the host */
    const uint64_t need0 = non_expert_need(m, &lim);
    lim.gpu_mem[0] = need0 + 1000;
    CHECK(ds_plan_choose(m, &lim, &c, &err) == DS_OK, "choose");
    CHECK(c.mode == DS_PLAN_EXPERTS_SPLIT && c.exp_first[0] == nl && experts_on(m, DS_DEV_CPU) == n_moe,
          "%s: tiny GPU: experts on the host (mode %d, first %d)", rel, c.mode, c.exp_first[0]);
    CHECK(dev_total(&c.run_plan, 1) <= lim.gpu_mem[0], "%s: within the limit", rel);
    CHECK(ds_block_device(m, DS_BLK_ATTN, 0) == DS_DEV_CUDA(0) && c.run_plan.experts_cpu_layers == n_moe, "%s: attention up", rel);

    /* every limit from nothing to everything: the choice fits, and expert
     * layers on the GPU never decrease as the limit grows */
    const uint64_t full = all_need + all_need / 8;
    int prev = -1, seen_layers = 0, seen_split = 0, bad = 0;
    for (int k = 0; k <= 64; k++) {
        lim.gpu_mem[0] = full / 64 * (uint64_t)k;
        if (ds_plan_choose(m, &lim, &c, &err)) { bad++; break; }
        const int on = experts_on(m, DS_DEV_CUDA(0));
        if (c.mode != DS_PLAN_HOST_ONLY && dev_total(&c.run_plan, 1) + lim.gpu_margin > lim.gpu_mem[0]) bad++;
        if (c.mode == DS_PLAN_HOST_ONLY && (ds_placement_uses_gpu(m) || c.gpu_fits)) bad++;
        if (on < prev) bad++;
        /* the greedy takes the last layers first */
        for (int il = 0; il + 1 < nl; il++)
            if (ds_block_device(m, DS_BLK_EXPERTS, il) == DS_DEV_CUDA(0) &&
                ds_block_device(m, DS_BLK_EXPERTS, il + 1) != DS_DEV_CUDA(0)) bad++;
        seen_layers += c.mode == DS_PLAN_LAYERS;
        seen_split += c.mode == DS_PLAN_EXPERTS_SPLIT && on > 0 && on < n_moe;
        prev = on;
    }
    CHECK(bad == 0, "%s: %d limit sweep violations", rel, bad);
    CHECK(seen_layers > 0 && seen_split > 0, "%s: the sweep met -ngl N (%d) and partial expert splits (%d)", rel,
          seen_layers, seen_split);
    lim.gpu_mem[0] = 1;
    CHECK(ds_plan_choose(m, &lim, &c, &err) == DS_OK && c.mode == DS_PLAN_HOST_ONLY && !c.gpu_fits, "%s: 1 byte GPU", rel);

    /* the host: too little RAM is reported, not hidden */
    lim.gpu_mem[0] = need0 + 1000;
    lim.cpu_mem = 4096;
    CHECK(ds_plan_choose(m, &lim, &c, &err) == DS_OK && !c.run_host_fits, "%s: host too small", rel);

    /* two GPUs: CUDA1 takes experts for the prediction; the runnable spec stays on CUDA0 */
    lim = limits(m, 2, need0 + 1000, (uint64_t)1 << 30);
    CHECK(ds_plan_choose(m, &lim, &c, &err) == DS_OK, "choose 2");
    CHECK(c.mode == DS_PLAN_EXPERTS_SPLIT && c.exp_first[1] == m->hp.n_dense_lead && c.exp_end[1] == nl,
          "%s: all experts on CUDA1 (%d..%d)", rel, c.exp_first[1], c.exp_end[1]);
    CHECK(c.plan.n_dev == 3 && c.plan.weights[2] > 0 && c.plan.experts_cpu_layers == 0, "%s: CUDA1 in the full plan", rel);
    CHECK(c.run_plan.n_dev <= 2 && c.run_plan.experts_cpu_layers == n_moe, "%s: runnable spec on CUDA0 only", rel);
    CHECK(ds_plan_gpus_fit(&c.plan, &lim), "%s: both GPUs within limits", rel);

    /* loads agree with the plan: step bytes, and every weight counted once */
    ds_plan_loads l;
    ds_plan p;
    CHECK(ds_plan_eval(m, &c.run_spec, &lim, &p, &err) == DS_OK, "eval");
    ds_plan_loads_compute(m, &p, &l);
    double step = 0, bytes = 0, wsum = 0;
    for (int d = 0; d < l.n_dev; d++) step += l.step[d], bytes += l.dense[d] + l.experts[d], wsum += (double)p.weights[d];
    bytes += l.hyb_bytes;
    const double embd = (double)m->token_embd.row_bytes * (double)m->token_embd.ne[1];
    CHECK(step == (double)ds_model_decode_bytes(m), "%s: step %.0f vs %llu", rel, step, (unsigned long long)ds_model_decode_bytes(m));
    if (m->output.data != m->token_embd.data)
        CHECK(fabs(bytes - (wsum - embd)) < 1, "%s: loads %.0f vs plan %.0f bytes", rel, bytes, wsum - embd);
    CHECK(l.hyb_layers == n_moe && l.gpu_layers == nl && l.hyb_bytes > 0 && l.flops_tok[1] > 0, "%s: hybrid loads", rel);
    ds_model_free(m);
}

static void test_rule(void) {
    ds_model *m = ds_test_load_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf");
    if (!m) return;
    char b[256];
    CHECK(ds_plan_ot_rule(m, 0, 4, 0, b, sizeof b) && !strcmp(b, "blk\\.(1|2|3)\\.ffn_.*_exps=CUDA0"), "rule '%s'", b);
    CHECK(ds_plan_ot_rule(m, 3, 4, 1, b, sizeof b) && !strcmp(b, "blk\\.(3)\\.ffn_.*_exps=CUDA1"), "rule '%s'", b);
    CHECK(!ds_plan_ot_rule(m, 0, 1, 0, b, sizeof b), "dense layers only: no rule");
    CHECK(!ds_plan_ot_rule(m, 0, 4, 0, b, 12), "short buffer");
    ds_model_free(m);
}

static bool near(double a, double b, double rel) { return fabs(a - b) <= rel * fabs(b); }

static void test_predict(void) {
    ds_plan_loads l;
    memset(&l, 0, sizeof l);
    l.n_dev = 2;
    l.step[0] = 1e9, l.step[1] = 2e9;
    l.dense[0] = 1e9, l.dense[1] = 2e9;
    l.flops_tok[1] = 1e10;
    l.hyb_bytes = 3e10, l.hyb_flops_tok = 5e9;
    l.gpu_layers = 10, l.hyb_layers = 7;
    l.n_expert = 256, l.n_expert_used = 8;
    ds_plan_hw hw = { .n_gpu = 1, .gpu_bw = { 1000 }, .cpu_bw = 100, .pcie_bw = 25, .gpu_tflops = 10, .cpu_tflops = 1 };
    ds_plan_prediction p;
    ds_plan_predict(&l, &hw, 512, &p);
    /* 1e9 B / 100 GB/s + 2e9 B / 1000 GB/s = 12 ms */
    CHECK(near(p.tg_bw, 1 / 0.012, 1e-12), "tg_bw %g", p.tg_bw);
    const double ov = 10 * DS_PLAN_O_GPU_LAYER + 7 * DS_PLAN_O_HYB_LAYER;
    CHECK(near(p.tg_cal, 1 / (0.012 + ov), 1e-12) && near(p.t_overhead, ov, 1e-12), "tg_cal %g", p.tg_cal);
    /* t_gpu = 2e9/1e12 + 512*1e10/1e13; t_host = 1e9/1e11; stream = 3e10/25e9 + 512*5e9/1e13; cpu = max(.3, 2.56) */
    CHECK(p.frac == 1 && near(p.t_gpu, 0.002 + 0.512, 1e-12) && near(p.t_host, 0.01, 1e-12), "t_gpu %g t_host %g", p.t_gpu, p.t_host);
    CHECK(near(p.t_stream, 1.2 + 0.256, 1e-12) && near(p.t_cpu, 2.56, 1e-12) && p.streamed, "stream %g cpu %g", p.t_stream, p.t_cpu);
    CHECK(near(p.pp, 512 / (0.514 + 0.01 + 1.456), 1e-12), "pp %g", p.pp);
    /* 16 rows: no streaming; f = 1 - (1 - 8/256)^16 of the experts */
    ds_plan_predict(&l, &hw, 16, &p);
    const double f = 1 - pow(1 - 8.0 / 256, 16);
    CHECK(near(p.frac, f, 1e-12) && p.t_stream < 0 && !p.streamed, "ub 16: frac %g", p.frac);
    const double cpu16 = fmax(f * 3e10 / 1e11, 16 * 5e9 / 1e12);
    CHECK(near(p.pp, 16 / (0.002 + 16 * 1e10 / 1e13 + 0.01 + cpu16), 1e-12), "pp16 %g", p.pp);
    /* the host bandwidth for 100 tok/s: 1e9 B in 10 ms minus the GPU part and overheads */
    ds_plan_predict(&l, &hw, 512, &p);
    CHECK(near(ds_plan_cpu_bw_needed(&l, &p, 50), 1e9 / (0.02 - 0.002 - ov) / 1e9, 1e-12), "bw needed");
    CHECK(ds_plan_cpu_bw_needed(&l, &p, 1000) < 0, "unreachable target");

    /* the calibration reproduces its own measurements (H200, 10-layer synth, one job) */
    memset(&l, 0, sizeof l);
    l.n_dev = 2, l.step[1] = 3.72e9, l.gpu_layers = 10, l.n_expert = 256, l.n_expert_used = 8;
    ds_plan_hw h200 = { .n_gpu = 1, .gpu_bw = { 4477 }, .cpu_bw = 90.5, .pcie_bw = 36, .gpu_tflops = 50.98,
                        .cpu_tflops = 0.72 };
    ds_plan_predict(&l, &h200, 512, &p);
    CHECK(near(p.tg_cal, 267.3, 2e-3), "all-GPU calibrated %g (measured 267.3)", p.tg_cal);
    l.step[0] = 1.169e9, l.step[1] = 2.551e9, l.hyb_layers = 7;
    ds_plan_predict(&l, &h200, 512, &p);
    CHECK(near(p.tg_cal, 47.55, 2e-3), "--cpu-moe calibrated %g (measured 47.55)", p.tg_cal);
}

static const char *bin(void) {
    const char *b = getenv("DSINFER_BIN");
    return b ? b : "build/dsinfer";
}

static int sh(const char *fmt, const char *a) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, bin(), a);
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static void test_cli(void) {
    char mdl[1024], a[1200];
    snprintf(mdl, sizeof mdl, "%s", ds_test_data("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf"));
    /* the limits the library computes for the tiny model, passed in GiB */
    ds_model *m = ds_test_load_model("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf");
    if (!m) return;
    ds_plan_limits lim = limits(m, 1, 0, 0);
    const double need0 = (double)non_expert_need(m, &lim) / 1073741824.0;
    /* one MoE layer's routed experts: gate, up and down are the same size here */
    const double layer = 3.0 * (double)m->layers[3].down_exps.row_bytes * (double)(m->layers[3].down_exps.ne[1] * m->layers[3].down_exps.ne[2]) /
                         1073741824.0;
    ds_model_free(m);
    CHECK(sh("%s plan --gpu-mem 8 2>/dev/null%s", "") == 2, "no -m");
    CHECK(sh("%s plan -m %s --gpu-mem abc 2>/dev/null", mdl) == 2, "bad --gpu-mem");
    CHECK(sh("%s plan -m %s --gpu-mem 8,-1 2>/dev/null", mdl) == 2, "negative --gpu-mem");
    CHECK(sh("%s plan -m %s --gpu-mem 8 --gpu-bw 1,2 2>/dev/null", mdl) == 2, "--gpu-bw count");
    CHECK(sh("%s plan -m %s --gpu-bw 1000 2>/dev/null", mdl) == 2, "--gpu-bw without GPUs");
    CHECK(sh("%s plan -m %s -o xml 2>/dev/null", mdl) == 2, "bad -o");
    CHECK(sh("%s plan -m %s -ctk q9 2>/dev/null", mdl) == 2, "bad -ctk");
    CHECK(sh("%s plan -m %s --frobnicate 2>/dev/null", mdl) == 2, "unknown flag");
    CHECK(sh("%s plan -m %s --cpu-mem 2>/dev/null", mdl) == 2, "missing value");
    CHECK(sh("%s plan -m /nonexistent/x.gguf 2>/dev/null%s", "") == 2, "missing file");
    CHECK(sh("%s plan --help >/dev/null%s", "") == 0, "help");
    /* large GPU: -ngl 99 alone; tiny GPU: experts on the host, GPU rules before --cpu-moe */
    CHECK(sh("%s plan -m %s --gpu-mem 8 | grep -q -- '-ngl 99 -c 4096'", mdl) == 0, "all on the GPU");
    snprintf(a, sizeof a, "%s --gpu-mem %.9f --gpu-margin 0", mdl, need0 + 1e-6);
    CHECK(sh("%s plan -m %s | grep -qF -- '-ngl 99 --cpu-moe -c 4096'", a) == 0, "experts on the host");
    snprintf(a, sizeof a, "%s --gpu-mem %.9f --gpu-margin 0", mdl, need0 + layer * 1.5);
    CHECK(sh("%s plan -m %s | grep -qF -- \"-ngl 99 -ot 'blk\\.(3)\\.ffn_.*_exps=CUDA0' --cpu-moe\"", a) == 0,
          "one expert layer on CUDA0");
    snprintf(a, sizeof a, "%s --gpu-mem %.9f,1 --gpu-margin 0", mdl, need0 + 1e-6);
    CHECK(sh("%s plan -m %s | grep -q 'not reached yet'", a) == 0, "two GPUs said");
    snprintf(a, sizeof a, "%s --gpu-mem %.9f --gpu-margin 0", mdl, need0 - 1e-6);
    CHECK(sh("%s plan -m %s | grep -q 'does not fit CUDA0'", a) == 0, "-ngl N fallback said");
    CHECK(sh("%s plan -m %s --gpu-mem 8 --cpu-mem 0.0001 | grep -q 'DOES NOT FIT'", mdl) == 0, "host too small");
    CHECK(sh("%s plan -m %s --gpu-mem 8 -o json | grep -q '\"mode\": \"all_gpu\"'", mdl) == 0, "json");
    /* --emulate: host only runs bench here; a GPU placement needs a GPU (exit 1 with a message, or runs) */
    CHECK(sh("%s plan -m %s --emulate -t 2 -p 32 -n 4 -r 1 2>/dev/null | grep -q 'measured'", mdl) == 0, "emulate on the host");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s plan -m %s --gpu-mem 8 --emulate -t 2 -p 32 -n 4 -r 1 2>&1", bin(), mdl);
    FILE *f = popen(cmd, "r");
    char out[65536];
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    out[n] = 0;
    int st = f ? pclose(f) : -1;
    st = st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
    CHECK((st == 1 && strstr(out, "--emulate needs a GPU")) || (st == 0 && strstr(out, "measured")),
          "emulate with a GPU placement: exit %d", st);
}

int main(void) {
    test_rule();
    test_choose("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf");
    test_choose("models/dsv3_kq/dsv3_kq-Q3_K_M.gguf");
    test_predict();
    test_cli();
    return ds_test_finish("test_plan");
}
