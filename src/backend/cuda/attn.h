/* attn.h: MLA attention pieces on the device — RoPE of the query's rope
 * part, normalising/roping/storing each row's latent into the paged cache,
 * and the absorbed attention core over the cache (online softmax).
 * Not the projections (gemv.h) and not the block tables' bookkeeping. */
#ifndef DS_CUDA_ATTN_H
#define DS_CUDA_ATTN_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where rows live in the device cache: pool is [n_layer][n_blocks][block_tokens][row_dim]
 * of kv_type (0 f32, 1 f16, 30 bf16); row r of the batch (sequence table row_tab[r],
 * position pos[r]) is in block tables[row_tab[r]][pos / block_tokens]. */
typedef struct ds_cu_kv_view {
    void *pool;
    int kv_type;
    int row_dim;            /* kv_lora + d_rope */
    int block_tokens;
    int64_t n_blocks;
    const int32_t *tables;  /* [n_tab][max_blocks] device */
    int max_blocks;
    const int32_t *row_tab; /* [n] device */
    const int32_t *pos;     /* [n] device */
} ds_cu_kv_view;

/* q[r][h][d_nope + i] rotated by pos[r] * freq[i/2] for i < d_rope (adjacent pairs). */
int ds_cu_rope_q(float *q, int n, int n_head, int d_qk, int d_nope, int d_rope, const float *freq,
                 const int32_t *pos, cudaStream_t s);
/* For each row: kvrow[r] = [c_kv | k_pe] (kv_lora + d_rope); RMSNorm(c_kv) * norm_w,
 * RoPE(k_pe), then stored (converted) into layer il of the cache. kvrow is not changed. */
int ds_cu_kv_store(const float *kvrow, int n, int kv_lora, int d_rope, const float *norm_w, float eps,
                   const float *freq, const ds_cu_kv_view *kv, int il, cudaStream_t s);
/* olat[r][h][0..kv_lora) = softmax_t(scale * [qabs[r][h] | q_pe] . cache[t]) . cache[t][0..kv_lora)
 * over t in [0, pos[r]]; qabs [n][n_head][kv_lora]; q_pe at q + r*n_head*d_qk + h*d_qk + d_nope. */
int ds_cu_mla(const float *qabs, const float *q, int n, int n_head, int d_qk, int d_nope, int kv_lora,
              int d_rope, float kq_scale, const ds_cu_kv_view *kv, int il, float *olat, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
