/* moe.cu: routed experts in two launches — gate+up+SiLU for every (row,
 * slot) pair, then the down projection that sums the k weighted experts of
 * a row in a fixed order (no atomics: results do not depend on scheduling).
 * Types of the warp-row path (dot_strided.cuh): a lane group per (4 gate/up
 * rows, slot) reads the gate and the up rows in one kernel; down gives each
 * of 8 warps its own expert. Other types: a block per output row. Weights are
 * re-read per (row, slot), so this suits decode (a few rows); prefill
 * groups rows by expert (cuda_backend.c). */
#include "moe.h"
#include "dot_strided.cuh"
#include "cuda_check.h"

/* one block per (output row, slot): block-wide dots as in gemv.cu's block
 * path (q2_K, misaligned and non-K types), so the decode path and the grouped
 * prefill path give the same bits */
template <int TG, int TU>
__global__ void __launch_bounds__(DS_CU_ROW_WARPS * 32)
moe_gate_up_kernel(ds_cu_exps gate, ds_cu_exps up, int64_t E, int64_t F, const float *__restrict__ y,
                   const int32_t *__restrict__ ids, int k, float *__restrict__ act) {
    const int64_t f = blockIdx.x;
    const int slot = blockIdx.y;
    const int e = ids[slot]; /* the same in the whole block: the barriers inside stay uniform */
    float a = 0.f;
    if (e >= 0) {
        const float *x = y + (size_t)(slot / k) * E;
        const float g = ds_cu_block_dot<TG>((const uint8_t *)gate.w + e * gate.expert_bytes + f * gate.row_bytes, x, (int)E);
        const float u = ds_cu_block_dot<TU>((const uint8_t *)up.w + e * up.expert_bytes + f * up.row_bytes, x, (int)E);
        a = g / (1.0f + expf(-g)) * u;
    }
    if (threadIdx.x == 0) act[(size_t)slot * F + f] = a;
}

template <int TD>
__global__ void __launch_bounds__(DS_CU_ROW_WARPS * 32)
moe_down_kernel(ds_cu_exps down, int64_t E, int64_t F, const float *__restrict__ act, const int32_t *__restrict__ ids,
                const float *__restrict__ weights, int k, float *out) {
    const int64_t i = blockIdx.x;
    const int r = blockIdx.y;
    float tot = 0.f;
    for (int j = 0; j < k; j++) {
        const int e = ids[r * k + j];
        if (e < 0) continue;
        const float d = ds_cu_block_dot<TD>((const uint8_t *)down.w + e * down.expert_bytes + i * down.row_bytes,
                                            act + ((size_t)r * k + j) * F, (int)F);
        tot += weights[r * k + j] * d;
    }
    if (threadIdx.x == 0) out[(size_t)r * E + i] += tot;
}

#define MOE_WR_WARPS 8 /* warps per block of the warp-row kernels */
#define MOE_WR_ROWS 4  /* consecutive rows per lane group (they share x loads) */
/* The MoE kernels load q3_K/q6_K/q8_0 shares straight from global memory:
 * staging them (the GEMV's default) measured slower here, 838 against 930
 * GB/s on an H200 (docs/performance.md); the sums are the same either way. */
#define MOE_WR_STAGE false

/* a lane group per (MOE_WR_ROWS rows f, slot): gate and up rows dotted with
 * y, the same per-row sums as the GEMV (so decode = grouped prefill) */
template <int T>
__global__ void __launch_bounds__(MOE_WR_WARPS * 32)
moe_gate_up_wr_kernel(ds_cu_exps gate, ds_cu_exps up, int64_t E, int64_t F, const float *__restrict__ y,
                      const int32_t *__restrict__ ids, int k, float *__restrict__ act, int LG) {
    constexpr int R = MOE_WR_ROWS;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % LG;
    const int64_t f0 = (((int64_t)blockIdx.x * MOE_WR_WARPS + warp) * (32 / LG) + lane / LG) * R;
    const int nrow = F - f0 < R ? (int)(F - f0) : R;
    const int slot = blockIdx.y;
    const int e = ids[slot];
    float g[R][1], u[R][1];
#pragma unroll
    for (int i = 0; i < R; i++) g[i][0] = u[i][0] = 0.f;
    uint8_t *stage = nullptr; /* unstaged: not read */
    const float *x = y + (size_t)(slot / k) * E;
    const int64_t nsb = E / ds_cu_wr<T>::SBE, fr = e >= 0 && nrow > 0 ? f0 : 0;
    const size_t ex = e >= 0 ? (size_t)e : 0;
    const int nr_ = e >= 0 ? nrow : 0; /* every lane calls: the staging has warp barriers */
    ds_cu_wr_partial<T, 1, R, MOE_WR_STAGE>((const uint8_t *)gate.w + ex * gate.expert_bytes + fr * gate.row_bytes,
                                            gate.row_bytes, nr_, nsb, x, 0, 1, LG, sub, g, stage);
    ds_cu_wr_partial<T, 1, R, MOE_WR_STAGE>((const uint8_t *)up.w + ex * up.expert_bytes + fr * up.row_bytes,
                                            up.row_bytes, nr_, nsb, x, 0, 1, LG, sub, u, stage);
#pragma unroll
    for (int i = 0; i < R; i++) {
        const float gs = ds_cu_group_sum(g[i][0], LG), us = ds_cu_group_sum(u[i][0], LG);
        if (sub == 0 && i < nrow) act[(size_t)slot * F + f0 + i] = e >= 0 ? gs / (1.0f + expf(-gs)) * us : 0.f;
    }
}

