/* http.c: the libmicrohttpd daemon — request bodies with a size limit,
 * routing, API keys, the small endpoints (/health, /metrics, /v1/models,
 * /props, /slots, /tokenize, /detokenize), one log line per request and
 * draining on shutdown. Not generation: gen.c streams completions. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "http_internal.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- responses ------------------------------------------------------------ */

static enum MHD_Result queue(ds_req *rq, int status, const char *ctype, char *body, size_t len, const char *retry) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (retry) MHD_add_response_header(r, "Retry-After", retry);
    if (status == 405 && rq->allow) MHD_add_response_header(r, "Allow", rq->allow);
    rq->status = status;
    enum MHD_Result ret = MHD_queue_response(rq->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result ds_http_send_json(ds_server *srv, ds_req *rq, int status, char *json) {
    (void)srv;
    if (!json) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"code\":500}}";
        char *b = strdup(oom);
        if (!b) return MHD_NO;
        return queue(rq, 500, "application/json", b, strlen(b), NULL);
    }
    return queue(rq, status, "application/json", json, strlen(json), NULL);
}

enum MHD_Result ds_http_send_error(ds_server *srv, ds_req *rq, const ds_http_error *e) {
    char *j = ds_http_error_json(e);
    if (!j) return ds_http_send_json(srv, rq, 500, NULL);
    return queue(rq, e->status, "application/json", j, strlen(j), e->status == 503 ? "1" : NULL);
}

static enum MHD_Result send_text(ds_req *rq, int status, const char *ctype, ds_sbuf *b) {
    if (b->oom || !b->p) {
        ds_sbuf_free(b);
        static const char oom[] = "out of memory\n";
        char *x = strdup(oom);
        return x ? queue(rq, 500, "text/plain", x, strlen(x), NULL) : MHD_NO;
    }
    char *p = b->p;
    size_t n = b->len;
    b->p = NULL;
    return queue(rq, status, ctype, p, n, NULL);
}

bool ds_http_peer_gone(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd pfd = { .fd = ci->connect_fd, .events = POLLIN | POLLRDHUP };
    if (poll(&pfd, 1, 0) <= 0) return false;
    if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    if (pfd.revents & POLLIN) {
        /* readable: either a pipelined request (fine) or EOF */
        char c;
        return recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
    }
    return false;
}

/* ---- auth ------------------------------------------------------------------ */

/* Constant time in the key's content: every byte of every key is compared,
 * so the response time does not reveal how much of a key matched. */
static bool key_ok(const ds_server *srv, const char *got) {
    if (srv->p.n_api_keys == 0) return true;
    if (!got) return false;
    size_t gl = strlen(got);
    unsigned ok = 0;
    for (int k = 0; k < srv->p.n_api_keys; k++) {
        const char *want = srv->p.api_keys[k];
        size_t wl = strlen(want);
        unsigned diff = (unsigned)(gl ^ wl);
        for (size_t i = 0; i < wl; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < gl ? got[i] : 0);
        ok |= diff == 0;
    }
    return ok != 0;
}

static bool authorized(ds_server *srv, ds_req *rq) {
    if (srv->p.n_api_keys == 0) return true;
    const char *h = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Authorization");
    const char *key = NULL;
    if (h && !strncasecmp(h, "Bearer ", 7)) key = h + 7;
    if (!key) key = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "X-Api-Key");
    return key_ok(srv, key);
}

/* ---- small endpoints ----------------------------------------------------- */

