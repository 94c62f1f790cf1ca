/* cmd_logits.c: `dsinfer logits` — one causal prefill of exactly the given
 * ids (no BOS), all positions' logits as little-endian f32 [n][n_vocab]. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf("usage: dsinfer logits -m MODEL --tokens ID,ID,... -o OUT.f32 [-t N] [--device ref|cpu]\n"
           "                      [-ctk f32|f16|bf16] [-ub N] [--override-kv KEY=TYPE:VALUE]\n"
           "Writes float32 [n_tokens][n_vocab] logits of every position of one prefill.\n");
}

/* Parses "5,17,42" into a malloc'd array; NULL (error printed) if malformed. */
static int32_t *parse_ids(const char *s, int *n_out) {
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    const char *p = s;
    while (ids && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffff || (*end && *end != ',')) {
            fprintf(stderr, "dsinfer logits: bad token list '%s' (expected ids like 5,17,42)\n", s);
            free(ids);
            return NULL;
        }
        if (n == cap) {
            int32_t *g = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!g) { free(ids); return NULL; }
            ids = g;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (ids && n == 0) {
        fprintf(stderr, "dsinfer logits: --tokens is empty\n");
        free(ids);
        return NULL;
    }
    *n_out = n;
    return ids;
}

int ds_cmd_logits(int argc, char **argv) {
    ds_cli_model_opts o;
    ds_cli_model_opts_init(&o);
    const char *tokens = NULL, *outp = NULL;
    for (int i = 1; i < argc; i++) {
        int r = ds_cli_model_opt(&o, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--tokens")) { if (!(tokens = ds_cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "-o")) { if (!(outp = ds_cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { help(); return 0; }
        else return ds_cli_usage_error("logits", "unknown option '%s'", argv[i]);
    }
    if (!o.model || !tokens || !outp) return ds_cli_usage_error("logits", "-m, --tokens and -o are required");
    int n = 0;
    int32_t *ids = parse_ids(tokens, &n);
    if (!ids) return 2;
    if (o.n_ctx < n) o.n_ctx = n;

    ds_model *m;
    ds_ctx *c;
    ds_status lst = ds_cli_load(&o, &m, &c, 1);
    if (lst) { free(ids); return ds_cli_exit_code(lst); }
    int rc = 1;
    const int V = m->hp.n_vocab;
    int32_t *pos = malloc((size_t)n * sizeof *pos), *seq = calloc((size_t)n, sizeof *seq);
    float *logits = malloc((size_t)n * V * sizeof *logits);
    if (!pos || !seq || !logits) { fprintf(stderr, "dsinfer logits: out of memory\n"); goto done; }
    for (int i = 0; i < n; i++) pos[i] = i;
    ds_batch b = { n, ids, pos, seq, NULL, NULL };
    ds_error err = { 0 };
    ds_status st = ds_ctx_decode(c, &b, logits, &err);
    if (st) {
        fprintf(stderr, "dsinfer logits: %s\n", err.msg);
        rc = ds_cli_exit_code(st);
        goto done;
    }
    FILE *f = fopen(outp, "wb");
    if (!f || fwrite(logits, sizeof(float), (size_t)n * V, f) != (size_t)n * V || fclose(f)) {
        fprintf(stderr, "dsinfer logits: cannot write '%s'\n", outp);
        goto done;
    }
    rc = 0;
done:
    free(pos); free(seq); free(logits); free(ids);
    ds_ctx_free(c);
    ds_model_free(m);
    return rc;
}
