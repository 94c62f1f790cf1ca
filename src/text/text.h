/* text.h: text in and out of the model. The byte-level BPE tokenizer read from
 * a GGUF (encode, decode, streaming decode), chat templates for the DeepSeek
 * families and ChatML, splitting a reply at <think>...</think>, and the sampler.
 * Not a Jinja engine: a GGUF's tokenizer.chat_template is only inspected to pick
 * one of the built-in formats, which C code renders. Not a grammar/tool-call
 * parser. */
#ifndef DS_TEXT_H
#define DS_TEXT_H

#include "../core/core.h"
#include "../gguf/gguf.h"

/* ==== tokenizer ========================================================== */

typedef struct ds_tokenizer ds_tokenizer; /* opaque, immutable after load */

/* tokenizer.ggml.token_type values (llama.cpp's numbering). */
typedef enum ds_token_type {
    DS_TOKEN_UNDEFINED = 0,
    DS_TOKEN_NORMAL = 1,
    DS_TOKEN_UNKNOWN = 2,
    DS_TOKEN_CONTROL = 3,      /* BOS/EOS, <｜User｜>: matched only with parse_special */
    DS_TOKEN_USER_DEFINED = 4, /* added tokens: always matched as whole strings */
    DS_TOKEN_UNUSED = 5,
    DS_TOKEN_BYTE = 6,
} ds_token_type;

#define DS_TOKEN_NULL (-1)

/* Reads tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,
 * eos_token_id,eot_token_id,add_bos_token} and tokenizer.chat_template from g.
 * Only model "gpt2" (byte-level BPE) is supported. Pre-tokenizers:
 * "deepseek-v3", "deepseek-llm", "deepseek-coder", "gpt2"; a missing key or
 * "default" gets llama.cpp's default chain; an unknown name gets the GPT-2
 * regex with a warning. Everything needed is copied: g may be closed right
 * after. Caller frees *out with ds_tokenizer_free. A tokenizer is read-only
 * after load, so any number of threads may tokenize with it at once. */
ds_status ds_tokenizer_load(const ds_gguf *g, ds_tokenizer **out, ds_error *err);
void ds_tokenizer_free(ds_tokenizer *tok); /* NULL is fine */

int32_t ds_tokenizer_n_vocab(const ds_tokenizer *tok);
int32_t ds_tokenizer_bos(const ds_tokenizer *tok); /* DS_TOKEN_NULL if none */
int32_t ds_tokenizer_eos(const ds_tokenizer *tok);
/* End of turn: tokenizer.ggml.eot_token_id, else a "<|EOT|>" token (coder
 * instruct), else EOS. */
int32_t ds_tokenizer_eot(const ds_tokenizer *tok);
/* True for EOS and EOT: generation stops there. */
bool ds_tokenizer_is_eog(const ds_tokenizer *tok, int32_t id);
/* tokenizer.ggml.add_bos_token (true when absent): whether a raw prompt
 * should start with BOS. */
bool ds_tokenizer_add_bos(const ds_tokenizer *tok);
/* The pre-tokenizer chain in use ("deepseek-v3", ..., "default", "gpt2"). */
const char *ds_tokenizer_pre(const ds_tokenizer *tok);
/* Exact vocabulary lookup of a token's stored text (e.g. "<｜User｜>");
 * DS_TOKEN_NULL if absent. For normal tokens the stored text is the GPT-2
 * byte-to-unicode form ("Ġthe"), not the decoded bytes. */
int32_t ds_tokenizer_find(const ds_tokenizer *tok, const char *text, size_t len);
ds_token_type ds_tokenizer_token_type(const ds_tokenizer *tok, int32_t id);
/* The stored text of a token (tokenizer-owned, NUL-terminated, valid until
 * ds_tokenizer_free); NULL for an out-of-range id. len may be NULL. */
const char *ds_tokenizer_token_text(const ds_tokenizer *tok, int32_t id, size_t *len);
/* tokenizer.chat_template as stored (tokenizer-owned, NUL-terminated); NULL if absent. */
const char *ds_tokenizer_chat_template(const ds_tokenizer *tok, size_t *len);

/* Encodes text[0..len). With parse_special, CONTROL tokens written in the text
 * ("<｜User｜>") become their ids; USER_DEFINED tokens always do (as in
 * llama.cpp and HF added tokens). At each position the longest such token wins.
 * The rest is split by the pre-tokenizer regex chain and BPE-merged by rank.
 * Invalid UTF-8 bytes are encoded as U+FFFD, as llama.cpp does.
 * Writes up to cap ids to out and the full count to *n_out. The count never
 * exceeds len + 1, so cap = len + 1 always suffices. If cap is too small,
 * the first cap ids are written and DS_ERR_INVALID_ARG is returned with
 * *n_out > cap (pass out = NULL, cap = 0 to measure). No state is kept. */
ds_status ds_tokenize(const ds_tokenizer *tok, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t *out, size_t cap, size_t *n_out,
                      ds_error *err);
