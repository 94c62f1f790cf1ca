/* backend.c: backend lookup by name and the host-side helpers all share. */
#include "backend.h"
#ifdef DSINFER_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

#include <math.h>
#include <string.h>

ds_status ds_backend_create(const char *name, const ds_model *m, const ds_backend_params *p,
                            ds_backend **out, ds_error *err) {
    if (strcmp(name, "ref") == 0) return ds_backend_ref_create(m, p, out, err);
    if (strcmp(name, "cpu") == 0) return ds_backend_cpu_create(m, p, out, err);
    if (strcmp(name, "cuda") == 0)
#ifdef DSINFER_HAVE_CUDA
        return ds_backend_cuda_create(m, p, out, err);
#else
        return ds_error_set(err, DS_ERR_UNSUPPORTED, "device 'cuda': this build has no CUDA backend");
#endif
    return ds_error_set(err, DS_ERR_INVALID_ARG, "unknown device '%s' (known: ref, cpu)", name);
}

void ds_rms_norm(const float *x, const float *w, int n, float eps, float *y) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = x[i] * scale * w[i];
}
