/* test_cuda_gemv_q8.c: the int8-activation GEMV (gemv_q8.h) against exact
 * double references, for q8_0 q2_K q3_K q4_K q5_K q6_K: awkward shapes
 * (1..257 rows, K down to one block, 1-4 x rows, misaligned weight
 * starts), per-head maps like k_b and v_b, every rows/stages choice, then
 * the full V3 widths. The awkward and per-head cases also run through the
 * host emulation of the kernel (same lane code on the CPU), so the index
 * math is checked without a GPU; after that, no device exits 77 (skipped). */
#include "testutil.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/gemv_q8.h"
#include "backend/cuda/rowops.h"
#include "model/synth.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances. y is compared with three references, per output i:
 * - refh = W . xh, xh the dequantized activations (d * q, exactly what the
 *   kernel multiplies): only f32 rounding differs. The kernel's integer dots
 *   are exact; its float steps (block scale x int, the sum over blocks and
 *   lanes) round ~100 times in a chain, each at 6e-8 of a partial sum no
 *   larger than mag = sum_k (|w_k + ml_k| + |ml_k|) |xh_k|, where ml_k is
 *   the min term of q2_K/q4_K/q5_K (0 for the others) since the kernel forms
 *   d*sc*sum(q x) and dmin*m*sum(x) apart. Bound TIGHT * mag.
 * - ref = W . x with the original f32 x: each |x_k - xh_k| <= d_b / 2 with
 *   d_b = absmax/127 of x_k's 32-block (round to nearest; |q| <= 127), so
 *   |ref - refh| <= B = sum_k |w_k| d_b / 2. Bound 1.01 B + TIGHT * mag (the
 *   1 % covers the float rounding of x * 127/absmax, ~3e-5 of d_b).
 * - ds_cu_gemv (f32 x): within B of ref plus its own f32 error, measured
 *   <= 2e-6 of sum |w x| (test_cuda_blocks). Bound 1.01 B + TIGHT * (mag + scale).
 * Accumulate mode must give exactly 2 y (the kernel is deterministic and a
 * float doubles exactly). */
#define TIGHT 1e-5

static bool g_dev; /* a CUDA device is present */

static void put_f16(uint8_t *p, float v) {
    const uint16_t h = ds_f32_to_fp16(v);
    memcpy(p, &h, 2);
}

/* Random bytes make every bit pattern of the quant and scale fields appear
 * (synth ties q4_K/q5_K mins to scales, which would hide a swap); the f16
 * d/dmin fields then get finite values of a weight-like size. */
static void fix_f16(ds_type t, uint8_t *row, int64_t K, uint64_t *st) {
    const int64_t nsb = K / 256;
    for (int64_t b = 0; b < (t == DS_TYPE_Q8_0 ? K / 32 : nsb); b++) {
        const float d = (0.5f + 0.5f * fabsf(ds_test_randf(st))) / 256.f * (ds_test_randf(st) < 0 ? -1.f : 1.f);
        const float dm = (0.5f + 0.5f * fabsf(ds_test_randf(st))) / 512.f;
        switch (t) {
        case DS_TYPE_Q8_0: put_f16(row + 34 * b, d); break;
        case DS_TYPE_Q2_K: put_f16(row + 84 * b + 80, d); put_f16(row + 84 * b + 82, dm); break;
        case DS_TYPE_Q3_K: put_f16(row + 110 * b + 108, d); break;
        case DS_TYPE_Q4_K: put_f16(row + 144 * b, d); put_f16(row + 144 * b + 2, dm); break;
        case DS_TYPE_Q5_K: put_f16(row + 176 * b, d); put_f16(row + 176 * b + 2, dm); break;
        case DS_TYPE_Q6_K: put_f16(row + 210 * b + 208, d); break;
        default: break;
        }
    }
}

/* The row with its quant fields zeroed: dequantized, that is -ml per
 * element for the types with a min term; false for the others (ml = 0). */
static bool min_part(ds_type t, const uint8_t *row, int64_t K, size_t rb, uint8_t *tmp, float *out) {
    int sbb, q0, q1;
    switch (t) {
    case DS_TYPE_Q2_K: sbb = 84, q0 = 16, q1 = 80; break;
    case DS_TYPE_Q4_K: sbb = 144, q0 = 16, q1 = 144; break;
    case DS_TYPE_Q5_K: sbb = 176, q0 = 16, q1 = 176; break; /* qh and qs */
    default: return false;
    }
    memcpy(tmp, row, rb);
    for (int64_t b = 0; b < K / 256; b++) memset(tmp + b * sbb + q0, 0, (size_t)(q1 - q0));
    ds_dequantize_row(t, tmp, out, K);
    return true;
}

typedef struct q8_case {
    ds_type t;
    int64_t K, M;
    int n;
    int64_t group_rows, group_stride;
    int64_t ldx;     /* x row (and quantized row) length */
    size_t wshift;   /* weights start this many bytes past a 256-aligned address */
    bool raw;        /* random bytes (else synth weights) */
    bool host;       /* also run the host emulation */
    bool all_cfg;    /* also every rows/stages choice, not only the launcher's */
    uint64_t seed;
} q8_case;

/* worst |y - want| / tol over the n x M outputs (INF for a non-finite y) */
static double worst(const float *y, int64_t ldy, const double *want, double want_scale, const double *tol,
                    int n, int64_t M) {
    double w = 0;
    for (int r = 0; r < n; r++)
        for (int64_t m = 0; m < M; m++) {
            const float v = y[(size_t)r * ldy + m];
            if (!isfinite(v)) return INFINITY;
            const double e = fabs((double)v - want_scale * want[(size_t)r * M + m]) / tol[(size_t)r * M + m];
            if (e > w) w = e;
        }
    return w;
}

/* the padding of each y row (ldy > M) still holds the poison */
static bool pad_kept(const float *y, int64_t ldy, int n, int64_t M) {
    for (int r = 0; r < n; r++)
        for (int64_t m = M; m < ldy; m++) {
            uint32_t u;
            memcpy(&u, &y[(size_t)r * ldy + m], 4);
            if (u != 0xFFFFFFFFu) return false;
        }
    return true;
}

typedef struct refs {
    double *ref, *refh, *t_tight, *t_bound, *t_f32; /* [n][M] */
} refs;

