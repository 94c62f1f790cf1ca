/* cpu_internal.h: state shared by the cpu backend's files. */
#ifndef DS_CPU_INTERNAL_H
#define DS_CPU_INTERNAL_H

#include "../backend.h"
#include "cpu_vec.h"

/* Batches of up to this many rows take the small-batch routed-expert path
 * (cpu_moe.c). */
#define DS_MAX_ROWS_FAST 8

/* Cached latent rows attention converts to f32 at a time (cpu_attn.c):
 * 16 x 576 floats, 36 KiB, stay in L1/L2 while every row of the batch reads them. */
#define DS_ATTN_TILE 16

/* Per-thread scratch for work split by heads. */
typedef struct cpu_thread_scratch {
    float *qn;      /* [max_rows][d_nope] gathered q_nope of one head */
    float *olat;    /* [max_rows][kv_lora] attention output in latent space */
    void *act;      /* quantized activations for per-head matmuls */
    size_t act_bytes;
    float *qlat;    /* [max_rows][d_kv_row] one head's scaled [q_abs | roped q_pe] */
    float *lat;     /* [DS_ATTN_TILE][d_kv_row] cached rows converted to f32 */
    float *msum;    /* [2][max_rows] running max, then running sum, of each row's scores */
    float *sc;      /* [max_rows][DS_ATTN_TILE] scores of one tile */
} cpu_thread_scratch;

typedef struct cpu_impl {
    ds_threadpool *tp;
    int n_threads, max_rows, max_ctx;
    const ds_cpu_vec *vec;
    float *xn;      /* [max_rows][n_embd] normed input */
    float *cq;      /* [max_rows][q_lora] */
    float *q;       /* [max_rows][n_head * d_qk] */
    float *kvr;     /* [max_rows][d_kv_row] */
    float *heads;   /* [max_rows][n_head * d_v] */
    float *ga, *gb; /* [max_rows][max ffn width] gate / up outputs */
    float *logit;   /* [max_rows][n_expert] */
    float *eo;      /* [max_rows][n_embd] expert output */
    float *ey;      /* [max_rows][n_embd] gathered expert input rows */
    int32_t *erow;  /* [max_rows] batch row of each gathered row */
    float *ew;      /* [max_rows] weight of each gathered row */
    void *act;      /* quantized activations, largest of all matmuls */
    size_t act_bytes;
    size_t ffn_elems; /* floats in ga and gb each */
    /* small-batch routed experts: quantized input rows (2 types per row), per
     * pair copies for gate/up, quantized GLU outputs for down (NULL: path off) */
    uint8_t *mq_rows, *mq_g, *mq_u, *mq_d;
    size_t mq_row_bytes, mq_y_bytes, mq_d_bytes; /* per row of mq_rows; of mq_g/mq_u; of mq_d */
    bool moe_fast_off; /* DSINFER_CPU_MOE_FAST=0 (tests compare both paths) */
    double *rope_cs;   /* [max_rows][d_rope] cos, sin of each rotated pair at the row's position */
    cpu_thread_scratch *ts; /* [n_threads] */
} cpu_impl;

ds_status ds_cpu_attn(ds_backend *be, const ds_model *m, int il, const ds_rows *rows, const float *h,
                      float *out, ds_kv *kv);
ds_status ds_cpu_moe_experts(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                             const int32_t *ids, const float *weights, float *out);
/* out = down(silu(gate x) * up x) for n rows with gate/up rows starting at
 * g0/u0 and down rows at d0 (expert slices); all threads. */
void ds_cpu_ffn(cpu_impl *C, const ds_tensor *gate, int64_t g0, const ds_tensor *up, int64_t u0,
                const ds_tensor *down, int64_t d0, int64_t F, int E, int n, const float *x, float *out);
/* y[n][M] = W rows [row0, row0+M) . x[n][K] on all threads. */
void ds_cpu_matmul(cpu_impl *C, const ds_tensor *W, int64_t row0, int64_t M, const float *x, int n, float *y,
                   int64_t ldy);

#endif
