/* cmd_soak.c: `dsinfer soak` — a bounded load generator and stability gate
 * for a running server: N client threads send chat requests (streaming and
 * not) for a fixed time, errors are counted by kind, latency / time to
 * first token / tokens per second summarised, and the server's RSS (from
 * /proc/PID/status) and /health kv_cache_usage sampled. Exits 1 when any
 * request failed or RSS grew more than --max-rss-growth after warm-up.
 * Not a benchmark of the model: see `dsinfer bench`. */
#define _GNU_SOURCE /* memmem */
#include "cli.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ERR_CONNECT, ERR_TIMEOUT, ERR_HTTP4, ERR_HTTP5, ERR_BAD_BODY, ERR_STREAM, ERR_OTHER, N_ERR };
static const char *g_err_names[N_ERR] = { "connect", "timeout", "http_4xx", "http_5xx", "bad_body", "stream_cut",
                                          "other" };

typedef struct soak_opts {
    const char *url, *prompt, *prompt_file, *report, *api_key, *model;
    double duration, stream_ratio, max_rss_growth, warmup, interval, req_timeout;
    int concurrency, max_tokens, pid;
} soak_opts;

typedef struct sample {
    double t, rss_mb, kv;
} sample;

typedef struct soak {
    soak_opts o;
    char **prompts;
    int n_prompts;
    double t0, t_end;
    pthread_mutex_t mu;        /* results below */
    double *lat, *ttft;        /* seconds per successful request (ttft: streamed ones) */
    size_t n_lat, cap_lat, n_ttft, cap_ttft;
    long long n_ok, n_err[N_ERR], tokens;
    /* the server's own `timings` (llama-server / dsinfer serve), summed
     * over the successful requests that carried them */
    long long n_timed;
    double srv_dec_tokens, srv_dec_s;
    atomic_long n_started;
    char last_err[256];
} soak;

/* One reply's generation phase as the server measured it. */
typedef struct srv_timing {
    bool has;
    double dec_tokens, dec_s;  /* tokens decoded in dec_s seconds, by the server's own rate */
} srv_timing;

typedef struct body_buf {
    char *p;
    size_t len, cap;
    bool oom;
    /* streaming */
    bool stream, got_done;
    double t_first;            /* first content delta */
    double t0;
    size_t scan;               /* bytes already split into events */
    long long completion_tokens;
    bool bad_event;
    srv_timing tm;             /* from the final chunk */
} body_buf;

static bool push(double **a, size_t *n, size_t *cap, double v) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        double *p = realloc(*a, c * sizeof *p);
        if (!p) return false;
        *a = p;
        *cap = c;
    }
    (*a)[(*n)++] = v;
    return true;
}

static double now_s(void) { return ds_time_s(); }

/* Reads `timings` of a reply or final chunk, if any. Tokens come from
 * predicted_per_second * predicted_ms, not predicted_n, so each server's
 * own count applies (dsinfer counts predicted_n - 1 decode intervals,
 * llama-server predicted_n). */
static void read_timings(json_t *o, srv_timing *t) {
    json_t *tm = json_object_get(o, "timings");
    json_t *ps = json_object_get(tm, "predicted_per_second"), *ms = json_object_get(tm, "predicted_ms");
    if (!json_is_number(ps) || !json_is_number(ms)) return;
    t->has = true;
    t->dec_s = json_number_value(ms) / 1e3;
    t->dec_tokens = json_number_value(ps) * t->dec_s;
}

/* Splits complete SSE events ("data: ...\n\n") out of the buffer. */
static void scan_events(body_buf *b) {
    for (;;) {
        char *start = b->p + b->scan;
        char *end = memmem(start, b->len - b->scan, "\n\n", 2);
        if (!end) break;
        *end = 0;
        if (!strncmp(start, "data: ", 6)) {
            const char *data = start + 6;
            if (!strcmp(data, "[DONE]")) b->got_done = true;
            else {
                json_t *o = json_loads(data, 0, NULL);
                if (!o || json_object_get(o, "error")) b->bad_event = true;
                json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
                json_t *delta = json_object_get(ch, "delta");
                const char *c = json_string_value(json_object_get(delta, "content"));
                const char *r = json_string_value(json_object_get(delta, "reasoning_content"));
                if (b->t_first == 0 && ((c && *c) || (r && *r))) b->t_first = now_s();
                json_t *u = json_object_get(o, "usage");
                if (u) b->completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
                read_timings(o, &b->tm);
                json_decref(o);
            }
        }
        *end = '\n';
        b->scan = (size_t)(end - b->p) + 2;
    }
}