static enum MHD_Result health(ds_server *srv, ds_req *rq) {
    if (!atomic_load(&srv->ready)) {
        char stage[128];
        pthread_mutex_lock(&srv->mu);
        memcpy(stage, srv->stage, sizeof stage);
        pthread_mutex_unlock(&srv->mu);
        const uint64_t done = atomic_load(&srv->load_done), total = atomic_load(&srv->load_total);
        json_t *o = json_pack("{s:s,s:s,s:f}", "status", "loading", "stage", stage, "elapsed_s",
                              ds_time_s() - srv->t_start);
        /* the fraction of the weights uploaded to the GPU, when there is an upload */
        if (o && total) json_object_set_new(o, "progress", json_real((double)done / (double)total));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        return ds_http_send_json(srv, rq, 503, s);
    }
    /* relaxed atomics only: never waits on a decode step */
    const ds_sched_stats *st = ds_sched_stats_get(srv->sched);
    long long used = atomic_load_explicit(&st->kv_used, memory_order_relaxed);
    long long cap = atomic_load_explicit(&st->kv_cap, memory_order_relaxed);
    json_t *o = json_pack("{s:s,s:f,s:I,s:I,s:i,s:i,s:i}", "status", atomic_load(&srv->draining) ? "draining" : "ok",
                          "kv_cache_usage", cap ? (double)used / (double)cap : 0.0, "kv_cache_tokens", (json_int_t)used,
                          "kv_cache_capacity", (json_int_t)cap, "slots_idle",
                          atomic_load_explicit(&st->slots_idle, memory_order_relaxed), "slots_processing",
                          atomic_load_explicit(&st->slots_busy, memory_order_relaxed), "requests_queued",
                          atomic_load_explicit(&st->queued, memory_order_relaxed));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return ds_http_send_json(srv, rq, 200, s);
}

static enum MHD_Result models(ds_server *srv, ds_req *rq) {
    const ds_hparams *hp = &srv->m->hp;
    json_t *o = json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:{s:i,s:i,s:I}}]}", "object", "list", "data", "id", srv->alias,
                          "object", "model", "created", (json_int_t)srv->created, "owned_by", "dsinfer", "meta",
                          "n_vocab", hp->n_vocab, "n_ctx_train", hp->n_ctx_train, "n_ctx",
                          (json_int_t)ds_sched_n_ctx_slot(srv->sched));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return ds_http_send_json(srv, rq, 200, s);
}

static enum MHD_Result props(ds_server *srv, ds_req *rq) {
    ds_sampler_params d = ds_sampler_default_params();
    json_t *o = json_pack("{s:{s:I,s:{s:f,s:i,s:f,s:f,s:f,s:i}},s:i,s:s,s:s,s:s,s:s}", "default_generation_settings",
                          "n_ctx", (json_int_t)ds_sched_n_ctx_slot(srv->sched), "params", "temperature",
                          (double)d.temperature, "top_k", d.top_k, "top_p", (double)d.top_p, "min_p", (double)d.min_p,
                          "repeat_penalty", (double)d.repeat_penalty, "repeat_last_n", d.repeat_last_n, "total_slots",
                          ds_sched_n_slots(srv->sched), "model_path", srv->model_path, "model_alias", srv->alias,
                          "chat_template", ds_chat_format_name(srv->tmpl.format), "build_info", "dsinfer");
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return ds_http_send_json(srv, rq, 200, s);
}

static enum MHD_Result slots(ds_server *srv, ds_req *rq) {
    int n = ds_sched_n_slots(srv->sched);
    ds_slot_info *info = calloc((size_t)n, sizeof *info);
    if (!info) return ds_http_send_json(srv, rq, 500, NULL);
    ds_sched_slots(srv->sched, info, n);
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_pack("{s:i,s:I,s:b,s:I,s:I,s:I,s:I}", "id", info[i].id, "n_ctx",
                                           (json_int_t)ds_sched_n_ctx_slot(srv->sched), "is_processing", info[i].busy,
                                           "id_task", (json_int_t)info[i].job_id, "n_cached",
                                           (json_int_t)info[i].n_cached, "n_prompt_tokens",
                                           (json_int_t)info[i].n_prompt, "n_decoded", (json_int_t)info[i].n_gen));
    free(info);
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return ds_http_send_json(srv, rq, 200, s);
}

static enum MHD_Result metrics(ds_server *srv, ds_req *rq) {
    ds_sbuf b = { 0 };
    ds_metrics_render(&srv->metrics, ds_sched_stats_get(srv->sched), ds_sched_n_slots(srv->sched), &b);
    return send_text(rq, 200, "text/plain; version=0.0.4", &b);
}

