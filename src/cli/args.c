/* args.c: option parsing shared by the subcommands. */
#include "cli.h"
#include "../backend/cuda_scratch.h"
#ifdef DSINFER_HAVE_CUDA
#include "../backend/cuda/cuda_backend.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ds_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dsinfer %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

const char *ds_cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "dsinfer: option %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

bool ds_cli_int(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "dsinfer: bad value '%s' for %s (expected an integer in %lld..%lld)\n", s, flag,
                (long long)lo, (long long)hi);
        return false;
    }
    *out = v;
    return true;
}

bool ds_cli_float(const char *flag, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v != v) {
        fprintf(stderr, "dsinfer: bad value '%s' for %s (expected a number)\n", s, flag);
        return false;
    }
    *out = v;
    return true;
}

void ds_cli_model_opts_init(ds_cli_model_opts *o) {
    memset(o, 0, sizeof *o);
    o->device = "cpu";
    o->n_ctx = 4096;
    o->n_batch = 2048;
    o->n_ubatch = 512;
    o->kv_type = DS_TYPE_F16;
    ds_placement_spec_init(&o->place);
}


/* a placement error (already formatted) as a usage error */
static int place_err(ds_status st, const ds_error *e) {
    if (!st) return 1;
    fprintf(stderr, "dsinfer: %s\n", e->msg);
    return -1;
}

static bool is(const char *a, const char *x, const char *y) { return strcmp(a, x) == 0 || (y && strcmp(a, y) == 0); }

int ds_cli_model_opt(ds_cli_model_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    int64_t n;
    if (is(a, "-m", "--model")) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        o->model = v;
    } else if (is(a, "-t", "--threads")) {
        if (!(v = ds_cli_value(argc, argv, i)) || !ds_cli_int(a, v, 0, 4096, &n)) return -1;
        o->n_threads = (int)n;
    } else if (is(a, "--device", "-dev")) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        if (strcmp(v, "ref") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
            fprintf(stderr, "dsinfer: unknown device '%s' (ref, cpu, cuda)\n", v);
            return -1;
        }
        o->device = v;
    } else if (is(a, "-c", "--ctx-size")) {
        if (!(v = ds_cli_value(argc, argv, i)) || !ds_cli_int(a, v, 1, (int64_t)1 << 30, &n)) return -1;
        o->n_ctx = n;
    } else if (is(a, "-b", "--batch-size")) {
        if (!(v = ds_cli_value(argc, argv, i)) || !ds_cli_int(a, v, 1, 1 << 20, &n)) return -1;
        o->n_batch = (int)n;
    } else if (is(a, "-ub", "--ubatch-size")) {
        if (!(v = ds_cli_value(argc, argv, i)) || !ds_cli_int(a, v, 1, 1 << 16, &n)) return -1;
        o->n_ubatch = (int)n;
    } else if (is(a, "-ctk", "--cache-type-k")) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        int t = ds_type_from_name(v);
        if (t != DS_TYPE_F32 && t != DS_TYPE_F16 && t != DS_TYPE_BF16) {
            fprintf(stderr, "dsinfer: unsupported KV cache type '%s' (f32, f16, bf16)\n", v);
            return -1;
        }
        o->kv_type = (ds_type)t;
    } else if (is(a, "-ctv", "--cache-type-v")) {
        /* MLA keeps one latent cache: V is the first kv_lora values of K */
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        fprintf(stderr, "dsinfer: note: %s ignored: MLA caches one latent row (values are part of it); use -ctk\n", a);
    } else if (is(a, "--override-kv", NULL)) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        if (o->n_overrides == DS_CLI_MAX_OVERRIDES) {
            fprintf(stderr, "dsinfer: too many --override-kv (max %d)\n", DS_CLI_MAX_OVERRIDES);
            return -1;
        }
        o->overrides[o->n_overrides++] = v;
    } else if (is(a, "-fa", "--flash-attn")) {
        /* older llama.cpp: a bare flag; newer: -fa on|off|auto */
        static const char *vals[] = { "on", "off", "auto", "1", "0", "true", "false" };
        v = "on";
        for (size_t k = 0; *i + 1 < argc && k < sizeof vals / sizeof *vals; k++)
            if (!strcmp(argv[*i + 1], vals[k])) { v = argv[++*i]; break; }
        fprintf(stderr, "dsinfer: note: %s %s accepted; MLA attention is always fused here\n", a, v);
    } else if (is(a, "-ngl", "--n-gpu-layers") || is(a, "--gpu-layers", NULL)) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        if (!strcmp(v, "all") || !strcmp(v, "auto")) n = 9999; /* newer llama.cpp spellings */
        else if (!ds_cli_int(a, v, 0, 100000, &n)) return -1;
        o->place.n_gpu_layers = (int)n;
    } else if (is(a, "-ot", "--override-tensor")) {
        ds_error e = { 0 };
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        return place_err(ds_placement_add_ot(&o->place, v, &e), &e);
    } else if (is(a, "--cpu-moe", "-cmoe")) {
        ds_error e = { 0 };
        return place_err(ds_placement_add_cpu_moe(&o->place, &e), &e);
    } else if (is(a, "--n-cpu-moe", "-ncmoe")) {
        ds_error e = { 0 };
        if (!(v = ds_cli_value(argc, argv, i)) || !ds_cli_int(a, v, 0, DS_MAX_LAYERS, &n)) return -1;
        return place_err(ds_placement_add_n_cpu_moe(&o->place, (int)n, &e), &e);
    } else if (is(a, "-ts", "--tensor-split")) {
        ds_error e = { 0 };
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        return place_err(ds_placement_parse_split(&o->place, v, &e), &e);
    } else if (is(a, "-sm", "--split-mode")) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        if (strcmp(v, "none") && strcmp(v, "layer") && strcmp(v, "row") && strcmp(v, "graph")) {
            fprintf(stderr, "dsinfer: unknown split mode '%s' (none, layer, row, graph)\n", v);
            return -1;
        }
        if (strcmp(v, "none") && strcmp(v, "layer"))
            fprintf(stderr, "dsinfer: note: -sm %s (tensor parallel) is not implemented yet; layers are split instead\n", v);
    } else if (is(a, "-mg", "--main-gpu")) {
        if (!(v = ds_cli_value(argc, argv, i)) || !ds_cli_int(a, v, 0, 0, &n)) return -1;
    } else if (is(a, "--gpu-experts", NULL)) {
        if (!(v = ds_cli_value(argc, argv, i)) || !ds_cli_int(a, v, 0, DS_MAX_EXPERTS, &n)) return -1;
        o->gpu_experts = (int)n;
    } else if (is(a, "--expert-profile", NULL)) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        o->expert_profile = v;
    } else if (is(a, "--mlock", NULL)) {
        o->mlock = true;
    } else if (is(a, "--no-mmap", NULL)) {
        o->no_mmap = true;
    } else {
        return 0;
    }
    return 1;
}

