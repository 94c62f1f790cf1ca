/* tokenizer.c: the byte-level BPE tokenizer ("gpt2" model) read from GGUF —
 * vocabulary and merge tables, special-token matching, BPE merging by rank,
 * token pieces and the streaming detokenizer.
 * Not the regex pre-tokenizer (pretok.c) and not SentencePiece/WordPiece. */
#include "text_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- hashing ---------------------------------------------------------------- */

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---- the tokenizer ------------------------------------------------------------ */

/* Text -> id, open addressing over ids whose texts live in the tokenizer. */
typedef struct ds_strmap {
    int32_t *slot; /* [cap] id + 1, 0 = empty */
    uint64_t mask;
} ds_strmap;

/* (left id, right id) -> merge rank and merged id. */
typedef struct ds_mergemap {
    uint64_t *key; /* [cap] left << 32 | right, UINT64_MAX = empty */
    int32_t *rank; /* [cap] */
    int32_t *res;  /* [cap] id of the merged token */
    uint64_t mask;
} ds_mergemap;

struct ds_tokenizer {
    int32_t n_vocab;
    char *text;          /* all token texts, each NUL-terminated */
    uint32_t *text_off;  /* [n_vocab] */
    uint32_t *text_len;  /* [n_vocab] */
    char *piece;         /* decoded bytes of every token */
    uint32_t *piece_off; /* [n_vocab] */
    uint32_t *piece_len; /* [n_vocab] */
    uint8_t *type;       /* [n_vocab] ds_token_type */
    size_t max_piece;

    ds_strmap vocab;   /* every token; a later duplicate text wins, as in llama.cpp */
    ds_mergemap merges;
    int32_t byte_id[256]; /* token of each raw byte's GPT-2 character, or -1 */

    /* Special tokens (CONTROL, USER_DEFINED, UNKNOWN) found by a scan: for a
     * position starting with byte b, try the lengths len_list[len_start[b] ..
     * len_start[b + 1]) longest first. */
    ds_strmap special;
    uint32_t len_start[257];
    uint32_t *len_list;

    ds_pretok *pretok;
    const char *pre_name;
    int32_t bos, eos, eot;
    bool add_bos;
    char *chat_template;
    size_t chat_template_len;
};

static const char *tok_text(const ds_tokenizer *t, int32_t id, uint32_t *len) {
    *len = t->text_len[id];
    return t->text + t->text_off[id];
}

static bool strmap_init(ds_strmap *m, uint64_t n) {
    uint64_t cap = pow2_at_least(n * 2);
    m->slot = calloc(cap, sizeof *m->slot);
    m->mask = cap - 1;
    return m->slot != NULL;
}

static void strmap_put(ds_strmap *m, const ds_tokenizer *t, int32_t id) {
    uint32_t len;
    const char *s = tok_text(t, id, &len);
    uint64_t i = hash_bytes(s, len) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t cur = m->slot[i] - 1;
        if (cur < 0) break;
        uint32_t cl;
        const char *cs = tok_text(t, cur, &cl);
        if (cl == len && memcmp(cs, s, len) == 0) break; /* replace */
    }
    m->slot[i] = id + 1;
}

static int32_t strmap_get(const ds_strmap *m, const ds_tokenizer *t, const char *s, size_t len) {
    if (!m->slot) return DS_TOKEN_NULL;
    uint64_t i = hash_bytes(s, len) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t cur = m->slot[i] - 1;
        if (cur < 0) return DS_TOKEN_NULL;
        uint32_t cl;
        const char *cs = tok_text(t, cur, &cl);
        if (cl == len && memcmp(cs, s, len) == 0) return cur;
    }
}

static bool mergemap_init(ds_mergemap *m, uint64_t n) {
    uint64_t cap = pow2_at_least(n * 2);
    m->key = malloc(cap * sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->res = malloc(cap * sizeof *m->res);
    m->mask = cap - 1;
    if (!m->key || !m->rank || !m->res) return false;
    memset(m->key, 0xFF, cap * sizeof *m->key);
    return true;
}

/* Keeps the first (lowest-rank) entry of a duplicated pair. */
static void mergemap_put(ds_mergemap *m, uint64_t key, int32_t rank, int32_t res) {
    uint64_t i = hash_u64(key) & m->mask;
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == key) return;
        i = (i + 1) & m->mask;
    }
    m->key[i] = key;
    m->rank[i] = rank;
    m->res[i] = res;
}