static size_t on_body(char *p, size_t sz, size_t nm, void *ud) {
    body_buf *b = ud;
    size_t n = sz * nm;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->len + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = true;
            return 0;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
    if (b->stream) scan_events(b);
    return n;
}

static char *request_body(const soak *s, const char *prompt, bool stream) {
    json_t *o = json_pack("{s:[{s:s,s:s}],s:i,s:b,s:f}", "messages", "role", "user", "content", prompt, "max_tokens",
                          s->o.max_tokens, "stream", stream, "temperature", 0.0);
    if (!o) return NULL;
    if (stream) json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (s->o.model) json_object_set_new(o, "model", json_string(s->o.model));
    char *r = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return r;
}

/* One request; returns -1 on success, else the error kind. */
static int one_request(soak *s, CURL *h, const char *prompt, bool stream, double *lat, double *ttft, long long *toks,
                       srv_timing *tm) {
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/chat/completions", s->o.url);
    char *body = request_body(s, prompt, stream);
    if (!body) return ERR_OTHER;
    body_buf b = { .stream = stream };
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[600];
    if (s->o.api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", s->o.api_key);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(s->o.req_timeout * 1000));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    double t0 = now_s();
    b.t0 = t0;
    CURLcode rc = curl_easy_perform(h);
    double t1 = now_s();
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    int kind = -1;
    if (rc == CURLE_OPERATION_TIMEDOUT) kind = ERR_TIMEOUT;
    else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) kind = ERR_CONNECT;
    else if (rc != CURLE_OK) kind = stream ? ERR_STREAM : ERR_OTHER;
    else if (code >= 500) kind = ERR_HTTP5;
    else if (code >= 400) kind = ERR_HTTP4;
    else if (b.oom) kind = ERR_OTHER;
    else if (stream) {
        if (!b.got_done || b.bad_event) kind = ERR_STREAM;
        *toks = b.completion_tokens;
        *ttft = b.t_first ? b.t_first - t0 : t1 - t0;
        *tm = b.tm;
    } else {
        json_t *o = json_loadb(b.p ? b.p : "", b.len, 0, NULL);
        json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
        if (!o || !json_is_string(json_object_get(json_object_get(ch, "message"), "content"))) kind = ERR_BAD_BODY;
        *toks = json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens"));
        *ttft = t1 - t0;
        read_timings(o, tm);
        json_decref(o);
    }
    if (kind >= 0) {
        pthread_mutex_lock(&s->mu);
        snprintf(s->last_err, sizeof s->last_err, "%s: curl %d, HTTP %ld: %.120s", g_err_names[kind], (int)rc, code,
                 b.p ? b.p : "");
        pthread_mutex_unlock(&s->mu);
    }
    *lat = t1 - t0;
    curl_slist_free_all(hdr);
    free(b.p);
    free(body);
    return kind;
}

static void *worker(void *arg) {
    soak *s = arg;
    CURL *h = curl_easy_init();
    if (!h) return NULL;
    uint64_t rng = (uint64_t)(uintptr_t)&rng ^ (uint64_t)(now_s() * 1e9);
    while (now_s() < s->t_end) {
        long idx = atomic_fetch_add(&s->n_started, 1);
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        bool stream = (double)(rng % 10000) / 10000.0 < s->o.stream_ratio;
        const char *prompt = s->prompts[idx % s->n_prompts];
        double lat = 0, ttft = 0;
        long long toks = 0;
        srv_timing tm = { 0 };
        int kind = one_request(s, h, prompt, stream, &lat, &ttft, &toks, &tm);
        pthread_mutex_lock(&s->mu);
        if (kind < 0) {
            s->n_ok++;
            s->tokens += toks;
            push(&s->lat, &s->n_lat, &s->cap_lat, lat);
            /* time to first token exists only for streamed replies */
            if (stream) push(&s->ttft, &s->n_ttft, &s->cap_ttft, ttft);
            if (tm.has) {
                s->n_timed++;
                s->srv_dec_tokens += tm.dec_tokens;
                s->srv_dec_s += tm.dec_s;
            }
        } else {
            s->n_err[kind]++;
        }
        pthread_mutex_unlock(&s->mu);
        if (kind == ERR_CONNECT) usleep(200000); /* do not spin on a dead server */
    }
    curl_easy_cleanup(h);
    return NULL;
}

