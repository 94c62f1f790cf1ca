/* test_threadpool.c: ds_threadpool runs every share exactly once per job, for
 * pool sizes 1, 2, 3 and 8, over 100k tiny jobs, after sleeps (sleeping
 * workers) and with a slow share (sleeping caller); pools can be created
 * and freed repeatedly. Also prints the per-job overhead. Build it with
 * -fsanitize=thread to check the pool for data races. */
#include "core/core.h"
#include "testutil.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int n;               /* pool size the job expects */
    int *hits;           /* [n] plain counters: each written by one thread only */
    _Atomic int total;   /* shares run, all threads */
    _Atomic int bad_nth; /* shares that saw nth != n or ith out of range */
} count_job;

static void count_task(void *ctx, int ith, int nth) {
    count_job *job = ctx;
    if (nth != job->n || ith < 0 || ith >= nth) {
        atomic_fetch_add(&job->bad_nth, 1);
        return;
    }
    /* a plain write: the pool's synchronization must make it visible to the
     * caller (TSan flags this if run() returns before the share is done) */
    job->hits[ith]++;
    atomic_fetch_add(&job->total, 1);
}

static void check_pool(int n, int jobs, int sleep_every_us) {
    ds_threadpool *tp = ds_threadpool_create(n);
    CHECK(tp != NULL, "create(%d)", n);
    if (!tp) return;
    CHECK(ds_threadpool_size(tp) == n, "size %d != %d", ds_threadpool_size(tp), n);
    count_job job = { .n = n, .hits = calloc((size_t)n, sizeof(int)) };
    atomic_init(&job.total, 0);
    atomic_init(&job.bad_nth, 0);
    int bad_jobs = 0;
    for (int j = 0; j < jobs; j++) {
        int before = atomic_load(&job.total);
        ds_threadpool_run(tp, count_task, &job);
        /* every share finished before run() returned */
        if (atomic_load(&job.total) != before + n) bad_jobs++;
        if (sleep_every_us && j % 16 == 15) usleep((useconds_t)sleep_every_us);
    }
    CHECK(bad_jobs == 0, "n=%d: %d jobs returned before all shares ran", n, bad_jobs);
    CHECK(atomic_load(&job.bad_nth) == 0, "n=%d: bad ith/nth", n);
    int wrong = 0;
    for (int i = 0; i < n; i++) wrong += job.hits[i] != jobs;
    CHECK(wrong == 0, "n=%d: %d shares not run exactly %d times", n, wrong, jobs);
    free(job.hits);
    ds_threadpool_free(tp);
}

/* Shares that do real, uneven work: each writes its own slice of an array
 * that the caller then reads without atomics. */
typedef struct { int64_t *v; int64_t len; int round; } slice_job;

static void slice_task(void *ctx, int ith, int nth) {
    slice_job *job = ctx;
    int64_t a = job->len * ith / nth, b = job->len * (ith + 1) / nth;
    for (int64_t i = a; i < b; i++) job->v[i] += i + job->round;
}

static void check_slices(int n) {
    ds_threadpool *tp = ds_threadpool_create(n);
    if (!tp) { CHECK(0, "create(%d)", n); return; }
    slice_job job = { .len = 10007 };
    job.v = calloc((size_t)job.len, sizeof(int64_t));
    int64_t want_round_sum = 0;
    for (int r = 0; r < 200; r++) {
        job.round = r;
        want_round_sum += r;
        ds_threadpool_run(tp, slice_task, &job);
    }
    int wrong = 0;
    for (int64_t i = 0; i < job.len; i++) wrong += job.v[i] != 200 * i + want_round_sum;
    CHECK(wrong == 0, "n=%d: %d slice elements wrong", n, wrong);
    free(job.v);
    ds_threadpool_free(tp);
}

/* The last share sleeps past the spin time: the caller must fall asleep on
 * the done counter and be woken by that worker. */
typedef struct { _Atomic int total; } slow_job;

static void slow_task(void *ctx, int ith, int nth) {
    slow_job *job = ctx;
    if (ith == nth - 1) usleep(200);
    atomic_fetch_add(&job->total, 1);
}

static void check_slow_share(int n) {
    ds_threadpool *tp = ds_threadpool_create(n);
    if (!tp) { CHECK(0, "create(%d)", n); return; }
    slow_job job;
    atomic_init(&job.total, 0);
    int bad = 0;
    for (int j = 0; j < 50; j++) {
        int before = atomic_load(&job.total);
        ds_threadpool_run(tp, slow_task, &job);
        bad += atomic_load(&job.total) != before + n;
    }
    CHECK(bad == 0, "n=%d: %d slow jobs returned early", n, bad);
    ds_threadpool_free(tp);
}

static void empty_task(void *ctx, int ith, int nth) { (void)ctx; (void)ith; (void)nth; }

static void print_overhead(int n) {
    ds_threadpool *tp = ds_threadpool_create(n);
    if (!tp) return;
    for (int i = 0; i < 1000; i++) ds_threadpool_run(tp, empty_task, NULL);
    const int reps = 20000;
    double t0 = ds_time_s();
    for (int i = 0; i < reps; i++) ds_threadpool_run(tp, empty_task, NULL);
    double dt = ds_time_s() - t0;
    printf("threadpool n=%d: %.2f us per empty job (workers spinning)\n", n, dt / reps * 1e6);
    ds_threadpool_free(tp);
}

int main(void) {
    /* TSan slows everything ~10x: fewer jobs there, same coverage */
    int jobs = getenv("DS_TEST_QUICK") ? 10000 : 100000;
    const int sizes[] = { 1, 2, 3, 8 };
    for (int i = 0; i < 4; i++) {
        double t0 = ds_time_s();
        check_pool(sizes[i], jobs, 0);
        /* gaps longer than the spin: workers fall asleep and must wake */
        check_pool(sizes[i], 200, 300);
        check_slices(sizes[i]);
        check_slow_share(sizes[i]);
        printf("pool size %d: %.2f s\n", sizes[i], ds_time_s() - t0);
    }
    for (int k = 0; k < 50; k++) {
        ds_threadpool *tp = ds_threadpool_create(1 + k % 5);
        CHECK(tp != NULL, "create/free cycle %d", k);
        if (k % 2 && tp) {
            count_job job = { .n = 1 + k % 5, .hits = calloc(8, sizeof(int)) };
            ds_threadpool_run(tp, count_task, &job);
            CHECK(atomic_load(&job.total) == job.n, "cycle %d ran %d shares", k, atomic_load(&job.total));
            free(job.hits);
        }
        ds_threadpool_free(tp);
    }
    CHECK(ds_threadpool_create(0) == NULL, "create(0) must fail");
    CHECK(ds_threadpool_size(NULL) == 1, "size(NULL)");
    {
        count_job job = { .n = 1, .hits = calloc(1, sizeof(int)) };
        ds_threadpool_run(NULL, count_task, &job); /* NULL pool: serial */
        CHECK(job.hits[0] == 1, "run(NULL) must run the one share");
        free(job.hits);
    }
    print_overhead(2);
    print_overhead(ds_cpu_count());
    return ds_test_finish("test_threadpool");
}
