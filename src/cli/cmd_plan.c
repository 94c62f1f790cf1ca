/* cmd_plan.c: `dsinfer plan` — for a model and a machine described on the
 * command line (GPU memory and bandwidth, host RAM and bandwidth, PCIe),
 * the placement to use, the command line that runs it, and the decode and
 * prefill speed the bandwidth model predicts; --emulate benchmarks that
 * placement here. The model is only mapped: nothing is computed or uploaded.
 * The choosing and predicting is model/plan_predict.c; this file reports. */
#include "cli.h"
#include "../backend/cuda_scratch.h"
#include "../model/plan_predict.h"
#ifdef DSINFER_HAVE_CUDA
#include "../backend/cuda/cuda_backend.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GIB 1073741824.0

static void help(void) {
    printf("usage: dsinfer plan -m MODEL [--gpu-mem GiB,..] [--cpu-mem GiB] [--gpu-bw GB/s,..] [--cpu-bw GB/s]\n"
           "                    [--pcie-bw GB/s] [--gpu-tflops T] [--cpu-tflops T] [-c CTX] [-ub N] [-ctk f16|bf16|f32]\n"
           "                    [--gpu-margin GiB] [--target TOK/S] [-o md|json] [--emulate [-t N] [-p N] [-n N] [-r N]]\n"
           "Chooses a placement for the machine described (one --gpu-mem entry per GPU; none = host only),\n"
           "prints the command line that runs it and predicts decode (tg) and prefill (pp) speed from the\n"
           "bytes each device reads and its bandwidth. Defaults: --gpu-bw 1790 per GPU, --cpu-bw 100,\n"
           "--pcie-bw 25, --gpu-tflops %.2f and --cpu-tflops %.2f (dsinfer's prefill rates measured on an H200\n"
           "host with 16 cores), -c 4096, -ub 512, -ctk f16, --target 20, --gpu-margin 1 (GiB kept free per GPU).\n"
           "--cpu-mem not given: the host's RAM is not checked. The model is only mapped.\n"
           "--emulate runs `bench` here with the placement (-p 512 -n 64 -r 2 by default) and prints\n"
           "prediction next to measurement. See docs/hybrid.md, \"Planning\".\n",
           DS_PLAN_GPU_TFLOPS, DS_PLAN_CPU_TFLOPS);
}

typedef struct plan_opts {
    const char *model;
    ds_plan_limits lim;
    ds_plan_hw hw;
    bool gpu_bw_given, cpu_bw_given, pcie_bw_given, tflops_given;
    int n_gpu_bw;
    int ub, n_threads, n_prompt, n_gen, reps;
    ds_type kv_type;
    double target;
    bool json, emulate;
} plan_opts;

/* "96,32" -> out[0..n) in the flag's unit times scale; false (error printed) if bad */
static bool parse_nums(const char *flag, const char *s, double *out, int cap, int *n) {
    *n = 0;
    for (const char *p = s; *p;) {
        char item[64];
        size_t k = strcspn(p, ",");
        if (k == 0 || k >= sizeof item || *n == cap) {
            fprintf(stderr, "dsinfer plan: bad list '%s' for %s\n", s, flag);
            return false;
        }
        memcpy(item, p, k);
        item[k] = 0;
        double v;
        if (!ds_cli_float(flag, item, &v)) return false;
        if (v <= 0 || v > 1e9) {
            fprintf(stderr, "dsinfer plan: %s wants positive values, not '%s'\n", flag, item);
            return false;
        }
        out[(*n)++] = v;
        p += k + (p[k] == ',');
    }
    if (!*n) fprintf(stderr, "dsinfer plan: empty list for %s\n", flag);
    return *n > 0;
}

static bool one_num(const char *flag, const char *s, double *out) {
    int n;
    return parse_nums(flag, s, out, 1, &n);
}

