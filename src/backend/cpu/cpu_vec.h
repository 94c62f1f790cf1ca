/* cpu_vec.h: f32 vector helpers for the cpu backend's attention (dot,
 * axpy, KV row conversion), dispatched once to AVX2 or plain C.
 * Not weight kernels: those are quant/ dot kernels behind ds_matmul. */
#ifndef DS_CPU_VEC_H
#define DS_CPU_VEC_H

#include "../../quant/quant.h"

typedef struct ds_cpu_vec {
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float a, const float *x, float *y, int n);        /* y += a*x */
    void (*row_to_f32)(ds_type t, const void *src, float *dst, int n); /* f32/f16/bf16 */
} ds_cpu_vec;

const ds_cpu_vec *ds_cpu_vec_get(void);
const ds_cpu_vec *ds_cpu_vec_avx2(void); /* NULL if not built */

#endif
