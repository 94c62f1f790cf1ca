/* test_synth.c: `synth` models at tiny width — they load, carry the keys,
 * shapes and per-mix tensor types they claim, run to finite logits on the
 * ref and cpu backends, have weights of the intended scale and zero mean,
 * a working tokenizer and chat template; split output loads; the bytes do
 * not depend on the thread count; and the GGUF writer's streamed (fill
 * callback) tensors round-trip and report callback errors. */
#include "testutil.h"
#include "engine/engine.h"
#include "model/synth.h"
#include "text/text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static ds_synth_params tiny(int layers, int dense, ds_synth_mix mix, bool legacy) {
    ds_synth_params p;
    ds_synth_params_default(&p);
    p.n_layer = layers;
    p.n_dense = dense;
    p.mix = mix;
    p.tiny = true;
    p.legacy = legacy;
    p.seed = 7;
    p.n_threads = 2;
    return p;
}

static ds_model *load(const char *path) {
    ds_model *m = NULL;
    ds_error err = { 0 };
    ds_model_params mp = { .path = path };
    if (ds_model_load(&mp, &m, &err)) {
        CHECK(0, "load %s: %s", path, err.msg);
        return NULL;
    }
    return m;
}

static bool write_model(const ds_synth_params *p, const char *path) {
    ds_error err = { 0 };
    uint64_t bytes = 0;
    ds_status st = ds_synth_write(p, path, &bytes, &err);
    CHECK(st == DS_OK, "synth %s: %s", path, err.msg);
    CHECK(st != DS_OK || bytes > 1000000, "%s: %llu bytes", path, (unsigned long long)bytes);
    return st == DS_OK;
}

/* A short prefill on a device: every logit finite and not all equal. */
static void check_decode(const ds_model *m, const char *dev, const char *what) {
    ds_ctx_params cp;
    ds_ctx_params_default(&cp);
    cp.device = dev;
    cp.n_threads = 2;
    cp.n_ctx = 64;
    ds_ctx *c;
    ds_error err = { 0 };
    if (ds_ctx_create(m, &cp, &c, &err)) {
        CHECK(0, "%s %s: ctx: %s", what, dev, err.msg);
        return;
    }
    enum { N = 6 };
    int32_t ids[N] = { 0, 300, 17, 999, 512, 45 }, pos[N], seq[N] = { 0 };
    for (int i = 0; i < N; i++) pos[i] = i;
    const int V = m->hp.n_vocab;
    float *logits = malloc((size_t)N * V * sizeof *logits);
    ds_batch b = { N, ids, pos, seq, NULL, NULL };
    ds_status st = ds_ctx_decode(c, &b, logits, &err);
    CHECK(st == DS_OK, "%s %s: decode: %s", what, dev, err.msg);
    if (st == DS_OK) {
        int bad = 0;
        double mn = INFINITY, mx = -INFINITY, ss = 0;
        for (size_t i = 0; i < (size_t)N * V; i++) {
            if (!isfinite(logits[i])) bad++;
            else mn = fmin(mn, logits[i]), mx = fmax(mx, logits[i]), ss += (double)logits[i] * logits[i];
        }
        double rms = sqrt(ss / ((double)N * V));
        printf("%-28s %-3s logits rms %.3f range [%.2f, %.2f]\n", what, dev, rms, mn, mx);
        CHECK(bad == 0, "%s %s: %d non-finite logits", what, dev, bad);
        /* output weights have sigma 1/sqrt(n_embd) on a unit-RMS input: logits ~ N(0, 1) */
        CHECK(rms > 0.2 && rms < 5 && mx > mn, "%s %s: logits rms %.3f", what, dev, rms);
    }
    free(logits);
    ds_ctx_free(c);
}