/* returns 0, 2 (usage error printed) or -1 (help printed) */
static int parse(int argc, char **argv, plan_opts *o) {
    double gpu_bw[DS_MAX_GPUS], v[DS_MAX_GPUS];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *s;
        int64_t x;
        int n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help(); return -1; }
        if (!strcmp(a, "--emulate")) { o->emulate = true; continue; }
        if (!(s = ds_cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = s;
        else if (!strcmp(a, "--gpu-mem")) {
            if (!parse_nums(a, s, v, DS_MAX_GPUS, &n)) return 2;
            o->lim.n_gpu = o->hw.n_gpu = n;
            for (int g = 0; g < n; g++) o->lim.gpu_mem[g] = (uint64_t)(v[g] * GIB);
        } else if (!strcmp(a, "--gpu-bw")) {
            if (!parse_nums(a, s, gpu_bw, DS_MAX_GPUS, &o->n_gpu_bw)) return 2;
            o->gpu_bw_given = true;
        } else if (!strcmp(a, "--gpu-margin")) {
            if (!ds_cli_float(a, s, &v[0]) || v[0] < 0 || v[0] > 1e6)
                return ds_cli_usage_error("plan", "--gpu-margin wants GiB >= 0, not '%s'", s);
            o->lim.gpu_margin = (uint64_t)(v[0] * GIB);
        } else if (!strcmp(a, "--cpu-mem")) {
            if (!one_num(a, s, v)) return 2;
            o->lim.cpu_mem = (uint64_t)(v[0] * GIB);
        } else if (!strcmp(a, "--cpu-bw")) {
            if (!one_num(a, s, &o->hw.cpu_bw)) return 2;
            o->cpu_bw_given = true;
        } else if (!strcmp(a, "--pcie-bw")) {
            if (!one_num(a, s, &o->hw.pcie_bw)) return 2;
            o->pcie_bw_given = true;
        } else if (!strcmp(a, "--gpu-tflops")) {
            if (!one_num(a, s, &o->hw.gpu_tflops)) return 2;
            o->tflops_given = true;
        } else if (!strcmp(a, "--cpu-tflops")) {
            if (!one_num(a, s, &o->hw.cpu_tflops)) return 2;
            o->tflops_given = true;
        } else if (!strcmp(a, "--target")) {
            if (!one_num(a, s, &o->target)) return 2;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            if (!ds_cli_int(a, s, 1, (int64_t)1 << 30, &x)) return 2;
            o->lim.n_ctx = x;
        } else if (!strcmp(a, "-ub") || !strcmp(a, "--ubatch-size")) {
            if (!ds_cli_int(a, s, 1, 1 << 16, &x)) return 2;
            o->ub = (int)x;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!ds_cli_int(a, s, 0, 4096, &x)) return 2;
            o->n_threads = (int)x;
        } else if (!strcmp(a, "-p") || !strcmp(a, "-n") || !strcmp(a, "-r")) {
            if (!ds_cli_int(a, s, a[1] == 'r' ? 1 : 0, 1 << 20, &x)) return 2;
            *(a[1] == 'p' ? &o->n_prompt : a[1] == 'n' ? &o->n_gen : &o->reps) = (int)x;
        } else if (!strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k")) {
            int t = ds_type_from_name(s);
            if (t != DS_TYPE_F32 && t != DS_TYPE_F16 && t != DS_TYPE_BF16)
                return ds_cli_usage_error("plan", "unsupported KV cache type '%s' (f32, f16, bf16)", s);
            o->kv_type = (ds_type)t;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (strcmp(s, "md") && strcmp(s, "json")) return ds_cli_usage_error("plan", "-o is md or json, not '%s'", s);
            o->json = !strcmp(s, "json");
        } else {
            return ds_cli_usage_error("plan", "unknown option '%s'", a);
        }
    }
    if (!o->model) return ds_cli_usage_error("plan", "-m MODEL is required");
    if (o->gpu_bw_given) {
        if (o->n_gpu_bw != o->hw.n_gpu && o->n_gpu_bw != 1)
            return ds_cli_usage_error("plan", "--gpu-bw has %d entries for %d GPUs (--gpu-mem); give one per GPU or one for all",
                                      o->n_gpu_bw, o->hw.n_gpu);
        if (o->hw.n_gpu == 0) return ds_cli_usage_error("plan", "--gpu-bw without --gpu-mem (which GPUs?)");
    }
    for (int g = 0; g < o->hw.n_gpu; g++) o->hw.gpu_bw[g] = !o->gpu_bw_given ? 1790 : gpu_bw[o->n_gpu_bw == 1 ? 0 : g];
    o->lim.kv_elem = o->kv_type == DS_TYPE_F32 ? 4 : 2;
    return 0;
}

