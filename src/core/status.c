/* status.c: error messages, asserts and logging.
 * Not a logger framework: one line to stderr per call. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

ds_status ds_error_set(ds_error *err, ds_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *ds_status_name(ds_status s) {
    switch (s) {
    case DS_OK: return "ok";
    case DS_ERR_IO: return "io error";
    case DS_ERR_FORMAT: return "format error";
    case DS_ERR_INVALID_ARG: return "invalid argument";
    case DS_ERR_OOM: return "out of memory";
    case DS_ERR_UNSUPPORTED: return "unsupported";
    case DS_ERR_KV_FULL: return "kv cache full";
    case DS_ERR_NOT_FOUND: return "not found";
    case DS_ERR_INTERNAL: return "internal error";
    }
    return "unknown";
}

void ds_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

static ds_log_level g_log_level = DS_LOG_INFO;

void ds_log_set_level(ds_log_level lvl) { g_log_level = lvl; }

void ds_log(ds_log_level lvl, const char *fmt, ...) {
    if (lvl < g_log_level) return;
    static const char *tag[] = { "debug", "info", "warn", "error" };
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%s] ", tag[lvl]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
