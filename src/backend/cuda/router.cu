/* router.cu: one block per row; the gating is computed in parallel, the
 * selection by one warp that follows ds_moe_select step for step (same
 * argmax with ties to the lower id) — routing is discontinuous, and any
 * other tie order would flip experts against the reference. */
#include "router.h"
#include "cuda_check.h"

#define ROUTE_MAX_EXPERTS 1024
#define ROUTE_THREADS 256
#define ROUTE_MAX_K 64 /* experts a token uses, at most */
#define ROUTE_MIN_SUM 6.103515625e-5 /* the weights' sum is floored here before normalising (ds_moe_select) */

/* ds_moe_select's argmax_masked by one warp: its scan starts at the first
 * untaken entry and moves only to a larger value, so a NaN there is the
 * answer and any other NaN never is; otherwise the largest non-NaN value,
 * ties to the lowest i. -1 if everything is taken. Each lane scans every
 * 32nd entry, then the warp keeps (larger value, else lower index). */
__device__ int argmax_masked(const float *v, const unsigned char *taken, int n) {
    const int lane = threadIdx.x & 31;
    int best = -1;
    unsigned first = 0xffffffffu;
    float bv = 0.f; /* v[best] carried in a register: no shared read per comparison */
    for (int i = lane; i < n; i += 32) {
        if (taken[i]) continue;
        if (first == 0xffffffffu) first = (unsigned)i;
        const float x = v[i];
        if (!isnan(x) && (best < 0 || x > bv)) best = i, bv = x;
    }
    first = __reduce_min_sync(0xffffffffu, first);
    if (first == 0xffffffffu) return -1;
    if (isnan(v[first])) return (int)first;
    for (int o = 16; o > 0; o >>= 1) {
        const int other = __shfl_xor_sync(0xffffffffu, best, o);
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        if (other >= 0 && (best < 0 || ov > bv || (ov == bv && other < best))) best = other, bv = ov;
    }
    return best;
}

/* ---- the register path: one warp, 8 experts a lane ----------------------------
 * Lane l holds the scores of experts 8l .. 8l + 7 in registers; an argmax is
 * the lane's own best (ascending ids, strict >: the lowest id among equals),
 * then two integer warp reductions: the largest order-preserving key, then
 * the lowest id holding it. Same picks as argmax_masked for finite scores
 * (+0 and -0 are one key, as they compare equal); the kernel checks that
 * and keeps argmax_masked's path otherwise. The shared-memory path cost one
 * L2/shared round trip per step of one warp: ~3000 instructions at 11
 * cycles each, 17.5 us a row (ncu, H200, session 8). */
#define RF_PER 8

