/* router.cu: one block per row; the gating is computed in parallel, the
 * selection by one warp that follows ds_moe_select step for step (same
 * argmax with ties to the lower id) — routing is discontinuous, and any
 * other tie order would flip experts against the reference. */
#include "router.h"
#include "cuda_check.h"

#define ROUTE_MAX_EXPERTS 1024
#define ROUTE_THREADS 256
#define ROUTE_MAX_K 64 /* experts a token uses, at most */

/* Index of the largest v[i] among untaken ones, ties to the lowest i, -1 if
 * none — ds_moe_select's argmax, by one warp: each lane scans every 32nd
 * entry, then the warp keeps (larger value, else lower index). */
__device__ int argmax_masked(const float *v, const unsigned char *taken, int n) {
    const int lane = threadIdx.x & 31;
    int best = -1;
    float bv = 0.f; /* v[best] carried in a register: no shared read per comparison */
    for (int i = lane; i < n; i += 32) {
        const float x = v[i];
        if (!taken[i] && (best < 0 || x > bv)) best = i, bv = x;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const int other = __shfl_xor_sync(0xffffffffu, best, o);
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        if (other >= 0 && (best < 0 || ov > bv || (ov == bv && other < best))) best = other, bv = ov;
    }
    return best;
}

__global__ void __launch_bounds__(ROUTE_THREADS) route_kernel(ds_cu_route_params p) {
    __shared__ float prob[ROUTE_MAX_EXPERTS], score[ROUTE_MAX_EXPERTS];
    __shared__ unsigned char taken[ROUTE_MAX_EXPERTS];
    __shared__ double red[ROUTE_THREADS];
    const int r = blockIdx.x, n = p.n_expert, k = p.k, tid = threadIdx.x;
    const float *lg = p.logits + (size_t)r * n;
    if (p.sigmoid) {
        for (int i = tid; i < n; i += ROUTE_THREADS) prob[i] = (float)(1.0 / (1.0 + exp(-(double)lg[i])));
    } else {
        double mx = -INFINITY;
        for (int i = tid; i < n; i += ROUTE_THREADS) mx = fmax(mx, (double)lg[i]);
        red[tid] = mx;
        __syncthreads();
        if (tid == 0) {
            double m = red[0];
            for (int i = 1; i < ROUTE_THREADS; i++) m = fmax(m, red[i]);
            red[0] = m;
        }
        __syncthreads();
        mx = red[0];
        __syncthreads();
        double s = 0;
        for (int i = tid; i < n; i += ROUTE_THREADS) s += exp((double)lg[i] - mx);
        red[tid] = s;
        __syncthreads();
        if (tid == 0) {
            double t = 0;
            for (int i = 0; i < ROUTE_THREADS; i++) t += red[i];
            red[0] = t;
        }
        __syncthreads();
        const double sum = red[0];
        for (int i = tid; i < n; i += ROUTE_THREADS) prob[i] = (float)(exp((double)lg[i] - mx) / sum);
    }
    for (int i = tid; i < n; i += ROUTE_THREADS) {
        score[i] = p.bias ? prob[i] + p.bias[i] : prob[i];
        taken[i] = 0;
    }
    __syncthreads();
    /* the selection is one warp's: the argmaxes are warp-wide, the rest is
     * the same in every lane, and only lane 0 writes shared state */
    if (tid >= 32) return;
    const bool w0 = tid == 0;

    if (p.n_group > 1) {
        /* a group's score (its top two summed) per lane, groups strided over
         * the warp; then the kept groups, one warp argmax each */
        __shared__ float gscore[64];
        __shared__ unsigned char gkept[64];
        const int gs = n / p.n_group;
        for (int g = tid; g < p.n_group; g += 32) {
            const float *s = score + g * gs;
            float a = -INFINITY, b = -INFINITY;
            for (int i = 0; i < gs; i++) {
                if (s[i] > a) { b = a; a = s[i]; }
                else if (s[i] > b) b = s[i];
            }
            gscore[g] = gs > 1 ? a + b : a;
            gkept[g] = 0;
        }
        __syncwarp();
        for (int j = 0; j < p.n_group_used; j++) {
            const int g = argmax_masked(gscore, gkept, p.n_group);
            __syncwarp();
            if (w0) gkept[g] = 1;
            __syncwarp();
        }
        for (int i = tid; i < n; i += 32)
            if (!gkept[i / gs]) taken[i] = 1;
        __syncwarp();
    }
    /* the picks and their weights stay in shared memory until one final
     * write: reading back what was just stored to global cost an L2 round
     * trip per expert, three times over */
    __shared__ int32_t sel[ROUTE_MAX_K];
    __shared__ float wj[ROUTE_MAX_K];
    const int32_t *forced = p.forced ? p.forced + (size_t)r * k : NULL;
    float margin = INFINITY;
    if (forced && forced[0] >= 0) {
        if (w0)
            for (int j = 0; j < k; j++) sel[j] = forced[j];
    } else {
        int last = -1; /* the same in every lane: the warp argmax ends with one answer */
        for (int j = 0; j < k; j++) {
            last = argmax_masked(score, taken, n);
            __syncwarp();
            if (w0) {
                taken[last] = 1;
                sel[j] = last;
            }
            __syncwarp();
        }
        int next = argmax_masked(score, taken, n);
        if (next >= 0) margin = score[last] - score[next];
    }
    __syncwarp();
    if (!w0) return;
    int32_t *ids = p.ids + (size_t)r * k;
    float *w = p.weights + (size_t)r * k;
    double sum = 0;
    for (int j = 0; j < k; j++) {
        wj[j] = prob[sel[j]];
        sum += wj[j];
    }
    if (p.norm) {
        double den = sum > 6.103515625e-5 ? sum : 6.103515625e-5;
        for (int j = 0; j < k; j++) wj[j] = (float)(wj[j] / den);
    }
    for (int j = 0; j < k; j++) {
        ids[j] = sel[j];
        w[j] = wj[j] * p.scale;
    }
    if (p.margin) p.margin[r] = margin;
}

extern "C" int ds_cu_route(const ds_cu_route_params *p) {
    if (p->n <= 0) return 0;
    if (p->n_expert > ROUTE_MAX_EXPERTS || p->n_group > 64 || p->k < 1 || p->k > ROUTE_MAX_K)
        return (int)cudaErrorInvalidValue;
    route_kernel<<<p->n, ROUTE_THREADS, 0, p->stream>>>(*p);
    DS_CU_TRY_LAUNCH();
    return 0;
}
