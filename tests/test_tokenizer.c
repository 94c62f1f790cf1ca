/* test_tokenizer.c: the BPE tokenizer against llama.cpp's fixture sets
 * (deepseek-llm, deepseek-coder, and the deepseek-v3 pre-tokenizer over the
 * llm vocabulary), round trips, the streaming detokenizer and speed.
 * Not a test of chat templates or sampling (test_chat.c, test_sampler.c). */
#include "testutil.h"
#include "text/text.h"

#include <stdlib.h>
#include <string.h>

static ds_tokenizer *load(const char *file, const char *override) {
    ds_error err = {0};
    ds_gguf *g = NULL;
    if (ds_gguf_open(ds_test_data(file), &g, &err) != DS_OK) {
        CHECK(0, "open %s: %s", file, err.msg);
        return NULL;
    }
    if (override && ds_gguf_override(g, override, &err) != DS_OK) {
        CHECK(0, "override %s: %s", override, err.msg);
        ds_gguf_close(g);
        return NULL;
    }
    ds_tokenizer *tok = NULL;
    ds_status st = ds_tokenizer_load(g, &tok, &err);
    /* The tokenizer copies what it needs: close the file before using it. */
    ds_gguf_close(g);
    CHECK(st == DS_OK, "load %s: %s", file, err.msg);
    return st == DS_OK ? tok : NULL;
}

/* Test strings: the text between "__ggml_vocab_test__" separator lines, less
 * the newline that ends each string's last line (the file is
 * "s1\n__ggml_vocab_test__\ns2\n__ggml_vocab_test__\n..."). */
typedef struct {
    char *buf;
    char **s;
    size_t *len;
    size_t n;
} cases;

static bool read_cases(const char *file, cases *c) {
    size_t n;
    char *buf = ds_test_read_file(ds_test_data(file), &n);
    if (!buf) return false;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sl = sizeof sep - 1;
    c->buf = buf;
    c->n = 0;
    c->s = NULL;
    c->len = NULL;
    size_t start = 0, cap = 0;
    for (size_t i = 0; i + sl <= n;) {
        if (memcmp(buf + i, sep, sl) != 0) {
            i++;
            continue;
        }
        if (c->n == cap) {
            cap = cap ? cap * 2 : 64;
            c->s = realloc(c->s, cap * sizeof *c->s);
            c->len = realloc(c->len, cap * sizeof *c->len);
        }
        c->s[c->n] = buf + start;
        c->len[c->n] = i - start;
        c->n++;
        start = i = i + sl;
    }
    return true;
}

static void free_cases(cases *c) {
    free(c->buf);
    free(c->s);
    free(c->len);
}

