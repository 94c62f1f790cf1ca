/* cuda_backend.h: the CUDA implementation of the block interface
 * (backend/backend.h), built only with -DDSINFER_CUDA=ON. Weights live on
 * one GPU, the latent KV cache too (device_kv); the optional forward hook
 * runs a whole micro-batch there. One backend per GPU of a placement; with
 * a host backend given, routed experts placed on the CPU run there
 * (cuda_hybrid.c, docs/hybrid.md). */
#ifndef DS_CUDA_BACKEND_H
#define DS_CUDA_BACKEND_H

#include "../backend.h"

/* Uploads every weight the forward pass reads (or, placed, those of its GPU) to the device (DS_ERR_OOM with
 * the sizes when it does not fit; DS_ERR_UNSUPPORTED for a weight type the
 * kernels do not read, naming the tensor; DS_ERR_IO when no device).
 * Environment knobs for tests: DSINFER_CUDA_FORWARD=0 leaves the forward
 * hook unset (the engine then calls the blocks, so routing can be pinned),
 * DSINFER_CUDA_GRAPH=0 runs decode steps without graph capture. */
ds_status ds_backend_cuda_create(const ds_model *m, const ds_backend_params *p, ds_backend **out, ds_error *err);

/* Number of CUDA devices (0 when none or the driver is missing). */
int ds_cuda_device_count(void);

#endif
