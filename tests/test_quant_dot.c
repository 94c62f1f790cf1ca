/* test_quant_dot.c: activation quantization, every dot kernel at every SIMD
 * level this CPU has (1-row and 4-row forms; AVX-512 also emulated in C on
 * AVX2-only CPUs), and ds_matmul, against a double-precision reference built
 * from ds_dequantize_row. Prints which levels actually ran. Not a benchmark. */
#include "quant/dot_internal.h"
#include "quant/quant.h"
#include "testutil.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rng = 0x1234567887654321ull;

static const ds_type k_types[] = {
    DS_TYPE_F32, DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_Q4_0, DS_TYPE_Q4_1, DS_TYPE_Q5_0,
    DS_TYPE_Q5_1, DS_TYPE_Q8_0, DS_TYPE_Q2_K, DS_TYPE_Q3_K, DS_TYPE_Q4_K, DS_TYPE_Q5_K,
    DS_TYPE_Q6_K, DS_TYPE_IQ2_XXS, DS_TYPE_IQ2_XS, DS_TYPE_IQ2_S, DS_TYPE_IQ3_XXS,
    DS_TYPE_IQ3_S, DS_TYPE_IQ1_S, DS_TYPE_IQ1_M, DS_TYPE_IQ4_NL, DS_TYPE_IQ4_XS,
};
#define N_TYPES (int)(sizeof k_types / sizeof k_types[0])

/* ---- random valid weights ------------------------------------------------------- */

static uint16_t rand_scale_half(void) {
    /* magnitude in [1e-3, 1e-2], random sign: finite, never inf/NaN */
    float m = 1e-3f + 9e-3f * (0.5f + 0.5f * ds_test_randf(&g_rng));
    return ds_f32_to_fp16(ds_test_rand(&g_rng) & 1 ? -m : m);
}

static void put_half(uint8_t *blk, size_t off) {
    uint16_t h = rand_scale_half();
    memcpy(blk + off, &h, 2);
}

/* Fills a row of n elements of type t: random bytes, then every fp16 scale
 * field overwritten with a small finite value. Plain types get values in
 * [-1, 1]. */
static void fill_weights(ds_type t, void *row, int64_t n) {
    const ds_type_traits *tr = ds_type_info(t);
    uint8_t *p = row;
    const size_t bytes = ds_row_bytes(t, n);
    if (t == DS_TYPE_F32 || t == DS_TYPE_F16 || t == DS_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float v = ds_test_randf(&g_rng);
            if (t == DS_TYPE_F32) memcpy(p + 4 * i, &v, 4);
            else {
                uint16_t h = t == DS_TYPE_F16 ? ds_f32_to_fp16(v) : ds_f32_to_bf16(v);
                memcpy(p + 2 * i, &h, 2);
            }
        }
        return;
    }
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)ds_test_rand(&g_rng);
    for (uint8_t *blk = p; blk < p + bytes; blk += tr->block_bytes) {
        switch (t) {
        case DS_TYPE_Q4_1: put_half(blk, offsetof(block_q4_1, m)); /* fall through */
        case DS_TYPE_Q4_0: case DS_TYPE_Q5_0: case DS_TYPE_Q8_0: case DS_TYPE_IQ4_NL:
            put_half(blk, 0);
            break;
        case DS_TYPE_Q5_1: put_half(blk, offsetof(block_q5_1, d)); put_half(blk, offsetof(block_q5_1, m)); break;
        case DS_TYPE_Q2_K: put_half(blk, offsetof(block_q2_K, d)); put_half(blk, offsetof(block_q2_K, dmin)); break;
        case DS_TYPE_Q3_K: put_half(blk, offsetof(block_q3_K, d)); break;
        case DS_TYPE_Q4_K: put_half(blk, offsetof(block_q4_K, d)); put_half(blk, offsetof(block_q4_K, dmin)); break;
        case DS_TYPE_Q5_K: put_half(blk, offsetof(block_q5_K, d)); put_half(blk, offsetof(block_q5_K, dmin)); break;
        case DS_TYPE_Q6_K: put_half(blk, offsetof(block_q6_K, d)); break;
        case DS_TYPE_IQ1_M: {
            /* the scale is the top nibbles of the 4 little-endian u16 of scales */
            uint16_t sc[4], h = rand_scale_half();
            memcpy(sc, blk + offsetof(block_iq1_m, scales), 8);
            for (int k = 0; k < 4; k++) sc[k] = (uint16_t)((sc[k] & 0x0FFF) | (((h >> (4 * k)) & 0xF) << 12));
            memcpy(blk + offsetof(block_iq1_m, scales), sc, 8);
            break;
        }
        default: put_half(blk, 0); break; /* every other IQ type: d first */
        }
    }
}

