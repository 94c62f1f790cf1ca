/* oai.c: OpenAI request parsing (chat and completions bodies into
 * ds_oai_request), the error object, UTF-8 sanitising and SSE framing.
 * Pure functions over (buf, len): no tokenizer, no engine, no sockets, so
 * the fuzzer (fuzz/fuzz_request.c) can drive it alone. */
#include "server.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors -------------------------------------------------------------- */

bool ds_http_fail(ds_http_error *e, int status, const char *type, const char *code, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

char *ds_http_error_json(const ds_http_error *e) {
    /* the message may quote user input: sanitise so json_string accepts it */
    char *msg = ds_utf8_sanitize(e->message, strlen(e->message), NULL);
    if (!msg) return NULL;
    json_t *o = json_pack("{s:{s:s,s:s,s:o}}", "error", "message", msg, "type", e->type ? e->type : "server_error",
                          "code", e->code ? json_string(e->code) : json_integer(e->status));
    free(msg);
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid there. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* overlong, surrogates, beyond U+10FFFF */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

size_t ds_utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (!k) break;
        i += k;
    }
    return i;
}

char *ds_utf8_sanitize(const char *s, size_t n, size_t *out_len) {
    /* worst case: every byte becomes the 3-byte U+FFFD */
    if (n > (SIZE_MAX - 1) / 3) return NULL;
    char *o = malloc(n * 3 + 1);
    if (!o) return NULL;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k && !(k == 1 && s[i] == 0)) {
            memcpy(o + w, s + i, k);
            w += k;
            i += k;
        } else {
            /* NUL is valid UTF-8 but breaks C strings and jansson's
             * default mode: it is replaced too */
            memcpy(o + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i += 1;
        }
    }
    o[w] = 0;
    if (out_len) *out_len = w;
    return o;
}

/* ---- SSE buffer -------------------------------------------------------------- */

void ds_sse_event(ds_sbuf *b, const char *json) {
    ds_sbuf_append(b, "data: ", 6);
    if (json) ds_sbuf_append(b, json, strlen(json));
    else ds_sbuf_append(b, "[DONE]", 6);
    ds_sbuf_append(b, "\n\n", 2);
}

/* ---- request parsing ------------------------------------------------------ */

void ds_oai_request_free(ds_oai_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->model);
    memset(r, 0, sizeof *r);
}

#define BAD(...) ds_http_fail(e, 400, "invalid_request_error", "invalid_value", __VA_ARGS__)
#define OOM() ds_http_fail(e, 500, "server_error", "out_of_memory", "out of memory")

static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* A present, non-null field (NULL when absent or JSON null: "use default"). */
static json_t *field(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return v && !json_is_null(v) ? v : NULL;
}

static bool get_number(json_t *o, const char *k, double lo, double hi, float *out, ds_http_error *e) {
    json_t *v = field(o, k);
    if (!v) return true;
    if (!json_is_number(v)) return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'%s' must be a number", k);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return BAD("'%s' = %g is outside [%g, %g]", k, d, lo, hi);
    *out = (float)d;
    return true;
}

/* Integers may arrive as 1.0 from some clients: integral reals are fine. */
static bool get_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out, bool *present, ds_http_error *e) {
    json_t *v = field(o, k);
    if (present) *present = v != NULL;
    if (!v) return true;
    int64_t x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e18)
        x = (int64_t)json_real_value(v);
    else return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'%s' must be an integer", k);
    if (x < lo || x > hi) return BAD("'%s' = %lld is outside [%lld, %lld]", k, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return true;
}

static bool get_bool(json_t *o, const char *k, bool *out, ds_http_error *e) {
    json_t *v = field(o, k);
    if (!v) return true;
    if (!json_is_boolean(v)) return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'%s' must be a boolean", k);
    *out = json_is_true(v);
    return true;
}

/* content: a string, or an array of {"type":"text","text":...} parts
 * joined without separator (as OpenAI concatenates text parts). */
static bool parse_content(json_t *c, size_t idx, char **out, ds_http_error *e) {
    if (!c || json_is_null(c)) {
        *out = dup_n("", 0);
        return *out ? true : OOM();
    }
    if (json_is_string(c)) {
        *out = dup_n(json_string_value(c), json_string_length(c));
        return *out ? true : OOM();
    }
    if (!json_is_array(c))
        return ds_http_fail(e, 400, "invalid_request_error", "invalid_type",
                            "messages[%zu].content must be a string or an array of text parts", idx);
    ds_sbuf b = { 0 };
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type)) {
            ds_sbuf_free(&b);
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type",
                                "messages[%zu].content[%zu] must be an object with a 'type'", idx, i);
        }
        if (strcmp(json_string_value(type), "text") != 0) {
            ds_sbuf_free(&b);
            return ds_http_fail(e, 400, "invalid_request_error", "unsupported_content",
                                "messages[%zu].content[%zu]: content type '%s' is not supported (text only)", idx, i,
                                json_string_value(type));
        }
        if (!json_is_string(text)) {
            ds_sbuf_free(&b);
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type",
                                "messages[%zu].content[%zu].text must be a string", idx, i);
        }
        ds_sbuf_append(&b, json_string_value(text), json_string_length(text));
    }
    if (b.oom) {
        ds_sbuf_free(&b);
        return OOM();
    }
    *out = b.p ? b.p : dup_n("", 0);
    return *out ? true : OOM();
}

