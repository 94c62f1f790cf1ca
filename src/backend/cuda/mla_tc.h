/* mla_tc.h: the absorbed MLA attention core on tensor cores, for f16 and
 * bf16 latent caches — the contract of ds_cu_mla (attn.h), faster, with
 * split-KV so a few long rows still fill the GPU. Not the f32 cache (the
 * caller keeps ds_cu_mla for it) and not RoPE or the cache store (attn.h). */
#ifndef DS_CUDA_MLA_TC_H
#define DS_CUDA_MLA_TC_H

#include "attn.h"

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* True when ds_cu_mla_tc handles this shape on the current device: kv_type
 * 1 (f16) or 30 (bf16), kv_lora a multiple of 64 in [64, 512], d_rope a
 * multiple of 16 in [0, 64], n_head >= 1. Otherwise use ds_cu_mla. */
int ds_cu_mla_tc_supported(int kv_type, int kv_lora, int d_rope, int n_head);

/* Floats of workspace ds_cu_mla_tc wants for batches of up to n rows whose
 * sequences hold up to max_ctx tokens, on the current device: the split-KV
 * partials ([rows][splits][n_head][kv_lora] outputs plus a max and a sum
 * per (row, split, head)). 0 when no batch size up to n splits. The caller
 * allocates it once (it is not allocated in the token loop); a smaller
 * workspace only means fewer splits. */
size_t ds_cu_mla_tc_work_floats(int n, int n_head, int kv_lora, int64_t max_ctx);

/* olat[r][h][0..kv_lora) = softmax_t(kq_scale * [qabs[r][h] | q_pe] . cache[t]) . cache[t][0..kv_lora)
 * over t in [0, pos[r]] — exactly ds_cu_mla's contract (attn.h), up to f16/bf16
 * rounding of the query and the probabilities (f32 accumulation).
 * qabs [n][n_head][kv_lora]; q [n][n_head][d_qk], q_pe at + d_nope; olat [n][n_head][kv_lora];
 * work [work_floats] device scratch (may be NULL with work_floats 0: no split).
 * olat and work must be 8-byte aligned (outputs are stored as float pairs).
 * Launches only (graph-capturable: no allocation, no sync); 0 or a cudaError_t. */
int ds_cu_mla_tc(const float *qabs, const float *q, int n, int n_head, int d_qk, int d_nope, int kv_lora,
                 int d_rope, float kq_scale, const ds_cu_kv_view *kv, int il, float *olat, float *work,
                 size_t work_floats, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
