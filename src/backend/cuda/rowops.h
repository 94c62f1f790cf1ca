/* rowops.h: small per-row kernels — RMSNorm (sum of squares in double, as
 * ds_rms_norm), residual add, SiLU-gate, row gather, row argmax. Plain C launchers that
 * return 0 or the cudaError_t hit. Not GEMV, not attention. */
#ifndef DS_CUDA_ROWOPS_H
#define DS_CUDA_ROWOPS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y[r][0..dim) = x[r] / sqrt(mean(x[r]^2) + eps) * w, r < n; x rows ldx apart,
 * y rows ldy apart (y may be x). w: [dim] f32 on the device. */
int ds_cu_rmsnorm(const float *x, int64_t ldx, const float *w, int dim, float eps, int n, float *y, int64_t ldy,
                  cudaStream_t s);
/* dst[i] += src[i], i < count */
int ds_cu_add(float *dst, const float *src, int64_t count, cudaStream_t s);
/* a[r][i] = silu(g[r][i]) * u[r][i]; g/u rows ldg apart, a rows lda apart; i < F */
int ds_cu_silu_mul(const float *g, const float *u, int64_t ldg, int64_t F, int n, float *a, int64_t lda,
                   cudaStream_t s);
/* dst[i] = src[idx[i]] rows of dim floats, i < n; idx on the device */
int ds_cu_gather_rows(const float *src, const int32_t *idx, int n, int64_t dim, float *dst, cudaStream_t s);
/* out[r] = ds_argmax_f32(x + r * dim, dim), r < n: the largest value, the
 * lowest index among equals, NaN never chosen unless at index 0 */
int ds_cu_argmax_rows(const float *x, int n, int64_t dim, int32_t *out, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
