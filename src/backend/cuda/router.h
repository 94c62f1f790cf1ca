/* router.h: MoE expert selection on the device from router logits — gating,
 * bias, group limit, top-k, normalisation and scale, exactly
 * ds_moe_select's rules (ties to the lower id). Not the logits GEMV. */
#ifndef DS_CUDA_ROUTER_H
#define DS_CUDA_ROUTER_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_cu_route_params {
    const float *logits;   /* [n][n_expert] */
    const float *bias;     /* [n_expert] or NULL */
    const int32_t *forced; /* [n][k] or NULL; a row whose first id is < 0 chooses */
    int32_t *ids;          /* [n][k] */
    float *weights;        /* [n][k] */
    float *margin;         /* [n] or NULL */
    int n, n_expert, k, n_group, n_group_used;
    int sigmoid;           /* 1 sigmoid, 0 softmax */
    int norm;              /* normalise the k weights */
    float scale;
    cudaStream_t stream;
} ds_cu_route_params;

int ds_cu_route(const ds_cu_route_params *p);

#ifdef __cplusplus
}
#endif
#endif
