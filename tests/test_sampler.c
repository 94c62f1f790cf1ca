/* test_sampler.c: the sampler's chain on crafted distributions — greedy and
 * its ties, seeding, top-k/top-p/min-p keeping exactly their sets (10000
 * draws), penalties on both sides of their thresholds, logprobs, and speed at
 * DeepSeek's vocabulary size.
 * Not a statistical test beyond loose frequency bounds. */
#include "testutil.h"
#include "text/text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ds_sampler_params plain(float temp, uint64_t seed) {
    ds_sampler_params p = ds_sampler_default_params();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static ds_sampler *make(const ds_sampler_params *p, int32_t n_vocab) {
    ds_sampler *s = NULL;
    ds_error err = {0};
    CHECK(ds_sampler_create(p, n_vocab, &s, &err) == DS_OK, "create: %s", err.msg);
    return s;
}

static void random_logits(float *l, int32_t n, uint64_t seed) {
    uint64_t st = seed;
    for (int32_t i = 0; i < n; i++) l[i] = 4.0f * ds_test_randf(&st);
}

static void test_greedy(void) {
    enum { N = 1000 };
    float l[N];
    random_logits(l, N, 1);
    l[617] = 9.0f;
    ds_sampler_params p = plain(0.0f, 1);
    ds_sampler *s = make(&p, N);
    if (!s) return;
    CHECK(ds_sampler_sample(s, l) == 617, "argmax");
    l[123] = 9.0f; /* a tie goes to the lower id */
    CHECK(ds_sampler_sample(s, l) == 123, "tie -> lowest id");
    /* the vectorized scan against a plain ordered one: every position of
     * the maximum (vector lanes, the tail past the last full vector), ties
     * across lanes, NaNs (skipped unless at id 0), -inf everywhere */
    for (int n = 1; n <= 40; n++) {
        for (int at = 0; at < n; at++) {
            for (int i = 0; i < n; i++) l[i] = (float)(i % 5);
            l[at] = 7.0f;
            if (at + 3 < n) l[at + 3] = 7.0f;
            if (at > 0) l[at - 1] = NAN;
            ds_sampler *q = make(&p, n);
            if (!q) break;
            const int32_t want = at == 1 ? 0 : at; /* at 1, l[0] is NaN: id 0, as an ordered scan gives */
            CHECK(ds_sampler_sample(q, l) == want, "argmax n=%d at=%d", n, at);
            CHECK(ds_argmax_f32(l, (size_t)n) == want, "ds_argmax_f32 n=%d at=%d", n, at);
            ds_sampler_free(q);
        }
    }
    for (int i = 0; i < 37; i++) l[i] = -INFINITY;
    ds_sampler *q = make(&p, 37);
    CHECK(q && ds_sampler_sample(q, l) == 0, "all -inf -> id 0");
    ds_sampler_free(q);
    random_logits(l, N, 1);
    l[617] = 9.0f;
    l[123] = 9.0f;
    ds_sampler_free(s);

    /* is_greedy: a pick that is the plain argmax (the server then takes the
     * engine's argmax ids instead of the logits) */
    ds_sampler_params pp = plain(0.0f, 1);
    ds_sampler *gq = make(&pp, N);
    CHECK(gq && ds_sampler_is_greedy(gq), "temperature 0 is greedy");
    ds_sampler_free(gq);
    pp.repeat_penalty = 1.1f;
    gq = make(&pp, N);
    CHECK(gq && !ds_sampler_is_greedy(gq), "penalties change the logits: not a plain argmax");
    ds_sampler_free(gq);
    pp = plain(0.8f, 1);
    gq = make(&pp, N);
    CHECK(gq && !ds_sampler_is_greedy(gq), "temperature 0.8 is not greedy");
    ds_sampler_free(gq);

    p.temperature = -1.0f; /* any temperature <= 0 is greedy */
    s = make(&p, N);
    CHECK(ds_sampler_is_greedy(s), "negative temperature is greedy (is_greedy)");
    CHECK(ds_sampler_sample(s, l) == 123, "negative temperature is greedy");
    ds_sampler_free(s);

    /* top_k = 1 is greedy at any temperature. */
    p = plain(1.5f, 7);
    p.top_k = 1;
    s = make(&p, N);
    ds_sampler_params pg = plain(0.0f, 7);
    ds_sampler *g = make(&pg, N);
    for (int t = 0; t < 50; t++) {
        random_logits(l, N, 100 + (uint64_t)t);
        int32_t a = ds_sampler_sample(s, l), b = ds_sampler_sample(g, l);
        CHECK(a == b, "top_k=1 %d vs greedy %d", a, b);
    }
    ds_sampler_free(s);
    ds_sampler_free(g);
}

