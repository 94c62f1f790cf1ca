/* gen.c: POST /v1/chat/completions and /v1/completions — parse, render the
 * chat template, tokenize, submit a job to the scheduler, then either wait
 * for the whole reply or stream it as SSE chunks from a content-reader
 * callback. A client that disconnects cancels its job (its slot is freed
 * at the next engine step). Not the scheduler (sched.c) nor JSON shapes
 * (oai_resp.c). */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- prompt --------------------------------------------------------------- */

static bool build_prompt(ds_server *srv, const ds_oai_request *req, int32_t **ids, int64_t *n, ds_http_error *e) {
    ds_error err = { 0 };
    size_t nt = 0;
    *ids = NULL;
    if (req->kind == DS_OAI_CHAT) {
        char *text = NULL;
        size_t len = 0;
        if (ds_chat_render(&srv->tmpl, req->msgs, req->n_msgs, true, &text, &len, &err))
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_messages", "%s", err.msg);
        /* the rendered text carries the special tokens of the template */
        ds_status st = ds_tokenize_alloc(srv->tok, text, len, false, true, ids, &nt, &err);
        free(text);
        if (st) return ds_http_fail(e, 500, "server_error", NULL, "tokenize failed: %s", err.msg);
    } else if (req->prompt) {
        if (ds_tokenize_alloc(srv->tok, req->prompt, req->prompt_len, ds_tokenizer_add_bos(srv->tok), true, ids, &nt,
                              &err))
            return ds_http_fail(e, 500, "server_error", NULL, "tokenize failed: %s", err.msg);
    } else {
        int32_t nv = ds_tokenizer_n_vocab(srv->tok);
        if (srv->m->hp.n_vocab < nv) nv = srv->m->hp.n_vocab;
        for (size_t i = 0; i < req->n_prompt_ids; i++)
            if (req->prompt_ids[i] >= nv)
                return ds_http_fail(e, 400, "invalid_request_error", "invalid_value",
                                    "prompt[%zu] = %d is not a token id (vocabulary of %d)", i, req->prompt_ids[i], nv);
        *ids = malloc(req->n_prompt_ids * sizeof(int32_t));
        if (!*ids) return ds_http_fail(e, 500, "server_error", "out_of_memory", "out of memory");
        memcpy(*ids, req->prompt_ids, req->n_prompt_ids * sizeof(int32_t));
        nt = req->n_prompt_ids;
    }
    *n = (int64_t)nt;
    return true;
}

/* ---- reasoning split into two buffers --------------------------------- */

typedef struct split_out {
    ds_sbuf content, reasoning;
} split_out;

static void split_emit(void *ctx, bool reasoning, const char *p, size_t n) {
    split_out *o = ctx;
    ds_sbuf_append(reasoning ? &o->reasoning : &o->content, p, n);
}

/* ---- streaming --------------------------------------------------------- */

typedef struct gen_stream {
    ds_server *srv;
    ds_req *rq;               /* valid until the request completes */
    struct MHD_Connection *conn;
    ds_job *job;              /* one reference */
    ds_oai_resp resp;
    char id[48];
    bool split;               /* reasoning_content */
    ds_think think;
    bool logprobs, include_usage, sent_role, done;
    ds_sbuf out;              /* SSE bytes not yet handed to MHD */
    size_t out_off;
    size_t text_off, rec_off, text_sent;
} gen_stream;

static void stream_free(void *cls) {
    gen_stream *gs = cls;
    /* the response is gone: if the job still runs, nobody reads it */
    atomic_store(&gs->job->cancel, true);
    ds_job_unref(gs->job);
    ds_sbuf_free(&gs->out);
    free(gs);
}

static void append_json_event(gen_stream *gs, char *json) {
    if (!json) {
        gs->out.oom = true;
        return;
    }
    ds_sse_event(&gs->out, json);
    free(json);
}

/* Turns new text (and token records) into one chunk. */
static void emit_delta(gen_stream *gs, const char *text, size_t n, const ds_tok_rec *recs, size_t n_recs) {
    ds_oai_text t = { 0 };
    split_out so = { { 0 }, { 0 } };
    if (gs->split) {
        ds_think_feed(&gs->think, text, n, split_emit, &so);
        if (so.content.len) t.content = so.content.p, t.content_len = so.content.len;
        if (so.reasoning.len) t.reasoning = so.reasoning.p, t.reasoning_len = so.reasoning.len;
    } else if (n) {
        t.content = text;
        t.content_len = n;
    }
    if (t.content || t.reasoning || n_recs)
        append_json_event(gs, ds_oai_chunk_json(&gs->resp, false, &t, recs, n_recs, gs->logprobs, gs->text_sent, NULL));
    gs->text_sent += t.content_len;
    ds_sbuf_free(&so.content);
    ds_sbuf_free(&so.reasoning);
}

