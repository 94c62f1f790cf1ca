/* matmul.c: y = x W^T on the CPU for any readable weight type: quantize the
 * activation rows once, then split W's rows over the pool in chunks and run
 * the best dot kernels. Not a general GEMM: W is the quantized operand, x is
 * f32, and nothing is transposed or packed ahead of time.
 *
 * Decode (one activation row) streams W once and is bound by memory
 * bandwidth; prefill (many rows) reads each chunk of W from RAM once and
 * reuses it from cache for every group of 4 activation rows. */
#include "dot_internal.h"

#include <stdatomic.h>

size_t ds_matmul_act_bytes(ds_type wt, int64_t K, int64_t n_rows) {
    return (size_t)n_rows * ds_act_row_bytes(wt, K);
}

typedef struct {
    ds_vec_dot_fn dot;      /* 1-row kernel */
    ds_vec_dot_x4_fn dotn[5]; /* [nr] nr-activation-row kernel (nr = 2..4), or NULL */
    ds_gemm8_fn gemm8;      /* 8-weight-row GEMM for n_rows >= DS_GEMM8_MIN_ROWS, or NULL */
    const uint8_t *w;       /* [M] rows of row_stride bytes */
    size_t row_stride;
    int64_t K, M;
    const uint8_t *act;     /* [n_rows] quantized rows of act_stride bytes */
    size_t act_stride;
    int64_t n_rows;
    float *y;               /* [n_rows][ldy] */
    int64_t ldy;
    int64_t chunk;          /* rows of W per work item */
    int64_t n_chunks;
    /* work items past the first one per thread are taken from here; on its
     * own line so the claims do not disturb the read-only fields */
    _Alignas(64) _Atomic int64_t next;
} ds_mm_job;

/* W rows [m0, m1) against all activation rows. For several activation
 * rows the W rows are the inner loop: the chunk of W (sized to stay in L2)
 * comes from RAM once, and each group of up to 4 activation rows stays hot
 * in L1 while the chunk streams past it. A last group of 2 or 3 rows takes
 * the 2/3-row kernel (one weight decode for all its rows) where there is one. */
static void ds_mm_rows(const ds_mm_job *j, int64_t m0, int64_t m1) {
    const int K = (int)j->K;
    if (j->gemm8) { /* whole tiles of 8 W rows; a last partial tile below */
        const int64_t m8 = (m1 - m0) / 8 * 8;
        if (m8) j->gemm8(K, j->w + m0 * j->row_stride, j->row_stride, (int)m8, j->act, j->act_stride, (int)j->n_rows,
                         j->y + m0, j->ldy);
        m0 += m8;
        if (m0 == m1) return;
    }
    if (j->n_rows == 1) {
        for (int64_t m = m0; m < m1; m++) j->dot(K, &j->y[m], j->w + m * j->row_stride, j->act);
        return;
    }
    int64_t r = 0;
    while (r < j->n_rows) {
        const int nr = j->n_rows - r >= 4 ? 4 : (int)(j->n_rows - r);
        const ds_vec_dot_x4_fn f = j->dotn[nr];
        const uint8_t *a = j->act + r * j->act_stride;
        if (nr == 1 || !f) {
            for (int64_t m = m0; m < m1; m++) j->dot(K, &j->y[r * j->ldy + m], j->w + m * j->row_stride, a);
            r++;
            continue;
        }
        for (int64_t m = m0; m < m1; m++) {
            float s[4];
            f(K, s, j->w + m * j->row_stride, a, j->act_stride);
            for (int i = 0; i < nr; i++) j->y[(r + i) * j->ldy + m] = s[i];
        }
        r += nr;
    }
}

static void ds_mm_task(void *ctx, int ith, int nth) {
    ds_mm_job *j = ctx;
    /* the first item of each thread is fixed (no contention at the start),
     * the rest are claimed dynamically: a thread slowed by another process
     * on its core simply takes fewer */
    for (int64_t c = ith; c < j->n_chunks; c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) {
        const int64_t m0 = c * j->chunk, m1 = m0 + j->chunk < j->M ? m0 + j->chunk : j->M;
        ds_mm_rows(j, m0, m1);
    }
    (void)nth;
}

/* Rows of W per work item: about 128 KiB of weights (a fraction of L2, so
 * prefill re-reads it from cache), a multiple of 16 rows (64-byte lines of
 * y are not shared between threads), and at least ~8 items per thread for
 * balance when M allows. */
static int64_t ds_mm_chunk_rows(int64_t M, size_t row_bytes, int nth) {
    int64_t c = (int64_t)((128u << 10) / (row_bytes ? row_bytes : 1));
    const int64_t balance = M / (8 * (int64_t)nth);
    if (c > balance) c = balance;
    c = (c + 15) / 16 * 16;
    if (c < 16) c = 16;
    return c;
}

