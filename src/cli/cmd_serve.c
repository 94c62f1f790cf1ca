/* cmd_serve.c: `dsinfer serve` — flags in llama-server spelling, opens the
 * port at once (/health says "loading"), loads the model, starts the slot
 * scheduler, then waits for SIGINT/SIGTERM and drains. Not the server
 * itself: see src/server/. */
#include "cli.h"
#include "../server/server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 64

static void usage(FILE *f) {
    fprintf(f,
            "usage: dsinfer serve -m MODEL.gguf [options]\n"
            "  -m, --model FILE          GGUF model (first shard of a split file)\n"
            "  --host ADDR               listen address (default 127.0.0.1)\n"
            "  --port N                  port (default 8080)\n"
            "  -c, --ctx-size N          context of one request: prompt + completion (default 4096)\n"
            "  -np, --parallel N         slots: requests decoded together (default 4)\n"
            "  --kv-size N               shared KV cache tokens (default ctx-size * parallel: never full)\n"
            "  -t, --threads N           CPU threads (default all)\n"
            "  -b, -ub                   tokens per engine step / per forward micro-batch\n"
            "  --api-key KEY             require 'Authorization: Bearer KEY' (repeatable)\n"
            "  --api-key-file FILE       one key per line\n"
            "  -a, --alias NAME          model id in responses (default: the file name)\n"
            "  -to, --timeout S          per-request time limit and idle connection timeout (default 600)\n"
            "  --metrics                 enable GET /metrics (Prometheus text)\n"
            "  --chat-template NAME      %s (default: from the GGUF)\n"
            "  --reasoning-format F      deepseek (reasoning_content, default) or none\n"
            "  --max-body BYTES          request body limit (default 8 MiB)\n"
            "  --queue-size N            requests waiting for a slot before 503 (default 64)\n"
            "  --max-connections N       open connections (default 256)\n"
            "  --drain-timeout S         on SIGTERM, time to finish in-flight requests (default 30)\n"
            "  -ngl, -sm, -ts, -ot, --cpu-moe, -fa, -ctk, --device   as in `dsinfer run`\n",
            DS_CHAT_TEMPLATE_NAMES);
}

static int read_key_file(const char *path, char **keys, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) return ds_cli_usage_error("serve", "cannot open --api-key-file %s: %s", path, strerror(errno));
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        size_t l = strcspn(line, "\r\n");
        line[l] = 0;
        if (!l || line[0] == '#') continue;
        if (*n == MAX_KEYS) {
            fclose(f);
            return ds_cli_usage_error("serve", "too many API keys (max %d)", MAX_KEYS);
        }
        if (!(keys[*n] = strdup(line))) {
            fclose(f);
            return ds_cli_usage_error("serve", "out of memory");
        }
        (*n)++;
    }
    fclose(f);
    return 0;
}

/* Signals are taken by one thread with sigwait (every thread blocks them).
 * While the model loads there is nothing to drain, so a signal then ends
 * the process the default way; once serving, the first signal starts the
 * drain and a second one cancels the requests still running. */
typedef struct sig_waiter {
    sigset_t set;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool serving;
    int sig;
    ds_sched *sched;  /* set while it may be cancelled; NULL before it is freed */
} sig_waiter;