static void emit_end(gen_stream *gs, ds_finish f, const ds_http_error *err) {
    ds_job *j = gs->job;
    if (f == DS_FINISH_ERROR) {
        append_json_event(gs, ds_http_error_json(err));
    } else {
        if (gs->split) {
            ds_oai_text t = { 0 };
            split_out so = { { 0 }, { 0 } };
            ds_think_finish(&gs->think, split_emit, &so);
            if (so.content.len) t.content = so.content.p, t.content_len = so.content.len;
            if (so.reasoning.len) t.reasoning = so.reasoning.p, t.reasoning_len = so.reasoning.len;
            if (t.content || t.reasoning)
                append_json_event(gs, ds_oai_chunk_json(&gs->resp, false, &t, NULL, 0, false, gs->text_sent, NULL));
            ds_sbuf_free(&so.content);
            ds_sbuf_free(&so.reasoning);
        }
        /* timings ride on the finish_reason chunk and the usage chunk */
        ds_timings tm;
        ds_job_timings(j, &tm);
        gs->resp.timings = &tm;
        append_json_event(gs, ds_oai_chunk_json(&gs->resp, false, NULL, NULL, 0, false, gs->text_sent,
                                                ds_finish_name(f)));
        if (gs->include_usage)
            append_json_event(gs, ds_oai_usage_chunk_json(&gs->resp, j->n_prompt, j->n_gen, j->n_cached));
        gs->resp.timings = NULL;
    }
    ds_sse_event(&gs->out, NULL);
    gs->done = true;
}

/* Waits for new output of the job and appends SSE events to gs->out.
 * False when the stream must be cut: the client left or it was cancelled. */
