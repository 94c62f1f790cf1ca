/* argmax.c: the index of the largest float of a row, shared by the sampler's
 * greedy pick and the engine's per-row argmax output (ds_batch.best). */
#include "core.h"

#include <math.h>
#include <stddef.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* The sampler's greedy pick (the CUDA backend's argmax kernel keeps the same
 * rule): the highest logit, the lowest id among equals; straight over the
 * floats, no candidate list.
 * With SSE2 two passes (the maximum in 16 lanes, then its first index): at
 * 129k logits 39 us instead of 100 for one scan carrying an index. A NaN
 * is never picked unless it is logit 0, as in the ordered scan. */
int32_t ds_argmax_f32(const float *l, size_t n) {
    if (isnan(l[0])) return 0;
    float m = l[0];
    size_t i = 0;
#ifdef __SSE2__
    __m128 m0 = _mm_set1_ps(m), m1 = m0, m2 = m0, m3 = m0;
    for (; i + 16 <= n; i += 16) { /* max_ps(x, m) keeps m where x is NaN */
        m0 = _mm_max_ps(_mm_loadu_ps(l + i), m0);
        m1 = _mm_max_ps(_mm_loadu_ps(l + i + 4), m1);
        m2 = _mm_max_ps(_mm_loadu_ps(l + i + 8), m2);
        m3 = _mm_max_ps(_mm_loadu_ps(l + i + 12), m3);
    }
    float t[4];
    _mm_storeu_ps(t, _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3)));
    for (int j = 0; j < 4; j++) m = t[j] > m ? t[j] : m;
#endif
    for (; i < n; i++) m = l[i] > m ? l[i] : m;
    i = 0;
#ifdef __SSE2__
    const __m128 mv = _mm_set1_ps(m);
    for (; i + 4 <= n; i += 4) {
        const int hit = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(l + i), mv));
        if (hit) return (int32_t)(i + (size_t)__builtin_ctz((unsigned)hit));
    }
#endif
    for (; i < n; i++)
        if (l[i] == m) return (int32_t)i;
    return 0;
}