static bool mergemap_get(const ds_mergemap *m, int32_t l, int32_t r, int32_t *rank, int32_t *res) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    uint64_t i = hash_u64(key) & m->mask;
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == key) {
            *rank = m->rank[i];
            *res = m->res[i];
            return true;
        }
        i = (i + 1) & m->mask;
    }
    return false;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes get U+0100.. in byte order, so every byte is a visible
 * character a vocabulary can hold. */
static void gpt2_byte_map(uint32_t byte_cp[256], int16_t cp_byte[512]) {
    for (int i = 0; i < 512; i++) cp_byte[i] = -1;
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_cp[b] = self ? (uint32_t)b : next++;
        cp_byte[byte_cp[b]] = (int16_t)b;
    }
}

void ds_tokenizer_free(ds_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->piece);
    free(t->piece_off);
    free(t->piece_len);
    free(t->type);
    free(t->vocab.slot);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.res);
    free(t->special.slot);
    free(t->len_list);
    ds_pretok_free(t->pretok);
    free(t->chat_template);
    free(t);
}

static bool is_special_type(uint8_t ty) {
    return ty == DS_TOKEN_CONTROL || ty == DS_TOKEN_USER_DEFINED || ty == DS_TOKEN_UNKNOWN;
}

/* Decoded bytes of one token, written at dst (room for its text's length). */
static size_t decode_token(const ds_tokenizer *t, int32_t id, const int16_t cp_byte[512],
                           char *dst) {
    uint32_t len;
    const unsigned char *s = (const unsigned char *)tok_text(t, id, &len);
    uint8_t ty = t->type[id];
    if (ty != DS_TOKEN_NORMAL && ty != DS_TOKEN_UNDEFINED) {
        /* "<0xAB>" byte tokens are one raw byte; other kinds are their text. */
        if (ty == DS_TOKEN_BYTE && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
            char hex[3] = {(char)s[3], (char)s[4], 0};
            dst[0] = (char)strtol(hex, NULL, 16);
            return 1;
        }
        memcpy(dst, s, len);
        return len;
    }
    size_t n = 0;
    for (uint32_t i = 0; i < len;) {
        int l = ds_utf8_valid_len(s + i, len - i);
        if (l <= 0) { /* a broken vocabulary entry: keep the byte */
            dst[n++] = (char)s[i++];
            continue;
        }
        uint32_t cp = s[i] & (l == 1 ? 0x7F : l == 2 ? 0x1F : l == 3 ? 0x0F : 0x07);
        for (int k = 1; k < l; k++) cp = (cp << 6) | (s[i + k] & 0x3F);
        if (cp < 512 && cp_byte[cp] >= 0) {
            dst[n++] = (char)cp_byte[cp];
        } else { /* not a byte-level character: pass it through */
            memcpy(dst + n, s + i, (size_t)l);
            n += (size_t)l;
        }
        i += (uint32_t)l;
    }
    return n;
}