/* Dequantized activation row (what the kernels see), from its blocks. */
static void act_to_float(ds_type t, const void *act, float *out, int64_t n) {
    switch (ds_type_info(t)->act_type) {
    case DS_TYPE_F32: memcpy(out, act, (size_t)n * 4); break;
    case DS_TYPE_Q8_0: {
        const block_q8_0 *b = act;
        for (int64_t i = 0; i < n; i++) out[i] = ds_fp16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32];
        break;
    }
    case DS_TYPE_Q8_1: {
        const block_q8_1 *b = act;
        for (int64_t i = 0; i < n; i++) out[i] = ds_fp16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32];
        break;
    }
    case DS_TYPE_Q8_K: {
        const block_q8_K *b = act;
        for (int64_t i = 0; i < n; i++) out[i] = b[i / 256].d * b[i / 256].qs[i % 256];
        break;
    }
    default: DS_ASSERT(0);
    }
}

/* Reference dot in double, and sum |w_i a_i| for the tolerance. */
static double ref_dot(const float *w, const float *a, int64_t n, double *absum) {
    double s = 0, as = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)w[i] * a[i];
        as += fabs((double)w[i] * a[i]);
    }
    *absum = as;
    return s;
}

/* Allowed |kernel - ref|.
 * Quantized types: integer sums are exact; the error is float rounding of
 * one scale product and one FMA per block, accumulated in float lanes over
 * at most n/256 (K) or n/32 (legacy, 2 accumulator sets) blocks: 1e-5 of
 * sum |w a| leaves a wide margin at n = 18432.
 * Plain types: each float lane of the SIMD kernels sums at most n/16
 * products, a worst case of (n/16 + 8) * 2^-24 relative to sum |w a|.
 * q4_1/q5_1: the kernels use the activation's s = fp16(d * sum q), which is
 * rounded (2^-11 relative), instead of d * sum q: add |m s| 2^-11 per block. */
static double tolerance(ds_type t, const void *w, const void *act, int64_t n, double absum) {
    double tol = 1e-5 * absum;
    if (t == DS_TYPE_F32 || t == DS_TYPE_F16 || t == DS_TYPE_BF16) {
        double rel = ((double)n / 16 + 8) * ldexp(1.0, -24);
        if (rel > 1e-5) tol = rel * absum;
    }
    if (t == DS_TYPE_Q4_1 || t == DS_TYPE_Q5_1) {
        const block_q8_1 *y = act;
        const size_t bb = (size_t)ds_type_info(t)->block_bytes;
        for (int64_t b = 0; b < n / 32; b++) {
            ds_half mh; /* m sits at offset 2 in both block types */
            memcpy(&mh, (const uint8_t *)w + b * bb + 2, 2);
            tol += fabs(ds_fp16_to_f32(mh) * ds_fp16_to_f32(y[b].s)) * ldexp(1.0, -11);
        }
    }
    return tol + 1e-30;
}

/* ---- activation quantization ------------------------------------------------------- */

