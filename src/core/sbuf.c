/* sbuf.c: the growable string of core.h (doubling, NUL-terminated, sticky
 * out-of-memory flag). */
#include "core.h"

#include <stdlib.h>
#include <string.h>

void ds_sbuf_append(ds_sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void ds_sbuf_free(ds_sbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
