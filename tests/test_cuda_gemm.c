/* test_cuda_gemm.c: the tensor-core prefill GEMM (gemm.h) against a double
 * reference of the dequantized weights times the original f32 activations —
 * every weight type at awkward sizes (K not a multiple of the 64-wide step,
 * partial 64-row weight tiles, 32/64/128-row activation tiles and their
 * partial last tile), per-head x slices, accumulate mode, activations far
 * outside f16's range, the grouped (MoE) launch with empty and multi-tile
 * experts, and full V3 widths. Exits 77 ("skipped") without a CUDA device.
 *
 * Bound, per output: both factors are rounded to f16 (unit roundoff u =
 * 2^-11; the activations first scaled by a power of two, which is exact, so
 * no value leaves the normal range), so each product carries at most
 * (2u + u^2)|w x| of error, and the f32 sums of K terms add at most
 * K * 2^-24 * sum|w x| in the worst order. |err| <= (2^-10 + K 2^-24) sum|w x|
 * is therefore a worst-case bound (values below f16's normal range add
 * < 2^-25 absolute per weight, far below it for these weight sizes) — any
 * fragment or tile bug gives errors of the size of the output itself. */
#include "testutil.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemm.h"
#include "model/synth.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ds_type t;
    int64_t K, M;
    size_t rb;
    uint8_t *w;   /* host weights, n_exp experts of M rows */
    float *wf;    /* dequantized */
} weights;

static bool make_weights(weights *W, ds_type t, int64_t K, int64_t M, int n_exp, uint64_t seed) {
    W->t = t;
    W->K = K;
    W->M = M;
    const int64_t rows = M * n_exp;
    const bool bf16 = t == DS_TYPE_BF16; /* synth has no bf16: round random floats */
    ds_synth_gen g;
    if (!bf16 && ds_synth_gen_init(&g, t, K, DS_SYNTH_WEIGHT, 0.02f, seed) != DS_OK) return false;
    W->rb = bf16 ? (size_t)K * 2 : g.row_bytes;
    W->w = malloc((size_t)rows * W->rb);
    W->wf = malloc((size_t)rows * K * sizeof(float));
    uint64_t st = seed * 3 + 7;
    if (bf16)
        for (int64_t i = 0; i < rows * K; i++) ((uint16_t *)W->w)[i] = ds_f32_to_bf16(0.02f * ds_test_randf(&st));
    else
        ds_synth_gen_rows(&g, 0, rows, W->w);
    for (int64_t m = 0; m < rows; m++) ds_dequantize_row(t, W->w + (size_t)m * W->rb, W->wf + (size_t)m * K, K);
    if (!bf16) ds_synth_gen_free(&g);
    return true;
}

static void free_weights(weights *W) {
    free(W->w);
    free(W->wf);
}

/* checks y against ref/scale per element; returns the largest err / scale */
static double check_out(const float *y, const double *ref, const double *scale, size_t n, int64_t K, const char *what) {
    const double bound = ldexp(1, -10) + (double)K * ldexp(1, -24);
    double worst = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)y[i] - ref[i]);
        const double r = scale[i] > 0 ? e / scale[i] : e;
        if (!isfinite(y[i]) || r > bound) bad++;
        if (r > worst || !isfinite(y[i])) worst = isfinite(y[i]) ? r : INFINITY;
    }
    CHECK(bad == 0, "%s: %zu of %zu outputs beyond the bound (worst err / sum|wx| %.3e, bound %.3e)", what, bad, n,
          worst, bound);
    return worst;
}

/* The device side of one check: the weights, the x rows in f32 and as the
 * f16 copies with their scales the GEMM reads, and y (poisoned with NaN, so
 * an output the launch never writes shows) */
typedef struct {
    void *w, *xh;
    float *x, *inv, *y;
} dev_bufs;