static void *sig_main(void *arg) {
    sig_waiter *w = arg;
    for (int count = 0;; count++) {
        int sig = 0;
        while (sigwait(&w->set, &sig) != 0) {}
        pthread_mutex_lock(&w->mu);
        if (!w->serving) {
            fprintf(stderr, "dsinfer serve: %s while loading: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            signal(sig, SIG_DFL);
            pthread_sigmask(SIG_UNBLOCK, &w->set, NULL);
            raise(sig);
        }
        if (count == 0) {
            w->sig = sig;
            pthread_cond_broadcast(&w->cv);
        } else if (w->sched) {
            fprintf(stderr, "dsinfer serve: second signal: cancelling in-flight requests\n");
            ds_sched_cancel_all(w->sched);
        }
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

typedef struct serve_opts {
    ds_cli_model_opts mo;
    ds_server_params sp;
    int n_slots, max_queue;
    int64_t kv_size;
    const char *chat_template;
    char *keys[MAX_KEYS];
    bool owned[MAX_KEYS]; /* keys read from --api-key-file are strdup'd */
    int n_keys;
} serve_opts;

/* Returns -1 to go on, else the exit code. */
static int parse(serve_opts *o, int argc, char **argv) {
    ds_cli_model_opts_init(&o->mo);
    o->sp = (ds_server_params){ .host = "127.0.0.1", .port = 8080, .timeout_s = 600, .reasoning = true,
                                .max_body = 8u << 20, .max_connections = 256, .drain_timeout_s = 30 };
    o->n_slots = 4;
    o->max_queue = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int64_t n;
        double d;
        int r = ds_cli_model_opt(&o->mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--host")) {
            if (!(v = ds_cli_value(argc, argv, &i))) return 2;
            o->sp.host = v;
        } else if (!strcmp(a, "--port")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 0, 65535, &n)) return 2;
            o->sp.port = (int)n;
        } else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 1, 1024, &n)) return 2;
            o->n_slots = (int)n;
        } else if (!strcmp(a, "--kv-size")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 1, (int64_t)1 << 32, &n)) return 2;
            o->kv_size = n;
        } else if (!strcmp(a, "--api-key")) {
            if (!(v = ds_cli_value(argc, argv, &i))) return 2;
            if (o->n_keys == MAX_KEYS) return ds_cli_usage_error("serve", "too many API keys (max %d)", MAX_KEYS);
            if (!*v) return ds_cli_usage_error("serve", "--api-key must not be empty");
            o->keys[o->n_keys++] = (char *)v;
        } else if (!strcmp(a, "--api-key-file")) {
            if (!(v = ds_cli_value(argc, argv, &i))) return 2;
            int before = o->n_keys;
            int r2 = read_key_file(v, o->keys, &o->n_keys);
            for (int k = before; k < o->n_keys; k++) o->owned[k] = true;
            if (r2) return 2;
        } else if (!strcmp(a, "-a") || !strcmp(a, "--alias")) {
            if (!(v = ds_cli_value(argc, argv, &i))) return 2;
            o->sp.alias = v;
        } else if (!strcmp(a, "-to") || !strcmp(a, "--timeout")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 0, 86400 * 7, &n)) return 2;
            o->sp.timeout_s = (int)n;
        } else if (!strcmp(a, "--metrics")) {
            o->sp.metrics = true;
        } else if (!strcmp(a, "--chat-template")) {
            if (!(v = ds_cli_value(argc, argv, &i))) return 2;
            o->chat_template = v;
        } else if (!strcmp(a, "--reasoning-format")) {
            if (!(v = ds_cli_value(argc, argv, &i))) return 2;
            if (!strcmp(v, "deepseek") || !strcmp(v, "auto")) o->sp.reasoning = true;
            else if (!strcmp(v, "none")) o->sp.reasoning = false;
            else return ds_cli_usage_error("serve", "--reasoning-format must be deepseek or none, not '%s'", v);
        } else if (!strcmp(a, "--max-body")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 1024, (int64_t)1 << 34, &n)) return 2;
            o->sp.max_body = (size_t)n;
        } else if (!strcmp(a, "--queue-size")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 1, 1 << 20, &n)) return 2;
            o->max_queue = (int)n;
        } else if (!strcmp(a, "--max-connections")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 4, 1 << 16, &n)) return 2;
            o->sp.max_connections = (int)n;
        } else if (!strcmp(a, "--drain-timeout")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_float(a, v, &d) || d < 0) return 2;
            o->sp.drain_timeout_s = d;
        } else if (!strcmp(a, "--jinja") || !strcmp(a, "--no-webui") || !strcmp(a, "--slots") || !strcmp(a, "--cont-batching")) {
            fprintf(stderr, "dsinfer serve: note: %s accepted (always on or not applicable)\n", a);
        } else {
            return ds_cli_usage_error("serve", "unknown option '%s' (see --help)", a);
        }
    }
    if (!o->mo.model) return ds_cli_usage_error("serve", "-m MODEL is required");
    o->sp.api_keys = (const char *const *)o->keys;
    o->sp.n_api_keys = o->n_keys;
    return -1;
}