static void print_str(const char *s, size_t n) {
    fputc('"', stderr);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') fputs("\\n", stderr);
        else if (ch == '\t') fputs("\\t", stderr);
        else if (ch == '\r') fputs("\\r", stderr);
        else if (ch < 0x20) fprintf(stderr, "\\x%02x", ch);
        else fputc(ch, stderr);
    }
    fputc('"', stderr);
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* Every string of inp must tokenize to the matching line of out, exactly. */
static void check_fixture(const ds_tokenizer *tok, const char *inp, const char *outf) {
    cases c;
    if (!read_cases(inp, &c)) {
        CHECK(0, "cannot read %s", inp);
        return;
    }
    size_t on;
    char *out = ds_test_read_file(ds_test_data(outf), &on);
    if (!out) {
        CHECK(0, "cannot read %s", outf);
        free_cases(&c);
        return;
    }
    /* The .out file: one line per string (a blank line for the empty string),
     * possibly followed by a trailing blank line. */
    size_t n_lines = 0;
    for (size_t i = 0; i < on; i++) n_lines += out[i] == '\n';
    CHECK(n_lines >= c.n && n_lines <= c.n + 1, "%s: %zu strings, %zu lines", outf, c.n, n_lines);

    int fails = 0;
    char *line = out;
    ds_detok *dt = NULL;
    ds_error err = {0};
    CHECK(ds_detok_create(tok, true, &dt, &err) == DS_OK, "%s", err.msg);
    for (size_t k = 0; k < c.n && line < out + on; k++) {
        char *eol = memchr(line, '\n', (size_t)(out + on - line));
        if (!eol) eol = out + on;
        int32_t want[4096];
        size_t n_want = 0;
        for (char *p = line; p < eol && n_want < 4096;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            want[n_want++] = (int32_t)v;
            p = end;
        }
        line = eol + 1;

        int32_t *got = NULL;
        size_t n_got = 0;
        ds_status st = ds_tokenize_alloc(tok, c.s[k], c.len[k], false, true, &got, &n_got, &err);
        CHECK(st == DS_OK, "tokenize: %s", err.msg);
        bool same = st == DS_OK && n_got == n_want && memcmp(got, want, n_got * sizeof *got) == 0;
        CHECK(same, "%s string %zu differs", inp, k);
        if (!same) {
            fails++;
            fputs("  text: ", stderr);
            print_str(c.s[k], c.len[k]);
            fputc('\n', stderr);
            print_ids("want", want, n_want);
            print_ids("got ", got, n_got);
        }

        /* Round trip: the pieces (specials rendered) give back the text. */
        char *back = malloc(c.len[k] + 1);
        size_t nb;
        st = ds_detokenize(tok, got, n_got, true, back, c.len[k] + 1, &nb, &err);
        bool rt = st == DS_OK && nb == c.len[k] && memcmp(back, c.s[k], nb) == 0;
        CHECK(rt, "%s string %zu: detokenize(tokenize(s)) != s", inp, k);
        if (!rt) {
            fputs("  back: ", stderr);
            print_str(back, nb < c.len[k] + 1 ? nb : c.len[k]);
            fputc('\n', stderr);
        }
        free(back);

        /* The streaming detokenizer gives the same bytes, and every chunk it
         * hands out ends on a character boundary (the inputs are valid UTF-8). */
        char *acc = malloc(c.len[k] + 64);
        size_t na = 0;
        bool chunks_ok = true;
        ds_detok_reset(dt);
        for (size_t i = 0; i < n_got; i++) {
            size_t l;
            const char *p = ds_detok_push(dt, got[i], &l);
            if (na + l > c.len[k] + 32) { chunks_ok = false; break; }
            memcpy(acc + na, p, l);
            na += l;
            /* acc must be complete UTF-8 after each push. */
            for (size_t j = 0; j < na;) {
                unsigned ch = (unsigned char)acc[j];
                size_t need = ch < 0x80 ? 1 : ch < 0xE0 ? 2 : ch < 0xF0 ? 3 : 4;
                if (j + need > na) { chunks_ok = false; break; }
                j += need;
            }
        }
        size_t l;
        ds_detok_flush(dt, &l);
        CHECK(chunks_ok && l == 0 && na == c.len[k] && memcmp(acc, c.s[k], na) == 0,
              "%s string %zu: streaming detokenizer differs", inp, k);
        free(acc);
        free(got);
    }
    ds_detok_free(dt);
    printf("%s: %zu strings, %d mismatches\n", inp, c.n, fails);
    free(out);
    free_cases(&c);
}

/* Multibyte characters split over tokens come out whole, and only once the
 * last byte has arrived. */
