/* sampler.c: picks the next token from logits — repetition/presence/frequency
 * penalties, top-k, top-p, min-p, temperature and a seeded draw, in
 * llama.cpp's default order — and the log-probabilities the server reports.
 * Not grammar-constrained sampling, not DRY/XTC/mirostat; nothing here
 * allocates once the sampler exists. */
#include "text_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DS_PENALTY_WINDOW_ALL 65536 /* what repeat_last_n = -1 means */

typedef struct ds_cand {
    int32_t id;
    float logit;
    float w; /* exp(logit - max): top-p's scratch */
} ds_cand;

struct ds_sampler {
    ds_sampler_params p;
    int32_t n_vocab;
    uint64_t seed;   /* the seed in use (drawn for DS_SEED_RANDOM) */
    uint64_t rng[4]; /* xoshiro256** state */
    ds_cand *cand;   /* [n_vocab] the working candidate list */
    float *pen;      /* [n_vocab] penalised copy of the logits (with penalties only) */

    int32_t *ring;   /* [ring_cap] last accepted tokens, for penalties */
    int32_t ring_cap, ring_n, ring_pos;
    int32_t *count;  /* [n_vocab] occurrences of each token in the ring */
};

/* ---- RNG: xoshiro256**, seeded through splitmix64 ----------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double rng_uniform(uint64_t s[4]) { /* [0, 1) with 53 bits */
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static void rng_seed(ds_sampler *s, uint64_t seed) {
    if (seed == DS_SEED_RANDOM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ (uint64_t)(uintptr_t)s;
        seed = splitmix64(&x);
        if (seed == DS_SEED_RANDOM) seed = 0;
    }
    s->seed = seed;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

/* ---- lifetime ------------------------------------------------------------------- */

ds_sampler_params ds_sampler_default_params(void) {
    return (ds_sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = DS_SEED_RANDOM,
    };
}

ds_status ds_sampler_create(const ds_sampler_params *p, int32_t n_vocab, ds_sampler **out, ds_error *err) {
    *out = NULL;
    if (n_vocab <= 0) return ds_error_set(err, DS_ERR_INVALID_ARG, "sampler: n_vocab %d", n_vocab);
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p) || p->top_p < 0 || p->min_p < 0 ||
        p->min_p > 1)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "sampler: temperature %g, top_p %g, min_p %g out of range",
                            p->temperature, p->top_p, p->min_p);
    if (!(p->repeat_penalty > 0) || !isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty) ||
        p->repeat_last_n < -1)
        return ds_error_set(err, DS_ERR_INVALID_ARG,
                            "sampler: repeat_penalty %g (> 0), presence %g, frequency %g, repeat_last_n %d (>= -1)",
                            p->repeat_penalty, p->presence_penalty, p->frequency_penalty, p->repeat_last_n);
    ds_sampler *s = calloc(1, sizeof *s);
    if (!s) return ds_error_set(err, DS_ERR_OOM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    bool penalties = p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    int32_t window = p->repeat_last_n < 0 ? DS_PENALTY_WINDOW_ALL : p->repeat_last_n;
    if (penalties && window > 0) {
        s->ring_cap = window;
        s->ring = malloc((size_t)window * sizeof *s->ring);
        s->count = calloc((size_t)n_vocab, sizeof *s->count);
        s->pen = malloc((size_t)n_vocab * sizeof *s->pen);
    }
    if (!s->cand || (s->ring_cap && (!s->ring || !s->count || !s->pen))) {
        ds_sampler_free(s);
        return ds_error_set(err, DS_ERR_OOM, "sampler: out of memory for %d candidates", n_vocab);
    }
    rng_seed(s, p->seed);
    *out = s;
    return DS_OK;
}

void ds_sampler_free(ds_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->pen);
    free(s->ring);
    free(s->count);
    free(s);
}

uint64_t ds_sampler_seed(const ds_sampler *s) { return s->seed; }

bool ds_sampler_is_greedy(const ds_sampler *s) { return !(s->p.temperature > 0) && !s->ring_cap; }

void ds_sampler_reset(ds_sampler *s, uint64_t seed) {
    if (s->count)
        for (int32_t i = 0; i < s->ring_n; i++) s->count[s->ring[i]] = 0;
    s->ring_n = s->ring_pos = 0;
    rng_seed(s, seed);
}

void ds_sampler_accept(ds_sampler *s, int32_t id) {
    if (!s->ring_cap || id < 0 || id >= s->n_vocab) return;
    if (s->ring_n == s->ring_cap) s->count[s->ring[s->ring_pos]]--;
    else s->ring_n++;
    s->ring[s->ring_pos] = id;
    s->count[id]++;
    s->ring_pos = (s->ring_pos + 1) % s->ring_cap;
}

