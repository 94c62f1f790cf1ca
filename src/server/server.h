/* server.h: the `serve` module — OpenAI-compatible HTTP (libmicrohttpd),
 * request/response JSON (jansson), SSE framing, the slot scheduler that
 * drives one ds_ctx with continuous batching, and the metrics it exports.
 * Not a generic HTTP framework, not tool calling or grammars. */
#ifndef DS_SERVER_H
#define DS_SERVER_H

#include <pthread.h>
#include <stdatomic.h>

#include "../engine/engine.h"
#include "../text/text.h"

/* ==== errors (oai.c) ====================================================
 * Every failure a request can cause maps to an HTTP status and OpenAI's
 * error object {"error":{"message","type","code"}}. */
typedef struct ds_http_error {
    int status;       /* 400, 401, 404, 405, 413, 500, 503, 504 */
    const char *type; /* "invalid_request_error", "authentication_error", ... */
    const char *code; /* "context_length_exceeded", "invalid_json", ... or NULL */
    char message[512];
} ds_http_error;

/* Fills e and returns false (so parsers can `return ds_http_fail(...)`). */
bool ds_http_fail(ds_http_error *e, int status, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* {"error":{...}} as a malloc'd NUL-terminated string; NULL on OOM. */
char *ds_http_error_json(const ds_http_error *e);

/* ==== requests (oai.c) =================================================== */
typedef enum ds_oai_kind { DS_OAI_CHAT = 0, DS_OAI_COMPLETION } ds_oai_kind;

#define DS_OAI_MAX_STOP 16
#define DS_OAI_MAX_TOP_LOGPROBS 20

/* A parsed generation request; every string and array is owned by it
 * (free with ds_oai_request_free). */
typedef struct ds_oai_request {
    ds_oai_kind kind;
    ds_chat_msg *msgs;    /* [n_msgs] chat only; role/content malloc'd */
    size_t n_msgs;
    char *prompt;         /* completion text prompt, or NULL */
    size_t prompt_len;
    int32_t *prompt_ids;  /* completion token prompt, or NULL */
    size_t n_prompt_ids;
    bool stream;
    bool include_usage;   /* stream_options.include_usage */
    bool ignore_eos;      /* llama-server's ignore_eos: generate through EOS/EOT */
    int64_t max_tokens;   /* -1: until the context is full */
    ds_sampler_params sp;
    char *stop[DS_OAI_MAX_STOP];
    int n_stop;
    bool logprobs;
    int top_logprobs;     /* 0..DS_OAI_MAX_TOP_LOGPROBS */
    char *model;          /* as sent, or NULL */
} ds_oai_request;

/* Parses a /v1/chat/completions or /v1/completions body. Invalid JSON,
 * invalid UTF-8, wrong types, out-of-range values and unsupported options
 * give false with e set (400). Never touches the tokenizer or the engine,
 * so it can be fuzzed alone. On false, *r is freed already. */
bool ds_oai_parse(ds_oai_kind kind, const char *body, size_t len, ds_oai_request *r, ds_http_error *e);
void ds_oai_request_free(ds_oai_request *r);

/* Copies s[0..n) into a malloc'd NUL-terminated string with every invalid
 * UTF-8 sequence replaced by U+FFFD (JSON strings must be valid UTF-8).
 * NULL on OOM; *out_len may be NULL. */
char *ds_utf8_sanitize(const char *s, size_t n, size_t *out_len);
/* Length of the longest prefix of s[0..n) that is valid UTF-8. */
size_t ds_utf8_valid_prefix(const char *s, size_t n);

/* SSE framing: "data: " + json + "\n\n" appended to a growable buffer
 * (ds_sbuf, core.h). */
/* Appends one SSE event for a JSON value (or the literal "[DONE]" when
 * json is NULL). */
void ds_sse_event(ds_sbuf *b, const char *json);

/* ==== scheduler (sched.c) ================================================ */
typedef enum ds_finish {
    DS_FINISH_NONE = 0,
    DS_FINISH_STOP,    /* EOS/EOT or a stop string */
    DS_FINISH_LENGTH,  /* max_tokens or the context */
    DS_FINISH_CANCEL,  /* client went away or shutdown */
    DS_FINISH_ERROR,   /* see job->err */
} ds_finish;
const char *ds_finish_name(ds_finish f);

typedef struct ds_tok_rec {
    int32_t id;
    float logprob;
    int n_top;
    ds_logprob top[DS_OAI_MAX_TOP_LOGPROBS];
} ds_tok_rec;

/* One generation in flight: the HTTP side fills the inputs and submits it;
 * the engine thread appends released text and token records under mu and
 * signals cv. Reference counted: the submitter and the engine each hold
 * one reference (ds_job_unref frees at zero). */
typedef struct ds_job {
    /* inputs (immutable after submit) */
    int32_t *prompt;       /* [n_prompt], owned */
    int64_t n_prompt;
    int64_t max_tokens;    /* resolved: >= 1 */
    ds_sampler *smp;       /* owned */
    char *stop[DS_OAI_MAX_STOP];
    int n_stop;
    bool ignore_eos;       /* do not stop at EOS/EOT (load tests) */
    int top_logprobs;      /* 0 = no records beyond id/logprob */
    bool want_logprobs;
    double deadline;       /* ds_time_s() seconds; 0 = none */
    uint64_t id;
    /* output, guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text;            /* released generated text (stop strings removed) */
    size_t text_len, text_cap;
    ds_tok_rec *recs;      /* [n_recs] when want_logprobs */
    size_t n_recs, recs_cap;
    int64_t n_gen;         /* generated tokens */
    int64_t n_cached;      /* prompt tokens reused from the cache */
    ds_finish finish;      /* set once, when done */
    ds_http_error err;     /* when finish == DS_FINISH_ERROR */
    /* ds_time_s() stamps; 0 until reached. t_admit: given a slot; t_first /
     * t_last: first / latest generated token sampled (see ds_job_timings) */
    double t_submit, t_admit, t_first, t_last, t_done;
    /* control */
    atomic_bool cancel;    /* set by the HTTP side; the engine frees the slot */
    atomic_int refs;
    /* engine-private */
    char *pend;            /* generated bytes not yet released */
    size_t pend_len, pend_cap;
    struct ds_job *next;   /* queue link */
} ds_job;

/* A job with refs = 1 and its mutex ready; NULL on OOM. Takes ownership of
 * prompt and smp on success only. */
ds_job *ds_job_new(int32_t *prompt, int64_t n_prompt, ds_sampler *smp);
void ds_job_ref(ds_job *j);
void ds_job_unref(ds_job *j);

/* One request's phases as llama-server's `timings` reports them. The
 * prompt phase runs from admission to a slot until the first generated
 * token is sampled, so it includes computing that token's logits; the
 * generation phase runs from the first sampled token to the last, so it
 * holds predicted_n - 1 decode steps (the per-token rates divide by that). */
typedef struct ds_timings {
    int64_t cache_n;     /* prompt tokens reused from the prefix cache */
    int64_t prompt_n;    /* prompt tokens fed: n_prompt - cache_n */
    int64_t predicted_n; /* generated tokens */
    double prompt_ms;    /* admission -> first token sampled */
    double predicted_ms; /* first token sampled -> last token sampled */
} ds_timings;

/* Reads j's counts and stamps (under its mutex) into *out; fields of a
 * phase not reached yet are 0. */
void ds_job_timings(ds_job *j, ds_timings *out);

typedef struct ds_sched_params {
    int n_slots;          /* -np */
    int64_t n_ctx_slot;   /* -c: the context of one request */
    int n_batch;          /* rows per engine step */
    int max_queue;        /* queued jobs beyond which submit fails (503) */
    bool kv_limited;      /* true when the shared cache is smaller than n_slots * n_ctx_slot */
} ds_sched_params;

/* Snapshot numbers for /health and /metrics, written by the engine thread
 * with relaxed atomics so readers never wait on a decode step. */
typedef struct ds_sched_stats {
    atomic_llong kv_used, kv_cap;
    atomic_int slots_idle, slots_busy, queued;
    atomic_llong n_prompt_tokens, n_gen_tokens; /* totals */
    atomic_llong prompt_us, gen_us;             /* engine time totals */
    atomic_llong steps;
} ds_sched_stats;

typedef struct ds_slot_info {
    int id;
    bool busy;
    int64_t n_cached;     /* tokens in its KV (prefix cache) */
    int64_t n_prompt, n_gen;
    uint64_t job_id;
} ds_slot_info;

typedef struct ds_sched ds_sched;

/* Starts the engine thread over c (which the scheduler then owns for
 * decoding; the caller frees c after ds_sched_free). tok is used for the
 * streaming detokenizer and EOG checks. */
ds_status ds_sched_create(ds_ctx *c, const ds_tokenizer *tok, const ds_sched_params *p, ds_sched **out,
                          ds_error *err);
/* Stops the thread (cancelling every job) and frees. NULL is fine. */
void ds_sched_free(ds_sched *s);
/* Queues j (takes a reference). False with e set: queue full (503) or
 * shutting down (503), or the request cannot fit (400). */
bool ds_sched_submit(ds_sched *s, ds_job *j, ds_http_error *e);
/* Cancels every queued and running job (drain timeout, shutdown). */
void ds_sched_cancel_all(ds_sched *s);
const ds_sched_stats *ds_sched_stats_get(const ds_sched *s);
/* Fills up to cap slot descriptions (takes the scheduler lock briefly,
 * never the decode step). Returns the slot count. */
int ds_sched_slots(ds_sched *s, ds_slot_info *out, int cap);
int64_t ds_sched_n_ctx_slot(const ds_sched *s);
int ds_sched_n_slots(const ds_sched *s);

/* ==== responses (oai_resp.c) ============================================= */
typedef struct ds_oai_resp {
    ds_oai_kind kind;
    const char *id;            /* "chatcmpl-..." / "cmpl-..." */
    const char *model;         /* the alias */
    long long created;         /* unix seconds */
    const ds_tokenizer *tok;   /* token texts for logprobs; may be NULL */
    const ds_timings *timings; /* NULL, or added as `timings` to the final body and
                                * to the finish_reason and usage chunks */
} ds_oai_resp;

/* Text of a reply or a delta; NULL pointers are left out of the JSON. */
typedef struct ds_oai_text {
    const char *content;
    size_t content_len;
    const char *reasoning;     /* chat only: reasoning_content */
    size_t reasoning_len;
} ds_oai_text;

/* Each returns a malloc'd compact JSON string (NULL on OOM). Invalid UTF-8
 * in the text is replaced by U+FFFD. */
char *ds_oai_final_json(const ds_oai_resp *r, const ds_oai_text *t, const ds_tok_rec *recs, size_t n_recs,
                        bool logprobs, const char *finish, int64_t n_prompt, int64_t n_gen, int64_t n_cached);
/* A streaming chunk: role announces the assistant (first chunk); t may be
 * NULL (empty delta); finish NULL while streaming. text_offset: bytes of
 * completion text sent before this chunk (legacy logprobs). */
char *ds_oai_chunk_json(const ds_oai_resp *r, bool role, const ds_oai_text *t, const ds_tok_rec *recs,
                        size_t n_recs, bool logprobs, size_t text_offset, const char *finish);
/* The final usage chunk of stream_options.include_usage (choices: []). */
char *ds_oai_usage_chunk_json(const ds_oai_resp *r, int64_t n_prompt, int64_t n_gen, int64_t n_cached);

/* ==== HTTP server (http.c) =============================================== */
typedef struct ds_server_params {
    const char *host;       /* 127.0.0.1 */
    int port;               /* 8080 */
    const char *const *api_keys;
    int n_api_keys;
    const char *alias;      /* model id in responses */
    int timeout_s;          /* per-request deadline and idle connection timeout */
    bool metrics;           /* expose /metrics */
    bool reasoning;         /* split <think> into reasoning_content */
    size_t max_body;        /* bytes */
    int max_connections;
    double drain_timeout_s;
} ds_server_params;

typedef struct ds_server ds_server;

/* Opens the port at once; until ds_server_set_ready every endpoint but
 * /health answers 503 (loading). */
ds_status ds_server_start(const ds_server_params *p, ds_server **out, ds_error *err);
/* Loading progress shown by /health while loading (text is copied). */
void ds_server_set_loading(ds_server *srv, const char *stage);
/* Hands over the loaded model: requests are served from now on. tmpl is
 * copied; the others must outlive the server. */
void ds_server_set_ready(ds_server *srv, const ds_model *m, const ds_tokenizer *tok, const ds_chat_template *tmpl,
                         ds_sched *sched, const char *model_path);
/* Stop accepting, let in-flight requests finish for up to drain_timeout_s,
 * then cancel the rest. Returns when no request handler is running. */
void ds_server_drain(ds_server *srv);
void ds_server_stop(ds_server *srv); /* frees; NULL is fine */

/* ==== metrics (metrics.c) ================================================ */
typedef struct ds_metrics {
    atomic_llong requests[6][100]; /* [status/100][status%100] */
    atomic_int in_flight;
} ds_metrics;
void ds_metrics_count(ds_metrics *m, int status);
/* Prometheus text exposition into b. */
void ds_metrics_render(const ds_metrics *m, const ds_sched_stats *st, int n_slots, ds_sbuf *b);
/* Resident set size of this process in bytes (0 if unknown). */
uint64_t ds_process_rss(void);

#endif