/* Dequantized weights of a tensor: mean ~ 0, std ~ the sigma synth aims at. */
static void check_stats(const ds_model *m, const ds_tensor *t, double want_std, const char *what) {
    int64_t rows = t->ne[1] * t->ne[2], n = t->ne[0];
    float *x = malloc((size_t)n * sizeof *x);
    double s = 0, ss = 0;
    for (int64_t r = 0; r < rows; r++) {
        ds_dequantize_row(t->type, ds_tensor_row(t, r), x, n);
        for (int64_t i = 0; i < n; i++) s += x[i], ss += (double)x[i] * x[i];
    }
    free(x);
    double cnt = (double)rows * n, mean = s / cnt, sd = sqrt(ss / cnt - mean * mean);
    printf("%-28s %-28s %-6s mean %+.2e std %.4f (want %.4f)\n", what, t->name, ds_type_info(t->type)->name, mean, sd,
           want_std);
    /* 10 %: the scale jitter and fp16 rounding of d move the std by a few % */
    CHECK(fabs(sd / want_std - 1) < 0.10, "%s %s: std %.4f, want %.4f", what, t->name, sd, want_std);
    /* a mean of 2 % of the std is already 6+ sigma of sampling noise here
     * for zero-mean weights; a min term or sign left uncancelled gives 10-50 % */
    CHECK(fabs(mean) < 0.02 * sd, "%s %s: mean %.3e vs std %.3e", what, t->name, mean, sd);
    (void)m;
}

static void expect_type(const ds_model *m, const char *name, ds_type want) {
    const ds_gguf_tensor *t = ds_gguf_find_tensor(m->gguf, name);
    CHECK(t != NULL, "tensor %s missing", name);
    if (t) CHECK(t->type == (uint32_t)want, "%s is %s, want %s", name, ds_type_info(t->type)->name, ds_type_info(want)->name);
}

