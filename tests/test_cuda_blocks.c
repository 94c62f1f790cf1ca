/* test_cuda_blocks.c: the CUDA kernels against the reference on random
 * inputs — the GEMV for every weight type at awkward sizes (1 row, odd row
 * counts, batches across the 16-row pass) and at full V3 widths (per-head
 * k_b/v_b too), then every block through tiny synth models of each type mix
 * (routing pinned to ref's choice) in f16, bf16 and f32 caches, prefill and
 * one-token decode steps. Exits 77 ("skipped") without a CUDA device. */
#include "testutil.h"
#include "cases.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/rowops.h"
#include "backend/cuda/router.h"
#include "model/model.h"
#include "model/synth.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ||a - b|| / ||scale||: scale[i] = sum_k |w_k x_k| of output i, the size f32
 * rounding works on (a plain relative error blows up where a short dot
 * cancels, e.g. 32 terms summing to almost nothing). */
static double rel_l2_d(const float *a, const double *b, const double *scale, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        if (!isfinite(a[i])) return INFINITY;
        num += d * d;
        den += scale[i] * scale[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* y = W x on the device vs dequantize + double dot on the host. With
 * group_rows > 0, M = n_group * group_rows rows and x rows hold n_group
 * slices of K (the per-head k_b / v_b maps). */
static void check_gemv(ds_type t, int64_t K, int64_t M, int n, int64_t group_rows, uint64_t seed) {
    const ds_type_traits *tr = ds_type_info(t);
    ds_synth_gen g;
    const bool bf16 = t == DS_TYPE_BF16; /* synth has no bf16: round random floats */
    if (!bf16 && ds_synth_gen_init(&g, t, K, DS_SYNTH_WEIGHT, 0.02f, seed) != DS_OK) {
        CHECK(0, "synth cannot make %s", tr->name);
        return;
    }
    const size_t rb = bf16 ? (size_t)K * 2 : g.row_bytes;
    const int64_t n_group = group_rows > 0 ? M / group_rows : 1;
    const int64_t ldx = K * n_group;
    uint8_t *w = malloc((size_t)M * rb);
    float *x = malloc((size_t)n * ldx * sizeof(float)), *row = malloc((size_t)K * sizeof(float));
    float *y = malloc((size_t)n * M * sizeof(float));
    double *ref = malloc((size_t)n * M * sizeof(double)), *scale = malloc((size_t)n * M * sizeof(double));
    uint64_t st = seed * 7 + 1;
    if (bf16)
        for (int64_t i = 0; i < M * K; i++) ((uint16_t *)w)[i] = ds_f32_to_bf16(0.02f * ds_test_randf(&st));
    else
        ds_synth_gen_rows(&g, 0, M, w);
    for (int64_t i = 0; i < (int64_t)n * ldx; i++) x[i] = ds_test_randf(&st);
    for (int64_t m = 0; m < M; m++) {
        ds_dequantize_row(t, w + (size_t)m * rb, row, K);
        const int64_t go = group_rows > 0 ? (m / group_rows) * K : 0;
        for (int r = 0; r < n; r++) {
            double s = 0, a = 0;
            for (int64_t k = 0; k < K; k++) {
                const double p = (double)row[k] * x[(size_t)r * ldx + go + k];
                s += p;
                a += fabs(p);
            }
            ref[(size_t)r * M + m] = s;
            scale[(size_t)r * M + m] = a;
        }
    }
    void *dw = NULL;
    float *dx = NULL, *dy = NULL;
    bool ok = cudaMalloc(&dw, (size_t)M * rb) == cudaSuccess &&
              cudaMalloc((void **)&dx, (size_t)n * ldx * sizeof(float)) == cudaSuccess &&
              cudaMalloc((void **)&dy, (size_t)n * M * sizeof(float)) == cudaSuccess &&
              cudaMemcpy(dw, w, (size_t)M * rb, cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemcpy(dx, x, (size_t)n * ldx * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemset(dy, 0xFF, (size_t)n * M * sizeof(float)) == cudaSuccess; /* NaN poison */
    CHECK(ok, "cuda alloc/copy");
    if (ok) {
        ds_cu_gemv_params p = { .w = dw, .type = t, .K = K, .M = M, .row_bytes = rb, .x = dx, .ldx = ldx,
                                .group_rows = group_rows, .group_stride = group_rows > 0 ? K : 0, .y = dy,
                                .ldy = M, .n = n };
        int rc = ds_cu_gemv(&p);
        CHECK(rc == 0 && cudaDeviceSynchronize() == cudaSuccess, "gemv launch %s", tr->name);
        cudaMemcpy(y, dy, (size_t)n * M * sizeof(float), cudaMemcpyDeviceToHost);
        /* Bound 2e-6: f32 products and sums (rounding 6e-8 each) over K terms in
         * another order than the double reference, relative to sum |w x|:
         * measured <= 1e-7 up to K = 18432. */
        double e = rel_l2_d(y, ref, scale, (size_t)n * M);
        CHECK(e <= 2e-6, "gemv %s K %lld M %lld n %d group %lld: rel %.3e", tr->name, (long long)K, (long long)M, n,
              (long long)group_rows, e);
        /* accumulate mode adds onto what is there */
        p.accumulate = 1;
        rc = ds_cu_gemv(&p);
        cudaMemcpy(y, dy, (size_t)n * M * sizeof(float), cudaMemcpyDeviceToHost);
        for (size_t i = 0; i < (size_t)n * M; i++) ref[i] *= 2;
        double e2 = rel_l2_d(y, ref, scale, (size_t)n * M);
        CHECK(rc == 0 && e2 <= 4e-6, "gemv accumulate %s: rel %.3e", tr->name, e2);
        static int printed[64];
        if (!printed[t]++ || K >= 7168)
            printf("gemv %-7s K %5lld M %5lld n %2d group %4lld: err / sum|wx| %.2e\n", tr->name, (long long)K, (long long)M,
                   n, (long long)group_rows, e);
    }
    cudaFree(dw); cudaFree(dx); cudaFree(dy);
    free(w); free(x); free(row); free(y); free(ref); free(scale);
    if (!bf16) ds_synth_gen_free(&g);
}

static const ds_type all_types[] = { DS_TYPE_F32, DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_Q4_0, DS_TYPE_Q4_1,
                                     DS_TYPE_Q5_0, DS_TYPE_Q5_1, DS_TYPE_Q8_0, DS_TYPE_IQ4_NL, DS_TYPE_Q2_K,
                                     DS_TYPE_Q3_K, DS_TYPE_Q4_K, DS_TYPE_Q5_K, DS_TYPE_Q6_K, DS_TYPE_IQ4_XS };

static void test_gemv_all(void) {
    for (size_t i = 0; i < sizeof all_types / sizeof *all_types; i++) {
        const ds_type t = all_types[i];
        const int64_t blk = ds_type_info(t)->block_elems;
        const int64_t K1 = blk == 256 ? 256 : 32, K2 = blk == 256 ? 768 : 96;
        check_gemv(t, K1, 1, 1, 0, 11 + i);      /* one row, one block */
        check_gemv(t, K2, 37, 3, 0, 23 + i);     /* odd rows, odd batch */
        check_gemv(t, K2 * 3, 129, 19, 0, 31 + i); /* crosses the 16-row pass */
        check_gemv(t, 2 * K1, 40, 4, 8, 41 + i); /* per-group x */
        /* decode row counts (warp-row path for the K-quants and q8_0; few rows:
         * one row per lane group): 16-byte aligned extents (q3_K/q6_K/q8_0
         * staged), 37 rows of an odd size (q3_K/q6_K/q8_0: the fallback), per-group x */
        check_gemv(t, 8 * K1, 42, 1, 0, 51 + i);
        check_gemv(t, 8 * K1, 42, 2, 0, 52 + i);
        check_gemv(t, K2, 37, 2, 0, 53 + i);
        check_gemv(t, 2 * K1, 40, 1, 8, 57 + i);
        check_gemv(t, 2 * K1, 40, 2, 8, 59 + i);
    }
    if (getenv("DS_CUDA_TEST_QUICK")) return; /* under compute-sanitizer: awkward sizes only */
    /* full V3 widths of the Q3_K_M mix: kv_a, q_a, q_b, attn_out, the FFN */
    check_gemv(DS_TYPE_Q3_K, 7168, 576, 1, 0, 101);
    check_gemv(DS_TYPE_Q3_K, 7168, 1536, 16, 0, 102);
    check_gemv(DS_TYPE_Q3_K, 1536, 24576, 2, 0, 103);
    check_gemv(DS_TYPE_Q4_K, 16384, 7168, 1, 0, 104);
    check_gemv(DS_TYPE_Q5_K, 18432, 7168, 1, 0, 105);
    check_gemv(DS_TYPE_Q6_K, 7168, 4096, 3, 0, 106);
    check_gemv(DS_TYPE_F32, 7168, 256, 5, 0, 107);                 /* router */
    check_gemv(DS_TYPE_Q8_0, 128, 128 * 512, 2, 512, 108);         /* k_b: q_nope -> latent per head */
    check_gemv(DS_TYPE_Q8_0, 128, 128 * 512, 1, 512, 110);         /* k_b at decode */
    check_gemv(DS_TYPE_Q6_K, 7168, 4096, 1, 0, 111);               /* output-like, decode */
    check_gemv(DS_TYPE_Q3_K, 7168, 2048, 2, 0, 112);               /* expert gate, two rows */
    /* >= 4096 rows: 4 rows per lane group (2 at two x rows), last group partial */
    check_gemv(DS_TYPE_Q3_K, 2048, 4098, 1, 0, 113);
    check_gemv(DS_TYPE_Q3_K, 2048, 4098, 2, 0, 114);
    check_gemv(DS_TYPE_Q4_K, 256, 4097, 1, 0, 115);
    check_gemv(DS_TYPE_Q8_0, 256, 4099, 5, 0, 116);
    check_gemv(DS_TYPE_Q4_0, 512, 128 * 128, 2, 128, 109);         /* v_b: latent -> v per head */
}

/* ---- blocks through tiny synth models ------------------------------------------- */

static ds_model *synth_model(ds_synth_mix mix, bool legacy, const char *file) {
    ds_synth_params p;
    ds_synth_params_default(&p);
    p.n_layer = 3;
    p.n_dense = 1;
    p.mix = mix;
    p.tiny = true;
    p.legacy = legacy;
    p.seed = 5;
    p.n_threads = 2;
    ds_error err = { 0 };
    if (ds_synth_write(&p, ds_test_tmp(file), NULL, &err)) {
        CHECK(0, "synth %s: %s", file, err.msg);
        return NULL;
    }
    ds_model *m = NULL;
    ds_model_params mp = { .path = ds_test_tmp(file) };
    if (ds_model_load(&mp, &m, &err)) {
        CHECK(0, "load %s: %s", file, err.msg);
        return NULL;
    }
    return m;
}

/* token-by-token decode on the CUDA blocks (the forward hook off) with each
 * step's experts pinned to route ([n_layer][n][k], a prefill's record):
 * logits [n][n_vocab] (malloc'd) or NULL */
static float *decode_pinned(const ds_model *m, ds_type kv, int kv_block, const int32_t *ids, int n,
                            const int32_t *route) {
    ds_ctx_params p;
    ds_ctx_params_default(&p);
    p.device = "cuda";
    p.kv_type = kv;
    p.n_ctx = n;
    p.kv_block = kv_block;
    setenv("DSINFER_CUDA_FORWARD", "0", 1); /* read at backend creation, inside */
    float *logits = ds_test_decode_steps_pinned(m, &p, ids, n, route);
    unsetenv("DSINFER_CUDA_FORWARD");
    return logits;
}

static void check_model(ds_synth_mix mix, bool legacy) {
    char file[64];
    snprintf(file, sizeof file, "cuda_%s%s.gguf", ds_synth_mix_name(mix), legacy ? "_legacy" : "");
    ds_model *m = synth_model(mix, legacy, file);
    if (!m) return;
    const int L = m->hp.n_layer, k = m->hp.n_expert_used, n = 19; /* > 16: prefill skips the graph */
    const size_t V = (size_t)m->hp.n_vocab;
    int32_t ids[19];
    uint64_t st = 99;
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(ds_test_rand(&st) % V);
    const ds_type kvs[] = { DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_F32 };
    for (int ki = 0; ki < 3; ki++) {
        int32_t *route = calloc((size_t)L * n * k, sizeof *route);
        float *ref = ds_test_prefill(m, "ref", kvs[ki], 512, 1, ids, n, route, NULL, NULL);
        /* the f32 paths first (tight bounds), the tensor-core GEMM and MLA core after */
        ds_test_cuda_f32();
        setenv("DSINFER_CUDA_FORWARD", "0", 1); /* the blocks, so routing can be pinned */
        float *blk = ds_test_prefill(m, "cuda", kvs[ki], 5, 1, ids, n, NULL, route, NULL);
        unsetenv("DSINFER_CUDA_FORWARD");
        float *fwd = ds_test_prefill(m, "cuda", kvs[ki], 512, 1, ids, n, NULL, NULL, NULL);
        float *dec = ds_test_decode_steps(m, "cuda", kvs[ki], 4, 0, ids, n); /* kv_block 4: several blocks */
        ds_test_cuda_tc(17); /* the 19-row prefill on the GEMM, decode on the GEMV; MLA on tensor cores */
        setenv("DSINFER_CUDA_FORWARD", "0", 1);
        float *tc = ds_test_prefill(m, "cuda", kvs[ki], 512, 1, ids, n, NULL, route, NULL);
        unsetenv("DSINFER_CUDA_FORWARD");
        float *tc_dec = decode_pinned(m, kvs[ki], 4, ids, n, route); /* split-KV MLA over 4-token pages */
        ds_test_cuda_default();
        CHECK(ref && blk && fwd && dec && tc && tc_dec, "runs");
        if (ref && tc && tc_dec) {
            /* Bound 5e-3: each GEMM output is within 2^-10 of sum|w x| (f16 rounding
             * of both factors, test_cuda_gemm), the MLA core within 4u of its output
             * (f16 query and probabilities, u = 2^-11; bf16 2^-8: test_cuda_mla),
             * a few of those per layer, routing pinned */
            const double e_tc = ds_test_rel_l2(tc, ref, n * V), e_tcd = ds_test_rel_l2(tc_dec, ref, n * V);
            printf("model %-7s%s kv %-4s: tensor cores (pinned) vs ref %.2e, their decode steps (pinned) vs ref %.2e\n",
                   ds_synth_mix_name(mix), legacy ? " legacy" : "", ds_type_info(kvs[ki])->name, e_tc, e_tcd);
            /* products of up to 16 rows of the quantized mixes (the decode steps,
             * the LM head's last chunk of 3 rows) and the decode MoE run on int8
             * activations: the CPU backend's scheme and its bound (5e-2, test_model_kq) */
            const double q8_bound = mix == DS_SYNTH_F16 ? 5e-3 : 5e-2;
            CHECK(e_tc <= q8_bound && e_tcd <= q8_bound, "tensor cores vs ref %.3e, decode %.3e", e_tc, e_tcd);
        }
        free(tc);
        free(tc_dec);
        if (ref && blk && fwd && dec) {
            /* Bound 1e-4: f32 accumulation against ref's double over 3 tiny layers
             * with identical routing and identically rounded cache rows. */
            double e_blk = ds_test_rel_l2(blk, ref, n * V);
            /* The forward hook chooses its own routing: same math, so only a
             * near-tie could differ; decode steps and the prefill run the same
             * per-row kernels, so they must agree to f32 noise. */
            double e_fwd = ds_test_rel_l2(fwd, ref, n * V), e_dec = ds_test_rel_l2(dec, fwd, n * V);
            printf("model %-7s%s kv %-4s: blocks(pinned) vs ref %.2e | forward vs ref %.2e | decode vs prefill %.2e\n",
                   ds_synth_mix_name(mix), legacy ? " legacy" : "", ds_type_info(kvs[ki])->name, e_blk, e_fwd, e_dec);
            CHECK(e_blk <= 1e-4, "blocks vs ref %.3e", e_blk);
            CHECK(e_fwd <= 1e-3, "forward vs ref %.3e", e_fwd);
            CHECK(e_dec <= 1e-5, "decode vs prefill %.3e", e_dec);
        }
        free(route); free(ref); free(blk); free(fwd); free(dec);
    }
    ds_model_free(m);
}

/* The row argmax kernel against ds_argmax_f32 on crafted rows: ties within
 * one thread's stride and across threads, NaN at 0 and elsewhere, rows of
 * -inf, a row length that is no multiple of the block. Exact. */
static void check_argmax_kernel(void) {
    const int64_t dims[] = { 1, 37, 5000, 129280 };
    enum { ROWS = 7 };
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        const int64_t D = dims[di];
        float *h = malloc((size_t)ROWS * D * sizeof *h);
        uint64_t st = 99 + di;
        for (int64_t i = 0; i < ROWS * D; i++) h[i] = ds_test_randf(&st);
        float *r = h;
        r[D / 2] = 5.0f; /* row 0: one maximum */
        r = h + D; /* row 1: ties across threads and within a thread's stride */
        r[D - 1] = 6.0f;
        if (D > 1003) r[1003] = 6.0f;
        if (D > 1029) r[5] = r[5 + 1024] = 6.0f;
        if (D > 40000) r[4 * 1024 * 3 + 2] = r[4 * 8192 + 1] = 6.0f; /* in other blocks of the cluster */
        r = h + 2 * D; /* row 2: NaN at 0 wins whatever follows */
        r[0] = NAN;
        r[D - 1] = 9.0f;
        r = h + 3 * D; /* row 3: all -inf */
        for (int64_t i = 0; i < D; i++) r[i] = -INFINITY;
        r = h + 4 * D; /* row 4: NaNs sprinkled, the maximum last */
        for (int64_t i = 1; i < D; i += 7) r[i] = NAN;
        r[D - 1] = 3.0f;
        r = h + 5 * D; /* row 5: -inf at 0, NaN after: id 0 */
        r[0] = -INFINITY;
        for (int64_t i = 1; i < D; i++) r[i] = NAN;
        r = h + 6 * D; /* row 6: -inf everywhere but one -inf-beating value late */
        for (int64_t i = 0; i < D; i++) r[i] = -INFINITY;
        r[D - 1] = -1e30f;
        float *d = NULL;
        int32_t *dout = NULL, out[ROWS];
        bool ok = cudaMalloc((void **)&d, (size_t)ROWS * D * sizeof *d) == cudaSuccess &&
                  cudaMalloc((void **)&dout, ROWS * sizeof *dout) == cudaSuccess &&
                  cudaMemcpy(d, h, (size_t)ROWS * D * sizeof *d, cudaMemcpyHostToDevice) == cudaSuccess &&
                  ds_cu_argmax_rows(d, ROWS, D, dout, 0) == 0 &&
                  cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost) == cudaSuccess;
        CHECK(ok, "argmax kernel D %lld runs", (long long)D);
        int agree = 0;
        for (int i = 0; ok && i < ROWS; i++) {
            const int32_t want = ds_argmax_f32(h + (size_t)i * D, (size_t)D);
            agree += out[i] == want;
            CHECK(out[i] == want, "argmax D %lld row %d: kernel %d, host %d", (long long)D, i, out[i], want);
        }
        printf("argmax kernel D %6lld: %d/%d rows equal ds_argmax_f32\n", (long long)D, agree, ROWS);
        cudaFree(d);
        cudaFree(dout);
        free(h);
    }
}

/* The router logits' tiled f32 GEMV: every row count gives each row the
 * same bits (a decode step routes as a prefill does), and the sums are
 * within 2e-5 * sum|w x| of a double reference: a lane adds at most K/256
 * <= 28 products in order (K <= 7168), a 5-level tree the lanes and 7 adds
 * the segments, so the worst-case rounding is (28 + 5 + 7) * 2^-24 ~ 2.4e-6
 * of sum|w x|; the bound leaves room for K up to ~60000. */
static void check_f32_tiles(int64_t K, int64_t M, int n, uint64_t seed) {
    const int64_t ldw = K + 32; /* padded rows: row_bytes > 4K */
    float *w = malloc((size_t)M * ldw * 4), *x = malloc((size_t)n * K * 4);
    float *y = malloc((size_t)n * M * 4), *y1 = malloc((size_t)n * M * 4);
    uint64_t st = seed;
    for (int64_t i = 0; i < M * ldw; i++) w[i] = 0.05f * ds_test_randf(&st);
    for (int64_t i = 0; i < (int64_t)n * K; i++) x[i] = ds_test_randf(&st);
    float *dw = NULL, *dx = NULL, *dy = NULL;
    bool ok = cudaMalloc((void **)&dw, (size_t)M * ldw * 4) == cudaSuccess &&
              cudaMalloc((void **)&dx, (size_t)n * K * 4) == cudaSuccess &&
              cudaMalloc((void **)&dy, (size_t)n * M * 4) == cudaSuccess &&
              cudaMemcpy(dw, w, (size_t)M * ldw * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemcpy(dx, x, (size_t)n * K * 4, cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK(ok, "f32 tiles: cuda alloc/copy");
    ds_cu_gemv_params p = { .w = dw, .type = DS_TYPE_F32, .K = K, .M = M, .row_bytes = (size_t)ldw * 4, .x = dx,
                            .ldx = K, .y = dy, .ldy = M, .n = n };
    ok = ok && ds_cu_gemv_f32_tiles(&p) == 0 && cudaMemcpy(y, dy, (size_t)n * M * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
    /* the same rows one, three and n - 1 at a time (the three kernel shapes) */
    for (int r0 = 0, step = 1; ok && r0 < n; r0 += step, step = step == 1 ? 3 : n) {
        ds_cu_gemv_params q = p;
        q.n = r0 + step <= n ? step : n - r0;
        q.x = dx + (size_t)r0 * K;
        q.y = dy + (size_t)r0 * M;
        ok = ds_cu_gemv_f32_tiles(&q) == 0;
    }
    ok = ok && cudaMemcpy(y1, dy, (size_t)n * M * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
    CHECK(ok, "f32 tiles K %lld M %lld n %d: launches", (long long)K, (long long)M, n);
    if (ok) {
        CHECK(memcmp(y, y1, (size_t)n * M * 4) == 0, "f32 tiles K %lld M %lld n %d: rows alone differ from all at once",
              (long long)K, (long long)M, n);
        double worst = 0;
        for (int r = 0; r < n; r++)
            for (int64_t m = 0; m < M; m++) {
                double s = 0, a = 0;
                for (int64_t k = 0; k < K; k++) {
                    s += (double)w[m * ldw + k] * x[(size_t)r * K + k];
                    a += fabs((double)w[m * ldw + k] * x[(size_t)r * K + k]);
                }
                const double e = fabs(y[(size_t)r * M + m] - s) / a;
                if (e > worst) worst = e;
            }
        CHECK(worst <= 2e-5, "f32 tiles K %lld M %lld n %d: err / sum|wx| %.2e > 2e-5", (long long)K, (long long)M, n,
              worst);
        printf("f32 tiles K %lld M %lld n %d: bit-equal at any row count, err / sum|wx| %.2e\n", (long long)K,
               (long long)M, n, worst);
    }
    cudaFree(dw); cudaFree(dx); cudaFree(dy);
    free(w); free(x); free(y); free(y1);
}

/* ds_cu_route against ds_moe_select, row by row: the same ids in the same
 * order, the same weight bits, the same margin. Shapes: DeepSeek-V3's (256
 * experts, 8 groups of which 4 kept, top 8, sigmoid + bias, normalised,
 * scaled: the register path), V2-Lite-like (64 experts, no groups, softmax,
 * top 6: the register path), a group of 4 experts and 320 experts (both the
 * shared-memory path). Rows: random, exact ties inside and across groups
 * and lanes, all equal, and a NaN logit (the shared-memory path's fallback). */
static void check_router(void) {
    static const struct { int n_expert, k, n_group, n_group_used, sigmoid, norm; float scale; } shapes[] = {
        { 256, 8, 8, 4, 1, 1, 2.5f }, { 64, 6, 1, 1, 0, 0, 1.0f }, { 16, 4, 4, 2, 1, 1, 1.0f }, { 320, 8, 1, 1, 1, 1, 1.0f },
    };
    enum { ROWS = 12 };
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int E = shapes[si].n_expert, K = shapes[si].k;
        ds_hparams hp;
        memset(&hp, 0, sizeof hp);
        hp.n_expert = E;
        hp.n_expert_used = K;
        hp.n_group = shapes[si].n_group;
        hp.n_group_used = shapes[si].n_group_used;
        hp.gating = shapes[si].sigmoid ? DS_GATING_SIGMOID : DS_GATING_SOFTMAX;
        hp.expert_weights_norm = shapes[si].norm;
        hp.expert_weights_scale = shapes[si].scale;
        float *lg = malloc((size_t)ROWS * E * sizeof *lg), *bias = malloc((size_t)E * sizeof *bias);
        uint64_t st = 7 + si;
        for (int i = 0; i < E; i++) bias[i] = shapes[si].sigmoid ? 0.05f * ds_test_randf(&st) : 0.f;
        for (int64_t i = 0; i < (int64_t)ROWS * E; i++) lg[i] = 3.f * ds_test_randf(&st);
        for (int r = 1; r < ROWS; r++) {
            float *x = lg + (size_t)r * E;
            switch (r) {
            case 1: for (int i = 0; i < E; i++) x[i] = (float)(i % 5); break; /* ties everywhere */
            case 2: for (int i = 0; i < E; i++) x[i] = 1.f; break;             /* all equal */
            case 3: x[3] = x[E - 2] = x[E / 2 + 1] = 9.f; break;               /* ties across groups */
            case 4: x[8] = x[9] = x[16] = x[E - 1] = 9.f; break;                /* ties in and across lanes */
            case 5: x[E / 3] = NAN; break;                                      /* the fallback */
            default: break;
            }
        }
        float *dl = NULL, *db = NULL, *dw = NULL, *dm = NULL;
        int32_t *di = NULL;
        float w[ROWS * 8], m[ROWS];
        int32_t ids[ROWS * 8];
        bool ok = cudaMalloc((void **)&dl, (size_t)ROWS * E * 4) == cudaSuccess && cudaMalloc((void **)&db, (size_t)E * 4) == cudaSuccess &&
                  cudaMalloc((void **)&dw, sizeof w) == cudaSuccess && cudaMalloc((void **)&dm, sizeof m) == cudaSuccess &&
                  cudaMalloc((void **)&di, sizeof ids) == cudaSuccess &&
                  cudaMemcpy(dl, lg, (size_t)ROWS * E * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
                  cudaMemcpy(db, bias, (size_t)E * 4, cudaMemcpyHostToDevice) == cudaSuccess;
        ds_cu_route_params p = { .logits = dl, .bias = shapes[si].sigmoid ? db : NULL, .ids = di, .weights = dw,
                                 .margin = dm, .n = ROWS, .n_expert = E, .k = K, .n_group = hp.n_group,
                                 .n_group_used = hp.n_group_used, .sigmoid = shapes[si].sigmoid,
                                 .norm = shapes[si].norm, .scale = shapes[si].scale, .stream = 0 };
        ok = ok && ds_cu_route(&p) == 0 && cudaMemcpy(ids, di, (size_t)ROWS * K * 4, cudaMemcpyDeviceToHost) == cudaSuccess &&
             cudaMemcpy(w, dw, (size_t)ROWS * K * 4, cudaMemcpyDeviceToHost) == cudaSuccess &&
             cudaMemcpy(m, dm, (size_t)ROWS * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
        CHECK(ok, "router E %d runs", E);
        int same = 0;
        for (int r = 0; ok && r < ROWS; r++) {
            int32_t rid[8];
            float rw[8];
            const float rm = ds_moe_select(&hp, lg + (size_t)r * E, shapes[si].sigmoid ? bias : NULL, NULL, rid, rw);
            bool eq = memcmp(rid, ids + r * K, (size_t)K * 4) == 0 && (memcmp(&rm, m + r, 4) == 0 || (isnan(rm) && isnan(m[r])));
            for (int j = 0; j < K; j++) /* the same bits, or both NaN (payloads differ between host and device) */
                eq = eq && (memcmp(rw + j, w + r * K + j, 4) == 0 || (isnan(rw[j]) && isnan(w[r * K + j])));
            same += eq;
            CHECK(eq, "router E %d row %d: ids %d %d %d.. (host %d %d %d..), w0 %.9g (host %.9g), margin %.9g (host %.9g)", E,
                  r, ids[r * K], ids[r * K + 1], ids[r * K + 2], rid[0], rid[1], rid[2], w[r * K], rw[0], m[r], rm);
        }
        printf("router E %3d k %d groups %d/%d: %d/%d rows equal ds_moe_select (ids, weight bits, margin)\n", E, K,
               hp.n_group, hp.n_group_used, same, ROWS);
        cudaFree(dl); cudaFree(db); cudaFree(dw); cudaFree(dm); cudaFree(di);
        free(lg); free(bias);
    }
}

int main(void) {
    if (ds_cuda_device_count() < 1) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    check_argmax_kernel();
    check_router();
    check_f32_tiles(96, 37, 19, 5);    /* awkward: partial tiles in both directions */
    check_f32_tiles(7168, 256, 41, 6); /* V3's router */
    test_gemv_all();
    check_model(DS_SYNTH_Q3_K_M, false);
    if (getenv("DS_CUDA_TEST_QUICK")) return ds_test_finish("test_cuda_blocks");
    check_model(DS_SYNTH_Q4_K_M, false);
    check_model(DS_SYNTH_Q8_0, true);
    check_model(DS_SYNTH_F16, false);
    check_model(DS_SYNTH_IQ4_XS, false);
    return ds_test_finish("test_cuda_blocks");
}
