/* mla_tc.cu: the absorbed MLA attention core on tensor cores for f16/bf16
 * latent caches (the contract of ds_cu_mla in attn.cu, which stays the
 * oracle and the f32-cache path), and its host side: the config, the split
 * count and the combine. Not RoPE, not the cache store. On compute
 * capability 9.0 the V3 shape (kv_lora 512, d_rope 64, 33+ heads) runs the
 * wgmma kernel of mla_wg.cu instead (pick_cfg); this kernel serves sm_120
 * and every other shape.
 *
 * What it computes. For batch row r and head h the query is
 * [qabs[r][h] | q_pe[r][h]] (D = kv_lora + d_rope), the keys are the row's
 * cache rows t in [0, pos[r]], the values their first kv_lora entries:
 *     o[h] = sum_t softmax_t(kq_scale * q[h] . k[t]) * k[t][0..kv_lora)
 * Every head of a row reads the same cache rows (MQA), so a block takes one
 * row and a tile of 16*MT heads as the M dimension of two small GEMMs per
 * tile of NT cached tokens, on mma.sync m16n8k16 (f16 or bf16 in, f32
 * accumulate; sm_80+ PTX, so one source serves sm_90a and sm_120):
 *     S[heads][NT]  = Q[heads][D] . K[NT][D]^T      (scores)
 *     O[heads][lora] += P[heads][NT] . K[NT][0..lora) (P = exp of S, online softmax)
 *
 * Warps. Two warps per 16-head m-tile (WPM). O for 16 heads x 512 in f32 is
 * 256 registers per thread in one warp, too many; so the pair splits O's
 * kv_lora columns (each warp 256 columns = 128 accumulators per thread) and,
 * to share the work of S, the tile's tokens (each warp NT/2 tokens over all
 * of D). The pair swaps its per-head tile maxima and its P (as f16/bf16)
 * through shared memory with a 64-thread named barrier, so both warps
 * multiply the whole token tile into their own O columns.
 *
 * Shared memory (halves; +8 pad per row puts the 8 rows an ldmatrix reads
 * on different banks: the row pitch is an odd number of 16-byte chunks):
 *     q   [16*MT][D+8]     the query tile, converted once per block
 *     k   [2][NT][D+8]     the token tiles, double-buffered by cp.async; each
 *                          token addressed through the block table (pages of
 *                          any size), rows past the range zero-filled
 *     p   [MT][16][NT+8]   probabilities of the current tile
 *     f32 qscale[16*MT], red[warps][16] (tile maxima, then final sums)
 * Configs: MT 4 / NT 32 (64 heads, 8 warps, 152 KiB at D = 576: Hopper's
 * 227 KiB opt-in), MT 2 / NT 16 (32 heads, 4 warps, 75 KiB: fits sm_120's
 * 99 KiB), MT 1 / NT 16 (<= 16 heads). The widest that fits the device and
 * is not mostly padding is used; wider tiles read the cache fewer times.
 *
 * f16 range. A query head is scaled by 2^-e so its absmax lands in
 * [2^11, 2^12) and 2^e is folded into that head's score scale (exact: a
 * power of two). bf16 has f32's range and is not scaled. Scores are kept in
 * log2 units (scale includes log2 e) and exponentiated with exp2f.
 *
 * Split-KV. With few rows (decode), n_split blocks share a row's tokens in
 * whole tiles (chunks of at least min_chunk tokens, from pos[r] on the
 * device, so one launch serves any context and CUDA graphs can replay it);
 * each writes its normalised partial output, max and sum to the workspace
 * and mla_tc_combine merges them by log-sum-exp weights. With many rows
 * n_split is 1 and the blocks write olat directly. */
#include "mla_tc_parts.cuh"
#include "cuda_check.h"

#include <stdlib.h>