/* Checks y (from `what`) against refh and ref; y2 = the same call with accumulate = 1 */
static void check_y(const q8_case *c, const char *what, const ds_cu_gemv_q8_cfg *cfg, const float *y,
                    const float *y2, int64_t ldy, const refs *R, double *worst_tight, double *worst_bound) {
    const char *tn = ds_type_info(c->t)->name;
    const double et = worst(y, ldy, R->refh, 1.0, R->t_tight, c->n, c->M);
    const double eb = worst(y, ldy, R->ref, 1.0, R->t_bound, c->n, c->M);
    CHECK(et <= 1 && eb <= 1,
          "%s %s K %lld M %lld n %d group %lld/%lld shift %zu cfg %d/%d: err/tol %.3g vs W.xh, %.3g vs W.x", what, tn,
          (long long)c->K, (long long)c->M, c->n, (long long)c->group_rows, (long long)c->group_stride, c->wshift,
          cfg->rows, cfg->stages, et, eb);
    CHECK(pad_kept(y, ldy, c->n, c->M), "%s %s: wrote past M in a y row", what, tn);
    bool twice = true;
    for (int r = 0; r < c->n; r++)
        for (int64_t m = 0; m < c->M; m++)
            twice &= y2[(size_t)r * ldy + m] == 2.f * y[(size_t)r * ldy + m];
    CHECK(twice, "%s %s K %lld M %lld n %d cfg %d/%d: accumulate is not exactly y + y", what, tn, (long long)c->K,
          (long long)c->M, c->n, cfg->rows, cfg->stages);
    if (et > *worst_tight) *worst_tight = et;
    if (eb > *worst_bound) *worst_bound = eb;
}