/* a block per (MOE_WR_ROWS * 32/LG outputs i, row r); warp j takes slots j,
 * j+8, ...; the weighted sum runs over slots in order, as in moe_down_kernel
 * and the combine */
template <int T>
__global__ void __launch_bounds__(MOE_WR_WARPS * 32)
moe_down_wr_kernel(ds_cu_exps down, int64_t E, int64_t F, const float *__restrict__ act,
                   const int32_t *__restrict__ ids, const float *__restrict__ weights, int k, float *out, int LG) {
    constexpr int R = MOE_WR_ROWS;
    __shared__ float red[MOE_WR_WARPS][32 * R];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % LG;
    const int per_block = (32 / LG) * R; /* outputs of this block */
    const int64_t ib = (int64_t)blockIdx.x * per_block, i0 = ib + (lane / LG) * R;
    const int nrow = E - i0 < R ? (int)(E - i0) : R;
    const int r = blockIdx.y;
    const int64_t nsb = F / ds_cu_wr<T>::SBE;
    float tot = 0.f;
    for (int j0 = 0; j0 < k; j0 += MOE_WR_WARPS) {
        const int j = j0 + warp;
        const int e = j < k ? ids[r * k + j] : -1;
        float d[R][1];
#pragma unroll
        for (int i = 0; i < R; i++) d[i][0] = 0.f;
        const size_t ex = e >= 0 ? (size_t)e : 0;
        const int64_t ir = e >= 0 && nrow > 0 ? i0 : 0;
        ds_cu_wr_partial<T, 1, R, MOE_WR_STAGE>((const uint8_t *)down.w + ex * down.expert_bytes + ir * down.row_bytes,
                                                down.row_bytes, e >= 0 ? nrow : 0, nsb,
                                                act + ((size_t)r * k + (e >= 0 ? j : 0)) * F, 0, 1, LG, sub, d, nullptr);
#pragma unroll
        for (int i = 0; i < R; i++) {
            const float ds = ds_cu_group_sum(d[i][0], LG);
            if (sub == 0) red[warp][(lane / LG) * R + i] = ds;
        }
        __syncthreads();
        if ((int)threadIdx.x < per_block)
            for (int jj = 0; jj < MOE_WR_WARPS && j0 + jj < k; jj++)
                if (ids[r * k + j0 + jj] >= 0) tot += weights[r * k + j0 + jj] * red[jj][threadIdx.x];
        __syncthreads();
    }
    if ((int)threadIdx.x < per_block && ib + threadIdx.x < E) out[(size_t)r * E + ib + threadIdx.x] += tot;
}

/* the warp-row path reads these experts of `rows` rows of K (if staged:
 * each expert's rows start and end 16-byte aligned) */
template <int T> static bool moe_wr_usable(const ds_cu_exps *x, int64_t K, int64_t rows) {
    if constexpr (ds_cu_wr<T>::ok) {
        const size_t A = MOE_WR_STAGE && ds_cu_wr_staged<T>::on ? 16 : ds_cu_wr<T>::ALIGN;
        return K % ds_cu_wr<T>::SBE == 0 && (uintptr_t)x->w % A == 0 && x->row_bytes % ds_cu_wr<T>::ALIGN == 0 &&
               x->expert_bytes % A == 0 && (size_t)rows * x->row_bytes % A == 0;
    } else {
        return false;
    }
}