namespace {

using ds_mla::mla_tc_fn;

constexpr int O_NT = MAX_LORA / WPM / 8; /* O n-tiles (8 columns) per warp at the widest */
constexpr int MAX_SPLIT = 256;  /* combine's shared weight table */
/* Tokens a split takes at least: a split smaller than this costs more in
 * partials (n_head x kv_lora floats each, 256 KiB a row at V3 widths, read
 * back by the combine) than it saves. DSINFER_CUDA_MLA_CHUNK (min_chunk_knob()) sets
 * it for A/B runs: one-tile chunks (32) were 1 % faster at ~150 cached
 * tokens but slower at depth 4096 on an H200 (session 7). */
constexpr int DEFAULT_MIN_CHUNK = 128;

/* Issues the cp.async copies of tokens [t0, t0 + NT) into dst [NT][QS]:
 * NTHR / NT threads per token, so each thread looks up one block-table
 * entry; tokens past te are zero-filled (P is 0 there, and 0 * garbage
 * could be NaN in the P.V product). */
template <int NT, int NTHR>
__device__ __forceinline__ void load_k_tile(uint16_t *dst, const mla_tc_params &p, int tab, int t0, int te, int D,
                                            int QS) {
    constexpr int TPT = NTHR / NT;
    static_assert(NTHR % NT == 0, "threads per token");
    const int tok = threadIdx.x / TPT, sub = threadIdx.x % TPT, t = t0 + tok;
    const bool valid = t <= te;
    const uint16_t *src = (const uint16_t *)p.kv.pool + (valid ? tok_off(p.kv, p.il, tab, t) : 0);
    const uint32_t d = smem_u32(dst + (size_t)tok * QS);
    for (int c = sub; c < D / 8; c += TPT) cp_async16(d + c * 16, src + (valid ? c * 8 : 0), valid);
}

/* s[n-tile][4] = Q(m-tile) . K^T for this warp's NSN*8 tokens of the tile.
 * qa: this lane's ldmatrix address into q (row (lane&7) + 8*((lane>>3)&1),
 * col 8*(lane>>4): matrices a0..a3); kb: into k at token (lane&7) + 8*(lane>>4),
 * col 8*((lane>>3)&1) (matrices b0, b1 of n-tile 0, then of n-tile 1). */
template <bool BF, int NSN>
__device__ __forceinline__ void tile_scores(float s[NSN][4], uint32_t qa, uint32_t kb, int D, int QS) {
#pragma unroll
    for (int i = 0; i < NSN; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll 2
    for (int k = 0; k < D; k += 16) {
        uint32_t a[4];
        ldsm_x4(a, qa + k * 2);
#pragma unroll
        for (int i = 0; i + 1 < NSN; i += 2) {
            uint32_t b[4];
            ldsm_x4(b, kb + (i * 8 * QS + k) * 2);
            mma<BF>(s[i], a, b[0], b[1]);
            mma<BF>(s[i + 1], a, b[2], b[3]);
        }
        if constexpr (NSN % 2) { /* lanes 0-15 of kb are n-tile NSN-1's b0, b1 rows */
            uint32_t b[2];
            ldsm_x2(b, kb + ((NSN - 1) * 8 * QS + k) * 2);
            mma<BF>(s[NSN - 1], a, b[0], b[1]);
        }
    }
}

/* o += P(m-tile) . V over the NT tokens of the tile, for this warp's ndv
 * n-tiles of O. pa: ldmatrix address into p (as qa); vb: into k at token
 * (lane&7) + 8*((lane>>3)&1), column dv0 + 8*(lane>>4), read transposed:
 * matrices b0, b1 of n-tile dv0, then of n-tile dv0 + 8. */
template <bool BF, int NT>
__device__ __forceinline__ void tile_pv(float o[O_NT][4], uint32_t pa, uint32_t vb, int ndv, int QS) {
#pragma unroll
    for (int ks = 0; ks < NT / 16; ks++) {
        uint32_t a[4];
        ldsm_x4(a, pa + ks * 16 * 2);
#pragma unroll
        for (int j = 0; j < O_NT; j += 2) {
            if (j < ndv) {
                uint32_t b[4];
                ldsm_x4_trans(b, vb + (ks * 16 * QS + j * 8) * 2);
                mma<BF>(o[j], a, b[0], b[1]);
                mma<BF>(o[j + 1], a, b[2], b[3]);
            }
        }
    }
}

/* grid (head tiles, n_split, n); block MT*WPM warps; dynamic shared memory smem_bytes(MT, NT, D). */
template <bool BF, int MT, int NT>
__global__ void __launch_bounds__(MT * WPM * 32, 1) mla_tc_kernel(const mla_tc_params p) {
    constexpr int NW = MT * WPM, NTHR = NW * 32, TPW = NT / WPM, NSN = TPW / 8;
    static_assert(TPW % 8 == 0 && NT % 16 == 0, "token split");
    using E = elem2<BF>;
    extern __shared__ __align__(16) uint8_t smem[];
    const int L = p.kv_lora, D = L + p.d_rope, QS = D + PAD, PS = NT + PAD;
    uint16_t *qs = (uint16_t *)smem;             /* [16 MT][QS] */
    uint16_t *ks = qs + 16 * MT * QS;            /* [2][NT][QS] */
    uint16_t *ps = ks + 2 * NT * QS;             /* [MT][16][PS] */
    float *qscale = (float *)(ps + MT * 16 * PS); /* [16 MT] */
    float *red = qscale + 16 * MT;               /* [NW][16] */

    const int h0 = blockIdx.x * 16 * MT, split = blockIdx.y;
    const int r = p.n - 1 - (int)blockIdx.z; /* last rows first: in a prefill they are the longest */
    const int32_t last = p.kv.pos[r];
    const int tab = p.kv.row_tab[r];
    int tb, te;
    split_range(last, split, p.n_split, NT, p.min_chunk, &tb, &te);
    if (tb > te) {
        write_empty<MT>(p, r, split, h0);
        return;
    }
    const int n_tiles = (te - tb + NT) / NT;

    load_k_tile<NT, NTHR>(ks, p, tab, tb, te, D, QS); /* tile 0 flies while the query converts */
    cp_async_commit();
    load_query<BF, MT, NW>(qs, qscale, p, r, h0, D, padded_rows{QS});

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, mi = warp / WPM, wq = warp % WPM;
    const int g = lane >> 2, c = lane & 3;
    const int ndv = L / WPM / 8, dv0 = wq * (L / WPM); /* this warp's O columns */
    const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8; /* A operand lane address */
    const uint32_t qa = smem_u32(qs + (size_t)(mi * 16 + arow) * QS + acol);
    const uint32_t pa = smem_u32(ps + (size_t)(mi * 16 + arow) * PS + acol);
    const int kb = (wq * TPW + (lane & 7) + (lane >> 4) * 8) * QS + ((lane >> 3) & 1) * 8; /* halves into a k tile */
    const int vb = arow * QS + dv0 + acol;
    /* this lane's P pair in row g (row g + 8 is 4*PS pairs on) */
    typename E::T *prow = (typename E::T *)(ps + (size_t)(mi * 16 + g) * PS + wq * TPW + 2 * c);

    float o[O_NT][4];
#pragma unroll
    for (int j = 0; j < O_NT; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f; /* rows g and g + 8: running max, sum */

#pragma unroll 1
    for (int it = 0; it < n_tiles; it++) {
        cp_async_wait_all();
        __syncthreads(); /* tile `it` (and the query) visible; everyone is done with tile it - 1 */
        if (it + 1 < n_tiles)
            load_k_tile<NT, NTHR>(ks + ((it + 1) & 1) * NT * QS, p, tab, tb + (it + 1) * NT, te, D, QS);
        cp_async_commit();
        const uint32_t kt = smem_u32(ks + (it & 1) * NT * QS);

        float s[NSN][4];
        tile_scores<BF, NSN>(s, qa, kt + kb * 2, D, QS);

        /* scale to log2 units, mask tokens past te, tile max per row */
        const float sc0 = qscale[mi * 16 + g], sc1 = qscale[mi * 16 + g + 8];
        float x0, x1;
        scale_mask_max<NSN>([&](int i, int k) -> float & { return s[i][k]; }, sc0, sc1,
                            tb + it * NT + wq * TPW + 2 * c, te, x0, x1);
        x0 = quad_max(x0);
        x1 = quad_max(x1);
        if (c == 0) {
            red[warp * 16 + g] = x0;
            red[warp * 16 + g + 8] = x1;
        }
        pair_sync<MT>(mi);
        float n0 = m0, n1 = m1; /* finite: token tb + it*NT is valid, and the pair sees it */
#pragma unroll
        for (int w = 0; w < WPM; w++) {
            n0 = fmaxf(n0, red[(mi * WPM + w) * 16 + g]);
            n1 = fmaxf(n1, red[(mi * WPM + w) * 16 + g + 8]);
        }
        const float a0 = exp2f(m0 - n0), a1 = exp2f(m1 - n1); /* 0 on the first tile */
        m0 = n0;
        m1 = n1;

        /* P in the mma type; the sums take the rounded values, so O / l is
         * exactly a weighted mean with the weights the product used */
        float r0 = 0.f, r1 = 0.f;
#pragma unroll
        for (int i = 0; i < NSN; i++) {
            const typename E::T u0 = E::pack(exp2f(s[i][0] - m0), exp2f(s[i][1] - m0));
            const typename E::T u1 = E::pack(exp2f(s[i][2] - m1), exp2f(s[i][3] - m1));
            r0 += __low2float(u0) + __high2float(u0);
            r1 += __low2float(u1) + __high2float(u1);
            prow[i * 4] = u0;          /* n-tile i: 8 tokens = 4 pairs on */
            prow[i * 4 + 4 * PS] = u1; /* row g + 8: 8 rows of PS halves */
        }
        l0 = l0 * a0 + r0;
        l1 = l1 * a1 + r1;
        /* rescale O only when a row's max moved (a != 1): at depth it rarely
         * does after the first tiles, and the 4 * ndv multiplies were 16 % of
         * the kernel's instructions (sass counts, H200, session 11) */
        if (__any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) {
#pragma unroll
            for (int j = 0; j < O_NT; j++) {
                if (j < ndv) {
                    o[j][0] *= a0;
                    o[j][1] *= a0;
                    o[j][2] *= a1;
                    o[j][3] *= a1;
                }
            }
        }
        pair_sync<MT>(mi); /* P of both warps written */
        tile_pv<BF, NT>(o, pa, kt + vb * 2, ndv, QS);
    }

    /* row sums over the quad, then over the pair (red is free: its last
     * readers passed the pair barrier before tile_pv) */
    l0 = quad_sum(l0);
    l1 = quad_sum(l1);
    if (c == 0) {
        red[warp * 16 + g] = l0;
        red[warp * 16 + g + 8] = l1;
    }
    pair_sync<MT>(mi);
    l0 = l1 = 0.f;
#pragma unroll
    for (int w = 0; w < WPM; w++) {
        l0 += red[(mi * WPM + w) * 16 + g];
        l1 += red[(mi * WPM + w) * 16 + g + 8];
    }

    const int hA = h0 + mi * 16 + g, hB = hA + 8;
    const float i0 = 1.f / l0, i1 = 1.f / l1; /* l >= 1: the max token has p = 1 */
    float *dA = out_row(p, r, split, hA, wq == 0 && c == 0, m0, l0);
    float *dB = out_row(p, r, split, hB, wq == 0 && c == 0, m1, l1);
#pragma unroll
    for (int j = 0; j < O_NT; j++) {
        if (j < ndv) {
            const int d = dv0 + j * 8 + 2 * c;
            if (hA < p.n_head) *(float2 *)(dA + d) = make_float2(o[j][0] * i0, o[j][1] * i0);
            if (hB < p.n_head) *(float2 *)(dB + d) = make_float2(o[j][2] * i1, o[j][3] * i1);
        }
    }
}

/* olat[r][h] = sum_s w_s po[r][s][h] / sum_s w_s, w_s = pl * 2^(pm - max pm):
 * the splits' softmaxes rescaled to the common max. It reads n_split *
 * kv_lora floats a head from L2 (~17 MB a layer at depth 32768 with 66
 * splits) and is latency-bound: with one block a head, thread 0 making the
 * weights and each thread loading one split after the other it took 22 us a
 * layer there and 13.6 with the loads unrolled (ncu, H200, session 11); in
 * this form 8.8 on an H100 (the first two not timed there). So:
 * grid (n_head * column chunks of CB_COLS, n); CB_WARPS warps, warp w takes
 * the splits w, w + CB_WARPS, ... of the chunk (lane: 4 columns) and issues
 * all its loads before it waits on anything, the split table included; every
 * warp makes the weights it needs itself, and the warps add up through
 * shared memory at the end. */
constexpr int CB_COLS = 128;                 /* columns a block: a float4 a lane */
constexpr int CB_WARPS = 8;
constexpr int CB_UNROLL = 12;                /* splits a warp has in flight */
static_assert(MAX_SPLIT <= 32 * CB_WARPS, "one table entry a thread");
__global__ void __launch_bounds__(32 * CB_WARPS) mla_tc_combine(const float *__restrict__ po,
                                                                const float *__restrict__ pm,
                                                                const float *__restrict__ pl, int n_split, int n_head,
                                                                int L, const int32_t *__restrict__ pos, int nt,
                                                                int min_chunk, float *__restrict__ olat) {
    __shared__ float ml[MAX_SPLIT], ll[MAX_SPLIT]; /* the row's split table for this head */
    __shared__ float4 part[CB_WARPS][32];
    const int n_chunk = (L + CB_COLS - 1) / CB_COLS;
    const int h = blockIdx.x / n_chunk, d = (blockIdx.x % n_chunk) * CB_COLS + 4 * (threadIdx.x & 31);
    const int r = blockIdx.y, warp = threadIdx.x >> 5;
    const size_t at = (size_t)r * n_split * n_head + h; /* split s at at + s * n_head */
    /* only the first `used` splits have tokens (l >= 1: the max token has
     * p = 1); the rest are never read (at depth 0 in a context made for 32k
     * tokens 65 of 66 are empty) */
    const int used = splits_used(pos[r], n_split, nt, min_chunk);
    if (threadIdx.x < used) {
        ll[threadIdx.x] = pl[at + (size_t)threadIdx.x * n_head];
        ml[threadIdx.x] = pm[at + (size_t)threadIdx.x * n_head];
    }
    const bool col = d < L;
    const float *src = po + at * L + d;
    const size_t step = (size_t)n_head * L; /* one split on */
    float4 v[CB_UNROLL];
    auto load = [&](int s0) {
#pragma unroll
        for (int u = 0; u < CB_UNROLL; u++) {
            const int sp = s0 + u * CB_WARPS;
            v[u] = col && sp < used ? *(const float4 *)(src + (size_t)sp * step) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    };
    load(warp);
    __syncthreads(); /* the table is in: every warp takes the max and the sum of the weights */
    float mx = -INFINITY, tot = 0.f;
    for (int sp = threadIdx.x & 31; sp < used; sp += 32) mx = fmaxf(mx, ml[sp]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    for (int sp = threadIdx.x & 31; sp < used; sp += 32) tot += ll[sp] * exp2f(ml[sp] - mx);
    for (int o = 16; o > 0; o >>= 1) tot += __shfl_xor_sync(0xffffffffu, tot, o);
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s0 = warp; s0 < used;) {
#pragma unroll
        for (int u = 0; u < CB_UNROLL; u++) {
            const int sp = s0 + u * CB_WARPS;
            if (sp < used) { /* a select: v[u] past `used` was never loaded */
                const float ws = ll[sp] * exp2f(ml[sp] - mx);
                acc.x += ws * v[u].x;
                acc.y += ws * v[u].y;
                acc.z += ws * v[u].z;
                acc.w += ws * v[u].w;
            }
        }
        s0 += CB_WARPS * CB_UNROLL;
        if (s0 < used) load(s0);
    }
    part[warp][threadIdx.x & 31] = acc;
    __syncthreads();
    if (warp == 0 && col) {
        float4 t = part[0][threadIdx.x];
        for (int w = 1; w < CB_WARPS; w++) {
            const float4 b = part[w][threadIdx.x];
            t.x += b.x;
            t.y += b.y;
            t.z += b.z;
            t.w += b.w;
        }
        const float inv = tot > 0.f ? 1.f / tot : 0.f;
        *(float4 *)(olat + ((size_t)r * n_head + h) * L + d) = make_float4(t.x * inv, t.y * inv, t.z * inv, t.w * inv);
    }
}

/* ---- host side ------------------------------------------------------------------ */

struct tc_cfg {
    int mt, nt, threads;
    size_t smem;   /* dynamic shared bytes */
    mla_tc_fn fn;
    int n_sm;      /* multiprocessors of the device */
    int per_sm;    /* resident blocks per multiprocessor */
    int min_chunk; /* tokens a split takes at least: whole tiles */
};

/* DSINFER_CUDA_MLA_CHUNK=N, read once: the fewest tokens a split takes
 * (rounded up to whole tiles; default DEFAULT_MIN_CHUNK), for A/B runs.
 * Narrower head tiles (16 or 32 heads, to give more blocks at one row) were
 * measured and dropped: tg128 344.3 / 342.3 against 343.8, and 247.6 against
 * 270.3 at depth 32768 with 16-head tiles (H200, session 8): each tile reads
 * the whole cache. */
int min_chunk_knob() {
    static const int k = [] {
        const char *ch = getenv("DSINFER_CUDA_MLA_CHUNK");
        const int c = ch ? atoi(ch) : 0;
        return c > 0 ? c : DEFAULT_MIN_CHUNK;
    }();
    return k;
}

size_t smem_bytes(int mt, int nt, int D) {
    return (size_t)(16 * mt * (D + PAD) + 2 * nt * (D + PAD) + mt * 16 * (nt + PAD)) * 2 +
           (size_t)(16 * mt + mt * WPM * 16) * sizeof(float);
}

int tile_tokens(int mt) { return mt == 4 ? 32 : 16; }

template <bool BF> mla_tc_fn kernel_for(int mt) {
    if (mt == 4) return mla_tc_kernel<BF, 4, 32>;
    if (mt == 2) return mla_tc_kernel<BF, 2, 16>;
    return mla_tc_kernel<BF, 1, 16>;
}

bool shape_ok(int kv_type, int kv_lora, int d_rope, int n_head) {
    return (kv_type == 1 || kv_type == 30) && kv_lora >= 64 && kv_lora <= MAX_LORA && kv_lora % 64 == 0 &&
           d_rope >= 0 && d_rope <= MAX_ROPE && d_rope % 16 == 0 && n_head >= 1;
}

/* Shared-memory opt-in and SM count of the current device, without printing
 * (ds_cu_mla_tc_supported asks on machines that may have no device). */
cudaError_t device_limits(int *optin, int *n_sm, int *cc = nullptr) {
    int dev, major = 0, minor = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(n_sm, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess && cc) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e == cudaSuccess && cc) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (cc) *cc = 10 * major + minor;
    return e;
}

/* DSINFER_CUDA_MLA_WGMMA=0, read once: keep mla_tc_kernel on Hopper too (A/B runs) */
bool wgmma_knob() {
    static const bool k = [] {
        const char *v = getenv("DSINFER_CUDA_MLA_WGMMA");
        return !v || atoi(v) != 0;
    }();
    return k;
}

/* The wgmma kernel (mla_wg.cu) when it serves this shape on a device of
 * compute capability cc (10 major + minor): 9.0 with sm_90a code in the build, kv_lora 512
 * and d_rope 64 (DeepSeek-V2/V3, Kimi-K2), more than 32 heads (its 64-head
 * tiles), the shared memory fits. */
mla_tc_fn wg_pick(bool bf, int n_head, int kv_lora, int D, int optin, int cc) {
    if (cc != 90 || !wgmma_knob() || kv_lora != MAX_LORA || D != MAX_LORA + MAX_ROPE || n_head <= 32 ||
        ds_mla::wg_smem_bytes() > (size_t)optin)
        return nullptr;
    return ds_mla::wg_kernel(bf);
}

/* The tile config for n_head on the current device: 64 heads per block when
 * there are more than 32 heads and it fits (on wgmma where wg_pick allows),
 * else 32, else 16. Also raises the kernel's dynamic shared limit (a function
 * attribute: no stream work, so it is fine inside graph capture). 0 or a
 * cudaError_t. */
int pick_cfg(bool bf, int n_head, int kv_lora, int D, tc_cfg *c) {
    int optin = 0, cc = 0; /* cc: compute capability, 10 major + minor */
    const cudaError_t e = device_limits(&optin, &c->n_sm, &cc);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: the caller reports the code */
        return (int)e;
    }
    int mt = n_head > 32 ? 4 : n_head > 16 ? 2 : 1;
    while (mt > 1 && smem_bytes(mt, tile_tokens(mt), D) > (size_t)optin) mt /= 2;
    c->mt = mt;
    c->nt = tile_tokens(mt);
    c->threads = mt * WPM * 32;
    c->smem = smem_bytes(mt, c->nt, D);
    c->fn = bf ? kernel_for<true>(mt) : kernel_for<false>(mt);
    if (mla_tc_fn wg = wg_pick(bf, n_head, kv_lora, D, optin, cc)) { /* 64 heads, 64 tokens, 8 warps */
        c->mt = 4;
        c->nt = 64;
        c->threads = 256;
        c->smem = ds_mla::wg_smem_bytes();
        c->fn = wg;
    }
    if (c->smem > (size_t)optin) return (int)cudaErrorInvalidValue;
    c->min_chunk = (min_chunk_knob() + c->nt - 1) / c->nt * c->nt; /* >= one tile: min_chunk > 0 */
    DS_CU_TRY(cudaFuncSetAttribute(c->fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->smem));
    DS_CU_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&c->per_sm, c->fn, c->threads, c->smem));
    if (c->per_sm < 1) c->per_sm = 1;
    return 0;
}

