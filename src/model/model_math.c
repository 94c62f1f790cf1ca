/* model_math.c: the small scalar pieces of DeepSeek math shared by every
 * backend — YaRN RoPE frequencies and rotation, and expert selection.
 * They are cheap (O(d_rope), O(n_expert)) so one copy serves ref and cpu. */
#include "model.h"

#include <math.h>

void ds_rope_freqs(const ds_hparams *hp, float *freq) {
    const int R = hp->d_rope;
    double lo = 0, hi = 1;
    if (hp->yarn && hp->yarn_factor > 1.0f) {
        /* corr(b): the pair index whose wavelength makes b turns over orig_ctx */
        const double two_pi = 6.283185307179586;
        double lb = log((double)hp->rope_base);
        double cf = R * log(hp->yarn_orig_ctx / (two_pi * hp->yarn_beta_fast)) / (2 * lb);
        double cs = R * log(hp->yarn_orig_ctx / (two_pi * hp->yarn_beta_slow)) / (2 * lb);
        lo = fmax(floor(cf), 0.0);
        hi = fmin(ceil(cs), (double)(R - 1));
        if (hi == lo) hi += 0.001; /* as HF: avoid a zero-width ramp */
    }
    for (int i = 0; i < R / 2; i++) {
        double theta = pow((double)hp->rope_base, -2.0 * i / R);
        if (hp->yarn && hp->yarn_factor > 1.0f) {
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            theta = theta * (1 - ramp) + theta / hp->yarn_factor * ramp;
        }
        freq[i] = (float)theta;
    }
}

void ds_rope_apply(float *x, int d_rope, const float *freq, int32_t pos) {
    for (int i = 0; i < d_rope / 2; i++) {
        double a = (double)pos * (double)freq[i];
        double c = cos(a), s = sin(a);
        double x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = (float)(x0 * c - x1 * s);
        x[2 * i + 1] = (float)(x0 * s + x1 * c);
    }
}

/* Index of the largest v[i] among allowed ones (ties: lowest i); -1 if none. */
static int argmax_masked(const float *v, const unsigned char *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

float ds_moe_select(const ds_hparams *hp, const float *logits, const float *bias,
                    const int32_t *forced_ids, int32_t *ids, float *weights) {
    const int n = hp->n_expert, k = hp->n_expert_used;
    float prob[DS_MAX_EXPERTS], score[DS_MAX_EXPERTS];
    unsigned char taken[DS_MAX_EXPERTS] = { 0 };

    if (hp->gating == DS_GATING_SIGMOID) {
        for (int i = 0; i < n; i++) prob[i] = (float)(1.0 / (1.0 + exp(-(double)logits[i])));
    } else {
        double mx = logits[0], sum = 0;
        for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
        for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
        for (int i = 0; i < n; i++) prob[i] = (float)(exp((double)logits[i] - mx) / sum);
    }
    /* the bias steers selection only; weights come from prob */
    for (int i = 0; i < n; i++) score[i] = bias ? prob[i] + bias[i] : prob[i];

    if (hp->n_group > 1) {
        /* group score = sum of its two best scores; keep the best n_group_used groups */
        const int gs = n / hp->n_group;
        float gscore[DS_MAX_EXPERTS];
        unsigned char gtaken[DS_MAX_EXPERTS] = { 0 };
        for (int g = 0; g < hp->n_group; g++) {
            const float *s = score + g * gs;
            float a = -INFINITY, b = -INFINITY;
            for (int i = 0; i < gs; i++) {
                if (s[i] > a) { b = a; a = s[i]; }
                else if (s[i] > b) b = s[i];
            }
            gscore[g] = gs > 1 ? a + b : a;
        }
        unsigned char keep[DS_MAX_EXPERTS] = { 0 };
        for (int j = 0; j < hp->n_group_used; j++) {
            int g = argmax_masked(gscore, gtaken, hp->n_group);
            gtaken[g] = 1;
            keep[g] = 1;
        }
        for (int i = 0; i < n; i++)
            if (!keep[i / gs]) taken[i] = 1; /* masked out like -inf */
    }

    float margin = INFINITY;
    if (forced_ids && forced_ids[0] >= 0) {
        for (int j = 0; j < k; j++) ids[j] = forced_ids[j];
    } else {
        for (int j = 0; j < k; j++) {
            int e = argmax_masked(score, taken, n);
            taken[e] = 1;
            ids[j] = e;
        }
        int next = argmax_masked(score, taken, n);
        if (next >= 0) margin = score[ids[k - 1]] - score[next];
    }

    double sum = 0;
    for (int j = 0; j < k; j++) {
        weights[j] = prob[ids[j]];
        sum += weights[j];
    }
    if (hp->expert_weights_norm) {
        double den = sum > 6.103515625e-5 ? sum : 6.103515625e-5;
        for (int j = 0; j < k; j++) weights[j] = (float)(weights[j] / den);
    }
    for (int j = 0; j < k; j++) weights[j] *= hp->expert_weights_scale;
    return margin;
}
