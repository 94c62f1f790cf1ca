/* chat.c: the built-in chat formats (DeepSeek V3 / R1 / V3.1, V2, ChatML):
 * recognising one from a GGUF's Jinja template, rendering messages, and
 * splitting a reply into reasoning and content at <think>...</think>.
 * Not a Jinja interpreter and not a tool-call parser: tool messages and
 * tool_calls are not rendered. */
#define _GNU_SOURCE /* memmem */
#include "text_internal.h"

#include <stdlib.h>
#include <string.h>

/* U+FF5C FULLWIDTH VERTICAL LINE and U+2581 LOWER ONE EIGHTH BLOCK spelled
 * out, so the tags do not depend on how this file is encoded. */
#define FW_BAR "\xEF\xBD\x9C"
#define LOW_BLOCK "\xE2\x96\x81"
#define DS_USER "<" FW_BAR "User" FW_BAR ">"
#define DS_ASSISTANT "<" FW_BAR "Assistant" FW_BAR ">"
#define DS_BOS "<" FW_BAR "begin" LOW_BLOCK "of" LOW_BLOCK "sentence" FW_BAR ">"
#define DS_EOS "<" FW_BAR "end" LOW_BLOCK "of" LOW_BLOCK "sentence" FW_BAR ">"

static const struct {
    const char *name;
    ds_chat_format format;
} k_names[] = {
    {"deepseek3", DS_CHAT_DEEPSEEK3},     {"deepseek-r1", DS_CHAT_DEEPSEEK_R1},
    {"deepseek3.1", DS_CHAT_DEEPSEEK3_1}, {"deepseek2", DS_CHAT_DEEPSEEK2},
    {"chatml", DS_CHAT_CHATML},
};

const char *ds_chat_format_name(ds_chat_format f) {
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
        if (k_names[i].format == f) return k_names[i].name;
    return "unknown";
}

static bool contains(const char *hay, size_t n, const char *needle) {
    return hay && memmem(hay, n, needle, strlen(needle)) != NULL;
}

ds_chat_format ds_chat_detect(const char *tmpl, size_t len) {
    if (!tmpl) return DS_CHAT_CHATML;
    if (contains(tmpl, len, DS_USER) && contains(tmpl, len, DS_ASSISTANT)) {
        /* V3.1 closes (or opens) the think block right after the tag in both
         * past turns and the generation prompt. */
        if (contains(tmpl, len, DS_ASSISTANT "</think>")) return DS_CHAT_DEEPSEEK3_1;
        /* R1 / R1-0528 force the reply to start inside <think>; a Jinja string
         * holds the newline either escaped or raw. */
        if (contains(tmpl, len, DS_ASSISTANT "<think>\\n") || contains(tmpl, len, DS_ASSISTANT "<think>\n"))
            return DS_CHAT_DEEPSEEK_R1;
        return DS_CHAT_DEEPSEEK3;
    }
    if (contains(tmpl, len, "'Assistant: ' + message['content'] + eos_token")) return DS_CHAT_DEEPSEEK2;
    return DS_CHAT_CHATML;
}

/* Copies a special token's text into dst[64], or the fallback. */
static void token_text_or(const ds_tokenizer *tok, int32_t id, const char *fallback, char *dst) {
    size_t len = 0;
    const char *s = tok ? ds_tokenizer_token_text(tok, id, &len) : NULL;
    if (!tok) s = fallback, len = strlen(fallback);
    if (!s || len >= 64) s = "", len = 0;
    memcpy(dst, s, len);
    dst[len] = 0;
}

ds_status ds_chat_template_init(const ds_tokenizer *tok, const char *name, ds_chat_template *out,
                                ds_error *err) {
    memset(out, 0, sizeof *out);
    token_text_or(tok, tok ? ds_tokenizer_bos(tok) : DS_TOKEN_NULL, DS_BOS, out->bos);
    token_text_or(tok, tok ? ds_tokenizer_eos(tok) : DS_TOKEN_NULL, DS_EOS, out->eos);
    if (name) {
        for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
            if (strcmp(name, k_names[i].name) == 0) {
                out->format = k_names[i].format;
                return DS_OK;
            }
        return ds_error_set(err, DS_ERR_INVALID_ARG, "unknown chat template '%s' (known: %s)", name,
                            DS_CHAT_TEMPLATE_NAMES);
    }
    size_t len = 0;
    const char *tmpl = tok ? ds_tokenizer_chat_template(tok, &len) : NULL;
    if (tmpl) out->format = ds_chat_detect(tmpl, len);
    else if (tok && ds_tokenizer_find(tok, DS_USER, strlen(DS_USER)) != DS_TOKEN_NULL)
        out->format = DS_CHAT_DEEPSEEK3;
    else out->format = tok ? DS_CHAT_CHATML : DS_CHAT_DEEPSEEK3;
    return DS_OK;
}

bool ds_chat_starts_in_reasoning(const ds_chat_template *t) {
    return t->format == DS_CHAT_DEEPSEEK_R1 || (t->format == DS_CHAT_DEEPSEEK3_1 && t->thinking);
}