static double read_rss_mb(int pid) {
    if (pid <= 0) return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb < 0 ? -1 : kb / 1024.0;
}

static double read_kv_usage(const soak *s, CURL *h) {
    char url[1024];
    snprintf(url, sizeof url, "%s/health", s->o.url);
    body_buf b = { 0 };
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    double kv = -1;
    if (curl_easy_perform(h) == CURLE_OK && b.p) {
        json_t *o = json_loads(b.p, 0, NULL);
        json_t *u = json_object_get(o, "kv_cache_usage");
        if (json_is_number(u)) kv = json_number_value(u);
        json_decref(o);
    }
    free(b.p);
    return kv;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p) {
    if (!n) return 0;
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i ? i - 1 : 0];
}

static int load_prompts(soak *s) {
    if (!s->o.prompt_file) {
        s->prompts = malloc(sizeof *s->prompts);
        if (!s->prompts) return ds_cli_usage_error("soak", "out of memory");
        s->prompts[0] = (char *)s->o.prompt;
        s->n_prompts = 1;
        return 0;
    }
    FILE *f = fopen(s->o.prompt_file, "r");
    if (!f) return ds_cli_usage_error("soak", "cannot open --prompt-file %s", s->o.prompt_file);
    char line[8192];
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        size_t l = strcspn(line, "\r\n");
        line[l] = 0;
        if (!l) continue;
        if (s->n_prompts == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(s->prompts, (size_t)cap * sizeof *p);
            if (!p) break;
            s->prompts = p;
        }
        if (!(s->prompts[s->n_prompts] = strdup(line))) break;
        s->n_prompts++;
    }
    fclose(f);
    if (!s->n_prompts) return ds_cli_usage_error("soak", "--prompt-file %s has no prompts", s->o.prompt_file);
    return 0;
}

static int parse(soak_opts *o, int argc, char **argv) {
    *o = (soak_opts){ .url = "http://127.0.0.1:8080", .prompt = "Write a haiku about quantum computing",
                      .duration = 60, .stream_ratio = 0.5, .max_rss_growth = 1.0, .warmup = -1, .interval = 5,
                      .req_timeout = 300, .concurrency = 8, .max_tokens = 100 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int64_t n;
        double d;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: dsinfer soak [--url URL] [--duration S] [--concurrency N] [--stream-ratio R]\n"
                   "       [--max-tokens N] [--prompt TEXT | --prompt-file F] [--pid PID] [--report out.json]\n"
                   "       [--max-rss-growth PCT (1)] [--warmup S (10%% of duration, max 300)]\n"
                   "       [--sample-interval S (5)] [--request-timeout S (300)] [--api-key K] [--model M]\n");
            return 0;
        }
        if (!(v = ds_cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--url")) o->url = v;
        else if (!strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--prompt-file")) o->prompt_file = v;
        else if (!strcmp(a, "--report")) o->report = v;
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--concurrency")) {
            if (!ds_cli_int(a, v, 1, 4096, &n)) return 2;
            o->concurrency = (int)n;
        } else if (!strcmp(a, "--max-tokens")) {
            if (!ds_cli_int(a, v, 1, 1 << 20, &n)) return 2;
            o->max_tokens = (int)n;
        } else if (!strcmp(a, "--pid")) {
            if (!ds_cli_int(a, v, 1, 1 << 30, &n)) return 2;
            o->pid = (int)n;
        } else {
            if (!ds_cli_float(a, v, &d) || d < 0) return d < 0 ? ds_cli_usage_error("soak", "%s must be >= 0", a) : 2;
            if (!strcmp(a, "--duration")) o->duration = d;
            else if (!strcmp(a, "--stream-ratio")) o->stream_ratio = d;
            else if (!strcmp(a, "--max-rss-growth")) o->max_rss_growth = d;
            else if (!strcmp(a, "--warmup")) o->warmup = d;
            else if (!strcmp(a, "--sample-interval")) o->interval = d > 0.1 ? d : 0.1;
            else if (!strcmp(a, "--request-timeout")) o->req_timeout = d;
            else return ds_cli_usage_error("soak", "unknown option '%s'", a);
        }
    }
    static char base[1024];
    snprintf(base, sizeof base, "%s", o->url);
    size_t ul = strlen(base);
    while (ul && base[ul - 1] == '/') base[--ul] = 0; /* tolerate a trailing slash */
    o->url = base;
    if (o->warmup < 0) o->warmup = fmin(o->duration * 0.1, 300);
    return -1;
}

