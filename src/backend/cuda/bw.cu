/* bw.cu: the device's read bandwidth, measured the way a decode step reads
 * weights (one streaming pass of 16-byte loads over a buffer much larger
 * than L2), for `dsinfer bench`'s roofline. */
#include "cuda_backend_bw.h"
#include "cuda_check.h"

__global__ void read_kernel(const uint4 *__restrict__ p, size_t n, unsigned *sink) {
    unsigned acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldcs(p + i); /* streaming: do not keep it in L2 */
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) *sink = acc; /* keeps the loads; practically never stores */
}

extern "C" int ds_cuda_read_bw(size_t bytes, int reps, double *best_gbs, double *median_gbs) {
    *best_gbs = *median_gbs = 0;
    if (reps < 1 || reps > 64) reps = 10;
    uint4 *buf = NULL;
    unsigned *sink = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int rc = 0;
    float ms[64];
    const size_t n = bytes / sizeof(uint4);
    int sms = 0;
    if (cudaMalloc(&buf, n * sizeof(uint4)) != cudaSuccess || cudaMalloc(&sink, sizeof *sink) != cudaSuccess ||
        cudaMemset(buf, 1, n * sizeof(uint4)) != cudaSuccess || cudaEventCreate(&e0) != cudaSuccess ||
        cudaEventCreate(&e1) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0)) {
        rc = (int)cudaGetLastError();
        if (!rc) rc = (int)cudaErrorMemoryAllocation;
        goto out;
    }
    for (int r = -1; r < reps; r++) { /* one warm-up pass */
        cudaEventRecord(e0);
        read_kernel<<<sms * 8, 512>>>(buf, n, sink);
        cudaEventRecord(e1);
        if (cudaEventSynchronize(e1) != cudaSuccess) { rc = (int)cudaGetLastError(); goto out; }
        if (r >= 0) cudaEventElapsedTime(&ms[r], e0, e1);
    }
    for (int i = 1; i < reps; i++) /* insertion sort, few items */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) { float t = ms[j]; ms[j] = ms[j - 1]; ms[j - 1] = t; }
    *best_gbs = (double)(n * sizeof(uint4)) / (ms[0] * 1e-3) / 1e9;
    *median_gbs = (double)(n * sizeof(uint4)) / (ms[reps / 2] * 1e-3) / 1e9;
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(buf);
    cudaFree(sink);
    return rc;
}