static ds_status load_vocab(ds_tokenizer *t, const ds_gguf *g, ds_error *err) {
    const ds_gguf_value *toks = ds_gguf_get_arr(g, "tokenizer.ggml.tokens", DS_GGUF_STR);
    if (!toks) return ds_error_set(err, DS_ERR_NOT_FOUND, "tokenizer: tokenizer.ggml.tokens missing or not a string array");
    if (toks->arr.n == 0 || toks->arr.n > INT32_MAX / 2)
        return ds_error_set(err, DS_ERR_FORMAT, "tokenizer: %llu tokens", (unsigned long long)toks->arr.n);
    int32_t n = (int32_t)toks->arr.n;
    t->n_vocab = n;

    uint64_t total = 0;
    for (int32_t i = 0; i < n; i++) total += toks->arr.strs[i].len + 1;
    if (total > UINT32_MAX / 4)
        return ds_error_set(err, DS_ERR_FORMAT, "tokenizer: token texts too large (%llu bytes)", (unsigned long long)total);
    t->text = malloc(total);
    t->text_off = malloc((size_t)n * sizeof *t->text_off);
    t->text_len = malloc((size_t)n * sizeof *t->text_len);
    t->type = malloc((size_t)n);
    /* A decoded piece is never longer than its text: each character becomes
     * one byte or stays as it is. */
    t->piece = malloc(total);
    t->piece_off = malloc((size_t)n * sizeof *t->piece_off);
    t->piece_len = malloc((size_t)n * sizeof *t->piece_len);
    if (!t->text || !t->text_off || !t->text_len || !t->type || !t->piece || !t->piece_off || !t->piece_len)
        return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory for %d tokens", n);
    uint32_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        const ds_gguf_str *s = &toks->arr.strs[i];
        memcpy(t->text + off, s->ptr, s->len);
        t->text[off + s->len] = 0;
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)s->len;
        off += (uint32_t)s->len + 1;
    }

    /* token_type is optional (all normal); any integer element type is read. */
    memset(t->type, DS_TOKEN_NORMAL, (size_t)n);
    const ds_gguf_value *types = ds_gguf_get_arr(g, "tokenizer.ggml.token_type", -1);
    if (types) {
        if (types->arr.n != (uint64_t)n)
            return ds_error_set(err, DS_ERR_FORMAT, "tokenizer: %llu token types for %d tokens",
                                (unsigned long long)types->arr.n, n);
        const uint8_t *d = types->arr.data;
        for (int32_t i = 0; i < n; i++) {
            int64_t v;
            switch (types->arr.type) {
            case DS_GGUF_I32: { int32_t x; memcpy(&x, d + 4 * (size_t)i, 4); v = x; break; }
            case DS_GGUF_U32: { uint32_t x; memcpy(&x, d + 4 * (size_t)i, 4); v = x; break; }
            case DS_GGUF_I8: v = (int8_t)d[i]; break;
            case DS_GGUF_U8: v = d[i]; break;
            default:
                return ds_error_set(err, DS_ERR_FORMAT, "tokenizer: token_type has element type %d",
                                    (int)types->arr.type);
            }
            if (v < 0 || v > DS_TOKEN_BYTE)
                return ds_error_set(err, DS_ERR_FORMAT, "tokenizer: token %d has type %lld", i, (long long)v);
            t->type[i] = (uint8_t)v;
        }
    }

    uint32_t byte_cp[256];
    int16_t cp_byte[512];
    gpt2_byte_map(byte_cp, cp_byte);
    uint32_t poff = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t l = decode_token(t, i, cp_byte, t->piece + poff);
        t->piece_off[i] = poff;
        t->piece_len[i] = (uint32_t)l;
        poff += (uint32_t)l;
        if (l > t->max_piece) t->max_piece = l;
    }

    if (!strmap_init(&t->vocab, (uint64_t)n))
        return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
    for (int32_t i = 0; i < n; i++) strmap_put(&t->vocab, t, i);
    for (int b = 0; b < 256; b++) {
        char u[4];
        int l = ds_utf8_encode(byte_cp[b], u);
        t->byte_id[b] = strmap_get(&t->vocab, t, u, (size_t)l);
    }
    return DS_OK;
}

