/* cmd_run.c: `dsinfer run` — one-shot generation in the terminal: prompt
 * (optionally through the chat template), streamed text, then the prompt
 * and generation speed (llama-cli's timings line). */
#include "cli.h"
#include "../text/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf("usage: dsinfer run -m MODEL -p PROMPT [-n N] [--chat] [--system TEXT] [--chat-template NAME]\n"
           "                  [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S]\n"
           "                  [-t N] [-c CTX] [-ub N] [--device ref|cpu] [-ctk f16|bf16|f32] [--override-kv ...]\n"
           "Streams the generated text to stdout; timings go to stderr.\n");
}

typedef struct run_opts {
    const char *prompt, *system, *tmpl;
    int64_t n_predict;
    bool chat;
    ds_sampler_params sp;
} run_opts;

static int parse(int argc, char **argv, ds_cli_model_opts *o, run_opts *r) {
    for (int i = 1; i < argc; i++) {
        int k = ds_cli_model_opt(o, argc, argv, &i);
        if (k < 0) return 2;
        if (k) continue;
        const char *a = argv[i], *v;
        double d;
        int64_t n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help(); return -1; }
        else if (!strcmp(a, "--chat") || !strcmp(a, "-cnv")) r->chat = true;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { if (!(r->prompt = ds_cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--system") || !strcmp(a, "-sys")) { if (!(r->system = ds_cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--chat-template")) { if (!(r->tmpl = ds_cli_value(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, -1, 1 << 30, &r->n_predict)) return 2;
        } else if (!strcmp(a, "--temp")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_float(a, v, &d)) return 2;
            r->sp.temperature = (float)d;
        } else if (!strcmp(a, "--top-k")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, 0, 1 << 30, &n)) return 2;
            r->sp.top_k = (int32_t)n;
        } else if (!strcmp(a, "--top-p")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_float(a, v, &d)) return 2;
            r->sp.top_p = (float)d;
        } else if (!strcmp(a, "--min-p")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_float(a, v, &d)) return 2;
            r->sp.min_p = (float)d;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_float(a, v, &d)) return 2;
            r->sp.repeat_penalty = (float)d;
        } else if (!strcmp(a, "--seed") || !strcmp(a, "-s")) {
            if (!(v = ds_cli_value(argc, argv, &i)) || !ds_cli_int(a, v, -1, INT64_MAX, &n)) return 2;
            r->sp.seed = n < 0 ? DS_SEED_RANDOM : (uint64_t)n;
        } else return ds_cli_usage_error("run", "unknown option '%s'", a);
    }
    if (!o->model || !r->prompt) return ds_cli_usage_error("run", "-m MODEL and -p PROMPT are required");
    return 0;
}

/* Builds the prompt ids: raw text (BOS per the vocab) or the chat template. */
static ds_status prompt_ids(const ds_tokenizer *tok, const run_opts *r, int32_t **ids, size_t *n, ds_error *err) {
    if (!r->chat) return ds_tokenize_alloc(tok, r->prompt, strlen(r->prompt), ds_tokenizer_add_bos(tok), true, ids, n, err);
    ds_chat_template t;
    ds_status st = ds_chat_template_init(tok, r->tmpl, &t, err);
    if (st) return st;
    ds_chat_msg msgs[2];
    size_t nm = 0;
    if (r->system) msgs[nm++] = (ds_chat_msg){ "system", r->system };
    msgs[nm++] = (ds_chat_msg){ "user", r->prompt };
    char *text;
    size_t len;
    if ((st = ds_chat_render(&t, msgs, nm, true, &text, &len, err))) return st;
    st = ds_tokenize_alloc(tok, text, len, false, true, ids, n, err);
    free(text);
    return st;
}