static void test_q3km_mla(void) {
    ds_synth_params p = tiny(3, 1, DS_SYNTH_Q3_K_M, false);
    const char *path = ds_test_tmp("synth_q3km_mla.gguf");
    if (!write_model(&p, path)) return;
    ds_model *m = load(path);
    if (!m) return;
    const ds_hparams *hp = &m->hp;
    CHECK(hp->n_layer == 3 && hp->n_dense_lead == 1 && hp->n_embd == 256 && hp->n_head == 4, "shape");
    CHECK(hp->q_lora == 256 && hp->kv_lora == 256 && hp->d_nope == 64 && hp->d_rope == 32 && hp->d_v == 64, "attn sizes");
    CHECK(hp->n_expert == 16 && hp->n_expert_used == 4 && hp->n_group == 4 && hp->n_group_used == 2, "experts");
    CHECK(hp->n_ff == 512 && hp->n_ff_exp == 256 && hp->n_expert_shared == 1 && hp->n_vocab == 1024, "ffn/vocab");
    CHECK(hp->gating == DS_GATING_SIGMOID && hp->expert_weights_norm && hp->expert_weights_scale == 2.5f, "gating");
    CHECK(hp->mla_layout && hp->yarn && hp->yarn_factor == 40 && hp->yarn_orig_ctx == 4096, "layout/yarn");
    CHECK(fabs(hp->kq_scale - 1.36889 * 1.36889 / sqrt(96.0)) < 1e-4, "kq_scale %g", hp->kq_scale);
    /* Q3_K_M: Q3_K by default; ffn_down* Q5_K in the first layer, Q4_K after;
     * attn_output Q4_K; attn_k_b Q8_0; output Q6_K; vectors and router F32 */
    expect_type(m, "token_embd.weight", DS_TYPE_Q3_K);
    expect_type(m, "output.weight", DS_TYPE_Q6_K);
    expect_type(m, "output_norm.weight", DS_TYPE_F32);
    expect_type(m, "blk.0.attn_q_a.weight", DS_TYPE_Q3_K);
    expect_type(m, "blk.0.attn_q_b.weight", DS_TYPE_Q3_K);
    expect_type(m, "blk.0.attn_kv_a_mqa.weight", DS_TYPE_Q3_K);
    expect_type(m, "blk.0.attn_k_b.weight", DS_TYPE_Q8_0);
    expect_type(m, "blk.0.attn_v_b.weight", DS_TYPE_Q3_K);
    expect_type(m, "blk.0.attn_output.weight", DS_TYPE_Q4_K);
    expect_type(m, "blk.0.ffn_gate.weight", DS_TYPE_Q3_K);
    expect_type(m, "blk.0.ffn_down.weight", DS_TYPE_Q5_K);
    expect_type(m, "blk.1.ffn_down_exps.weight", DS_TYPE_Q4_K);
    expect_type(m, "blk.2.ffn_down_shexp.weight", DS_TYPE_Q4_K);
    expect_type(m, "blk.2.ffn_up_exps.weight", DS_TYPE_Q3_K);
    expect_type(m, "blk.2.ffn_gate_inp.weight", DS_TYPE_F32);
    expect_type(m, "blk.2.exp_probs_b.bias", DS_TYPE_F32);
    expect_type(m, "blk.1.attn_kv_a_norm.weight", DS_TYPE_F32);

    const ds_layer *L1 = &m->layers[1];
    check_stats(m, &m->token_embd, 1.0, "q3_k_m");
    check_stats(m, &L1->gate_exps, 1 / 16.0, "q3_k_m");   /* Q3_K, 1/sqrt(256) */
    check_stats(m, &L1->down_exps, 1 / 16.0, "q3_k_m");   /* Q4_K: min term */
    check_stats(m, &m->layers[0].ffn_down, 1 / sqrt(512.0), "q3_k_m"); /* Q5_K */
    check_stats(m, &m->output, 1 / 16.0, "q3_k_m");       /* Q6_K */
    check_stats(m, &L1->k_b, 0.5 / 8.0, "q3_k_m");        /* Q8_0, gain 0.5 */
    check_stats(m, &L1->gate_inp, 1 / 16.0, "q3_k_m");    /* F32 router */

    check_decode(m, "ref", "q3_k_m mla");
    check_decode(m, "cpu", "q3_k_m mla");

    /* tokenizer and chat template */
    ds_tokenizer *tok;
    ds_error err = { 0 };
    ds_status st = ds_tokenizer_load(m->gguf, &tok, &err);
    CHECK(st == DS_OK, "tokenizer: %s", err.msg);
    if (st == DS_OK) {
        CHECK(ds_tokenizer_n_vocab(tok) == 1024 && ds_tokenizer_bos(tok) == 0 && ds_tokenizer_eos(tok) == 1, "bos/eos");
        CHECK(!strcmp(ds_tokenizer_pre(tok), "deepseek-v3"), "pre %s", ds_tokenizer_pre(tok));
        const char *user = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
        int32_t id = ds_tokenizer_find(tok, user, strlen(user));
        CHECK(id == 1022 && ds_tokenizer_token_type(tok, id) == DS_TOKEN_CONTROL, "<|User|> id %d", id);
        ds_chat_template t;
        CHECK(ds_chat_template_init(tok, NULL, &t, &err) == DS_OK && t.format == DS_CHAT_DEEPSEEK3, "chat format");
        const char *text = "Hello world, synth 123!\n";
        int32_t *ids = NULL;
        size_t n = 0;
        st = ds_tokenize_alloc(tok, text, strlen(text), true, true, &ids, &n, &err);
        CHECK(st == DS_OK && n >= 3 && ids[0] == 0, "tokenize: %s", err.msg);
        char back[128];
        size_t nb = 0;
        if (st == DS_OK) {
            CHECK(ds_detokenize(tok, ids + 1, n - 1, false, back, sizeof back, &nb, &err) == DS_OK && nb == strlen(text) &&
                      !memcmp(back, text, nb), "round trip");
        }
        free(ids);
        /* merges work: a two-letter merged token's text encodes to that one token */
        int32_t want = -1;
        for (int32_t i = 258; i < 1022 && want < 0; i++) {
            size_t len = 0;
            const char *s = ds_tokenizer_token_text(tok, i, &len);
            if (s && len == 2 && ((s[0] | 32) >= 'a' && (s[0] | 32) <= 'z') && ((s[1] | 32) >= 'a' && (s[1] | 32) <= 'z'))
                want = i;
        }
        CHECK(want >= 0, "no two-letter merged token");
        if (want >= 0) {
            const char *s = ds_tokenizer_token_text(tok, want, NULL);
            int32_t one[4];
            size_t n1 = 0;
            CHECK(ds_tokenize(tok, s, 2, false, false, one, 4, &n1, &err) == DS_OK && n1 == 1 && one[0] == want,
                  "'%s' -> %zu ids (first %d), want [%d]", s, n1, n1 ? one[0] : -1, want);
        }
        ds_tokenizer_free(tok);
    }
    ds_model_free(m);
}