static void run_case(const q8_case *c) {
    const ds_type t = c->t;
    const int64_t K = c->K, M = c->M, ldx = c->ldx, ldy = M + 3;
    const int n = c->n;
    const size_t rb = ds_row_bytes(t, K), wbytes = (size_t)M * rb;
    uint64_t st = c->seed * 2654435761u + 1;

    /* weights, placed wshift bytes past a 256-aligned start */
    uint8_t *wbuf = aligned_alloc(256, (wbytes + c->wshift + 255) / 256 * 256), *w = wbuf + c->wshift;
    if (c->raw) {
        for (size_t i = 0; i < wbytes; i++) w[i] = (uint8_t)ds_test_rand(&st);
        for (int64_t m = 0; m < M; m++) fix_f16(t, w + (size_t)m * rb, K, &st);
    } else {
        ds_synth_gen g;
        if (ds_synth_gen_init(&g, t, K, DS_SYNTH_WEIGHT, 0.02f, c->seed) != DS_OK) {
            CHECK(0, "synth cannot make %s", ds_type_info(t)->name);
            free(wbuf);
            return;
        }
        ds_synth_gen_rows(&g, 0, M, w);
        ds_synth_gen_free(&g);
    }
    /* x: 32-blocks of random sizes (2^-4 .. 2^4), every 13th all zero (d = 0) */
    float *x = malloc((size_t)n * ldx * sizeof(float));
    for (int64_t b = 0; b < (int64_t)n * ldx / 32; b++) {
        const float sz = b % 13 == 5 ? 0.f : ldexpf(1.f, (int)(ds_test_rand(&st) % 9) - 4);
        for (int k = 0; k < 32; k++) x[32 * b + k] = sz * ds_test_randf(&st);
    }
    const size_t xqb = ds_cu_q8_bytes(ldx, n), xrs = ds_cu_q8_row_bytes(ldx);
    uint8_t *xq = aligned_alloc(16, (xqb + 15) / 16 * 16);
    ds_cu_quantize_q8_host(x, ldx, ldx, n, xq);

    /* references in double */
    const size_t nm = (size_t)n * M;
    refs R = { calloc(nm, sizeof(double)), calloc(nm, sizeof(double)), calloc(nm, sizeof(double)),
               calloc(nm, sizeof(double)), calloc(nm, sizeof(double)) };
    float *wrow = malloc((size_t)K * sizeof(float)), *mrow = malloc((size_t)K * sizeof(float));
    uint8_t *tmp = malloc(rb);
    /* xh[r][e] = d * q, db[r][e] = d of element e's block */
    double *xh = malloc((size_t)n * ldx * sizeof(double)), *db = malloc((size_t)n * ldx * sizeof(double));
    for (int r = 0; r < n; r++) {
        const uint8_t *q = xq + (size_t)r * xrs;
        for (int64_t e = 0; e < ldx; e++) {
            float ds[2];
            memcpy(ds, q + ldx + 8 * (e / 32), 8);
            xh[(size_t)r * ldx + e] = (double)ds[0] * (int8_t)q[e];
            db[(size_t)r * ldx + e] = ds[0];
        }
    }
    for (int64_t m = 0; m < M; m++) {
        ds_dequantize_row(t, w + (size_t)m * rb, wrow, K);
        const bool has_min = min_part(t, w + (size_t)m * rb, K, rb, tmp, mrow);
        const int64_t go = c->group_rows > 0 ? (m / c->group_rows) * c->group_stride : 0;
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * ldx + go;
            const double *hr = xh + (size_t)r * ldx + go, *dr = db + (size_t)r * ldx + go;
            double s = 0, sh = 0, mag = 0, bnd = 0, scl = 0;
            for (int64_t k = 0; k < K; k++) {
                const double wk = wrow[k], xk = xr[k], hk = hr[k];
                const double ml = has_min ? -(double)mrow[k] : 0;
                s += wk * xk;
                sh += wk * hk;
                mag += (fabs(wk + ml) + fabs(ml)) * fabs(hk);
                scl += fabs(wk * xk);
                bnd += fabs(wk) * dr[k] / 2;
            }
            const size_t i = (size_t)r * M + m;
            R.ref[i] = s;
            R.refh[i] = sh;
            R.t_tight[i] = TIGHT * mag + 1e-30;
            R.t_bound[i] = 1.01 * bnd + TIGHT * mag + 1e-30;
            R.t_f32[i] = 1.01 * bnd + TIGHT * (mag + scl) + 1e-30;
        }
    }

    ds_cu_gemv_q8_cfg cfgs[8] = { { 0, 0 }, { 1, 1 }, { 2, 2 }, { 4, 3 }, { 4, 4 }, { 2, 4 }, { 1, 6 }, { 4, 8 } };
    const int ncfg = c->all_cfg ? 8 : 1;
    ds_cu_gemv_params p = { .w = w, .type = t, .K = K, .M = M, .row_bytes = rb, .x = NULL, .ldx = ldx,
                            .group_rows = c->group_rows, .group_stride = c->group_stride, .ldy = ldy, .n = n };
    const size_t ybytes = (size_t)n * ldy * sizeof(float);
    float *y = malloc(ybytes), *y2 = malloc(ybytes), *yf = malloc(ybytes);
    double wt = 0, wb = 0, wf = 0;

    if (c->host)
        for (int ci = 0; ci < ncfg; ci++) {
            memset(y, 0xFF, ybytes);
            p.y = y;
            p.accumulate = 0;
            int rc = ds_cu_gemv_q8_host(&p, xq, &cfgs[ci]);
            memcpy(y2, y, ybytes);
            p.y = y2;
            p.accumulate = 1;
            rc |= ds_cu_gemv_q8_host(&p, xq, &cfgs[ci]);
            CHECK(rc == 0, "host gemv_q8 rc %d", rc);
            check_y(c, "host", &cfgs[ci], y, y2, ldy, &R, &wt, &wb);
        }

    if (g_dev) {
        void *dwb = NULL, *dxq = NULL;
        float *dx = NULL, *dy = NULL;
        bool ok = cudaMalloc(&dwb, wbytes + c->wshift) == cudaSuccess &&
                  cudaMalloc(&dxq, xqb) == cudaSuccess &&
                  cudaMalloc((void **)&dx, (size_t)n * ldx * sizeof(float)) == cudaSuccess &&
                  cudaMalloc((void **)&dy, ybytes) == cudaSuccess &&
                  cudaMemcpy((uint8_t *)dwb + c->wshift, w, wbytes, cudaMemcpyHostToDevice) == cudaSuccess &&
                  cudaMemcpy(dx, x, (size_t)n * ldx * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess;
        CHECK(ok, "cuda alloc/copy");
        if (ok) {
            /* the device quantization is the host's, bit for bit */
            uint8_t *xq_d = malloc(xqb);
            int rc = ds_cu_quantize_q8(dx, ldx, ldx, n, dxq, 0);
            ok = rc == 0 && cudaMemcpy(xq_d, dxq, xqb, cudaMemcpyDeviceToHost) == cudaSuccess;
            bool same = ok;
            for (int r = 0; ok && r < n; r++)
                same &= !memcmp(xq_d + (size_t)r * xrs, xq + (size_t)r * xrs, (size_t)(ldx + ldx / 4));
            CHECK(same, "quantize_q8 %s K %lld: device bytes differ from the host's (rc %d)", ds_type_info(t)->name,
                  (long long)ldx, rc);
            free(xq_d);
            p.w = (uint8_t *)dwb + c->wshift;
            p.y = dy;
            for (int ci = 0; ci < ncfg; ci++) {
                cudaMemset(dy, 0xFF, ybytes); /* NaN poison, also the padding */
                p.accumulate = 0;
                rc = ds_cu_gemv_q8_ex(&p, dxq, &cfgs[ci]);
                ok = rc == 0 && cudaMemcpy(y, dy, ybytes, cudaMemcpyDeviceToHost) == cudaSuccess;
                p.accumulate = 1;
                rc |= ds_cu_gemv_q8_ex(&p, dxq, &cfgs[ci]);
                ok = ok && rc == 0 && cudaMemcpy(y2, dy, ybytes, cudaMemcpyDeviceToHost) == cudaSuccess;
                CHECK(ok, "gemv_q8 %s launch/copy rc %d: %s", ds_type_info(t)->name, rc,
                      cudaGetErrorString(cudaGetLastError()));
                if (ok) check_y(c, "cuda", &cfgs[ci], y, y2, ldy, &R, &wt, &wb);
            }
            /* the f32 GEMV on the same weights: within the quantization bound */
            if (ok) {
                cudaMemset(dy, 0xFF, ybytes);
                p.accumulate = 0;
                rc = ds_cu_gemv_q8(&p, dxq);
                ok = rc == 0 && cudaMemcpy(yf, dy, ybytes, cudaMemcpyDeviceToHost) == cudaSuccess;
                float *y32 = malloc(ybytes);
                ds_cu_gemv_params pf = p;
                pf.x = dx;
                ok = ok && ds_cu_gemv(&pf) == 0 && cudaMemcpy(y32, dy, ybytes, cudaMemcpyDeviceToHost) == cudaSuccess;
                CHECK(ok, "gemv / gemv_q8 launch");
                if (ok) {
                    /* |y_q8 - y_f32| <= |y_q8 - ref| + |ref - y_f32|: the bound tol
                     * plus the f32 path's share; y32 stands in for ref here */
                    double *want = malloc(nm * sizeof(double));
                    for (int r = 0; r < n; r++)
                        for (int64_t m = 0; m < M; m++) want[(size_t)r * M + m] = y32[(size_t)r * ldy + m];
                    wf = worst(yf, ldy, want, 1.0, R.t_f32, n, M);
                    CHECK(wf <= 1, "gemv_q8 vs gemv %s K %lld M %lld n %d: err/tol %.3g", ds_type_info(t)->name,
                          (long long)K, (long long)M, n, wf);
                    free(want);
                }
                free(y32);
            }
        }
        cudaFree(dwb); cudaFree(dxq); cudaFree(dx); cudaFree(dy);
    }
    static int printed[64];
    if (!printed[t]++ || M >= 1024)
        printf("gemv_q8 %-5s K %5lld M %6lld n %d group %3lld/%3lld shift %3zu: "
               "err/tol %.3f (W.xh) %.3f (W.x) %.3f (f32 gemv)%s\n",
               ds_type_info(t)->name, (long long)K, (long long)M, n, (long long)c->group_rows,
               (long long)c->group_stride, c->wshift, wt, wb, wf, g_dev ? "" : " [host emulation]");
    free(y); free(y2); free(yf);
    free(R.ref); free(R.refh); free(R.t_tight); free(R.t_bound); free(R.t_f32);
    free(wrow); free(mrow); free(tmp); free(xh); free(db);
    free(xq); free(x); free(wbuf);
}

static const ds_type types[] = { DS_TYPE_Q8_0, DS_TYPE_Q2_K, DS_TYPE_Q3_K, DS_TYPE_Q4_K, DS_TYPE_Q5_K, DS_TYPE_Q6_K };

/* Awkward shapes for every type: M 1/7/33/257, K one super-block .. 7168
 * (q8_0 from one 32-block), 1-4 x rows; raw bytes and synth weights; weight
 * starts 256-aligned, one row in (q3_K K 256: 110 bytes) and 2 bytes in
 * (the funnel path for q2_K/q4_K/q5_K too). Host emulation on all. */