static json_t *load_object(ds_req *rq, ds_http_error *e) {
    json_error_t jerr;
    json_t *root = rq->body.len ? json_loadb(rq->body.p, rq->body.len, 0, &jerr) : NULL;
    if (!root || !json_is_object(root)) {
        json_decref(root);
        ds_http_fail(e, 400, "invalid_request_error", "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return root;
}

static enum MHD_Result tokenize(ds_server *srv, ds_req *rq) {
    ds_http_error e;
    json_t *root = load_object(rq, &e);
    if (!root) return ds_http_send_error(srv, rq, &e);
    json_t *c = json_object_get(root, "content"), *as = json_object_get(root, "add_special"),
           *ps = json_object_get(root, "parse_special"), *wp = json_object_get(root, "with_pieces");
    if (!json_is_string(c) || (as && !json_is_boolean(as)) || (ps && !json_is_boolean(ps)) ||
        (wp && !json_is_boolean(wp))) {
        json_decref(root);
        ds_http_fail(&e, 400, "invalid_request_error", "invalid_type",
                     "expected {\"content\": string, \"add_special\"?: bool, \"parse_special\"?: bool, "
                     "\"with_pieces\"?: bool}");
        return ds_http_send_error(srv, rq, &e);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    ds_error err = { 0 };
    ds_status st = ds_tokenize_alloc(srv->tok, json_string_value(c), json_string_length(c), json_is_true(as),
                                     ps ? json_is_true(ps) : true, &ids, &n, &err);
    bool pieces = json_is_true(wp);
    json_decref(root);
    if (st) {
        ds_http_fail(&e, 500, "server_error", NULL, "tokenize failed: %s", err.msg);
        return ds_http_send_error(srv, rq, &e);
    }
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (!pieces) {
            json_array_append_new(a, json_integer(ids[i]));
            continue;
        }
        size_t pn;
        const char *p = ds_token_piece(srv->tok, ids[i], true, &pn);
        char *ps2 = ds_utf8_sanitize(p ? p : "", p ? pn : 0, NULL);
        json_array_append_new(a, json_pack("{s:i,s:s}", "id", ids[i], "piece", ps2 ? ps2 : ""));
        free(ps2);
    }
    free(ids);
    json_t *o = a ? json_pack("{s:o}", "tokens", a) : NULL;
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return ds_http_send_json(srv, rq, 200, s);
}

static enum MHD_Result detokenize(ds_server *srv, ds_req *rq) {
    ds_http_error e;
    json_t *root = load_object(rq, &e);
    if (!root) return ds_http_send_error(srv, rq, &e);
    json_t *t = json_object_get(root, "tokens");
    if (!json_is_array(t)) {
        json_decref(root);
        ds_http_fail(&e, 400, "invalid_request_error", "invalid_type", "expected {\"tokens\": [ids]}");
        return ds_http_send_error(srv, rq, &e);
    }
    size_t n = json_array_size(t);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        json_decref(root);
        return ds_http_send_json(srv, rq, 500, NULL);
    }
    int32_t nv = ds_tokenizer_n_vocab(srv->tok);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(t, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= nv) {
            free(ids);
            json_decref(root);
            ds_http_fail(&e, 400, "invalid_request_error", "invalid_value", "tokens[%zu] is not a token id in 0..%d",
                         i, nv - 1);
            return ds_http_send_error(srv, rq, &e);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    json_decref(root);
    size_t need = 0;
    ds_error err = { 0 };
    ds_detokenize(srv->tok, ids, n, false, NULL, 0, &need, &err);
    char *text = malloc(need + 1);
    if (!text || ds_detokenize(srv->tok, ids, n, false, text, need + 1, &need, &err)) {
        free(text);
        free(ids);
        ds_http_fail(&e, 500, "server_error", NULL, "detokenize failed");
        return ds_http_send_error(srv, rq, &e);
    }
    free(ids);
    char *clean = ds_utf8_sanitize(text, need, NULL);
    free(text);
    json_t *o = clean ? json_pack("{s:s}", "content", clean) : NULL;
    free(clean);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return ds_http_send_json(srv, rq, 200, s);
}

/* ---- routing -------------------------------------------------------------- */

typedef enum { R_HEALTH, R_METRICS, R_MODELS, R_PROPS, R_SLOTS, R_CHAT, R_COMPLETION, R_TOKENIZE, R_DETOKENIZE } route_id;
typedef struct { const char *path; const char *method; route_id id; bool is_public; } route;

static const route g_routes[] = {
    { "/health", "GET", R_HEALTH, true },
    { "/v1/health", "GET", R_HEALTH, true },
    { "/metrics", "GET", R_METRICS, false },
    { "/v1/models", "GET", R_MODELS, true },
    { "/models", "GET", R_MODELS, true },
    { "/props", "GET", R_PROPS, false },
    { "/slots", "GET", R_SLOTS, false },
    { "/v1/chat/completions", "POST", R_CHAT, false },
    { "/chat/completions", "POST", R_CHAT, false },
    { "/v1/completions", "POST", R_COMPLETION, false },
    { "/completions", "POST", R_COMPLETION, false },
    { "/tokenize", "POST", R_TOKENIZE, false },
    { "/detokenize", "POST", R_DETOKENIZE, false },
};

static enum MHD_Result dispatch(ds_server *srv, ds_req *rq) {
    ds_http_error e;
    const route *rt = NULL;
    bool path_known = false;
    for (size_t i = 0; i < sizeof g_routes / sizeof *g_routes; i++) {
        if (strcmp(rq->url, g_routes[i].path)) continue;
        path_known = true;
        if (!strcmp(rq->method, g_routes[i].method) ||
            (!strcmp(rq->method, "HEAD") && !strcmp(g_routes[i].method, "GET")))
            rt = &g_routes[i];
        else rq->allow = g_routes[i].method;
    }
    if (!rt) {
        if (path_known)
            ds_http_fail(&e, 405, "invalid_request_error", "method_not_allowed", "method %.16s is not allowed on %.200s",
                         rq->method, rq->url);
        else ds_http_fail(&e, 404, "invalid_request_error", "not_found", "unknown endpoint %.200s", rq->url);
        return ds_http_send_error(srv, rq, &e);
    }
    if (rq->body_too_big) {
        ds_http_fail(&e, 413, "invalid_request_error", "request_too_large",
                     "the request body is larger than the limit of %zu bytes (--max-body)", srv->p.max_body);
        return ds_http_send_error(srv, rq, &e);
    }
    if (!rt->is_public && !authorized(srv, rq)) {
        ds_http_fail(&e, 401, "authentication_error", "invalid_api_key", "invalid or missing API key");
        return ds_http_send_error(srv, rq, &e);
    }
    if (rt->id == R_HEALTH) return health(srv, rq);
    if (!atomic_load(&srv->ready)) {
        ds_http_fail(&e, 503, "unavailable_error", "loading", "the model is still loading");
        return ds_http_send_error(srv, rq, &e);
    }
    switch (rt->id) {
    case R_METRICS:
        if (!srv->p.metrics) {
            ds_http_fail(&e, 404, "invalid_request_error", "not_found", "metrics are off; start with --metrics");
            return ds_http_send_error(srv, rq, &e);
        }
        return metrics(srv, rq);
    case R_MODELS: return models(srv, rq);
    case R_PROPS: return props(srv, rq);
    case R_SLOTS: return slots(srv, rq);
    case R_TOKENIZE: return tokenize(srv, rq);
    case R_DETOKENIZE: return detokenize(srv, rq);
    case R_CHAT:
    case R_COMPLETION:
        if (atomic_load(&srv->draining)) {
            ds_http_fail(&e, 503, "server_error", "shutting_down", "the server is shutting down");
            return ds_http_send_error(srv, rq, &e);
        }
        return ds_http_generate(srv, rq, rt->id == R_CHAT ? DS_OAI_CHAT : DS_OAI_COMPLETION);
    default: break;
    }
    return MHD_NO;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    ds_server *srv = cls;
    ds_req *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO; /* closes the connection: nothing else to do without memory */
        rq->conn = conn;
        rq->url = url;
        rq->method = method;
        rq->t0 = ds_time_s();
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->body_too_big && rq->body.len + *upload_size > srv->p.max_body) {
            rq->body_too_big = true;
            ds_sbuf_free(&rq->body);
        }
        if (!rq->body_too_big) ds_sbuf_append(&rq->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->body.oom) {
        ds_http_error e;
        ds_http_fail(&e, 500, "server_error", "out_of_memory", "out of memory reading the request");
        return ds_http_send_error(srv, rq, &e);
    }
    return dispatch(srv, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    ds_server *srv = cls;
    ds_req *rq = *con_cls;
    if (!rq) return;
    int status = rq->status ? rq->status : 499;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && status == 200) status = 499;
    ds_metrics_count(&srv->metrics, status);
    if (rq->counted) atomic_fetch_sub(&srv->metrics.in_flight, 1);
    /* /health is polled often: logged only when it is not a 200 */
    if (!(status == 200 && strstr(rq->url, "/health")))
        ds_log(DS_LOG_INFO, "serve: %s %s %d prompt=%lld gen=%lld %.1f ms", rq->method, rq->url, status,
               (long long)rq->n_prompt, (long long)rq->n_gen, (ds_time_s() - rq->t0) * 1e3);
    ds_sbuf_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

/* ---- lifecycle ------------------------------------------------------------ */

/* libmicrohttpd's own messages go through our log; the one it prints when
 * a stream is cut on purpose (client gone) is routine, so only debug. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    buf[strcspn(buf, "\n")] = 0;
    ds_log(strstr(buf, "Application reported internal error") ? DS_LOG_DEBUG : DS_LOG_WARN, "serve: http: %s", buf);
}

ds_status ds_server_start(const ds_server_params *p, ds_server **out, ds_error *err) {
    *out = NULL;
    ds_server *srv = calloc(1, sizeof *srv);
    if (!srv) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    srv->p = *p;
    pthread_mutex_init(&srv->mu, NULL);
    snprintf(srv->stage, sizeof srv->stage, "starting");
    srv->t_start = ds_time_s();
    srv->created = (long long)time(NULL);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p->port) };
    if (inet_pton(AF_INET, p->host, &addr.sin_addr) != 1) {
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return ds_error_set(err, DS_ERR_INVALID_ARG, "--host '%s' is not an IPv4 address", p->host);
    }
    /* thread per connection: a generation request may block its thread
     * while it waits for tokens, and /health is never queued behind it */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL;
    srv->d = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                              MHD_OPTION_SOCK_ADDR, &addr,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)p->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)p->timeout_s,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    if (!srv->d) {
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return ds_error_set(err, DS_ERR_IO, "cannot listen on %s:%d (port in use?)", p->host, p->port);
    }
    *out = srv;
    return DS_OK;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    ds_server *srv = ctx;
    atomic_store(&srv->load_total, total);
    atomic_store(&srv->load_done, done);
}

