/* cmd_synth.c: `dsinfer synth` — writes a DeepSeek-V3-shaped GGUF with random
 * valid weights (see model/synth.h), printing progress and the size.
 * Not a converter or quantizer of real weights. */
#include "cli.h"
#include "../model/synth.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void help(void) {
    printf("usage: dsinfer synth -o OUT.gguf --layers L --dense D [--mix q3_k_m|q4_k_m|q8_0|f16|iq4_xs]\n"
           "                     [--width full|tiny] [--layout mla|legacy] [--seed S] [--split N]\n"
           "                     [--experts N] [--vocab N] [-t THREADS]\n"
           "Writes a deepseek2 GGUF of DeepSeek-V3's shapes (--width full: hidden 7168, 128 heads,\n"
           "256 experts of 2048, vocab 129280) or small test shapes (--width tiny), L layers of\n"
           "which the first D are dense, with random weights of llama-quantize's type mix.\n"
           "--split N writes N shards OUT-0000i-of-0000N.gguf. Defaults: --mix q3_k_m --width full\n"
           "--layout mla --seed 1.\n");
}

typedef struct {
    double t0, last;
    bool tty;
} progress_state;

static void progress(void *ctx, uint64_t done, uint64_t total) {
    progress_state *ps = ctx;
    double now = ds_time_s(), el = now - ps->t0;
    if (done < total && now - ps->last < 1.0) return; /* at most one line a second */
    ps->last = now;
    fprintf(stderr, "%ssynth: %6.2f / %.2f GiB (%3.0f%%) %6.1f s, %.2f GB/s%s", ps->tty ? "\r" : "",
            done / 1073741824.0, total / 1073741824.0, total ? 100.0 * done / total : 100.0, el,
            el > 0 ? done / el / 1e9 : 0.0, ps->tty && done < total ? "" : "\n");
    fflush(stderr);
}

int ds_cmd_synth(int argc, char **argv) {
    ds_synth_params p;
    ds_synth_params_default(&p);
    const char *out = NULL;
    bool have_layers = false, have_dense = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int64_t n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help(); return 0; }
        if (!(v = ds_cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "--layers")) {
            if (!ds_cli_int(a, v, 1, DS_MAX_LAYERS, &n)) return 2; /* what ds_model_load takes */
            p.n_layer = (int)n, have_layers = true;
        } else if (!strcmp(a, "--dense")) {
            if (!ds_cli_int(a, v, 0, DS_MAX_LAYERS, &n)) return 2;
            p.n_dense = (int)n, have_dense = true;
        } else if (!strcmp(a, "--mix")) {
            int m = ds_synth_mix_from_name(v);
            if (m < 0) return ds_cli_usage_error("synth", "unknown --mix '%s' (q3_k_m, q4_k_m, q8_0, f16, iq4_xs)", v);
            p.mix = (ds_synth_mix)m;
        } else if (!strcmp(a, "--width")) {
            if (strcmp(v, "full") && strcmp(v, "tiny")) return ds_cli_usage_error("synth", "--width is full or tiny, not '%s'", v);
            p.tiny = !strcmp(v, "tiny");
        } else if (!strcmp(a, "--layout")) {
            if (strcmp(v, "mla") && strcmp(v, "legacy")) return ds_cli_usage_error("synth", "--layout is mla or legacy, not '%s'", v);
            p.legacy = !strcmp(v, "legacy");
        } else if (!strcmp(a, "--seed")) {
            if (!ds_cli_int(a, v, 0, INT64_MAX, &n)) return 2;
            p.seed = (uint64_t)n;
        } else if (!strcmp(a, "--split")) {
            if (!ds_cli_int(a, v, 1, 9999, &n)) return 2;
            p.n_split = (int)n;
        } else if (!strcmp(a, "--experts")) {
            if (!ds_cli_int(a, v, 1, 4096, &n)) return 2;
            p.n_expert = (int)n;
        } else if (!strcmp(a, "--vocab")) {
            if (!ds_cli_int(a, v, 512, 1 << 24, &n)) return 2;
            p.n_vocab = (int)n;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!ds_cli_int(a, v, 0, 4096, &n)) return 2;
            p.n_threads = (int)n;
        } else {
            return ds_cli_usage_error("synth", "unknown option '%s'", a);
        }
    }
    if (!out) return ds_cli_usage_error("synth", "-o OUT.gguf is required");
    if (!have_layers || !have_dense) return ds_cli_usage_error("synth", "--layers and --dense are required");
    if (p.n_dense > p.n_layer) return ds_cli_usage_error("synth", "--dense %d > --layers %d", p.n_dense, p.n_layer);
    /* llama.cpp takes a deepseek2 file of 26 or 27 layers for a "lite" model
     * (no q_lora) and would fail to find attn_q: say so rather than let a
     * comparison fail later. */
    if (p.n_layer == 26 || p.n_layer == 27)
        fprintf(stderr, "dsinfer synth: warning: llama.cpp treats deepseek2 files of 26/27 layers as V2-Lite "
                        "and will not load this one; pick another layer count to compare with it\n");

    progress_state ps = { ds_time_s(), 0, isatty(2) };
    ps.last = ps.t0; /* first line after a second, not at once */
    p.progress = progress;
    p.progress_ctx = &ps;
    fprintf(stderr, "synth: %s width, %d layers (%d dense), mix %s, %s layout, seed %llu%s\n", p.tiny ? "tiny" : "full",
            p.n_layer, p.n_dense, ds_synth_mix_name(p.mix), p.legacy ? "legacy" : "mla", (unsigned long long)p.seed,
            p.n_split > 1 ? ", split" : "");
    uint64_t bytes = 0;
    ds_error err = { 0 };
    ds_status st = ds_synth_write(&p, out, &bytes, &err);
    if (st) {
        fprintf(stderr, "dsinfer synth: %s\n", err.msg);
        return ds_cli_exit_code(st);
    }
    double el = ds_time_s() - ps.t0;
    if (p.n_split > 1) {
        size_t n = strlen(out);
        if (n > 5 && !strcmp(out + n - 5, ".gguf")) n -= 5; /* the shards' prefix, as ds_synth_write names them */
        printf("wrote %.*s-%05d-of-%05d.gguf and %d more shards: %.2f GiB (%llu bytes) in %.1f s\n", (int)n, out, 1,
               p.n_split, p.n_split - 1, bytes / 1073741824.0, (unsigned long long)bytes, el);
    } else
        printf("wrote %s: %.2f GiB (%llu bytes) in %.1f s\n", out, bytes / 1073741824.0, (unsigned long long)bytes, el);
    return 0;
}
