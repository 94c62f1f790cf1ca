/* oai_resp.c: OpenAI response bodies — chat.completion, text_completion,
 * their streaming chunks, usage and logprobs — built with jansson.
 * Not transport: http.c frames these as SSE or plain bodies. */
#include "server.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* json string from bytes that may hold invalid UTF-8 (replaced) */
static json_t *jstr(const char *p, size_t n) {
    size_t m;
    char *s = ds_utf8_sanitize(p ? p : "", p ? n : 0, &m);
    if (!s) return NULL;
    json_t *v = json_stringn(s, m);
    free(s);
    return v;
}

static json_t *token_bytes(const char *p, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

static const char *piece(const ds_oai_resp *r, int32_t id, size_t *n) {
    const char *p = r->tok ? ds_token_piece(r->tok, id, true, n) : NULL;
    if (!p) *n = 0;
    return p ? p : "";
}

/* chat: {"content":[{"token","logprob","bytes","top_logprobs":[...]}]} */
static json_t *chat_logprobs(const ds_oai_resp *r, const ds_tok_rec *recs, size_t n) {
    json_t *content = json_array();
    for (size_t i = 0; content && i < n; i++) {
        size_t pn;
        const char *p = piece(r, recs[i].id, &pn);
        json_t *top = json_array();
        for (int k = 0; top && k < recs[i].n_top; k++) {
            size_t tn;
            const char *tp = piece(r, recs[i].top[k].id, &tn);
            json_array_append_new(top, json_pack("{s:o,s:f,s:o}", "token", jstr(tp, tn), "logprob",
                                                 (double)recs[i].top[k].logprob, "bytes", token_bytes(tp, tn)));
        }
        json_array_append_new(content, json_pack("{s:o,s:f,s:o,s:o}", "token", jstr(p, pn), "logprob",
                                                 (double)recs[i].logprob, "bytes", token_bytes(p, pn), "top_logprobs",
                                                 top));
    }
    return json_pack("{s:o}", "content", content);
}

/* legacy completions: parallel arrays, text_offset counted from offset0 */
static json_t *completion_logprobs(const ds_oai_resp *r, const ds_tok_rec *recs, size_t n, size_t offset0) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = offset0;
    for (size_t i = 0; i < n; i++) {
        size_t pn;
        const char *p = piece(r, recs[i].id, &pn);
        json_array_append_new(tokens, jstr(p, pn));
        json_array_append_new(lps, json_real(recs[i].logprob));
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += pn;
        json_t *top = json_object();
        for (int k = 0; top && k < recs[i].n_top; k++) {
            size_t tn;
            const char *tp = piece(r, recs[i].top[k].id, &tn);
            char *key = ds_utf8_sanitize(tp, tn, NULL);
            if (key) json_object_set_new(top, key, json_real(recs[i].top[k].logprob));
            free(key);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

static json_t *usage(int64_t n_prompt, int64_t n_gen, int64_t n_cached) {
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)n_prompt, "completion_tokens",
                     (json_int_t)n_gen, "total_tokens", (json_int_t)(n_prompt + n_gen), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)n_cached);
}

/* a / b, or 0 when either is 0: rates of an empty phase are reported as 0 */
static double ratio(double a, double b) { return a > 0 && b > 0 ? a / b : 0; }

/* llama-server's `timings`. The first generated token's cost is in
 * prompt_ms, so the generation rates count predicted_n - 1 intervals:
 * predicted_per_second is the decode rate (llama-server divides by
 * predicted_n instead). */
static json_t *timings_json(const ds_timings *t) {
    double steps = t->predicted_n > 1 ? (double)(t->predicted_n - 1) : 0;
    return json_pack("{s:I,s:I,s:f,s:f,s:f,s:I,s:f,s:f,s:f}", "cache_n", (json_int_t)t->cache_n, "prompt_n",
                     (json_int_t)t->prompt_n, "prompt_ms", t->prompt_ms, "prompt_per_token_ms",
                     ratio(t->prompt_ms, (double)t->prompt_n), "prompt_per_second",
                     ratio((double)t->prompt_n * 1e3, t->prompt_ms), "predicted_n", (json_int_t)t->predicted_n,
                     "predicted_ms", t->predicted_ms, "predicted_per_token_ms", ratio(t->predicted_ms, steps),
                     "predicted_per_second", ratio(steps * 1e3, t->predicted_ms));
}

static void add_timings(json_t *o, const ds_oai_resp *r) {
    if (r->timings) json_object_set_new(o, "timings", timings_json(r->timings));
}

static char *dump(json_t *o) {
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static json_t *envelope(const ds_oai_resp *r, bool chunk) {
    const char *obj = r->kind == DS_OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                             : "text_completion";
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", r->id, "object", obj, "created", (json_int_t)r->created, "model",
                     r->model, "system_fingerprint", "dsinfer");
}

char *ds_oai_final_json(const ds_oai_resp *r, const ds_oai_text *t, const ds_tok_rec *recs, size_t n_recs,
                        bool logprobs, const char *finish, int64_t n_prompt, int64_t n_gen, int64_t n_cached) {
    json_t *o = envelope(r, false);
    if (!o) return NULL;
    json_t *choice;
    json_t *lp = logprobs ? (r->kind == DS_OAI_CHAT ? chat_logprobs(r, recs, n_recs)
                                                    : completion_logprobs(r, recs, n_recs, 0))
                          : json_null();
    if (r->kind == DS_OAI_CHAT) {
        json_t *msg = json_pack("{s:s,s:o}", "role", "assistant", "content", jstr(t->content, t->content_len));
        if (msg && t->reasoning) json_object_set_new(msg, "reasoning_content", jstr(t->reasoning, t->reasoning_len));
        choice = json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "message", msg, "logprobs", lp, "finish_reason", finish);
    } else {
        choice = json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "text", jstr(t->content, t->content_len), "logprobs", lp,
                           "finish_reason", finish);
    }
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    json_object_set_new(o, "usage", usage(n_prompt, n_gen, n_cached));
    add_timings(o, r);
    return dump(o);
}

char *ds_oai_chunk_json(const ds_oai_resp *r, bool role, const ds_oai_text *t, const ds_tok_rec *recs,
                        size_t n_recs, bool logprobs, size_t text_offset, const char *finish) {
    json_t *o = envelope(r, true);
    if (!o) return NULL;
    json_t *lp = logprobs && n_recs ? (r->kind == DS_OAI_CHAT ? chat_logprobs(r, recs, n_recs)
                                                              : completion_logprobs(r, recs, n_recs, text_offset))
                                    : json_null();
    json_t *choice;
    if (r->kind == DS_OAI_CHAT) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (t && t->content) json_object_set_new(delta, "content", jstr(t->content, t->content_len));
        if (t && t->reasoning) json_object_set_new(delta, "reasoning_content", jstr(t->reasoning, t->reasoning_len));
        choice = json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "delta", delta, "logprobs", lp, "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "text",
                           jstr(t && t->content ? t->content : "", t && t->content ? t->content_len : 0), "logprobs",
                           lp, "finish_reason", finish ? json_string(finish) : json_null());
    }
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    if (finish) add_timings(o, r);
    return dump(o);
}

char *ds_oai_usage_chunk_json(const ds_oai_resp *r, int64_t n_prompt, int64_t n_gen, int64_t n_cached) {
    json_t *o = envelope(r, true);
    if (!o) return NULL;
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage(n_prompt, n_gen, n_cached));
    add_timings(o, r);
    return dump(o);
}
