/* test_chat.c: chat template rendering (exact strings for every built-in
 * format), template detection and naming errors, and the <think> splitter fed
 * whole and one byte at a time.
 * Not a tokenizer test beyond checking that a rendered prompt starts with BOS. */
#include "testutil.h"
#include "text/text.h"

#include <stdlib.h>
#include <string.h>

#define FW "\xEF\xBD\x9C"
#define LB "\xE2\x96\x81"
#define USER "<" FW "User" FW ">"
#define ASSIST "<" FW "Assistant" FW ">"
#define BOS "<" FW "begin" LB "of" LB "sentence" FW ">"
#define EOS "<" FW "end" LB "of" LB "sentence" FW ">"

static const ds_chat_msg k_conv[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hi there"},
    {"assistant", "<think>\nThe user greets.\n</think>\n\nHello! How can I help?"},
    {"user", "What is 2+2?"},
};
#define N_CONV (sizeof k_conv / sizeof k_conv[0])

static void expect_render(const char *name, bool thinking, const ds_chat_msg *m, size_t n, bool gen,
                          const char *want) {
    ds_chat_template t;
    ds_error err = {0};
    if (ds_chat_template_init(NULL, name, &t, &err) != DS_OK) {
        CHECK(0, "%s: %s", name, err.msg);
        return;
    }
    t.thinking = thinking;
    char *out = NULL;
    size_t len = 0;
    ds_status st = ds_chat_render(&t, m, n, gen, &out, &len, &err);
    CHECK(st == DS_OK, "%s: %s", name, err.msg);
    CHECK(out && len == strlen(want) && strcmp(out, want) == 0, "%s%s render:\n  got  [%s]\n  want [%s]",
          name, thinking ? " (thinking)" : "", out ? out : "(null)", want);
    free(out);
}

static void test_render(void) {
    /* V3: BOS, system with no separator, tagged turns, EOS after replies;
     * past reasoning dropped. */
    expect_render("deepseek3", false, k_conv, N_CONV, true,
                  BOS "You are a helpful assistant." USER "Hi there" ASSIST
                      "\n\nHello! How can I help?" EOS USER "What is 2+2?" ASSIST);
    const ds_chat_msg plain[] = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}};
    expect_render("deepseek3", false, plain, 3, true, BOS USER "a" ASSIST "b" EOS USER "c" ASSIST);
    /* R1: past reasoning dropped, the reply starts inside <think>. */
    expect_render("deepseek-r1", false, k_conv, N_CONV, true,
                  BOS "You are a helpful assistant." USER "Hi there" ASSIST
                      "\n\nHello! How can I help?" EOS USER "What is 2+2?" ASSIST "<think>\n");
    /* V3.1: replies marked non-thinking; the prompt closes or opens <think>. */
    expect_render("deepseek3.1", false, k_conv, N_CONV, true,
                  BOS "You are a helpful assistant." USER "Hi there" ASSIST
                      "</think>\n\nHello! How can I help?" EOS USER "What is 2+2?" ASSIST "</think>");
    expect_render("deepseek3.1", true, k_conv, N_CONV, true,
                  BOS "You are a helpful assistant." USER "Hi there" ASSIST
                      "</think>\n\nHello! How can I help?" EOS USER "What is 2+2?" ASSIST "<think>");
    /* No generation prompt: the conversation as it stands. */
    expect_render("deepseek3", false, k_conv, 2, false, BOS "You are a helpful assistant." USER "Hi there");
    /* V2. */
    const ds_chat_msg v2[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
    expect_render("deepseek2", false, v2, 4, true,
                  BOS "Be brief.\n\nUser: Hi\n\nAssistant: Hello" EOS "User: Bye\n\nAssistant:");
    /* ChatML: no BOS, role headers. */
    expect_render("chatml", false, v2, 4, true,
                  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                  "<|im_start|>assistant\n");
    /* Two system messages are joined; an empty conversation renders BOS only. */
    const ds_chat_msg two_sys[] = {{"system", "A"}, {"user", "q"}, {"system", "B"}};
    expect_render("deepseek3", false, two_sys, 3, true, BOS "A\n\nB" USER "q" ASSIST);
    expect_render("deepseek3", false, NULL, 0, false, BOS);
}

