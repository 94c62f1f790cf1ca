/* cuda_bench.c: a small pp/tg timer for the GPU machine (scripts/device/
 * gpu-check.sh builds it against the build's library): measures the card's
 * copy bandwidth, then pp<N> and tg<N> on one model and prints tok/s with
 * bytes per decode step, the bandwidth roofline and the fraction reached.
 * With S streams (6th argument) each tg step decodes S sequences at once
 * (S rows, one per sequence, as a server's parallel slots do) and tok/s
 * counts all of them; tg times the decode calls only (CUDA_BENCH_MODES below
 * picks how tokens are fed). A 7th and 8th argument set the context size and the
 * number of sequences, as a server's -c and -np do (the decode may depend on
 * the capacity, not only on the tokens in use). Not `dsinfer bench`
 * (src/cli/cmd_bench.c); usage:
 * cuda_bench MODEL [device] [pp] [tg] [reps] [streams] [n_ctx] [n_seq]. */
#include "backend/cuda/cuda_backend.h"
#include "engine/engine.h"

#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* device-to-device copy of 2 GiB, bytes read + written per second (best of 5) */
static double copy_bandwidth(void) {
    const size_t bytes = (size_t)2 << 30;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) || cudaMalloc(&b, bytes)) return 0;
    cudaMemset(a, 1, bytes);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    double best = 0;
    for (int i = 0; i < 6; i++) {
        cudaEventRecord(e0, 0);
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i > 0 && 2.0 * bytes / (ms * 1e-3) > best) best = 2.0 * bytes / (ms * 1e-3);
    }
    cudaFree(a);
    cudaFree(b);
    return best;
}

