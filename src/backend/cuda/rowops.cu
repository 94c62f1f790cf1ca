/* rowops.cu: RMSNorm, residual add, SiLU gating, row gather and row argmax
 * on the device. One block per row for the norm (double sum: the norm is
 * cheap and this keeps it equal to ds_rms_norm up to the final f32
 * rounding; the row math is rownorm.cuh's, shared with gemv_q8.cu's
 * norm-and-quantize kernel for the int8 products). */
#include "rowops.h"
#include "cuda_check.h"
#include "rownorm.cuh"

#include <climits>
#include <cooperative_groups.h>

namespace cg = cooperative_groups;

__global__ void __launch_bounds__(RN_THREADS)
rmsnorm_kernel(const float *__restrict__ x, int64_t ldx, const float *__restrict__ w, int dim, float eps,
               float *y, int64_t ldy) {
    const float *xr = x + (size_t)blockIdx.x * ldx;
    float *yr = y + (size_t)blockIdx.x * ldy;
    float v[RN_MAXV];
    const float scale = rn_row_scale(xr, dim, eps, v);
    /* every thread read x before the barrier in rn_row_scale (y may alias x) */
    if (dim <= RN_MAX_DIM) {
#pragma unroll
        for (int k = 0; k < RN_MAXV; k++) {
            const int i = threadIdx.x + k * RN_THREADS;
            if (i < dim) yr[i] = v[k] * scale * w[i];
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += RN_THREADS) yr[i] = xr[i] * scale * w[i];
    }
}

extern "C" int ds_cu_rmsnorm(const float *x, int64_t ldx, const float *w, int dim, float eps, int n, float *y,
                             int64_t ldy, cudaStream_t s) {
    if (n <= 0) return 0;
    rmsnorm_kernel<<<n, RN_THREADS, 0, s>>>(x, ldx, w, dim, eps, y, ldy);
    DS_CU_TRY_LAUNCH();
    return 0;
}

__global__ void add_kernel(float *dst, const float *__restrict__ src, int64_t count) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] += src[i];
}

extern "C" int ds_cu_add(float *dst, const float *src, int64_t count, cudaStream_t s) {
    if (count <= 0) return 0;
    add_kernel<<<(unsigned)((count + 255) / 256), 256, 0, s>>>(dst, src, count);
    DS_CU_TRY_LAUNCH();
    return 0;
}

__global__ void silu_mul_kernel(const float *__restrict__ g, const float *__restrict__ u, int64_t ldg, int64_t F,
                                float *a, int64_t lda) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= F) return;
    const size_t r = blockIdx.y;
    const float gv = g[r * ldg + i];
    /* same formula as ref's silu_d, in f32 */
    a[r * lda + i] = gv / (1.0f + expf(-gv)) * u[r * ldg + i];
}

extern "C" int ds_cu_silu_mul(const float *g, const float *u, int64_t ldg, int64_t F, int n, float *a, int64_t lda,
                              cudaStream_t s) {
    if (n <= 0 || F <= 0) return 0;
    silu_mul_kernel<<<dim3((unsigned)((F + 255) / 256), (unsigned)n), 256, 0, s>>>(g, u, ldg, F, a, lda);
    DS_CU_TRY_LAUNCH();
    return 0;
}

__global__ void gather_kernel(const float *__restrict__ src, const int32_t *__restrict__ idx, int64_t dim,
                              float *__restrict__ dst) {
    const float *sr = src + (size_t)idx[blockIdx.x] * dim;
    float *dr = dst + (size_t)blockIdx.x * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dr[i] = sr[i];
}

extern "C" int ds_cu_gather_rows(const float *src, const int32_t *idx, int n, int64_t dim, float *dst,
                                 cudaStream_t s) {
    if (n <= 0) return 0;
    gather_kernel<<<n, 256, 0, s>>>(src, idx, dim, dst);
    DS_CU_TRY_LAUNCH();
    return 0;
}