static void test_errors(void) {
    ds_chat_template t;
    ds_error err = {0};
    ds_status st = ds_chat_template_init(NULL, "llama3", &t, &err);
    CHECK(st == DS_ERR_INVALID_ARG, "unknown template: %d", st);
    CHECK(strstr(err.msg, "llama3") && strstr(err.msg, "deepseek3") && strstr(err.msg, "chatml"),
          "message lists names: %s", err.msg);

    ds_chat_template_init(NULL, "deepseek3", &t, &err);
    const ds_chat_msg bad[] = {{"user", "x"}, {"wizard", "y"}};
    char *out = (char *)1;
    st = ds_chat_render(&t, bad, 2, true, &out, NULL, &err);
    CHECK(st == DS_ERR_INVALID_ARG && out == NULL, "unknown role");
    CHECK(strstr(err.msg, "wizard") && strstr(err.msg, "1"), "role message: %s", err.msg);
}

static void test_detect(void) {
    /* Fragments in the shape of the real Jinja templates. */
    const char *v3 = "{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}"
                     "{{'" USER "' + message['content']}}{{'" ASSIST "' + message['content'] + '" EOS "'}}"
                     "{% if add_generation_prompt %}{{'" ASSIST "'}}{% endif %}";
    const char *r1 = "{{'" USER "' + message['content']}}{{'" ASSIST "' + content + '" EOS "'}}"
                     "{% if add_generation_prompt and not ns.is_tool %}{{'" ASSIST "<think>\\n'}}{% endif %}";
    const char *v31 = "{{'" USER "' + message['content']}}{%- if ns.is_last_user %}{{'" ASSIST
                      "</think>'}}{% endif %}{%- if not thinking %}{{'</think>'}}{%- else %}{{'<think>'}}";
    const char *v2 = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                     "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
                     "{{ 'Assistant: ' + message['content'] + eos_token }}{% endif %}{% endfor %}";
    const char *ml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}";
    CHECK(ds_chat_detect(v3, strlen(v3)) == DS_CHAT_DEEPSEEK3, "v3");
    CHECK(ds_chat_detect(r1, strlen(r1)) == DS_CHAT_DEEPSEEK_R1, "r1");
    CHECK(ds_chat_detect(v31, strlen(v31)) == DS_CHAT_DEEPSEEK3_1, "v3.1");
    CHECK(ds_chat_detect(v2, strlen(v2)) == DS_CHAT_DEEPSEEK2, "v2");
    CHECK(ds_chat_detect(ml, strlen(ml)) == DS_CHAT_CHATML, "chatml");
    CHECK(ds_chat_detect(NULL, 0) == DS_CHAT_CHATML, "none");
    CHECK(strcmp(ds_chat_format_name(DS_CHAT_DEEPSEEK_R1), "deepseek-r1") == 0, "name");

    ds_chat_template t = {.format = DS_CHAT_DEEPSEEK_R1};
    CHECK(ds_chat_starts_in_reasoning(&t), "r1 starts in reasoning");
    t.format = DS_CHAT_DEEPSEEK3_1;
    CHECK(!ds_chat_starts_in_reasoning(&t), "v3.1 default non-thinking");
    t.thinking = true;
    CHECK(ds_chat_starts_in_reasoning(&t), "v3.1 thinking");
}

/* With a tokenizer: BOS/EOS texts come from the vocabulary and the rendered
 * prompt's first token is BOS. */
