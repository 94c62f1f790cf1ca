/* test_cuda_wgmma.cu: the Hopper wgmma wrappers and the sw128 layout
 * (src/backend/cuda/wgmma.cuh, sw128_rows in mla_tc_parts.cuh) on their own,
 * in the two forms mla_wg.cu uses: S = Q . K^T with both operands K-major
 * from shared memory (m64n32k16, a warpgroup a 32-token half), and
 * O = P . V with P from registers and V the same K tile read MN-major
 * (m64n64k16 x 4 per warpgroup), f16 and bf16, against double sums on the
 * host. A wrong descriptor or swizzle gives O(1) errors, so this names the
 * piece when test_cuda_mla fails. Exits 77 ("skipped") without a compute
 * capability 9.0 device or without sm_90a code in the build. */
extern "C" {
#include "testutil.h"
/* core.h's conversions (core.h itself is C11 only: _Noreturn) */
float ds_fp16_to_f32(uint16_t h);
uint16_t ds_f32_to_fp16(float f);
uint16_t ds_f32_to_bf16(float f);
}
#include "backend/cuda/mla_tc_parts.cuh"
#include "backend/cuda/wgmma.cuh"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

namespace {

constexpr int M = 64, NT = 64, D = 576, LV = 512, PP = NT + 8;

/* one block of 256 threads: the tiles as mla_wg_kernel lays them out, both products */
template <bool BF>
__global__ void probe(const uint16_t *q, const uint16_t *k, const uint16_t *pm, float *s_out, float *o_out, int *ran) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
    uint16_t *qs = (uint16_t *)smem, *ks = qs + (D + 63) / 64 * 64 * M, *ps = ks + (D + 63) / 64 * 64 * NT;
    const sw128_rows ql{M}, kl{NT};
    for (int i = threadIdx.x; i < M * D; i += blockDim.x) qs[ql.at(i / D, i % D)] = q[i];
    for (int i = threadIdx.x; i < NT * D; i += blockDim.x) ks[kl.at(i / D, i % D)] = k[i];
    for (int i = threadIdx.x; i < M * NT; i += blockDim.x) ps[(i / NT) * PP + i % NT] = pm[i];
    fence_proxy_async();
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, mi = warp & 3, wq = warp >> 2, g = lane >> 2,
              c = lane & 3;
    if (threadIdx.x == 0) *ran = 1;

    constexpr int HT = NT / 2; /* tokens a warpgroup scores */
    float s[16];
    const uint64_t qd = sw128_desc(smem_u32(qs)), kd = sw128_desc(smem_u32(ks) + wq * HT * 128);
    wg_fence();
    for (int kk = 0; kk < D / 16; kk++) {
        const uint32_t step = (kk & 3) * 32;
        wg_m64n32k16_ss<BF>(s, qd + (((kk >> 2) * M * 128 + step) >> 4), kd + (((kk >> 2) * NT * 128 + step) >> 4),
                            kk > 0);
    }
    wg_commit();
    wg_wait<0>();
    reg_fence(s);
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < 2; e++) {
            const int col = HT * wq + 8 * i + 2 * c + e, row = 16 * mi + g;
            s_out[row * NT + col] = s[4 * i + e];
            s_out[(row + 8) * NT + col] = s[4 * i + 2 + e];
        }

    const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8;
    uint32_t pa[NT / 16][4];
    for (int k = 0; k < NT / 16; k++) ldsm_x4(pa[k], smem_u32(ps + (mi * 16 + arow) * PP + 16 * k + acol));
    float o[4][32];
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 32; i++) o[j][i] = 0.f;
    wg_fence();
    for (int j = 0; j < 4; j++) {
        const uint64_t vd = sw128_desc(smem_u32(ks) + (4 * wq + j) * NT * 128);
        for (int k = 0; k < NT / 16; k++) wg_m64n64k16_rs<BF>(o[j], pa[k], vd + ((k * 16 * 128) >> 4));
    }
    wg_commit();
    wg_wait<0>();
    for (int j = 0; j < 4; j++) reg_fence(o[j]);
    for (int j = 0; j < 4; j++)
        for (int b = 0; b < 8; b++)
            for (int e = 0; e < 2; e++) {
                const int col = 256 * wq + 64 * j + 8 * b + 2 * c + e, row = 16 * mi + g;
                o_out[row * LV + col] = o[j][4 * b + e];
                o_out[(row + 8) * LV + col] = o[j][4 * b + 2 + e];
            }
#endif
}