static void test_act_quant(void) {
    const int64_t n = 2048;
    float *x = malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = ds_test_randf(&g_rng) * (i % 97 == 0 ? 10.0f : 1.0f);
    for (int i = 0; i < 32; i++) x[i] = 0.0f; /* an all-zero block */

    block_q8_K qk[8], qk_ref[8];
    ds_quantize_row_q8_K(x, qk, n);
    ds_quantize_row_q8_K_scalar(x, qk_ref, n);
    CHECK(memcmp(qk, qk_ref, sizeof qk) == 0, "q8_K: dispatched quantizer differs from scalar");
    int bad = 0;
    for (int b = 0; b < 8; b++) {
        float amax = 0;
        for (int i = 0; i < 256; i++) amax = fmaxf(amax, fabsf(x[256 * b + i]));
        bad += fabsf(qk[b].d - amax / 127.0f) > 0;
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += qk[b].qs[16 * g + i];
            bad += sum != qk[b].bsums[g];
        }
        for (int i = 0; i < 256; i++) {
            /* in [-127, 127] and within half a step (plus float slack) */
            bad += qk[b].qs[i] < -127;
            bad += fabsf(qk[b].d * qk[b].qs[i] - x[256 * b + i]) > 0.5001f * qk[b].d + 1e-7f;
        }
    }
    CHECK(bad == 0, "q8_K: %d bad scales/quants/bsums", bad);

    block_q8_0 q0[64], q0_ref[64];
    ds_quantize_row_q8_0(x, q0, n);
    ds_quantize_row_q8_0_scalar(x, q0_ref, n);
    CHECK(memcmp(q0, q0_ref, sizeof q0) == 0, "q8_0: dispatched quantizer differs from scalar");
    CHECK(q0[0].d == 0 && q0[0].qs[5] == 0, "q8_0: zero block must give d = 0, q = 0");
    bad = 0;
    for (int b = 0; b < 64; b++)
        for (int i = 0; i < 32; i++) {
            const float d = ds_fp16_to_f32(q0[b].d);
            bad += q0[b].qs[i] < -127;
            /* d is rounded to fp16 after the quants are chosen: 2^-11 slack */
            bad += fabsf(d * q0[b].qs[i] - x[32 * b + i]) > 0.5f * d + 127.0f * d * 0x1p-11f + 1e-7f;
        }
    CHECK(bad == 0, "q8_0: %d quants out of range or off", bad);

    block_q8_1 q1[64], q1_ref[64];
    ds_quantize_row_q8_1(x, q1, n);
    ds_quantize_row_q8_1_scalar(x, q1_ref, n);
    CHECK(memcmp(q1, q1_ref, sizeof q1) == 0, "q8_1: dispatched quantizer differs from scalar");
    bad = 0;
    for (int b = 0; b < 64; b++) {
        int sum = 0;
        for (int i = 0; i < 32; i++) sum += q1[b].qs[i];
        bad += q1[b].d != q0[b].d || memcmp(q1[b].qs, q0[b].qs, 32) != 0;
        bad += q1[b].s != ds_f32_to_fp16(ds_fp16_to_f32(q1[b].d) * (float)sum);
    }
    CHECK(bad == 0, "q8_1: %d blocks with wrong d/qs/s", bad);

    CHECK(ds_act_row_bytes(DS_TYPE_Q4_K, 7168) == 28 * sizeof(block_q8_K), "act bytes q4_K");
    CHECK(ds_act_row_bytes(DS_TYPE_Q4_1, 64) == 2 * sizeof(block_q8_1), "act bytes q4_1");
    CHECK(ds_act_row_bytes(DS_TYPE_IQ4_NL, 64) == 2 * sizeof(block_q8_0), "act bytes iq4_nl");
    CHECK(ds_act_row_bytes(DS_TYPE_F16, 5) == 20, "act bytes f16");
    free(x);
}

/* ---- AVX-512 kernels, emulated ---------------------------------------------------------
 * On a CPU with AVX2 but not AVX-512 (this development machine, CI),
 * dot_avx512.c is compiled a second time into this test, under other names,
 * with its AVX-512 intrinsics replaced by plain C (util/emu_avx512.h), and
 * checked like a real level: its logic is covered everywhere; the real
 * instructions only on an AVX-512 host. GCC only (target pragma). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi2")
#include "emu_avx512.h"
#define ds_dot_avx512_get ds_dot_avx512emu_get
#define ds_dot_avx512_get_x4 ds_dot_avx512emu_get_x4
#define ds_dot_avx512_get_xn ds_dot_avx512emu_get_xn
#include "quant/dot_avx512.c"
#undef ds_dot_avx512_get
#undef ds_dot_avx512_get_x4
#undef ds_dot_avx512_get_xn
#pragma GCC pop_options
#define DS_HAVE_AVX512_EMU 1
#endif

/* ---- dot kernels ------------------------------------------------------------------------ */

/* per level: scalar, avx2, avx512, avx512 emulated */
static int g_levels_run[4], g_x4_run[4], g_xn_run[4];