/* the kernels and geometry of a job (chunking is the caller's) */
static void mm_job_init(ds_mm_job *j, ds_type wt, const void *w, size_t row_stride, int64_t K, int64_t M,
                        const void *act, int64_t n_rows, float *y, int64_t ldy) {
    *j = (ds_mm_job){
        .dot = ds_vec_dot_best(wt),
        .w = w, .row_stride = row_stride, .K = K, .M = M,
        .act = act, .act_stride = ds_act_row_bytes(wt, K), .n_rows = n_rows,
        .y = y, .ldy = ldy,
    };
    DS_ASSERT(j->dot);
    for (int nr = 2; nr <= 4 && nr <= n_rows; nr++) j->dotn[nr] = ds_vec_dot_xn_best(wt, nr);
    if (n_rows >= DS_GEMM8_MIN_ROWS && n_rows <= INT32_MAX) j->gemm8 = ds_gemm8_best(wt);
}

void ds_matmul_preq(ds_threadpool *tp, ds_type wt, const void *w, size_t row_stride,
                    int64_t K, int64_t M, const void *act, int64_t n_rows,
                    float *y, int64_t ldy) {
    const size_t row_bytes = ds_row_bytes(wt, K);
    DS_ASSERT(row_bytes > 0 && row_stride >= row_bytes && ldy >= M && K <= INT32_MAX);
    if (M <= 0 || n_rows <= 0) return;
    const int nth = ds_threadpool_size(tp);
    ds_mm_job job;
    mm_job_init(&job, wt, w, row_stride, K, M, act, n_rows, y, ldy);
    job.chunk = ds_mm_chunk_rows(M, row_bytes, nth);
    job.n_chunks = (M + job.chunk - 1) / job.chunk;
    atomic_init(&job.next, nth);
    const double t0 = ds_mm_prof_on() ? ds_time_s() : 0;
    if (!tp || job.n_chunks == 1) ds_mm_task(&job, 0, 1);
    else ds_threadpool_run(tp, ds_mm_task, &job);
    if (t0 > 0) ds_mm_prof_add(wt, K, M, n_rows, false, ds_time_s() - t0);
}

void ds_matmul_serial_preq(ds_type wt, const void *w, size_t row_stride, int64_t K, int64_t M, const void *act,
                           int64_t n_rows, float *y, int64_t ldy) {
    DS_ASSERT(K <= INT32_MAX);
    if (M <= 0 || n_rows <= 0) return;
    ds_mm_job job;
    mm_job_init(&job, wt, w, row_stride, K, M, act, n_rows, y, ldy);
    const double t0 = ds_mm_prof_on() ? ds_time_s() : 0;
    ds_mm_rows(&job, 0, M);
    if (t0 > 0) ds_mm_prof_add(wt, K, M, n_rows, true, ds_time_s() - t0);
}

typedef struct {
    ds_type wt;
    const float *x;  /* [n_rows][K] */
    int64_t K, n_rows;
    uint8_t *act;    /* [n_rows] rows of act_stride bytes */
    size_t act_stride;
} ds_quant_job;

static void ds_quant_task(void *ctx, int ith, int nth) {
    const ds_quant_job *q = ctx;
    const int64_t r0 = q->n_rows * ith / nth, r1 = q->n_rows * (ith + 1) / nth;
    for (int64_t r = r0; r < r1; r++) ds_quantize_act_row(q->wt, q->x + r * q->K, q->act + r * q->act_stride, q->K);
}

void ds_matmul(ds_threadpool *tp, ds_type wt, const void *w, size_t row_stride,
               int64_t K, int64_t M, const float *x, int64_t n_rows,
               float *y, int64_t ldy, void *act) {
    const ds_type_traits *tr = ds_type_info(wt);
    DS_ASSERT(tr);
    if (M <= 0 || n_rows <= 0) return;
    /* f32 activations are the rows of x as they are: no copy */
    if (tr->act_type == DS_TYPE_F32) {
        ds_matmul_preq(tp, wt, w, row_stride, K, M, x, n_rows, y, ldy);
        return;
    }
    ds_quant_job q = { wt, x, K, n_rows, act, ds_act_row_bytes(wt, K) };
    /* a row quantizes in a few microseconds: threads only pay off for many */
    if (tp && n_rows >= 2 * ds_threadpool_size(tp)) ds_threadpool_run(tp, ds_quant_task, &q);
    else ds_quant_task(&q, 0, 1);
    ds_matmul_preq(tp, wt, w, row_stride, K, M, act, n_rows, y, ldy);
}