static ds_status load_merges(ds_tokenizer *t, const ds_gguf *g, ds_error *err) {
    const ds_gguf_value *m = ds_gguf_get_arr(g, "tokenizer.ggml.merges", DS_GGUF_STR);
    uint64_t n = m ? m->arr.n : 0;
    if (n > INT32_MAX) return ds_error_set(err, DS_ERR_FORMAT, "tokenizer: %llu merges", (unsigned long long)n);
    if (!mergemap_init(&t->merges, n ? n : 1))
        return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory for %llu merges", (unsigned long long)n);
    char buf[1024];
    uint64_t skipped = 0;
    for (uint64_t r = 0; r < n; r++) {
        const ds_gguf_str *s = &m->arr.strs[r];
        /* "left right": the first space after the first byte splits it (a
         * byte-level token never holds a raw space). */
        const char *sp = s->len > 1 ? memchr(s->ptr + 1, ' ', s->len - 1) : NULL;
        if (!sp) return ds_error_set(err, DS_ERR_FORMAT, "tokenizer: merge %llu has no space", (unsigned long long)r);
        size_t ll = (size_t)(sp - s->ptr), rl = s->len - ll - 1;
        int32_t l = strmap_get(&t->vocab, t, s->ptr, ll);
        int32_t rr = strmap_get(&t->vocab, t, sp + 1, rl);
        int32_t res = DS_TOKEN_NULL;
        if (ll + rl <= sizeof buf) {
            memcpy(buf, s->ptr, ll);
            memcpy(buf + ll, sp + 1, rl);
            res = strmap_get(&t->vocab, t, buf, ll + rl);
        }
        /* A merge whose parts or result are not tokens can never fire on ids. */
        if (l < 0 || rr < 0 || res < 0) {
            skipped++;
            continue;
        }
        mergemap_put(&t->merges, (uint64_t)(uint32_t)l << 32 | (uint32_t)rr, (int32_t)r, res);
    }
    if (skipped) ds_log(DS_LOG_DEBUG, "tokenizer: %llu merges name unknown tokens, ignored", (unsigned long long)skipped);
    return DS_OK;
}

static int cmp_u32_desc(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static ds_status load_specials(ds_tokenizer *t, ds_error *err) {
    int32_t n_sp = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->type[i]) && t->text_len[i] > 0) n_sp++;
    if (!strmap_init(&t->special, (uint64_t)(n_sp ? n_sp : 1)))
        return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
    /* Distinct (first byte, length) pairs, grouped by first byte. */
    uint32_t *pairs = malloc((size_t)(n_sp ? n_sp : 1) * sizeof *pairs);
    t->len_list = malloc((size_t)(n_sp ? n_sp : 1) * sizeof *t->len_list);
    if (!pairs || !t->len_list) {
        free(pairs);
        return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
    }
    uint32_t cnt[256] = {0};
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (!is_special_type(t->type[i]) || t->text_len[i] == 0) continue;
        strmap_put(&t->special, t, i);
        cnt[(unsigned char)t->text[t->text_off[i]]]++;
    }
    uint32_t start = 0;
    for (int b = 0; b < 256; b++) {
        /* Collect this byte's lengths, sort longest first, drop repeats. */
        uint32_t k = 0;
        if (cnt[b]) {
            for (int32_t i = 0; i < t->n_vocab; i++)
                if (is_special_type(t->type[i]) && t->text_len[i] > 0 &&
                    (unsigned char)t->text[t->text_off[i]] == b)
                    pairs[k++] = t->text_len[i];
            qsort(pairs, k, sizeof *pairs, cmp_u32_desc);
        }
        t->len_start[b] = start;
        for (uint32_t j = 0; j < k; j++)
            if (j == 0 || pairs[j] != pairs[j - 1]) t->len_list[start++] = pairs[j];
    }
    t->len_start[256] = start;
    free(pairs);
    return DS_OK;
}

static int32_t get_id(const ds_gguf *g, const char *key, int32_t n_vocab) {
    uint32_t v;
    if (!ds_gguf_get_u32(g, key, &v) || v >= (uint32_t)n_vocab) return DS_TOKEN_NULL;
    return (int32_t)v;
}

