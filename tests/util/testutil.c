/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

int ds_test_passed, ds_test_failed;

int ds_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, ds_test_passed, ds_test_failed);
    return ds_test_failed ? 1 : 0;
}

static const char *join(const char *env, const char *fallback, const char *rel, int slot) {
    static char buf[4][4096];
    const char *dir = getenv(env);
    if (!dir) dir = fallback;
    snprintf(buf[slot & 3], sizeof buf[0], "%s/%s", dir, rel);
    return buf[slot & 3];
}

const char *ds_test_data(const char *rel) {
    static int slot;
    return join("DS_TEST_DATA", "tests/data", rel, slot++);
}

const char *ds_test_tmp(const char *rel) {
    static int slot;
    return join("DS_TEST_TMP", "/tmp", rel, slot++);
}

void *ds_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
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
