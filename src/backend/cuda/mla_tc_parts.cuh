/* mla_tc_parts.cuh: the pieces the two MLA tensor-core kernels share (the
 * mma.sync kernel of mla_tc.cu, the sm_90a wgmma kernel of mla_wg.cu): the
 * parameter block, PTX wrappers, split ranges, the query load. Not a kernel.
 * The types the two files pass each other live in namespace ds_mla; the
 * device helpers are per file (anonymous namespace). */
#ifndef DS_CUDA_MLA_TC_PARTS_CUH
#define DS_CUDA_MLA_TC_PARTS_CUH

#include "mla_tc.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace ds_mla {

/* Everything a block needs; shapes in the notation of attn.h. */
struct mla_tc_params {
    const float *qabs;  /* [n][n_head][kv_lora] */
    const float *q;     /* [n][n_head][d_qk]; q_pe = q[r][h][d_nope .. d_nope + d_rope) */
    float *olat;        /* [n][n_head][kv_lora], written when n_split == 1 */
    float *po;          /* [n][n_split][n_head][kv_lora] normalised partial outputs (n_split > 1) */
    float *pm;          /* [n][n_split][n_head] partial max, log2 units (-inf: empty split) */
    float *pl;          /* [n][n_split][n_head] partial sum of probabilities (0: empty split) */
    ds_cu_kv_view kv;   /* the paged cache; row_dim == kv_lora + d_rope */
    int il;             /* layer */
    int n, n_head, d_qk, d_nope, kv_lora, d_rope, n_split;
    int min_chunk;      /* tokens a split takes at least (a multiple of the tile) */
    float kq_scale;
};

typedef void (*mla_tc_fn)(mla_tc_params);

/* mla_wg.cu: the wgmma kernel for 64-head tiles of 64 tokens at kv_lora 512,
 * d_rope 64 (f16 or bf16 cache), or NULL in a build without sm_90a code;
 * its dynamic shared bytes */
mla_tc_fn wg_kernel(bool bf);
size_t wg_smem_bytes();

} // namespace ds_mla

