/* mla_wg.cu: the absorbed MLA attention core on Hopper's warpgroup MMA
 * (wgmma, sm_90a) for 64-head tiles at kv_lora 512, d_rope 64 — the same
 * contract, grid, split-KV partials and combine as mla_tc_kernel (mla_tc.cu,
 * which picks this kernel on compute capability 9.0 and keeps serving sm_120
 * and every other shape). Not the combine or the host side (mla_tc.cu).
 *
 * Why. mla_tc_kernel feeds mma.sync from ldmatrix: a warp reloads its
 * query fragments every tile and each of the 4 m-tiles reloads the same
 * K/V fragments, 106 ldmatrix.x4 for 136 MMAs a warp a 32-token tile, and
 * at depth 32768 the MMAs wait on them (ncu, H200, session 11: tensor pipe
 * 22 % busy, 66 us a layer for 38 MB of cache). Here the tensor cores read
 * Q and K/V from shared memory themselves.
 *
 * Block: 64 heads of one row (the M of every wgmma), 2 warpgroups, tiles of
 * 64 tokens in a ring of WG_STAGES cp.async buffers. Warp w is warpgroup
 * wq = w / 4 and holds heads 16 (w % 4) .. +15 (mi = w % 4).
 *   scores: warpgroup wq takes tokens [32 wq, 32 wq + 32) of the tile,
 *           S = Q[64][576] . K^T on m64n32k16, 36 steps, both operands from
 *           shared memory (sw128: the query converted once a block, the
 *           cache rows copied as they are, 16-byte chunks swizzled);
 *   softmax: as mla_tc_kernel; the warps of a pair (same heads, the two
 *           warpgroups) swap tile maxima through shared memory, and each
 *           writes its P (f16/bf16) for the other;
 *   P . V:  warpgroup wq owns O's columns [256 wq, 256 wq + 256): 4 x
 *           m64n64k16 per 16 tokens, A = P from registers (its own half
 *           straight from the score registers, the other half by ldmatrix),
 *           B = the same K tile read MN-major (V = first 512 columns of the
 *           cache rows). O: 128 f32 registers a thread.
 * Shared memory: Q 72 KiB, K 2 x 72 KiB, P 9 KiB: 226 KiB with 1 KiB of
 * alignment (sw128 tiles start on 1024-byte boundaries): Hopper's 227 KiB. */
#include "mla_tc_parts.cuh"
#include "wgmma.cuh"