static bool produce(gen_stream *gs) {
    ds_job *j = gs->job;
    pthread_mutex_lock(&j->mu);
    while (j->finish == DS_FINISH_NONE && j->text_len == gs->text_off && j->n_recs == gs->rec_off) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->finish != DS_FINISH_NONE || j->text_len != gs->text_off || j->n_recs != gs->rec_off) break;
        pthread_mutex_unlock(&j->mu);
        if (ds_http_peer_gone(gs->conn)) {
            atomic_store(&j->cancel, true);
            return false;
        }
        pthread_mutex_lock(&j->mu);
    }
    /* copy the new part out so the engine is not blocked while we format */
    size_t tn = j->text_len - gs->text_off, rn = j->n_recs - gs->rec_off;
    char *text = tn ? malloc(tn) : NULL;
    ds_tok_rec *recs = rn ? malloc(rn * sizeof *recs) : NULL;
    bool oom = (tn && !text) || (rn && !recs);
    if (!oom) {
        if (tn) memcpy(text, j->text + gs->text_off, tn);
        if (rn) memcpy(recs, j->recs + gs->rec_off, rn * sizeof *recs);
        gs->text_off += tn;
        gs->rec_off += rn;
    }
    ds_finish f = j->finish;
    ds_http_error err = j->err;
    int64_t n_gen = j->n_gen;
    pthread_mutex_unlock(&j->mu);
    if (oom) {
        free(text);
        free(recs);
        atomic_store(&j->cancel, true);
        return false;
    }
    gs->rq->n_gen = n_gen;
    if (!gs->sent_role && gs->resp.kind == DS_OAI_CHAT) {
        ds_oai_text t = { .content = "", .content_len = 0 };
        append_json_event(gs, ds_oai_chunk_json(&gs->resp, true, &t, NULL, 0, false, 0, NULL));
    }
    gs->sent_role = true;
    if (tn || rn) emit_delta(gs, text, tn, recs, rn);
    free(text);
    free(recs);
    if (f == DS_FINISH_CANCEL) return false;
    if (f != DS_FINISH_NONE) emit_end(gs, f, &err);
    return true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    gen_stream *gs = cls;
    (void)pos;
    for (;;) {
        if (gs->out.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (gs->out_off < gs->out.len) {
            size_t n = gs->out.len - gs->out_off;
            if (n > max) n = max;
            memcpy(buf, gs->out.p + gs->out_off, n);
            gs->out_off += n;
            if (gs->out_off == gs->out.len) gs->out_off = gs->out.len = 0;
            return (ssize_t)n;
        }
        if (gs->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!produce(gs)) {
            gs->rq->status = 499;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

/* ---- non-streaming --------------------------------------------------- */

static enum MHD_Result wait_whole(ds_server *srv, ds_req *rq, ds_job *j, const ds_oai_resp *resp, bool split,
                                  bool logprobs) {
    pthread_mutex_lock(&j->mu);
    while (j->finish == DS_FINISH_NONE) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->finish != DS_FINISH_NONE) break;
        pthread_mutex_unlock(&j->mu);
        /* the client gave up: free its slot now rather than at max_tokens */
        if (ds_http_peer_gone(rq->conn)) atomic_store(&j->cancel, true);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    /* finished: the engine no longer writes to j */
    rq->n_gen = j->n_gen;
    if (j->finish == DS_FINISH_ERROR) return ds_http_send_error(srv, rq, &j->err);
    if (j->finish == DS_FINISH_CANCEL) {
        if (ds_http_peer_gone(rq->conn)) {
            rq->status = 499;
            return MHD_NO;
        }
        ds_http_error e;
        ds_http_fail(&e, 503, "server_error", "cancelled", "the request was cancelled (server shutting down)");
        return ds_http_send_error(srv, rq, &e);
    }
    ds_oai_text t = { .content = j->text ? j->text : "", .content_len = j->text_len };
    char *reasoning = NULL, *content = NULL;
    if (split) {
        size_t rl = 0, cl = 0;
        ds_error err = { 0 };
        if (ds_think_split(t.content, t.content_len, ds_chat_starts_in_reasoning(&srv->tmpl), &reasoning, &rl,
                           &content, &cl, &err))
            return ds_http_send_json(srv, rq, 500, NULL);
        t.content = content;
        t.content_len = cl;
        if (rl) t.reasoning = reasoning, t.reasoning_len = rl;
    }
    ds_timings tm;
    ds_job_timings(j, &tm);
    ds_oai_resp rt = *resp;
    rt.timings = &tm;
    char *body = ds_oai_final_json(&rt, &t, j->recs, j->n_recs, logprobs, ds_finish_name(j->finish), j->n_prompt,
                                   j->n_gen, j->n_cached);
    free(reasoning);
    free(content);
    return ds_http_send_json(srv, rq, 200, body);
}

/* ---- entry ------------------------------------------------------------- */

enum MHD_Result ds_http_generate(ds_server *srv, ds_req *rq, ds_oai_kind kind) {
    ds_http_error e;
    ds_oai_request req;
    if (!ds_oai_parse(kind, rq->body.p, rq->body.len, &req, &e)) return ds_http_send_error(srv, rq, &e);
    int32_t *ids = NULL;
    int64_t n = 0;
    if (!build_prompt(srv, &req, &ids, &n, &e)) {
        free(ids);
        ds_oai_request_free(&req);
        return ds_http_send_error(srv, rq, &e);
    }
    rq->n_prompt = n;
    ds_sampler *smp = NULL;
    ds_error err = { 0 };
    if (ds_sampler_create(&req.sp, srv->m->hp.n_vocab, &smp, &err)) {
        free(ids);
        ds_oai_request_free(&req);
        ds_http_fail(&e, err.code == DS_ERR_OOM ? 500 : 400, err.code == DS_ERR_OOM ? "server_error"
                                                                                    : "invalid_request_error",
                     NULL, "%s", err.msg);
        return ds_http_send_error(srv, rq, &e);
    }
    ds_job *j = ds_job_new(ids, n, smp);
    if (!j) {
        free(ids);
        ds_sampler_free(smp);
        ds_oai_request_free(&req);
        return ds_http_send_json(srv, rq, 500, NULL);
    }
    j->max_tokens = req.max_tokens;
    j->ignore_eos = req.ignore_eos;
    for (int i = 0; i < req.n_stop; i++) j->stop[i] = req.stop[i], req.stop[i] = NULL;
    j->n_stop = req.n_stop;
    req.n_stop = 0;
    j->want_logprobs = req.logprobs;
    j->top_logprobs = req.top_logprobs;
    if (srv->p.timeout_s > 0) j->deadline = ds_time_s() + srv->p.timeout_s;
    bool stream = req.stream, include_usage = req.include_usage, logprobs = req.logprobs;
    ds_oai_request_free(&req);

    if (!ds_sched_submit(srv->sched, j, &e)) {
        ds_job_unref(j);
        return ds_http_send_error(srv, rq, &e);
    }
    rq->counted = true;
    atomic_fetch_add(&srv->metrics.in_flight, 1);
    ds_oai_resp resp = { .kind = kind, .model = srv->alias, .created = (long long)time(NULL), .tok = srv->tok };
    bool split = srv->p.reasoning && kind == DS_OAI_CHAT;
    if (!stream) {
        char id[48];
        snprintf(id, sizeof id, "%s-%016llx", kind == DS_OAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)j->id);
        resp.id = id;
        enum MHD_Result r = wait_whole(srv, rq, j, &resp, split, logprobs);
        ds_job_unref(j);
        return r;
    }
    gen_stream *gs = calloc(1, sizeof *gs);
    if (!gs) {
        atomic_store(&j->cancel, true);
        ds_job_unref(j);
        return ds_http_send_json(srv, rq, 500, NULL);
    }
    gs->srv = srv;
    gs->rq = rq;
    gs->conn = rq->conn;
    gs->job = j;
    gs->resp = resp;
    snprintf(gs->id, sizeof gs->id, "%s-%016llx", kind == DS_OAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)j->id);
    gs->resp.id = gs->id;
    gs->split = split;
    if (split) ds_think_init(&gs->think, ds_chat_starts_in_reasoning(&srv->tmpl));
    gs->logprobs = logprobs;
    gs->include_usage = include_usage;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, gs, stream_free);
    if (!r) {
        stream_free(gs);
        return ds_http_send_json(srv, rq, 500, NULL);
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    rq->status = 200;
    enum MHD_Result ret = MHD_queue_response(rq->conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}
