/* cuda_check.h: the error checks every CUDA file of the backend uses — a
 * call's status and the last launch error, printed with file:line.
 * Plain C (also compiled by nvcc); not a logger and not an abort: callers
 * turn a failure into a ds_status their caller reports. */
#ifndef DS_CUDA_CHECK_H
#define DS_CUDA_CHECK_H

#include <cuda_runtime_api.h>
#include <stdio.h>

/* Evaluates a cudaError_t expression; on failure prints where and what,
 * then returns the error code (as int) from the enclosing function. */
#define DS_CU_TRY(call)                                                                     \
    do {                                                                                    \
        cudaError_t ds_cu_e_ = (call);                                                      \
        if (ds_cu_e_ != cudaSuccess) {                                                      \
            fprintf(stderr, "cuda error %s:%d: %s: %s\n", __FILE__, __LINE__, #call,        \
                    cudaGetErrorString(ds_cu_e_));                                          \
            return (int)ds_cu_e_;                                                           \
        }                                                                                   \
    } while (0)

/* After a kernel launch: configuration errors show up here (not in the
 * kernel's own faults, which the next synchronizing call reports). */
#define DS_CU_TRY_LAUNCH() DS_CU_TRY(cudaGetLastError())

#endif