/* ---- rendering ----------------------------------------------------------------- */

static void buf_str(ds_sbuf *b, const char *s) { ds_sbuf_append(b, s, strlen(s)); }

/* What is left of a past reply once its reasoning is dropped: the text after
 * the last "</think>", as R1's template does. */
static const char *after_think(const char *s) {
    const char *p = s, *hit;
    while ((hit = strstr(p, "</think>")) != NULL) p = hit + 8;
    return p;
}

typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT } ds_role;

static ds_status check_roles(const ds_chat_msg *msgs, size_t n, ds_role *roles, ds_error *err) {
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (r && strcmp(r, "system") == 0) roles[i] = ROLE_SYSTEM;
        else if (r && strcmp(r, "user") == 0) roles[i] = ROLE_USER;
        else if (r && strcmp(r, "assistant") == 0) roles[i] = ROLE_ASSISTANT;
        else
            return ds_error_set(err, DS_ERR_INVALID_ARG,
                                "chat: message %zu has role '%s' (expected system, user or assistant)", i,
                                r ? r : "(null)");
    }
    return DS_OK;
}

static void render_deepseek3(const ds_chat_template *t, const ds_chat_msg *m, const ds_role *roles,
                             size_t n, bool gen, ds_sbuf *b) {
    const bool v31 = t->format == DS_CHAT_DEEPSEEK3_1;
    buf_str(b, t->bos);
    /* The system prompt goes first, straight after BOS, with no separator
     * before the first turn (the models' own templates; llama.cpp's built-in
     * adds "\n\n"). Several system messages are joined as V3.1 does. */
    bool first_sys = true;
    for (size_t i = 0; i < n; i++) {
        if (roles[i] != ROLE_SYSTEM) continue;
        if (!first_sys) buf_str(b, "\n\n");
        buf_str(b, m[i].content ? m[i].content : "");
        first_sys = false;
    }
    bool last_user = false;
    for (size_t i = 0; i < n; i++) {
        const char *c = m[i].content ? m[i].content : "";
        if (roles[i] == ROLE_USER) {
            buf_str(b, DS_USER);
            buf_str(b, c);
            last_user = true;
        } else if (roles[i] == ROLE_ASSISTANT) {
            /* V3.1 tags a reply only when it answers a user turn, and marks it
             * as non-thinking; earlier formats always tag. */
            if (!v31 || last_user) buf_str(b, DS_ASSISTANT);
            if (v31 && last_user) buf_str(b, "</think>");
            /* Past reasoning is dropped as R1's and V3.1's templates do; for
             * V3 it changes nothing unless a reply held "</think>" (an R1-0528
             * whose template does not force <think> is detected as V3). */
            buf_str(b, after_think(c));
            buf_str(b, t->eos);
            last_user = false;
        }
    }
    if (!gen || (v31 && !last_user)) return;
    buf_str(b, DS_ASSISTANT);
    if (t->format == DS_CHAT_DEEPSEEK_R1) buf_str(b, "<think>\n");
    else if (v31) buf_str(b, t->thinking ? "<think>" : "</think>");
}

static void render_deepseek2(const ds_chat_template *t, const ds_chat_msg *m, const ds_role *roles,
                             size_t n, bool gen, ds_sbuf *b) {
    buf_str(b, t->bos);
    for (size_t i = 0; i < n; i++) {
        const char *c = m[i].content ? m[i].content : "";
        switch (roles[i]) {
        case ROLE_SYSTEM: buf_str(b, c); buf_str(b, "\n\n"); break;
        case ROLE_USER: buf_str(b, "User: "); buf_str(b, c); buf_str(b, "\n\n"); break;
        case ROLE_ASSISTANT: buf_str(b, "Assistant: "); buf_str(b, c); buf_str(b, t->eos); break;
        }
    }
    if (gen) buf_str(b, "Assistant:");
}

static void render_chatml(const ds_chat_msg *m, size_t n, bool gen, ds_sbuf *b) {
    for (size_t i = 0; i < n; i++) {
        buf_str(b, "<|im_start|>");
        buf_str(b, m[i].role);
        buf_str(b, "\n");
        buf_str(b, m[i].content ? m[i].content : "");
        buf_str(b, "<|im_end|>\n");
    }
    if (gen) buf_str(b, "<|im_start|>assistant\n");
}

ds_status ds_chat_render(const ds_chat_template *t, const ds_chat_msg *msgs, size_t n,
                         bool add_generation_prompt, char **out, size_t *out_len, ds_error *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    ds_role *roles = malloc((n ? n : 1) * sizeof *roles);
    if (!roles) return ds_error_set(err, DS_ERR_OOM, "chat: out of memory");
    ds_status st = check_roles(msgs, n, roles, err);
    if (st != DS_OK) {
        free(roles);
        return st;
    }
    ds_sbuf b = {0};
    ds_sbuf_append(&b, "", 0); /* an empty conversation still gives "" */
    switch (t->format) {
    case DS_CHAT_DEEPSEEK3:
    case DS_CHAT_DEEPSEEK_R1:
    case DS_CHAT_DEEPSEEK3_1: render_deepseek3(t, msgs, roles, n, add_generation_prompt, &b); break;
    case DS_CHAT_DEEPSEEK2: render_deepseek2(t, msgs, roles, n, add_generation_prompt, &b); break;
    case DS_CHAT_CHATML: render_chatml(msgs, n, add_generation_prompt, &b); break;
    }
    free(roles);
    if (b.oom) {
        free(b.p);
        return ds_error_set(err, DS_ERR_OOM, "chat: out of memory");
    }
    *out = b.p;
    if (out_len) *out_len = b.len;
    return DS_OK;
}