/* ---- the command line of a choice ------------------------------------------------- */

typedef struct flags {
    char *argv[8];         /* placement flags, ready for ds_cmd_bench */
    int argc;
    char ngl[16], rule[4096];
    char shell[4200];      /* the same, quoted for a shell */
} flags;

/* run: CUDA0 only (the fast one-GPU path) or every GPU */
static void make_flags(const ds_model *m, const ds_plan_choice *c, bool run, flags *f) {
    memset(f, 0, sizeof *f);
    if (c->mode == DS_PLAN_HOST_ONLY) return;
    snprintf(f->ngl, sizeof f->ngl, "%d", c->n_gpu_layers);
    f->argv[f->argc++] = "-ngl";
    f->argv[f->argc++] = f->ngl;
    size_t len = (size_t)snprintf(f->shell, sizeof f->shell, "-ngl %d", c->n_gpu_layers);
    const int n_rules = run ? 1 : DS_MAX_GPUS;
    int lowest = m->hp.n_layer;
    char *r = f->rule;
    for (int g = 0; g < n_rules && c->mode != DS_PLAN_ALL_GPU; g++) {
        const size_t left = sizeof f->rule - (size_t)(r - f->rule);
        if (!ds_plan_ot_rule(m, c->exp_first[g], c->exp_end[g], g, r, left)) continue;
        f->argv[f->argc++] = "-ot";
        f->argv[f->argc++] = r;
        len += (size_t)snprintf(f->shell + len, sizeof f->shell - len, " -ot '%s'", r);
        lowest = c->exp_first[g] < lowest ? c->exp_first[g] : lowest;
        r += strlen(r) + 1;
    }
    /* what the rules leave of the experts goes to the host (first match wins: after the GPU rules) */
    bool moe_left = false;
    for (int il = 0; il < lowest && c->mode != DS_PLAN_ALL_GPU; il++) moe_left |= m->layers[il].is_moe;
    if (moe_left) {
        f->argv[f->argc++] = "--cpu-moe";
        snprintf(f->shell + len, sizeof f->shell - len, " --cpu-moe");
    }
}

/* ---- reporting -------------------------------------------------------------------------- */

static const char *mode_name(ds_plan_mode md) {
    switch (md) {
    case DS_PLAN_HOST_ONLY: return "host_only";
    case DS_PLAN_ALL_GPU: return "all_gpu";
    case DS_PLAN_EXPERTS_SPLIT: return "experts_split";
    default: return "layers";
    }
}

static int count_moe(const ds_model *m, int first, int end) {
    int n = 0;
    for (int il = first; il < end && il < m->hp.n_layer; il++) n += m->layers[il].is_moe;
    return n;
}

