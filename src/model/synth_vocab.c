/* synth_vocab.c: the vocabulary of a `synth` model — GPT-2 byte-level BPE
 * ("gpt2" with the deepseek-v3 pre-tokenizer), BOS/EOS and the chat tags as
 * control tokens, generated merged tokens with their merges, and a chat
 * template in the DeepSeek-V3 format. Real enough that tokenization, chat
 * rendering and detokenization run their normal paths; the merged tokens are
 * random letter strings, not a trained vocabulary. Not the tokenizer itself
 * (src/text/). */
#include "synth.h"

#include <stdlib.h>
#include <string.h>

#define FW_BAR "\xEF\xBD\x9C"    /* U+FF5C, spelled out to stay encoding-proof */
#define LOW_BLOCK "\xE2\x96\x81" /* U+2581 */
#define TOK_BOS "<" FW_BAR "begin" LOW_BLOCK "of" LOW_BLOCK "sentence" FW_BAR ">"
#define TOK_EOS "<" FW_BAR "end" LOW_BLOCK "of" LOW_BLOCK "sentence" FW_BAR ">"
#define TOK_USER "<" FW_BAR "User" FW_BAR ">"
#define TOK_ASSISTANT "<" FW_BAR "Assistant" FW_BAR ">"

/* DeepSeek-V3's turn format (BOS, system text, <｜User｜>text, <｜Assistant｜>
 * text<｜end▁of▁sentence｜>, <｜Assistant｜> to prompt a reply) as a Jinja
 * template written for this file. It names the three tags llama.cpp and
 * ds_chat_detect look for, so both pick the deepseek3 format. */
static const char k_chat_template[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}"
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}{% endif %}{% endfor %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '" TOK_USER "' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '" TOK_ASSISTANT "' + message['content'] + '" TOK_EOS "' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '" TOK_ASSISTANT "' }}{% endif %}";

#define TOKEN_NORMAL 1
#define TOKEN_CONTROL 3
#define MAX_TOKEN_BYTES 24

typedef struct vocab {
    int n;                /* tokens */
    char **text;          /* [n] NUL-terminated, owned */
    int32_t *type;        /* [n] */
    char **merges;        /* [n_merges] "a b", owned */
    int n_merges;
    int32_t *slot;        /* hash table of token ids, -1 = empty */
    uint32_t mask;
    uint64_t rng;
} vocab;

static uint64_t rnd(vocab *v) { /* xorshift64*: plenty for picking strings */
    v->rng ^= v->rng >> 12;
    v->rng ^= v->rng << 25;
    v->rng ^= v->rng >> 27;
    return v->rng * 0x2545f4914f6cdd1dull;
}

static uint32_t hash_str(const char *s) { /* FNV-1a */
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static bool vocab_has(const vocab *v, const char *s) {
    for (uint32_t i = hash_str(s) & v->mask;; i = (i + 1) & v->mask) {
        if (v->slot[i] < 0) return false;
        if (strcmp(v->text[v->slot[i]], s) == 0) return true;
    }
}

/* Stores s (copied) as token id; false on OOM. The table is sized for all
 * n tokens up front, so it never fills. */
static bool vocab_put(vocab *v, int id, const char *s, int32_t type) {
    if (!(v->text[id] = strdup(s))) return false;
    v->type[id] = type;
    uint32_t i = hash_str(s) & v->mask;
    while (v->slot[i] >= 0) i = (i + 1) & v->mask;
    v->slot[i] = id;
    return true;
}

/* GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for
 * themselves, the rest for U+0100 + their rank among the non-printable. */
static void byte_token(int b, char out[4]) {
    int cp, rank = 0;
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    if (printable) cp = b;
    else {
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) rank++;
        cp = 256 + rank;
    }
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

/* A growable list of token ids to combine. */
typedef struct { int32_t *id; int n, cap; } idlist;

static bool idlist_push(idlist *l, int32_t id) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        int32_t *p = realloc(l->id, (size_t)cap * sizeof *p);
        if (!p) return false;
        l->id = p;
        l->cap = cap;
    }
    l->id[l->n++] = id;
    return true;
}

/* Picks from l, favouring early (shorter, more frequent) tokens, as a trained
 * BPE builds long tokens from common short ones. */
static int32_t pick(vocab *v, const idlist *l) {
    double u = (double)(rnd(v) >> 11) / 9007199254740992.0;
    return l->id[(int)(u * u * l->n)];
}

/* Adds merged token a+b with merge "a b" at id; false if it exists or is too long. */
static int add_merge(vocab *v, int id, int32_t a, int32_t b) {
    char s[2 * MAX_TOKEN_BYTES + 2];
    size_t la = strlen(v->text[a]), lb = strlen(v->text[b]);
    if (la + lb > MAX_TOKEN_BYTES) return 0;
    memcpy(s, v->text[a], la);
    memcpy(s + la, v->text[b], lb + 1);
    if (vocab_has(v, s)) return 0;
    char *m = malloc(la + lb + 2);
    if (!m) return -1;
    memcpy(m, v->text[a], la);
    m[la] = ' ';
    memcpy(m + la + 1, v->text[b], lb + 1);
    v->merges[v->n_merges++] = m;
    return vocab_put(v, id, s, TOKEN_NORMAL) ? 1 : -1;
}

