/* threadpool.c: the persistent thread pool of core.h. Workers spin for a few
 * tens of microseconds after a job, then sleep on a futex; the caller runs
 * share 0 itself. Linux only (futex). Not a task queue: one job at a time,
 * started from one thread (no nested or concurrent ds_threadpool_run). */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void ds_cpu_relax(void) { _mm_pause(); }
#else
static inline void ds_cpu_relax(void) { __asm__ __volatile__("" ::: "memory"); }
#endif

/* How long an idle worker (or the waiting caller) spins before sleeping. A
 * decode step starts hundreds of jobs with short serial gaps between them;
 * spinning through those gaps keeps the cost of a job start near a cache
 * miss instead of a futex wake (~5-50 us on a busy VM). DS_SPIN_US overrides. */
#define DS_SPIN_NS_DEFAULT 50000

/* Each hot word sits on its own cache line: workers poll gen while the
 * caller's done counter is hammered by finishing workers. */
#define DS_CACHELINE 64

struct ds_threadpool {
    /* job publication: fn/ctx are plain fields, published by the release
     * part of the seq_cst increment of gen and read after an acquire load */
    _Alignas(DS_CACHELINE) _Atomic uint32_t gen; /* futex word: job counter */
    _Atomic int n_sleeping;                      /* workers in futex_wait on gen */
    _Atomic int stop;
    ds_task_fn fn;
    void *ctx;

    _Alignas(DS_CACHELINE) _Atomic uint32_t done; /* futex word: workers finished */
    _Atomic int caller_sleeping;

    _Alignas(DS_CACHELINE) int n;  /* threads including the caller */
    int64_t spin_ns;
    pthread_t *threads;            /* [n - 1] */
    struct ds_worker_arg *args;    /* [n - 1] */
};

struct ds_worker_arg {
    ds_threadpool *tp;
    int ith;
};

static void ds_futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
    /* Returns on wake, on EAGAIN (value already changed) or on a signal;
     * every caller re-checks its condition in a loop. */
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void ds_futex_wake(_Atomic uint32_t *addr, int count) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

static inline int64_t ds_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until *addr != old or spin_ns passed; returns the last value read.
 * The clock is read only every 64 polls: a vDSO call costs ~20 ns. After the
 * first DS_PURE_SPIN_NS the spinner also yields between rounds, so a pool
 * larger than the free cores (or a busy machine) lets the thread it waits
 * for run instead of burning that thread's time slice. */
#define DS_PURE_SPIN_NS 5000
static uint32_t ds_spin_while_equal(_Atomic uint32_t *addr, uint32_t old, int64_t spin_ns) {
    uint32_t v = atomic_load_explicit(addr, memory_order_acquire);
    if (v != old || spin_ns <= 0) return v;
    const int64_t t0 = ds_now_ns();
    for (;;) {
        for (int i = 0; i < 64; i++) {
            ds_cpu_relax();
            v = atomic_load_explicit(addr, memory_order_acquire);
            if (v != old) return v;
        }
        const int64_t dt = ds_now_ns() - t0;
        if (dt >= spin_ns) return v;
        if (dt >= DS_PURE_SPIN_NS) sched_yield();
    }
}

/* Waits for gen to move past seen: spin, then sleep. No lost wakeup: the
 * worker announces itself in n_sleeping before its last look at gen (both
 * seq_cst); the caller bumps gen before it reads n_sleeping (both seq_cst).
 * In the single total order either the worker sees the new gen or the caller
 * sees the sleeper and wakes it; futex_wait itself refuses to sleep when gen
 * already differs from seen. */
static uint32_t ds_worker_wait_job(ds_threadpool *tp, uint32_t seen) {
    uint32_t g = ds_spin_while_equal(&tp->gen, seen, tp->spin_ns);
    if (g != seen) return g;
    atomic_fetch_add(&tp->n_sleeping, 1);
    while ((g = atomic_load(&tp->gen)) == seen) ds_futex_wait(&tp->gen, seen);
    atomic_fetch_sub(&tp->n_sleeping, 1);
    return g;
}