/* ---- <think> splitting ------------------------------------------------------------ */

enum { TH_START = 0, TH_START_REASON, TH_REASON, TH_CONTENT };

static const char k_open[] = "<think>";   /* '<' only at position 0 in both */
static const char k_close[] = "</think>"; /* tags, so a mismatch never hides a new start */

void ds_think_init(ds_think *t, bool start_in_reasoning) {
    memset(t, 0, sizeof *t);
    t->state = start_in_reasoning ? TH_START_REASON : TH_START;
    t->skip_ws = true;
}

static bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Bytes are passed on in runs of p where possible; a run is flushed before
 * anything else (held tag bytes, a section change) is emitted, so the order
 * of the output always follows the input. */
void ds_think_feed(ds_think *t, const char *p, size_t n, ds_think_emit_fn emit, void *ctx) {
    size_t run = 0, run_len = 0;
    bool run_reason = false;
#define FLUSH_RUN()                                        \
    do {                                                   \
        if (run_len) emit(ctx, run_reason, p + run, run_len); \
        run_len = 0;                                       \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        const char c = p[i];
    again:
        switch (t->state) {
        case TH_START:
        case TH_START_REASON: {
            if (t->n_hold == 0 && t->skip_ws && is_ws(c)) continue;
            if (c == k_open[t->n_hold]) {
                t->hold[t->n_hold++] = c;
                if (t->n_hold == sizeof k_open - 1) {
                    t->n_hold = 0;
                    t->state = TH_REASON;
                    t->skip_ws = true;
                }
                continue;
            }
            /* No opening tag: the reply starts in its first section. */
            bool r = t->state == TH_START_REASON;
            t->state = r ? TH_REASON : TH_CONTENT;
            t->skip_ws = false;
            if (t->n_hold) emit(ctx, r, t->hold, t->n_hold);
            t->n_hold = 0;
            goto again;
        }
        case TH_REASON:
            if (t->n_hold == 0 && t->skip_ws && is_ws(c)) continue;
            t->skip_ws = false;
            if (c == k_close[t->n_hold]) {
                if (t->n_hold == 0) FLUSH_RUN();
                t->hold[t->n_hold++] = c;
                if (t->n_hold == sizeof k_close - 1) {
                    t->n_hold = 0;
                    t->state = TH_CONTENT;
                    t->skip_ws = true;
                }
                continue;
            }
            if (t->n_hold) {
                emit(ctx, true, t->hold, t->n_hold);
                t->n_hold = 0;
                goto again;
            }
            if (run_len == 0) run = i, run_reason = true;
            run_len++;
            break;
        case TH_CONTENT:
            if (t->skip_ws && is_ws(c)) continue;
            t->skip_ws = false;
            if (run_len && run_reason) FLUSH_RUN();
            if (run_len == 0) run = i, run_reason = false;
            run_len++;
            break;
        }
    }
    FLUSH_RUN();
#undef FLUSH_RUN
}

void ds_think_finish(ds_think *t, ds_think_emit_fn emit, void *ctx) {
    if (t->n_hold) {
        bool r = t->state == TH_REASON || t->state == TH_START_REASON;
        emit(ctx, r, t->hold, t->n_hold);
    }
    t->n_hold = 0;
}

typedef struct {
    ds_sbuf reasoning, content;
} ds_think_bufs;

static void collect(void *ctx, bool reasoning, const char *p, size_t n) {
    ds_think_bufs *b = ctx;
    ds_sbuf_append(reasoning ? &b->reasoning : &b->content, p, n);
}

ds_status ds_think_split(const char *text, size_t len, bool start_in_reasoning, char **reasoning,
                         size_t *reasoning_len, char **content, size_t *content_len, ds_error *err) {
    *reasoning = *content = NULL;
    ds_think_bufs b = {0};
    ds_sbuf_append(&b.reasoning, "", 0);
    ds_sbuf_append(&b.content, "", 0);
    ds_think t;
    ds_think_init(&t, start_in_reasoning);
    ds_think_feed(&t, text, len, collect, &b);
    ds_think_finish(&t, collect, &b);
    if (b.reasoning.oom || b.content.oom) {
        free(b.reasoning.p);
        free(b.content.p);
        return ds_error_set(err, DS_ERR_OOM, "think split: out of memory");
    }
    *reasoning = b.reasoning.p;
    *content = b.content.p;
    if (reasoning_len) *reasoning_len = b.reasoning.len;
    if (content_len) *content_len = b.content.len;
    return DS_OK;
}