/* gate/up pairs instantiated: same type (every mix we know), else an error */
template <int T> static void launch_gate_up(const ds_cu_moe_params *p) {
    if constexpr (ds_cu_wr<T>::ok) {
        if (moe_wr_usable<T>(&p->gate, p->E, p->F) && moe_wr_usable<T>(&p->up, p->E, p->F)) {
            const int lg = ds_cu_wr_lanes(p->E / ds_cu_wr<T>::SBE, ds_cu_wr<T>::LPS);
            const int64_t per_block = (int64_t)MOE_WR_WARPS * (32 / lg) * MOE_WR_ROWS;
            const dim3 grid((unsigned)((p->F + per_block - 1) / per_block), (unsigned)(p->n * p->k));
            moe_gate_up_wr_kernel<T><<<grid, MOE_WR_WARPS * 32, 0, p->stream>>>(p->gate, p->up, p->E, p->F, p->y,
                                                                                p->ids, p->k, p->act, lg);
            return;
        }
    }
    const dim3 grid((unsigned)p->F, (unsigned)(p->n * p->k));
    moe_gate_up_kernel<T, T><<<grid, DS_CU_ROW_WARPS * 32, 0, p->stream>>>(p->gate, p->up, p->E, p->F, p->y, p->ids, p->k,
                                                                     p->act);
}
template <int T> static void launch_down(const ds_cu_moe_params *p) {
    if constexpr (ds_cu_wr<T>::ok) {
        if (moe_wr_usable<T>(&p->down, p->F, p->E)) {
            const int lg = ds_cu_wr_lanes(p->F / ds_cu_wr<T>::SBE, ds_cu_wr<T>::LPS);
            const int per_block = 32 / lg * MOE_WR_ROWS;
            const dim3 grid((unsigned)((p->E + per_block - 1) / per_block), (unsigned)p->n);
            moe_down_wr_kernel<T><<<grid, MOE_WR_WARPS * 32, 0, p->stream>>>(p->down, p->E, p->F, p->act, p->ids,
                                                                             p->weights, p->k, p->out, lg);
            return;
        }
    }
    const dim3 grid((unsigned)p->E, (unsigned)p->n);
    moe_down_kernel<T><<<grid, DS_CU_ROW_WARPS * 32, 0, p->stream>>>(p->down, p->E, p->F, p->act, p->ids, p->weights, p->k,
                                                               p->out);
}

extern "C" int ds_cu_moe(const ds_cu_moe_params *p) {
    if (p->n <= 0) return 0;
    if (p->E % 32 || p->F % 32 || p->gate.type != p->up.type) {
        fprintf(stderr, "cuda error %s:%d: moe needs E, F multiples of 32 and gate/up of one type\n", __FILE__,
                __LINE__);
        return (int)cudaErrorInvalidValue;
    }
    switch (p->gate.type) {
#define X(t) case t: launch_gate_up<t>(p); break;
        DS_CU_FOR_TYPES(X)
#undef X
    default: return (int)cudaErrorInvalidValue;
    }
    DS_CU_TRY_LAUNCH();
    switch (p->down.type) {
#define X(t) case t: launch_down<t>(p); break;
        DS_CU_FOR_TYPES(X)
#undef X
    default: return (int)cudaErrorInvalidValue;
    }
    DS_CU_TRY_LAUNCH();
    return 0;
}

/* slot_row names each (row, slot)'s output row of d; without it (NULL) the
 * pair's own row r * k + j, used where ids[r * k + j] >= 0 */
__global__ void moe_combine_kernel(const float *__restrict__ d, const int32_t *__restrict__ slot_row,
                                   const int32_t *__restrict__ ids, const float *__restrict__ weights, int k,
                                   int64_t E, float *out) {
    const int r = blockIdx.y;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= E) return;
    float tot = 0.f;
    for (int j = 0; j < k; j++) {
        const int p = slot_row ? slot_row[r * k + j] : ids[r * k + j] >= 0 ? r * k + j : -1;
        if (p >= 0) tot += weights[r * k + j] * d[(size_t)p * E + i];
    }
    out[(size_t)r * E + i] += tot;
}

extern "C" int ds_cu_moe_combine(const float *d, const int32_t *slot_row, const float *weights, int n, int k,
                                 int64_t E, float *out, cudaStream_t s) {
    if (n <= 0) return 0;
    moe_combine_kernel<<<dim3((unsigned)((E + 255) / 256), (unsigned)n), 256, 0, s>>>(d, slot_row, nullptr, weights,
                                                                                     k, E, out);
    DS_CU_TRY_LAUNCH();
    return 0;
}

extern "C" int ds_cu_moe_combine_pairs(const float *d, const int32_t *ids, const float *weights, int n, int k,
                                       int64_t E, float *out, cudaStream_t s) {
    if (n <= 0) return 0;
    moe_combine_kernel<<<dim3((unsigned)((E + 255) / 256), (unsigned)n), 256, 0, s>>>(d, nullptr, ids, weights, k,
                                                                                     E, out);
    DS_CU_TRY_LAUNCH();
    return 0;
}
