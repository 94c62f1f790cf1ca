/* attn.cu: RoPE, latent-cache store and the absorbed MLA core. The core is
 * one block per (row, head) walking the row's cache blocks in tiles of 32
 * tokens with an online softmax (running max and sum), f32 accumulate.
 * Not split-KV yet: long contexts at batch 1 use only n_head blocks. */
#include "attn.h"
#include "cuda_check.h"
#include "rownorm.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define MLA_THREADS 128
#define MLA_TILE 32
#define MLA_MAX_LORA 1024 /* kv_lora <= MLA_THREADS * 8 */

/* angle pos*freq[i] and its sine and cosine in double, as ds_rope_apply
 * does, so host and device agree to f32 rounding */
__device__ __forceinline__ void rope_angle(int i, const float *freq, int32_t pos, double *sn, double *cs) {
    sincos((double)pos * (double)freq[i], sn, cs);
}

/* the adjacent pair (2i, 2i+1) rotated by an angle of that sine and cosine */
__device__ __forceinline__ void rope_rotate(float *x, int i, double sn, double cs) {
    const double x0 = x[2 * i], x1 = x[2 * i + 1];
    x[2 * i] = (float)(x0 * cs - x1 * sn);
    x[2 * i + 1] = (float)(x0 * sn + x1 * cs);
}

__device__ __forceinline__ void rope_pair(float *x, int i, const float *freq, int32_t pos) {
    double sn, cs;
    rope_angle(i, freq, pos, &sn, &cs);
    rope_rotate(x, i, sn, cs);
}

#define ROPE_HEADS 16 /* heads per block of rope_q_kernel */
#define ROPE_MAX_HALF 128

/* grid (rows, head groups of ROPE_HEADS). Every head of a row turns by the
 * same angles: the d_rope/2 double sincos are computed once per block into
 * shared memory (one per pair, not one per head and pair: at 128 heads a
 * single block's 4096 serial double sincos took ~15 us a layer), then each
 * thread rotates pairs. */
__global__ void rope_q_kernel(float *q, int n_head, int d_qk, int d_nope, int d_rope, const float *__restrict__ freq,
                              const int32_t *__restrict__ pos) {
    __shared__ double ssn[ROPE_MAX_HALF], scs[ROPE_MAX_HALF];
    const int r = blockIdx.x, half = d_rope / 2, h0 = blockIdx.y * ROPE_HEADS;
    const int nh = n_head - h0 < ROPE_HEADS ? n_head - h0 : ROPE_HEADS;
    for (int i = threadIdx.x; i < half; i += blockDim.x) rope_angle(i, freq, pos[r], &ssn[i], &scs[i]);
    __syncthreads();
    for (int j = threadIdx.x; j < nh * half; j += blockDim.x) {
        const int h = h0 + j / half, i = j % half;
        rope_rotate(q + ((size_t)r * n_head + h) * d_qk + d_nope, i, ssn[i], scs[i]);
    }
}

extern "C" int ds_cu_rope_q(float *q, int n, int n_head, int d_qk, int d_nope, int d_rope, const float *freq,
                            const int32_t *pos, cudaStream_t s) {
    if (n <= 0 || d_rope <= 0) return 0;
    if (d_rope / 2 > ROPE_MAX_HALF) return (int)cudaErrorInvalidValue;
    rope_q_kernel<<<dim3((unsigned)n, (unsigned)((n_head + ROPE_HEADS - 1) / ROPE_HEADS)), 128, 0, s>>>(
        q, n_head, d_qk, d_nope, d_rope, freq, pos);
    DS_CU_TRY_LAUNCH();
    return 0;
}