/* ---- the chain ------------------------------------------------------------------ */

/* Best first; equal logits by lower id, so every ordering is deterministic. */
static inline bool cand_before(const ds_cand *a, const ds_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *a, const void *b) {
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static ds_cand median3(const ds_cand *a, const ds_cand *b, const ds_cand *d) {
    if (cand_before(a, b)) return cand_before(b, d) ? *b : (cand_before(a, d) ? *d : *a);
    return cand_before(a, d) ? *a : (cand_before(b, d) ? *d : *b);
}

/* Three-way partition of c[lo..hi) around piv: [lo, lt) better, [lt, gt)
 * equal, [gt, hi) worse. */
static void partition3(ds_cand *c, size_t lo, size_t hi, const ds_cand *piv, size_t *lt_out, size_t *gt_out) {
    size_t lt = lo, i = lo, gt = hi;
    while (i < gt) {
        if (cand_before(&c[i], piv)) {
            ds_cand t = c[lt]; c[lt] = c[i]; c[i] = t;
            lt++, i++;
        } else if (cand_before(piv, &c[i])) {
            gt--;
            ds_cand t = c[gt]; c[gt] = c[i]; c[i] = t;
        } else {
            i++;
        }
    }
    *lt_out = lt;
    *gt_out = gt;
}

/* Rearranges c[0..n) so its best k come first, in any order (quickselect,
 * iterative, median of three). */
static void select_top(ds_cand *c, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2, lt, gt;
        ds_cand piv = median3(&c[lo], &c[mid], &c[hi - 1]);
        partition3(c, lo, hi, &piv, &lt, &gt);
        if (k <= lt) hi = lt;
        else if (k >= gt) lo = gt;
        else return;
    }
}

/* Best k of the n logits into c[0..k), unordered: a heap of the k best so
 * far with the worst at its root, so most logits cost one comparison and
 * only the k kept become candidates (not all of a 129k vocabulary). */
static void heap_top(ds_cand *c, const float *logits, size_t n, size_t k) {
    for (size_t i = 0; i < k; i++) { /* sift up: worst to the root */
        c[i] = (ds_cand){ (int32_t)i, logits[i], 0.0f };
        size_t j = i;
        while (j > 0 && cand_before(&c[(j - 1) / 2], &c[j])) {
            ds_cand t = c[j]; c[j] = c[(j - 1) / 2]; c[(j - 1) / 2] = t;
            j = (j - 1) / 2;
        }
    }
    for (size_t i = k; i < n; i++) {
        const ds_cand x = { (int32_t)i, logits[i], 0.0f };
        if (!cand_before(&x, &c[0])) continue;
        c[0] = x;
        size_t j = 0;
        for (;;) { /* sift down */
            size_t a = 2 * j + 1, w = j;
            if (a < k && cand_before(&c[w], &c[a])) w = a;
            if (a + 1 < k && cand_before(&c[w], &c[a + 1])) w = a + 1;
            if (w == j) break;
            ds_cand t = c[j]; c[j] = c[w]; c[w] = t;
            j = w;
        }
    }
}

/* llama.cpp's penalties: each token seen in the window has its logit divided
 * by repeat_penalty if positive (multiplied if not), then loses
 * frequency * count + presence. Applied to a copy of the logits, by id;
 * returns the logits to sample from. */
static const float *apply_penalties(ds_sampler *s, const float *logits) {
    if (!s->ring_n) return logits;
    memcpy(s->pen, logits, (size_t)s->n_vocab * sizeof *s->pen);
    const float rp = s->p.repeat_penalty, fp = s->p.frequency_penalty, pp = s->p.presence_penalty;
    for (int32_t i = 0; i < s->ring_n; i++) {
        int32_t id = s->ring[i];
        int32_t c = s->count[id];
        if (c <= 0) continue; /* done already: marked below */
        float *l = &s->pen[id];
        *l = *l <= 0 ? *l * rp : *l / rp;
        *l -= (float)c * fp + pp;
        s->count[id] = -c; /* mark, so a token seen twice is penalised once */
    }
    for (int32_t i = 0; i < s->ring_n; i++) {
        int32_t id = s->ring[i];
        if (s->count[id] < 0) s->count[id] = -s->count[id];
    }
    return s->pen;
}

/* Keeps the smallest best-first set whose probability (softmax at
 * temperature 1) reaches top_p, moved to the front of c; returns its size.
 * Sorted input is scanned. Otherwise a quickselect that weighs each side of
 * the pivot finds the set in O(n) without sorting: a flat distribution can
 * put most of a 129k vocabulary in the nucleus. */