static void test_awkward(void) {
    const int64_t Ms[] = { 1, 7, 33, 257 };
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const ds_type t = types[ti];
        const int64_t Kq[] = { 32, 64, 128, 256, 512, 7168 }, Kk[] = { 256, 512, 7168 };
        const int64_t *Ks = t == DS_TYPE_Q8_0 ? Kq : Kk;
        const int nK = t == DS_TYPE_Q8_0 ? 6 : 3;
        for (int ki = 0; ki < nK; ki++)
            for (int mi = 0; mi < 4; mi++)
                for (int n = 1; n <= 4; n++) {
                    const int64_t K = Ks[ki], M = Ms[mi];
                    const size_t rb = ds_row_bytes(t, K);
                    q8_case c = { .t = t, .K = K, .M = M, .n = n, .ldx = K, .raw = (mi + n) % 2 == 1, .host = true,
                                  .all_cfg = M >= 33 && n != 3, .seed = 1000 * ti + 100 * ki + 10 * mi + n };
                    c.wshift = mi == 2 ? rb : mi == 3 ? 2 : 0;
                    run_case(&c);
                }
        /* the 8-row kernel at 5-8 rows, and more rows than one pass (8 + 1,
         * 8 + 4: the launcher's pass loop, shared with the host twin) */
        const int more[] = { 5, 6, 7, 8, 9, 12 };
        for (int i = 0; i < 6; i++) {
            const int64_t K = Ks[nK - 2], M = 33;
            q8_case c = { .t = t, .K = K, .M = M, .n = more[i], .ldx = K, .raw = i % 2 == 1, .host = true,
                          .seed = 5000 + 100 * ti + more[i] };
            c.wshift = i == 2 ? ds_row_bytes(t, K) : 0;
            run_case(&c);
        }
    }
}

/* Per-head maps: k_b-like (q8_0 K 128, heads of 512 rows, x slices 192
 * apart as in q_nope|q_pe), v_b-like (K 512, heads of 128 rows, slices
 * 512 apart) for every K-quant, and head sizes of 6 and 3 rows (R must
 * drop to 2 and 1), slices 288 apart (not a multiple of 128 elements). */
static void test_grouped(void) {
    for (int n = 1; n <= 9; n += n < 6 ? 1 : 3) { /* 1-6, then 9: the 8-row kernel per head, and a second pass */
        q8_case kb = { .t = DS_TYPE_Q8_0, .K = 128, .M = 3 * 512, .n = n, .group_rows = 512, .group_stride = 192,
                       .ldx = 3 * 192, .raw = n % 2, .host = true, .all_cfg = n == 1, .seed = 7000 + n };
        run_case(&kb);
        for (size_t ti = 1; ti < sizeof types / sizeof *types; ti++) {
            q8_case vb = { .t = types[ti], .K = 512, .M = 3 * 128, .n = n, .group_rows = 128, .group_stride = 512,
                           .ldx = 3 * 512, .raw = (n + ti) % 2, .host = true, .all_cfg = n == 2,
                           .seed = 7100 + 10 * ti + n };
            run_case(&vb);
        }
    }
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const int64_t K = types[ti] == DS_TYPE_Q8_0 ? 64 : 256;
        q8_case g6 = { .t = types[ti], .K = K, .M = 5 * 6, .n = 2, .group_rows = 6, .group_stride = 288,
                       .ldx = 4 * 288 + K, .raw = true, .host = true, .all_cfg = true, .seed = 7200 + ti };
        run_case(&g6);
        q8_case g3 = g6;
        g3.M = 7 * 3, g3.group_rows = 3, g3.ldx = 6 * 288 + K, g3.n = 1, g3.wshift = ds_row_bytes(types[ti], K);
        g3.seed += 50;
        run_case(&g3);
    }
}

/* The shapes of DeepSeek V3 at full width (device only: the host emulation
 * would take minutes). */
static void test_full_width(void) {
    static const struct { ds_type t; int64_t K, M; int n; int64_t gr, gs, ldx; } sh[] = {
        { DS_TYPE_Q3_K, 7168, 2048, 1, 0, 0, 7168 },         /* expert gate/up */
        { DS_TYPE_Q3_K, 7168, 2048, 2, 0, 0, 7168 },
        { DS_TYPE_Q3_K, 7168, 18432, 1, 0, 0, 7168 },        /* dense gate/up */
        { DS_TYPE_Q3_K, 7168, 1536, 1, 0, 0, 7168 },         /* q_a */
        { DS_TYPE_Q3_K, 1536, 24576, 2, 0, 0, 1536 },        /* q_b */
        { DS_TYPE_Q4_K, 2048, 7168, 1, 0, 0, 2048 },         /* expert down */
        { DS_TYPE_Q4_K, 16384, 7168, 1, 0, 0, 16384 },       /* attn_output */
        { DS_TYPE_Q4_K, 16384, 7168, 4, 0, 0, 16384 },
        { DS_TYPE_Q4_K, 16384, 7168, 8, 0, 0, 16384 },
        { DS_TYPE_Q3_K, 7168, 18432, 8, 0, 0, 7168 },
        { DS_TYPE_Q4_K, 512, 16384, 1, 128, 512, 65536 },    /* v_b per head */
        { DS_TYPE_Q5_K, 18432, 7168, 1, 0, 0, 18432 },       /* dense down */
        { DS_TYPE_Q6_K, 7168, 129280, 1, 0, 0, 7168 },       /* output */
        { DS_TYPE_Q8_0, 128, 65536, 1, 512, 192, 24576 },    /* k_b per head */
        { DS_TYPE_Q8_0, 128, 65536, 2, 512, 192, 24576 },
        { DS_TYPE_Q8_0, 7168, 18432, 1, 0, 0, 7168 },
    };
    for (size_t i = 0; i < sizeof sh / sizeof *sh; i++) {
        q8_case c = { .t = sh[i].t, .K = sh[i].K, .M = sh[i].M, .n = sh[i].n, .group_rows = sh[i].gr,
                      .group_stride = sh[i].gs, .ldx = sh[i].ldx, .raw = false, .host = false, .seed = 9000 + i };
        run_case(&c);
    }
}

/* Expert mode (the decode MoE): each pair's rows must be bit for bit what
 * a plain one-row call on that expert's matrix and x row gives (same lane
 * code, same per-row sums whatever R and stages the plan picks), pairs of
 * id -1 must leave their y rows alone, and the second weight set must land
 * in y2. Experts eb_pad bytes apart beyond M * rb move later experts off
 * the 16-byte alignment (the launcher must then drop to 2-byte loads). */
typedef struct ex_case {
    ds_type t;
    int64_t K, M;
    int n_exp, x_rows, k; /* pairs = x_rows * k (gate/up: x_div = k) or x_div 1 */
    int x_div;
    size_t eb_pad;
    bool two; /* a second weight set */
    bool host, dev;
} ex_case;