static void run_seq(uint64_t seed, int32_t *out, int n, const float *l, int32_t nv) {
    ds_sampler_params p = plain(1.0f, seed);
    ds_sampler *s = make(&p, nv);
    if (!s) return;
    CHECK(ds_sampler_seed(s) == seed, "seed kept");
    for (int i = 0; i < n; i++) out[i] = ds_sampler_sample(s, l);
    /* reset with the same seed replays the sequence */
    ds_sampler_reset(s, seed);
    for (int i = 0; i < n; i++) CHECK(ds_sampler_sample(s, l) == out[i], "reset replays at %d", i);
    ds_sampler_free(s);
}

static void test_seed(void) {
    enum { N = 500, T = 200 };
    float l[N];
    random_logits(l, N, 3);
    int32_t a[T], b[T], c[T];
    run_seq(42, a, T, l, N);
    run_seq(42, b, T, l, N);
    run_seq(43, c, T, l, N);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed, same sequence");
    int diff = 0;
    for (int i = 0; i < T; i++) diff += a[i] != c[i];
    CHECK(diff > T / 2, "different seed differs (%d of %d)", diff, T);

    ds_sampler_params p = plain(1.0f, DS_SEED_RANDOM);
    ds_sampler *s = make(&p, N);
    CHECK(s && ds_sampler_seed(s) != DS_SEED_RANDOM, "random seed drawn");
    ds_sampler_free(s);
}

/* A large vocabulary whose probability sits on a few scattered ids, so the
 * top-p path has to find its nucleus in unsorted candidates. */
enum { NV = 2048 };
static const int32_t k_ids[5] = {1337, 7, 2047, 1000, 123};

static void crafted(float *l, const double *probs, int n_probs) {
    double rest = 1.0;
    for (int i = 0; i < n_probs; i++) rest -= probs[i];
    float tail = (float)log(rest / (NV - n_probs));
    for (int32_t i = 0; i < NV; i++) l[i] = tail;
    for (int i = 0; i < n_probs; i++) l[k_ids[i]] = (float)log(probs[i]);
}

/* Draws 10000 tokens; returns how many fell on each of k_ids and how many
 * elsewhere. */
static void draw(const ds_sampler_params *p, const float *l, int hits[6]) {
    ds_sampler *s = make(p, NV);
    memset(hits, 0, 6 * sizeof *hits);
    if (!s) return;
    for (int t = 0; t < 10000; t++) {
        int32_t id = ds_sampler_sample(s, l);
        int k = 5;
        for (int j = 0; j < 5; j++)
            if (id == k_ids[j]) k = j;
        hits[k]++;
    }
    ds_sampler_free(s);
}

static void test_truncation(void) {
    float *l = malloc(NV * sizeof *l);
    const double probs[5] = {0.5, 0.3, 0.1, 0.06, 0.02}; /* 0.02 spread over the rest */
    crafted(l, probs, 5);
    int h[6];

    /* top_p 0.75: 0.5 < 0.75 <= 0.8, so the nucleus is the first two. */
    ds_sampler_params p = plain(1.0f, 11);
    p.top_p = 0.75f;
    draw(&p, l, h);
    CHECK(h[2] == 0 && h[3] == 0 && h[4] == 0 && h[5] == 0, "top_p: outside nucleus drawn %d %d %d %d", h[2], h[3],
          h[4], h[5]);
    CHECK(h[0] > 0 && h[1] > 0, "top_p: both nucleus tokens drawn");
    CHECK(fabs(h[0] / 10000.0 - 0.625) < 0.03, "top_p: renormalised 0.5/0.8 (got %.3f)", h[0] / 10000.0);

    /* top_p 0.85: three tokens. */
    p.top_p = 0.85f;
    draw(&p, l, h);
    CHECK(h[3] == 0 && h[4] == 0 && h[5] == 0 && h[2] > 0, "top_p 0.85: %d %d %d %d", h[2], h[3], h[4], h[5]);

    /* min_p 0.15: keep p >= 0.075, i.e. 0.5, 0.3, 0.1. */
    p = plain(1.0f, 12);
    p.min_p = 0.15f;
    draw(&p, l, h);
    CHECK(h[3] == 0 && h[4] == 0 && h[5] == 0, "min_p: below the floor drawn %d %d %d", h[3], h[4], h[5]);
    CHECK(h[0] > 0 && h[1] > 0 && h[2] > 0, "min_p: all above drawn");
    CHECK(fabs(h[2] / 10000.0 - 0.1 / 0.9) < 0.02, "min_p renormalised (got %.3f)", h[2] / 10000.0);

    /* top_k 2. */
    p = plain(1.0f, 13);
    p.top_k = 2;
    draw(&p, l, h);
    CHECK(h[2] == 0 && h[3] == 0 && h[4] == 0 && h[5] == 0 && h[0] && h[1], "top_k 2");

    /* Without truncation the tail shows up (~2% of 10000). */
    p = plain(1.0f, 14);
    draw(&p, l, h);
    CHECK(h[5] > 100 && h[5] < 300, "untruncated tail drawn %d times", h[5]);

    /* Temperature comes after top_p/min_p: at a low temperature the nucleus
     * is the same set, only sharper: 0.5^4 : 0.3^4 gives 0.885 : 0.115. */
    p = plain(0.25f, 15);
    p.top_p = 0.75f;
    draw(&p, l, h);
    CHECK(h[2] == 0 && h[5] == 0 && fabs(h[0] / 10000.0 - 0.885) < 0.02, "cold nucleus: %d %d", h[0], h[1]);
    free(l);
}