static void test_with_tokenizer(void) {
    ds_error err = {0};
    ds_gguf *g;
    if (ds_gguf_open(ds_test_data("tokenizer/ggml-vocab-deepseek-llm.gguf"), &g, &err) != DS_OK) {
        CHECK(0, "%s", err.msg);
        return;
    }
    ds_tokenizer *tok;
    ds_status st = ds_tokenizer_load(g, &tok, &err);
    ds_gguf_close(g);
    if (st != DS_OK) {
        CHECK(0, "%s", err.msg);
        return;
    }
    ds_chat_template t;
    /* This vocabulary has no chat template and no <｜User｜>: ChatML. */
    CHECK(ds_chat_template_init(tok, NULL, &t, &err) == DS_OK && t.format == DS_CHAT_CHATML, "fallback");
    CHECK(ds_chat_template_init(tok, "deepseek3", &t, &err) == DS_OK, "%s", err.msg);
    CHECK(strcmp(t.bos, BOS) == 0 && strcmp(t.eos, EOS) == 0, "bos/eos from vocab");
    char *text;
    size_t len;
    CHECK(ds_chat_render(&t, k_conv, N_CONV, true, &text, &len, &err) == DS_OK, "%s", err.msg);
    int32_t *ids;
    size_t n;
    CHECK(ds_tokenize_alloc(tok, text, len, false, true, &ids, &n, &err) == DS_OK, "%s", err.msg);
    CHECK(n > 10 && ids[0] == ds_tokenizer_bos(tok), "first token is BOS");
    int eos_count = 0;
    for (size_t i = 0; i < n; i++) eos_count += ids[i] == ds_tokenizer_eos(tok);
    CHECK(eos_count == 1, "one EOS token after the past reply (%d)", eos_count);
    free(ids);
    free(text);
    ds_tokenizer_free(tok);
}

/* ---- think splitting ---- */

typedef struct {
    char r[512], c[512];
    size_t nr, nc;
} parts;

static void on_part(void *ctx, bool reasoning, const char *p, size_t n) {
    parts *s = ctx;
    char *dst = reasoning ? s->r : s->c;
    size_t *nn = reasoning ? &s->nr : &s->nc;
    if (*nn + n < 511) memcpy(dst + *nn, p, n);
    *nn += n;
    dst[*nn < 511 ? *nn : 511] = 0;
}

static void expect_split(const char *text, bool start_reason, const char *want_r, const char *want_c) {
    ds_error err = {0};
    char *r, *c;
    size_t nr, nc;
    ds_status st = ds_think_split(text, strlen(text), start_reason, &r, &nr, &c, &nc, &err);
    CHECK(st == DS_OK, "%s", err.msg);
    if (st != DS_OK) return;
    CHECK(strcmp(r, want_r) == 0 && nr == strlen(want_r), "whole [%s]: reasoning [%s] want [%s]", text, r, want_r);
    CHECK(strcmp(c, want_c) == 0 && nc == strlen(want_c), "whole [%s]: content [%s] want [%s]", text, c, want_c);
    free(r);
    free(c);

    /* The same, streamed one byte at a time. */
    parts s = {0};
    ds_think t;
    ds_think_init(&t, start_reason);
    for (size_t i = 0; text[i]; i++) ds_think_feed(&t, text + i, 1, on_part, &s);
    ds_think_finish(&t, on_part, &s);
    CHECK(strcmp(s.r, want_r) == 0, "1-byte [%s]: reasoning [%s] want [%s]", text, s.r, want_r);
    CHECK(strcmp(s.c, want_c) == 0, "1-byte [%s]: content [%s] want [%s]", text, s.c, want_c);
}

static void test_think(void) {
    expect_split("<think>\nI should add.\n</think>\n\nIt is 4.", false, "I should add.\n", "It is 4.");
    expect_split("  <think>x</think>y", false, "x", "y");
    /* R1: the prompt opened <think>, the reply only closes it. */
    expect_split("\nLet me think...\n</think>\n\nAnswer", true, "Let me think...\n", "Answer");
    expect_split("<think>a</think>b", true, "a", "b");
    expect_split("Just content.", false, "", "Just content.");
    expect_split("", false, "", "");
    expect_split("never closed", true, "never closed", "");
    /* Look-alikes are text. */
    expect_split("<thinking> is not a tag", false, "", "<thinking> is not a tag");
    expect_split("a</thinker>b < c </think>d</think>e", true, "a</thinker>b < c ", "d</think>e");
    expect_split("<table>", false, "", "<table>");
    /* <think> opens only at the start. */
    expect_split("Hi <think>x</think>", false, "", "Hi <think>x</think>");
    /* A reply cut inside a tag keeps the bytes. */
    expect_split("abc</thi", true, "abc</thi", "");
    expect_split("<thi", false, "", "<thi");
}

int main(void) {
    test_render();
    test_errors();
    test_detect();
    test_with_tokenizer();
    test_think();
    return ds_test_finish("test_chat");
}