static void test_dot_type(ds_type t, int64_t n, int trials) {
    const ds_type_traits *tr = ds_type_info(t);
    const size_t wbytes = ds_row_bytes(t, n), abytes = ds_act_row_bytes(t, n);
    uint8_t *w = malloc(wbytes);
    uint8_t *act = malloc(4 * abytes);
    float *wf = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float)), *af = malloc(n * sizeof(float));
    for (int trial = 0; trial < trials; trial++) {
        fill_weights(t, w, n);
        ds_dequantize_row(t, w, wf, n);
        double ref[4], absum[4], tol[4];
        for (int r = 0; r < 4; r++) {
            for (int64_t i = 0; i < n; i++) x[i] = ds_test_randf(&g_rng);
            ds_quantize_act_row(t, x, act + r * abytes, n);
            act_to_float(t, act + r * abytes, af, n);
            ref[r] = ref_dot(wf, af, n, &absum[r]);
            tol[r] = tolerance(t, w, act + r * abytes, n, absum[r]);
        }
        for (int l = 0; l < 4; l++) {
            ds_vec_dot_fn f = l <= DS_SIMD_AVX512 ? ds_vec_dot_at(t, (ds_simd_level)l) : NULL;
            ds_vec_dot_x4_fn f4 = l == DS_SIMD_AVX2 && f ? ds_dot_avx2_get_x4(t)
                                : l == DS_SIMD_AVX512 && f ? ds_dot_avx512_get_x4(t) : NULL;
            ds_vec_dot_x4_fn fn[2] = { NULL, NULL }; /* 2- and 3-row forms */
            for (int k = 0; k < 2; k++)
                fn[k] = l == DS_SIMD_AVX2 && f ? ds_dot_avx2_get_xn(t, k + 2)
                      : l == DS_SIMD_AVX512 && f ? ds_dot_avx512_get_xn(t, k + 2) : NULL;
#ifdef DS_HAVE_AVX512_EMU
            if (l == 3 && ds_simd_cpu_level() == DS_SIMD_AVX2) {
                f = ds_dot_avx512emu_get(t);
                f4 = ds_dot_avx512emu_get_x4(t);
                for (int k = 0; k < 2; k++) fn[k] = ds_dot_avx512emu_get_xn(t, k + 2);
            }
#endif
            if (!f) continue;
            const char *lname = l == 3 ? "avx512-emulated" : ds_simd_name((ds_simd_level)l);
            g_levels_run[l]++;
            float s = NAN;
            f((int)n, &s, w, act);
            CHECK(fabs(s - ref[0]) <= tol[0], "%s %s n=%lld: %.9g vs ref %.9g (|err| %.3g > tol %.3g)",
                  tr->name, lname, (long long)n, s, ref[0], fabs(s - ref[0]), tol[0]);
            /* the 2/3-row forms: same sums as the 1-row kernel, same bound */
            for (int k = 0; k < 2; k++) {
                if (!fn[k]) continue;
                g_xn_run[l]++;
                float sn[3] = { NAN, NAN, NAN };
                fn[k]((int)n, sn, w, act, abytes);
                for (int r = 0; r < k + 2; r++)
                    CHECK(fabs(sn[r] - ref[r]) <= tol[r], "%s %s x%d row %d n=%lld: %.9g vs ref %.9g (tol %.3g)",
                          tr->name, lname, k + 2, r, (long long)n, sn[r], ref[r], tol[r]);
            }
            if (!f4) continue;
            g_x4_run[l]++;
            float s4[4] = { NAN, NAN, NAN, NAN };
            f4((int)n, s4, w, act, abytes);
            for (int r = 0; r < 4; r++)
                CHECK(fabs(s4[r] - ref[r]) <= tol[r], "%s %s x4 row %d n=%lld: %.9g vs ref %.9g (tol %.3g)",
                      tr->name, lname, r, (long long)n, s4[r], ref[r], tol[r]);
        }
    }
    CHECK(ds_vec_dot_best(t) != NULL, "%s: no best kernel", tr->name);
    free(w); free(act); free(wf); free(x); free(af);
}

static void test_dots(void) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        const ds_type t = k_types[ti];
        const int be = ds_type_info(t)->block_elems;
        int64_t sizes[16];
        int ns = 0;
        const int64_t blocks[] = { 1, 3, 7, 29 };
        for (int i = 0; i < 4; i++) sizes[ns++] = blocks[i] * be;
        sizes[ns++] = 7168; sizes[ns++] = 2048; sizes[ns++] = 18432;
        if (be == 32) { sizes[ns++] = 576; sizes[ns++] = 1536; sizes[ns++] = 512; }
        if (be == 1) { sizes[ns++] = 33; sizes[ns++] = 100; sizes[ns++] = 1001; } /* SIMD tails */
        for (int i = 0; i < ns; i++) test_dot_type(t, sizes[i], sizes[i] > 4096 ? 2 : 4);
    }
}

/* ---- matmul ---------------------------------------------------------------------------------- */

