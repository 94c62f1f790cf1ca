/* moe.cu: routed experts in two launches — gate+up+SiLU for every (row,
 * slot) pair, then the down projection that sums the k weighted experts of
 * a row in a fixed order (no atomics: results do not depend on scheduling).
 * Block per output row; weights are re-read per (row, slot), so this suits
 * decode (a few rows); prefill groups rows by expert (cuda_backend.c). */
#include "moe.h"
#include "dot_strided.cuh"
#include "cuda_check.h"

/* one block per (output row, slot): block-wide dots as in gemv.cu, so the
 * decode path and the grouped prefill path give the same bits */
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

/* gate/up pairs instantiated: same type (every mix we know), else an error */
template <int T> static void launch_gate_up(const ds_cu_moe_params *p) {
    const dim3 grid((unsigned)p->F, (unsigned)(p->n * p->k));
    moe_gate_up_kernel<T, T><<<grid, DS_CU_ROW_WARPS * 32, 0, p->stream>>>(p->gate, p->up, p->E, p->F, p->y, p->ids, p->k,
                                                                     p->act);
}
template <int T> static void launch_down(const ds_cu_moe_params *p) {
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

__global__ void moe_combine_kernel(const float *__restrict__ d, const int32_t *__restrict__ slot_row,
                                   const float *__restrict__ weights, int k, int64_t E, float *out) {
    const int r = blockIdx.y;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= E) return;
    float tot = 0.f;
    for (int j = 0; j < k; j++) {
        const int p = slot_row[r * k + j];
        if (p >= 0) tot += weights[r * k + j] * d[(size_t)p * E + i];
    }
    out[(size_t)r * E + i] += tot;
}

extern "C" int ds_cu_moe_combine(const float *d, const int32_t *slot_row, const float *weights, int n, int k,
                                 int64_t E, float *out, cudaStream_t s) {
    if (n <= 0) return 0;
    moe_combine_kernel<<<dim3((unsigned)((E + 255) / 256), (unsigned)n), 256, 0, s>>>(d, slot_row, weights, k, E, out);
    DS_CU_TRY_LAUNCH();
    return 0;
}