template <int KT> __device__ __forceinline__ float kv_get(const void *p, size_t i) {
    if constexpr (KT == 0) return ((const float *)p)[i];
    else if constexpr (KT == 1) return __half2float(((const __half *)p)[i]);
    else return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
template <int KT> __device__ __forceinline__ void kv_put(void *p, size_t i, float v) {
    if constexpr (KT == 0) ((float *)p)[i] = v;
    else if constexpr (KT == 1) ((__half *)p)[i] = __float2half_rn(v);
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}

/* element offset of (layer, row r's own position t) in the pool */
__device__ __forceinline__ size_t kv_row_off(const ds_cu_kv_view &kv, int il, int tab, int32_t t) {
    const int32_t id = kv.tables[(size_t)tab * kv.max_blocks + t / kv.block_tokens];
    return (((size_t)il * kv.n_blocks + id) * kv.block_tokens + t % kv.block_tokens) * kv.row_dim;
}

/* The latent row's RMSNorm, RoPE of its rope part, and its store into the
 * cache; one block of KS_THREADS per row. Every global load (the row, the
 * norm weights, the row's position and table entry) is issued before the
 * first use: in a loop that waited on each, the kernel took 5.4 us at one
 * row (ncu, H200, session 8). The sums run in the same order as that loop's
 * (element t, t + 256, ... per thread), so the bits are the same. */
#define KS_THREADS RN_THREADS /* rn_scale's block */
#define KS_MAXV (2048 / KS_THREADS)
template <int KT>
__global__ void __launch_bounds__(KS_THREADS)
kv_store_kernel(const float *__restrict__ kvrow, int kv_lora, int d_rope, const float *__restrict__ norm_w,
                float eps, const float *__restrict__ freq, ds_cu_kv_view kv, int il) {
    __shared__ float row[2048];
    const int r = blockIdx.x, D = kv_lora + d_rope;
    const float *src = kvrow + (size_t)r * D;
    const int32_t p = kv.pos[r], tab = kv.row_tab[r];
    float v[KS_MAXV], w[KS_MAXV];
#pragma unroll
    for (int k = 0; k < KS_MAXV; k++) {
        const int i = threadIdx.x + k * KS_THREADS;
        v[k] = i < D ? src[i] : 0.f;
        w[k] = i < kv_lora ? norm_w[i] : 0.f;
    }
    double ss = 0;
#pragma unroll
    for (int k = 0; k < KS_MAXV; k++)
        if (threadIdx.x + k * KS_THREADS < kv_lora) ss += (double)v[k] * v[k];
    const float scale = rn_scale(ss, kv_lora, eps);
#pragma unroll
    for (int k = 0; k < KS_MAXV; k++) {
        const int i = threadIdx.x + k * KS_THREADS;
        if (i < D) row[i] = i < kv_lora ? v[k] * scale * w[k] : v[k];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < d_rope / 2; i += KS_THREADS) rope_pair(row + kv_lora, i, freq, p);
    __syncthreads();
    const size_t off = kv_row_off(kv, il, tab, p);
    for (int i = threadIdx.x; i < D; i += KS_THREADS) kv_put<KT>(kv.pool, off + i, row[i]);
}

extern "C" int ds_cu_kv_store(const float *kvrow, int n, int kv_lora, int d_rope, const float *norm_w, float eps,
                              const float *freq, const ds_cu_kv_view *kv, int il, cudaStream_t s) {
    if (n <= 0) return 0;
    if (kv_lora + d_rope > 2048) return (int)cudaErrorInvalidValue;
    switch (kv->kv_type) {
    case 0: kv_store_kernel<0><<<n, KS_THREADS, 0, s>>>(kvrow, kv_lora, d_rope, norm_w, eps, freq, *kv, il); break;
    case 1: kv_store_kernel<1><<<n, KS_THREADS, 0, s>>>(kvrow, kv_lora, d_rope, norm_w, eps, freq, *kv, il); break;
    case 30: kv_store_kernel<2><<<n, KS_THREADS, 0, s>>>(kvrow, kv_lora, d_rope, norm_w, eps, freq, *kv, il); break;
    default: return (int)cudaErrorInvalidValue;
    }
    DS_CU_TRY_LAUNCH();
    return 0;
}

template <int KT>
__global__ void __launch_bounds__(MLA_THREADS)
mla_kernel(const float *__restrict__ qabs, const float *__restrict__ q, int n_head, int d_qk, int d_nope,
           int kv_lora, int d_rope, float kq_scale, ds_cu_kv_view kv, int il, float *__restrict__ olat) {
    __shared__ float query[MLA_MAX_LORA + 128];
    __shared__ float score[MLA_TILE];
    const int h = blockIdx.x, r = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int D = kv_lora + d_rope;
    const float *qa = qabs + ((size_t)r * n_head + h) * kv_lora;
    const float *qp = q + ((size_t)r * n_head + h) * d_qk + d_nope;
    for (int i = tid; i < D; i += MLA_THREADS) query[i] = i < kv_lora ? qa[i] : qp[i - kv_lora];
    __syncthreads();
    const int32_t last = kv.pos[r];
    const int tab = kv.row_tab[r];
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = 0.f;
    float mx = -INFINITY, sum = 0.f;
    for (int32_t t0 = 0; t0 <= last; t0 += MLA_TILE) {
        /* scores of this tile: warp w takes tokens w, w+4, ... */
        for (int j = warp; j < MLA_TILE; j += MLA_THREADS / 32) {
            const int32_t t = t0 + j;
            float s = 0.f;
            if (t <= last) {
                const size_t off = kv_row_off(kv, il, tab, t);
                for (int d = lane; d < D; d += 32) s += query[d] * kv_get<KT>(kv.pool, off + d);
                for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                s *= kq_scale;
            } else {
                s = -INFINITY;
            }
            if (lane == 0) score[j] = s;
        }
        __syncthreads();
        float tmax = mx;
        for (int j = 0; j < MLA_TILE; j++) tmax = fmaxf(tmax, score[j]);
        const float corr = expf(mx - tmax); /* mx = -inf on the first tile: corr 0, acc is 0 anyway */
        float psum = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] *= corr;
        const int nt = last - t0 + 1 < MLA_TILE ? last - t0 + 1 : MLA_TILE;
        for (int j = 0; j < nt; j++) {
            const float p = expf(score[j] - tmax);
            psum += p;
            const size_t off = kv_row_off(kv, il, tab, t0 + j);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int d = tid + i * MLA_THREADS;
                if (d < kv_lora) acc[i] += p * kv_get<KT>(kv.pool, off + d); /* values = c_kv */
            }
        }
        sum = sum * corr + psum;
        mx = tmax;
        __syncthreads(); /* score[] is rewritten by the next tile */
    }
    float *o = olat + ((size_t)r * n_head + h) * kv_lora;
    const float inv = 1.0f / sum;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int d = tid + i * MLA_THREADS;
        if (d < kv_lora) o[d] = acc[i] * inv;
    }
}

