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