namespace {

using ds_mla::mla_tc_params;

constexpr int WPM = 2;          /* warps per 16-head m-tile */
constexpr int PAD = 8;          /* halves of padding per shared row */
constexpr int MAX_LORA = 512;
constexpr int MAX_ROPE = 64;
constexpr float LOG2E = 1.4426950408889634f;

/* ---- PTX wrappers --------------------------------------------------------------
 * m16n8k16 fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with
 * g = lane / 4 and c = lane % 4; each register holds two adjacent 16-bit values:
 *   A 16x16 (row-major) a0: (row g,   cols 2c, 2c+1)    a1: (row g+8, cols 2c, 2c+1)
 *                       a2: (row g,   cols 2c+8, 2c+9)  a3: (row g+8, cols 2c+8, 2c+9)
 *   B 16x8  (k x n)     b0: (k 2c, 2c+1; col g)         b1: (k 2c+8, 2c+9; col g)
 *   C 16x8  (f32)       c0, c1: (row g, cols 2c, 2c+1)  c2, c3: (row g+8, cols 2c, 2c+1)
 * ldmatrix .x4: lanes 8j..8j+7 give the row addresses of 8x8 matrix j and
 * register j receives it, lane holding (row g, cols 2c, 2c+1); with .trans
 * it holds (rows 2c, 2c+1; col g) of the stored matrix. .x2 uses lanes 0-15. */

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x2(uint32_t r[2], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}

/* c += a . b on one 16x8x16 tile */
template <bool BF> __device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    if constexpr (BF)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !valid */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
/* wait until at most N of this thread's newest groups are still in flight */
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* barrier of the WPM warps of m-tile mi (ids 1..4; 0 is __syncthreads).
 * Constant ids, so ptxas reserves MT + 1 barriers rather than all 16. */
template <int ID> __device__ __forceinline__ void named_sync() {
    asm volatile("bar.sync %0, %1;\n" ::"n"(ID), "n"(32 * WPM) : "memory");
}
template <int MT> __device__ __forceinline__ void pair_sync(int mi) {
    static_assert(MT <= 4, "barrier ids");
    if (MT == 1 || mi == 0) named_sync<1>();
    else if (mi == 1) named_sync<2>();
    else if (MT > 2 && mi == 2) named_sync<3>();
    else if (MT > 2) named_sync<4>();
}

/* two floats -> the mma input type, packed as one register */
template <bool BF> struct elem2;
template <> struct elem2<false> {
    using T = __half2;
    static __device__ __forceinline__ T pack(float a, float b) { return __floats2half2_rn(a, b); }
};
template <> struct elem2<true> {
    using T = __nv_bfloat162;
    static __device__ __forceinline__ T pack(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

/* ---- block pieces ------------------------------------------------------------- */

/* element offset of token t of sequence table tab, layer il (attn.cu's addressing) */
__device__ __forceinline__ size_t tok_off(const ds_cu_kv_view &kv, int il, int tab, int32_t t) {
    const int32_t id = kv.tables[(size_t)tab * kv.max_blocks + t / kv.block_tokens];
    return (((size_t)il * kv.n_blocks + id) * kv.block_tokens + t % kv.block_tokens) * kv.row_dim;
}

/* Tokens [*tb, *te] of a row ending at `last` that split `split` covers:
 * chunks of whole NT-token tiles, at least min_chunk long; empty when *tb > *te. */
__device__ __forceinline__ int split_chunk(int32_t last, int n_split, int nt, int min_chunk) {
    int chunk = (last + n_split) / n_split; /* ceil((last + 1) / n_split) */
    chunk = (chunk + nt - 1) / nt * nt;
    return chunk < min_chunk ? min_chunk : chunk;
}
__device__ __forceinline__ void split_range(int32_t last, int split, int n_split, int nt, int min_chunk, int *tb,
                                            int *te) {
    const int chunk = split_chunk(last, n_split, nt, min_chunk);
    *tb = split * chunk;
    *te = min(last, *tb + chunk - 1);
}
/* how many splits of such a row have tokens (the first ones) */
__device__ __forceinline__ int splits_used(int32_t last, int n_split, int nt, int min_chunk) {
    return last < 0 ? 0 : min(n_split, last / split_chunk(last, n_split, nt, min_chunk) + 1);
}

/* The power of two 2^e a head is scaled by for f16: its absmax (each lane's
 * part, reduced over the warp here) lands in [2^11, 2^12); 0 for NaN/inf. */
__device__ __forceinline__ int query_exp(float amax) {
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    int e = 0;
    if (amax > 0.f && amax <= 3.4e38f) { /* amax < 2^x; NaN/inf: left unscaled */
        frexpf(amax, &e);
        e = max(-120, min(120, e - 12));
    }
    return e;
}

/* q[i][0..D) = the query of head h0 + i (zero for heads past n_head) in the
 * mma type, and qscale[i] = the score scale in log2 units, 2^e included.
 * Lane l holds the pairs 2c, 2c + 1 for c = l, l + 32, ... (at most QPAIRS,
 * which covers D <= MAX_LORA + MAX_ROPE) in registers, so every load of the
 * head is in flight at once. A loop that read the head twice (absmax, then
 * packing) waited on one L2 round trip per 32 values each time: 355.0 against
 * 343.8 tok/s tg128 on ds10 for this form (H200, session 8), and 341.3 / 319.2
 * / 277.6 against 334.1 / 311.0 / 270.3 at depths 0 / 4096 / 32768. */
constexpr int QPAIRS = (MAX_LORA + MAX_ROPE) / 64;

/* Where element (row, col) of a shared [rows][D] f16/bf16 tile lives, in halves:
 * padded_rows: row-major with a pitch of QS halves (mla_tc.cu's ldmatrix tiles);
 * sw128_rows: the 128-byte-swizzled K-major layout wgmma reads (mla_wg.cu):
 * columns in atoms of 64, atom a holding every row's columns [64a, 64a + 64)
 * as 128-byte lines, the line's 16-byte chunk j stored at j ^ (row % 8). */
struct padded_rows {
    int qs;
    __device__ __forceinline__ int at(int row, int col) const { return row * qs + col; }
};
struct sw128_rows {
    int rows;
    __device__ __forceinline__ int at(int row, int col) const {
        return (col >> 6) * rows * 64 + row * 64 + ((((col >> 3) & 7) ^ (row & 7)) << 3) + (col & 7);
    }
};

template <bool BF, int MT, int NW, class Layout>
__device__ void load_query(uint16_t *qs, float *qscale, const mla_tc_params &p, int r, int h0, int D, Layout lay) {
    using E = elem2<BF>;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, L = p.kv_lora;
    for (int i = warp; i < 16 * MT; i += NW) {
        const int h = h0 + i;
        /* a pair (2c, 2c + 1) never straddles an 8-column chunk */
        auto dst = [&](int c) -> typename E::T & { return *(typename E::T *)(qs + lay.at(i, 2 * c)); };
        if (h >= p.n_head) {
            for (int c = lane; c < D / 2; c += 32) dst(c) = E::pack(0.f, 0.f);
            if (lane == 0) qscale[i] = 0.f;
            continue;
        }
        const float *qa = p.qabs + ((size_t)r * p.n_head + h) * L;
        const float *qp = p.q + ((size_t)r * p.n_head + h) * p.d_qk + p.d_nope; /* query entry L + j */
        /* L is even: a pair never straddles qabs / q_pe */
        float2 v[QPAIRS];
#pragma unroll
        for (int t = 0; t < QPAIRS; t++) {
            const int j = 2 * (lane + 32 * t);
            v[t] = j < L ? make_float2(qa[j], qa[j + 1]) : j < D ? make_float2(qp[j - L], qp[j - L + 1])
                                                                : make_float2(0.f, 0.f);
        }
        float amax = 0.f;
        if constexpr (!BF)
#pragma unroll
            for (int t = 0; t < QPAIRS; t++) amax = fmaxf(amax, fmaxf(fabsf(v[t].x), fabsf(v[t].y)));
        const int e = BF ? 0 : query_exp(amax);
        const float sc = ldexpf(1.f, -e);
#pragma unroll
        for (int t = 0; t < QPAIRS; t++) {
            const int c = lane + 32 * t;
            if (2 * c < D) dst(c) = E::pack(v[t].x * sc, v[t].y * sc);
        }
        if (lane == 0) qscale[i] = p.kq_scale * LOG2E * ldexpf(1.f, e);
    }
}

/* max (or sum) of the four lanes that share a C row */
/* One tile's scores in this lane (rows g and g + 8 of the mma layout: NB
 * n8 blocks, at(i, k) element k of block i, k 0-1 row g and 2-3 row g + 8,
 * columns t0 + 8 i + (k & 1)): scaled to log2 units by the rows' query
 * scales, tokens past te set to -inf, and the lane's max of each row. */
template <int NB, typename At>
__device__ __forceinline__ void scale_mask_max(At at, float sc0, float sc1, int t0, int te, float &x0, float &x1) {
    x0 = -INFINITY, x1 = -INFINITY;
#pragma unroll
    for (int i = 0; i < NB; i++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const bool ok = t0 + i * 8 + e <= te;
            at(i, e) = ok ? at(i, e) * sc0 : -INFINITY;
            at(i, 2 + e) = ok ? at(i, 2 + e) * sc1 : -INFINITY;
            x0 = fmaxf(x0, at(i, e));
            x1 = fmaxf(x1, at(i, 2 + e));
        }
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

/* Where head h's output row of batch row r goes: olat when the row is not
 * split, else split `split`'s partial, whose max m and sum l the one lane
 * that `owns` them writes for the combine. Rows of heads past n_head are
 * not written (the caller tests h < n_head before storing). */
__device__ __forceinline__ float *out_row(const mla_tc_params &p, int r, int split, int h, bool owns, float m,
                                          float l) {
    const int L = p.kv_lora;
    if (p.n_split == 1) return p.olat + ((size_t)r * p.n_head + h) * L;
    const size_t at = ((size_t)r * p.n_split + split) * p.n_head + h;
    if (owns && h < p.n_head) {
        p.pm[at] = m;
        p.pl[at] = l;
    }
    return p.po + at * L;
}

/* A block with no tokens (a split past the row's end, or pos < 0): an empty
 * partial, or zeros when it writes olat itself. */
template <int MT>
__device__ void write_empty(const mla_tc_params &p, int r, int split, int h0) {
    const int L = p.kv_lora;
    for (int i = threadIdx.x; i < 16 * MT * L; i += blockDim.x) {
        const int h = h0 + i / L;
        if (h >= p.n_head) continue;
        if (p.n_split == 1) {
            p.olat[((size_t)r * p.n_head + h) * L + i % L] = 0.f;
        } else if (i % L == 0) {
            const size_t at = ((size_t)r * p.n_split + split) * p.n_head + h;
            p.pm[at] = -INFINITY;
            p.pl[at] = 0.f;
        }
    }
}

} // namespace
#endif
