/* http_internal.h: what http.c (daemon, routing, small endpoints) and
 * gen.c (the generation endpoints) share: the server state and the
 * per-request context. Private to src/server/. */
#ifndef DS_HTTP_INTERNAL_H
#define DS_HTTP_INTERNAL_H

#include "server.h"

#include <microhttpd.h>

struct ds_server {
    ds_server_params p;
    struct MHD_Daemon *d;
    atomic_bool ready, draining;
    pthread_mutex_t mu;       /* loading stage text */
    char stage[128];
    _Atomic uint64_t load_done, load_total; /* bytes of the GPU upload (ds_progress_report) */
    double t_start;
    long long created;        /* unix seconds at start, for /v1/models */
    /* set once by ds_server_set_ready, read-only afterwards */
    const ds_model *m;
    const ds_tokenizer *tok;
    ds_chat_template tmpl;
    ds_sched *sched;
    char model_path[512];
    char alias[256];
    ds_metrics metrics;
};

/* One HTTP request; created on the first access-handler call and freed by
 * the completed callback. */
typedef struct ds_req {
    struct MHD_Connection *conn;
    const char *method, *url;
    ds_sbuf body;
    bool body_too_big;
    bool counted;             /* counted in metrics.in_flight */
    double t0;
    int status;               /* sent status (499: the client went away) */
    const char *allow;        /* Allow header of a 405 */
    int64_t n_prompt, n_gen;
} ds_req;

/* Queues a JSON body (takes ownership of the malloc'd string; NULL means
 * OOM and sends a 500). */
enum MHD_Result ds_http_send_json(ds_server *srv, ds_req *rq, int status, char *json);
enum MHD_Result ds_http_send_error(ds_server *srv, ds_req *rq, const ds_http_error *e);
/* True when the peer has closed its end of the connection. */
bool ds_http_peer_gone(struct MHD_Connection *conn);

/* gen.c: POST /v1/chat/completions and /v1/completions. */
enum MHD_Result ds_http_generate(ds_server *srv, ds_req *rq, ds_oai_kind kind);

#endif