static bool parse_messages(json_t *root, ds_oai_request *r, ds_http_error *e) {
    json_t *m = json_object_get(root, "messages");
    if (!m) return ds_http_fail(e, 400, "invalid_request_error", "missing_field", "'messages' is required");
    if (!json_is_array(m) || json_array_size(m) == 0)
        return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'messages' must be a non-empty array");
    size_t n = json_array_size(m);
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) return OOM();
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(m, i);
        if (!json_is_object(msg))
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "messages[%zu] must be an object", i);
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role))
            return ds_http_fail(e, 400, "invalid_request_error", "missing_field", "messages[%zu].role must be a string", i);
        const char *rs = json_string_value(role);
        /* "developer" is OpenAI's newer name for the system role */
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return BAD("messages[%zu].role '%.40s' is not supported (system, user, assistant)", i, rs);
        char *content = NULL;
        if (!parse_content(json_object_get(msg, "content"), i, &content, e)) return false;
        char *rc = dup_n(rs, strlen(rs));
        if (!rc) {
            free(content);
            return OOM();
        }
        r->msgs[i].role = rc;
        r->msgs[i].content = content;
        r->n_msgs = i + 1;
    }
    return true;
}

static bool parse_prompt(json_t *root, ds_oai_request *r, ds_http_error *e) {
    json_t *p = json_object_get(root, "prompt");
    if (!p) return ds_http_fail(e, 400, "invalid_request_error", "missing_field", "'prompt' is required");
    /* a one-element array of strings is the same as the string */
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) p = json_array_get(p, 0);
    if (json_is_string(p)) {
        r->prompt_len = json_string_length(p);
        r->prompt = dup_n(json_string_value(p), r->prompt_len);
        return r->prompt ? true : OOM();
    }
    if (!json_is_array(p) || json_array_size(p) == 0)
        return ds_http_fail(e, 400, "invalid_request_error", "invalid_type",
                            "'prompt' must be a string or a non-empty array of token ids");
    size_t n = json_array_size(p);
    r->prompt_ids = malloc(n * sizeof(int32_t));
    if (!r->prompt_ids) return OOM();
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(p, i);
        if (json_is_string(t))
            return BAD("'prompt' with several strings is not supported (one prompt per request)");
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "prompt[%zu] must be a token id", i);
        r->prompt_ids[i] = (int32_t)json_integer_value(t);
    }
    r->n_prompt_ids = n;
    return true;
}

static bool parse_stop(json_t *root, ds_oai_request *r, ds_http_error *e) {
    json_t *s = field(root, "stop");
    if (!s) return true;
    if (json_is_string(s)) {
        if (json_string_length(s) == 0) return true;
        if (!(r->stop[0] = dup_n(json_string_value(s), json_string_length(s)))) return OOM();
        r->n_stop = 1;
        return true;
    }
    if (!json_is_array(s))
        return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'stop' must be a string or an array of strings");
    if (json_array_size(s) > DS_OAI_MAX_STOP) return BAD("'stop' has more than %d entries", DS_OAI_MAX_STOP);
    size_t i;
    json_t *v;
    json_array_foreach(s, i, v) {
        if (!json_is_string(v))
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "stop[%zu] must be a string", i);
        if (json_string_length(v) == 0) continue;
        if (!(r->stop[r->n_stop] = dup_n(json_string_value(v), json_string_length(v)))) return OOM();
        r->n_stop++;
    }
    return true;
}

static bool parse_sampling(json_t *root, ds_oai_request *r, ds_http_error *e) {
    ds_sampler_params *sp = &r->sp;
    int64_t x;
    bool present;
    if (!get_number(root, "temperature", 0, 100, &sp->temperature, e)) return false;
    if (!get_number(root, "top_p", 0, 1, &sp->top_p, e)) return false;
    if (!get_number(root, "min_p", 0, 1, &sp->min_p, e)) return false;
    if (!get_number(root, "presence_penalty", -2, 2, &sp->presence_penalty, e)) return false;
    if (!get_number(root, "frequency_penalty", -2, 2, &sp->frequency_penalty, e)) return false;
    if (!get_number(root, "repeat_penalty", 0, 100, &sp->repeat_penalty, e)) return false;
    if (sp->repeat_penalty <= 0) return BAD("'repeat_penalty' must be > 0");
    if (!get_int(root, "top_k", 0, INT32_MAX, &x, &present, e)) return false;
    if (present) sp->top_k = (int32_t)x;
    if (!get_int(root, "repeat_last_n", -1, INT32_MAX, &x, &present, e)) return false;
    if (present) sp->repeat_last_n = (int32_t)x;
    /* seed: any 64-bit pattern; -1 means random as in llama-server */
    json_t *seed = field(root, "seed");
    if (seed) {
        if (!json_is_integer(seed))
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'seed' must be an integer");
        json_int_t sv = json_integer_value(seed);
        sp->seed = sv == -1 ? DS_SEED_RANDOM : (uint64_t)sv;
    }
    return true;
}

