/* bench_bw.c: host memory read bandwidth, measured the way a decode step
 * uses memory (every thread streaming its own slice of a large buffer, all
 * at once), and warming the mmap'd weights into memory before timing.
 * Not a STREAM clone: no copy/triad, reads only, since decode is reads. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define BW_BYTES ((uint64_t)1 << 30) /* 1 GiB: far beyond any cache */

typedef struct {
    const uint8_t *buf;
    uint64_t bytes;
    uint64_t sink[64]; /* per-thread results, so the loads cannot be dropped */
    bool avx2;
} bw_job;

#if defined(__x86_64__)
/* 4 independent 256-bit accumulators keep enough loads in flight to
 * saturate memory from one core; the adds cost nothing next to the misses. */
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, uint64_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (uint64_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t r[4];
    _mm256_storeu_si256((__m256i *)r, a0);
    return r[0] + r[1] + r[2] + r[3];
}
#endif

static uint64_t read_plain(const uint8_t *p, uint64_t n) {
    uint64_t a[4] = { 0 };
    const uint64_t *q = (const uint64_t *)p;
    for (uint64_t i = 0; i + 4 <= n / 8; i += 4) a[0] += q[i], a[1] += q[i + 1], a[2] += q[i + 2], a[3] += q[i + 3];
    return a[0] + a[1] + a[2] + a[3];
}

static void bw_task(void *ctx, int ith, int nth) {
    bw_job *j = ctx;
    /* slices on 4 KiB boundaries: whole pages per thread */
    uint64_t pages = j->bytes / 4096, a = pages * ith / nth * 4096, b = pages * (ith + 1) / nth * 4096;
#if defined(__x86_64__)
    if (j->avx2) { j->sink[ith & 63] += read_avx2(j->buf + a, b - a); return; }
#endif
    j->sink[ith & 63] += read_plain(j->buf + a, b - a);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

ds_status ds_bench_read_bw(int n_threads, int n_passes, ds_bench_bw *out, ds_error *err) {
    memset(out, 0, sizeof *out);
    if (n_threads < 1) n_threads = ds_cpu_count();
    if (n_passes < 1) n_passes = 1;
    if (n_passes > 64) n_passes = 64;
    bw_job j = { .bytes = BW_BYTES };
#if defined(__x86_64__)
    j.avx2 = ds_simd_detect() >= DS_SIMD_AVX2;
#endif
    uint8_t *buf = ds_aligned_alloc(BW_BYTES);
    if (!buf) return ds_error_set(err, DS_ERR_OOM, "bench: cannot allocate %.1f GiB for the bandwidth probe", BW_BYTES / 1073741824.0);
    /* non-zero contents: untouched or zero pages could all map the shared zero page */
    memset(buf, 0x5a, BW_BYTES);
    j.buf = buf;
    ds_threadpool *tp = n_threads > 1 ? ds_threadpool_create(n_threads) : NULL;
    double t[64];
    for (int pass = -1; pass < n_passes; pass++) { /* pass -1 warms the TLB and the pool */
        double t0 = ds_time_s();
        if (tp) ds_threadpool_run(tp, bw_task, &j);
        else bw_task(&j, 0, 1);
        if (pass >= 0) t[pass] = ds_time_s() - t0;
    }
    if (tp) ds_threadpool_free(tp); /* its spinning workers must not steal the benchmark's cores */
    ds_aligned_free(buf);
    qsort(t, (size_t)n_passes, sizeof *t, cmp_double);
    out->bytes = BW_BYTES;
    out->n_threads = n_threads;
    out->n_passes = n_passes;
    out->gbs = BW_BYTES / t[0] / 1e9;
    out->gbs_median = BW_BYTES / t[n_passes / 2] / 1e9;
    /* keep the sums observable */
    uint64_t s = 0;
    for (int i = 0; i < 64; i++) s += j.sink[i];
    if (s == 42) ds_log(DS_LOG_DEBUG, "bench: checksum %llu", (unsigned long long)s);
    return DS_OK;
}

static uint64_t touch(const ds_tensor *t) {
    if (!ds_tensor_present(t)) return 0;
    uint64_t n = (uint64_t)t->row_bytes * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    /* Ask for the whole range first: page faults alone read ahead a little
     * at a time (0.24 GB/s from this VM's disk for a freshly written file). */
    uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)4095;
    madvise((void *)a, (size_t)((uintptr_t)t->data + n - a), MADV_WILLNEED);
    const volatile uint8_t *p = t->data;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i += 4096) s += p[i];
    if (n) s += p[n - 1];
    (void)s;
    return n;
}

uint64_t ds_bench_touch_weights(const ds_model *m) {
    uint64_t b = touch(&m->token_embd) + touch(&m->output_norm);
    if (m->output.data != m->token_embd.data) b += touch(&m->output);
    for (int il = 0; il < m->hp.n_layer; il++) {
        const ds_layer *L = &m->layers[il];
        const ds_tensor *ts[] = { &L->attn_norm, &L->q_a, &L->q_a_norm, &L->q_b, &L->q, &L->kv_a, &L->kv_a_norm,
                                  &L->k_b, &L->v_b, &L->kv_b, &L->attn_out, &L->ffn_norm, &L->ffn_gate, &L->ffn_up,
                                  &L->ffn_down, &L->gate_inp, &L->exp_bias, &L->gate_exps, &L->up_exps,
                                  &L->gate_up_exps, &L->down_exps, &L->gate_shexp, &L->up_shexp, &L->down_shexp };
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) b += touch(ts[i]);
    }
    return b;
}
