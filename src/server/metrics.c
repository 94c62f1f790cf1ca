/* metrics.c: request counters and the Prometheus text exposition for
 * /metrics, plus the process RSS read from /proc/self/status.
 * Not a metrics library: a fixed set of counters and gauges. */
#include "server.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ds_metrics_count(ds_metrics *m, int status) {
    if (status < 100 || status > 599) status = 500;
    atomic_fetch_add_explicit(&m->requests[status / 100][status % 100], 1, memory_order_relaxed);
}

uint64_t ds_process_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

static void line(ds_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(ds_sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) ds_sbuf_append(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void ds_metrics_render(const ds_metrics *m, const ds_sched_stats *st, int n_slots, ds_sbuf *b) {
#define LD(x) ((long long)atomic_load_explicit(&(x), memory_order_relaxed))
    line(b, "# HELP dsinfer_prompt_tokens_total Prompt tokens processed (prefix-cache hits excluded).\n"
            "# TYPE dsinfer_prompt_tokens_total counter\ndsinfer_prompt_tokens_total %lld\n",
         LD(st->n_prompt_tokens));
    line(b, "# HELP dsinfer_tokens_predicted_total Tokens generated.\n"
            "# TYPE dsinfer_tokens_predicted_total counter\ndsinfer_tokens_predicted_total %lld\n",
         LD(st->n_gen_tokens));
    line(b, "# HELP dsinfer_prompt_seconds_total Engine time spent on prompt rows.\n"
            "# TYPE dsinfer_prompt_seconds_total counter\ndsinfer_prompt_seconds_total %.6f\n",
         LD(st->prompt_us) / 1e6);
    line(b, "# HELP dsinfer_tokens_predicted_seconds_total Engine time spent on generated rows.\n"
            "# TYPE dsinfer_tokens_predicted_seconds_total counter\ndsinfer_tokens_predicted_seconds_total %.6f\n",
         LD(st->gen_us) / 1e6);
    line(b, "# HELP dsinfer_decode_steps_total Engine steps (batched forward calls).\n"
            "# TYPE dsinfer_decode_steps_total counter\ndsinfer_decode_steps_total %lld\n",
         LD(st->steps));
    line(b, "# HELP dsinfer_requests_total HTTP requests by status code (499: client went away).\n"
            "# TYPE dsinfer_requests_total counter\n");
    long long errors = 0;
    for (int c = 1; c < 6; c++)
        for (int k = 0; k < 100; k++) {
            long long v = LD(m->requests[c][k]);
            if (!v) continue;
            line(b, "dsinfer_requests_total{code=\"%d\"} %lld\n", c * 100 + k, v);
            if (c >= 4) errors += v;
        }
    line(b, "# HELP dsinfer_request_errors_total HTTP responses with a 4xx/5xx status.\n"
            "# TYPE dsinfer_request_errors_total counter\ndsinfer_request_errors_total %lld\n",
         errors);
    line(b, "# HELP dsinfer_requests_in_flight Generation requests being served.\n"
            "# TYPE dsinfer_requests_in_flight gauge\ndsinfer_requests_in_flight %lld\n",
         LD(m->in_flight));
    line(b, "# HELP dsinfer_requests_queued Generation requests waiting for a slot.\n"
            "# TYPE dsinfer_requests_queued gauge\ndsinfer_requests_queued %lld\n",
         LD(st->queued));
    long long used = LD(st->kv_used), cap = LD(st->kv_cap);
    line(b, "# HELP dsinfer_kv_cache_usage_ratio Used share of the KV cache (0-1).\n"
            "# TYPE dsinfer_kv_cache_usage_ratio gauge\ndsinfer_kv_cache_usage_ratio %.6f\n",
         cap ? (double)used / (double)cap : 0.0);
    line(b, "# HELP dsinfer_kv_cache_tokens KV cache tokens in use (block granularity).\n"
            "# TYPE dsinfer_kv_cache_tokens gauge\ndsinfer_kv_cache_tokens %lld\n",
         used);
    line(b, "# HELP dsinfer_slots_processing Slots running a request.\n"
            "# TYPE dsinfer_slots_processing gauge\ndsinfer_slots_processing %lld\n",
         LD(st->slots_busy));
    line(b, "# HELP dsinfer_slots_idle Idle slots.\n# TYPE dsinfer_slots_idle gauge\ndsinfer_slots_idle %lld\n",
         LD(st->slots_idle));
    line(b, "# HELP dsinfer_slots_total Slots (-np).\n# TYPE dsinfer_slots_total gauge\ndsinfer_slots_total %d\n",
         n_slots);
    line(b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n",
         (unsigned long long)ds_process_rss());
#undef LD
}