void ds_server_set_loading(ds_server *srv, const char *stage) {
    ds_progress_listen(on_progress, srv);
    pthread_mutex_lock(&srv->mu);
    snprintf(srv->stage, sizeof srv->stage, "%s", stage);
    pthread_mutex_unlock(&srv->mu);
}

void ds_server_set_ready(ds_server *srv, const ds_model *m, const ds_tokenizer *tok, const ds_chat_template *tmpl,
                         ds_sched *sched, const char *model_path) {
    ds_progress_listen(NULL, NULL);
    srv->m = m;
    srv->tok = tok;
    srv->tmpl = *tmpl;
    srv->sched = sched;
    snprintf(srv->model_path, sizeof srv->model_path, "%s", model_path ? model_path : "");
    if (srv->p.alias) snprintf(srv->alias, sizeof srv->alias, "%s", srv->p.alias);
    else {
        /* default id: the file name, as llama-server reports it */
        const char *b = model_path ? strrchr(model_path, '/') : NULL;
        snprintf(srv->alias, sizeof srv->alias, "%s", b ? b + 1 : (model_path ? model_path : "model"));
    }
    srv->p.alias = srv->alias;
    atomic_store(&srv->ready, true); /* publishes the fields above */
}

void ds_server_drain(ds_server *srv) {
    if (!srv) return;
    atomic_store(&srv->draining, true);
    /* stop accepting; connections already open finish their requests */
    int lfd = (int)MHD_quiesce_daemon(srv->d);
    if (lfd >= 0) close(lfd);
    double t_end = ds_time_s() + srv->p.drain_timeout_s;
    while (atomic_load(&srv->metrics.in_flight) > 0 && ds_time_s() < t_end) usleep(20000);
    if (atomic_load(&srv->metrics.in_flight) > 0 && srv->sched) {
        ds_log(DS_LOG_WARN, "serve: drain timeout: cancelling %d request(s)", atomic_load(&srv->metrics.in_flight));
        ds_sched_cancel_all(srv->sched);
        double t_hard = ds_time_s() + 5;
        while (atomic_load(&srv->metrics.in_flight) > 0 && ds_time_s() < t_hard) usleep(20000);
    }
}

void ds_server_stop(ds_server *srv) {
    if (!srv) return;
    ds_progress_listen(NULL, NULL); /* stopped while loading: nothing may call into srv */
    MHD_stop_daemon(srv->d); /* joins every connection thread */
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}
