/* sys.c: monotonic time, aligned allocation, cpu count. */
#define _GNU_SOURCE
#include "core.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

double ds_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void *ds_aligned_alloc(size_t size) {
    void *p = NULL;
    if (size == 0) size = 64;
    if (posix_memalign(&p, 64, size) != 0) return NULL;
    return p;
}

void ds_aligned_free(void *p) { free(p); }

int ds_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static ds_progress_fn g_progress_fn;
static void *g_progress_ctx;

void ds_progress_listen(ds_progress_fn fn, void *ctx) {
    g_progress_ctx = ctx;
    g_progress_fn = fn;
}

void ds_progress_report(uint64_t done, uint64_t total) {
    if (g_progress_fn) g_progress_fn(g_progress_ctx, done, total);
}