/* The server's decode rate over all timed requests; 0 when none. */
static double server_decode_tok_s(const soak *s) { return s->srv_dec_s > 0 ? s->srv_dec_tokens / s->srv_dec_s : 0; }

static void write_report(const soak *s, double elapsed, const sample *smp, int n_smp, double growth, double p[3],
                         double t[3], long long errors) {
    json_t *errs = json_object(), *samples = json_array();
    for (int k = 0; k < N_ERR; k++) json_object_set_new(errs, g_err_names[k], json_integer(s->n_err[k]));
    for (int i = 0; i < n_smp; i++)
        json_array_append_new(samples, json_pack("{s:f,s:f,s:f}", "t", smp[i].t, "rss_mb", smp[i].rss_mb,
                                                 "kv_cache_usage", smp[i].kv));
    json_t *o = json_pack("{s:s,s:f,s:i,s:I,s:I,s:o,s:{s:f,s:f,s:f},s:{s:f,s:f,s:f},s:I,s:f,s:f,s:o}", "url",
                          s->o.url, "elapsed_s", elapsed, "concurrency", s->o.concurrency, "completed",
                          (json_int_t)s->n_ok, "errors", (json_int_t)errors, "errors_by_kind", errs, "latency_s", "p50",
                          p[0], "p95", p[1], "p99", p[2], "ttft_s", "p50", t[0], "p95", t[1], "p99", t[2],
                          "completion_tokens", (json_int_t)s->tokens, "tokens_per_s",
                          elapsed > 0 ? (double)s->tokens / elapsed : 0.0, "rss_growth_pct", growth, "samples",
                          samples);
    /* null when the server sent no timings (not dsinfer or llama-server) */
    if (o) json_object_set_new(o, "server_decode_tok_s", s->n_timed ? json_real(server_decode_tok_s(s)) : json_null());
    if (!o || json_dump_file(o, s->o.report, JSON_INDENT(2)))
        fprintf(stderr, "dsinfer soak: cannot write --report %s\n", s->o.report);
    json_decref(o);
}