static void check_stream_split(const ds_tokenizer *tok) {
    ds_error err = {0};
    ds_detok *dt;
    if (ds_detok_create(tok, false, &dt, &err) != DS_OK) {
        CHECK(0, "%s", err.msg);
        return;
    }
    /* Single-byte tokens for each byte of a 4-byte emoji, a 3-byte CJK char
     * and a 2-byte Latin letter. */
    const char *text = "\xF0\x9F\xA6\x99" "\xE6\x88\x91" "\xC3\xA9" "a";
    int32_t ids[16];
    size_t n = 0;
    for (size_t i = 0; text[i]; i++) {
        int32_t id = DS_TOKEN_NULL;
        for (int32_t v = 0; v < ds_tokenizer_n_vocab(tok) && id < 0; v++) {
            size_t l;
            const char *p = ds_token_piece(tok, v, false, &l);
            if (l == 1 && p[0] == text[i] && ds_tokenizer_token_type(tok, v) == DS_TOKEN_NORMAL) id = v;
        }
        CHECK(id >= 0, "no single-byte token for 0x%02x", (unsigned char)text[i]);
        ids[n++] = id;
    }
    size_t expect_len[] = {0, 0, 0, 4, 0, 0, 3, 0, 2, 1};
    char acc[32];
    size_t na = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *p = ds_detok_push(dt, ids[i], &l);
        CHECK(l == expect_len[i], "push %zu gave %zu bytes, want %zu", i, l, expect_len[i]);
        memcpy(acc + na, p, l);
        na += l;
    }
    CHECK(na == strlen(text) && memcmp(acc, text, na) == 0, "stream result differs");

    /* A stream cut mid-character: flush returns the held bytes. */
    size_t l;
    ds_detok_reset(dt);
    ds_detok_push(dt, ids[0], &l);
    ds_detok_push(dt, ids[1], &l);
    CHECK(l == 0, "held");
    const char *p = ds_detok_flush(dt, &l);
    CHECK(l == 2 && memcmp(p, text, 2) == 0, "flush gave %zu bytes", l);

    /* A lead byte followed by something that cannot continue it is not held
     * forever: both come out as they are. */
    int32_t a = ids[9];
    ds_detok_push(dt, ids[0], &l);
    CHECK(l == 0, "lead held");
    p = ds_detok_push(dt, a, &l);
    CHECK(l == 2 && (unsigned char)p[0] == 0xF0 && p[1] == 'a', "invalid lead passed through (%zu)", l);
    ds_detok_free(dt);
}

static void check_api(const ds_tokenizer *tok) {
    ds_error err = {0};
    CHECK(ds_tokenizer_n_vocab(tok) == 102400, "n_vocab %d", ds_tokenizer_n_vocab(tok));
    CHECK(ds_tokenizer_bos(tok) == 100000 && ds_tokenizer_eos(tok) == 100001, "bos/eos");
    CHECK(ds_tokenizer_eot(tok) == 100001 && ds_tokenizer_is_eog(tok, 100001), "eot");
    CHECK(ds_tokenizer_add_bos(tok), "add_bos");
    const char *bos = "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
    CHECK(ds_tokenizer_find(tok, bos, strlen(bos)) == 100000, "find bos");
    CHECK(ds_tokenizer_find(tok, "nope-not-a-token", 16) == DS_TOKEN_NULL, "find missing");

    /* parse_special decides whether a CONTROL token's text is the token. */
    char text[128];
    snprintf(text, sizeof text, "%sHi", bos);
    int32_t ids[64];
    size_t n;
    CHECK(ds_tokenize(tok, text, strlen(text), false, true, ids, 64, &n, &err) == DS_OK, "%s", err.msg);
    CHECK(n >= 2 && ids[0] == 100000, "special parsed");
    CHECK(ds_tokenize(tok, text, strlen(text), false, false, ids, 64, &n, &err) == DS_OK, "%s", err.msg);
    CHECK(n > 2 && ids[0] != 100000, "special not parsed");
    CHECK(ds_tokenize(tok, "Hi", 2, true, false, ids, 64, &n, &err) == DS_OK && ids[0] == 100000, "add_bos");

    /* Too small a buffer reports the size needed. */
    const char *hello = "Hello world, this is a test.";
    size_t need;
    ds_status st = ds_tokenize(tok, hello, strlen(hello), false, false, NULL, 0, &need, &err);
    CHECK(st == DS_ERR_INVALID_ARG && need > 3, "measure: %d %zu", st, need);
    st = ds_tokenize(tok, hello, strlen(hello), false, false, ids, need, &n, &err);
    CHECK(st == DS_OK && n == need, "exact fit");
    st = ds_tokenize(tok, hello, strlen(hello), false, false, ids, 2, &n, &err);
    CHECK(st == DS_ERR_INVALID_ARG && n == need, "short buffer");

    /* Control tokens render only when asked. */
    size_t l;
    ds_token_piece(tok, 100000, false, &l);
    CHECK(l == 0, "control hidden");
    ds_token_piece(tok, 100000, true, &l);
    CHECK(l == strlen(bos), "control shown");
    CHECK(ds_token_piece(tok, -5, true, &l) == NULL && l == 0, "bad id");
    int32_t bad = 1 << 30;
    char buf[8];
    CHECK(ds_detokenize(tok, &bad, 1, false, buf, sizeof buf, &l, &err) == DS_ERR_INVALID_ARG, "bad id detok");

    /* Invalid UTF-8 does not crash; each bad byte becomes U+FFFD. */
    const char junk[] = "a\xFF\xC3(b\xE2\x82";
    int32_t *jids;
    size_t jn;
    CHECK(ds_tokenize_alloc(tok, junk, sizeof junk - 1, false, false, &jids, &jn, &err) == DS_OK, "%s", err.msg);
    char back[64];
    ds_detokenize(tok, jids, jn, false, back, sizeof back, &l, &err);
    const char want[] = "a\xEF\xBF\xBD\xEF\xBF\xBD(b\xEF\xBF\xBD\xEF\xBF\xBD";
    CHECK(l == sizeof want - 1 && memcmp(back, want, l) == 0, "invalid utf-8 -> U+FFFD (%zu bytes)", l);
    free(jids);
}