uint64_t ds_cli_gpu_scratch(const ds_model *m, int ub) {
    return ds_cuda_scratch_bytes(&m->hp, ub) + ds_placement_stream_bytes(m);
}

/* -ngl as given, or all layers with --device cuda, none otherwise */
static ds_placement_spec effective_spec(const ds_cli_model_opts *o) {
    ds_placement_spec s = o->place;
    if (s.n_gpu_layers < 0) s.n_gpu_layers = !strcmp(o->device, "cuda") ? 9999 : 0;
    return s;
}

ds_status ds_cli_place(const ds_cli_model_opts *o, ds_model *m, int n_gpus) {
    if (n_gpus < 0) {
#ifdef DSINFER_HAVE_CUDA
        n_gpus = ds_cuda_device_count();
#else
        n_gpus = 0;
#endif
    }
    ds_error err = { 0 };
    ds_placement_spec s = effective_spec(o);
    /* as llama.cpp: -ngl without a GPU is ignored, said once (--device cuda is not) */
    if (n_gpus == 0 && s.n_gpu_layers > 0 && strcmp(o->device, "cuda")) {
        fprintf(stderr, "dsinfer: note: -ngl %d ignored: %s\n", s.n_gpu_layers,
#ifdef DSINFER_HAVE_CUDA
                "no CUDA device is visible"
#else
                "this build has no GPU support (-DDSINFER_CUDA=ON)"
#endif
        );
        s.n_gpu_layers = 0;
    }
    ds_status st = ds_placement_apply(m, &s, n_gpus, &err);
    if (st) fprintf(stderr, "dsinfer: placement: %s\n", err.msg);
    return st;
}