/* (v, i) beats (bv, bi): larger, or equal and earlier. A NaN v never beats:
 * both comparisons are false. bi == INT_MAX is "nothing yet", so an -inf
 * still counts as a value. */
__device__ __forceinline__ bool argmax_better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

/* Row argmax over a cluster of AMX_CLUSTER blocks (sm_90+ thread-block
 * clusters): one 1024-thread block reading a 129280-wide row of logits took
 * 47 us (10 GB/s: too few loads in flight on one SM; ncu, H200, session 8).
 * Thread t of block b reads float4s t + 1024 b, then every 8192th (scalar
 * loads where the row is not 16-byte aligned), so each thread sees
 * increasing indices and a later equal value never wins; the blocks'
 * winners meet in block 0 through distributed shared memory. */
#define AMX_CLUSTER 8
#define AMX_THREADS 1024
__device__ __forceinline__ void argmax_take(float v, int64_t i, float &bv, int &bi) {
    if (v > bv || (v == bv && bi == INT_MAX)) bv = v, bi = (int)i;
}
__device__ __forceinline__ void argmax_warp(float &bv, int &bi) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_down_sync(0xffffffffu, bv, o);
        const int oi = __shfl_down_sync(0xffffffffu, bi, o);
        if (argmax_better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
}
__global__ void __cluster_dims__(AMX_CLUSTER, 1, 1) __launch_bounds__(AMX_THREADS)
argmax_kernel(const float *__restrict__ x, int64_t dim, int32_t *__restrict__ out) {
    cg::cluster_group cl = cg::this_cluster();
    const float *r = x + (size_t)blockIdx.y * dim;
    const int64_t t0 = (int64_t)cl.block_rank() * AMX_THREADS + threadIdx.x, stride = AMX_CLUSTER * AMX_THREADS;
    float bv = -INFINITY;
    int bi = INT_MAX;
    int64_t i = t0;
    if (((uintptr_t)r & 15) == 0) {
        const int64_t n4 = dim / 4;
        const float4 *r4 = (const float4 *)r;
#pragma unroll 4
        for (int64_t c = t0; c < n4; c += stride) {
            const float4 v = r4[c];
            argmax_take(v.x, 4 * c, bv, bi);
            argmax_take(v.y, 4 * c + 1, bv, bi);
            argmax_take(v.z, 4 * c + 2, bv, bi);
            argmax_take(v.w, 4 * c + 3, bv, bi);
        }
        i = 4 * n4 + t0; /* the last dim % 4 */
    }
    for (; i < dim; i += stride) argmax_take(r[i], i, bv, bi);
    argmax_warp(bv, bi);
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) { /* the block's winner into sv[0], si[0] */
        bv = sv[lane];
        bi = si[lane];
        argmax_warp(bv, bi);
        if (lane == 0) sv[0] = bv, si[0] = bi;
    }
    cl.sync(); /* every block's winner written */
    if (cl.block_rank() == 0 && warp == 0) {
        bv = -INFINITY;
        bi = INT_MAX;
        if (lane < AMX_CLUSTER) {
            bv = *cl.map_shared_rank(&sv[0], lane);
            bi = *cl.map_shared_rank(&si[0], lane);
        }
        argmax_warp(bv, bi);
        if (lane == 0) out[blockIdx.y] = isnan(r[0]) || bi == INT_MAX ? 0 : bi;
    }
    cl.sync(); /* no block leaves while block 0 reads its shared memory */
}

extern "C" int ds_cu_argmax_rows(const float *x, int n, int64_t dim, int32_t *out, cudaStream_t s) {
    if (n <= 0 || dim <= 0) return 0;
    if (n > 65535) return (int)cudaErrorInvalidValue;
    argmax_kernel<<<dim3(AMX_CLUSTER, (unsigned)n), AMX_THREADS, 0, s>>>(x, dim, out);
    DS_CU_TRY_LAUNCH();
    return 0;
}