static void *ds_worker_main(void *p) {
    struct ds_worker_arg *arg = p;
    ds_threadpool *tp = arg->tp;
    uint32_t seen = 0; /* gen starts at 0 and only the caller moves it */
    for (;;) {
        seen = ds_worker_wait_job(tp, seen);
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) break;
        tp->fn(tp->ctx, arg->ith, tp->n);
        /* release: the caller's acquire of done sees our writes of the job */
        uint32_t d = atomic_fetch_add_explicit(&tp->done, 1, memory_order_seq_cst) + 1;
        if (d == (uint32_t)(tp->n - 1) && atomic_load(&tp->caller_sleeping))
            ds_futex_wake(&tp->done, 1);
    }
    return NULL;
}

ds_threadpool *ds_threadpool_create(int n_threads) {
    if (n_threads < 1) return NULL;
    ds_threadpool *tp = ds_aligned_alloc(sizeof *tp);
    if (!tp) return NULL;
    *tp = (ds_threadpool){ .n = n_threads, .spin_ns = DS_SPIN_NS_DEFAULT };
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->stop, 0);
    atomic_init(&tp->done, 0);
    atomic_init(&tp->caller_sleeping, 0);
    const char *env = getenv("DS_SPIN_US");
    if (env && *env) tp->spin_ns = (int64_t)atoll(env) * 1000;
    if (n_threads == 1) return tp;

    tp->threads = calloc((size_t)n_threads - 1, sizeof *tp->threads);
    tp->args = calloc((size_t)n_threads - 1, sizeof *tp->args);
    if (!tp->threads || !tp->args) {
        free(tp->threads);
        free(tp->args);
        ds_aligned_free(tp);
        return NULL;
    }
    for (int i = 0; i < n_threads - 1; i++) {
        tp->args[i] = (struct ds_worker_arg){ tp, i + 1 };
        if (pthread_create(&tp->threads[i], NULL, ds_worker_main, &tp->args[i]) != 0) {
            tp->n = i + 1; /* free() stops and joins the i workers started */
            ds_threadpool_free(tp);
            return NULL;
        }
    }
    return tp;
}

/* Waits until all n - 1 workers counted themselves done: spin, then sleep
 * on done with the same Dekker handshake as the workers use on gen. */
static void ds_caller_wait_done(ds_threadpool *tp) {
    const uint32_t want = (uint32_t)(tp->n - 1);
    uint32_t d = atomic_load_explicit(&tp->done, memory_order_acquire);
    while (d != want) {
        const uint32_t prev = d;
        d = ds_spin_while_equal(&tp->done, prev, tp->spin_ns);
        if (d != prev) continue; /* a worker finished: keep spinning */
        atomic_store(&tp->caller_sleeping, 1);
        while ((d = atomic_load(&tp->done)) != want) ds_futex_wait(&tp->done, d);
        atomic_store(&tp->caller_sleeping, 0);
    }
}

/* tp may be NULL: the job then runs serially, like a pool of one. */
void ds_threadpool_run(ds_threadpool *tp, ds_task_fn fn, void *ctx) {
    if (!tp || tp->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    /* All workers of the previous job are done (we waited on done with
     * acquire), so nobody reads fn/ctx/done while we rewrite them. */
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store_explicit(&tp->done, 0, memory_order_relaxed);
    atomic_fetch_add(&tp->gen, 1); /* seq_cst: publishes fn/ctx/done */
    if (atomic_load(&tp->n_sleeping) > 0) ds_futex_wake(&tp->gen, INT_MAX);
    fn(ctx, 0, tp->n);
    ds_caller_wait_done(tp);
}

int ds_threadpool_size(const ds_threadpool *tp) { return tp ? tp->n : 1; }

void ds_threadpool_free(ds_threadpool *tp) {
    if (!tp) return;
    if (tp->n > 1) {
        atomic_store_explicit(&tp->stop, 1, memory_order_release);
        atomic_fetch_add(&tp->gen, 1);
        ds_futex_wake(&tp->gen, INT_MAX);
        for (int i = 0; i < tp->n - 1; i++) pthread_join(tp->threads[i], NULL);
    }
    free(tp->threads);
    free(tp->args);
    ds_aligned_free(tp);
}
