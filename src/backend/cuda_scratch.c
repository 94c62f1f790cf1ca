/* cuda_scratch.c: sizes of the CUDA backend's scratch buffers (see cuda_scratch.h). */
#include "cuda_scratch.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

int ds_cuda_scratch_rows(int max_rows) { return max_rows > DS_CU_LM_CHUNK ? max_rows : DS_CU_LM_CHUNK; }

int64_t ds_cuda_moe_tiles(const ds_hparams *hp, int rows) {
    const int64_t k = hp->n_expert_used > 0 ? hp->n_expert_used : 1;
    return max64(1, hp->n_expert) + (int64_t)rows * k / 32 + 1;
}

void ds_cuda_scratch_elems(const ds_hparams *hp, int rows, int64_t n[DS_CS_COUNT]) {
    const int64_t R = rows, E = hp->n_embd, H = hp->n_head, k = hp->n_expert_used > 0 ? hp->n_expert_used : 1;
    const int64_t ffmax = max64(hp->n_ff, (int64_t)hp->n_ff_exp * max64(1, hp->n_expert_shared));
    const int64_t F = max64(1, hp->n_ff_exp);
    n[DS_CS_H] = n[DS_CS_A] = n[DS_CS_Y] = n[DS_CS_F] = n[DS_CS_XN] = R * E;
    n[DS_CS_CQ] = R * max64(1, hp->q_lora);
    n[DS_CS_Q] = R * H * hp->d_qk;
    n[DS_CS_KVROW] = R * hp->d_kv_row;
    n[DS_CS_QABS] = n[DS_CS_OLAT] = R * H * hp->kv_lora;
    n[DS_CS_HEADS] = R * H * hp->d_v;
    n[DS_CS_FFA] = n[DS_CS_FFB] = R * ffmax;
    n[DS_CS_RLOGIT] = R * max64(1, hp->n_expert);
    n[DS_CS_RW] = n[DS_CS_IDS] = n[DS_CS_FORCED] = R * k;
    n[DS_CS_MARGIN] = n[DS_CS_BEST] = R; /* BEST: each wanted row's argmax id */
    n[DS_CS_ACT] = R * k * F;
    n[DS_CS_LOGITS] = (int64_t)DS_CU_LM_CHUNK * hp->n_vocab;
    n[DS_CS_FREQ] = max64(1, hp->d_rope / 2);
    n[DS_CS_MOE_Y] = R * k * E;
    n[DS_CS_MOE_U] = R * k * F;
    n[DS_CS_MOE_IDX] = 2 * R * k;
    /* the GEMM's f16 activations (two per element): the widest x any product
     * reads (v_b's per-head latent H * kv_lora for V3), or the gathered expert rows */
    int64_t ldx = max64(max64(E, hp->q_lora), max64(H * hp->d_qk, H * hp->kv_lora));
    ldx = max64(ldx, max64(H * hp->d_v, ffmax));
    n[DS_CS_XH] = (max64(R * ldx, R * k * max64(E, F)) + 1) / 2;
    n[DS_CS_XINV] = R * k;
    n[DS_CS_MOE_TILES] = 3 * ds_cuda_moe_tiles(hp, rows);
    /* split-KV partials of the tensor-core MLA core: up to DS_CU_MLA_SPLIT_BLOCKS
     * blocks of 64 heads, each an output row per head plus its max and sum
     * (a GPU that wants more splits gets fewer: mla_tc.h) */
    n[DS_CS_MLA_WORK] = (int64_t)DS_CU_MLA_SPLIT_BLOCKS * 64 * (hp->kv_lora + 2);
    /* int8 activations of the decode GEMV (DS_CU_Q8_MAX_ROWS rows of the
     * widest x, or the decode MoE's DS_CU_Q8_MAX_ROWS x k pair rows of F): per
     * 32 values 32 bytes + 8 bytes of scale and sum, rows padded to 16 bytes */
    const int64_t q8row = ((ldx / 32) * 40 + 15) & ~(int64_t)15, q8row_f = ((F / 32) * 40 + 15) & ~(int64_t)15;
    n[DS_CS_XQ] = (max64(DS_CU_Q8_MAX_ROWS * q8row, DS_CU_Q8_MAX_ROWS * k * q8row_f) + 3) / 4;
}

uint64_t ds_cuda_scratch_bytes(const ds_hparams *hp, int max_rows) {
    int64_t n[DS_CS_COUNT];
    ds_cuda_scratch_elems(hp, ds_cuda_scratch_rows(max_rows), n);
    uint64_t total = 0;
    for (int i = 0; i < DS_CS_COUNT; i++) total += ((uint64_t)n[i] * 4 + 255) & ~(uint64_t)255;
    return total;
}