static size_t put_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Random valid UTF-8 (ASCII, Latin, CJK, emoji, special-token texts) round
 * trips exactly; random bytes tokenize without error. ASan watches both. */
static void check_random(const ds_tokenizer *tok) {
    uint64_t st = 12345;
    ds_error err = {0};
    char buf[2048];
    int bad_rt = 0;
    for (int iter = 0; iter < 300; iter++) {
        size_t n = 0, want = ds_test_rand(&st) % 300;
        while (n < want) {
            uint64_t r = ds_test_rand(&st);
            uint32_t cp;
            switch (r % 6) {
            case 0: cp = 0x20 + (uint32_t)(r >> 8) % 0x5F; break;
            case 1: cp = (uint32_t)(r >> 8) % 0x20; break;
            case 2: cp = 0xA0 + (uint32_t)(r >> 8) % 0x500; break;
            case 3: cp = 0x4E00 + (uint32_t)(r >> 8) % 0x5000; break;
            case 4: cp = 0x1F300 + (uint32_t)(r >> 8) % 0x300; break;
            default: {
                /* a special token's text, or a piece of one */
                size_t l;
                const char *t = ds_tokenizer_token_text(tok, 100000 + (int32_t)((r >> 8) % 30), &l);
                if ((r >> 40) & 1) { /* cut, but on a character boundary */
                    l = l / 2;
                    while (l > 0 && (t[l] & 0xC0) == 0x80) l--;
                }
                memcpy(buf + n, t, l);
                n += l;
                continue;
            }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
            n += put_utf8(cp, buf + n);
        }
        int32_t *ids;
        size_t ni;
        ds_status s1 = ds_tokenize_alloc(tok, buf, n, false, true, &ids, &ni, &err);
        CHECK(s1 == DS_OK, "random tokenize: %s", err.msg);
        if (s1 != DS_OK) continue;
        char back[2048];
        size_t nb;
        /* A cut special-token text may be split as two pieces: still lossless. */
        ds_status s2 = ds_detokenize(tok, ids, ni, true, back, sizeof back, &nb, &err);
        if (s2 != DS_OK || nb != n || memcmp(back, buf, n) != 0) bad_rt++;
        free(ids);

        /* Raw random bytes. */
        for (size_t i = 0; i < n; i++) buf[i] = (char)(ds_test_rand(&st) >> 13);
        s1 = ds_tokenize_alloc(tok, buf, n, true, true, &ids, &ni, &err);
        CHECK(s1 == DS_OK && ni <= n + 1, "random bytes: %s", err.msg);
        if (s1 == DS_OK) free(ids);
    }
    CHECK(bad_rt == 0, "%d random strings did not round trip", bad_rt);
}

/* 100 KB of mixed text must tokenize well under a second. */
static void check_speed(const ds_tokenizer *tok, const char *inp) {
    cases c;
    if (!read_cases(inp, &c)) return;
    size_t cap = 100 * 1024, n = 0;
    char *big = malloc(cap + 4096);
    /* A few long unbroken runs too, to exercise long words. */
    for (int r = 0; n < cap / 2; r++)
        for (size_t k = 0; k < c.n; k++) {
            memcpy(big + n, c.s[k], c.len[k]);
            n += c.len[k];
            big[n++] = ' ';
        }
    while (n < cap) {
        size_t run = cap - n < 5000 ? cap - n : 5000;
        memset(big + n, 'a' + (int)(n % 26), run);
        n += run;
        big[n++] = '\n';
    }
    ds_error err = {0};
    int32_t *ids;
    size_t ni;
    double t0 = ds_time_s();
    ds_status st = ds_tokenize_alloc(tok, big, n, true, true, &ids, &ni, &err);
    double dt = ds_time_s() - t0;
    CHECK(st == DS_OK, "%s", err.msg);
    printf("tokenize %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", n, ni, dt, n / dt / 1e6);
    CHECK(dt < 1.0, "100 KB took %.3f s", dt);
    if (st == DS_OK) {
        char *back = malloc(n + 1);
        size_t nb;
        st = ds_detokenize(tok, ids + 1, ni - 1, true, back, n + 1, &nb, &err);
        CHECK(st == DS_OK && nb == n && memcmp(back, big, n) == 0, "long round trip");
        free(back);
        free(ids);
    }
    free(big);
    free_cases(&c);
}

int main(void) {
    ds_tokenizer *llm = load("tokenizer/ggml-vocab-deepseek-llm.gguf", NULL);
    if (llm) {
        CHECK(strcmp(ds_tokenizer_pre(llm), "deepseek-llm") == 0, "pre %s", ds_tokenizer_pre(llm));
        check_fixture(llm, "tokenizer/ggml-vocab-deepseek-llm.gguf.inp",
                      "tokenizer/ggml-vocab-deepseek-llm.gguf.out");
        check_api(llm);
        check_stream_split(llm);
        check_random(llm);
        check_speed(llm, "tokenizer/deepseek-v3-pre.inp");
        ds_tokenizer_free(llm);
    }
    ds_tokenizer *coder = load("tokenizer/ggml-vocab-deepseek-coder.gguf", NULL);
    if (coder) {
        CHECK(strcmp(ds_tokenizer_pre(coder), "deepseek-coder") == 0, "pre %s", ds_tokenizer_pre(coder));
        CHECK(ds_tokenizer_eot(coder) == 32021, "coder eot is <|EOT|>: %d", ds_tokenizer_eot(coder));
        check_fixture(coder, "tokenizer/ggml-vocab-deepseek-coder.gguf.inp",
                      "tokenizer/ggml-vocab-deepseek-coder.gguf.out");
        ds_tokenizer_free(coder);
    }
    ds_tokenizer *v3 = load("tokenizer/ggml-vocab-deepseek-llm.gguf", "tokenizer.ggml.pre=str:deepseek-v3");
    if (v3) {
        CHECK(strcmp(ds_tokenizer_pre(v3), "deepseek-v3") == 0, "pre %s", ds_tokenizer_pre(v3));
        check_fixture(v3, "tokenizer/deepseek-v3-pre.inp", "tokenizer/deepseek-v3-pre.out");
        check_speed(v3, "tokenizer/deepseek-v3-pre.inp");
        ds_tokenizer_free(v3);
    }
    return ds_test_finish("test_tokenizer");
}
