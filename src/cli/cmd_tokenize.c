/* cmd_tokenize.c: `dsinfer tokenize` — text to ids (special tokens parsed),
 * printed on one line separated by single spaces. Loads only the vocab. */
#include "cli.h"
#include "../text/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf("usage: dsinfer tokenize -m MODEL (-p TEXT | -f FILE) [--ids] [--no-bos] [--override-kv KEY=TYPE:VALUE]\n"
           "Prints the token ids of TEXT on one line (special tokens are parsed).\n"
           "Without --ids each token is printed as 'id -> \"piece\"' on its own line.\n");
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *g = realloc(buf, cap *= 2);
            if (!g) { free(buf); buf = NULL; }
            buf = g;
        }
    }
    fclose(f);
    if (buf) *len = n;
    return buf;
}

int ds_cmd_tokenize(int argc, char **argv) {
    ds_cli_model_opts o;
    ds_cli_model_opts_init(&o);
    const char *text = NULL, *file = NULL;
    bool ids_only = false, no_bos = false;
    for (int i = 1; i < argc; i++) {
        int r = ds_cli_model_opt(&o, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "-p") || !strcmp(argv[i], "--prompt")) { if (!(text = ds_cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--file")) { if (!(file = ds_cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--ids")) ids_only = true;
        else if (!strcmp(argv[i], "--no-bos")) no_bos = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { help(); return 0; }
        else return ds_cli_usage_error("tokenize", "unknown option '%s'", argv[i]);
    }
    if (!o.model || (!text && !file) || (text && file))
        return ds_cli_usage_error("tokenize", "-m and exactly one of -p / -f are required");
    size_t len = 0;
    char *owned = NULL;
    if (file) {
        if (!(owned = read_all(file, &len))) {
            fprintf(stderr, "dsinfer tokenize: cannot read '%s'\n", file);
            return 1;
        }
        text = owned;
    } else {
        len = strlen(text);
    }

    ds_error err = { 0 };
    ds_gguf *g = NULL;
    ds_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 1;
    ds_status st = ds_gguf_open(o.model, &g, &err);
    for (int i = 0; !st && i < o.n_overrides; i++) st = ds_gguf_override(g, o.overrides[i], &err);
    if (!st) st = ds_tokenizer_load(g, &tok, &err);
    if (!st) st = ds_tokenize_alloc(tok, text, len, !no_bos && ds_tokenizer_add_bos(tok), true, &ids, &n, &err);
    if (st) {
        fprintf(stderr, "dsinfer tokenize: %s\n", err.msg);
        rc = ds_cli_exit_code(st);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids_only) {
            printf(i ? " %d" : "%d", ids[i]);
        } else {
            size_t pl;
            const char *p = ds_token_piece(tok, ids[i], true, &pl);
            printf("%6d -> '%.*s'\n", ids[i], (int)pl, p);
        }
    }
    if (ids_only) printf("\n");
    rc = 0;
done:
    free(ids);
    free(owned);
    ds_tokenizer_free(tok);
    ds_gguf_close(g);
    return rc;
}
