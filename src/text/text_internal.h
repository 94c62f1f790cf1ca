/* text_internal.h: pieces shared by the src/text files — the pre-tokenizer (regex
 * chains over PCRE2), span lists and UTF-8 helpers.
 * Not an interface for other modules: use text.h. */
#ifndef DS_TEXT_INTERNAL_H
#define DS_TEXT_INTERNAL_H

#include "text.h"

/* A piece of the input: bytes [off, off + len). uint32 keeps the lists small;
 * ds_tokenize rejects inputs of 4 GiB and more. */
typedef struct ds_span {
    uint32_t off, len;
} ds_span;

/* Growable list of spans, owned by whoever holds it (free(v)). */
typedef struct ds_spans {
    ds_span *v;
    size_t n, cap;
} ds_spans;

bool ds_spans_push(ds_spans *s, uint32_t off, uint32_t len); /* false on OOM */

/* ---- pre-tokenizer ---------------------------------------------------------
 * An ordered list of compiled regexes. Each regex splits every piece left by
 * the previous one into its matches and the gaps between them (both kept),
 * as llama.cpp's unicode_regex_split does; a regex never sees past its piece
 * (so lookaheads and "$" stop at the piece's end). */
typedef struct ds_pretok ds_pretok;

/* name: tokenizer.ggml.pre or NULL. *used gets the chain actually used.
 * Caller frees with ds_pretok_free. */
ds_status ds_pretok_create(const char *name, ds_pretok **out, const char **used,
                           ds_error *err);
void ds_pretok_free(ds_pretok *p);
/* Splits text[0..len) (valid UTF-8, len < 4 GiB) and appends the pieces in
 * order to *out. Thread-safe: all matching state is per call. */
ds_status ds_pretok_split(const ds_pretok *p, const char *text, size_t len, ds_spans *out,
                          ds_error *err);

/* ---- UTF-8 ------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if the bytes
 * there are not one (bad lead, bad continuation, overlong, surrogate,
 * > U+10FFFF, or cut short by n). Strict, as PCRE2's UTF mode requires. */
int ds_utf8_valid_len(const unsigned char *s, size_t n);
/* Encodes cp (<= 0x10FFFF) into out[4]; returns its length. */
int ds_utf8_encode(uint32_t cp, char *out);

#endif
