/* pretok.c: the pre-tokenizers — regex chains, named by tokenizer.ggml.pre,
 * that cut text into the words BPE merges within — plus strict UTF-8 helpers.
 * Not the BPE itself (tokenizer.c) and not a general regex wrapper: PCRE2 in
 * UTF + Unicode-property mode, compiled once per tokenizer. */
#include "text_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

/* ---- the chains ------------------------------------------------------------
 * Facts taken from the models' tokenizer.json files as llama.cpp lists them
 * (src/llama-vocab.cpp). Written with \x{...} escapes so the source survives
 * any Unicode normalisation of this file: the deepseek-llm letter class holds
 * code points (U+1F7D, U+1FBE, U+2126, U+212A, ...) that NFC would fold into
 * others, turning ranges such as U+1F5F-U+1F7D inside out. */

/* Cased letters (Unicode L&) as DeepSeek LLM lists them. */
#define DS_RE_LLM_LETTERS                                                              \
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}" \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}"               \
    "\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}"       \
    "\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"              \
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}"      \
    "\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}"      \
    "\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}"      \
    "\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}"                 \
    "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}"                \
    "\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}"      \
    "\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}"       \
    "\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"        \
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}"       \
    "\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"       \
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"       \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"      \
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"    \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}"                   \
    "\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+"

/* CJK ideographs, everything from U+0800 up to them, and Hangul. */
#define DS_RE_LLM_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

#define DS_RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

#define DS_PRETOK_MAX 6

typedef struct ds_chain {
    const char *name;
    const char *re[DS_PRETOK_MAX + 1]; /* NULL-terminated */
} ds_chain;

static const ds_chain k_chains[] = {
    {"deepseek-v3",
     {"\\p{N}{1,3}",
      "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
      "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
      "| ?[\\p{P}\\p{S}]+[\\r\\n]*"
      "|\\s*[\\r\\n]+"
      "|\\s+(?!\\S)"
      "|\\s+",
      NULL}},
    {"deepseek-llm",
     {"[\\r\\n]",
      DS_RE_LLM_LETTERS,
      "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
      "\\s+$",
      DS_RE_LLM_CJK,
      "\\p{N}+",
      NULL}},
    {"deepseek-coder",
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", DS_RE_LLM_CJK, "\\p{N}", NULL}},
    {"gpt2", {DS_RE_GPT2, NULL}},
    /* llama.cpp's chain for a missing or "default" tokenizer.ggml.pre. */
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", DS_RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL}},
};

struct ds_pretok {
    const ds_chain *chain;
    int n_re;
    pcre2_code *re[DS_PRETOK_MAX];
};

void ds_pretok_free(ds_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n_re; i++) pcre2_code_free(p->re[i]);
    free(p);
}

ds_status ds_pretok_create(const char *name, ds_pretok **out, const char **used,
                           ds_error *err) {
    *out = NULL;
    const size_t n_chains = sizeof k_chains / sizeof k_chains[0];
    const ds_chain *chain = NULL;
    const char *want = (name && *name) ? name : "default";
    for (size_t i = 0; i < n_chains; i++)
        if (strcmp(k_chains[i].name, want) == 0) chain = &k_chains[i];
    if (!chain) {
        /* A model we were not built for still tokenizes plausibly. */
        ds_log(DS_LOG_WARN, "tokenizer: unknown pre-tokenizer '%s', using gpt2", want);
        for (size_t i = 0; i < n_chains; i++)
            if (strcmp(k_chains[i].name, "gpt2") == 0) chain = &k_chains[i];
    }
    ds_pretok *p = calloc(1, sizeof *p);
    if (!p) return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
    p->chain = chain;
    for (int i = 0; i < DS_PRETOK_MAX && chain->re[i]; i++) {
        int code;
        PCRE2_SIZE at;
        /* DOLLAR_ENDONLY: "$" means the end of the piece, not "before a final
         * newline", as in the ECMAScript engine llama.cpp uses. */
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)chain->re[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code,
                                       &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            ds_pretok_free(p);
            return ds_error_set(err, DS_ERR_INTERNAL,
                                "tokenizer: regex %d of '%s' does not compile at %zu: %s", i,
                                chain->name, (size_t)at, (const char *)msg);
        }
        /* JIT is an optimisation only; pcre2_match falls back by itself. */
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        p->re[p->n_re++] = re;
    }
    if (used) *used = chain->name;
    *out = p;
    return DS_OK;
}

