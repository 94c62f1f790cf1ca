/* rowops.cu: RMSNorm, residual add, SiLU gating, row gather and row argmax
 * on the device. One block per row for the norm (double sum: the norm is
 * cheap and this keeps it equal to ds_rms_norm up to the final f32
 * rounding; the row math is rownorm.cuh's, shared with gemv_q8.cu's
 * norm-and-quantize kernel for the int8 products). */
#include "rowops.h"
#include "cuda_check.h"
#include "rownorm.cuh"

#include <climits>

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

__global__ void __launch_bounds__(1024) argmax_kernel(const float *__restrict__ x, int64_t dim,
                                                      int32_t *__restrict__ out) {
    const float *r = x + (size_t)blockIdx.x * dim;
    float bv = -INFINITY;
    int bi = INT_MAX;
    /* each thread sees increasing indices: a later equal value never wins */
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = r[i];
        if (v > bv || (v == bv && bi == INT_MAX)) bv = v, bi = (int)i;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_down_sync(0xffffffffu, bv, o);
        const int oi = __shfl_down_sync(0xffffffffu, bi, o);
        if (argmax_better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        const int nw = (blockDim.x + 31) >> 5;
        bv = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : INT_MAX;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_down_sync(0xffffffffu, bv, o);
            const int oi = __shfl_down_sync(0xffffffffu, bi, o);
            if (argmax_better(ov, oi, bv, bi)) bv = ov, bi = oi;
        }
        if (lane == 0) out[blockIdx.x] = isnan(r[0]) || bi == INT_MAX ? 0 : bi;
    }
}

extern "C" int ds_cu_argmax_rows(const float *x, int n, int64_t dim, int32_t *out, cudaStream_t s) {
    if (n <= 0 || dim <= 0) return 0;
    argmax_kernel<<<n, 1024, 0, s>>>(x, dim, out);
    DS_CU_TRY_LAUNCH();
    return 0;
}
