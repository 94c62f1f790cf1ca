/* moe.h: fused routed-expert FFN for the rows of a micro-batch, every
 * selected expert in one launch per stage, expert ids and weights read on
 * the device (so a decode step can be one captured graph). Not the router
 * and not the grouped-by-expert prefill GEMM. */
#ifndef DS_CUDA_MOE_H
#define DS_CUDA_MOE_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One expert-stacked weight: expert e's row i is at w + e*expert_bytes + i*row_bytes. */
typedef struct ds_cu_exps {
    const void *w;
    int type;
    size_t row_bytes, expert_bytes;
} ds_cu_exps;

typedef struct ds_cu_moe_params {
    ds_cu_exps gate, up, down; /* gate/up: [n_expert][F][E]; down: [n_expert][E][F] */
    int64_t E, F;
    const float *y;        /* [n][E] ffn-normed input */
    const int32_t *ids;    /* [n][k]; < 0 skipped */
    const float *weights;  /* [n][k] */
    float *act;            /* [n*k][F] scratch: silu(gate y) * up y */
    float *out;            /* [n][E]; out[r] += sum_j w[r][j] * down_{ids[r][j]}(act) */
    int n, k;
    cudaStream_t stream;
} ds_cu_moe_params;

int ds_cu_moe(const ds_cu_moe_params *p);

/* Prefill combine after the grouped-by-expert GEMVs: out[r][i] += sum_j
 * weights[r][j] * d[slot_row[r*k+j]][i] over j with slot_row >= 0, in j order.
 * d: [n*k][E] rows of expert outputs; slot_row, weights [n][k]. */
int ds_cu_moe_combine(const float *d, const int32_t *slot_row, const float *weights, int n, int k, int64_t E,
                      float *out, cudaStream_t s);

/* The decode form (expert-mode GEMV, gemv_q8.h): d row r * k + j holds
 * pair (r, j)'s expert output; out[r][i] += sum_j weights[r][j] * d[r*k+j][i]
 * over j with ids[r][j] >= 0, in j order. ids on the device. */
int ds_cu_moe_combine_pairs(const float *d, const int32_t *ids, const float *weights, int n, int k, int64_t E,
                            float *out, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