namespace {

constexpr int WG_HEADS = 64;           /* heads a block: the wgmma M */
constexpr int WG_NT = 64;              /* tokens a tile */
[[maybe_unused]] constexpr int WG_HT = WG_NT / 2;       /* tokens a warpgroup scores */
constexpr int WG_THREADS = 256;        /* 2 warpgroups */
constexpr int WG_LORA = 512;           /* kv_lora this kernel serves: 2 x 256 O columns */
constexpr int WG_D = WG_LORA + 64;     /* and d_rope 64: the row, 9 atoms of 64 columns */
[[maybe_unused]] constexpr int WG_NK = WG_D / 16;       /* k16 steps of the scores */
constexpr int WG_PS = WG_NT + PAD;     /* P row pitch in halves (ldmatrix rows on distinct banks) */
/* K tiles in the cp.async ring (one in flight while one is used: 72 KiB
 * each; the 64-token tile halves the per-token barriers, softmax rounds and
 * wgmma waits of a 32-token one, measured 4x slower than its math) */
constexpr int WG_STAGES = 2;
constexpr int Q_HALVES = WG_D / 64 * 64 * WG_HEADS, K_HALVES = WG_D / 64 * 64 * WG_NT;
static_assert(WG_LORA == MAX_LORA && WG_D % 64 == 0, "O columns, whole atoms");

/* cp.async copies of tokens [t0, t0 + WG_NT) into the sw128 tile dst [WG_NT][WG_D]:
 * 4 threads a token, each every 4th chunk; tokens past te zero-filled (P is
 * 0 there, and 0 * garbage could be NaN in P . V) */
[[maybe_unused]] __device__ __forceinline__ void load_k_tile_sw(uint16_t *dst, const mla_tc_params &p, int tab, int t0, int te) {
    constexpr int TPT = WG_THREADS / WG_NT;
    const int tok = threadIdx.x / TPT, sub = threadIdx.x % TPT, t = t0 + tok;
    const bool valid = t <= te;
    const uint16_t *src = (const uint16_t *)p.kv.pool + (valid ? tok_off(p.kv, p.il, tab, t) : 0);
    const sw128_rows lay{WG_NT};
#pragma unroll
    for (int c = sub; c < WG_D / 8; c += TPT) cp_async16(smem_u32(dst + lay.at(tok, 8 * c)), src + (valid ? c * 8 : 0), valid);
}

/* grid (head tiles of 64, n_split, n); WG_THREADS threads; dynamic shared memory ds_mla::wg_smem_bytes() */
template <bool BF> __global__ void __launch_bounds__(WG_THREADS, 1) mla_wg_kernel(const mla_tc_params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using E = elem2<BF>;
    constexpr int NSB = WG_HT / 8, KH = WG_HT / 16; /* n8 blocks of a warpgroup's scores; its k16 steps of P */
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
    uint16_t *qs = (uint16_t *)smem;               /* sw128 [64][WG_D] */
    uint16_t *ks = qs + Q_HALVES;                  /* WG_STAGES x sw128 [WG_NT][WG_D] */
    uint16_t *ps = ks + WG_STAGES * K_HALVES;      /* [64][WG_PS] */
    float *qscale = (float *)(ps + WG_HEADS * WG_PS); /* [64] */
    float *red = qscale + WG_HEADS;                /* [8 warps][16] */

    const int h0 = blockIdx.x * WG_HEADS, split = blockIdx.y;
    const int r = p.n - 1 - (int)blockIdx.z; /* last rows first: in a prefill they are the longest */
    const int32_t last = p.kv.pos[r];
    const int tab = p.kv.row_tab[r];
    int tb, te;
    split_range(last, split, p.n_split, WG_NT, p.min_chunk, &tb, &te);
    if (tb > te) {
        write_empty<4>(p, r, split, h0);
        return;
    }
    const int n_tiles = (te - tb + WG_NT) / WG_NT;

    /* tiles 0 .. WG_STAGES - 2 fly while the query converts; one group a
     * tile, empty past the last, so the wait below counts alike everywhere */
#pragma unroll
    for (int t = 0; t < WG_STAGES - 1; t++) {
        if (t < n_tiles) load_k_tile_sw(ks + t * K_HALVES, p, tab, tb + t * WG_NT, te);
        cp_async_commit();
    }
    load_query<BF, 4, WG_THREADS / 32>(qs, qscale, p, r, h0, WG_D, sw128_rows{WG_HEADS});

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, mi = warp & 3, wq = warp >> 2;
    const int g = lane >> 2, c = lane & 3;
    const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8; /* ldmatrix A lane address */
    /* the other warpgroup's tokens of P as this warp's A fragments (k16 step ks at + 32 ks bytes) */
    const uint32_t pa_other = smem_u32(ps + (mi * 16 + arow) * WG_PS + (1 - wq) * WG_HT + acol);
    /* this lane's P pair in row g (row g + 8 is 4 * WG_PS pairs on) */
    typename E::T *prow = (typename E::T *)(ps + (mi * 16 + g) * WG_PS + wq * WG_HT + 2 * c);
    const uint64_t q_desc = sw128_desc(smem_u32(qs));
    const uint32_t k_base = smem_u32(ks);
    constexpr uint32_t Q_ATOM = WG_HEADS * 128, K_ATOM = WG_NT * 128; /* bytes from one 64-column atom to the next */

    float o[4][32]; /* O columns 256 wq + 64 j + (the m64n64 D layout) */
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 32; i++) o[j][i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f; /* rows g and g + 8: running max, sum */

#pragma unroll 1
    for (int it = 0; it < n_tiles; it++) {
        cp_async_wait<WG_STAGES - 2>(); /* tile `it` landed (this thread's part) */
        fence_proxy_async(); /* this thread's copies (and, first, its query stores) seen by wgmma */
        __syncthreads();     /* tile `it` visible; both warpgroups are done with tile it - 1 */
        {
            const int nx = it + WG_STAGES - 1; /* into the buffer tile it - 1 used */
            if (nx < n_tiles) load_k_tile_sw(ks + (nx % WG_STAGES) * K_HALVES, p, tab, tb + nx * WG_NT, te);
            cp_async_commit();
        }
        const uint32_t kt = k_base + (it % WG_STAGES) * K_HALVES * 2;

        /* scores of this warpgroup's tokens; descriptors step by their address field (bytes / 16) */
        float s[4 * NSB]; /* the first step overwrites it (acc 0) */
        const uint64_t k_desc = sw128_desc(kt + wq * WG_HT * 128);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < WG_NK; kk++) {
            const uint32_t step = (kk & 3) * 32; /* 16 columns = 32 bytes into the atom */
            wg_m64n32k16_ss<BF>(s, q_desc + (((kk >> 2) * Q_ATOM + step) >> 4),
                                k_desc + (((kk >> 2) * K_ATOM + step) >> 4), kk > 0);
        }
        wg_commit();
        wg_wait<0>();
        reg_fence(s);

        /* scale to log2 units, mask tokens past te, tile max per row */
        const float sc0 = qscale[mi * 16 + g], sc1 = qscale[mi * 16 + g + 8];
        float x0, x1;
        scale_mask_max<NSB>([&](int i, int k) -> float & { return s[4 * i + k]; }, sc0, sc1,
                            tb + it * WG_NT + wq * WG_HT + 2 * c, te, x0, x1);
        x0 = quad_max(x0);
        x1 = quad_max(x1);
        if (c == 0) {
            red[warp * 16 + g] = x0;
            red[warp * 16 + g + 8] = x1;
        }
        pair_sync<4>(mi);
        /* finite: token tb + it * WG_NT is valid, and the pair sees it */
        const float n0 = fmaxf(m0, fmaxf(red[mi * 16 + g], red[(4 + mi) * 16 + g]));
        const float n1 = fmaxf(m1, fmaxf(red[mi * 16 + g + 8], red[(4 + mi) * 16 + g + 8]));
        const float a0 = exp2f(m0 - n0), a1 = exp2f(m1 - n1); /* 0 on the first tile */
        m0 = n0;
        m1 = n1;

        /* P in the mma type (the sums take the rounded values, as mla_tc_kernel):
         * n8 block i of the scores is k columns 8 (i % 2).. of this warpgroup's k16 step i / 2 */
        uint32_t pown[KH][4], poth[KH][4];
        float r0 = 0.f, r1 = 0.f;
#pragma unroll
        for (int i = 0; i < NSB; i++) {
            const typename E::T u0 = E::pack(exp2f(s[4 * i] - m0), exp2f(s[4 * i + 1] - m0));
            const typename E::T u1 = E::pack(exp2f(s[4 * i + 2] - m1), exp2f(s[4 * i + 3] - m1));
            r0 += __low2float(u0) + __high2float(u0);
            r1 += __low2float(u1) + __high2float(u1);
            prow[i * 4] = u0;
            prow[i * 4 + 4 * WG_PS] = u1;
            pown[i / 2][2 * (i % 2)] = *(const uint32_t *)&u0;
            pown[i / 2][2 * (i % 2) + 1] = *(const uint32_t *)&u1;
        }
        l0 = l0 * a0 + r0;
        l1 = l1 * a1 + r1;
        if (__any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) { /* see mla_tc_kernel */
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int i = 0; i < 32; i += 4) {
                    o[j][i] *= a0;
                    o[j][i + 1] *= a0;
                    o[j][i + 2] *= a1;
                    o[j][i + 3] *= a1;
                }
        }
        pair_sync<4>(mi); /* P of both warps written */
#pragma unroll
        for (int k = 0; k < KH; k++) ldsm_x4(poth[k], pa_other + k * 32);
        uint32_t pa[2 * KH][4]; /* k16 steps of the whole tile: warpgroup 0's tokens, then 1's */
#pragma unroll
        for (int k = 0; k < 2 * KH; k++)
#pragma unroll
            for (int i = 0; i < 4; i++) pa[k][i] = (k / KH == wq) ? pown[k % KH][i] : poth[k % KH][i];
        wg_fence();
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const uint64_t v_desc = sw128_desc(kt + (4 * wq + j) * K_ATOM); /* columns 256 wq + 64 j */
#pragma unroll
            for (int k = 0; k < 2 * KH; k++) wg_m64n64k16_rs<BF>(o[j], pa[k], v_desc + ((k * 16 * 128) >> 4));
        }
        wg_commit();
        wg_wait<0>(); /* before the next barrier: the buffer is refilled after it */