/* the placement in words, and why */
static void explain(const ds_model *m, const ds_plan_choice *c, const plan_opts *o) {
    const int nl = m->hp.n_layer;
    switch (c->mode) {
    case DS_PLAN_HOST_ONLY:
        if (o->lim.n_gpu == 0) printf("placement: everything on the host (no --gpu-mem: no GPU)\n");
        else printf("placement: everything on the host: CUDA0 cannot hold even the last layer's non-expert blocks\n"
                    "  with KV, scratch and the margin (lower -c or -ub, or use a larger GPU)\n");
        return;
    case DS_PLAN_LAYERS:
        printf("placement: the non-expert part of all layers and the output layer does not fit CUDA0 with KV,\n"
               "  scratch (%.2f GiB, with the prefill stage for the largest host layer's experts) and the margin;\n"
               "  the last %d of %d layers' non-expert blocks go there (-ngl %d, routed experts on the host),\n"
               "  the rest of the model (and the output layer) runs on the host%s\n",
               c->plan.scratch[DS_DEV_CUDA(0)] / GIB, c->n_gpu_layers, nl, c->n_gpu_layers,
               o->lim.n_gpu > 1 ? "\n  (a layer split over several GPUs, -ts, is not planned yet)" : "");
        return;
    case DS_PLAN_ALL_GPU:
        printf("placement: everything on CUDA0 (token_embd on the host, as llama.cpp keeps it: one row per token is read)\n");
        return;
    default:
        break;
    }
    printf("placement: attention, dense FFN, router, shared experts and the output layer on CUDA0 (token_embd on\n"
           "  the host, as llama.cpp); then routed experts of whole layers, last layers first, while they fit\n"
           "  (KV for -c %lld, scratch for -ub %d and %.2f GiB free on each GPU):\n", (long long)o->lim.n_ctx, o->ub,
           o->lim.gpu_margin / GIB);
    int on_gpu = 0;
    for (int g = 0; g < o->lim.n_gpu; g++) {
        const int k = count_moe(m, c->exp_first[g], c->exp_end[g]);
        on_gpu += k;
        if (k) printf("    CUDA%d: experts of layers %d-%d (%d MoE layer%s)\n", g, c->exp_first[g], c->exp_end[g] - 1, k, k == 1 ? "" : "s");
        else printf("    CUDA%d: no expert layer fits\n", g);
    }
    printf("    host:  experts of the other %d of %d MoE layers\n", c->n_moe - on_gpu, c->n_moe);
}

static void print_fit(const ds_plan *p, const ds_plan_limits *lim, bool host_fits) {
    printf("memory:");
    for (int d = 1; d < p->n_dev; d++) {
        const uint64_t need = p->weights[d] + p->kv[d] + p->scratch[d];
        if (!need) continue;
        printf(" CUDA%d %.3f of %.3f GiB (+%.2f margin)%s;", d - 1, need / GIB, lim->gpu_mem[d - 1] / GIB, lim->gpu_margin / GIB,
               need + lim->gpu_margin <= lim->gpu_mem[d - 1] ? "" : " DOES NOT FIT");
    }
    if (lim->cpu_mem)
        printf(" host %.3f of %.3f GiB (weights + KV)%s\n", ds_plan_host_bytes(p) / GIB, lim->cpu_mem / GIB,
               host_fits ? "" : " DOES NOT FIT: the host lacks the RAM for its part");
    else
        printf(" host %.2f GiB (weights + KV; --cpu-mem not given, not checked)\n", ds_plan_host_bytes(p) / GIB);
}

static void print_prediction(const ds_plan_loads *l, const ds_plan_prediction *p, const plan_opts *o) {
    printf("  decode, bandwidth bound: %9.2f tok/s = 1 / (", p->tg_bw);
    bool first = true;
    for (int d = 0; d < l->n_dev; d++) {
        if (l->step[d] <= 0) continue;
        printf("%s%.3f GB / %g GB/s", first ? "" : " + ", l->step[d] / 1e9, d ? o->hw.gpu_bw[d - 1] : o->hw.cpu_bw);
        first = false;
    }
    printf(")  [%s]\n", first ? "nothing read" : "step bytes per device / bandwidth");
    printf("  decode, calibrated:      %9.2f tok/s   (+ %d GPU layers x %.2f ms + %d host-expert layers x %.2f ms per step,\n"
           "                                           overheads measured on our H200)\n",
           p->tg_cal, l->gpu_layers, DS_PLAN_O_GPU_LAYER * 1e3, l->hyb_layers, DS_PLAN_O_HYB_LAYER * 1e3);
    printf("  prefill (-ub %d):      %9.2f tok/s   (per micro-batch: GPUs %.1f ms, host layers %.1f ms", p->ub, p->pp,
           p->t_gpu * 1e3, p->t_host * 1e3);
    if (l->hyb_bytes > 0) {
        if (p->t_stream >= 0)
            printf(", host experts %s %.1f ms; %s %.1f ms)\n", p->streamed ? "streamed over PCIe" : "on the CPU",
                   (p->streamed ? p->t_stream : p->t_cpu) * 1e3, p->streamed ? "on the CPU would take" : "streaming would take",
                   (p->streamed ? p->t_cpu : p->t_stream) * 1e3);
        else
            printf(", host experts on the CPU %.1f ms: micro-batches under 32 rows are not streamed)\n", p->t_cpu * 1e3);
    } else {
        printf(")\n");
    }
}