static bool dev_upload(dev_bufs *b, const void *w, size_t w_bytes, const float *x, size_t x_floats, size_t rows,
                       size_t y_floats) {
    *b = (dev_bufs){ 0 };
    return cudaMalloc(&b->w, w_bytes) == cudaSuccess &&
           cudaMalloc((void **)&b->x, x_floats * sizeof(float)) == cudaSuccess &&
           cudaMalloc(&b->xh, x_floats * 2) == cudaSuccess &&
           cudaMalloc((void **)&b->inv, rows * sizeof(float)) == cudaSuccess &&
           cudaMalloc((void **)&b->y, y_floats * sizeof(float)) == cudaSuccess &&
           cudaMemcpy(b->w, w, w_bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
           cudaMemcpy(b->x, x, x_floats * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess &&
           cudaMemset(b->y, 0xFF, y_floats * sizeof(float)) == cudaSuccess;
}

static void dev_free(dev_bufs *b) {
    cudaFree(b->w);
    cudaFree(b->x);
    cudaFree(b->xh);
    cudaFree(b->inv);
    cudaFree(b->y);
}

/* y = W x for n rows through the dense launch; x rows ldx apart, per head
 * when group_rows > 0 (head g of row r reads x + r*ldx + g*K) */
static void check_dense(ds_type t, int64_t K, int64_t M, int n, int64_t group_rows, int64_t pad, double xmag,
                        uint64_t seed) {
    const ds_type_traits *tr = ds_type_info(t);
    weights W;
    if (!make_weights(&W, t, K, M, 1, seed)) {
        CHECK(0, "synth cannot make %s", tr->name);
        return;
    }
    const int64_t n_group = group_rows > 0 ? M / group_rows : 1;
    const int64_t ldx = K * n_group + pad;
    float *x = malloc((size_t)n * ldx * sizeof(float)), *y = malloc((size_t)n * M * sizeof(float));
    double *ref = malloc((size_t)n * M * sizeof(double)), *scale = malloc((size_t)n * M * sizeof(double));
    uint64_t st = seed * 5 + 3;
    for (int64_t i = 0; i < (int64_t)n * ldx; i++) x[i] = (float)(xmag * ds_test_randf(&st));
    for (int r = 0; r < n; r++)
        for (int64_t m = 0; m < M; m++) {
            const float *wr = W.wf + (size_t)m * K, *xr = x + (size_t)r * ldx + (group_rows > 0 ? (m / group_rows) * K : 0);
            double s = 0, a = 0;
            for (int64_t k = 0; k < K; k++) {
                s += (double)wr[k] * xr[k];
                a += fabs((double)wr[k] * xr[k]);
            }
            ref[(size_t)r * M + m] = s;
            scale[(size_t)r * M + m] = a;
        }
    dev_bufs d;
    const bool ok = dev_upload(&d, W.w, (size_t)M * W.rb, x, (size_t)n * ldx, (size_t)n, (size_t)n * M);
    CHECK(ok, "cuda alloc/copy");
    if (ok) {
        char what[160];
        snprintf(what, sizeof what, "gemm %s K %lld M %lld n %d group %lld pad %lld |x| %.0e", tr->name, (long long)K,
                 (long long)M, n, (long long)group_rows, (long long)pad, xmag);
        CHECK(ds_cu_gemm_supported(t, ldx, group_rows, group_rows > 0 ? K : 0), "%s: supported", what);
        int rc = ds_cu_to_half_rows(d.x, ldx, ldx, n, d.xh, d.inv, 0);
        ds_cu_gemm_params p = { .w = d.w, .type = t, .K = K, .M = M, .row_bytes = W.rb, .xh = d.xh, .inv = d.inv,
                                .ldx = ldx, .group_rows = group_rows, .group_stride = group_rows > 0 ? K : 0,
                                .y = d.y, .ldy = M, .n = n };
        rc = rc ? rc : ds_cu_gemm(&p);
        CHECK(rc == 0 && cudaDeviceSynchronize() == cudaSuccess, "%s: launch", what);
        cudaMemcpy(y, d.y, (size_t)n * M * sizeof(float), cudaMemcpyDeviceToHost);
        const double worst = check_out(y, ref, scale, (size_t)n * M, K, what);
        /* accumulate mode adds onto what is there */
        p.accumulate = 1;
        rc = ds_cu_gemm(&p);
        CHECK(rc == 0 && cudaDeviceSynchronize() == cudaSuccess, "%s: accumulate launch", what);
        cudaMemcpy(y, d.y, (size_t)n * M * sizeof(float), cudaMemcpyDeviceToHost);
        for (size_t i = 0; i < (size_t)n * M; i++) {
            ref[i] *= 2;
            scale[i] *= 2;
        }
        strncat(what, " accumulate", sizeof what - strlen(what) - 1);
        check_out(y, ref, scale, (size_t)n * M, K, what);
        static int printed[64];
        if (!printed[t]++ || K >= 2048 || group_rows)
            printf("%s: worst err / sum|wx| %.2e\n", what, worst);
    }
    dev_free(&d);
    free(x); free(y); free(ref); free(scale);
    free_weights(&W);
}

/* Each weight reaches the MMA as its exact value rounded once to f16: with
 * one-hot x rows (1.0 scales to 2^14 exactly, and back), y[r][m] is row m's
 * element r as the GEMM dequantized it, which must equal the CPU's
 * ds_dequantize_row value rounded to f16, bit for bit. */
static void check_dequant_exact(ds_type t, int64_t K, int64_t M, uint64_t seed) {
    weights W;
    if (!make_weights(&W, t, K, M, 1, seed)) {
        CHECK(0, "synth cannot make %s", ds_type_info(t)->name);
        return;
    }
    const int n = (int)K;
    float *x = calloc((size_t)n * K, sizeof(float)), *y = malloc((size_t)n * M * sizeof(float));
    for (int r = 0; r < n; r++) x[(size_t)r * K + r] = 1.f;
    dev_bufs d;
    bool ok = dev_upload(&d, W.w, (size_t)M * W.rb, x, (size_t)n * K, (size_t)n, (size_t)n * M);
    ds_cu_gemm_params p = { .w = d.w, .type = t, .K = K, .M = M, .row_bytes = W.rb, .xh = d.xh, .inv = d.inv,
                            .ldx = K, .y = d.y, .ldy = M, .n = n };
    ok = ok && ds_cu_to_half_rows(d.x, K, K, n, d.xh, d.inv, 0) == 0 && ds_cu_gemm(&p) == 0 &&
         cudaMemcpy(y, d.y, (size_t)n * M * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess;
    CHECK(ok, "dequant exact %s: launch", ds_type_info(t)->name);
    size_t bad = 0;
    for (int r = 0; ok && r < n; r++)
        for (int64_t m = 0; m < M; m++) {
            const float want = ds_fp16_to_f32(ds_f32_to_fp16(W.wf[(size_t)m * K + r]));
            if (memcmp(&want, &y[(size_t)r * M + m], 4) != 0 && !(want == 0.f && y[(size_t)r * M + m] == 0.f)) bad++;
        }
    CHECK(bad == 0, "dequant exact %s K %lld M %lld: %zu of %lld weights differ from the f16-rounded CPU value",
          ds_type_info(t)->name, (long long)K, (long long)M, bad, (long long)(n * M));
    dev_free(&d);
    free(x); free(y);
    free_weights(&W);
}

/* the grouped launch: n_exp experts with counts cnt[e] of gathered rows
 * (in expert order), tiles cut as the backend does */
static void check_grouped(ds_type t, int64_t K, int64_t M, int n_exp, const int *cnt, uint64_t seed) {
    const ds_type_traits *tr = ds_type_info(t);
    weights W;
    if (!make_weights(&W, t, K, M, n_exp, seed)) {
        CHECK(0, "synth cannot make %s", tr->name);
        return;
    }
    int total = 0, used = 0;
    for (int e = 0; e < n_exp; e++) {
        total += cnt[e];
        used += cnt[e] > 0;
    }
    const int tr_rows = ds_cu_gemm_tile_rows(used ? (total + used - 1) / used : 1);
    int32_t *tiles = malloc(sizeof(int32_t) * 3 * (size_t)(n_exp + total / 32 + 1));
    int nt = 0;
    for (int e = 0, off = 0; e < n_exp; off += cnt[e], e++)
        for (int r = 0; r < cnt[e]; r += tr_rows) {
            tiles[3 * nt] = e;
            tiles[3 * nt + 1] = off + r;
            tiles[3 * nt + 2] = cnt[e] - r < tr_rows ? cnt[e] - r : tr_rows;
            nt++;
        }
    float *x = malloc((size_t)total * K * sizeof(float)), *y = malloc((size_t)total * M * sizeof(float));
    double *ref = malloc((size_t)total * M * sizeof(double)), *scale = malloc((size_t)total * M * sizeof(double));
    uint64_t st = seed * 11 + 5;
    for (int64_t i = 0; i < (int64_t)total * K; i++) x[i] = ds_test_randf(&st);
    for (int e = 0, r0 = 0; e < n_exp; r0 += cnt[e], e++)
        for (int r = r0; r < r0 + cnt[e]; r++)
            for (int64_t m = 0; m < M; m++) {
                const float *wr = W.wf + ((size_t)e * M + m) * K;
                double s = 0, a = 0;
                for (int64_t k = 0; k < K; k++) {
                    s += (double)wr[k] * x[(size_t)r * K + k];
                    a += fabs((double)wr[k] * x[(size_t)r * K + k]);
                }
                ref[(size_t)r * M + m] = s;
                scale[(size_t)r * M + m] = a;
            }
    dev_bufs d;
    int32_t *dt = NULL;
    const bool ok = dev_upload(&d, W.w, (size_t)n_exp * M * W.rb, x, (size_t)total * K, (size_t)total,
                               (size_t)total * M) &&
                    cudaMalloc((void **)&dt, sizeof(int32_t) * 3 * (size_t)nt) == cudaSuccess &&
                    cudaMemcpy(dt, tiles, sizeof(int32_t) * 3 * (size_t)nt, cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK(ok, "cuda alloc/copy");
    if (ok) {
        char what[160];
        snprintf(what, sizeof what, "grouped gemm %s K %lld M %lld, %d experts (%d used), %d rows, %d tiles of %d",
                 tr->name, (long long)K, (long long)M, n_exp, used, total, nt, tr_rows);
        int rc = ds_cu_to_half_rows(d.x, K, K, total, d.xh, d.inv, 0);
        ds_cu_gemm_params p = { .w = d.w, .type = t, .K = K, .M = M, .row_bytes = W.rb,
                                .expert_bytes = (size_t)M * W.rb, .xh = d.xh, .inv = d.inv, .ldx = K, .y = d.y,
                                .ldy = M, .tiles = dt, .n_tiles = nt, .tile_rows = tr_rows };
        rc = rc ? rc : ds_cu_gemm(&p);
        CHECK(rc == 0 && cudaDeviceSynchronize() == cudaSuccess, "%s: launch", what);
        cudaMemcpy(y, d.y, (size_t)total * M * sizeof(float), cudaMemcpyDeviceToHost);
        printf("%s: worst err / sum|wx| %.2e\n", what, check_out(y, ref, scale, (size_t)total * M, K, what));
    }
    dev_free(&d);
    cudaFree(dt);
    free(tiles); free(x); free(y); free(ref); free(scale);
    free_weights(&W);
}

/* to_half: the scale is a power of two that puts the row's absmax in
 * [2^13, 2^14); a zero row stays zero. K 64 and 16384 take the path that
 * holds a row in registers (up to 20480 columns), 24576 the two-pass one. */
static void check_to_half(int K) {
    const int n = 4;
    float *x = malloc((size_t)n * K * sizeof *x), inv[4];
    uint16_t *xh = malloc((size_t)n * K * sizeof *xh);
    const size_t xbytes = (size_t)n * K * sizeof *x, hbytes = (size_t)n * K * sizeof *xh;
    uint64_t st = 5 + (uint64_t)K;
    const double mag[4] = { 1e6, 1e-30, 0, 3.0 };
    for (int r = 0; r < n; r++)
        for (int i = 0; i < K; i++) x[r * K + i] = (float)(mag[r] * ds_test_randf(&st));
    float *dx = NULL, *dinv = NULL;
    void *dxh = NULL;
    bool ok = cudaMalloc((void **)&dx, xbytes) == cudaSuccess && cudaMalloc(&dxh, hbytes) == cudaSuccess &&
              cudaMalloc((void **)&dinv, sizeof inv) == cudaSuccess &&
              cudaMemcpy(dx, x, xbytes, cudaMemcpyHostToDevice) == cudaSuccess &&
              ds_cu_to_half_rows(dx, K, K, n, dxh, dinv, 0) == 0 &&
              cudaMemcpy(xh, dxh, hbytes, cudaMemcpyDeviceToHost) == cudaSuccess &&
              cudaMemcpy(inv, dinv, sizeof inv, cudaMemcpyDeviceToHost) == cudaSuccess;
    CHECK(ok, "to_half runs (K %d)", K);
    for (int r = 0; ok && r < n; r++) {
        int e = 0;
        const double f = frexp(1.0 / inv[r], &e);
        CHECK(f == 0.5, "K %d row %d: inverse scale %g is a power of two", K, r, inv[r]);
        double mx = 0, worst = 0;
        for (int i = 0; i < K; i++) {
            const double back = ds_fp16_to_f32(xh[r * K + i]) * inv[r];
            mx = fmax(mx, fabs(ds_fp16_to_f32(xh[r * K + i])));
            if (fabs(x[r * K + i]) > 0) worst = fmax(worst, fabs(back - x[r * K + i]) / fabs(x[r * K + i]));
        }
        if (mag[r] > 0) {
            CHECK(mx >= 8192 && mx <= 16384, "K %d row %d: scaled absmax %g in [2^13, 2^14]", K, r, mx);
            /* round to nearest with 11 significant bits: relative error <= u = 2^-11 (a value would
             * need to be 2^-27 of the row's absmax to fall below f16's normal range) */
            CHECK(worst <= ldexp(1, -11), "K %d row %d: round trip rel %.3e", K, r, worst);
        } else {
            CHECK(mx == 0, "zero row stays zero");
        }
    }
    cudaFree(dx); cudaFree(dxh); cudaFree(dinv);
    free(x); free(xh);
}

static const ds_type all_types[] = { DS_TYPE_F32, DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_Q4_0, DS_TYPE_Q4_1,
                                     DS_TYPE_Q5_0, DS_TYPE_Q5_1, DS_TYPE_Q8_0, DS_TYPE_IQ4_NL, DS_TYPE_Q2_K,
                                     DS_TYPE_Q3_K, DS_TYPE_Q4_K, DS_TYPE_Q5_K, DS_TYPE_Q6_K, DS_TYPE_IQ4_XS };

int main(void) {
    if (ds_cuda_device_count() < 1) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    check_to_half(64);
    check_to_half(16384);
    check_to_half(24576);
    for (size_t i = 0; i < sizeof all_types / sizeof *all_types; i++) {
        const ds_type t = all_types[i];
        const int64_t blk = ds_type_info(t)->block_elems;
        const int64_t K1 = blk == 256 ? 256 : 32, K3 = blk == 256 ? 768 : 96; /* 96, 768: K % 64 != 0 or = 0 */
        check_dense(t, K1, 1, 1, 0, 0, 1.0, 11 + i);          /* one row, one block */
        check_dense(t, K3, 37, 17, 0, 8, 1.0, 23 + i);        /* partial weight tile, 32-row tile, padded x */
        check_dense(t, K3 + K1, 129, 65, 0, 0, 1.0, 31 + i);  /* 128-row tile, partial */
        check_dense(t, 2 * K1, 128, 33, 64, 0, 1.0, 41 + i);  /* per-head x, 64-row heads */
        check_dense(t, K3, 70, 130, 0, 0, 3e5, 47 + i);       /* |x| beyond f16: the row scale */
        if (t != DS_TYPE_F32) check_dequant_exact(t, blk == 256 ? 512 : 96, 70, 61 + i); /* f32 is not rounded */
        const int cnt[6] = { 3, 0, 40, 1, 0, 70 };
        check_grouped(t, K3, 65, 6, cnt, 53 + i);
    }
    if (getenv("DS_CUDA_TEST_QUICK")) return ds_test_finish("test_cuda_gemm");
    /* V3 widths of the Q3_K_M mix at prefill row counts */
    check_dense(DS_TYPE_Q3_K, 7168, 1536, 40, 0, 0, 1.0, 101);        /* q_a */
    check_dense(DS_TYPE_Q4_K, 16384, 1024, 24, 0, 0, 1.0, 102);       /* attn_out (a slice of its rows) */
    check_dense(DS_TYPE_Q5_K, 18432, 512, 20, 0, 0, 1.0, 103);        /* dense down (slice) */
    check_dense(DS_TYPE_Q8_0, 128, 128 * 512, 33, 512, 64, 1.0, 104); /* k_b per head, q rows of 192 */
    check_dense(DS_TYPE_Q4_K, 512, 128 * 128, 20, 128, 0, 1.0, 105);  /* v_b per head */
    int cnt[256];
    uint64_t st = 77;
    for (int e = 0; e < 256; e++) cnt[e] = (int)(ds_test_rand(&st) % 9); /* ~ 512 rows x 8 / 256 */
    check_grouped(DS_TYPE_Q3_K, 7168, 256, 256, cnt, 106);             /* expert gate (rows sliced) */
    check_grouped(DS_TYPE_Q4_K, 2048, 512, 64, cnt, 107);              /* expert down (slice) */
    return ds_test_finish("test_cuda_gemm");
}
