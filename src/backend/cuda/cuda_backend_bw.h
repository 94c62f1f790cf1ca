/* cuda_backend_bw.h: device read-bandwidth probe (bw.cu) for bench's roofline. */
#ifndef DS_CUDA_BACKEND_BW_H
#define DS_CUDA_BACKEND_BW_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
/* Streams `bytes` of device memory reps times (after a warm-up pass);
 * best and median GB/s. Returns 0 or a CUDA error code. */
int ds_cuda_read_bw(size_t bytes, int reps, double *best_gbs, double *median_gbs);
#ifdef __cplusplus
}
#endif

#endif
