/* core.h: status codes and error messages, logging, asserts, timers,
 * fp16/bf16 conversion and the persistent thread pool.
 * Not a grab-bag: anything model- or format-specific lives in its module. */
#ifndef DS_CORE_H
#define DS_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- status and errors ------------------------------------------------ */
/* Anything a user, a file or a request can cause is reported as a status
 * plus a message that says what and where. Broken invariants use DS_ASSERT. */
typedef enum ds_status {
    DS_OK = 0,
    DS_ERR_IO,          /* open/read/mmap failed */
    DS_ERR_FORMAT,      /* malformed or truncated file */
    DS_ERR_INVALID_ARG, /* bad flag, bad value, bad request */
    DS_ERR_OOM,         /* allocation failed */
    DS_ERR_UNSUPPORTED, /* valid input we do not handle (yet) */
    DS_ERR_KV_FULL,     /* no room left in the KV cache */
    DS_ERR_NOT_FOUND,   /* missing key, tensor, file */
    DS_ERR_INTERNAL,
} ds_status;

typedef struct ds_error {
    ds_status code;
    char msg[1024];
} ds_error;

/* Fills err (may be NULL) with a printf-style message; returns code. */
ds_status ds_error_set(ds_error *err, ds_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *ds_status_name(ds_status s);

/* Abort with file:line on a broken invariant (programming error only). */
#define DS_ASSERT(cond)                                                     \
    do {                                                                    \
        if (!(cond)) ds_assert_fail(__FILE__, __LINE__, #cond);             \
    } while (0)
_Noreturn void ds_assert_fail(const char *file, int line, const char *expr);

/* ---- logging ----------------------------------------------------------- */
typedef enum { DS_LOG_DEBUG = 0, DS_LOG_INFO, DS_LOG_WARN, DS_LOG_ERROR } ds_log_level;
void ds_log_set_level(ds_log_level lvl);
void ds_log(ds_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- argmax ------------------------------------------------------------------ */
/* The index of the largest of l[0..n): the lowest index among equals; a NaN
 * is never chosen unless it is l[0] (then 0). n >= 1. */
int32_t ds_argmax_f32(const float *l, size_t n);

/* ---- time ---------------------------------------------------------------- */
double ds_time_s(void); /* monotonic seconds */

/* ---- load progress ----------------------------------------------------------- */
/* Long loads (weights going up to a GPU) report bytes done of total; one
 * process-wide listener (the server's /health), NULL = none. */
typedef void (*ds_progress_fn)(void *ctx, uint64_t done, uint64_t total);
void ds_progress_listen(ds_progress_fn fn, void *ctx);
void ds_progress_report(uint64_t done, uint64_t total);

/* ---- allocation ---------------------------------------------------------- */
/* 64-byte aligned allocation; returns NULL on failure (callers report OOM). */
void *ds_aligned_alloc(size_t size);
void ds_aligned_free(void *p);
/* Overflow-checked a*b; returns false on overflow. */
static inline bool ds_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool ds_add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* ---- growable string ------------------------------------------------------- */
/* Bytes appended at the end, always followed by a NUL. An allocation failure
 * sets oom, which sticks: later appends do nothing, so callers check once at
 * the end. Zero-initialise; free with ds_sbuf_free. */
typedef struct ds_sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} ds_sbuf;
void ds_sbuf_append(ds_sbuf *b, const char *s, size_t n);
void ds_sbuf_free(ds_sbuf *b);

/* ---- half precision ------------------------------------------------------ */
float ds_fp16_to_f32(uint16_t h);
uint16_t ds_f32_to_fp16(float f);  /* round to nearest even */
static inline float ds_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { .u = (uint32_t)h << 16 };
    return v.f;
}
uint16_t ds_f32_to_bf16(float f);  /* round to nearest even, NaN kept */

/* ---- thread pool --------------------------------------------------------- */
/* A persistent pool: workers spin briefly then sleep between jobs. The
 * caller takes part as thread 0, so a pool of n runs n ways in parallel. */
typedef struct ds_threadpool ds_threadpool;
typedef void (*ds_task_fn)(void *ctx, int ith, int nth);

ds_threadpool *ds_threadpool_create(int n_threads); /* NULL on failure */
/* Runs fn(ctx, i, n) for i = 0..n-1 and returns when all are done. */
void ds_threadpool_run(ds_threadpool *tp, ds_task_fn fn, void *ctx);
int ds_threadpool_size(const ds_threadpool *tp);
void ds_threadpool_free(ds_threadpool *tp);
int ds_cpu_count(void); /* online processors */

#endif
