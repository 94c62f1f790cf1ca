/* args.c: option parsing shared by the subcommands. */
#include "cli.h"

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
    } else if (is(a, "-ngl", "--n-gpu-layers") || is(a, "-ts", "--tensor-split") || is(a, "-sm", "--split-mode") ||
               is(a, "-ot", "--override-tensor") || is(a, "--n-cpu-moe", NULL)) {
        if (!(v = ds_cli_value(argc, argv, i))) return -1;
        fprintf(stderr, "dsinfer: note: %s %s accepted; this build places every tensor on the cpu\n", a, v);
    } else if (is(a, "--cpu-moe", NULL) || is(a, "--mlock", NULL) || is(a, "--no-mmap", NULL)) {
        fprintf(stderr, "dsinfer: note: %s accepted; this build places every tensor on the cpu\n", a);
    } else {
        return 0;
    }
    return 1;
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
    if (!c) return DS_OK;
    ds_ctx_params cp;
    ds_ctx_params_default(&cp);
    cp.device = o->device;
    cp.n_threads = o->n_threads;
    cp.n_ctx = o->n_ctx;
    cp.n_seq = n_seq;
    cp.n_ubatch = o->n_ubatch < o->n_batch ? o->n_ubatch : o->n_batch;
    cp.kv_type = o->kv_type;
    if ((st = ds_ctx_create(*m, &cp, c, &err))) {
        fprintf(stderr, "dsinfer: cannot create the context: %s\n", err.msg);
        ds_model_free(*m);
        *m = NULL;
    }
    return st;
}
