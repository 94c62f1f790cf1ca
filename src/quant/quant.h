/* quant.h: ggml tensor types — their traits, reference dequantization,
 * activation quantization (Q8_0/Q8_1/Q8_K), CPU dot kernels with runtime
 * SIMD dispatch, and a threaded matrix x activations product.
 * Not a model: no tensor names, no layers. */
#ifndef DS_QUANT_H
#define DS_QUANT_H

#include "../core/core.h"

typedef enum ds_type {
    DS_TYPE_F32 = 0, DS_TYPE_F16 = 1, DS_TYPE_Q4_0 = 2, DS_TYPE_Q4_1 = 3,
    DS_TYPE_Q5_0 = 6, DS_TYPE_Q5_1 = 7, DS_TYPE_Q8_0 = 8, DS_TYPE_Q8_1 = 9,
    DS_TYPE_Q2_K = 10, DS_TYPE_Q3_K = 11, DS_TYPE_Q4_K = 12, DS_TYPE_Q5_K = 13,
    DS_TYPE_Q6_K = 14, DS_TYPE_Q8_K = 15, DS_TYPE_IQ2_XXS = 16, DS_TYPE_IQ2_XS = 17,
    DS_TYPE_IQ3_XXS = 18, DS_TYPE_IQ1_S = 19, DS_TYPE_IQ4_NL = 20, DS_TYPE_IQ3_S = 21,
    DS_TYPE_IQ2_S = 22, DS_TYPE_IQ4_XS = 23, DS_TYPE_I8 = 24, DS_TYPE_I16 = 25,
    DS_TYPE_I32 = 26, DS_TYPE_I64 = 27, DS_TYPE_F64 = 28, DS_TYPE_IQ1_M = 29,
    DS_TYPE_BF16 = 30,
    DS_TYPE_COUNT = 40,
} ds_type;

typedef struct ds_type_traits {
    const char *name;     /* "q4_K" style, as ggml prints it; NULL = unknown id */
    int block_elems;      /* elements per block (1 for plain types) */
    int block_bytes;      /* bytes per block */
    bool can_dequant;     /* ds_dequantize_row supports it */
    ds_type act_type;     /* activation format its dot kernel takes:
                             Q8_K (K/IQ 256-blocks), Q8_0 (q4_0 q5_0 q8_0 iq4_nl),
                             Q8_1 (q4_1 q5_1), F32 (f32 f16 bf16) */
} ds_type_traits;

/* Traits of a ggml type id; NULL for ids outside the table. */
const ds_type_traits *ds_type_info(uint32_t type);
/* Type by name ("q4_K", "Q4_K", "f16" ... case-insensitive); -1 if unknown. */
int ds_type_from_name(const char *name);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block. */
size_t ds_row_bytes(ds_type t, int64_t n);

/* ---- reference (scalar, bit-exact with gguf-py) ---------------------------
 * dst[0..n) = dequant(src); n must be a multiple of the block size. */
void ds_dequantize_row(ds_type t, const void *src, float *dst, int64_t n);

/* ---- activation quantization -----------------------------------------------
 * x[0..n) -> blocks of the given activation type; n multiple of its block. */
void ds_quantize_row_q8_0(const float *x, void *y, int64_t n);
void ds_quantize_row_q8_1(const float *x, void *y, int64_t n);
void ds_quantize_row_q8_K(const float *x, void *y, int64_t n);
/* Quantizes x into t's act_type (F32: plain copy). y holds ds_act_row_bytes. */
void ds_quantize_act_row(ds_type t, const float *x, void *y, int64_t n);
size_t ds_act_row_bytes(ds_type t, int64_t n);

/* ---- dot kernels -------------------------------------------------------------
 * *s = sum_i w[i] * a[i] over n elements, w a row of type t, a a row already
 * in t's act_type. */
typedef void (*ds_vec_dot_fn)(int n, float *s, const void *w, const void *a);

typedef enum ds_simd_level {
    DS_SIMD_SCALAR = 0, DS_SIMD_AVX2 = 1, DS_SIMD_AVX512 = 2, /* AVX-512 F/BW/VL(+VNNI) */
} ds_simd_level;
ds_simd_level ds_simd_detect(void);       /* what this CPU supports (cached) */
const char *ds_simd_name(ds_simd_level l);
/* Kernel of exactly that level (NULL if not built/supported for t); tests use it. */
ds_vec_dot_fn ds_vec_dot_at(ds_type t, ds_simd_level l);
/* Best available kernel for t on this CPU (falls back to lower levels, then to
 * dequantize-then-dot for types without a kernel); NULL if t cannot be read. */
ds_vec_dot_fn ds_vec_dot_best(ds_type t);

/* ---- matrix x activations ------------------------------------------------------
 * y[r][m] = sum_k W[m][k] * x[r][k] for r < n_rows, m < M.
 * W: M rows of type wt, each K elements, row_stride bytes apart (= ds_row_bytes
 * for a dense tensor). x: [n_rows][K] f32. y: [n_rows][ldy] f32, ldy >= M.
 * act: scratch of ds_matmul_act_bytes(wt, K, n_rows) bytes (the quantized x).
 * Work is split over the pool's threads by rows of W; tp may be NULL (serial). */
size_t ds_matmul_act_bytes(ds_type wt, int64_t K, int64_t n_rows);
void ds_matmul(ds_threadpool *tp, ds_type wt, const void *w, size_t row_stride,
               int64_t K, int64_t M, const float *x, int64_t n_rows,
               float *y, int64_t ldy, void *act);
/* Same, with the activations already quantized by ds_quantize_act_row into act
 * (row r at act + r * ds_act_row_bytes(wt, K)). Lets MoE reuse one quantization
 * for gate and up. */
void ds_matmul_preq(ds_threadpool *tp, ds_type wt, const void *w, size_t row_stride,
                    int64_t K, int64_t M, const void *act, int64_t n_rows,
                    float *y, int64_t ldy);
/* ds_matmul_preq on the calling thread only, with the same kernels and the
 * same grouping of activation rows (so the same bits): for callers that
 * split a larger job over threads themselves. */
void ds_matmul_serial_preq(ds_type wt, const void *w, size_t row_stride, int64_t K, int64_t M, const void *act,
                           int64_t n_rows, float *y, int64_t ldy);

#endif
