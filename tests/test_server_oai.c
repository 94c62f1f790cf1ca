/* test_server_oai.c: the server's pure parts — OpenAI request parsing and
 * its error mapping, UTF-8 sanitising, SSE framing, response/chunk JSON,
 * and rendering parsed messages with the deepseek3 template.
 * Not a live server test: see test_server_live.c. */
#include "testutil.h"
#include "server/server.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static bool parse(ds_oai_kind k, const char *body, ds_oai_request *r, ds_http_error *e) {
    return ds_oai_parse(k, body, strlen(body), r, e);
}

/* Expects a 400-class failure with the given code. */
static void expect_fail(ds_oai_kind k, const char *body, int status, const char *code) {
    ds_oai_request r;
    ds_http_error e = { 0 };
    bool ok = parse(k, body, &r, &e);
    CHECK(!ok, "accepted: %s", body);
    if (ok) {
        ds_oai_request_free(&r);
        return;
    }
    CHECK(e.status == status, "%s: status %d, want %d", body, e.status, status);
    CHECK(code == NULL || (e.code && !strcmp(e.code, code)), "%s: code %s, want %s", body, e.code ? e.code : "(null)",
          code);
    /* the error object is valid JSON with the three fields */
    char *j = ds_http_error_json(&e);
    json_t *o = j ? json_loads(j, 0, NULL) : NULL;
    json_t *err = json_object_get(o, "error");
    CHECK(json_is_string(json_object_get(err, "message")) && json_is_string(json_object_get(err, "type")) &&
              json_object_get(err, "code"),
          "error JSON shape: %s", j ? j : "(null)");
    json_decref(o);
    free(j);
}

static void test_chat_parse(void) {
    ds_oai_request r;
    ds_http_error e;
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hel\"},{\"type\":\"text\","
                       "\"text\":\"lo\"}]},{\"role\":\"assistant\",\"content\":null}],\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"max_tokens\":7,\"temperature\":0,\"top_p\":0.5,"
                       "\"top_k\":3,\"min_p\":0.1,\"seed\":42,\"stop\":[\"a\",\"bc\"],\"presence_penalty\":0.5,"
                       "\"frequency_penalty\":-0.5,\"repeat_penalty\":1.1,\"logprobs\":true,\"top_logprobs\":3,\"n\":1,"
                       "\"response_format\":{\"type\":\"text\"},\"unknown_field\":[1,2]}";
    bool ok = parse(DS_OAI_CHAT, body, &r, &e);
    CHECK(ok, "full chat request parses: %s", ok ? "" : e.message);
    if (!ok) return;
    CHECK(r.n_msgs == 3, "3 messages");
    CHECK(!strcmp(r.msgs[0].role, "system") && !strcmp(r.msgs[0].content, "be brief"), "system message");
    CHECK(!strcmp(r.msgs[1].content, "hello"), "text parts joined: '%s'", r.msgs[1].content);
    CHECK(!strcmp(r.msgs[2].content, ""), "null content is empty");
    CHECK(r.stream && r.include_usage, "stream + include_usage");
    CHECK(r.max_tokens == 7, "max_tokens");
    CHECK(r.sp.temperature == 0 && r.sp.top_k == 3 && r.sp.seed == 42, "sampling fields");
    CHECK(r.sp.top_p == 0.5f && r.sp.min_p == 0.1f && r.sp.repeat_penalty == 1.1f, "sampling floats");
    CHECK(r.n_stop == 2 && !strcmp(r.stop[1], "bc"), "stop list");
    CHECK(r.logprobs && r.top_logprobs == 3, "logprobs");
    CHECK(r.model && !strcmp(r.model, "m"), "model");
    ds_oai_request_free(&r);

    /* defaults: llama.cpp's sampler, no limit */
    ok = parse(DS_OAI_CHAT, "{\"messages\":[{\"role\":\"developer\",\"content\":\"x\"}],\"stop\":\"END\","
                            "\"max_completion_tokens\":3}", &r, &e);
    CHECK(ok, "minimal chat parses");
    if (ok) {
        CHECK(!strcmp(r.msgs[0].role, "system"), "developer -> system");
        CHECK(r.n_stop == 1 && !strcmp(r.stop[0], "END"), "stop string");
        CHECK(r.max_tokens == 3, "max_completion_tokens");
        CHECK(!r.stream && r.sp.temperature == ds_sampler_default_params().temperature, "defaults");
        ds_oai_request_free(&r);
    }
}