/* Same, into a malloc'd array the caller frees with free(). */
ds_status ds_tokenize_alloc(const ds_tokenizer *tok, const char *text, size_t len,
                            bool add_bos, bool parse_special, int32_t **out,
                            size_t *n_out, ds_error *err);

/* The bytes one token stands for (tokenizer-owned, valid until
 * ds_tokenizer_free; *len set, the bytes are NOT NUL-terminated).
 * NORMAL tokens are mapped back through GPT-2's unicode-to-byte table (so a
 * piece may be part of a UTF-8 character); USER_DEFINED tokens give their
 * text; CONTROL/UNKNOWN/UNUSED tokens give their text when render_special,
 * else nothing. An out-of-range id gives NULL with *len = 0. */
const char *ds_token_piece(const ds_tokenizer *tok, int32_t id, bool render_special,
                           size_t *len);
/* The longest piece in bytes (for sizing buffers). */
size_t ds_tokenizer_max_piece(const ds_tokenizer *tok);

/* Concatenates the pieces of ids[0..n) into out (cap bytes, then a NUL if
 * room is left). *n_out = bytes needed, without the NUL. Too small a cap:
 * DS_ERR_INVALID_ARG with *n_out > cap, out holds a prefix. An out-of-range
 * id: DS_ERR_INVALID_ARG naming its position. */
ds_status ds_detokenize(const ds_tokenizer *tok, const int32_t *ids, size_t n,
                        bool render_special, char *out, size_t cap, size_t *n_out,
                        ds_error *err);

/* Streaming detokenizer for `run` and SSE: pushes one token at a time and
 * hands back only complete UTF-8, holding back up to 3 bytes of a character
 * that a later token finishes. Bytes that can never form a valid character
 * are passed through unchanged (not held, not replaced). */
typedef struct ds_detok ds_detok;
/* tok must outlive the detokenizer. Caller frees with ds_detok_free. */
ds_status ds_detok_create(const ds_tokenizer *tok, bool render_special, ds_detok **out,
                          ds_error *err);
void ds_detok_free(ds_detok *d);
void ds_detok_reset(ds_detok *d); /* drops held bytes */
/* Returns the bytes now ready (owned by d, valid until the next call on d;
 * *len may be 0). An out-of-range id is ignored. */
const char *ds_detok_push(ds_detok *d, int32_t id, size_t *len);
/* End of stream: returns the held bytes of an unfinished character as they
 * are (the stream ended mid-character), and resets. */
const char *ds_detok_flush(ds_detok *d, size_t *len);

/* ==== chat templates ===================================================== */

typedef enum ds_chat_format {
    DS_CHAT_DEEPSEEK3 = 0, /* V3 / V3-0324 */
    DS_CHAT_DEEPSEEK_R1,   /* R1 / R1-0528: prompt ends "<｜Assistant｜><think>\n" */
    DS_CHAT_DEEPSEEK3_1,   /* V3.1 hybrid: "</think>" (default) or "<think>" */
    DS_CHAT_DEEPSEEK2,     /* V2: "User: ...\n\nAssistant:" */
    DS_CHAT_CHATML,        /* <|im_start|>role\n...<|im_end|>\n */
} ds_chat_format;

typedef struct ds_chat_template {
    ds_chat_format format;
    bool thinking; /* DEEPSEEK3_1 only: open <think> in the generation prompt */
    char bos[64];  /* BOS text rendered first ("" = none) */
    char eos[64];  /* EOS text closing past assistant turns */
} ds_chat_template;

/* One message; both strings NUL-terminated (embedded NULs are not supported).
 * role: "system", "user" or "assistant". */
typedef struct ds_chat_msg {
    const char *role;
    const char *content;
} ds_chat_msg;

/* Names accepted by ds_chat_template_init (and --chat-template). */
#define DS_CHAT_TEMPLATE_NAMES "deepseek3, deepseek-r1, deepseek3.1, deepseek2, chatml"
const char *ds_chat_format_name(ds_chat_format f);

/* Picks the format by name, or, with name NULL, from the tokenizer's
 * tokenizer.chat_template (ds_chat_detect); without a template a tokenizer
 * that has "<｜User｜>" gets deepseek3, else chatml. BOS/EOS texts come from
 * tok (which may be NULL: then the DeepSeek defaults). An unknown name is
 * DS_ERR_INVALID_ARG with the known names in the message. */
ds_status ds_chat_template_init(const ds_tokenizer *tok, const char *name,
                                ds_chat_template *out, ds_error *err);
/* Recognises a Jinja chat template: "<｜User｜>"/"<｜Assistant｜>" -> the
 * DeepSeek 3 family (R1 when the generation prompt adds "<think>\n", V3.1 when
 * an assistant tag is followed by "</think>"); "'Assistant: ' + message['content']
 * + eos_token" -> deepseek2; anything else -> chatml. */
ds_chat_format ds_chat_detect(const char *tmpl, size_t len);

