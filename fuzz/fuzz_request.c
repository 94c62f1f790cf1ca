/* fuzz_request.c: libFuzzer target for the server's request parser: the
 * first byte picks chat or completions, the rest is the HTTP body given to
 * ds_oai_parse; accepted requests are checked for internal consistency,
 * failures must serialise as an error object, and the parsed text goes
 * through the UTF-8 sanitiser and SSE framing.
 * Not an HTTP-level fuzzer (libmicrohttpd parses the framing). */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    ds_oai_kind kind = (data[0] & 1) ? DS_OAI_COMPLETION : DS_OAI_CHAT;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    ds_oai_request r;
    ds_http_error e;
    if (!ds_oai_parse(kind, body, len, &r, &e)) {
        /* every failure is a 4xx/5xx with a message that serialises */
        if (e.status < 400 || e.status > 599 || !e.type) abort();
        char *j = ds_http_error_json(&e);
        if (!j) abort();
        free(j);
        return 0;
    }
    if (kind == DS_OAI_CHAT && (r.n_msgs == 0 || !r.msgs)) abort();
    for (size_t i = 0; i < r.n_msgs; i++)
        if (!r.msgs[i].role || !r.msgs[i].content) abort();
    if (kind == DS_OAI_COMPLETION && !r.prompt && !r.n_prompt_ids) abort();
    if (r.n_stop < 0 || r.n_stop > DS_OAI_MAX_STOP) abort();
    if (r.top_logprobs < 0 || r.top_logprobs > DS_OAI_MAX_TOP_LOGPROBS) abort();
    if (r.max_tokens == 0 || r.max_tokens < -1) abort();
    /* the message text goes through the sanitiser and the SSE framing */
    const char *c = kind == DS_OAI_CHAT ? r.msgs[r.n_msgs - 1].content : (r.prompt ? r.prompt : "");
    size_t n;
    char *clean = ds_utf8_sanitize(c, strlen(c), &n);
    if (!clean || ds_utf8_valid_prefix(clean, n) != n) abort();
    free(clean);
    ds_sbuf b = { 0 };
    ds_sse_event(&b, c);
    ds_sbuf_free(&b);
    ds_oai_request_free(&r);
    return 0;
}
