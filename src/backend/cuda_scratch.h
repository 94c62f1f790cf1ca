/* cuda_scratch.h: the CUDA backend's device scratch, by buffer and size, in
 * plain C so the placement plan can print it on a machine without CUDA
 * (and cuda_backend.c allocates exactly this list). */
#ifndef DS_CUDA_SCRATCH_H
#define DS_CUDA_SCRATCH_H

#include "../model/model.h"

#define DS_CU_LM_CHUNK 16
/* prefill micro-batches of at least this many rows stream host-placed experts
 * to the GPU instead of computing them on the CPU (DSINFER_STREAM_ROWS) */
/* decode products of up to this many rows take the int8 GEMV (gemv_q8.h:
 * a pass per 8 rows; on an H200, ds10 with 8 streams: 631.7 tok/s against
 * 496.2 with the f32 GEMV's 16-row passes from 5 rows, pp16 703 against
 * 590 at 16 rows), and so does the decode MoE of up to this many rows;
 * its scratch holds this many rows (the MoE's: times k). DSINFER_Q8_MAX_ROWS
 * lowers it for the products. */
#define DS_CU_Q8_MAX_ROWS 16
#define DS_CU_MLA_SPLIT_BLOCKS 256 /* split-KV blocks the MLA workspace holds */
#define DS_CU_STREAM_ROWS 32 /* LM-head rows per pass (logits scratch [LM_CHUNK][n_vocab]) */

enum {
    DS_CS_H, DS_CS_A, DS_CS_Y, DS_CS_F, DS_CS_XN, DS_CS_CQ, DS_CS_Q, DS_CS_KVROW, DS_CS_QABS, DS_CS_OLAT,
    DS_CS_HEADS, DS_CS_FFA, DS_CS_FFB, DS_CS_RLOGIT, DS_CS_RW, DS_CS_MARGIN, DS_CS_ACT, DS_CS_LOGITS,
    DS_CS_IDS, DS_CS_FORCED, DS_CS_FREQ, DS_CS_MOE_Y, DS_CS_MOE_U, DS_CS_MOE_IDX,
    DS_CS_XH, DS_CS_XINV, DS_CS_MOE_TILES, DS_CS_MLA_WORK, DS_CS_XQ, DS_CS_BEST, DS_CS_COUNT
};

/* The rows scratch is sized for: max(max_rows, DS_CU_LM_CHUNK). */
/* Grouped-MoE GEMM tiles for `rows` rows: every expert's partial tile plus
 * the full ones (tiles of at least 32 rows). */
int64_t ds_cuda_moe_tiles(const ds_hparams *hp, int rows);
int ds_cuda_scratch_rows(int max_rows);
/* Element counts (4-byte elements) of each buffer for `rows` rows. */
void ds_cuda_scratch_elems(const ds_hparams *hp, int rows, int64_t n[DS_CS_COUNT]);
/* Their total in bytes, each buffer rounded up to 256 bytes. */
uint64_t ds_cuda_scratch_bytes(const ds_hparams *hp, int max_rows);

#endif
