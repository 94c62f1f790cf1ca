/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

int ds_test_passed, ds_test_failed;

int ds_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, ds_test_passed, ds_test_failed);
    return ds_test_failed ? 1 : 0;
}

static const char *join(char (*buf)[4096], const char *env, const char *fallback, const char *rel, int slot) {
    const char *dir = getenv(env);
    if (!dir) dir = fallback;
    snprintf(buf[slot & 3], sizeof buf[0], "%s/%s", dir, rel);
    return buf[slot & 3];
}

const char *ds_test_data(const char *rel) {
    static char buf[4][4096];
    static int slot;
    return join(buf, "DS_TEST_DATA", "tests/data", rel, slot++);
}

const char *ds_test_tmp(const char *rel) {
    static char buf[4][4096];
    static int slot;
    return join(buf, "DS_TEST_TMP", "/tmp", rel, slot++);
}

void *ds_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)(n > 0 ? n : 0) + 1); /* +1: always NUL-terminated, so text files are C strings */
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = 0;
    fclose(f);
    if (buf && len) *len = (size_t)n;
    return buf;
}

uint64_t ds_test_rand(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

float ds_test_randf(uint64_t *s) {
    return (float)((ds_test_rand(s) >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0);
}

double ds_test_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- cases.h ---- */
#include "cases.h"

#include <string.h>

int ds_test_case_tokens(const char *json_path, const char *name, int32_t *out, int cap) {
    size_t len;
    char *s = ds_test_read_file(json_path, &len);
    if (!s) return -1;
    char key[64];
    snprintf(key, sizeof key, "\"%s\"", name);
    char *p = strstr(s, key);
    int n = -1;
    if (p && (p = strchr(p, '['))) {
        n = 0;
        p++;
        while (*p && *p != ']') {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) { p++; continue; }
            if (n < cap) out[n] = (int32_t)v;
            n++;
            p = end;
        }
        if (n > cap) n = cap;
    }
    free(s);
    return n;
}

ds_model *ds_test_load_model(const char *rel) {
    ds_model *m = NULL;
    ds_error err = { 0 };
    ds_model_params mp = { .path = ds_test_data(rel) };
    if (ds_model_load(&mp, &m, &err)) {
        CHECK(0, "load %s: %s", rel, err.msg);
        return NULL;
    }
    return m;
}

/* "cuda/ref": device cuda with "ref" running the GPU-placed blocks (the
 * placement dispatch, testable without a GPU); otherwise the device name */
static void set_device(ds_ctx_params *p, const char *device) {
    static char dev[32];
    const char *slash = strchr(device, '/');
    if (!slash) {
        p->device = device;
        return;
    }
    snprintf(dev, sizeof dev, "%.*s", (int)(slash - device), device);
    p->device = dev;
    p->gpu_backend = slash + 1;
}

float *ds_test_prefill(const ds_model *m, const char *device, ds_type kv, int ubatch, int threads,
                       const int32_t *ids, int n, int32_t *record, const int32_t *force, float *margins) {
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    set_device(&p, device);
    p.kv_type = kv;
    p.n_ubatch = ubatch;
    p.n_threads = threads;
    p.n_ctx = n;
    ds_ctx *c;
    ds_error err = { 0 };
    if (ds_ctx_create(m, &p, &c, &err)) {
        fprintf(stderr, "ctx: %s\n", err.msg);
        return NULL;
    }
    if (record || force) ds_ctx_set_routing(c, n, record, force, margins);
    float *logits = malloc((size_t)n * m->hp.n_vocab * sizeof *logits);
    int32_t *pos = malloc((size_t)n * sizeof *pos), *seq = calloc((size_t)n, sizeof *seq);
    for (int i = 0; i < n; i++) pos[i] = i;
    ds_batch b = { n, ids, pos, seq, NULL, NULL };
    if (!logits || ds_ctx_decode(c, &b, logits, &err)) {
        fprintf(stderr, "decode: %s\n", err.msg);
        free(logits);
        logits = NULL;
    }
    free(pos);
    free(seq);
    ds_ctx_free(c);
    return logits;
}

float *ds_test_decode_steps(const ds_model *m, const char *device, ds_type kv, int kv_block, int threads,
                            const int32_t *ids, int n) {
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    set_device(&p, device);
    p.kv_type = kv;
    p.n_ctx = n;
    p.n_threads = threads;
    if (kv_block > 0) p.kv_block = kv_block;
    return ds_test_decode_steps_p(m, &p, ids, n);
}

float *ds_test_decode_steps_p(const ds_model *m, const ds_ctx_params *p, const int32_t *ids, int n) {
    return ds_test_decode_steps_pinned(m, p, ids, n, NULL);
}

float *ds_test_decode_steps_pinned(const ds_model *m, const ds_ctx_params *p, const int32_t *ids, int n,
                                   const int32_t *route) {
    ds_ctx *c;
    ds_error err = { 0 };
    if (ds_ctx_create(m, p, &c, &err)) {
        fprintf(stderr, "ctx: %s\n", err.msg);
        return NULL;
    }
    const size_t V = (size_t)m->hp.n_vocab;
    const int L = m->hp.n_layer, k = m->hp.n_expert_used;
    float *logits = malloc((size_t)n * V * sizeof *logits);
    int32_t *force = route ? malloc((size_t)L * k * sizeof *force) : NULL;
    for (int i = 0; i < n && logits; i++) {
        if (force) { /* step i's experts: row i of each layer's [n][k] record */
            for (int il = 0; il < L; il++)
                memcpy(force + (size_t)il * k, route + ((size_t)il * n + i) * k, (size_t)k * sizeof *force);
            ds_ctx_set_routing(c, 1, NULL, force, NULL);
        }
        int32_t pos = i, seq = 0;
        ds_batch b = { 1, ids + i, &pos, &seq, NULL, NULL };
        if (ds_ctx_decode(c, &b, logits + (size_t)i * V, &err)) {
            fprintf(stderr, "decode step %d: %s\n", i, err.msg);
            free(logits);
            logits = NULL;
        }
    }
    free(force);
    ds_ctx_free(c);
    return logits;
}

int ds_test_greedy(const ds_model *m, const ds_ctx_params *p, const int32_t *ids, int n, int steps, int32_t *out,
                   float *logits) {
    ds_ctx *c;
    ds_error err = { 0 };
    if (n < 1 || ds_ctx_create(m, p, &c, &err)) {
        fprintf(stderr, "greedy ctx: %s\n", n < 1 ? "empty prompt" : err.msg);
        return -1;
    }
    const size_t V = (size_t)m->hp.n_vocab;
    int rc = 0;
    int32_t *pos = malloc((size_t)n * sizeof *pos), *seq = calloc((size_t)n, sizeof *seq);
    bool *want = calloc((size_t)n, sizeof *want);
    if (!pos || !seq || !want) rc = -1;
    for (int i = 0; i < n && !rc; i++) pos[i] = i;
    if (!rc) {
        want[n - 1] = true; /* the prompt's last row only */
        ds_batch b = { n, ids, pos, seq, want, NULL };
        if (ds_ctx_decode(c, &b, logits, &err)) {
            fprintf(stderr, "greedy prefill: %s\n", err.msg);
            rc = -1;
        }
    }
    for (int i = 0; i < steps && !rc; i++) {
        out[i] = (int32_t)ds_argmax_f32(logits + (size_t)i * V, V);
        if (i + 1 == steps) break;
        int32_t ps = n + i, sq = 0;
        ds_batch b = { 1, out + i, &ps, &sq, NULL, NULL };
        if (ds_ctx_decode(c, &b, logits + (size_t)(i + 1) * V, &err)) {
            fprintf(stderr, "greedy step %d: %s\n", i, err.msg);
            rc = -1;
        }
    }
    free(pos);
    free(seq);
    free(want);
    ds_ctx_free(c);
    return rc;
}

static int cmp_double(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

ds_test_greedy_cmp ds_test_greedy_compare(const int32_t *a, const float *la, const int32_t *b, const float *lb,
                                          int steps, size_t n_vocab) {
    ds_test_greedy_cmp r = { 0, 0, 0, 0, 0 };
    while (r.first_diff < steps && a[r.first_diff] == b[r.first_diff]) r.first_diff++;
    const int upto = r.first_diff < steps ? r.first_diff + 1 : steps;
    double *rel = malloc((size_t)(upto > 0 ? upto : 1) * sizeof *rel);
    for (int i = 0; i < upto && rel; i++) {
        rel[i] = ds_test_rel_l2(lb + (size_t)i * n_vocab, la + (size_t)i * n_vocab, n_vocab);
        if (rel[i] > r.rel_max) r.rel_max = rel[i];
    }
    if (rel && upto > 0) {
        qsort(rel, (size_t)upto, sizeof *rel, cmp_double);
        r.rel_median = rel[upto / 2];
    }
    free(rel);
    if (r.first_diff < steps) {
        const float *x = la + (size_t)r.first_diff * n_vocab, *y = lb + (size_t)r.first_diff * n_vocab;
        r.margin = (double)x[a[r.first_diff]] - x[b[r.first_diff]];
        for (size_t j = 0; j < n_vocab; j++) {
            const double d = fabs((double)x[j] - y[j]);
            if (d > r.max_diff) r.max_diff = d;
        }
    }
    return r;
}

void ds_test_greedy_pair(const ds_model *m, const char *label, const char *a, const char *b, const int32_t *ids,
                         int n, int steps, double bound) {
    const size_t V = (size_t)m->hp.n_vocab;
    int32_t *ta = malloc((size_t)steps * sizeof *ta), *tb = malloc((size_t)steps * sizeof *tb);
    float *la = malloc((size_t)steps * V * sizeof *la), *lb = malloc((size_t)steps * V * sizeof *lb);
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    p.n_ctx = n + steps;
    p.n_threads = 2;
    set_device(&p, a);
    const int ra = ta && tb && la && lb ? ds_test_greedy(m, &p, ids, n, steps, ta, la) : -1;
    set_device(&p, b);
    const int rb = ra == 0 ? ds_test_greedy(m, &p, ids, n, steps, tb, lb) : -1;
    CHECK(ra == 0 && rb == 0, "%s greedy runs on %s and %s", label, a, b);
    if (ra == 0 && rb == 0) {
        const ds_test_greedy_cmp r = ds_test_greedy_compare(ta, la, tb, lb, steps, V);
        printf("%s: %d greedy tokens, %s vs %s: the same for %d; logits rel L2 median %.2e, max %.2e", label, steps, b,
               a, r.first_diff, r.rel_median, r.rel_max);
        if (r.first_diff < steps)
            printf("; at step %d %s's margin over %s's pick %.3e, largest logit difference %.3e", r.first_diff, a, b,
                   r.margin, r.max_diff);
        printf("\n");
        /* Where the picks part, a's margin is at most the two picks' logit
         * shifts (|da| + |db| <= 2 max_diff): any parting is "explained" there,
         * so what is checked is that the logits up to it are close. */
        CHECK(r.rel_median <= bound, "%s greedy %s vs %s: median step rel L2 %.3e", label, b, a, r.rel_median);
    }
    free(ta);
    free(tb);
    free(la);
    free(lb);
}

void ds_test_cuda_f32(void) {
    setenv("DSINFER_GEMV_Q8", "0", 1);
    setenv("DSINFER_GEMM_MIN_ROWS", "0", 1);
    setenv("DSINFER_CUDA_MLA_TC", "0", 1);
}

/* DS_TEST_GEMV_Q8=1 in the environment: the tensor-core and default runs
 * use the int8 decode GEMV too */
static void gemv_q8_as_asked(void) {
    const char *q = getenv("DS_TEST_GEMV_Q8");
    if (q) setenv("DSINFER_GEMV_Q8", q, 1);
    else unsetenv("DSINFER_GEMV_Q8");
}

void ds_test_cuda_tc(int gemm_min_rows) {
    gemv_q8_as_asked();
    char v[16];
    snprintf(v, sizeof v, "%d", gemm_min_rows);
    setenv("DSINFER_GEMM_MIN_ROWS", v, 1);
    unsetenv("DSINFER_CUDA_MLA_TC");
}

void ds_test_cuda_default(void) {
    gemv_q8_as_asked();
    unsetenv("DSINFER_GEMM_MIN_ROWS");
    unsetenv("DSINFER_CUDA_MLA_TC");
}