/* top_p on random logits against a reference nucleus built by sorting. */
static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void test_top_p_reference(void) {
    enum { N = 3000 };
    float *l = malloc(N * sizeof *l), *sorted = malloc(N * sizeof *sorted);
    const float ps[] = {0.05f, 0.3f, 0.5f, 0.9f, 0.99f};
    for (int t = 0; t < 5; t++) {
        random_logits(l, N, 77 + (uint64_t)t);
        memcpy(sorted, l, N * sizeof *l);
        qsort(sorted, N, sizeof *sorted, cmp_desc);
        double sum = 0, cum = 0;
        for (int i = 0; i < N; i++) sum += exp((double)sorted[i] - sorted[0]);
        float cutoff = sorted[N - 1];
        for (int i = 0; i < N; i++) {
            cum += exp((double)sorted[i] - sorted[0]) / sum;
            if (cum >= ps[t]) {
                cutoff = sorted[i];
                break;
            }
        }
        ds_sampler_params p = plain(1.0f, 5 + (uint64_t)t);
        p.top_p = ps[t];
        ds_sampler *s = make(&p, N);
        if (!s) break;
        int outside = 0, at_cut = 0;
        for (int d = 0; d < 3000; d++) {
            int32_t id = ds_sampler_sample(s, l);
            outside += l[id] < cutoff;
            at_cut += l[id] == cutoff;
        }
        CHECK(outside == 0, "top_p %.2f: %d draws below the nucleus", ps[t], outside);
        ds_sampler_free(s);
    }
    free(l);
    free(sorted);
}

/* Greedy after penalties, with the competing logit on either side of where
 * the penalty puts the repeated one. */
static int32_t pick(const ds_sampler_params *p, const int32_t *hist, int nh, float la, float lb) {
    enum { N = 8 };
    float l[N];
    for (int i = 0; i < N; i++) l[i] = -10.0f;
    l[2] = la; /* the repeated token */
    l[5] = lb; /* the competitor */
    ds_sampler *s = make(p, N);
    if (!s) return -1;
    for (int i = 0; i < nh; i++) ds_sampler_accept(s, hist[i]);
    int32_t id = ds_sampler_sample(s, l);
    ds_sampler_free(s);
    return id;
}

static void test_penalties(void) {
    const int32_t once[] = {2}, thrice[] = {2, 2, 2}, old[] = {2, 0, 1};
    ds_sampler_params p = plain(0.0f, 1);
    p.repeat_penalty = 2.0f;
    /* positive logit: 3 / 2 = 1.5 */
    CHECK(pick(&p, once, 1, 3.0f, 1.6f) == 5, "repeat: 3/2 < 1.6");
    CHECK(pick(&p, once, 1, 3.0f, 1.4f) == 2, "repeat: 3/2 > 1.4");
    /* negative logit: -1 * 2 = -2 */
    CHECK(pick(&p, once, 1, -1.0f, -1.9f) == 5, "repeat: -1*2 < -1.9");
    CHECK(pick(&p, once, 1, -1.0f, -2.1f) == 2, "repeat: -1*2 > -2.1");
    /* applied once however often the token was seen */
    CHECK(pick(&p, thrice, 3, 3.0f, 1.4f) == 2, "repeat once per token");
    /* outside the window: no penalty */
    p.repeat_last_n = 2;
    CHECK(pick(&p, old, 3, 3.0f, 1.6f) == 2, "window of 2 forgets");
    p.repeat_last_n = 3;
    CHECK(pick(&p, old, 3, 3.0f, 1.6f) == 5, "window of 3 remembers");

    /* frequency 0.5 * 3 occurrences = 1.5: 5 -> 3.5 */
    p = plain(0.0f, 1);
    p.frequency_penalty = 0.5f;
    CHECK(pick(&p, thrice, 3, 5.0f, 3.6f) == 5, "frequency: 3.5 < 3.6");
    CHECK(pick(&p, thrice, 3, 5.0f, 3.4f) == 2, "frequency: 3.5 > 3.4");
    /* presence 1.0, once whatever the count: 5 -> 4 */
    p = plain(0.0f, 1);
    p.presence_penalty = 1.0f;
    CHECK(pick(&p, thrice, 3, 5.0f, 4.1f) == 5, "presence: 4 < 4.1");
    CHECK(pick(&p, thrice, 3, 5.0f, 3.9f) == 2, "presence: 4 > 3.9");
    /* all three: 6 / 1.5 = 4, - 3 * 0.25 - 0.5 = 2.75 */
    p = plain(0.0f, 1);
    p.repeat_penalty = 1.5f;
    p.frequency_penalty = 0.25f;
    p.presence_penalty = 0.5f;
    CHECK(pick(&p, thrice, 3, 6.0f, 2.8f) == 5, "combined: 2.75 < 2.8");
    CHECK(pick(&p, thrice, 3, 6.0f, 2.7f) == 2, "combined: 2.75 > 2.7");
    /* the caller's logits are not modified */
    float l[4] = {1, 2, 3, 4};
    ds_sampler *s = make(&p, 4);
    ds_sampler_accept(s, 3);
    ds_sampler_sample(s, l);
    CHECK(l[3] == 4.0f, "logits read only");
    ds_sampler_free(s);
}