static void test_completion_parse(void) {
    ds_oai_request r;
    ds_http_error e;
    bool ok = parse(DS_OAI_COMPLETION, "{\"prompt\":\"abc\",\"logprobs\":2}", &r, &e);
    CHECK(ok && r.prompt && !strcmp(r.prompt, "abc") && r.logprobs && r.top_logprobs == 2, "text prompt");
    if (ok) ds_oai_request_free(&r);
    ok = parse(DS_OAI_COMPLETION, "{\"prompt\":[\"one\"]}", &r, &e);
    CHECK(ok && r.prompt && !strcmp(r.prompt, "one"), "one-string array");
    if (ok) ds_oai_request_free(&r);
    ok = parse(DS_OAI_COMPLETION, "{\"prompt\":[1,2,3]}", &r, &e);
    CHECK(ok && r.n_prompt_ids == 3 && r.prompt_ids[2] == 3, "token prompt");
    if (ok) ds_oai_request_free(&r);
}

static void test_errors(void) {
    expect_fail(DS_OAI_CHAT, "", 400, "invalid_json");
    expect_fail(DS_OAI_CHAT, "{", 400, "invalid_json");
    expect_fail(DS_OAI_CHAT, "[1]", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{}", 400, "missing_field");
    expect_fail(DS_OAI_CHAT, "{\"messages\":[]}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{\"messages\":\"hi\"}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{\"messages\":[1]}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", 400, "missing_field");
    expect_fail(DS_OAI_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "invalid_value");
    expect_fail(DS_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
                "unsupported_content");
#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"n\":2}", 400, "invalid_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"max_tokens\":0}", 400, "invalid_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"max_tokens\":\"5\"}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"temperature\":\"hot\"}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"temperature\":-1}", 400, "invalid_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"top_p\":2}", 400, "invalid_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"stream\":1}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"stop\":[1]}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"top_logprobs\":2}", 400, "invalid_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"logprobs\":true,\"top_logprobs\":99}", 400, "invalid_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"response_format\":{\"type\":\"json_object\"}}", 400, "unsupported_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"tools\":[{}]}", 400, "unsupported_value");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"seed\":1.5}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{" MSG ",\"model\":1}", 400, "invalid_type");
    expect_fail(DS_OAI_CHAT, "{" MSG "," MSG "}", 400, "invalid_json"); /* duplicate keys */
    /* invalid UTF-8 and NUL inside strings never reach the tokenizer */
    expect_fail(DS_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "invalid_json");
    expect_fail(DS_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", 400, "invalid_json");
    expect_fail(DS_OAI_COMPLETION, "{}", 400, "missing_field");
    expect_fail(DS_OAI_COMPLETION, "{\"prompt\":[]}", 400, "invalid_type");
    expect_fail(DS_OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", 400, "invalid_value");
    expect_fail(DS_OAI_COMPLETION, "{\"prompt\":[1,-2]}", 400, "invalid_type");
    expect_fail(DS_OAI_COMPLETION, "{\"prompt\":5}", 400, "invalid_type");
#undef MSG
}

static void test_utf8_sse(void) {
    size_t n;
    char *s = ds_utf8_sanitize("a\xffz\xe2\x82", 5, &n);
    CHECK(s && !strcmp(s, "a\xEF\xBF\xBDz\xEF\xBF\xBD\xEF\xBF\xBD"), "invalid bytes -> U+FFFD each");
    free(s);
    s = ds_utf8_sanitize("h\xc3\xa9\xf0\x9f\x98\x80", 7, &n);
    CHECK(s && n == 7 && !memcmp(s, "h\xc3\xa9\xf0\x9f\x98\x80", 7), "valid UTF-8 unchanged");
    free(s);
    s = ds_utf8_sanitize("\xed\xa0\x80\xc0\xaf", 5, &n); /* surrogate, overlong */
    CHECK(s && n == 15, "surrogates and overlongs replaced (n=%zu)", n);
    free(s);
    CHECK(ds_utf8_valid_prefix("ab\xe2\x82", 4) == 2, "valid prefix stops before a cut character");

    ds_sbuf b = { 0 };
    ds_sse_event(&b, "{\"a\":1}");
    ds_sse_event(&b, NULL);
    CHECK(b.p && !strcmp(b.p, "data: {\"a\":1}\n\ndata: [DONE]\n\n"), "SSE framing: %s", b.p ? b.p : "");
    ds_sbuf_free(&b);
}

static void test_responses(void) {
    ds_oai_resp r = { .kind = DS_OAI_CHAT, .id = "chatcmpl-1", .model = "tiny", .created = 5 };
    ds_oai_text t = { .content = "hi \xff", .content_len = 4, .reasoning = "why", .reasoning_len = 3 };
    char *j = ds_oai_final_json(&r, &t, NULL, 0, false, "stop", 10, 2, 4);
    json_t *o = j ? json_loads(j, 0, NULL) : NULL;
    CHECK(o != NULL, "final JSON parses: %s", j ? j : "(null)");
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    json_t *msg = json_object_get(ch, "message");
    CHECK(!strcmp(json_string_value(json_object_get(o, "object")) ?: "", "chat.completion"), "object");
    CHECK(!strcmp(json_string_value(json_object_get(msg, "content")) ?: "", "hi \xEF\xBF\xBD"), "content sanitised");
    CHECK(!strcmp(json_string_value(json_object_get(msg, "reasoning_content")) ?: "", "why"), "reasoning_content");
    CHECK(!strcmp(json_string_value(json_object_get(ch, "finish_reason")) ?: "", "stop"), "finish_reason");
    json_t *u = json_object_get(o, "usage");
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == 10 &&
              json_integer_value(json_object_get(u, "completion_tokens")) == 2 &&
              json_integer_value(json_object_get(u, "total_tokens")) == 12,
          "usage numbers");
    json_decref(o);
    free(j);

    j = ds_oai_chunk_json(&r, true, &(ds_oai_text){ .content = "", .content_len = 0 }, NULL, 0, false, 0, NULL);
    o = j ? json_loads(j, 0, NULL) : NULL;
    ch = json_array_get(json_object_get(o, "choices"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(ch, "delta"), "role")) ?: "", "assistant"),
          "first chunk has the role");
    CHECK(json_is_null(json_object_get(ch, "finish_reason")), "finish_reason null while streaming");
    json_decref(o);
    free(j);

    j = ds_oai_usage_chunk_json(&r, 3, 4, 0);
    o = j ? json_loads(j, 0, NULL) : NULL;
    CHECK(json_array_size(json_object_get(o, "choices")) == 0 &&
              json_integer_value(json_object_get(json_object_get(o, "usage"), "total_tokens")) == 7,
          "usage chunk");
    json_decref(o);
    free(j);

    r.kind = DS_OAI_COMPLETION;
    ds_tok_rec rec = { .id = 5, .logprob = -0.5f, .n_top = 1, .top = { { 5, -0.5f } } };
    j = ds_oai_final_json(&r, &(ds_oai_text){ .content = "x", .content_len = 1 }, &rec, 1, true, "length", 1, 1, 0);
    o = j ? json_loads(j, 0, NULL) : NULL;
    ch = json_array_get(json_object_get(o, "choices"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(ch, "text")) ?: "", "x"), "completion text");
    CHECK(json_array_size(json_object_get(json_object_get(ch, "logprobs"), "token_logprobs")) == 1,
          "legacy logprobs arrays");
    json_decref(o);
    free(j);
}