int ds_cmd_soak(int argc, char **argv) {
    soak s;
    memset(&s, 0, sizeof s);
    int rc = parse(&s.o, argc, argv);
    if (rc >= 0) return rc;
    if ((rc = load_prompts(&s))) return rc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, "dsinfer soak: libcurl init failed\n");
        return 1;
    }
    pthread_mutex_init(&s.mu, NULL);
    s.t0 = now_s();
    s.t_end = s.t0 + s.o.duration;
    pthread_t *th = calloc((size_t)s.o.concurrency, sizeof *th);
    int max_smp = (int)(s.o.duration / s.o.interval) + 4;
    sample *smp = calloc((size_t)max_smp, sizeof *smp);
    CURL *hh = curl_easy_init();
    if (!th || !smp || !hh) {
        fprintf(stderr, "dsinfer soak: out of memory\n");
        return 1;
    }
    int started = 0;
    for (; started < s.o.concurrency; started++)
        if (pthread_create(&th[started], NULL, worker, &s)) break;
    fprintf(stderr, "dsinfer soak: %d clients against %s for %.0f s (warm-up %.0f s)\n", started, s.o.url,
            s.o.duration, s.o.warmup);
    int n_smp = 0;
    double next = s.t0;
    while (now_s() < s.t_end) {
        if (now_s() >= next && n_smp < max_smp) {
            sample *x = &smp[n_smp++];
            x->t = now_s() - s.t0;
            x->rss_mb = read_rss_mb(s.o.pid);
            x->kv = read_kv_usage(&s, hh);
            pthread_mutex_lock(&s.mu);
            long long ok = s.n_ok, bad = 0;
            for (int k = 0; k < N_ERR; k++) bad += s.n_err[k];
            pthread_mutex_unlock(&s.mu);
            fprintf(stderr, "  t=%5.0fs done=%lld errors=%lld rss=%.1f MB kv=%.3f\n", x->t, ok, bad, x->rss_mb, x->kv);
            next += s.o.interval;
        }
        usleep(50000);
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    double elapsed = now_s() - s.t0;
    if (n_smp < max_smp) {
        smp[n_smp].t = elapsed;
        smp[n_smp].rss_mb = read_rss_mb(s.o.pid);
        smp[n_smp].kv = read_kv_usage(&s, hh);
        n_smp++;
    }
    /* RSS growth: from the first sample after warm-up to the last one */
    double growth = 0, base = -1;
    for (int i = 0; i < n_smp; i++)
        if (smp[i].t >= s.o.warmup && smp[i].rss_mb > 0) {
            base = smp[i].rss_mb;
            break;
        }
    if (base > 0 && smp[n_smp - 1].rss_mb > 0) growth = (smp[n_smp - 1].rss_mb - base) / base * 100.0;
    qsort(s.lat, s.n_lat, sizeof *s.lat, cmp_d);
    qsort(s.ttft, s.n_ttft, sizeof *s.ttft, cmp_d);
    double p[3] = { pct(s.lat, s.n_lat, 50), pct(s.lat, s.n_lat, 95), pct(s.lat, s.n_lat, 99) };
    double t[3] = { pct(s.ttft, s.n_ttft, 50), pct(s.ttft, s.n_ttft, 95), pct(s.ttft, s.n_ttft, 99) };
    long long errors = 0;
    for (int k = 0; k < N_ERR; k++) errors += s.n_err[k];
    printf("requests: %lld ok, %lld failed", s.n_ok, errors);
    for (int k = 0; k < N_ERR; k++)
        if (s.n_err[k]) printf(" %s=%lld", g_err_names[k], s.n_err[k]);
    printf("\nlatency s: p50 %.3f p95 %.3f p99 %.3f; ttft s: p50 %.3f p95 %.3f p99 %.3f\n", p[0], p[1], p[2], t[0],
           t[1], t[2]);
    printf("tokens: %lld in %.1f s = %.1f tok/s\n", s.tokens, elapsed, elapsed > 0 ? (double)s.tokens / elapsed : 0);
    if (s.n_timed) printf("server decode: %.1f tok/s (timings of %lld requests)\n", server_decode_tok_s(&s), s.n_timed);
    if (s.o.pid) printf("rss: %.1f MB after warm-up -> %.1f MB at the end (%+.2f%%, limit %.2f%%)\n", base,
                        smp[n_smp - 1].rss_mb, growth, s.o.max_rss_growth);
    if (errors) printf("last error: %s\n", s.last_err);
    printf("Completed: %lld prompts, %lld errors\n", s.n_ok, errors);
    if (s.o.report) write_report(&s, elapsed, smp, n_smp, growth, p, t, errors);
    rc = errors || (s.o.pid && growth > s.o.max_rss_growth) || s.n_ok == 0 ? 1 : 0;
    curl_easy_cleanup(hh);
    if (s.o.prompt_file)
        for (int i = 0; i < s.n_prompts; i++) free(s.prompts[i]);
    free(s.prompts);
    free(s.lat);
    free(s.ttft);
    free(th);
    free(smp);
    pthread_mutex_destroy(&s.mu);
    curl_global_cleanup();
    return rc;
}