ds_status ds_tokenizer_load(const ds_gguf *g, ds_tokenizer **out, ds_error *err) {
    *out = NULL;
    char model[64];
    if (!ds_gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model))
        return ds_error_set(err, DS_ERR_NOT_FOUND, "tokenizer: tokenizer.ggml.model missing");
    if (strcmp(model, "gpt2") != 0)
        return ds_error_set(err, DS_ERR_UNSUPPORTED,
                            "tokenizer: tokenizer.ggml.model '%s' (only 'gpt2' byte-level BPE is supported)", model);
    ds_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
    ds_status st = load_vocab(t, g, err);
    if (st == DS_OK) st = load_merges(t, g, err);
    if (st == DS_OK) st = load_specials(t, err);
    if (st == DS_OK) {
        char pre[128];
        bool has_pre = ds_gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
        st = ds_pretok_create(has_pre ? pre : NULL, &t->pretok, &t->pre_name, err);
    }
    if (st != DS_OK) {
        ds_tokenizer_free(t);
        return st;
    }
    t->bos = get_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab);
    t->eos = get_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab);
    t->eot = get_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab);
    if (t->eot == DS_TOKEN_NULL) t->eot = strmap_get(&t->vocab, t, "<|EOT|>", 7);
    if (t->eot == DS_TOKEN_NULL) t->eot = t->eos;
    t->add_bos = true;
    ds_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);

    const ds_gguf_value *ct = ds_gguf_find(g, "tokenizer.chat_template");
    if (ct && ct->type == DS_GGUF_STR) {
        t->chat_template = malloc(ct->str.len + 1);
        if (!t->chat_template) {
            ds_tokenizer_free(t);
            return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
        }
        memcpy(t->chat_template, ct->str.ptr, ct->str.len);
        t->chat_template[ct->str.len] = 0;
        t->chat_template_len = ct->str.len;
    }
    *out = t;
    return DS_OK;
}

/* ---- accessors ---------------------------------------------------------------- */

int32_t ds_tokenizer_n_vocab(const ds_tokenizer *t) { return t->n_vocab; }
int32_t ds_tokenizer_bos(const ds_tokenizer *t) { return t->bos; }
int32_t ds_tokenizer_eos(const ds_tokenizer *t) { return t->eos; }
int32_t ds_tokenizer_eot(const ds_tokenizer *t) { return t->eot; }
bool ds_tokenizer_is_eog(const ds_tokenizer *t, int32_t id) {
    return id != DS_TOKEN_NULL && (id == t->eos || id == t->eot);
}
bool ds_tokenizer_add_bos(const ds_tokenizer *t) { return t->add_bos; }
const char *ds_tokenizer_pre(const ds_tokenizer *t) { return t->pre_name; }
size_t ds_tokenizer_max_piece(const ds_tokenizer *t) { return t->max_piece; }

int32_t ds_tokenizer_find(const ds_tokenizer *t, const char *text, size_t len) {
    return strmap_get(&t->vocab, t, text, len);
}

ds_token_type ds_tokenizer_token_type(const ds_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return DS_TOKEN_UNDEFINED;
    return (ds_token_type)t->type[id];
}

const char *ds_tokenizer_token_text(const ds_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->text_len[id];
    return t->text + t->text_off[id];
}

const char *ds_tokenizer_chat_template(const ds_tokenizer *t, size_t *len) {
    if (len) *len = t->chat_template_len;
    return t->chat_template;
}

/* ---- encoding ----------------------------------------------------------------- */

typedef struct ds_sink {
    int32_t *out;
    size_t cap, n;
} ds_sink;

static inline void sink_put(ds_sink *s, int32_t id) {
    if (s->n < s->cap) s->out[s->n] = id;
    s->n++;
}

/* Scratch for BPE over one word, grown to the longest word of a call. */
typedef struct ds_bpe_heap_item {
    int32_t rank, left; /* ordering key: lowest rank, then leftmost */
    int32_t lid, rid;   /* the ids it was made for, to spot stale entries */
    int32_t res;        /* the merged token */
} ds_bpe_heap_item;

typedef struct ds_bpe_scratch {
    int32_t *id, *prev, *next; /* [cap] per symbol */
    ds_bpe_heap_item *heap;    /* [3 * cap] */
    size_t cap, n_heap;
} ds_bpe_scratch;