#pragma unroll
        for (int j = 0; j < 4; j++) reg_fence(o[j]);
    }

    /* row sums over the quad, then over the pair (red is free: its last
     * readers passed the second pair barrier) */
    l0 = quad_sum(l0);
    l1 = quad_sum(l1);
    if (c == 0) {
        red[warp * 16 + g] = l0;
        red[warp * 16 + g + 8] = l1;
    }
    pair_sync<4>(mi);
    l0 = red[mi * 16 + g] + red[(4 + mi) * 16 + g];
    l1 = red[mi * 16 + g + 8] + red[(4 + mi) * 16 + g + 8];

    const int hA = h0 + mi * 16 + g, hB = hA + 8;
    const float i0 = 1.f / l0, i1 = 1.f / l1; /* l >= 1: the max token has p = 1 */
    float *dA = out_row(p, r, split, hA, wq == 0 && c == 0, m0, l0);
    float *dB = out_row(p, r, split, hB, wq == 0 && c == 0, m1, l1);
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int b = 0; b < 8; b++) {
            const int d = 256 * wq + 64 * j + 8 * b + 2 * c;
            if (hA < p.n_head) *(float2 *)(dA + d) = make_float2(o[j][4 * b] * i0, o[j][4 * b + 1] * i0);
            if (hB < p.n_head) *(float2 *)(dB + d) = make_float2(o[j][4 * b + 2] * i1, o[j][4 * b + 3] * i1);
        }
#endif
}

} // namespace

namespace ds_mla {

mla_tc_fn wg_kernel(bool bf) {
#if defined(DSINFER_CUDA_SM90A)
    return bf ? mla_wg_kernel<true> : mla_wg_kernel<false>;
#else
    (void)bf;
    return nullptr; /* no sm_90a code in this build: the kernel body would be empty */
#endif
}

size_t wg_smem_bytes() {
    return (size_t)(Q_HALVES + WG_STAGES * K_HALVES + WG_HEADS * WG_PS) * 2 + (WG_HEADS + 8 * 16) * sizeof(float) +
           1024 /* alignment */;
}

} // namespace ds_mla