static bool parse_common(json_t *root, ds_oai_request *r, ds_http_error *e) {
    json_t *model = field(root, "model");
    if (model) {
        if (!json_is_string(model))
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'model' must be a string");
        if (!(r->model = dup_n(json_string_value(model), json_string_length(model)))) return OOM();
    }
    if (!get_bool(root, "stream", &r->stream, e)) return false;
    if (!get_bool(root, "ignore_eos", &r->ignore_eos, e)) return false;
    json_t *so = field(root, "stream_options");
    if (so) {
        if (!json_is_object(so))
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'stream_options' must be an object");
        if (!get_bool(so, "include_usage", &r->include_usage, e)) return false;
    }
    int64_t x;
    bool present;
    /* max_completion_tokens is the newer name; it wins when both are set */
    if (!get_int(root, "max_tokens", 1, INT32_MAX, &x, &present, e)) return false;
    if (present) r->max_tokens = x;
    if (!get_int(root, "max_completion_tokens", 1, INT32_MAX, &x, &present, e)) return false;
    if (present) r->max_tokens = x;
    if (!get_int(root, "n", 1, INT32_MAX, &x, &present, e)) return false;
    if (present && x != 1) return BAD("'n' = %lld is not supported: only n = 1", (long long)x);
    json_t *rf = field(root, "response_format");
    if (rf) {
        json_t *t = json_is_object(rf) ? json_object_get(rf, "type") : NULL;
        if (!json_is_string(t))
            return ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "'response_format' must be {\"type\": ...}");
        if (strcmp(json_string_value(t), "text") != 0)
            return ds_http_fail(e, 400, "invalid_request_error", "unsupported_value",
                                "response_format '%.40s' is not supported yet (only \"text\")", json_string_value(t));
    }
    json_t *tools = field(root, "tools");
    if (tools && (!json_is_array(tools) || json_array_size(tools) > 0))
        return ds_http_fail(e, 400, "invalid_request_error", "unsupported_value", "'tools' is not supported yet");
    if (!parse_stop(root, r, e)) return false;
    return parse_sampling(root, r, e);
}

static bool parse_logprobs(json_t *root, ds_oai_request *r, ds_http_error *e) {
    int64_t x;
    bool present;
    if (r->kind == DS_OAI_CHAT) {
        if (!get_bool(root, "logprobs", &r->logprobs, e)) return false;
        if (!get_int(root, "top_logprobs", 0, DS_OAI_MAX_TOP_LOGPROBS, &x, &present, e)) return false;
        if (present) {
            if (!r->logprobs) return BAD("'top_logprobs' needs 'logprobs': true");
            r->top_logprobs = (int)x;
        }
    } else {
        /* legacy completions: logprobs is the number of alternatives */
        if (!get_int(root, "logprobs", 0, DS_OAI_MAX_TOP_LOGPROBS, &x, &present, e)) return false;
        if (present) {
            r->logprobs = true;
            r->top_logprobs = (int)x;
        }
    }
    return true;
}

bool ds_oai_parse(ds_oai_kind kind, const char *body, size_t len, ds_oai_request *r, ds_http_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max_tokens = -1;
    r->sp = ds_sampler_default_params();
    if (len == 0) return ds_http_fail(e, 400, "invalid_request_error", "invalid_json", "empty request body");
    json_error_t jerr;
    /* jansson rejects invalid UTF-8 and \u0000 (without JSON_ALLOW_NUL) */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char *msg = ds_utf8_sanitize(jerr.text, strlen(jerr.text), NULL);
        ds_http_fail(e, 400, "invalid_request_error", "invalid_json", "invalid JSON at line %d column %d: %s", jerr.line,
                     jerr.column, msg ? msg : "?");
        free(msg);
        return false;
    }
    bool ok = json_is_object(root) ||
              ds_http_fail(e, 400, "invalid_request_error", "invalid_type", "the request body must be a JSON object");
    if (ok) ok = kind == DS_OAI_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e);
    if (ok) ok = parse_common(root, r, e);
    if (ok) ok = parse_logprobs(root, r, e);
    json_decref(root);
    if (!ok) ds_oai_request_free(r);
    return ok;
}