static size_t apply_top_p(ds_cand *c, size_t n, bool sorted, float top_p) {
    float maxl = -INFINITY;
    for (size_t i = 0; i < n; i++) maxl = c[i].logit > maxl ? c[i].logit : maxl;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (c[i].w = expf(c[i].logit - maxl));
    double need = (double)top_p * sum; /* unnormalised mass still to collect */
    if (sorted) {
        double cum = 0;
        for (size_t i = 0; i < n; i++) {
            cum += c[i].w;
            if (cum >= need) return i + 1;
        }
        return n;
    }
    size_t lo = 0, hi = n; /* everything before lo is in the set */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        ds_cand piv = median3(&c[lo], &c[mid], &c[hi - 1]);
        size_t lt, gt;
        partition3(c, lo, hi, &piv, &lt, &gt);
        double better = 0;
        for (size_t i = lo; i < lt; i++) better += c[i].w;
        if (better >= need) { /* the set ends among the better ones */
            hi = lt;
            continue;
        }
        need -= better;
        double eq = 0;
        for (size_t i = lt; i < gt; i++) eq += c[i].w;
        if (eq >= need) return gt;
        need -= eq;
        lo = gt;
    }
    /* One candidate left and mass still missing (or lost to rounding): it
     * completes the set. */
    return hi > lo ? lo + 1 : (lo ? lo : 1);
}

int32_t ds_sampler_sample(ds_sampler *s, const float *logits) {
    ds_cand *c = s->cand;
    size_t n = (size_t)s->n_vocab;
    const float *l = apply_penalties(s, logits);
    if (!(s->p.temperature > 0)) return ds_argmax_f32(l, n);

    bool sorted = false;
    if (s->p.top_k > 0 && (size_t)s->p.top_k < n) {
        const size_t k = (size_t)s->p.top_k;
        if (k <= 1024) {
            heap_top(c, l, n, k);
        } else {
            for (size_t i = 0; i < n; i++) c[i] = (ds_cand){ (int32_t)i, l[i], 0.0f };
            select_top(c, n, k);
        }
        n = k;
        qsort(c, n, sizeof *c, cand_cmp);
        sorted = true;
    } else {
        for (size_t i = 0; i < n; i++) c[i] = (ds_cand){ (int32_t)i, l[i], 0.0f };
    }
    if (s->p.top_p < 1.0f) n = apply_top_p(c, n, sorted, s->p.top_p);
    if (s->p.min_p > 0.0f) {
        /* p >= min_p * p_max  <=>  logit >= max_logit + log(min_p). The best
         * token always passes, so at least one stays. */
        float maxl = -INFINITY;
        for (size_t i = 0; i < n; i++) maxl = c[i].logit > maxl ? c[i].logit : maxl;
        const float floor_l = maxl + logf(s->p.min_p);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit >= floor_l) c[k++] = c[i];
        n = k;
    }
    if (n == 1) return c[0].id;

    /* Temperature, then a draw from the softmax of what is left. */
    const float inv_t = 1.0f / s->p.temperature;
    float maxl = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        c[i].logit *= inv_t;
        maxl = c[i].logit > maxl ? c[i].logit : maxl;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (c[i].w = expf(c[i].logit - maxl));
    double u = rng_uniform(s->rng) * sum, cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += c[i].w;
        if (u < cum) return c[i].id;
    }
    return c[n - 1].id; /* u landed on the rounding slack at the end */
}

/* ---- logprobs ------------------------------------------------------------------- */

float ds_logprobs(const float *logits, int32_t n_vocab, int32_t chosen, ds_logprob *top, int n_top) {
    float maxl = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) maxl = logits[i] > maxl ? logits[i] : maxl;
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - maxl);
    const double lse = maxl + log(sum);
    if (n_top > n_vocab) n_top = n_vocab;
    /* Insertion into a best-first list of n_top; a candidate no better than
     * the last kept one is rejected with one comparison. */
    int kept = 0;
    for (int32_t i = 0; i < n_vocab && n_top > 0; i++) {
        float l = logits[i];
        if (kept == n_top && !(l > top[kept - 1].logprob)) continue;
        int j = kept < n_top ? kept++ : n_top - 1;
        while (j > 0 && l > top[j - 1].logprob) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (ds_logprob){i, l};
    }
    for (int i = 0; i < kept; i++) top[i].logprob = (float)(top[i].logprob - lse);
    if (chosen < 0 || chosen >= n_vocab) return -INFINITY;
    return (float)(logits[chosen] - lse);
}
