/* dot_dispatch.c: runtime choice of the dot kernels: what the CPU supports
 * (cpuid via __builtin_cpu_supports), the DS_SIMD override, and the per-type
 * lookup with fallback to lower levels. Not kernels: see dot_*.c. */
#include "dot_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static ds_simd_level ds_cpu_probe(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    /* the VNNI kernels use dpbusd: all four are required for the level */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return DS_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return DS_SIMD_AVX2;
#endif
    return DS_SIMD_SCALAR;
}

/* Cached as level + 1 so that 0 means "not probed yet"; a racing first call
 * computes the same value twice, which is harmless. */
static _Atomic int g_cpu_level, g_eff_level;

ds_simd_level ds_simd_cpu_level(void) {
    int v = atomic_load_explicit(&g_cpu_level, memory_order_relaxed);
    if (!v) {
        v = (int)ds_cpu_probe() + 1;
        atomic_store_explicit(&g_cpu_level, v, memory_order_relaxed);
    }
    return (ds_simd_level)(v - 1);
}

ds_simd_level ds_simd_detect(void) {
    int v = atomic_load_explicit(&g_eff_level, memory_order_relaxed);
    if (!v) {
        ds_simd_level l = ds_simd_cpu_level();
        /* DS_SIMD=scalar|avx2|avx512 lowers the level (never above the CPU) */
        const char *env = getenv("DS_SIMD");
        if (env && *env) {
            ds_simd_level want = l;
            if (!strcmp(env, "scalar")) want = DS_SIMD_SCALAR;
            else if (!strcmp(env, "avx2")) want = DS_SIMD_AVX2;
            else if (!strcmp(env, "avx512")) want = DS_SIMD_AVX512;
            else ds_log(DS_LOG_WARN, "DS_SIMD=%s not understood (scalar|avx2|avx512)", env);
            if (want > l) ds_log(DS_LOG_WARN, "DS_SIMD=%s: this CPU only has %s", env, ds_simd_name(l));
            else l = want;
        }
        v = (int)l + 1;
        atomic_store_explicit(&g_eff_level, v, memory_order_relaxed);
    }
    return (ds_simd_level)(v - 1);
}

const char *ds_simd_name(ds_simd_level l) {
    switch (l) {
    case DS_SIMD_SCALAR: return "scalar";
    case DS_SIMD_AVX2: return "avx2";
    case DS_SIMD_AVX512: return "avx512";
    }
    return "unknown";
}

ds_vec_dot_fn ds_vec_dot_at(ds_type t, ds_simd_level l) {
    if (l > ds_simd_cpu_level()) return NULL;
    switch (l) {
    case DS_SIMD_SCALAR: return ds_dot_scalar_get(t);
    case DS_SIMD_AVX2: return ds_dot_avx2_get(t);
    case DS_SIMD_AVX512: return ds_dot_avx512_get(t);
    }
    return NULL;
}

ds_vec_dot_fn ds_vec_dot_best(ds_type t) {
    const ds_type_traits *tr = ds_type_info(t);
    if (!tr || !tr->can_dequant) return NULL;
    for (int l = (int)ds_simd_detect(); l >= 0; l--) {
        ds_vec_dot_fn f = ds_vec_dot_at(t, (ds_simd_level)l);
        if (f) return f;
    }
    return NULL;
}

ds_vec_dot_x4_fn ds_vec_dot_x4_best(ds_type t) {
    /* only used together with the x1 kernel of the same level, so a 4-row
     * kernel is offered only where the best x1 kernel has the same level */
    for (int l = (int)ds_simd_detect(); l >= DS_SIMD_AVX2; l--) {
        if (!ds_vec_dot_at(t, (ds_simd_level)l)) continue;
        return l == DS_SIMD_AVX512 ? ds_dot_avx512_get_x4(t) : ds_dot_avx2_get_x4(t);
    }
    return NULL;
}

ds_vec_dot_x4_fn ds_vec_dot_xn_best(ds_type t, int nr) {
    /* same rule as the 4-row kernel: only at the level of the best x1 one */
    for (int l = (int)ds_simd_detect(); l >= DS_SIMD_AVX2; l--) {
        if (!ds_vec_dot_at(t, (ds_simd_level)l)) continue;
        return l == DS_SIMD_AVX512 ? ds_dot_avx512_get_xn(t, nr) : ds_dot_avx2_get_xn(t, nr);
    }
    return NULL;
}

ds_gemm8_fn ds_gemm8_best(ds_type t) {
    static _Atomic int off = -1; /* DSINFER_GEMM8=0 turns it off (A/B runs) */
    int o = atomic_load_explicit(&off, memory_order_relaxed);
    if (o < 0) {
        const char *e = getenv("DSINFER_GEMM8");
        o = e && !strcmp(e, "0");
        atomic_store_explicit(&off, o, memory_order_relaxed);
    }
    if (o || ds_simd_detect() != DS_SIMD_AVX2) return NULL;
    return ds_gemm8_avx2_get(t);
}