static void test_f16_legacy(void) {
    ds_synth_params p = tiny(2, 1, DS_SYNTH_F16, true);
    const char *path = ds_test_tmp("synth_f16_legacy.gguf");
    if (!write_model(&p, path)) return;
    ds_model *m = load(path);
    if (!m) return;
    CHECK(!m->hp.mla_layout && m->hp.d_nope == 64 && m->hp.d_v == 64, "legacy sizes");
    expect_type(m, "blk.1.attn_kv_b.weight", DS_TYPE_F16);
    expect_type(m, "token_embd.weight", DS_TYPE_F16);
    expect_type(m, "output.weight", DS_TYPE_F16);
    expect_type(m, "blk.1.ffn_gate_inp.weight", DS_TYPE_F32);
    CHECK(ds_gguf_find_tensor(m->gguf, "blk.0.attn_k_b.weight") == NULL, "legacy file has k_b");
    check_stats(m, &m->layers[1].kv_b, 1 / 16.0, "f16 legacy");
    check_stats(m, &m->layers[1].up_exps, 1 / 16.0, "f16 legacy");
    check_decode(m, "ref", "f16 legacy");
    check_decode(m, "cpu", "f16 legacy");
    ds_model_free(m);
}

/* The other mixes: types that differ from Q3_K_M, stats and a cpu run. */
static void test_other_mixes(void) {
    struct { ds_synth_mix mix; const char *file; ds_type embd, down0, down1, attn_out, kv_b; } cases[] = {
        { DS_SYNTH_Q4_K_M, "synth_q4km.gguf", DS_TYPE_Q4_K, DS_TYPE_Q4_K, DS_TYPE_Q6_K, DS_TYPE_Q4_K, DS_TYPE_Q6_K },
        { DS_SYNTH_Q8_0, "synth_q80.gguf", DS_TYPE_Q8_0, DS_TYPE_Q8_0, DS_TYPE_Q8_0, DS_TYPE_Q8_0, DS_TYPE_Q8_0 },
        { DS_SYNTH_IQ4_XS, "synth_iq4xs.gguf", DS_TYPE_IQ4_XS, DS_TYPE_Q5_K, DS_TYPE_IQ4_XS, DS_TYPE_IQ4_XS,
          DS_TYPE_IQ4_XS },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* legacy layout for the kv_b rules; 2 layers: use_more_bits gives layer 1 Q6_K in Q4_K_M */
        ds_synth_params p = tiny(2, 1, cases[i].mix, true);
        const char *path = ds_test_tmp(cases[i].file);
        if (!write_model(&p, path)) continue;
        ds_model *m = load(path);
        if (!m) continue;
        const char *name = ds_synth_mix_name(cases[i].mix);
        expect_type(m, "token_embd.weight", cases[i].embd);
        expect_type(m, "blk.0.ffn_down.weight", cases[i].down0);
        expect_type(m, "blk.1.ffn_down_exps.weight", cases[i].down1);
        expect_type(m, "blk.1.attn_output.weight", cases[i].attn_out);
        expect_type(m, "blk.1.attn_kv_b.weight", cases[i].kv_b);
        expect_type(m, "output.weight", cases[i].mix == DS_SYNTH_Q8_0 ? DS_TYPE_Q8_0 : DS_TYPE_Q6_K);
        check_stats(m, &m->layers[1].gate_exps, 1 / 16.0, name);
        check_stats(m, &m->layers[1].down_exps, 1 / 16.0, name);
        check_decode(m, "cpu", name);
        ds_model_free(m);
    }
}