/* Parsed messages render through the deepseek3 template (no tokenizer:
 * DeepSeek's default BOS/EOS texts). */
static void test_chat_render(void) {
    ds_oai_request r;
    ds_http_error e;
    bool ok = parse(DS_OAI_CHAT, "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\","
                                 "\"content\":\"U1\"},{\"role\":\"assistant\",\"content\":\"A1\"},{\"role\":\"user\","
                                 "\"content\":[{\"type\":\"text\",\"text\":\"U2\"}]}]}", &r, &e);
    CHECK(ok, "parse for rendering");
    if (!ok) return;
    ds_chat_template t;
    ds_error err = { 0 };
    CHECK(ds_chat_template_init(NULL, "deepseek3", &t, &err) == DS_OK, "deepseek3 template: %s", err.msg);
    char *text = NULL;
    size_t len = 0;
    CHECK(ds_chat_render(&t, r.msgs, r.n_msgs, true, &text, &len, &err) == DS_OK, "render: %s", err.msg);
    const char *want = "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>S"
                       "<\xef\xbd\x9cUser\xef\xbd\x9c>U1<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>A1"
                       "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
                       "<\xef\xbd\x9cUser\xef\xbd\x9c>U2<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";
    CHECK(text && !strcmp(text, want), "deepseek3 rendering:\n got %s\nwant %s", text ? text : "", want);
    free(text);
    CHECK(ds_chat_template_init(NULL, "no-such-template", &t, &err) != DS_OK, "unknown template rejected");
    ds_oai_request_free(&r);
}

int main(void) {
    test_chat_parse();
    test_completion_parse();
    test_errors();
    test_utf8_sse();
    test_responses();
    test_chat_render();
    return ds_test_finish("test_server_oai");
}