int ds_cmd_run(int argc, char **argv) {
    ds_cli_model_opts o;
    ds_cli_model_opts_init(&o);
    run_opts r = { .n_predict = 128, .sp = ds_sampler_default_params() };
    int pr = parse(argc, argv, &o, &r);
    if (pr) return pr < 0 ? 0 : pr;

    ds_model *m;
    ds_ctx *c;
    ds_status lst = ds_cli_load(&o, &m, &c, 1);
    if (lst) return ds_cli_exit_code(lst);
    ds_error err = { 0 };
    ds_tokenizer *tok = NULL;
    ds_sampler *smp = NULL;
    ds_detok *dt = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    size_t n_prompt = 0;
    int rc = 1;
    ds_status st = ds_tokenizer_load(m->gguf, &tok, &err);
    if (!st) st = prompt_ids(tok, &r, &ids, &n_prompt, &err);
    if (!st) st = ds_sampler_create(&r.sp, m->hp.n_vocab, &smp, &err);
    if (!st) st = ds_detok_create(tok, false, &dt, &err);
    if (st) { fprintf(stderr, "dsinfer run: %s\n", err.msg); goto done; }
    if (n_prompt == 0) { fprintf(stderr, "dsinfer run: the prompt has no tokens\n"); goto done; }
    int64_t n_max = r.n_predict < 0 ? o.n_ctx - (int64_t)n_prompt : r.n_predict;
    if ((int64_t)n_prompt + n_max > o.n_ctx) {
        fprintf(stderr, "dsinfer run: prompt (%zu tokens) + %lld to generate exceed the context (-c %lld)\n", n_prompt,
                (long long)n_max, (long long)o.n_ctx);
        goto done;
    }
    logits = malloc((size_t)m->hp.n_vocab * sizeof *logits);
    int32_t *pos = malloc(n_prompt * sizeof *pos);
    int32_t *seq = calloc(n_prompt, sizeof *seq);
    bool *want = calloc(n_prompt, sizeof *want);
    if (!logits || !pos || !seq || !want) { free(pos); free(seq); free(want); fprintf(stderr, "dsinfer run: out of memory\n"); goto done; }
    for (size_t i = 0; i < n_prompt; i++) pos[i] = (int32_t)i;
    want[n_prompt - 1] = true;
    for (size_t i = 0; i < n_prompt; i++) ds_sampler_accept(smp, ids[i]);

    double t0 = ds_time_s();
    ds_batch b = { (int)n_prompt, ids, pos, seq, want, NULL };
    st = ds_ctx_decode(c, &b, logits, &err);
    free(pos); free(seq); free(want);
    if (st) { fprintf(stderr, "dsinfer run: %s\n", err.msg); goto done; }
    double t1 = ds_time_s();
    int64_t n_gen = 0;
    for (; n_gen < n_max; n_gen++) {
        int32_t tk = ds_sampler_sample(smp, logits);
        if (ds_tokenizer_is_eog(tok, tk)) break;
        ds_sampler_accept(smp, tk);
        size_t len;
        const char *piece = ds_detok_push(dt, tk, &len);
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        if (n_gen + 1 == n_max) { n_gen++; break; }
        int32_t p1 = (int32_t)(n_prompt + n_gen), s1 = 0;
        ds_batch nb = { 1, &tk, &p1, &s1, NULL, NULL };
        if ((st = ds_ctx_decode(c, &nb, logits, &err))) { fprintf(stderr, "\ndsinfer run: %s\n", err.msg); goto done; }
    }
    size_t len;
    const char *tail = ds_detok_flush(dt, &len);
    fwrite(tail, 1, len, stdout);
    printf("\n");
    fflush(stdout); /* the text, then the timings on stderr */
    double t2 = ds_time_s();
    fprintf(stderr, "prompt: %zu tokens in %.3f s (%.2f t/s); generation: %lld tokens in %.3f s (%.2f t/s); seed %llu\n",
            n_prompt, t1 - t0, n_prompt / (t1 - t0), (long long)n_gen, t2 - t1, n_gen > 0 ? n_gen / (t2 - t1) : 0.0,
            (unsigned long long)ds_sampler_seed(smp));
    rc = 0;
done:
    free(logits);
    free(ids);
    ds_detok_free(dt);
    ds_sampler_free(smp);
    ds_tokenizer_free(tok);
    ds_ctx_free(c);
    ds_model_free(m);
    return rc;
}
