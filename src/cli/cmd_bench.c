/* cmd_bench.c: `dsinfer bench` — llama-bench's prompt/generation speed tests
 * (pp, tg, pp+tg, at context depths, repeated, mean ± sd) and ik_llama's
 * sweep over context depth, with the host's measured read bandwidth and the
 * decode roofline next to every generation result. Not a profiler: it times
 * whole decode calls (use perf for where the time goes inside). */
#include "bench.h"
#ifdef DSINFER_HAVE_CUDA
#include "../backend/cuda/cuda_backend_bw.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf("usage: dsinfer bench -m MODEL [-p N,..] [-n N,..] [-pg PP,TG]... [-d N,..] [-r N] [-t N] [-b N] [-ub N]\n"
           "                     [-o md|json|csv] [--device ref|cpu|cuda] [-ctk f16|bf16|f32] [--seed S]\n"
           "       dsinfer bench -m MODEL --sweep -c CTX [-ub U] [-n TG] [-t N] [-o md|json|csv]\n"
           "llama-bench's tests: pp (-p, default 512) is one prefill of N random tokens in micro-batches\n"
           "of -ub; tg (-n, default 128) is N single-token decode steps; -pg PP,TG both; -d runs each\n"
           "test after a prefill of that depth. -r repetitions (default 5), each on a fresh KV state,\n"
           "after one warm-up. Decode rows add GB/step (weights + KV rows read per step) and %% of the\n"
           "roofline (measured read bandwidth / GB per step). --sweep: ik_llama's sweep-bench: at each\n"
           "depth 0, U, 2U, ... < CTX, TG decode steps (default U/4) then a U-token prefill.\n"
           "Placement as in llama.cpp: -ngl N, -ot REGEX=DEV, --cpu-moe, --n-cpu-moe N (the plan is printed).\n"
           "With a GPU the roofline adds up each device's part of a step at its measured bandwidth.\n"
           "--verbose: with routed experts on the CPU, the time each side of a layer waited for the other.\n");
}

/* Parses "512" or "64,512" into out[0..n); false (error printed) if bad. */
static bool parse_list(const char *flag, const char *s, int lo, int *out, int cap, int *n) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char item[32];
        size_t k = strcspn(p, ",");
        if (k == 0 || k >= sizeof item || *n == cap) {
            fprintf(stderr, "dsinfer bench: bad list '%s' for %s\n", s, flag);
            return false;
        }
        memcpy(item, p, k);
        item[k] = 0;
        int64_t v;
        if (!ds_cli_int(flag, item, lo, 1 << 20, &v)) return false;
        out[(*n)++] = (int)v;
        p += k + (p[k] == ',');
    }
    if (*n == 0) fprintf(stderr, "dsinfer bench: empty list for %s\n", flag);
    return *n > 0;
}

/* llama.cpp's names for general.file_type (llama_model_ftype_name). */
static const char *ftype_name(uint32_t ft) {
    switch (ft) {
    case 0: return "all F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K - Medium";
    case 11: return "Q3_K - Small";
    case 12: return "Q3_K - Medium";
    case 13: return "Q3_K - Large";
    case 14: return "Q4_K - Small";
    case 15: return "Q4_K - Medium";
    case 16: return "Q5_K - Small";
    case 17: return "Q5_K - Medium";
    case 18: return "Q6_K";
    case 19: return "IQ2_XXS - 2.0625 bpw";
    case 20: return "IQ2_XS - 2.3125 bpw";
    case 21: return "Q2_K - Small";
    case 22: return "IQ3_XS - 3.3 bpw";
    case 23: return "IQ3_XXS - 3.0625 bpw";
    case 24: return "IQ1_S - 1.5625 bpw";
    case 25: return "IQ4_NL - 4.5 bpw";
    case 26: return "IQ3_S - 3.4375 bpw";
    case 27: return "IQ3_S mix - 3.66 bpw";
    case 28: return "IQ2_S - 2.5 bpw";
    case 29: return "IQ2_M - 2.7 bpw";
    case 30: return "IQ4_XS - 4.25 bpw";
    case 31: return "IQ1_M - 1.75 bpw";
    case 32: return "BF16";
    default: return NULL;
    }
}