/* y [pairs][ldy] from one call: host emulation or device */
static bool run_experts(const ex_case *c, bool host, const uint8_t *w, const uint8_t *w2, size_t eb, size_t rb,
                        const uint8_t *xq, int64_t ldx, const int32_t *ids, int pairs, float *y, float *y2,
                        int64_t ldy) {
    ds_cu_gemv_params p = { .w = w, .type = c->t, .K = c->K, .M = c->M, .row_bytes = rb, .ldx = ldx, .y = y,
                            .ldy = ldy, .n = pairs };
    ds_cu_q8_experts ex = { .ids = ids, .n_pairs = pairs, .x_div = c->x_div, .expert_bytes = eb, .w2 = w2,
                            .y2 = y2 };
    return (host ? ds_cu_gemv_q8_experts_host(&p, xq, &ex, NULL) : ds_cu_gemv_q8_experts(&p, xq, &ex, NULL)) == 0;
}

/* the same pair by a plain one-row call */
static bool run_plain(const ex_case *c, bool host, const uint8_t *w, size_t rb, const uint8_t *xq, int64_t ldx,
                      float *y) {
    ds_cu_gemv_params p = { .w = w, .type = c->t, .K = c->K, .M = c->M, .row_bytes = rb, .ldx = ldx, .y = y,
                            .ldy = c->M, .n = 1 };
    return (host ? ds_cu_gemv_q8_host(&p, xq, NULL) : ds_cu_gemv_q8(&p, xq)) == 0;
}

static void check_experts(const ex_case *c, uint64_t seed) {
    const ds_type t = c->t;
    const int64_t K = c->K, M = c->M, ldy = M + 1;
    const size_t rb = ds_row_bytes(t, K), eb = (size_t)M * rb + c->eb_pad, wbytes = eb * c->n_exp;
    const int pairs = c->x_rows * c->k, nx = (pairs + c->x_div - 1) / c->x_div;
    uint64_t st = seed;
    uint8_t *w = aligned_alloc(256, (2 * wbytes + 255) / 256 * 256); /* the second set (c->two) after the first */
    for (size_t i = 0; i < 2 * wbytes; i++) w[i] = (uint8_t)ds_test_rand(&st);
    for (int set = 0; set < (c->two ? 2 : 1); set++)
        for (int e = 0; e < c->n_exp; e++)
            for (int64_t m = 0; m < M; m++) fix_f16(t, w + set * wbytes + e * eb + (size_t)m * rb, K, &st);
    float *x = malloc((size_t)nx * K * sizeof(float));
    for (int64_t i = 0; i < (int64_t)nx * K; i++) x[i] = ds_test_randf(&st) * (i % 96 < 8 ? 4.f : 1.f);
    const size_t xrs = ds_cu_q8_row_bytes(K), xqb = ds_cu_q8_bytes(K, nx);
    uint8_t *xq = aligned_alloc(16, (xqb + 15) / 16 * 16);
    ds_cu_quantize_q8_host(x, K, K, nx, xq);
    int32_t *ids = malloc((size_t)pairs * sizeof *ids);
    for (int p = 0; p < pairs; p++) ids[p] = p % 5 == 1 ? -1 : (int32_t)(ds_test_rand(&st) % c->n_exp);
    const size_t ybytes = (size_t)pairs * ldy * sizeof(float);
    float *y = malloc(ybytes), *y2 = malloc(ybytes), *want = malloc((size_t)M * sizeof(float));
    const char *tn = ds_type_info(t)->name;
    for (int dev = 0; dev <= 1; dev++) {
        if (dev ? !c->dev : !c->host) continue;
        const uint8_t *W = w, *XQ = xq;
        const int32_t *IDS = ids;
        float *Y = y, *Y2 = y2, *P = want;
        void *dw = NULL, *dxq = NULL, *dids = NULL, *dy = NULL, *dy2 = NULL, *dp = NULL;
        if (dev) {
            bool ok = cudaMalloc(&dw, 2 * wbytes) == cudaSuccess && cudaMalloc(&dxq, xqb) == cudaSuccess &&
                      cudaMalloc(&dids, (size_t)pairs * 4) == cudaSuccess && cudaMalloc(&dy, ybytes) == cudaSuccess &&
                      cudaMalloc(&dy2, ybytes) == cudaSuccess && cudaMalloc(&dp, (size_t)M * 4) == cudaSuccess &&
                      cudaMemcpy(dw, w, 2 * wbytes, cudaMemcpyHostToDevice) == cudaSuccess &&
                      cudaMemcpy(dxq, xq, xqb, cudaMemcpyHostToDevice) == cudaSuccess &&
                      cudaMemcpy(dids, ids, (size_t)pairs * 4, cudaMemcpyHostToDevice) == cudaSuccess;
            CHECK(ok, "experts: cuda alloc/copy");
            if (!ok) break;
            W = dw, XQ = dxq, IDS = dids, Y = dy, Y2 = dy2, P = dp;
            cudaMemset(dy, 0xFF, ybytes);
            cudaMemset(dy2, 0xFF, ybytes);
        } else {
            memset(y, 0xFF, ybytes);
            memset(y2, 0xFF, ybytes);
        }
        bool ok = run_experts(c, !dev, W, c->two ? W + wbytes : NULL, eb, rb, XQ, K, IDS, pairs, Y, c->two ? Y2 : NULL,
                              ldy);
        if (dev) ok = ok && cudaMemcpy(y, dy, ybytes, cudaMemcpyDeviceToHost) == cudaSuccess &&
                      cudaMemcpy(y2, dy2, ybytes, cudaMemcpyDeviceToHost) == cudaSuccess;
        CHECK(ok, "experts %s: the call failed", tn);
        int bad = 0, untouched = 0, unused = 0;
        for (int p = 0; ok && p < pairs; p++)
            for (int set = 0; set < (c->two ? 2 : 1); set++) {
                const float *yr = (set ? y2 : y) + (size_t)p * ldy;
                if (ids[p] < 0) {
                    unused++;
                    for (int64_t m = 0; m < ldy; m++) {
                        uint32_t u;
                        memcpy(&u, yr + m, 4);
                        untouched += u == 0xFFFFFFFFu;
                    }
                    continue;
                }
                const uint8_t *we = W + set * wbytes + (size_t)ids[p] * eb;
                ok = run_plain(c, !dev, we, rb, XQ + (size_t)(p / c->x_div) * xrs, K, P);
                if (dev) ok = ok && cudaMemcpy(want, dp, (size_t)M * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
                for (int64_t m = 0; m < M; m++) bad += !ok || memcmp(&yr[m], &want[m], 4) != 0;
                uint32_t u;
                memcpy(&u, yr + M, 4);
                bad += u != 0xFFFFFFFFu; /* the row's padding */
            }
        CHECK(ok && bad == 0 && untouched == unused * (int)ldy, /* unused counts (pair, set)s */
              "experts %s K %lld M %lld pairs %d x_div %d pad %zu two %d (%s): %d outputs differ from the plain "
              "calls, %d of the unused pairs' values touched",
              tn, (long long)K, (long long)M, pairs, c->x_div, c->eb_pad, c->two, dev ? "cuda" : "host", bad,
              unused * (int)ldy - untouched);
        if (dev) {
            cudaFree(dw); cudaFree(dxq); cudaFree(dids); cudaFree(dy); cudaFree(dy2); cudaFree(dp);
        }
    }
    free(y); free(y2); free(want); free(ids); free(xq); free(x); free(w);
}

static void test_experts(bool dev) {
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const ds_type t = types[ti];
        const int64_t K = t == DS_TYPE_Q8_0 ? 96 : 512;
        /* gate+up-like: 3 tokens x k 3, two sets; down-like: 7 pairs of their own x */
        const ex_case gu = { .t = t, .K = K, .M = 33, .n_exp = 5, .x_rows = 3, .k = 3, .x_div = 3,
                             .eb_pad = ti % 2 ? 6 : 0, .two = true, .host = !dev, .dev = dev };
        check_experts(&gu, 300 + ti);
        const ex_case dn = { .t = t, .K = K, .M = 70, .n_exp = 4, .x_rows = 7, .k = 1, .x_div = 1,
                             .eb_pad = ti % 2 ? 0 : 2, .two = false, .host = !dev, .dev = dev };
        check_experts(&dn, 400 + ti);
    }
    if (dev && !getenv("DS_CUDA_TEST_QUICK")) { /* V3's expert shapes, 8 tokens x 8 experts */
        const ex_case gu = { .t = DS_TYPE_Q3_K, .K = 7168, .M = 2048, .n_exp = 12, .x_rows = 8, .k = 8, .x_div = 8,
                             .two = true, .dev = true };
        check_experts(&gu, 500);
        const ex_case dn = { .t = DS_TYPE_Q4_K, .K = 2048, .M = 7168, .n_exp = 12, .x_rows = 64, .k = 1, .x_div = 1,
                             .dev = true };
        check_experts(&dn, 501);
    }
}