/* the project's own conversions (core.h), by element type; bf16 is the top half of an f32 */
float h2f(uint16_t h, bool bf) {
    if (!bf) return ds_fp16_to_f32(h);
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t f2h(float f, bool bf) { return bf ? ds_f32_to_bf16(f) : ds_f32_to_fp16(f); }

/* worst |got - want| over the largest |want|: the products are exact in f32
 * and only the f32 sums round (~1e-7 relative a step, D = 576 steps), so
 * 1e-4 has room; a wrong layout reads other elements and errs by O(1) */
double worst_rel(const float *got, const double *want, int n) {
    double e = 0, m = 0;
    for (int i = 0; i < n; i++) {
        e = fmax(e, fabs(got[i] - want[i]));
        m = fmax(m, fabs(want[i]));
    }
    return m > 0 ? e / m : e;
}

void run(bool bf) {
    uint64_t st = bf ? 7 : 3;
    auto rnd = [&]() { /* uniform in [-1, 1) */
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        return (float)((st >> 40) & 0xFFFFFF) / 8388608.f - 1.f;
    };
    uint16_t *hq = (uint16_t *)malloc(sizeof(uint16_t) * M * D), *hk = (uint16_t *)malloc(sizeof(uint16_t) * NT * D),
             *hp = (uint16_t *)malloc(sizeof(uint16_t) * M * NT);
    for (int i = 0; i < M * D; i++) hq[i] = f2h(rnd(), bf);
    for (int i = 0; i < NT * D; i++) hk[i] = f2h(rnd(), bf);
    for (int i = 0; i < M * NT; i++) hp[i] = f2h(0.5f * (rnd() + 1.f), bf);
    double *ws = (double *)calloc(M * NT, sizeof(double)), *wo = (double *)calloc(M * LV, sizeof(double));
    for (int r = 0; r < M; r++) {
        for (int t = 0; t < NT; t++)
            for (int d = 0; d < D; d++) ws[r * NT + t] += (double)h2f(hq[r * D + d], bf) * h2f(hk[t * D + d], bf);
        for (int t = 0; t < NT; t++)
            for (int d = 0; d < LV; d++) wo[r * LV + d] += (double)h2f(hp[r * NT + t], bf) * h2f(hk[t * D + d], bf);
    }
    uint16_t *dq, *dk, *dp;
    float *ds, *dout;
    int *dran, ran = 0;
    const size_t smem = (size_t)((D + 63) / 64 * 64 * (M + NT) + M * PP) * 2 + 1024;
    CHECK(cudaMalloc(&dq, sizeof(uint16_t) * M * D) == cudaSuccess && cudaMalloc(&dk, sizeof(uint16_t) * NT * D) ==
              cudaSuccess && cudaMalloc(&dp, sizeof(uint16_t) * M * NT) == cudaSuccess &&
              cudaMalloc(&ds, sizeof(float) * M * NT) == cudaSuccess &&
              cudaMalloc(&dout, sizeof(float) * M * LV) == cudaSuccess && cudaMalloc(&dran, sizeof(int)) == cudaSuccess,
          "alloc");
    cudaMemcpy(dq, hq, sizeof(uint16_t) * M * D, cudaMemcpyHostToDevice);
    cudaMemcpy(dk, hk, sizeof(uint16_t) * NT * D, cudaMemcpyHostToDevice);
    cudaMemcpy(dp, hp, sizeof(uint16_t) * M * NT, cudaMemcpyHostToDevice);
    cudaMemset(dran, 0, sizeof(int));
    cudaMemset(ds, 0xFF, sizeof(float) * M * NT); /* NaN: an element never written fails */
    cudaMemset(dout, 0xFF, sizeof(float) * M * LV);
    auto fn = bf ? probe<true> : probe<false>;
    cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    fn<<<1, 256, smem>>>(dq, dk, dp, ds, dout, dran);
    const cudaError_t e = cudaDeviceSynchronize();
    CHECK(e == cudaSuccess, "%s probe: %s", bf ? "bf16" : "f16", cudaGetErrorString(e));
    float *gs = (float *)malloc(sizeof(float) * M * NT), *go = (float *)malloc(sizeof(float) * M * LV);
    cudaMemcpy(gs, ds, sizeof(float) * M * NT, cudaMemcpyDeviceToHost);
    cudaMemcpy(go, dout, sizeof(float) * M * LV, cudaMemcpyDeviceToHost);
    cudaMemcpy(&ran, dran, sizeof(int), cudaMemcpyDeviceToHost);
    CHECK(ran == 1, "%s probe: the kernel body did not run (no sm_90a code?)", bf ? "bf16" : "f16");
    const double es = worst_rel(gs, ws, M * NT), eo = worst_rel(go, wo, M * LV);
    printf("%s: S = Q.K^T (K-major, m64n32k16) worst rel %.3e; O = P.V (MN-major, m64n64k16) worst rel %.3e\n",
           bf ? "bf16" : "f16", es, eo);
    CHECK(es < 1e-4, "%s scores: worst rel %.3e", bf ? "bf16" : "f16", es);
    CHECK(eo < 1e-4, "%s P.V: worst rel %.3e", bf ? "bf16" : "f16", eo);
    cudaFree(dq), cudaFree(dk), cudaFree(dp), cudaFree(ds), cudaFree(dout), cudaFree(dran);
    free(hq), free(hk), free(hp), free(ws), free(wo), free(gs), free(go);
}

} // namespace

int main(void) {
    int n_dev = 0, major = 0, minor = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
#if !defined(DSINFER_CUDA_SM90A)
    printf("skipped: no sm_90a code in this build\n");
    return 77;
#endif
    if (major != 9 || minor != 0) {
        printf("skipped: wgmma needs compute capability 9.0 (this device: %d.%d)\n", major, minor);
        return 77;
    }
    run(false);
    run(true);
    return ds_test_finish("test_cuda_wgmma");
}