static void fill_info(ds_bench_info *info, const ds_model *m, const ds_cli_model_opts *o, int n_threads) {
    memset(info, 0, sizeof *info);
    info->model_path = o->model;
    uint32_t ft = 0;
    const char *fname = ds_gguf_get_u32(m->gguf, "general.file_type", &ft) ? ftype_name(ft) : NULL;
    /* llama.cpp names a deepseek2 size by layer count: 61 is V3/R1's 671B */
    const char *size = m->hp.n_layer == 61 ? "671B" : m->hp.n_layer == 27 ? "16B" : m->hp.n_layer == 60 ? "236B" : "?B";
    if (fname) snprintf(info->model_type, sizeof info->model_type, "%s %s %s", m->arch, size, fname);
    else snprintf(info->model_type, sizeof info->model_type, "%s %s ftype %u", m->arch, size, ft);
    for (int64_t i = 0; i < ds_gguf_n_tensors(m->gguf); i++) {
        const ds_gguf_tensor *t = ds_gguf_tensor_at(m->gguf, i);
        info->model_bytes += t->nbytes;
        info->model_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    info->backend = !strcmp(o->device, "ref")    ? "CPU (ref)"
                    : !strcmp(o->device, "cuda") ? (ds_block_device(m, DS_BLK_EXPERTS, m->hp.n_layer - 1) == DS_DEV_CPU
                                                        ? "CUDA+CPU" : "CUDA")
                                                 : "CPU";
    info->n_threads = n_threads;
    info->n_batch = o->n_batch;
    info->n_ubatch = o->n_ubatch < o->n_batch ? o->n_ubatch : o->n_batch;
    info->kv_type = ds_type_info(o->kv_type)->name;
    info->decode_bytes = ds_model_decode_bytes(m);
    size_t kv_el = o->kv_type == DS_TYPE_F32 ? 4 : 2;
    info->kv_row_bytes = (uint64_t)m->hp.n_layer * (uint64_t)m->hp.d_kv_row * kv_el;
}

/* ---- running -------------------------------------------------------------------- */

typedef struct runner {
    ds_ctx *c;
    int n_vocab, n_batch;
    uint64_t rng;
    int32_t *tok, *pos, *seq; /* [cap] */
    bool *want;               /* [cap] */
    float *logits;            /* [n_vocab]: one row */
    int cap;
} runner;

static int32_t rand_token(runner *r) {
    r->rng ^= r->rng << 13, r->rng ^= r->rng >> 7, r->rng ^= r->rng << 17;
    return (int32_t)(r->rng % (uint64_t)r->n_vocab);
}

/* Prefill n random tokens at positions [p0, p0 + n), n_batch per decode
 * call (the engine splits those into -ub micro-batches); only the last
 * token's logits are computed, as llama-bench asks for. */
static bool prefill(runner *r, int p0, int n) {
    for (int i0 = 0; i0 < n; i0 += r->n_batch) {
        int k = n - i0 < r->n_batch ? n - i0 : r->n_batch;
        for (int i = 0; i < k; i++) {
            r->tok[i] = rand_token(r);
            r->pos[i] = p0 + i0 + i;
            r->seq[i] = 0;
            r->want[i] = i0 + i == n - 1;
        }
        ds_batch b = { k, r->tok, r->pos, r->seq, r->want, NULL };
        ds_error err = { 0 };
        if (ds_ctx_decode(r->c, &b, i0 + k == n ? r->logits : NULL, &err)) {
            fprintf(stderr, "dsinfer bench: decode failed: %s\n", err.msg);
            return false;
        }
    }
    return true;
}

/* n single-token steps at positions [p0, p0 + n), logits every step. */
static bool generate(runner *r, int p0, int n) {
    for (int i = 0; i < n; i++) {
        int32_t t = rand_token(r), p = p0 + i, s = 0;
        ds_batch b = { 1, &t, &p, &s, NULL, NULL };
        ds_error err = { 0 };
        if (ds_ctx_decode(r->c, &b, r->logits, &err)) {
            fprintf(stderr, "dsinfer bench: decode failed: %s\n", err.msg);
            return false;
        }
    }
    return true;
}

/* One repetition: fresh KV, untimed depth prefill, then the timed test. */
static bool run_once(runner *r, int n_prompt, int n_gen, int depth, double *secs) {
    ds_ctx_seq_truncate(r->c, 0, 0);
    if (depth > 0 && !prefill(r, 0, depth)) return false;
    double t0 = ds_time_s();
    if (n_prompt > 0 && !prefill(r, depth, n_prompt)) return false;
    if (n_gen > 0 && !generate(r, depth + n_prompt, n_gen)) return false;
    *secs = ds_time_s() - t0;
    return true;
}

typedef struct opts {
    int p[16], n_p, n[16], n_n, d[16], n_d, pg[16][2], n_pg, reps;
    bool sweep, n_given, verbose;
    ds_bench_fmt fmt;
    uint64_t seed;
} opts;

static int run_tests(runner *r, const opts *op, const ds_bench_info *info) {
    double samples[256];
    bool first = true;
    ds_bench_print_header(info, op->fmt);
    for (int di = 0; di < op->n_d; di++) {
        /* llama-bench's order: pp tests, tg tests, pp+tg tests */
        int tests[48][2], nt = 0;
        for (int i = 0; i < op->n_p; i++) if (op->p[i] > 0) tests[nt][0] = op->p[i], tests[nt++][1] = 0;
        for (int i = 0; i < op->n_n; i++) if (op->n[i] > 0) tests[nt][0] = 0, tests[nt++][1] = op->n[i];
        for (int i = 0; i < op->n_pg; i++) tests[nt][0] = op->pg[i][0], tests[nt++][1] = op->pg[i][1];
        for (int ti = 0; ti < nt; ti++) {
            ds_bench_row row = { tests[ti][0], tests[ti][1], op->d[di], op->reps, samples, 0 };
            double w;
            /* warm-up as llama-bench does it: the whole prompt and a token or
             * two (code paths, scratch, each GEMM tile width's first launch) */
            if (!run_once(r, row.n_prompt, row.n_gen ? 2 : 0, 0, &w)) return 1;
            for (int k = 0; k < op->reps; k++)
                if (!run_once(r, row.n_prompt, row.n_gen, row.n_depth, &samples[k])) return 1;
            if (row.n_prompt == 0) /* decode test: KV rows read grow from depth+1 to depth+n */
                row.bytes_per_step = (double)info->decode_bytes +
                                     (double)info->kv_row_bytes * (row.n_depth + (row.n_gen + 1) / 2.0);
            ds_bench_print_row(info, &row, op->fmt, first);
            first = false;
        }
    }
    ds_bench_print_end(op->fmt);
    return 0;
}

/* ik_llama's sweep-bench: at n_kv = 0, ub, 2ub, ... (while a prefill of ub
 * still fits), tg decode steps timed then dropped, then a ub-token prefill
 * that stays and becomes the next depth. */
static int run_sweep(runner *r, const opts *op, const ds_bench_info *info, int64_t n_ctx, int ub) {
    int tg = op->n_given && op->n_n > 0 ? op->n[0] : ub / 4;
    if (tg < 1) tg = 1;
    double w;
    if (!run_once(r, 0, 1, 0, &w)) return 1; /* warm-up */
    ds_ctx_seq_truncate(r->c, 0, 0);
    ds_bench_print_sweep_header(info, op->fmt);
    bool first = true;
    for (int n_kv = 0; n_kv + ub <= n_ctx && n_kv + tg <= n_ctx; n_kv += ub) {
        ds_bench_sweep_row row = { ub, tg, n_kv, 0, 0, 0 };
        ds_ctx_seq_truncate(r->c, 0, n_kv);
        double t0 = ds_time_s();
        if (!generate(r, n_kv, tg)) return 1;
        row.t_tg = ds_time_s() - t0;
        ds_ctx_seq_truncate(r->c, 0, n_kv);
        t0 = ds_time_s();
        if (!prefill(r, n_kv, ub)) return 1;
        row.t_pp = ds_time_s() - t0;
        row.bytes_per_step = (double)info->decode_bytes + (double)info->kv_row_bytes * (n_kv + (tg + 1) / 2.0);
        ds_bench_print_sweep_row(info, &row, op->fmt, first);
        first = false;
    }
    ds_bench_print_end(op->fmt);
    return 0;
}

/* ---- command -------------------------------------------------------------------- */

static int parse(int argc, char **argv, ds_cli_model_opts *o, opts *op) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int64_t x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help(); return -1; }
        if (!strcmp(a, "--sweep")) { op->sweep = true; continue; }
        if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) { op->verbose = true; continue; }
        if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !parse_list(a, v, 0, op->p, 16, &op->n_p)) return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !parse_list(a, v, 0, op->n, 16, &op->n_n)) return 2;
            op->n_given = true;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--n-depth")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !parse_list(a, v, 0, op->d, 16, &op->n_d)) return 2;
        } else if (!strcmp(a, "-pg")) {
            int two[2], k = 0;
            if (!(v = ds_cli_value(argc, argv, &i)) || !parse_list(a, v, 1, two, 2, &k)) return 2;
            if (k != 2 || op->n_pg == 16) return ds_cli_usage_error("bench", "-pg takes PP,TG (at most 16 times)");
            op->pg[op->n_pg][0] = two[0], op->pg[op->n_pg++][1] = two[1];
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 1, 256, &x)) return 2;
            op->reps = (int)x;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(v = ds_cli_value(argc, argv, &i))) return 2;
            if (!strcmp(v, "md")) op->fmt = DS_BENCH_MD;
            else if (!strcmp(v, "json")) op->fmt = DS_BENCH_JSON;
            else if (!strcmp(v, "csv")) op->fmt = DS_BENCH_CSV;
            else return ds_cli_usage_error("bench", "-o is md, json or csv, not '%s'", v);
        } else if (!strcmp(a, "--seed")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 0, INT64_MAX, &x)) return 2;
            op->seed = (uint64_t)x;
        } else {
            int r = ds_cli_model_opt(o, argc, argv, &i);
            if (r < 0) return 2;
            if (r == 0) return ds_cli_usage_error("bench", "unknown option '%s'", a);
        }
    }
    return 0;
}