bool ds_spans_push(ds_spans *s, uint32_t off, uint32_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        ds_span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (ds_span){off, len};
    return true;
}

/* One regex over every piece of in, appending matches and gaps to out. */
static ds_status split_one(const pcre2_code *re, const char *text, const ds_spans *in,
                           ds_spans *out, pcre2_match_data *md, pcre2_match_context *mctx,
                           ds_error *err) {
    for (size_t i = 0; i < in->n; i++) {
        const ds_span sp = in->v[i];
        PCRE2_SPTR subj = (PCRE2_SPTR)(text + sp.off);
        size_t pos = 0, last = 0;
        while (pos <= sp.len) {
            int rc = pcre2_match(re, subj, sp.len, pos, PCRE2_NO_UTF_CHECK, md, mctx);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return ds_error_set(err, DS_ERR_INTERNAL, "tokenizer: regex match failed: %s",
                                    (const char *)msg);
            }
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) {
                /* None of our regexes match empty; if one did, step over a
                 * character so the loop ends. */
                if (ms >= sp.len) break;
                int l = ds_utf8_valid_len((const unsigned char *)subj + ms, sp.len - ms);
                pos = ms + (size_t)(l > 0 ? l : 1);
                continue;
            }
            if (ms > last && !ds_spans_push(out, sp.off + (uint32_t)last, (uint32_t)(ms - last)))
                return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
            if (!ds_spans_push(out, sp.off + (uint32_t)ms, (uint32_t)(me - ms)))
                return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
            last = pos = me;
        }
        if (last < sp.len &&
            !ds_spans_push(out, sp.off + (uint32_t)last, (uint32_t)(sp.len - last)))
            return ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
    }
    return DS_OK;
}

ds_status ds_pretok_split(const ds_pretok *p, const char *text, size_t len, ds_spans *out,
                          ds_error *err) {
    if (len == 0) return DS_OK;
    DS_ASSERT(len <= UINT32_MAX);
    ds_status st = DS_OK;
    ds_spans a = {0}, b = {0};
    pcre2_match_context *mctx = pcre2_match_context_create(NULL);
    /* Our patterns have no capture groups: the whole-match pair is all we read
     * (a short ovector makes pcre2_match return 0, still a match). */
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    /* A private JIT stack per call keeps concurrent callers apart and lets a
     * long run of one class (a 100 KB line of letters) match. */
    pcre2_jit_stack *js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!mctx || !md) {
        st = ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
        goto done;
    }
    if (js) pcre2_jit_stack_assign(mctx, NULL, js);

    if (!ds_spans_push(&a, 0, (uint32_t)len)) {
        st = ds_error_set(err, DS_ERR_OOM, "tokenizer: out of memory");
        goto done;
    }
    for (int i = 0; i < p->n_re; i++) {
        ds_spans *dst = (i == p->n_re - 1) ? out : &b;
        if (dst == &b) b.n = 0;
        st = split_one(p->re[i], text, &a, dst, md, mctx, err);
        if (st != DS_OK) goto done;
        if (dst == &b) {
            ds_spans t = a;
            a = b;
            b = t;
        }
    }
done:
    free(a.v);
    free(b.v);
    pcre2_match_data_free(md);
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mctx);
    return st;
}

/* ---- UTF-8 ----------------------------------------------------------------- */

int ds_utf8_valid_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0; /* continuation byte, C0/C1, F5..FF */
    if (n < (size_t)len) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

int ds_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