static void test_matmul_type(ds_type t, int64_t K) {
    const ds_type_traits *tr = ds_type_info(t);
    /* M = 257 gives more work items than threads: the dynamic claiming */
    const int64_t Ms[] = { 1, 7, 33, 257 }, rows[] = { 1, 2, 3, 6, 7, 9, 64, 70 };
    /* every remainder mod 4; 9 and 70 also take the 8-row GEMM (>= 8 rows) with
     * a 1-row tail, 70 in two groups of activation rows (64 + 6) */
    const int threads[] = { 1, 2, 3 };
    const size_t rb = ds_row_bytes(t, K), stride = rb + 64; /* padded rows */
    const size_t abytes = ds_act_row_bytes(t, K);
    ds_vec_dot_fn scalar = ds_vec_dot_at(t, DS_SIMD_SCALAR);
    uint8_t *w = malloc(257 * stride);
    float *x = malloc(70 * K * sizeof(float)), *wf = malloc(257 * K * sizeof(float));
    float *af = malloc(K * sizeof(float));
    for (int64_t m = 0; m < 257; m++) {
        fill_weights(t, w + m * stride, K);
        ds_dequantize_row(t, w + m * stride, wf + m * K, K);
    }
    for (int64_t i = 0; i < 70 * K; i++) x[i] = ds_test_randf(&g_rng);
    uint8_t *actq = malloc(70 * abytes); /* the quantized x, for references */
    for (int r = 0; r < 70; r++) ds_quantize_act_row(t, x + r * K, actq + r * abytes, K);
    void *scratch = malloc(ds_matmul_act_bytes(t, K, 70));
    for (int ti = 0; ti < 3; ti++) {
        ds_threadpool *tp = threads[ti] > 1 ? ds_threadpool_create(threads[ti]) : NULL;
        for (int mi = 0; mi < 4; mi++)
            for (int ri = 0; ri < 8; ri++) {
                const int64_t M = Ms[mi], nr = rows[ri], ldy = M + 5;
                if (M > 33 && nr > 7) continue; /* keeps the scalar reference cheap */
                float *y = malloc(nr * ldy * sizeof(float)), *y2 = malloc(nr * ldy * sizeof(float));
                for (int64_t i = 0; i < nr * ldy; i++) y[i] = y2[i] = -12345.0f;
                ds_matmul(tp, t, w, stride, K, M, x, nr, y, ldy, scratch);
                ds_matmul_preq(tp, t, w, stride, K, M, actq, nr, y2, ldy);
                int bad = 0, bad_pad = 0, bad_preq = 0;
                for (int64_t r = 0; r < nr; r++) {
                    act_to_float(t, actq + r * abytes, af, K);
                    for (int64_t m = 0; m < ldy; m++) {
                        const float v = y[r * ldy + m];
                        if (m >= M) { bad_pad += v != -12345.0f || y2[r * ldy + m] != -12345.0f; continue; }
                        float s;
                        scalar((int)K, &s, w + m * stride, actq + r * abytes);
                        double absum, ref = ref_dot(wf + m * K, af, K, &absum);
                        const double tol = tolerance(t, w + m * stride, actq + r * abytes, K, absum);
                        bad += !(fabs(v - s) <= 2 * tol && fabs(v - ref) <= tol);
                        bad_preq += y2[r * ldy + m] != v;
                    }
                }
                CHECK(bad == 0, "matmul %s K=%lld M=%lld rows=%lld threads=%d: %d wrong", tr->name,
                      (long long)K, (long long)M, (long long)nr, threads[ti], bad);
                CHECK(bad_pad == 0, "matmul %s: wrote %d values past M", tr->name, bad_pad);
                CHECK(bad_preq == 0, "matmul_preq %s M=%lld rows=%lld: %d differ from ds_matmul",
                      tr->name, (long long)M, (long long)nr, bad_preq);
                free(y); free(y2);
            }
        ds_threadpool_free(tp);
    }
    free(w); free(x); free(wf); free(af); free(actq); free(scratch);
}

static void test_matmuls(void) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        const ds_type t = k_types[ti];
        const int be = ds_type_info(t)->block_elems;
        test_matmul_type(t, be == 256 ? 512 : be == 32 ? 320 : 77);
    }
}

int main(void) {
    ds_simd_level cpu = ds_simd_cpu_level();
    printf("cpu simd level: %s (effective %s)\n", ds_simd_name(cpu), ds_simd_name(ds_simd_detect()));
    test_act_quant();
    test_dots();
    test_matmuls();
    for (int l = 0; l < 4; l++) {
        const char *lname = l == 3 ? "avx512-emulated" : ds_simd_name((ds_simd_level)l);
        if (g_levels_run[l])
            printf("level %-15s: ran %d kernel checks (%d of them also 4-row, %d 2/3-row)\n", lname,
                   g_levels_run[l], g_x4_run[l], g_xn_run[l]);
        else if (l == 3)
            printf("level %-15s: not run (%s)\n", lname,
                   cpu == DS_SIMD_AVX512 ? "the real one ran" : "needs GCC and an AVX2 CPU");
        else
            printf("level %-15s: NOT RUN (%s)\n", lname, l > (int)cpu ? "this CPU lacks it" : "no kernels");
    }
    return ds_test_finish("test_quant_dot");
}