static bool scratch_reserve(ds_bpe_scratch *s, size_t n) {
    if (n <= s->cap) return true;
    size_t cap = n < 256 ? 256 : n;
    int32_t *id = realloc(s->id, cap * sizeof *id);
    if (id) s->id = id;
    int32_t *pv = realloc(s->prev, cap * sizeof *pv);
    if (pv) s->prev = pv;
    int32_t *nx = realloc(s->next, cap * sizeof *nx);
    if (nx) s->next = nx;
    ds_bpe_heap_item *h = realloc(s->heap, 3 * cap * sizeof *h);
    if (h) s->heap = h;
    if (!id || !pv || !nx || !h) return false;
    s->cap = cap;
    return true;
}

static inline bool heap_less(const ds_bpe_heap_item *a, const ds_bpe_heap_item *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(ds_bpe_scratch *s, ds_bpe_heap_item it) {
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&it, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = it;
}

static ds_bpe_heap_item heap_pop(ds_bpe_scratch *s) {
    ds_bpe_heap_item top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!heap_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static void try_pair(const ds_tokenizer *t, ds_bpe_scratch *s, int32_t left) {
    if (left < 0) return;
    int32_t right = s->next[left];
    if (right < 0) return;
    int32_t lid = s->id[left], rid = s->id[right], rank, res;
    if (lid < 0 || rid < 0 || !mergemap_get(&t->merges, lid, rid, &rank, &res)) return;
    heap_push(s, (ds_bpe_heap_item){rank, left, lid, rid, res});
}

/* BPE over one pre-tokenized word: start from one symbol per byte (its GPT-2
 * character's token) and repeatedly merge the adjacent pair of lowest merge
 * rank, leftmost first, as llama.cpp and HF do. A heap of candidate pairs with
 * lazy deletion keeps it O(n log n) for long words. */
static void bpe_word(const ds_tokenizer *t, const unsigned char *w, size_t n, ds_bpe_scratch *s,
                     ds_sink *out) {
    if (n == 1) {
        if (t->byte_id[w[0]] >= 0) sink_put(out, t->byte_id[w[0]]);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        s->id[i] = t->byte_id[w[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    s->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(t, s, (int32_t)i);
    while (s->n_heap) {
        ds_bpe_heap_item it = heap_pop(s);
        int32_t l = it.left, r = s->next[l];
        /* Stale if the left symbol died, or either side changed since. A
         * symbol's id only ever grows into a longer token, so equal ids at the
         * same place mean the same pair. */
        if (s->id[l] != it.lid || r < 0 || s->id[r] != it.rid) continue;
        s->id[l] = it.res;
        s->id[r] = DS_TOKEN_NULL - 1; /* dead: matches no heap entry */
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        try_pair(t, s, s->prev[l]);
        try_pair(t, s, l);
    }
    /* Symbols left without a token (a byte the vocabulary lacks) give nothing,
     * as in llama.cpp. */
    for (int32_t i = 0; i >= 0; i = s->next[i])
        if (s->id[i] >= 0) sink_put(out, s->id[i]);
}

/* Pre-tokenize and BPE one stretch of ordinary text. */
static ds_status encode_plain(const ds_tokenizer *t, const char *text, size_t len,
                              ds_spans *words, ds_bpe_scratch *s, ds_sink *out, ds_error *err) {
    if (len == 0) return DS_OK;
    words->n = 0;
    ds_status st = ds_pretok_split(t->pretok, text, len, words, err);
    if (st != DS_OK) return st;
    for (size_t i = 0; i < words->n; i++) {
        const ds_span w = words->v[i];
        if (!scratch_reserve(s, w.len)) return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
        bpe_word(t, (const unsigned char *)text + w.off, w.len, s, out);
    }
    return DS_OK;
}

/* The special token starting at text[i], longest first; DS_TOKEN_NULL if none.
 * CONTROL/UNKNOWN ones count only with parse_special. */
static int32_t special_at(const ds_tokenizer *t, const char *text, size_t len, size_t i,
                          bool parse_special, uint32_t *match_len) {
    unsigned b = (unsigned char)text[i];
    for (uint32_t k = t->len_start[b]; k < t->len_start[b + 1]; k++) {
        uint32_t l = t->len_list[k];
        if (l > len - i) continue;
        int32_t id = strmap_get(&t->special, t, text + i, l);
        if (id < 0) continue;
        if (!parse_special && t->type[id] != DS_TOKEN_USER_DEFINED) continue;
        *match_len = l;
        return id;
    }
    return DS_TOKEN_NULL;
}

/* Copy of text with each byte that does not start a valid UTF-8 character
 * replaced by U+FFFD (llama.cpp does the same); NULL if text is valid. */
static char *sanitize_utf8(const char *text, size_t len, size_t *out_len, bool *oom) {
    size_t i = 0;
    while (i < len) {
        int l = ds_utf8_valid_len((const unsigned char *)text + i, len - i);
        if (l == 0) break;
        i += (size_t)l;
    }
    *oom = false;
    if (i == len) return NULL;
    char *o = malloc(len * 3 + 1);
    if (!o) {
        *oom = true;
        return NULL;
    }
    memcpy(o, text, i);
    size_t n = i;
    while (i < len) {
        int l = ds_utf8_valid_len((const unsigned char *)text + i, len - i);
        if (l == 0) {
            memcpy(o + n, "\xEF\xBF\xBD", 3);
            n += 3;
            i++;
        } else {
            memcpy(o + n, text + i, (size_t)l);
            n += (size_t)l;
            i += (size_t)l;
        }
    }
    *out_len = n;
    return o;
}

ds_status ds_tokenize(const ds_tokenizer *t, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t *out, size_t cap, size_t *n_out, ds_error *err) {
    *n_out = 0;
    if (!text && len) return ds_error_set(err, DS_ERR_INVALID_ARG, "tokenize: NULL text");
    if (!out && cap) return ds_error_set(err, DS_ERR_INVALID_ARG, "tokenize: NULL output");
    if (len >= UINT32_MAX / 3)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "tokenize: text of %zu bytes is too long", len);
    bool oom;
    size_t clean_len = len;
    char *clean = sanitize_utf8(text, len, &clean_len, &oom);
    if (oom) return ds_error_set(err, DS_ERR_OOM, "tokenize: out of memory");
    if (clean) {
        text = clean;
        len = clean_len;
    }
    ds_sink sink = {out, cap, 0};
    if (add_bos && t->bos != DS_TOKEN_NULL) sink_put(&sink, t->bos);

    ds_spans words = {0};
    ds_bpe_scratch s = {0};
    ds_status st = DS_OK;
    size_t seg = 0; /* start of the ordinary text not yet encoded */
    for (size_t i = 0; i < len && st == DS_OK;) {
        uint32_t ml = 0;
        int32_t id = t->len_start[(unsigned char)text[i]] == t->len_start[(unsigned char)text[i] + 1]
                         ? DS_TOKEN_NULL
                         : special_at(t, text, len, i, parse_special, &ml);
        if (id < 0) {
            i++;
            continue;
        }
        st = encode_plain(t, text + seg, i - seg, &words, &s, &sink, err);
        sink_put(&sink, id);
        i += ml;
        seg = i;
    }
    if (st == DS_OK) st = encode_plain(t, text + seg, len - seg, &words, &s, &sink, err);
    free(words.v);
    free(s.id);
    free(s.prev);
    free(s.next);
    free(s.heap);
    free(clean);
    if (st != DS_OK) return st;
    *n_out = sink.n;
    if (sink.n > cap)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "tokenize: room for %zu tokens, %zu needed", cap, sink.n);
    return DS_OK;
}

ds_status ds_tokenize_alloc(const ds_tokenizer *t, const char *text, size_t len, bool add_bos,
                            bool parse_special, int32_t **out, size_t *n_out, ds_error *err) {
    *out = NULL;
    *n_out = 0;
    /* Every token covers at least one byte, U+FFFD replacements included
     * (3 bytes for 1 input byte), so len + 1 ids always fit. */
    size_t cap = len + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return ds_error_set(err, DS_ERR_OOM, "tokenize: out of memory for %zu tokens", cap);
    size_t n;
    ds_status st = ds_tokenize(t, text, len, add_bos, parse_special, ids, cap, &n, err);
    if (st != DS_OK) {
        free(ids);
        return st;
    }
    int32_t *shrunk = realloc(ids, (n ? n : 1) * sizeof *ids);
    *out = shrunk ? shrunk : ids;
    *n_out = n;
    return DS_OK;
}

/* ---- decoding ----------------------------------------------------------------- */

const char *ds_token_piece(const ds_tokenizer *t, int32_t id, bool render_special, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    uint8_t ty = t->type[id];
    if (!render_special && (ty == DS_TOKEN_CONTROL || ty == DS_TOKEN_UNKNOWN || ty == DS_TOKEN_UNUSED)) {
        *len = 0;
        return t->piece + t->piece_off[id];
    }
    *len = t->piece_len[id];
    return t->piece + t->piece_off[id];
}

ds_status ds_detokenize(const ds_tokenizer *t, const int32_t *ids, size_t n, bool render_special,
                        char *out, size_t cap, size_t *n_out, ds_error *err) {
    size_t total = 0;
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return ds_error_set(err, DS_ERR_INVALID_ARG, "detokenize: id %d at position %zu is outside the vocabulary of %d",
                                ids[i], i, t->n_vocab);
        size_t l;
        const char *p = ds_token_piece(t, ids[i], render_special, &l);
        if (total < cap) memcpy(out + total, p, l < cap - total ? l : cap - total);
        total += l;
    }
    if (total < cap) out[total] = 0;
    *n_out = total;
    if (total > cap)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "detokenize: room for %zu bytes, %zu needed", cap, total);
    return DS_OK;
}

/* ---- streaming detokenizer ----------------------------------------------------- */

struct ds_detok {
    const ds_tokenizer *tok;
    bool special;
    char *buf;      /* [max_piece + 4] output of the last call */
    char held[4];   /* start of a character a later token completes */
    size_t n_held;
};

ds_status ds_detok_create(const ds_tokenizer *tok, bool render_special, ds_detok **out, ds_error *err) {
    ds_detok *d = calloc(1, sizeof *d);
    if (d) d->buf = malloc(tok->max_piece + 8);
    if (!d || !d->buf) {
        free(d);
        *out = NULL;
        return ds_error_set(err, DS_ERR_OOM, "detokenizer: out of memory");
    }
    d->tok = tok;
    d->special = render_special;
    *out = d;
    return DS_OK;
}

void ds_detok_free(ds_detok *d) {
    if (!d) return;
    free(d->buf);
    free(d);
}

void ds_detok_reset(ds_detok *d) { d->n_held = 0; }

/* Length of a trailing run of buf[0..n) that is the start of a valid UTF-8
 * character still missing bytes (0 if the text ends on a boundary, or ends in
 * bytes that no continuation could make valid). */
static size_t incomplete_tail(const unsigned char *buf, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = buf[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking for the lead */
        size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : ((c & 0xF0) == 0xE0) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (need <= back) return 0; /* ASCII, invalid lead, or already complete */
        if (back >= 2) {
            /* The second byte's range depends on the lead (no overlongs,
             * surrogates or code points past U+10FFFF). */
            unsigned c1 = buf[n - back + 1];
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
                (c == 0xF4 && c1 > 0x8F))
                return 0;
        }
        return back;
    }
    return 0;
}

const char *ds_detok_push(ds_detok *d, int32_t id, size_t *len) {
    size_t l;
    const char *p = ds_token_piece(d->tok, id, d->special, &l);
    if (!p) l = 0;
    memcpy(d->buf, d->held, d->n_held);
    if (l) memcpy(d->buf + d->n_held, p, l);
    size_t n = d->n_held + l;
    size_t keep = incomplete_tail((const unsigned char *)d->buf, n);
    memcpy(d->held, d->buf + n - keep, keep);
    d->n_held = keep;
    *len = n - keep;
    return d->buf;
}

const char *ds_detok_flush(ds_detok *d, size_t *len) {
    memcpy(d->buf, d->held, d->n_held);
    *len = d->n_held;
    d->n_held = 0;
    return d->buf;
}