static void test_split_and_determinism(void) {
    ds_synth_params p = tiny(2, 1, DS_SYNTH_Q3_K_M, false);
    p.n_split = 3;
    if (!write_model(&p, ds_test_tmp("synth_split.gguf"))) return;
    ds_model *m = load(ds_test_tmp("synth_split-00001-of-00003.gguf"));
    if (m) {
        CHECK(ds_gguf_n_shards(m->gguf) == 3, "shards %d", ds_gguf_n_shards(m->gguf));
        check_decode(m, "cpu", "q3_k_m split 3");
        ds_model_free(m);
    }
    /* the same seed gives the same bytes with 1 or 2 generation threads */
    p.n_split = 0;
    p.n_threads = 1;
    write_model(&p, ds_test_tmp("synth_t1.gguf"));
    p.n_threads = 2;
    write_model(&p, ds_test_tmp("synth_t2.gguf"));
    size_t n1 = 0, n2 = 0;
    void *a = ds_test_read_file(ds_test_tmp("synth_t1.gguf"), &n1), *b = ds_test_read_file(ds_test_tmp("synth_t2.gguf"), &n2);
    CHECK(a && b && n1 == n2 && !memcmp(a, b, n1), "output depends on the thread count");
    free(a);
    free(b);
}

/* ---- writer: streamed tensors ------------------------------------------------ */

typedef struct { uint64_t calls, next_off; int fail_at; } fill_state;

static ds_status fill_pattern(void *ctx, uint64_t off, void *dst, size_t len, ds_error *err) {
    fill_state *s = ctx;
    if (off != s->next_off) return ds_error_set(err, DS_ERR_INTERNAL, "fill out of order: %llu", (unsigned long long)off);
    if (s->fail_at >= 0 && s->calls == (uint64_t)s->fail_at) return ds_error_set(err, DS_ERR_IO, "fill refused on purpose");
    for (size_t i = 0; i < len; i++) ((uint8_t *)dst)[i] = (uint8_t)((off + i) * 7 + 3);
    s->calls++;
    s->next_off = off + len;
    return DS_OK;
}