int ds_cmd_serve(int argc, char **argv) {
    serve_opts o;
    memset(&o, 0, sizeof o);
    int rc = parse(&o, argc, argv);
    if (rc >= 0) goto out_keys;
    rc = 1;

    static sig_waiter w = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    sigemptyset(&w.set);
    sigaddset(&w.set, SIGINT);
    sigaddset(&w.set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &w.set, NULL); /* inherited by every thread made from here */
    signal(SIGPIPE, SIG_IGN);
    pthread_t sig_th;
    if (pthread_create(&sig_th, NULL, sig_main, &w)) {
        fprintf(stderr, "dsinfer serve: cannot start the signal thread\n");
        goto out_keys;
    }
    pthread_detach(sig_th);

    ds_error err = { 0 };
    ds_server *srv = NULL;
    ds_model *m = NULL;
    ds_ctx *c = NULL;
    ds_tokenizer *tok = NULL;
    ds_sched *sched = NULL;
    if (ds_server_start(&o.sp, &srv, &err)) {
        fprintf(stderr, "dsinfer serve: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr, "dsinfer serve: listening on http://%s:%d (loading %s)\n", o.sp.host, o.sp.port, o.mo.model);

    /* -c is the context of one request; the shared cache holds every slot
     * at full length unless --kv-size makes it smaller (then admission
     * reserves prompt + max_tokens per request and queues the rest) */
    const int block = 64;
    int64_t per_slot = (o.mo.n_ctx + block - 1) / block * block;
    int64_t kv_full = per_slot * o.n_slots;
    int64_t kv = o.kv_size ? o.kv_size : kv_full;
    if (kv < o.mo.n_ctx) {
        fprintf(stderr, "dsinfer serve: --kv-size %lld is smaller than --ctx-size %lld\n", (long long)kv,
                (long long)o.mo.n_ctx);
        goto out;
    }
    ds_cli_model_opts mo = o.mo;
    mo.n_ctx = kv;
    ds_server_set_loading(srv, "loading model and creating the context");
    if (ds_cli_load(&mo, &m, &c, o.n_slots)) goto out;
    ds_server_set_loading(srv, "loading the tokenizer");
    if (ds_tokenizer_load(m->gguf, &tok, &err)) {
        fprintf(stderr, "dsinfer serve: cannot load the tokenizer: %s\n", err.msg);
        goto out;
    }
    ds_chat_template tmpl;
    if (ds_chat_template_init(tok, o.chat_template, &tmpl, &err)) {
        fprintf(stderr, "dsinfer serve: %s\n", err.msg);
        goto out;
    }
    ds_sched_params sp = { .n_slots = o.n_slots, .n_ctx_slot = o.mo.n_ctx, .n_batch = o.mo.n_batch,
                           .max_queue = o.max_queue, .kv_limited = kv < kv_full };
    if (ds_sched_create(c, tok, &sp, &sched, &err)) {
        fprintf(stderr, "dsinfer serve: %s\n", err.msg);
        goto out;
    }
    ds_server_set_ready(srv, m, tok, &tmpl, sched, o.mo.model);
    fprintf(stderr, "dsinfer serve: ready: %d slots x %lld tokens, KV cache %lld tokens, chat template %s%s\n",
            o.n_slots, (long long)o.mo.n_ctx, (long long)kv, ds_chat_format_name(tmpl.format),
            o.n_keys ? ", API key required" : "");

    pthread_mutex_lock(&w.mu);
    w.serving = true;
    w.sched = sched;
    while (!w.sig) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    fprintf(stderr, "dsinfer serve: %s: draining (up to %.0f s)\n", w.sig == SIGINT ? "SIGINT" : "SIGTERM",
            o.sp.drain_timeout_s);
    rc = 0;
out:
    /* order: no handler may run when the scheduler goes, and the
     * scheduler must stop before the context it drives */
    if (srv) ds_server_drain(srv);
    ds_server_stop(srv);
    pthread_mutex_lock(&w.mu);
    w.sched = NULL; /* the signal thread may not touch it from here */
    pthread_mutex_unlock(&w.mu);
    ds_sched_free(sched);
    ds_tokenizer_free(tok);
    ds_ctx_free(c);
    if (m) ds_model_free(m);
    if (rc == 0) fprintf(stderr, "dsinfer serve: stopped\n");
out_keys:
    for (int i = 0; i < o.n_keys; i++)
        if (o.owned[i]) free(o.keys[i]);
    return rc;
}