static void test_logprobs(void) {
    enum { N = 1000 };
    float l[N];
    random_logits(l, N, 9);
    l[10] = 6.0f;
    l[20] = 5.0f;
    l[30] = 5.0f;
    ds_logprob top[5];
    float lp = ds_logprobs(l, N, 20, top, 5);
    double sum = 0;
    for (int i = 0; i < N; i++) sum += exp((double)l[i]);
    double want = l[20] - log(sum);
    CHECK(fabs(lp - want) < 1e-5, "chosen logprob %g vs %g", lp, want);
    CHECK(top[0].id == 10 && top[1].id == 20 && top[2].id == 30, "top order %d %d %d", top[0].id, top[1].id,
          top[2].id);
    for (int i = 1; i < 5; i++) CHECK(top[i - 1].logprob >= top[i].logprob, "sorted");
    CHECK(fabs(top[0].logprob - (6.0 - log(sum))) < 1e-5, "top logprob");
    CHECK(ds_logprobs(l, N, -1, top, 0) == -INFINITY, "bad id");
}

static void test_params(void) {
    ds_sampler *s = NULL;
    ds_error err = {0};
    ds_sampler_params p = ds_sampler_default_params();
    p.repeat_penalty = 0.0f;
    CHECK(ds_sampler_create(&p, 10, &s, &err) == DS_ERR_INVALID_ARG && !s, "repeat_penalty 0 rejected");
    p = ds_sampler_default_params();
    p.top_p = NAN;
    CHECK(ds_sampler_create(&p, 10, &s, &err) == DS_ERR_INVALID_ARG, "NaN rejected");
    p = ds_sampler_default_params();
    CHECK(ds_sampler_create(&p, 0, &s, &err) == DS_ERR_INVALID_ARG, "empty vocab rejected");
    CHECK(p.temperature == 0.8f && p.top_k == 40 && p.repeat_last_n == 64, "llama.cpp defaults");
}

/* Defaults and top_p-only at V3's 129280 tokens: per-token cost. */
static void test_speed(void) {
    enum { N = 129280 };
    float *l = malloc(N * sizeof *l);
    random_logits(l, N, 5);
    static const char *const names[] = { "defaults", "top_p only", "greedy", "greedy, repeat_penalty" };
    for (int variant = 0; variant < 4; variant++) {
        ds_sampler_params p = ds_sampler_default_params();
        p.seed = 1;
        p.repeat_penalty = variant == 2 ? 1.0f : 1.1f;
        if (variant == 1) p.top_k = 0; /* top_p over the whole vocabulary */
        if (variant >= 2) p.temperature = 0;
        ds_sampler *s = make(&p, N);
        if (!s) break;
        double t0 = ds_time_s();
        for (int i = 0; i < 100; i++) ds_sampler_accept(s, ds_sampler_sample(s, l));
        double ms = (ds_time_s() - t0) * 10.0;
        printf("sample at n_vocab %d (%s): %.3f ms/token\n", N, names[variant], ms);
        CHECK(ms < 50.0, "%.3f ms per token", ms);
        ds_sampler_free(s);
    }
    free(l);
}

int main(void) {
    test_greedy();
    test_seed();
    test_truncation();
    test_top_p_reference();
    test_penalties();
    test_logprobs();
    test_params();
    test_speed();
    return ds_test_finish("test_sampler");
}