static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cuda_bench MODEL [device=cuda] [pp=512] [tg=128] [reps=3] [streams=1] [n_ctx] [n_seq]\n");
        return 2;
    }
    const char *dev = argc > 2 ? argv[2] : "cuda";
    const int pp = argc > 3 ? atoi(argv[3]) : 512, tg = argc > 4 ? atoi(argv[4]) : 128;
    const int reps = argc > 5 ? atoi(argv[5]) : 3;
    int S = argc > 6 ? atoi(argv[6]) : 1;
    if (S < 1 || S > 64) S = 1;
    ds_error err = { 0 };
    ds_model *m;
    ds_model_params mp = { .path = argv[1] };
    double t0 = ds_time_s();
    if (ds_model_load(&mp, &m, &err)) { fprintf(stderr, "load: %s\n", err.msg); return 1; }
    ds_ctx_params cp;
    ds_ctx_params_default(&cp);
    cp.device = dev;
    /* CUDA_BENCH_DEPTH=D: each stream's tg starts at position D, after an
     * untimed prefill of D tokens in calls of pp (as a server's slot after its prompt);
     * CUDA_BENCH_SEQ0=K: the streams are sequences K..K+S-1, not 0.. */
    const int depth = getenv("CUDA_BENCH_DEPTH") ? atoi(getenv("CUDA_BENCH_DEPTH")) : 0;
    const int seq0 = getenv("CUDA_BENCH_SEQ0") ? atoi(getenv("CUDA_BENCH_SEQ0")) : 0;
    if (depth < 0 || (depth > 0 && pp < 1) || seq0 < 0) {
        fprintf(stderr, "CUDA_BENCH_DEPTH must be >= 0 (with pp >= 1: it is prefilled pp tokens a call), CUDA_BENCH_SEQ0 >= 0\n");
        return 2;
    }
    const int64_t per_seq = (pp > depth ? pp : depth) + tg + 64;
    cp.n_ctx = (int64_t)(S + (seq0 > 0)) * per_seq; /* sequence 0 keeps the pp test's rows */
    cp.n_seq = S + seq0;
    if (argc > 7 && atoll(argv[7]) > cp.n_ctx) cp.n_ctx = atoll(argv[7]);
    if (argc > 8 && atoi(argv[8]) > cp.n_seq) cp.n_seq = atoi(argv[8]);
    cp.n_ubatch = pp;
    /* CUDA_BENCH_UB=U: the micro-batch (-ub) the context is built for, as
     * dsinfer bench and serve use 512 (the backend's scratch rows) */
    if (getenv("CUDA_BENCH_UB") && atoi(getenv("CUDA_BENCH_UB")) > 0) cp.n_ubatch = atoi(getenv("CUDA_BENCH_UB"));
    ds_ctx *c;
    if (ds_ctx_create(m, &cp, &c, &err)) { fprintf(stderr, "ctx: %s\n", err.msg); return 1; }
    printf("loaded %s on %s in %.1f s\n", argv[1], dev, ds_time_s() - t0);
    const double bw = copy_bandwidth();
    const size_t V = (size_t)m->hp.n_vocab;
    int32_t *tok = malloc(sizeof(int32_t) * (pp > tg ? pp : tg)), *pos = malloc(sizeof(int32_t) * pp);
    int32_t *dpos = malloc(sizeof(int32_t) * pp), *dsq = malloc(sizeof(int32_t) * pp);
    int32_t *seq = calloc((size_t)pp, sizeof(int32_t));
    bool *want = calloc((size_t)pp, sizeof(bool));
    float *logits = malloc(64 * V * sizeof(float));
    uint64_t s = 12345;
    for (int i = 0; i < (pp > tg ? pp : tg); i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        tok[i] = (int32_t)(s % (uint64_t)V);
    }
    for (int i = 0; i < pp; i++) pos[i] = i;
    want[pp - 1] = true;
    const double bytes = (double)ds_model_decode_bytes(m);
    const double roof = bw > 0 ? bw / bytes : 0;
    printf("device %s | copy bandwidth %.0f GB/s | decode reads %.3f GB/step | roofline %.0f tok/s\n", dev, bw / 1e9,
           bytes / 1e9, roof);
    /* CUDA_BENCH_MODES: a comma list of how tg feeds tokens and takes logits,
     * each timed in turn on the same loaded model:
     *   random   the next tokens are random ids (default)
     *   greedy   each stream's next token is the argmax of its logits, as a
     *            server at temperature 0 feeds them (real routing)
     *   nologits no logits are copied back (what the copy costs)
     *   ids      greedy on the GPU's argmax ids (ds_batch.best), no logits
     *            copied back: what the server does at temperature 0
     *   pinned   random tokens, logits into page-locked host memory */
    const char *modes = getenv("CUDA_BENCH_MODES") ? getenv("CUDA_BENCH_MODES") : "random";
    float *pinned = NULL;
    const bool nvtx = getenv("CUDA_BENCH_NVTX") != NULL, fresh = getenv("CUDA_BENCH_FRESH") != NULL;
    for (const char *mo = modes; *mo;) {
        const size_t ml = strcspn(mo, ",");
        char mode[32];
        snprintf(mode, sizeof mode, "%.*s", (int)ml, mo);
        mo += ml + (mo[ml] == ',');
        const bool greedy = !strcmp(mode, "greedy"), ids = !strcmp(mode, "ids");
        const bool nolog = !strcmp(mode, "nologits") || ids;
        float *out = logits;
        if (!strcmp(mode, "pinned")) {
            if (!pinned && cudaMallocHost((void **)&pinned, 64 * V * sizeof(float)) != cudaSuccess) pinned = NULL;
            if (!pinned) { fprintf(stderr, "pinned: cudaMallocHost failed\n"); continue; }
            out = pinned;
        } else if (!greedy && !nolog && !ids && strcmp(mode, "random")) {
            fprintf(stderr, "unknown mode %s\n", mode);
            continue;
        }
        double tpp[16], ttg[16];
        /* rep 0 is the warm-up (graph capture, first-touch) and is not counted */
        for (int r = 0; r <= reps && r < 16; r++) {
            ds_ctx_seq_truncate(c, 0, 0);
            /* CUDA_BENCH_FRESH=1: new random prompt tokens each rep (as dsinfer bench draws them) */
            if (fresh)
                for (int i = 0; i < pp; i++) {
                    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                    tok[i] = (int32_t)(s % (uint64_t)V);
                }
            ds_batch b = { pp, tok, pos, seq, want, NULL };
            /* CUDA_BENCH_NVTX=1: the last rep's prefill in an NVTX range "prefill" */
            const bool pmark = nvtx && r == reps;
            if (pmark) nvtxRangePushA("prefill");
            double a = ds_time_s();
            if (ds_ctx_decode(c, &b, logits, &err)) { fprintf(stderr, "pp: %s\n", err.msg); return 1; }
            double t = ds_time_s() - a;
            if (pmark) nvtxRangePop();
            for (int q = 0; q < S; q++) {
                ds_ctx_seq_truncate(c, seq0 + q, 0);
                for (int i0 = 0; i0 < depth; i0 += pp) { /* the depth in prefills of up to pp tokens */
                    const int nd = depth - i0 < pp ? depth - i0 : pp;
                    for (int i = 0; i < nd; i++) dpos[i] = i0 + i, dsq[i] = seq0 + q;
                    ds_batch bd = { nd, tok, dpos, dsq, NULL, NULL };
                    if (ds_ctx_decode(c, &bd, NULL, &err)) { fprintf(stderr, "depth: %s\n", err.msg); return 1; }
                }
            }
            double u = 0;
            int32_t tk[64];
            for (int q = 0; q < S; q++) tk[q] = tok[(7 * q) % tg];
            for (int i = 0; i < tg; i++) {
                int32_t p[64], sq[64];
                for (int q = 0; q < S; q++) p[q] = depth + i, sq[q] = seq0 + q;
                int32_t bestv[64];
                ds_batch b1 = { S, tk, p, sq, NULL, ids ? bestv : NULL };
                /* CUDA_BENCH_NVTX=1: the middle step of the last rep in an NVTX range
                 * "step", so ncu --nvtx --nvtx-include step/ profiles one decode step */
                const bool mark = nvtx && r == reps && i == tg / 2;
                if (mark) nvtxRangePushA("step");
                a = ds_time_s();
                if (ds_ctx_decode(c, &b1, nolog ? NULL : out, &err)) { fprintf(stderr, "tg: %s\n", err.msg); return 1; }
                u += ds_time_s() - a; /* the decode calls only: the greedy pick below is the caller's */
                if (mark) nvtxRangePop();
                for (int q = 0; q < S; q++)
                    tk[q] = ids      ? bestv[q]
                            : greedy ? ds_argmax_f32(out + (size_t)q * V, V)
                                     : tok[(i + 1 + 7 * q) % tg];
            }
            if (r > 0) { tpp[r - 1] = pp / t; ttg[r - 1] = (double)S * tg / u; }
        }
        double pm, psd, tm, tsd;
        mean_sd(tpp, reps, &pm, &psd);
        mean_sd(ttg, reps, &tm, &tsd);
        if (S > 1)
            printf("pp%d %.1f +- %.1f tok/s | tg%d x %d streams %.1f +- %.1f tok/s (%.2f ms/step of %d rows) [%s]\n", pp,
                   pm, psd, tg, S, tm, tsd, 1e3 * S / tm, S, mode);
        else
            printf("pp%d %.1f +- %.1f tok/s | tg%d %.1f +- %.1f tok/s (%.2f ms/step) | tg / roofline %.1f%% [%s]\n", pp,
                   pm, psd, tg, tm, tsd, 1e3 / tm, roof > 0 ? 100.0 * tm / roof : 0, mode);
    }
    if (pinned) cudaFreeHost(pinned);
    ds_ctx_free(c);
    ds_model_free(m);
    free(tok); free(pos); free(dpos); free(dsq); free(seq); free(want); free(logits);
    return 0;
}
