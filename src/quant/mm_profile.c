/* mm_profile.c: DSINFER_CPU_PROFILE=1 — time every CPU matmul by shape
 * (weight type, K, M, activation rows) and print a table at exit, sorted by
 * time, with the MAC rate of each shape. For finding which products a
 * prefill spends its time in; off (one relaxed load per call) otherwise. */
#include "dot_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ds_type wt;
    int64_t K, M, n_rows;
    bool serial;
    long long calls;
    double s;
} mm_prof_ent;

enum { MM_PROF_CAP = 256 };
static mm_prof_ent g_ent[MM_PROF_CAP];
static int g_n;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_on = -1; /* -1 = not read yet */

static int ent_cmp(const void *a, const void *b) {
    const mm_prof_ent *x = a, *y = b;
    return x->s < y->s ? 1 : x->s > y->s ? -1 : 0;
}

static void mm_prof_print(void) {
    qsort(g_ent, (size_t)g_n, sizeof *g_ent, ent_cmp);
    double tot = 0;
    for (int i = 0; i < g_n; i++) tot += g_ent[i].s;
    fprintf(stderr, "\n# CPU matmul profile (DSINFER_CPU_PROFILE): %.1f ms in %d shapes\n", tot * 1e3, g_n);
    fprintf(stderr, "# %-8s %7s %7s %5s %-6s %8s %10s %6s %9s\n", "type", "K", "M", "rows", "call", "calls",
            "ms", "share", "GMAC/s");
    for (int i = 0; i < g_n; i++) {
        const mm_prof_ent *e = &g_ent[i];
        double macs = (double)e->K * (double)e->M * (double)e->n_rows * (double)e->calls;
        fprintf(stderr, "  %-8s %7lld %7lld %5lld %-6s %8lld %10.2f %5.1f%% %9.2f\n", ds_type_info(e->wt)->name,
                (long long)e->K, (long long)e->M, (long long)e->n_rows, e->serial ? "serial" : "pool", e->calls,
                e->s * 1e3, tot > 0 ? 100 * e->s / tot : 0, e->s > 0 ? macs / e->s * 1e-9 : 0);
    }
}

bool ds_mm_prof_on(void) {
    int on = __atomic_load_n(&g_on, __ATOMIC_RELAXED);
    if (on >= 0) return on;
    pthread_mutex_lock(&g_mu);
    on = g_on;
    if (on < 0) {
        const char *e = getenv("DSINFER_CPU_PROFILE");
        on = e && e[0] && strcmp(e, "0") != 0;
        if (on) atexit(mm_prof_print);
        __atomic_store_n(&g_on, on, __ATOMIC_RELAXED); /* read without the lock above */
    }
    pthread_mutex_unlock(&g_mu);
    return on;
}

void ds_mm_prof_add(ds_type wt, int64_t K, int64_t M, int64_t n_rows, bool serial, double s) {
    pthread_mutex_lock(&g_mu);
    int i = 0;
    while (i < g_n && !(g_ent[i].wt == wt && g_ent[i].K == K && g_ent[i].M == M && g_ent[i].n_rows == n_rows &&
                        g_ent[i].serial == serial))
        i++;
    if (i == g_n && g_n < MM_PROF_CAP) g_ent[g_n++] = (mm_prof_ent){ wt, K, M, n_rows, serial, 0, 0 };
    if (i < g_n) {
        g_ent[i].calls++;
        g_ent[i].s += s;
    }
    pthread_mutex_unlock(&g_mu);
}
