/* rownorm.cuh: the RMSNorm row math that rowops.cu's plain kernel and
 * gemv_q8.cu's norm-and-quantize kernel share, so both write the same bits.
 *
 * One block of RN_THREADS per row; thread t owns elements t, t + RN_THREADS,
 * ... and sums their squares in double in that order. Rows up to RN_MAX_DIM
 * are read into registers with every load issued before the first add:
 * a decode step's norms are single-block kernels, and one L2 round trip per
 * element (the loop form) made each ~7 us (ncu, H200, session 7). */
#ifndef DS_CUDA_ROWNORM_CUH
#define DS_CUDA_ROWNORM_CUH

#define RN_THREADS 256
#define RN_MAXV 32 /* elements a thread holds */
#define RN_MAX_DIM (RN_THREADS * RN_MAXV)

/* thread's elements of row x (dim <= RN_MAX_DIM) into v, 0 past the end */
__device__ __forceinline__ void rn_load(const float *x, int dim, float v[RN_MAXV]) {
#pragma unroll
    for (int k = 0; k < RN_MAXV; k++) {
        const int i = threadIdx.x + k * RN_THREADS;
        v[k] = i < dim ? x[i] : 0.f;
    }
}

/* 1 / sqrt(mean square + eps) of the row from each thread's partial sum of
 * squares; a block barrier (every read of x is done when it returns) */
__device__ __forceinline__ float rn_scale(double ss, int dim, float eps) {
    __shared__ double part[RN_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    double tot = 0;
#pragma unroll
    for (int i = 0; i < RN_THREADS / 32; i++) tot += part[i];
    return (float)(1.0 / sqrt(tot / dim + eps));
}

/* the scale of row x: registers when it fits (v then holds the row),
 * else a loop over it (v unused); the sums are the same either way */
__device__ __forceinline__ float rn_row_scale(const float *x, int dim, float eps, float v[RN_MAXV]) {
    double ss = 0;
    if (dim <= RN_MAX_DIM) {
        rn_load(x, dim, v);
#pragma unroll
        for (int k = 0; k < RN_MAXV; k++) ss += (double)v[k] * v[k]; /* zeros past the end add nothing */
    } else {
        for (int i = threadIdx.x; i < dim; i += RN_THREADS) ss += (double)x[i] * x[i];
    }
    return rn_scale(ss, dim, eps);
}

#endif