/* silu(g) * u quantized on the device: each value within d/2 of its block's
 * scale of the exact product (the quantization's own bound), and the
 * scales those of the exact products' absmax (expf differs in the last bits) */
/* A row's sum does not depend on how many x rows share the call, nor on
 * the rows a lane group takes (R): every y row of a 3-8-row call, under
 * each rows choice, equals the 1-row call on that x row bit for bit. The
 * server relies on it (a request's text must not depend on what else is in
 * the batch), and the 3-8-row order (x rows outside, session 13) must keep
 * it. Host emulation always, the device when there is one. */
static void test_row_counts(bool dev) {
    const int64_t K = 768, M = 70, ldy = M;
    const int ns[] = { 3, 5, 8 };
    const ds_cu_gemv_q8_cfg cfgs[] = { { 0, 0 }, { 1, 2 }, { 2, 3 }, { 4, 4 } };
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const ds_type t = types[ti];
        const size_t rb = ds_row_bytes(t, K), wbytes = (size_t)M * rb;
        uint64_t st = 977 + ti;
        uint8_t *w = aligned_alloc(256, (wbytes + 255) / 256 * 256);
        for (size_t i = 0; i < wbytes; i++) w[i] = (uint8_t)ds_test_rand(&st);
        for (int64_t m = 0; m < M; m++) fix_f16(t, w + (size_t)m * rb, K, &st);
        float x[8 * 768];
        for (int i = 0; i < 8 * 768; i++) x[i] = ds_test_randf(&st);
        const size_t xqb = ds_cu_q8_bytes(K, 8), xrs = ds_cu_q8_row_bytes(K);
        uint8_t *xq = aligned_alloc(16, (xqb + 15) / 16 * 16);
        ds_cu_quantize_q8_host(x, K, K, 8, xq);
        float one[8 * 70], many[8 * 70];
        void *dw = NULL, *dxq = NULL;
        float *dy = NULL;
        bool ok = !dev || (cudaMalloc(&dw, wbytes) == cudaSuccess && cudaMalloc(&dxq, xqb) == cudaSuccess &&
                           cudaMalloc((void **)&dy, sizeof many) == cudaSuccess &&
                           cudaMemcpy(dw, w, wbytes, cudaMemcpyHostToDevice) == cudaSuccess &&
                           cudaMemcpy(dxq, xq, xqb, cudaMemcpyHostToDevice) == cudaSuccess);
        ds_cu_gemv_params p = { .w = dev ? dw : w, .type = t, .K = K, .M = M, .row_bytes = rb, .ldx = K,
                                .ldy = ldy, .n = 1 };
        /* one x row at a time, the launcher's choices */
        for (int r = 0; ok && r < 8; r++) {
            p.y = dev ? dy : one + r * ldy;
            const uint8_t *xr = (const uint8_t *)(dev ? dxq : xq) + (size_t)r * xrs;
            ok = (dev ? ds_cu_gemv_q8(&p, xr) : ds_cu_gemv_q8_host(&p, xr, NULL)) == 0 &&
                 (!dev || cudaMemcpy(one + r * ldy, dy, (size_t)M * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
        }
        int bad = 0;
        for (size_t ni = 0; ok && ni < sizeof ns / sizeof *ns; ni++)
            for (size_t ci = 0; ok && ci < sizeof cfgs / sizeof *cfgs; ci++) {
                p.n = ns[ni];
                p.y = dev ? dy : many;
                ok = (dev ? ds_cu_gemv_q8_ex(&p, dxq, &cfgs[ci]) : ds_cu_gemv_q8_host(&p, xq, &cfgs[ci])) == 0 &&
                     (!dev || cudaMemcpy(many, dy, (size_t)ns[ni] * M * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
                for (int i = 0; ok && i < ns[ni] * (int)M; i++)
                    if (memcmp(&many[i], &one[i], 4)) {
                        if (!bad++)
                            fprintf(stderr, "  %s n %d cfg %d/%d: row %d out %d: %.9g, 1-row call %.9g\n",
                                    ds_type_info(t)->name, ns[ni], cfgs[ci].rows, cfgs[ci].stages, i / (int)M,
                                    i % (int)M, many[i], one[i]);
                    }
            }
        CHECK(ok && bad == 0, "%s (%s): 3/5/8-row calls give the 1-row call's bits (%d outputs differ)",
              ds_type_info(t)->name, dev ? "cuda" : "host", bad);
        cudaFree(dw);
        cudaFree(dxq);
        cudaFree(dy);
        free(w);
        free(xq);
    }
}

static void test_silu_quantize(void) {
    const int64_t K = 2048;
    const int n = 5;
    uint64_t st = 77;
    float *g = malloc((size_t)n * K * sizeof(float)), *u = malloc((size_t)n * K * sizeof(float));
    for (int64_t i = 0; i < n * K; i++) {
        g[i] = 6.f * ds_test_randf(&st);
        u[i] = ds_test_randf(&st) * (i % 64 < 4 ? 10.f : 1.f);
    }
    const size_t xqb = ds_cu_q8_bytes(K, n), xrs = ds_cu_q8_row_bytes(K);
    uint8_t *h = malloc(xqb);
    float *dg = NULL, *du = NULL;
    void *dq = NULL;
    bool ok = cudaMalloc((void **)&dg, (size_t)n * K * 4) == cudaSuccess &&
              cudaMalloc((void **)&du, (size_t)n * K * 4) == cudaSuccess && cudaMalloc(&dq, xqb) == cudaSuccess &&
              cudaMemcpy(dg, g, (size_t)n * K * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemcpy(du, u, (size_t)n * K * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
              ds_cu_silu_quantize_q8(dg, du, K, n, dq, 0) == 0 &&
              cudaMemcpy(h, dq, xqb, cudaMemcpyDeviceToHost) == cudaSuccess;
    CHECK(ok, "silu_quantize_q8 launch/copy");
    double worst_e = 0, worst_d = 0;
    for (int r = 0; ok && r < n; r++)
        for (int64_t b = 0; b < K / 32; b++) {
            float ds[2];
            memcpy(ds, h + r * xrs + K + 8 * b, 8);
            double amax = 0, sum = 0;
            for (int k = 0; k < 32; k++) {
                const size_t i = (size_t)r * K + 32 * b + k;
                const double a = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
                const int8_t q = (int8_t)h[r * xrs + 32 * b + k];
                sum += q;
                if (fabs(a) > amax) amax = fabs(a);
                const double e = fabs(a - (double)ds[0] * q) / ds[0];
                if (e > worst_e) worst_e = e;
            }
            const double dd = fabs(ds[0] - amax / 127) / (amax / 127);
            if (dd > worst_d) worst_d = dd;
            CHECK(ds[1] == ds[0] * (float)sum, "silu_quantize_q8: block sum %g, want d * sum(q) %g", ds[1],
                  ds[0] * (float)sum);
        }
    /* 0.5 d from rounding, plus the f32 product's error (a few ulp of amax, ~1e-4 d) */
    CHECK(worst_e <= 0.5 + 1e-3 && worst_d <= 1e-5, "silu_quantize_q8: error %.6f d, scale off by %.2e", worst_e,
          worst_d);
    printf("silu_quantize_q8 K %lld n %d: worst error %.4f d, scale rel %.2e\n", (long long)K, n, worst_e, worst_d);
    cudaFree(dg); cudaFree(du); cudaFree(dq);
    free(g); free(u); free(h);
}

/* ds_cu_rmsnorm_q8 against its two-launch equivalent, ds_cu_rmsnorm then
 * ds_cu_quantize_q8: the floats and the q8 rows must be equal bit for bit
 * (same sums in the same order, same rounding), at dims that do and do not
 * fill the last 256-thread pass, with x rows wider than dim, and in place
 * (y == x, as for q_a_norm). */
static void test_rmsnorm_quantize(void) {
    const int dims[] = { 32, 96, 1056, 1536, 7168, 8192 };
    const int n = 3;
    uint64_t st = 91;
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
        for (int inplace = 0; inplace < 2; inplace++) {
            const int dim = dims[di];
            const int64_t ldx = inplace ? dim : dim + 64;
            float *x = malloc((size_t)n * ldx * sizeof(float)), *w = malloc((size_t)dim * sizeof(float));
            for (int64_t i = 0; i < n * ldx; i++) x[i] = ds_test_randf(&st) * (i % 97 == 0 ? 20.f : 1.f);
            for (int i = 0; i < dim; i++) w[i] = 0.5f + ds_test_randf(&st);
            const size_t xqb = ds_cu_q8_bytes(dim, n), yb = (size_t)n * ldx * sizeof(float);
            uint8_t *q1 = malloc(xqb), *q2 = malloc(xqb);
            float *y1 = malloc(yb), *y2 = malloc(yb);
            float *dx = NULL, *dw = NULL, *dy = NULL;
            void *dq = NULL;
            /* fused: y into dy (or over dx in place); two-launch: y into dy, then quantized */
            bool ok = cudaMalloc((void **)&dx, yb) == cudaSuccess && cudaMalloc((void **)&dy, yb) == cudaSuccess &&
                      cudaMalloc((void **)&dw, (size_t)dim * 4) == cudaSuccess && cudaMalloc(&dq, xqb) == cudaSuccess &&
                      cudaMemcpy(dw, w, (size_t)dim * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
                      cudaMemcpy(dx, x, yb, cudaMemcpyHostToDevice) == cudaSuccess &&
                      cudaMemset(dq, 0xAB, xqb) == cudaSuccess; /* the rows' padding bytes: the same in both runs */
            float *fy = inplace ? dx : dy;
            ok = ok && ds_cu_rmsnorm_q8(dx, ldx, dw, dim, 1e-6f, n, fy, ldx, dq, 0) == 0 &&
                 cudaMemcpy(y1, fy, yb, cudaMemcpyDeviceToHost) == cudaSuccess &&
                 cudaMemcpy(q1, dq, xqb, cudaMemcpyDeviceToHost) == cudaSuccess &&
                 cudaMemcpy(dx, x, yb, cudaMemcpyHostToDevice) == cudaSuccess &&
                 cudaMemset(dq, 0xAB, xqb) == cudaSuccess &&
                 ds_cu_rmsnorm(dx, ldx, dw, dim, 1e-6f, n, fy, ldx, 0) == 0 &&
                 ds_cu_quantize_q8(fy, ldx, dim, n, dq, 0) == 0 &&
                 cudaMemcpy(y2, fy, yb, cudaMemcpyDeviceToHost) == cudaSuccess &&
                 cudaMemcpy(q2, dq, xqb, cudaMemcpyDeviceToHost) == cudaSuccess;
            CHECK(ok, "rmsnorm_q8 dim %d launch/copy", dim);
            bool same_y = true;
            for (int r = 0; ok && r < n; r++)
                same_y = same_y && memcmp(y1 + (size_t)r * ldx, y2 + (size_t)r * ldx, (size_t)dim * 4) == 0;
            CHECK(ok && same_y, "rmsnorm_q8 dim %d%s: y differs from ds_cu_rmsnorm's", dim, inplace ? " in place" : "");
            CHECK(ok && memcmp(q1, q2, xqb) == 0, "rmsnorm_q8 dim %d%s: q8 rows differ from ds_cu_quantize_q8's", dim,
                  inplace ? " in place" : "");
            cudaFree(dx); cudaFree(dy); cudaFree(dw); cudaFree(dq);
            free(x); free(w); free(q1); free(q2); free(y1); free(y2);
        }
    CHECK(ds_cu_rmsnorm_q8(NULL, 48, NULL, 48, 1e-6f, 1, NULL, 48, NULL, 0) != 0, "rmsnorm_q8 refuses dim 48");
    CHECK(ds_cu_rmsnorm_q8(NULL, 8224, NULL, 8224, 1e-6f, 1, NULL, 8224, NULL, 0) != 0, "rmsnorm_q8 refuses dim 8224");
    printf("rmsnorm_q8: bit-equal to rmsnorm + quantize_q8 at %zu dims, in place and not\n",
           sizeof dims / sizeof *dims);
}

/* ds_cu_quantize_q8 alone: x rows wider than K (the float4 path) and x one
 * float off 16-byte alignment (the scalar path), K not a multiple of 128 */
static void test_quantize(void) {
    const int64_t K = 96, ldx = 100;
    const int n = 3;
    uint64_t st = 5;
    float *x = malloc(((size_t)n * ldx + 4) * sizeof(float));
    for (size_t i = 0; i < (size_t)n * ldx + 4; i++) x[i] = ds_test_randf(&st) * (i % 40 < 8 ? 100.f : 1.f);
    const size_t xqb = ds_cu_q8_bytes(K, n), xrs = ds_cu_q8_row_bytes(K);
    uint8_t *h = malloc(xqb), *d = malloc(xqb);
    float *dx = NULL;
    void *dq = NULL;
    bool ok = cudaMalloc((void **)&dx, ((size_t)n * ldx + 4) * sizeof(float)) == cudaSuccess &&
              cudaMalloc(&dq, xqb) == cudaSuccess &&
              cudaMemcpy(dx, x, ((size_t)n * ldx + 4) * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK(ok, "cuda alloc");
    for (int off = 0; ok && off <= 1; off++) {
        ds_cu_quantize_q8_host(x + off, ldx, K, n, h);
        ok = ds_cu_quantize_q8(dx + off, ldx, K, n, dq, 0) == 0 &&
             cudaMemcpy(d, dq, xqb, cudaMemcpyDeviceToHost) == cudaSuccess;
        bool same = ok;
        for (int r = 0; r < n; r++) same &= !memcmp(h + r * xrs, d + r * xrs, (size_t)(K + K / 4));
        CHECK(same, "quantize_q8 K %lld ldx %lld x offset %d: device differs from host", (long long)K, (long long)ldx,
              off);
        double worst_e = 0;
        for (int r = 0; r < n; r++)
            for (int64_t e = 0; e < K; e++) {
                float ds[2];
                memcpy(ds, h + r * xrs + K + 8 * (e / 32), 8);
                const double err = fabs((double)x[off + r * ldx + e] - (double)ds[0] * (int8_t)h[r * xrs + e]);
                if (ds[0] > 0 && err / ds[0] > worst_e) worst_e = err / ds[0];
            }
        /* the stated error: |x - d q| <= d / 2, plus the rounding of x * 127/absmax (~3e-5 d) */
        CHECK(worst_e <= 0.5 + 1e-4, "quantize_q8 error %.6f d", worst_e);
    }
    cudaFree(dx); cudaFree(dq);
    free(x); free(h); free(d);
}

/* What the API refuses (no GPU needed: the host twin validates the same way) */
static void test_args(void) {
    CHECK(ds_cu_gemv_q8_supported(DS_TYPE_Q3_K, 7168, 0) && ds_cu_gemv_q8_supported(DS_TYPE_Q8_0, 96, 512),
          "supported shapes");
    CHECK(!ds_cu_gemv_q8_supported(DS_TYPE_Q4_K, 96, 0) && !ds_cu_gemv_q8_supported(DS_TYPE_F32, 256, 0) &&
              !ds_cu_gemv_q8_supported(DS_TYPE_IQ4_XS, 256, 0),
          "unsupported shapes/types");
    static _Alignas(16) uint8_t w[2 * 144], xq[1024];
    float y[4];
    const ds_cu_gemv_params ok = { .w = w, .type = DS_TYPE_Q4_K, .K = 256, .M = 2, .row_bytes = 144, .ldx = 256,
                                   .y = y, .ldy = 2, .n = 1 };
    ds_cu_gemv_params p = ok;
    CHECK(ds_cu_gemv_q8_host(&p, xq, NULL) == 0, "a valid call");
    p.ldx = 224; /* shorter than K */
    CHECK(ds_cu_gemv_q8_host(&p, xq, NULL) != 0, "ldx < K refused");
    p = ok, p.group_rows = 1, p.group_stride = 32, p.ldx = 256; /* second head's slice ends at 288 > ldx */
    CHECK(ds_cu_gemv_q8_host(&p, xq, NULL) != 0, "head slice past ldx refused");
    p = ok, p.row_bytes = 142;
    CHECK(ds_cu_gemv_q8_host(&p, xq, NULL) != 0, "short rows refused");
    p = ok;
    CHECK(ds_cu_gemv_q8_host(&p, xq + 8, NULL) != 0, "misaligned xq refused");
    p = ok, p.w = w + 1;
    CHECK(ds_cu_gemv_q8_host(&p, xq, NULL) != 0, "odd weight address refused");
}

int main(void) {
    g_dev = ds_cuda_device_count() > 0;
    test_args();
    test_awkward();
    test_grouped();
    test_experts(false);
    test_row_counts(false);
    if (!g_dev) {
        if (ds_test_failed) return ds_test_finish("test_cuda_gemv_q8");
        printf("skipped: no CUDA device (the host emulation of the kernels passed %d checks)\n", ds_test_passed);
        return 77;
    }
    test_quantize();
    test_silu_quantize();
    test_rmsnorm_quantize();
    test_experts(true);
    test_row_counts(true);
    if (!getenv("DS_CUDA_TEST_QUICK")) test_full_width();
    return ds_test_finish("test_cuda_gemv_q8");
}