extern "C" int ds_cu_mla(const float *qabs, const float *q, int n, int n_head, int d_qk, int d_nope, int kv_lora,
                         int d_rope, float kq_scale, const ds_cu_kv_view *kv, int il, float *olat, cudaStream_t s) {
    if (n <= 0) return 0;
    if (kv_lora > MLA_MAX_LORA || d_rope > 128) return (int)cudaErrorInvalidValue;
    const dim3 grid((unsigned)n_head, (unsigned)n);
    switch (kv->kv_type) {
    case 0: mla_kernel<0><<<grid, MLA_THREADS, 0, s>>>(qabs, q, n_head, d_qk, d_nope, kv_lora, d_rope, kq_scale, *kv, il, olat); break;
    case 1: mla_kernel<1><<<grid, MLA_THREADS, 0, s>>>(qabs, q, n_head, d_qk, d_nope, kv_lora, d_rope, kq_scale, *kv, il, olat); break;
    case 30: mla_kernel<2><<<grid, MLA_THREADS, 0, s>>>(qabs, q, n_head, d_qk, d_nope, kv_lora, d_rope, kq_scale, *kv, il, olat); break;
    default: return (int)cudaErrorInvalidValue;
    }
    DS_CU_TRY_LAUNCH();
    return 0;
}