/* Splits per row: enough blocks for one full wave of the device when the
 * rows' head tiles alone fall short, no more than a row of t_max tokens can
 * give min_chunk each, and never more than MAX_SPLIT. */
int want_splits(int n, int n_ht, const tc_cfg &c, int64_t t_max) {
    const int64_t base = (int64_t)n * n_ht, target = (int64_t)c.n_sm * c.per_sm;
    if (base >= target) return 1;
    int64_t s = target / base;
    const int64_t useful = (t_max + c.min_chunk - 1) / c.min_chunk;
    if (s > useful) s = useful;
    if (s > MAX_SPLIT) s = MAX_SPLIT;
    return s < 2 ? 1 : (int)s;
}

} // namespace

extern "C" int ds_cu_mla_tc_supported(int kv_type, int kv_lora, int d_rope, int n_head) {
    int optin = 0, n_sm = 0;
    if (!shape_ok(kv_type, kv_lora, d_rope, n_head) || device_limits(&optin, &n_sm) != cudaSuccess) {
        (void)cudaGetLastError(); /* no device: a quiet "no", not a sticky error */
        return 0;
    }
    return smem_bytes(1, tile_tokens(1), kv_lora + d_rope) <= (size_t)optin;
}

extern "C" size_t ds_cu_mla_tc_work_floats(int n, int n_head, int kv_lora, int64_t max_ctx) {
    tc_cfg c;
    if (n <= 0 || n_head <= 0 || kv_lora <= 0 || pick_cfg(false, n_head, kv_lora, kv_lora + MAX_ROPE, &c)) return 0;
    const int n_ht = (n_head + 16 * c.mt - 1) / (16 * c.mt);
    size_t best = 0;
    for (int m = 1; m <= n; m++) { /* fewer rows may split more ways */
        const int ns = want_splits(m, n_ht, c, max_ctx);
        const size_t need = ns > 1 ? (size_t)m * ns * n_head * (kv_lora + 2) : 0;
        if (need > best) best = need;
    }
    return best;
}