static void verdict(const ds_plan_loads *l, const ds_plan_prediction *p, double target, const char *what) {
    printf("  tg %g tok/s%s%s: ", target, *what ? " " : "", what);
    if (p->tg_cal >= target) printf("yes (calibrated %.1f, bandwidth bound %.1f)\n", p->tg_cal, p->tg_bw);
    else if (p->tg_bw >= target) printf("only by the bandwidth bound (%.1f); with the measured overheads no (%.1f)\n", p->tg_bw, p->tg_cal);
    else printf("no (bandwidth bound %.1f, calibrated %.1f)\n", p->tg_bw, p->tg_cal);
    if (p->tg_cal >= target) return;
    const double need = ds_plan_cpu_bw_needed(l, p, target);
    double rest = p->t_overhead;
    for (int d = 1; d < l->n_dev; d++) rest += p->t_step[d];
    if (need > 0) printf("    the host would need %.0f GB/s of read bandwidth for it (calibrated)\n", need);
    else printf("    faster host memory alone cannot: the GPU part and the overheads take %.1f of the %.1f ms a token may\n",
                rest * 1e3, 1e3 / target);
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
        else putchar(*s);
    }
    putchar('"');
}

static void json_plan(const char *key, const ds_plan *p, const ds_plan_limits *lim, bool host_fits) {
    printf("  \"%s\": {\"devices\": [", key);
    bool first = true;
    for (int d = 0; d < p->n_dev; d++) {
        if (d > 0 && !p->n_tensors[d] && !p->kv[d]) continue;
        char dn[16];
        printf("%s\n    {\"device\": \"%s\", \"tensors\": %d, \"weights\": %llu, \"kv\": %llu, \"scratch\": %llu, \"step\": %llu, "
               "\"limit\": %llu}", first ? "" : ",", ds_device_name(d, dn, sizeof dn), p->n_tensors[d],
               (unsigned long long)p->weights[d], (unsigned long long)p->kv[d], (unsigned long long)p->scratch[d],
               (unsigned long long)p->step[d], (unsigned long long)(d ? lim->gpu_mem[d - 1] : lim->cpu_mem));
        first = false;
    }
    printf("],\n    \"gpus_fit\": %s, \"host_fits\": %s, \"experts_cpu_layers\": %d}", ds_plan_gpus_fit(p, lim) ? "true" : "false",
           host_fits ? "true" : "false", p->experts_cpu_layers);
}

static void json_pred(const char *key, const ds_plan_prediction *p, double target) {
    printf("  \"%s\": {\"tg_bw\": %.4f, \"tg_calibrated\": %.4f, \"overhead_s\": %.6g, \"ub\": %d, \"pp\": %.4f, "
           "\"pp_experts\": \"%s\", \"t_gpu_s\": %.6g, \"t_host_s\": %.6g, \"t_stream_s\": %.6g, \"t_cpu_s\": %.6g, "
           "\"reaches_target\": %s}", key, p->tg_bw, p->tg_cal, p->t_overhead, p->ub, p->pp,
           p->t_stream < 0 && p->t_cpu == 0 ? "none" : p->streamed ? "streamed" : "cpu", p->t_gpu, p->t_host, p->t_stream,
           p->t_cpu, p->tg_cal >= target ? "true" : "false");
}

/* ---- --emulate ------------------------------------------------------------------------ */