static void test_writer_fill(void) {
    /* 20 MiB of F32 crosses the writer's 16 MiB chunk; a buffer tensor next to it */
    const int64_t ne_big[2] = { 1024, 5120 }, ne_small[1] = { 8 };
    const uint64_t big = 1024ull * 5120 * 4;
    float small[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    fill_state fs = { 0, 0, -1 };
    ds_gguf_writer *w = ds_gguf_writer_create();
    CHECK(ds_gguf_writer_set_str(w, "general.architecture", "test") == DS_OK, "key");
    CHECK(ds_gguf_writer_add_tensor(w, "small", DS_TYPE_F32, 1, ne_small, small, sizeof small) == DS_OK, "add small");
    CHECK(ds_gguf_writer_add_tensor_fn(w, "big", DS_TYPE_F32, 2, ne_big, big, fill_pattern, &fs) == DS_OK, "add big");
    CHECK(ds_gguf_writer_add_tensor_fn(w, "bad", DS_TYPE_F32, 2, ne_big, big - 4, fill_pattern, &fs) != DS_OK,
          "size mismatch accepted");
    CHECK(ds_gguf_writer_add_tensor_fn(w, "nofill", DS_TYPE_F32, 1, ne_small, 32, NULL, NULL) != DS_OK, "NULL fill accepted");
    ds_error err = { 0 };
    const char *path = ds_test_tmp("writer_fill.gguf");
    CHECK(ds_gguf_writer_write(w, path, &err) == DS_OK, "write: %s", err.msg);
    CHECK(fs.calls == 2 && fs.next_off == big, "fill called %llu times up to %llu", (unsigned long long)fs.calls,
          (unsigned long long)fs.next_off);
    ds_gguf *g;
    if (ds_gguf_open(path, &g, &err) == DS_OK) {
        const ds_gguf_tensor *t = ds_gguf_find_tensor(g, "big"), *s = ds_gguf_find_tensor(g, "small");
        CHECK(t && t->nbytes == big, "big tensor");
        CHECK(s && !memcmp(s->data, small, sizeof small), "small tensor");
        int bad = 0;
        for (uint64_t i = 0; t && i < big; i++) bad += t->data[i] != (uint8_t)(i * 7 + 3);
        CHECK(bad == 0, "%d streamed bytes differ", bad);
        ds_gguf_close(g);
    } else {
        CHECK(0, "reopen: %s", err.msg);
    }
    /* a failing callback fails the write with its own message and leaves no file */
    fs = (fill_state){ 0, 0, 1 };
    memset(&err, 0, sizeof err);
    ds_status st = ds_gguf_writer_write(w, path, &err);
    CHECK(st == DS_ERR_IO && strstr(err.msg, "on purpose"), "failed fill: %d %s", (int)st, err.msg);
    CHECK(access(path, F_OK) != 0, "partial file left behind");
    ds_gguf_writer_free(w);
}

/* ---- the commands, through the binary ------------------------------------------ */

/* Runs "$DSINFER_BIN args" with stdout to out_path; returns the exit status. */
static int run_bin(const char *args, const char *out_path) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s > %s 2>/dev/null", getenv("DSINFER_BIN"), args, out_path ? out_path : "/dev/null");
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static int count_lines(const char *path, const char *prefix) {
    size_t len = 0;
    char *s = ds_test_read_file(path, &len);
    int n = 0;
    for (char *p = s; p && p < s + len; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : s + len)
        n += !strncmp(p, prefix, strlen(prefix));
    free(s);
    return n;
}

static void test_commands(void) {
    if (!getenv("DSINFER_BIN")) {
        fprintf(stderr, "test_synth: DSINFER_BIN not set: synth/bench command checks skipped\n");
        return;
    }
    char model[1024], args[2048], out[1024];
    snprintf(model, sizeof model, "%s", ds_test_tmp("cli_synth.gguf"));
    snprintf(out, sizeof out, "%s", ds_test_tmp("cli_out.txt"));
    snprintf(args, sizeof args, "synth -o %s --layers 2 --dense 1 --width tiny --mix q4_k_m --seed 3", model);
    CHECK(run_bin(args, out) == 0 && count_lines(out, "wrote ") == 1, "synth command");
    /* usage errors exit 2 */
    CHECK(run_bin("synth -o /dev/null --layers 2", NULL) == 2, "synth without --dense");
    CHECK(run_bin("synth -o /dev/null --layers 2 --dense 3", NULL) == 2, "synth dense > layers");
    CHECK(run_bin("synth -o /dev/null --layers 2 --dense 1 --mix q9", NULL) == 2, "synth bad mix");
    snprintf(args, sizeof args, "bench -m %s -p 8 -n 0,bad", model);
    CHECK(run_bin(args, NULL) == 2, "bench bad list");
    snprintf(args, sizeof args, "bench -m %s --sweep", model);
    CHECK(run_bin(args, NULL) == 2, "bench --sweep without -c");
    /* Two runs only: each probes the memory bandwidth over 1 GiB (~1-2 s).
     * Markdown: the bandwidth header, one row per test and depth (pp8, tg2,
     * pp4+tg2 at depths 0 and 8); the model flags llama.cpp users pass are accepted. */
    snprintf(args, sizeof args, "bench -m %s -p 8 -n 2 -pg 4,2 -d 0,8 -r 1 -t 2 -ngl 99 -fa 1", model);
    CHECK(run_bin(args, out) == 0, "bench md");
    CHECK(count_lines(out, "# host read bandwidth:") == 1 && count_lines(out, "| deepseek2") == 6, "bench md rows");
    /* sweep as csv: depths 0, 16, 32, 48 of a 64-token context */
    snprintf(args, sizeof args, "bench -m %s --sweep -c 64 -ub 16 -t 2 -o csv", model);
    CHECK(run_bin(args, out) == 0 && count_lines(out, "pp,tg,n_kv,") == 1 && count_lines(out, "16,4,") == 4,
          "bench sweep csv rows");
}

int main(void) {
    double t0 = ds_time_s();
    test_writer_fill();
    test_q3km_mla();
    test_f16_legacy();
    test_other_mixes();
    test_split_and_determinism();
    test_commands();
    printf("test_synth: %.2f s\n", ds_time_s() - t0);
    return ds_test_finish("test_synth");
}