/* --mlock: pins the pages of every host-resident weight */
static ds_status lock_host_weights(const ds_model *m) {
    ds_error err = { 0 };
    uint64_t bytes = 0;
    ds_status st = ds_placement_lock_host(m, &bytes, &err);
    if (st) fprintf(stderr, "dsinfer: --mlock: %s\n", err.msg);
    else fprintf(stderr, "dsinfer: --mlock: %.2f GiB of host-resident weights locked in RAM\n", bytes / 1073741824.0);
    return st;
}

/* does the command line ask for a GPU (beyond --device)? */
static bool wants_gpu(const ds_cli_model_opts *o) {
    if (o->place.n_gpu_layers > 0) return true;
    for (int i = 0; i < o->place.n_ot; i++)
        if (o->place.ot[i].device != DS_DEV_CPU) return true;
    return false;
}

/* --no-mmap: host-resident weights out of the file mapping */
static ds_status copy_host_weights(const ds_cli_model_opts *o, ds_model *m) {
    ds_error err = { 0 };
    uint64_t bytes = 0;
    const double t0 = ds_time_s();
    ds_status st = ds_placement_copy_host(m, o->n_threads > 0 ? o->n_threads : ds_cpu_count(), &bytes, &err);
    if (st) fprintf(stderr, "dsinfer: %s\n", err.msg);
    else fprintf(stderr, "dsinfer: --no-mmap: %.2f GiB of host-resident weights copied to huge-page memory in %.1f s\n",
                 bytes / 1073741824.0, ds_time_s() - t0);
    return st;
}

ds_status ds_cli_prepare(const ds_cli_model_opts *o, ds_model *m, const char **device) {
    *device = o->device;
    ds_status st;
    if (!strcmp(o->device, "ref") || (!strcmp(o->device, "cpu") && !wants_gpu(o))) {
        if (o->no_mmap && (st = copy_host_weights(o, m))) return st;
        if (o->mlock && (st = lock_host_weights(m))) return st;
        return DS_OK;
    }
    if ((st = ds_cli_place(o, m, -1))) return st;
    /* a placement that puts anything on a GPU runs through the cuda device */
    *device = ds_placement_uses_gpu(m) ? "cuda" : "cpu";
    if (!o->quiet_plan && ds_placement_uses_gpu(m)) {
        ds_plan p;
        const int ub = o->n_ubatch < o->n_batch ? o->n_ubatch : o->n_batch;
        ds_plan_compute(m, o->n_ctx, o->kv_type == DS_TYPE_F32 ? 4 : 2, ds_cli_gpu_scratch(m, ub), &p);
        ds_plan_print(&p, stderr);
    }
    if (o->no_mmap && (st = copy_host_weights(o, m))) return st;
    if (o->mlock && (st = lock_host_weights(m))) return st;
    return DS_OK;
}

ds_status ds_cli_load(const ds_cli_model_opts *o, ds_model **m, ds_ctx **c, int n_seq) {
    ds_error err = { 0 };
    *m = NULL;
    if (c) *c = NULL;
    ds_model_params mp = { .path = o->model, .overrides = o->overrides, .n_overrides = o->n_overrides };
    ds_status st = ds_model_load(&mp, m, &err);
    if (st) {
        fprintf(stderr, "dsinfer: cannot load model: %s\n", err.msg);
        return st;
    }
    if (!c) return DS_OK; /* the caller places (info plans for GPUs it may not have) */
    const char *device;
    if ((st = ds_cli_prepare(o, *m, &device))) goto fail;
    ds_ctx_params cp;
    ds_ctx_params_default(&cp);
    /* a placement that puts anything on a GPU runs through the cuda device */
    cp.device = device;
    cp.n_threads = o->n_threads;
    cp.n_ctx = o->n_ctx;
    cp.n_seq = n_seq;
    cp.n_ubatch = o->n_ubatch < o->n_batch ? o->n_ubatch : o->n_batch;
    cp.kv_type = o->kv_type;
    cp.gpu_experts = o->gpu_experts;
    cp.expert_profile = o->expert_profile;
    if ((st = ds_ctx_create(*m, &cp, c, &err))) {
        fprintf(stderr, "dsinfer: cannot create the context: %s\n", err.msg);
        goto fail;
    }
    return DS_OK;
fail:
    ds_model_free(*m);
    *m = NULL;
    return st;
}