/* Renders msgs[0..n) into a malloc'd NUL-terminated string (*out, length
 * *out_len; caller frees with free()). The text starts with the BOS text, so
 * tokenize it with add_bos = false and parse_special = true. DeepSeek formats
 * put all system messages first (joined by "\n\n"), with no separator before
 * the first turn, as the models' own templates do; reasoning up to the last
 * "</think>" of a past assistant turn is dropped (R1's and V3.1's rule, kept
 * for V3 too). An unknown role is DS_ERR_INVALID_ARG. */
ds_status ds_chat_render(const ds_chat_template *t, const ds_chat_msg *msgs, size_t n,
                         bool add_generation_prompt, char **out, size_t *out_len,
                         ds_error *err);
/* True when the generation prompt of t leaves a <think> open, i.e. the reply
 * starts inside the reasoning (R1; V3.1 with thinking). */
bool ds_chat_starts_in_reasoning(const ds_chat_template *t);

/* ---- reasoning split: "<think>R</think>C" -> reasoning R, content C -------
 * Incremental: feed any chunks, the tags may be cut anywhere. Outside
 * reasoning, "<think>" opens it only at the start of the reply (after
 * whitespace); everything after "</think>" is content. Leading whitespace of
 * each part is dropped. A reply without tags is all content (or all
 * reasoning when started in reasoning and never closed). */
typedef void (*ds_think_emit_fn)(void *ctx, bool reasoning, const char *p, size_t n);
typedef struct ds_think {
    int state;      /* internal */
    bool skip_ws;   /* dropping leading whitespace of the current part */
    size_t n_hold;  /* bytes of a possible tag held back */
    char hold[16];
} ds_think;
void ds_think_init(ds_think *t, bool start_in_reasoning);
/* Calls emit zero or more times with parts of p; no allocation. */
void ds_think_feed(ds_think *t, const char *p, size_t n, ds_think_emit_fn emit, void *ctx);
/* End of reply: emits a held partial tag as text. */
void ds_think_finish(ds_think *t, ds_think_emit_fn emit, void *ctx);
/* Whole-text form: *reasoning and *content are malloc'd, NUL-terminated
 * (caller frees both with free()); lengths may be NULL. */
ds_status ds_think_split(const char *text, size_t len, bool start_in_reasoning,
                         char **reasoning, size_t *reasoning_len, char **content,
                         size_t *content_len, ds_error *err);

/* ==== sampler ============================================================
 * Order, as llama.cpp's default chain: penalties -> top_k -> top_p -> min_p
 * -> temperature -> draw. So top_p and min_p see the distribution at
 * temperature 1. temperature <= 0 is greedy: argmax of the penalised logits,
 * ties to the lowest id. */

#define DS_SEED_RANDOM UINT64_MAX

typedef struct ds_sampler_params {
    float temperature;       /* <= 0: greedy */
    int32_t top_k;           /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off; keep p >= min_p * p_max */
    float repeat_penalty;    /* 1: off; logit > 0 divided, <= 0 multiplied */
    int32_t repeat_last_n;   /* window of accepted tokens for all penalties; 0: off, -1: 65536 */
    float presence_penalty;  /* 0: off; subtracted once if the token is in the window */
    float frequency_penalty; /* 0: off; subtracted per occurrence in the window */
    uint64_t seed;           /* DS_SEED_RANDOM: from the clock */
} ds_sampler_params;

/* llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1 (off), repeat_last_n 64, presence/frequency 0, random seed. */
ds_sampler_params ds_sampler_default_params(void);

typedef struct ds_sampler ds_sampler; /* per-request state */
/* Allocates every buffer for n_vocab now; sampling allocates nothing.
 * Caller frees with ds_sampler_free. Bad params: DS_ERR_INVALID_ARG. */
ds_status ds_sampler_create(const ds_sampler_params *p, int32_t n_vocab, ds_sampler **out,
                            ds_error *err);
void ds_sampler_free(ds_sampler *s);
/* The seed actually used (the drawn one for DS_SEED_RANDOM). */
uint64_t ds_sampler_seed(const ds_sampler *s);
/* Clears the penalty history and restarts the RNG from seed. */
void ds_sampler_reset(ds_sampler *s, uint64_t seed);
/* Records a token in the penalty history (generated tokens, and prompt tokens
 * if the caller wants them penalised). */
void ds_sampler_accept(ds_sampler *s, int32_t id);
/* True when a pick is the plain argmax of the logits (temperature 0, no
 * penalties): ds_argmax_f32, or an argmax computed where the logits are
 * (ds_batch.best), gives the same id. */
bool ds_sampler_is_greedy(const ds_sampler *s);
/* Picks a token from logits[n_vocab] (read only). Does not accept it. */
int32_t ds_sampler_sample(ds_sampler *s, const float *logits);

typedef struct ds_logprob {
    int32_t id;
    float logprob;
} ds_logprob;
/* Log-softmax of the raw logits (the model's own distribution, before
 * penalties and temperature), for the server's logprobs: returns chosen's
 * log-probability and fills top[0..n_top) best first. No allocation. */
float ds_logprobs(const float *logits, int32_t n_vocab, int32_t chosen, ds_logprob *top,
                  int n_top);

#endif