extern "C" int ds_cu_mla_tc(const float *qabs, const float *q, int n, int n_head, int d_qk, int d_nope, int kv_lora,
                            int d_rope, float kq_scale, const ds_cu_kv_view *kv, int il, float *olat, float *work,
                            size_t work_floats, cudaStream_t s) {
    if (n <= 0) return 0;
    if (!shape_ok(kv->kv_type, kv_lora, d_rope, n_head) || kv->row_dim != kv_lora + d_rope || n > 65535)
        return (int)cudaErrorInvalidValue;
    const bool bf = kv->kv_type == 30;
    tc_cfg c;
    int rc = pick_cfg(bf, n_head, kv_lora, kv_lora + d_rope, &c);
    if (rc) return rc;
    const int n_ht = (n_head + 16 * c.mt - 1) / (16 * c.mt);
    int ns = want_splits(n, n_ht, c, (int64_t)kv->max_blocks * kv->block_tokens);
    const size_t per_split = (size_t)n * n_head * (kv_lora + 2);
    if (ns > 1 && (!work || work_floats / per_split < (size_t)ns)) { /* a small workspace: fewer splits */
        const size_t fit = work ? work_floats / per_split : 0;
        ns = fit >= 2 ? (int)fit : 1;
    }
    mla_tc_params p;
    p.qabs = qabs;
    p.q = q;
    p.olat = olat;
    p.po = work;
    p.pm = work ? work + (size_t)ns * n * n_head * kv_lora : NULL;
    p.pl = work ? p.pm + (size_t)ns * n * n_head : NULL;
    p.kv = *kv;
    p.il = il;
    p.n = n;
    p.n_head = n_head;
    p.d_qk = d_qk;
    p.d_nope = d_nope;
    p.kv_lora = kv_lora;
    p.d_rope = d_rope;
    p.n_split = ns;
    p.min_chunk = c.min_chunk;
    p.kq_scale = kq_scale;
    c.fn<<<dim3((unsigned)n_ht, (unsigned)ns, (unsigned)n), c.threads, c.smem, s>>>(p);
    DS_CU_TRY_LAUNCH();
    if (ns > 1) {
        const unsigned chunks = (unsigned)((kv_lora + CB_COLS - 1) / CB_COLS);
        mla_tc_combine<<<dim3((unsigned)n_head * chunks, (unsigned)n), 32 * CB_WARPS, 0, s>>>(
            p.po, p.pm, p.pl, ns, n_head, kv_lora, p.kv.pos, c.nt, c.min_chunk, olat);
        DS_CU_TRY_LAUNCH();
    }
    return 0;
}
