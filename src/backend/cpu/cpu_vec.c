/* cpu_vec.c: plain-C versions of the cpu_vec helpers and the dispatch. */
#include "cpu_vec.h"

#include <string.h>

static float dot_c(const float *a, const float *b, int n) {
    float s[4] = { 0, 0, 0, 0 };
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static void axpy_c(float a, const float *x, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void row_to_f32_c(ds_type t, const void *src, float *dst, int n) {
    if (t == DS_TYPE_F32) { memcpy(dst, src, (size_t)n * 4); return; }
    const uint16_t *s = src;
    if (t == DS_TYPE_F16) for (int i = 0; i < n; i++) dst[i] = ds_fp16_to_f32(s[i]);
    else for (int i = 0; i < n; i++) dst[i] = ds_bf16_to_f32(s[i]);
}

static const ds_cpu_vec g_scalar = { dot_c, axpy_c, row_to_f32_c };

const ds_cpu_vec *ds_cpu_vec_get(void) {
    const ds_cpu_vec *v = ds_simd_detect() >= DS_SIMD_AVX2 ? ds_cpu_vec_avx2() : NULL;
    return v ? v : &g_scalar;
}