/* pulls "n_prompt"/"n_gen"/"avg_ts" of each bench JSON row */
static void parse_bench_json(const char *s, double *pp, double *tg) {
    *pp = *tg = -1;
    for (const char *p = s; (p = strstr(p, "\"n_prompt\":"));) {
        int np = atoi(p + 11), ng = 0;
        const char *q = strstr(p, "\"n_gen\":"), *a = strstr(p, "\"avg_ts\":");
        if (!q || !a) break;
        ng = atoi(q + 8);
        const double ts = atof(a + 9);
        if (np > 0 && ng == 0) *pp = ts;
        else if (np == 0 && ng > 0) *tg = ts;
        p = a;
    }
}

static int gpus_visible(void) {
#ifdef DSINFER_HAVE_CUDA
    return ds_cuda_device_count();
#else
    return 0;
#endif
}

/* runs bench in this process with the runnable flags, its JSON captured */
static int emulate(const plan_opts *o, const ds_model *m, const ds_plan_choice *c, const flags *f,
                   const ds_plan_loads *l) {
    if (c->mode != DS_PLAN_HOST_ONLY && gpus_visible() < 1) {
        fprintf(stderr, "dsinfer plan: --emulate needs a GPU for this placement: %s\n",
#ifdef DSINFER_HAVE_CUDA
                "no CUDA device is visible"
#else
                "this build has no GPU support (-DDSINFER_CUDA=ON)"
#endif
        );
        return 1;
    }
    char t[16], p[16], n[16], r[16], ub[16], ctx[24];
    snprintf(t, sizeof t, "%d", o->n_threads);
    snprintf(p, sizeof p, "%d", o->n_prompt);
    snprintf(n, sizeof n, "%d", o->n_gen);
    snprintf(r, sizeof r, "%d", o->reps);
    snprintf(ub, sizeof ub, "%d", o->ub);
    snprintf(ctx, sizeof ctx, "%lld", (long long)o->lim.n_ctx);
    char *argv[40];
    int argc = 0;
    argv[argc++] = "bench";
    argv[argc++] = "-m";
    argv[argc++] = (char *)o->model;
    for (int i = 0; i < f->argc; i++) argv[argc++] = f->argv[i];
    char *rest[] = { "-t", t, "-p", p, "-n", n, "-r", r, "-ub", ub, "-c", ctx, "-ctk",
                     (char *)ds_type_info(o->kv_type)->name, "-o", "json" };
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++) argv[argc++] = rest[i];
    argv[argc] = NULL;
    fprintf(stderr, "dsinfer plan: --emulate: dsinfer");
    for (int i = 0; i < argc; i++) fprintf(stderr, " %s", argv[i]);
    fprintf(stderr, "\n");

    /* bench prints its JSON on stdout: catch it in a temporary file */
    FILE *tmp = tmpfile();
    if (!tmp) { fprintf(stderr, "dsinfer plan: --emulate: no temporary file\n"); return 1; }
    fflush(stdout);
    const int saved = dup(STDOUT_FILENO);
    if (saved < 0 || dup2(fileno(tmp), STDOUT_FILENO) < 0) {
        fprintf(stderr, "dsinfer plan: --emulate: cannot redirect stdout\n");
        fclose(tmp);
        return 1;
    }
    const int rc = ds_cmd_bench(argc, argv);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    long len = ftell(tmp);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (buf) {
        rewind(tmp);
        len = (long)fread(buf, 1, (size_t)len, tmp);
        buf[len] = 0;
    }
    fclose(tmp);
    if (rc || !buf) {
        free(buf);
        fprintf(stderr, "dsinfer plan: --emulate: bench failed (exit %d)\n", rc);
        return 1;
    }
    double pp, tg;
    parse_bench_json(buf, &pp, &tg);
    free(buf);
    /* bench's prefill of -p tokens runs in micro-batches of min(-p, -ub) rows */
    const int mb = o->n_prompt > 0 && o->n_prompt < o->ub ? o->n_prompt : o->ub;
    ds_plan_prediction pr;
    ds_plan_predict(l, &o->hw, mb, &pr);
    printf("\nemulated here (bench -p %d -n %d -r %d, the placement above):\n", o->n_prompt, o->n_gen, o->reps);
    printf("  %-24s %12s %12s %12s\n", "", "predicted", "calibrated", "measured");
    if (tg >= 0) printf("  %-24s %12.2f %12.2f %12.2f\n", "tg tok/s", pr.tg_bw, pr.tg_cal, tg);
    char lab[32];
    snprintf(lab, sizeof lab, "pp tok/s (ub %d)", mb);
    if (pp >= 0) printf("  %-24s %12s %12.2f %12.2f\n", lab, "", pr.pp, pp);
    printf("  (predictions use the bandwidths given to plan, not this machine's: pass bench's measured\n"
           "   host and GPU bandwidths as --cpu-bw/--gpu-bw to compare like with like)\n");
    return 0;
}