int ds_cmd_bench(int argc, char **argv) {
    ds_cli_model_opts o;
    ds_cli_model_opts_init(&o);
    opts op = { .p = { 512 }, .n_p = 1, .n = { 128 }, .n_n = 1, .d = { 0 }, .n_d = 1, .reps = 5, .seed = 1234 };
    bool ctx_given = false;
    for (int i = 1; i < argc; i++) ctx_given |= !strcmp(argv[i], "-c") || !strcmp(argv[i], "--ctx-size");
    int pr = parse(argc, argv, &o, &op);
    if (pr) return pr < 0 ? 0 : pr;
    if (!o.model) return ds_cli_usage_error("bench", "-m MODEL is required");
    if (op.sweep && !ctx_given) return ds_cli_usage_error("bench", "--sweep needs -c CTX");

    /* context: the deepest test must fit */
    int64_t need = 1;
    for (int di = 0; di < op.n_d; di++) {
        int64_t most = 0;
        for (int i = 0; i < op.n_p; i++) most = op.p[i] > most ? op.p[i] : most;
        for (int i = 0; i < op.n_n; i++) most = op.n[i] > most ? op.n[i] : most;
        for (int i = 0; i < op.n_pg; i++) most = op.pg[i][0] + op.pg[i][1] > most ? op.pg[i][0] + op.pg[i][1] : most;
        if (op.d[di] + most > need) need = op.d[di] + most;
    }
    if (!op.sweep && (!ctx_given || o.n_ctx < need)) o.n_ctx = need;
    int ub = o.n_ubatch < o.n_batch ? o.n_ubatch : o.n_batch;
    if (op.sweep && o.n_ctx < ub) return ds_cli_usage_error("bench", "--sweep: -c %lld is below -ub %d", (long long)o.n_ctx, ub);

    ds_model *m;
    ds_status lst = ds_cli_load(&o, &m, NULL, 1);
    if (lst) return ds_cli_exit_code(lst);
    const char *device;
    if ((lst = ds_cli_prepare(&o, m, &device))) {
        ds_model_free(m);
        return ds_cli_exit_code(lst);
    }
    o.device = device;
    int n_threads = o.n_threads > 0 ? o.n_threads : ds_cpu_count();
    if (op.verbose) setenv("DSINFER_HYBRID_STATS", "1", 1);

    /* bandwidth first, before the backend's pool exists to compete for cores:
     * the host's where it reads weights, the GPU's where it does; the
     * roofline of a step is the sum of each device's bytes at its speed */
    const bool gpu = !strcmp(o.device, "cuda");
    ds_plan plan;
    ds_plan_compute(m, o.n_ctx, 2, 0, &plan);
    if (!gpu) { /* ref/cpu: every block on the host, whatever a placement said */
        memset(plan.step, 0, sizeof plan.step);
        plan.step[0] = ds_model_decode_bytes(m);
    }
    ds_bench_bw bw = { 0 };
    ds_error err = { 0 };
    if (plan.step[0] > 0 && ds_bench_read_bw(n_threads, 10, &bw, &err)) {
        fprintf(stderr, "dsinfer bench: %s\n", err.msg);
        ds_model_free(m);
        return 1;
    }
    double gpu_gbs = 0, gpu_med = 0;
#ifdef DSINFER_HAVE_CUDA
    if (gpu && ds_cuda_read_bw((size_t)2 << 30, 10, &gpu_gbs, &gpu_med))
        fprintf(stderr, "dsinfer bench: the GPU bandwidth probe failed; %% roofline left out\n");
#endif
    ds_ctx_params cp;
    ds_ctx_params_default(&cp);
    cp.device = device;
    cp.n_threads = n_threads;
    cp.n_ctx = o.n_ctx;
    cp.n_seq = 1;
    cp.n_ubatch = ub;
    cp.kv_type = o.kv_type;
    cp.gpu_experts = o.gpu_experts;
    cp.expert_profile = o.expert_profile;
    ds_ctx *c;
    if ((lst = ds_ctx_create(m, &cp, &c, &err))) {
        fprintf(stderr, "dsinfer bench: cannot create the context: %s\n", err.msg);
        ds_model_free(m);
        return ds_cli_exit_code(lst);
    }
    double t0 = ds_time_s();
    uint64_t touched = ds_bench_touch_weights(m);
    double t_touch = ds_time_s() - t0;

    ds_bench_info info;
    fill_info(&info, m, &o, n_threads);
    /* effective bandwidth: decode_bytes over the time each device needs for its part */
    double t_roof = 0;
    bool known = true;
    for (int d = 0; d < plan.n_dev; d++) {
        if (!plan.step[d]) continue;
        const double gbs = d == 0 ? bw.gbs : gpu_gbs;
        if (gbs <= 0) known = false;
        else t_roof += plan.step[d] / (gbs * 1e9);
    }
    info.bw_gbs = known && t_roof > 0 ? info.decode_bytes / t_roof / 1e9 : 0;
    /* the header lines: markdown and humans read them; JSON/CSV go to stderr to stay parseable */
    FILE *hf = op.fmt == DS_BENCH_MD ? stdout : stderr;
    if (plan.step[0] > 0)
        fprintf(hf, "# host read bandwidth: %.1f GB/s (best of %d streaming reads of %.2f GiB, %d threads; median %.1f)\n",
                bw.gbs, bw.n_passes, bw.bytes / 1073741824.0, bw.n_threads, bw.gbs_median);
    if (gpu)
        fprintf(hf, "# GPU read bandwidth: %.1f GB/s (best of 10 streaming reads of 2 GiB; median %.1f)\n", gpu_gbs, gpu_med);
    if (gpu && plan.step[0] > 0 && info.bw_gbs > 0)
        fprintf(hf, "# a decode step reads %.3f GB on the host and %.3f GB on the GPU: roofline as if %.1f GB/s\n",
                plan.step[0] / 1e9, plan.step[1] / 1e9, info.bw_gbs);
    fprintf(hf, "# decode step: %.3f GB of weights + %llu B of KV per cached token; weights %.2f GiB resident in %.1f s\n",
            info.decode_bytes / 1e9, (unsigned long long)info.kv_row_bytes, touched / 1073741824.0, t_touch);
    fprintf(hf, "# %s, %d threads, -b %d -ub %d, KV %s, %s\n", info.backend, n_threads, o.n_batch, ub, info.kv_type,
            ds_simd_name(ds_simd_detect()));
    if (hf == stdout) printf("\n");

    runner r = { .c = c, .n_vocab = m->hp.n_vocab, .n_batch = o.n_batch, .rng = op.seed * 2654435761u + 1 };
    r.cap = o.n_batch;
    r.tok = malloc((size_t)r.cap * sizeof *r.tok);
    r.pos = malloc((size_t)r.cap * sizeof *r.pos);
    r.seq = malloc((size_t)r.cap * sizeof *r.seq);
    r.want = malloc((size_t)r.cap * sizeof *r.want);
    r.logits = malloc((size_t)r.n_vocab * sizeof *r.logits);
    int rc = 1;
    if (!r.tok || !r.pos || !r.seq || !r.want || !r.logits) fprintf(stderr, "dsinfer bench: out of memory\n");
    else rc = op.sweep ? run_sweep(&r, &op, &info, o.n_ctx, ub) : run_tests(&r, &op, &info);
    free(r.tok); free(r.pos); free(r.seq); free(r.want); free(r.logits);
    ds_ctx_free(c);
    ds_model_free(m);
    return rc;
}