/* Fills every id not yet taken with merged tokens: a few digit pairs (the
 * pre-tokenizer groups up to 3 digits), then letter strings, about half
 * of them word-initial ("Ġword", Ġ being the space byte). */
static bool make_merges(vocab *v, int first_free) {
    idlist letters = { 0 }, words = { 0 };
    bool ok = true;
    int32_t space = 2 + ' ', id = first_free;
    /* most frequent first, so the biased picks favour common letters */
    const char *order = "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ";
    for (const char *c = order; *c && ok; c++) ok = idlist_push(&letters, 2 + (uint8_t)*c);
    ok = ok && idlist_push(&words, space);
    int digit_pairs = v->n >= 4096 ? 100 : 0;
    for (int k = 0; ok && id < v->n; id++) {
        if (v->text[id]) continue; /* a special token's id */
        int r = 0;
        if (k < digit_pairs) {
            r = add_merge(v, id, 2 + '0' + k / 10, 2 + '0' + k % 10);
            k++;
        } else {
            for (int tries = 0; r == 0 && tries < 1000000; tries++) {
                bool word = rnd(v) & 1;
                int32_t a = pick(v, word ? &words : &letters), b = pick(v, &letters);
                r = add_merge(v, id, a, b);
                if (r == 1) ok = idlist_push(word ? &words : &letters, id);
            }
        }
        if (r != 1) ok = false; /* OOM, or the letter space ran out (cannot happen below 2^30 tokens) */
    }
    free(letters.id);
    free(words.id);
    return ok;
}

static void vocab_free(vocab *v) {
    for (int i = 0; v->text && i < v->n; i++) free(v->text[i]);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->text);
    free(v->type);
    free(v->merges);
    free(v->slot);
}

ds_status ds_synth_vocab(ds_gguf_writer *w, int n_vocab, uint64_t seed, ds_error *err) {
    if (n_vocab < 512) return ds_error_set(err, DS_ERR_INVALID_ARG, "synth: vocabulary of %d tokens (need >= 512)", n_vocab);
    vocab v = { .n = n_vocab, .rng = seed * 0x9e3779b97f4a7c15ull + 1 };
    uint32_t cap = 1;
    while (cap < 2u * (uint32_t)n_vocab) cap <<= 1;
    v.mask = cap - 1;
    v.text = calloc((size_t)n_vocab, sizeof *v.text);
    v.type = calloc((size_t)n_vocab, sizeof *v.type);
    v.merges = calloc((size_t)n_vocab, sizeof *v.merges);
    v.slot = malloc(cap * sizeof *v.slot);
    ds_status st = DS_ERR_OOM;
    if (!v.text || !v.type || !v.merges || !v.slot) goto done;
    memset(v.slot, 0xff, cap * sizeof *v.slot);

    /* V3's ids for the chat tags when the vocabulary is V3-sized */
    int id_user = n_vocab >= 128805 ? 128803 : n_vocab - 2, id_assistant = id_user + 1;
    bool ok = vocab_put(&v, 0, TOK_BOS, TOKEN_CONTROL) && vocab_put(&v, 1, TOK_EOS, TOKEN_CONTROL) &&
              vocab_put(&v, id_user, TOK_USER, TOKEN_CONTROL) && vocab_put(&v, id_assistant, TOK_ASSISTANT, TOKEN_CONTROL);
    for (int b = 0; b < 256 && ok; b++) {
        char s[4];
        byte_token(b, s);
        ok = vocab_put(&v, 2 + b, s, TOKEN_NORMAL);
    }
    if (!ok || !make_merges(&v, 258)) goto done;

    uint64_t *lens = malloc((size_t)n_vocab * sizeof *lens);
    if (!lens) goto done;
    for (int i = 0; i < n_vocab; i++) lens[i] = strlen(v.text[i]);
    st = ds_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (!st) st = ds_gguf_writer_set_str(w, "tokenizer.ggml.pre", "deepseek-v3");
    if (!st) st = ds_gguf_writer_set_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)v.text, lens, (uint64_t)n_vocab);
    if (!st) st = ds_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", DS_GGUF_I32, v.type, (uint64_t)n_vocab);
    if (!st) st = ds_gguf_writer_set_str_arr(w, "tokenizer.ggml.merges", (const char *const *)v.merges, NULL, (uint64_t)v.n_merges);
    if (!st) st = ds_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 0);
    if (!st) st = ds_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 1);
    if (!st) st = ds_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    if (!st) st = ds_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    if (!st) st = ds_gguf_writer_set_str(w, "tokenizer.chat_template", k_chat_template);
    free(lens);
done:
    vocab_free(&v);
    if (st) return ds_error_set(err, st, "synth: cannot build the vocabulary (%s)", ds_status_name(st));
    return DS_OK;
}