/* ---- command ------------------------------------------------------------------------------ */

int ds_cmd_plan(int argc, char **argv) {
    plan_opts o;
    memset(&o, 0, sizeof o);
    o.hw.cpu_bw = 100;
    o.hw.pcie_bw = 25;
    o.hw.gpu_tflops = DS_PLAN_GPU_TFLOPS;
    o.hw.cpu_tflops = DS_PLAN_CPU_TFLOPS;
    o.lim.n_ctx = 4096;
    o.lim.gpu_margin = (uint64_t)1 << 30;
    o.ub = 512;
    o.kv_type = DS_TYPE_F16;
    o.target = 20;
    o.n_prompt = 512, o.n_gen = 64, o.reps = 2;
    int pr = parse(argc, argv, &o);
    if (pr) return pr < 0 ? 0 : pr;

    ds_model *m = NULL;
    ds_error err = { 0 };
    ds_model_params mp = { .path = o.model };
    ds_status st = ds_model_load(&mp, &m, &err);
    if (st) {
        fprintf(stderr, "dsinfer plan: cannot load model: %s\n", err.msg);
        return ds_cli_exit_code(st);
    }
    o.lim.gpu_scratch = ds_cuda_scratch_bytes(&m->hp, o.ub);
    ds_plan_choice c;
    ds_plan_loads lf, lr;
    ds_plan_prediction pf, prr;
    if ((st = ds_plan_choose(m, &o.lim, &c, &err))) goto fail;
    /* loads of the full placement, then of the runnable one (left applied) */
    ds_plan scratch_plan;
    if ((st = ds_plan_eval(m, &c.spec, &o.lim, &scratch_plan, &err))) goto fail;
    ds_plan_loads_compute(m, &c.plan, &lf);
    if ((st = ds_plan_eval(m, &c.run_spec, &o.lim, &scratch_plan, &err))) goto fail;
    ds_plan_loads_compute(m, &c.run_plan, &lr);
    ds_plan_predict(&lf, &o.hw, o.ub, &pf);
    ds_plan_predict(&lr, &o.hw, o.ub, &prr);
    bool multi = false; /* the full placement uses a GPU beyond CUDA0 */
    for (int d = 2; d < c.plan.n_dev; d++) multi |= c.plan.weights[d] + c.plan.kv[d] > 0;
    flags ff, fr;
    make_flags(m, &c, false, &ff);
    make_flags(m, &c, true, &fr);
    uint64_t total = 0;
    for (int64_t i = 0; i < ds_gguf_n_tensors(m->gguf); i++) total += ds_gguf_tensor_at(m->gguf, i)->nbytes;

    if (o.json) {
        printf("{\n  \"model\": ");
        json_str(m->name);
        printf(", \"n_layer\": %d, \"n_moe\": %d, \"bytes\": %llu,\n", m->hp.n_layer, c.n_moe, (unsigned long long)total);
        printf("  \"n_ctx\": %lld, \"ub\": %d, \"kv_type\": \"%s\", \"gpu_margin\": %llu, \"target\": %g,\n",
               (long long)o.lim.n_ctx, o.ub, ds_type_info(o.kv_type)->name, (unsigned long long)o.lim.gpu_margin, o.target);
        printf("  \"mode\": \"%s\", \"n_gpu_layers\": %d, \"multi_gpu\": %s,\n  \"flags\": ", mode_name(c.mode),
               c.n_gpu_layers, multi ? "true" : "false");
        json_str(ff.shell);
        printf(",\n  \"run_flags\": ");
        json_str(fr.shell);
        printf(",\n");
        json_plan("plan", &c.plan, &o.lim, c.host_fits);
        printf(",\n");
        json_pred("prediction", &pf, o.target);
        printf(",\n");
        json_plan("run_plan", &c.run_plan, &o.lim, c.run_host_fits);
        printf(",\n");
        json_pred("run_prediction", &prr, o.target);
        printf("\n}\n");
    } else {
        printf("model:    %s: %d layers (%d dense, %d MoE), %.3f GiB\n", m->name, m->hp.n_layer, m->hp.n_layer - c.n_moe,
               c.n_moe, total / GIB);
        printf("machine: ");
        for (int g = 0; g < o.lim.n_gpu; g++)
            printf(" CUDA%d %.2f GiB at %g GB/s%s;", g, o.lim.gpu_mem[g] / GIB, o.hw.gpu_bw[g], o.gpu_bw_given ? "" : " (default)");
        if (o.lim.cpu_mem) printf(" host %.1f GiB", o.lim.cpu_mem / GIB);
        else printf(" host (RAM not given)");
        printf(" at %g GB/s%s; PCIe %g GB/s%s\n", o.hw.cpu_bw, o.cpu_bw_given ? "" : " (default)", o.hw.pcie_bw,
               o.pcie_bw_given ? "" : " (default)");
        printf("          prefill matmul rates GPU %.2f, CPU %.2f TFLOP/s%s\n", o.hw.gpu_tflops, o.hw.cpu_tflops,
               o.tflops_given ? "" : " (default: dsinfer on our H200 host, 16 cores)");
        printf("settings: -c %lld, -ub %d, KV %s\n\n", (long long)o.lim.n_ctx, o.ub, ds_type_info(o.kv_type)->name);
        explain(m, &c, &o);
        ds_plan_print(&c.plan, stdout);
        print_fit(&c.plan, &o.lim, c.host_fits);
        if (multi) {
            printf("\nprediction with every GPU (not reached yet: several GPUs run block by block, without the fast "
                   "one-GPU path):\n");
            printf("  flags: %s\n", ff.shell);
            print_prediction(&lf, &pf, &o);
            printf("\nthe fast path today: CUDA0's share on CUDA0, the rest of the routed experts on the host:\n");
            ds_plan_print(&c.run_plan, stdout);
            print_fit(&c.run_plan, &o.lim, c.run_host_fits);
        }
        printf("\ncommand:  dsinfer run -m %s%s%s -c %lld%s\n", o.model, fr.argc ? " " : "", fr.shell, (long long)o.lim.n_ctx,
               o.kv_type != DS_TYPE_F16 ? (o.kv_type == DS_TYPE_F32 ? " -ctk f32" : " -ctk bf16") : "");
        if (o.lim.n_gpu > 1 && !multi) printf("          (CUDA0 holds it all: the other GPUs are not needed)\n");
        printf("\nprediction%s (formulas: docs/hybrid.md, \"Planning\"; KV reads at depth 0 left out):\n", multi ? ", the fast path today" : "");
        print_prediction(&lr, &prr, &o);
        printf("\nverdict:\n");
        if (!c.run_host_fits) printf("  the host lacks the RAM for its part: this placement does not fit (see memory above)\n");
        if (!c.gpu_fits) printf("  no GPU placement fits: host only\n");
        verdict(&lr, &prr, o.target, multi ? "(the fast path today, CUDA0)" : "");
        if (multi) verdict(&lf, &pf, o.target, "(with every GPU)");
    }
    int rc = 0;
    if (o.emulate) rc = emulate(&o, m, &c, &fr, &lr);
    ds_model_free(m);
    return rc;
fail:
    fprintf(stderr, "dsinfer plan: %s\n", err.msg);
    ds_model_free(m);
    return 1;
}