/* order-preserving key of a finite float; 0 is "taken / no expert" */
__device__ __forceinline__ uint32_t rf_key(float v) {
    const uint32_t u = __float_as_uint(v + 0.f); /* -0 -> +0 */
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* the warp's best (key, id) among keys k[] (0 = not a candidate); id -1 if none */
__device__ __forceinline__ int rf_argmax(const uint32_t k[RF_PER], int lane) {
    uint32_t bk = 0;
    int bj = 0;
#pragma unroll
    for (int j = 0; j < RF_PER; j++)
        if (k[j] > bk) bk = k[j], bj = j;
    const uint32_t top = __reduce_max_sync(0xffffffffu, bk);
    if (top == 0) return -1;
    return (int)__reduce_min_sync(0xffffffffu, bk == top ? (uint32_t)(RF_PER * lane + bj) : 0xffffffffu);
}

/* true when the register path takes this row's shape */
__host__ __device__ __forceinline__ bool rf_shape_ok(const ds_cu_route_params &p) {
    if (p.n_expert > 32 * RF_PER || p.k > 32) return false;
    if (p.n_group <= 1) return true;
    const int gs = p.n_expert / p.n_group, lpg = gs / RF_PER;
    return p.n_expert % p.n_group == 0 && gs % RF_PER == 0 && (lpg & (lpg - 1)) == 0;
}

/* The selection of one row by warp 0 from score[] / prob[] in shared memory;
 * false (nothing written) when a score is not finite. */
__device__ bool route_regs(const ds_cu_route_params &p, const float *score, const float *prob, int r) {
    const int lane = threadIdx.x & 31, n = p.n_expert, k = p.k;
    uint32_t key[RF_PER];
    bool finite = true;
#pragma unroll
    for (int j = 0; j < RF_PER; j++) {
        const int e = RF_PER * lane + j;
        const float v = e < n ? score[e] : 0.f;
        finite = finite && isfinite(v);
        key[j] = e < n ? rf_key(v) : 0;
    }
    if (!__all_sync(0xffffffffu, finite)) return false;
    if (p.n_group > 1) {
        /* the lane's top two, merged over the group's lanes: the same values as
         * the ordered scan (a multiset's largest two) */
        const int gs = n / p.n_group, lpg = gs / RF_PER;
        float a = -INFINITY, b = -INFINITY;
#pragma unroll
        for (int j = 0; j < RF_PER; j++) {
            const float v = RF_PER * lane + j < n ? score[RF_PER * lane + j] : -INFINITY;
            if (v > a) { b = a; a = v; }
            else if (v > b) b = v;
        }
        for (int o = 1; o < lpg; o <<= 1) {
            const float oa = __shfl_xor_sync(0xffffffffu, a, o), ob = __shfl_xor_sync(0xffffffffu, b, o);
            b = fmaxf(fminf(a, oa), fmaxf(b, ob));
            a = fmaxf(a, oa);
        }
        const float gsc = a + b;
        const int g = RF_PER * lane / gs;
        const bool live = RF_PER * lane < n;
        if (!__all_sync(0xffffffffu, !live || isfinite(gsc))) return false;
        bool kept = false;
        for (int j = 0; j < p.n_group_used; j++) { /* ties to the lower group */
            const uint32_t gk = live && !kept ? rf_key(gsc) : 0;
            const uint32_t top = __reduce_max_sync(0xffffffffu, gk);
            if (top == 0) break;
            const uint32_t win = __reduce_min_sync(0xffffffffu, gk == top ? (uint32_t)g : 0xffffffffu);
            kept = kept || (uint32_t)g == win;
        }
        if (!kept)
#pragma unroll
            for (int j = 0; j < RF_PER; j++) key[j] = 0;
    }
    const int32_t *forced = p.forced ? p.forced + (size_t)r * k : NULL;
    int mine = -1; /* lane j keeps pick j */
    float margin = INFINITY;
    if (forced && forced[0] >= 0) {
        if (lane < k) mine = forced[lane];
    } else {
        int last = -1;
        for (int j = 0; j < k; j++) {
            last = rf_argmax(key, lane);
            if (lane == j) mine = last;
            if (last < 0) continue;
            if (lane == last / RF_PER)
#pragma unroll
                for (int i = 0; i < RF_PER; i++)
                    if (i == last % RF_PER) key[i] = 0;
        }
        const int next = rf_argmax(key, lane);
        if (next >= 0) margin = score[last] - score[next];
    }
    /* weights: the sum in pick order in every lane, then one pick a lane */
    const float wv = lane < k && mine >= 0 && mine < n ? prob[mine] : 0.f;
    double sum = 0;
    for (int j = 0; j < k; j++) sum += (double)__shfl_sync(0xffffffffu, wv, j);
    float wj = wv;
    if (p.norm) {
        const double den = sum > ROUTE_MIN_SUM ? sum : ROUTE_MIN_SUM;
        wj = (float)(wv / den);
    }
    if (lane < k) {
        p.ids[(size_t)r * k + lane] = mine;
        p.weights[(size_t)r * k + lane] = wj * p.scale;
    }
    if (lane == 0 && p.margin) p.margin[r] = margin;
    return true;
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
    if (rf_shape_ok(p) && route_regs(p, score, prob, r)) return;
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
        double den = sum > ROUTE_MIN_SUM ? sum : ROUTE_MIN_SUM;
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
