/* cuda_hybrid.c: the CUDA backend's side of a CPU+GPU placement, when only
 * routed experts stay on the host (docs/hybrid.md): the host experts of a
 * decode step overlapped with the GPU's shared expert, streamed prefill
 * experts (or the CPU, by measured cost), the hot-expert cache and its
 * usage profile, and the pinned threaded copies they use. */
#include "cuda_internal.h"
#include "cuda_check.h"
#include "moe.h"
#include "rowops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int upload_host(cu_impl *C, void *dev, const void *host, size_t bytes);
static void profile_save(cu_impl *C);

/* ---- hot-expert cache ------------------------------------------------------------ */

#define HOT_REFRESH 16 /* calls of a layer between re-choosing its cached experts */

/* the layer's expert tensors in cache order: gate|up (or gate_up), down */
static int expert_tensors(const ds_layer *H, const ds_tensor *t[3]) {
    int n = 0;
    if (ds_tensor_present(&H->gate_up_exps)) t[n++] = &H->gate_up_exps;
    else { t[n++] = &H->gate_exps; t[n++] = &H->up_exps; }
    t[n++] = &H->down_exps;
    return n;
}

static size_t hot_expert_bytes(const ds_layer *H) {
    const ds_tensor *t[3];
    size_t b = 0;
    for (int i = 0, n = expert_tensors(H, t); i < n; i++) b += align256((size_t)t[i]->row_bytes * t[i]->ne[1]);
    return b;
}

/* Re-chooses the layer's cached experts. Free slots take the most used
 * uncached experts; a cached expert is replaced only by one used clearly
 * more (HOT_SWAP_RATIO) and at most HOT_SWAPS per refresh: every arrival is
 * a copy over PCIe from pageable memory, and near-uniform traffic must not
 * turn the cache into a copy loop. Counts halve each refresh, so the
 * cache still follows traffic that really moves. */
#define HOT_SWAPS 2
#define HOT_SWAP_RATIO 2.0f
static int hot_refresh(cu_impl *C, int il) {
    const ds_layer *H = &C->m->layers[il];
    const int NE = C->m->hp.n_expert, N = C->n_hot;
    float *cnt = C->hot_count + (size_t)il * NE;
    int32_t *slot = C->hot_slot + (size_t)il * NE, *exp = C->hot_expert + (size_t)il * N;
    const ds_tensor *t[3];
    const int nt = expert_tensors(H, t);
    const size_t eb = hot_expert_bytes(H);
    int swaps = 0;
    for (;;) {
        int best = -1; /* the most used expert not cached */
        for (int e = 0; e < NE; e++)
            if (slot[e] < 0 && cnt[e] > 0 && (best < 0 || cnt[e] > cnt[best])) best = e;
        if (best < 0) break;
        int s = 0, worst = -1; /* a free slot, else the least used resident */
        while (s < N && exp[s] >= 0) s++;
        if (s == N) {
            for (int j = 0; j < N; j++)
                if (worst < 0 || cnt[exp[j]] < cnt[exp[worst]]) worst = j;
            if (swaps == HOT_SWAPS || cnt[best] < HOT_SWAP_RATIO * cnt[exp[worst]] + 1.0f) break;
            s = worst;
            slot[exp[s]] = -1;
            swaps++;
        }
        exp[s] = best;
        slot[best] = s;
        size_t off = 0;
        for (int i = 0; i < nt; i++) {
            const size_t sl = (size_t)t[i]->row_bytes * t[i]->ne[1];
            int rc = upload_host(C, C->hot_w[il] + (size_t)s * eb + off, (const uint8_t *)t[i]->data + (size_t)best * sl, sl);
            if (rc) return rc;
            off += align256(sl);
        }
        C->hot_uploads++;
    }
    for (int e = 0; e < NE; e++) cnt[e] *= 0.5f;
    return 0;
}

/* the cached experts of layer il on the device: ids remapped to slots (h_gids,
 * uploaded into C->forced), the rest -1 */
static int hot_moe(cu_impl *C, int il, int n) {
    const ds_layer *H = &C->m->layers[il];
    const int64_t F = C->m->hp.n_ff_exp, E = C->m->hp.n_embd;
    const int k = C->m->hp.n_expert_used;
    const ds_tensor *t[3];
    const int nt = expert_tensors(H, t);
    const size_t eb = hot_expert_bytes(H);
    DS_CU_TRY(cudaMemcpyAsync(C->forced, C->h_gids, (size_t)n * k * sizeof(int32_t), cudaMemcpyHostToDevice, C->s));
    ds_cu_moe_params p = { .E = E, .F = F, .y = C->y, .ids = C->forced, .weights = C->rw, .act = C->act, .out = C->f,
                           .n = n, .k = k, .stream = C->s };
    const uint8_t *base = C->hot_w[il];
    const size_t s0 = align256((size_t)t[0]->row_bytes * t[0]->ne[1]);
    if (nt == 2) { /* fused gate_up: gate rows first, then up */
        p.gate = (ds_cu_exps){ base, t[0]->type, t[0]->row_bytes, eb };
        p.up = (ds_cu_exps){ base + (size_t)F * t[0]->row_bytes, t[0]->type, t[0]->row_bytes, eb };
        p.down = (ds_cu_exps){ base + s0, t[1]->type, t[1]->row_bytes, eb };
    } else {
        const size_t s1 = align256((size_t)t[1]->row_bytes * t[1]->ne[1]);
        p.gate = (ds_cu_exps){ base, t[0]->type, t[0]->row_bytes, eb };
        p.up = (ds_cu_exps){ base + s0, t[1]->type, t[1]->row_bytes, eb };
        p.down = (ds_cu_exps){ base + s0 + s1, t[2]->type, t[2]->row_bytes, eb };
    }
    return ds_cu_moe(&p);
}

/* routed experts of layer il on the host backend, overlapped with the
 * shared expert on the GPU: the normed rows and the router's choice go down
 * to pinned memory, the GPU goes on with the shared expert while the CPU
 * computes the experts, and their sum comes back up and joins the FFN
 * output. Only hidden states and routing cross PCIe. */
int cu_host_moe(cu_impl *C, int il, int n) {
    const ds_hparams *hp = &C->m->hp;
    const size_t nE = (size_t)n * hp->n_embd, nk = (size_t)n * hp->n_expert_used;
    int rc;
    DS_CU_TRY(cudaMemcpyAsync(C->h_y, C->y, nE * sizeof(float), cudaMemcpyDeviceToHost, C->s));
    DS_CU_TRY(cudaMemcpyAsync(C->h_eids, C->ids, nk * sizeof(int32_t), cudaMemcpyDeviceToHost, C->s));
    DS_CU_TRY(cudaMemcpyAsync(C->h_w, C->rw, nk * sizeof(float), cudaMemcpyDeviceToHost, C->s));
    DS_CU_TRY(cudaEventRecord(C->ev_y, C->s));
    if (C->ev_t0) DS_CU_TRY(cudaEventRecord(C->ev_t0, C->s));
    if ((rc = PROF(C, P_SHARED, cu_dev_shared(C, il, n, C->y, C->f)))) return rc;
    const double t0 = ds_time_s();
    DS_CU_TRY(cudaEventSynchronize(C->ev_y));
    const double t1 = ds_time_s();
    if (C->hot_w && C->hot_w[il]) { /* split: cached experts here, the rest on the host */
        const int NE = C->m->hp.n_expert;
        const int32_t *slot = C->hot_slot + (size_t)il * NE;
        float *cnt = C->hot_count + (size_t)il * NE;
        int hits = 0;
        for (size_t p = 0; p < nk; p++) {
            const int e = C->h_eids[p];
            C->h_gids[p] = e >= 0 && e < NE ? slot[e] : -1;
            if (e >= 0 && e < NE) cnt[e] += 1;
            if (C->h_gids[p] >= 0) { C->h_eids[p] = -1; hits++; }
        }
        C->hot_hits += hits;
        C->hot_pairs += (long)nk;
        if (hits && (rc = hot_moe(C, il, n))) return rc;
    }
    if (C->ev_t1) DS_CU_TRY(cudaEventRecord(C->ev_t1, C->s));
    memset(C->h_xo, 0, nE * sizeof(float));
    ds_status st = C->host->moe_experts(C->host, C->m, il, n, C->h_y, C->h_eids, C->h_w, C->h_xo);
    const double t2 = ds_time_s();
    if (C->ev_t1) { /* the GPU idles from the end of its own work until the host's result goes up */
        float g = 0;
        DS_CU_TRY(cudaEventSynchronize(C->ev_t1));
        DS_CU_TRY(cudaEventElapsedTime(&g, C->ev_t0, C->ev_t1));
        const double idle = (t2 - t1) * 1e3 - g;
        C->t_gpu_idle_ms += idle > 0 ? idle : 0;
    }
    C->t_wait_ms += (t1 - t0) * 1e3;
    C->t_host_ms += (t2 - t1) * 1e3;
    C->n_host_calls++;
    if (C->stage && n >= C->stream_rows) {
        const double x = (t2 - t1) * 1e3 / n;
        C->cpu_ms_row = C->have_cpu_cost ? 0.7 * C->cpu_ms_row + 0.3 * x : x;
        C->have_cpu_cost = true;
        C->n_big_cpu++;
    }
    if (C->prof) C->prof_ms[P_MOE] += (t2 - t1) * 1e3;
    if (st) {
        fprintf(stderr, "cuda backend: the host's routed experts of layer %d failed (%s)\n", il, ds_status_name(st));
        return (int)cudaErrorUnknown;
    }
    /* C->a (the attention output) is free until the next layer's attention */
    DS_CU_TRY(cudaMemcpyAsync(C->a, C->h_xo, nE * sizeof(float), cudaMemcpyHostToDevice, C->s));
    if ((rc = ds_cu_add(C->f, C->a, (int64_t)nE, C->s))) return rc;
    /* after the CPU's part, so slow copies of arriving experts never delay it */
    if (C->hot_w && C->hot_w[il] && ++C->hot_calls[il] >= HOT_REFRESH) {
        C->hot_calls[il] = 0;
        return hot_refresh(C, il);
    }
    return 0;
}

/* ---- pinned, threaded uploads of host weights ----------------------------------------- */

#define PIN_CHUNK ((size_t)64 << 20)

typedef struct copy_job {
    uint8_t *dst;
    const uint8_t *src;
    size_t n;
} copy_job;

static void copy_task(void *ctx, int ith, int nth) {
    const copy_job *j = ctx;
    const size_t per = ((j->n + (size_t)nth - 1) / (size_t)nth + 4095) & ~(size_t)4095;
    const size_t a = (size_t)ith * per, b = a + per < j->n ? a + per : j->n;
    if (a < b) memcpy(j->dst + a, j->src + a, b - a);
}

/* dev[0, bytes) = host[0, bytes) on the stream. Pageable (mmap'd) memory
 * goes through the pinned chunks: about 8 GB/s as one cudaMemcpy, several
 * times that this way. Without the pinned chunks, a plain copy. */
static int upload_host(cu_impl *C, void *dev, const void *host, size_t bytes) {
    if (!C->pin[0] || !C->copy_pool) {
        DS_CU_TRY(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, C->s));
        return 0;
    }
    for (size_t off = 0; off < bytes; off += PIN_CHUNK) {
        const size_t len = bytes - off < PIN_CHUNK ? bytes - off : PIN_CHUNK;
        const int b = C->pin_next;
        C->pin_next ^= 1;
        DS_CU_TRY(cudaEventSynchronize(C->ev_pin[b])); /* its previous send is done */
        copy_job j = { C->pin[b], (const uint8_t *)host + off, len };
        ds_threadpool_run(C->copy_pool, copy_task, &j);
        DS_CU_TRY(cudaMemcpyAsync((uint8_t *)dev + off, C->pin[b], len, cudaMemcpyHostToDevice, C->s));
        DS_CU_TRY(cudaEventRecord(C->ev_pin[b], C->s));
    }
    return 0;
}

/* bytes of one expert's slice of a [n_expert][...] tensor */
static size_t expert_slice(const ds_tensor *t) { return (size_t)t->row_bytes * (size_t)t->ne[1]; }

/* a host tensor's geometry with its data in the stage at *off */
static cu_w staged(cu_impl *C, const ds_tensor *t, size_t *off) {
    cu_w w = { .d = C->stage + *off, .type = t->type, .K = t->ne[0], .rows = t->ne[1] * t->ne[2],
               .row_bytes = t->row_bytes };
    *off += align256(expert_slice(t) * (size_t)t->ne[2]);
    return w;
}

/* Routed experts of a host-placed layer for a prefill micro-batch: the
 * experts the batch uses are copied into the stage (same layout as the
 * file) and run by the grouped GPU path; the shared expert first. */
int cu_stream_moe(cu_impl *C, int il, int n) {
    const ds_layer *H = &C->m->layers[il];
    cu_layer *L = &C->L[il];
    const int k = C->m->hp.n_expert_used, NE = C->m->hp.n_expert;
    int rc;
    if ((rc = PROF(C, P_SHARED, cu_dev_shared(C, il, n, C->y, C->f)))) return rc;
    DS_CU_TRY(cudaMemcpyAsync(C->h_ids, C->ids, (size_t)n * k * sizeof(int32_t), cudaMemcpyDeviceToHost, C->s));
    DS_CU_TRY(cudaStreamSynchronize(C->s));
    bool used[DS_MAX_EXPERTS] = { 0 };
    for (int p = 0; p < n * k; p++)
        if (C->h_ids[p] >= 0 && C->h_ids[p] < NE) used[C->h_ids[p]] = true;
    const ds_tensor *src[3] = { H->gate_up_exps.data ? &H->gate_up_exps : &H->gate_exps,
                                H->gate_up_exps.data ? NULL : &H->up_exps, &H->down_exps };
    cu_w *dst[3] = { H->gate_up_exps.data ? &L->gate_up_exps : &L->gate_exps, H->gate_up_exps.data ? NULL : &L->up_exps,
                     &L->down_exps };
    size_t off = 0, sent = 0;
    const double t0 = ds_time_s();
    for (int i = 0; i < 3; i++) {
        if (!src[i]) continue;
        *dst[i] = staged(C, src[i], &off);
        const size_t slice = expert_slice(src[i]);
        for (int e = 0; e < NE; e++) sent += used[e] ? slice : 0;
        for (int e = 0; e < NE; e++) /* runs of used experts go up in one copy */
            if (used[e]) {
                int e1 = e;
                while (e1 + 1 < NE && used[e1 + 1]) e1++;
                if ((rc = upload_host(C, (uint8_t *)dst[i]->d + (size_t)e * slice,
                                      (const uint8_t *)src[i]->data + (size_t)e * slice, (size_t)(e1 - e + 1) * slice)))
                    return rc;
                e = e1;
            }
    }
    rc = PROF(C, P_MOE, cu_dev_moe_grouped(C, il, n, C->y, C->h_ids, C->rw, C->f));
    for (int i = 0; i < 3; i++) /* the layer holds no device copy of its experts */
        if (dst[i]) memset(dst[i], 0, sizeof *dst[i]);
    if (rc) return rc;
    /* its cost, for choosing between this and the CPU (the next layer waits on it anyway) */
    DS_CU_TRY(cudaStreamSynchronize(C->s));
    const double ms = (ds_time_s() - t0) * 1e3;
    C->t_stream_ms += ms;
    C->n_stream_calls++;
    if (sent) {
        const double x = ms / (double)sent;
        C->stream_ms_byte = C->have_stream_cost ? 0.7 * C->stream_ms_byte + 0.3 * x : x;
        C->have_stream_cost = true;
    }
    return 0;
}

/* For a micro-batch of n rows with the layer's experts on the host: stream
 * them to the GPU, or compute them on the CPU? Below stream_rows, the CPU.
 * Above, each way is tried once, then the cheaper by measured cost: CPU
 * time grows with the rows, streaming with the bytes of the experts the
 * batch uses (NE·(1 − (1 − k/NE)^n) of them on average). */
bool cu_stream_cheaper(cu_impl *C, int il, int n) {
    if (!C->stage || C->stream_rows <= 0 || n < C->stream_rows) return false;
    if (!C->have_stream_cost) return true;
    if (!C->have_cpu_cost) return false;
    const ds_hparams *hp = &C->m->hp;
    const double NE = hp->n_expert, used = NE * (1.0 - pow(1.0 - (double)hp->n_expert_used / NE, n));
    const ds_layer *H = &C->m->layers[il];
    const ds_tensor *t[3];
    double per_expert = 0;
    for (int i = 0, nt = expert_tensors(H, t); i < nt; i++) per_expert += (double)expert_slice(t[i]);
    return C->stream_ms_byte * used * per_expert < C->cpu_ms_row * n;
}

/* The usage-profile file: a header line, then "layer expert count" lines
 * for the nonzero counts. Text, so a person can read and edit it. */
#define PROFILE_MAGIC "dsinfer expert usage v1"

static void profile_load(cu_impl *C) {
    FILE *f = fopen(C->profile, "r");
    if (!f) return; /* first run: the file appears at exit */
    const ds_hparams *hp = &C->m->hp;
    char head[64];
    int nl = 0, ne = 0, il, e, n = 0;
    float c;
    if (!fgets(head, sizeof head, f) || strncmp(head, PROFILE_MAGIC, strlen(PROFILE_MAGIC)) ||
        fscanf(f, "%d %d", &nl, &ne) != 2 || nl != hp->n_layer || ne != hp->n_expert) {
        fprintf(stderr, "cuda: expert profile '%s' is not for this model (layers/experts differ): ignored\n", C->profile);
        fclose(f);
        return;
    }
    while (fscanf(f, "%d %d %f", &il, &e, &c) == 3)
        if (il >= 0 && il < nl && e >= 0 && e < ne && c >= 0 && c < 1e30f) {
            C->hot_count[(size_t)il * ne + e] = c;
            n++;
        }
    fclose(f);
    fprintf(stderr, "cuda: expert profile '%s': %d usage counts loaded\n", C->profile, n);
}

static void profile_save(cu_impl *C) {
    const ds_hparams *hp = &C->m->hp;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", C->profile);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "cuda: cannot write the expert profile '%s'\n", tmp);
        return;
    }
    fprintf(f, "%s\n%d %d\n", PROFILE_MAGIC, hp->n_layer, hp->n_expert);
    for (int il = 0; il < hp->n_layer; il++)
        for (int e = 0; e < hp->n_expert; e++) {
            const float c = C->hot_count[(size_t)il * hp->n_expert + e];
            if (c > 0) fprintf(f, "%d %d %.3f\n", il, e, c);
        }
    /* written whole, then renamed: a crash never leaves half a profile */
    if (fclose(f) || rename(tmp, C->profile)) fprintf(stderr, "cuda: cannot write the expert profile '%s'\n", C->profile);
}

/* the hot-expert cache: n experts of each host-expert layer, slots empty
 * until the first refresh (or filled from the profile) */
static ds_status hot_init(cu_impl *C, int n, ds_error *err) {
    const ds_hparams *hp = &C->m->hp;
    if (n <= 0 || !C->any_host_exps) return DS_OK;
    C->n_hot = n < hp->n_expert ? n : hp->n_expert;
    const size_t L = (size_t)hp->n_layer, NE = (size_t)hp->n_expert;
    C->hot_w = calloc(L, sizeof *C->hot_w);
    C->hot_slot = malloc(L * NE * sizeof *C->hot_slot);
    C->hot_expert = malloc(L * (size_t)C->n_hot * sizeof *C->hot_expert);
    C->hot_count = calloc(L * NE, sizeof *C->hot_count);
    C->hot_calls = calloc(L, sizeof *C->hot_calls);
    if (!C->hot_w || !C->hot_slot || !C->hot_expert || !C->hot_count || !C->hot_calls ||
        cudaMallocHost((void **)&C->h_gids, (size_t)C->max_rows * hp->n_expert_used * sizeof(int32_t)) != cudaSuccess)
        return ds_error_set(err, DS_ERR_OOM, "out of memory for the hot-expert cache");
    memset(C->hot_slot, 0xff, L * NE * sizeof *C->hot_slot);
    memset(C->hot_expert, 0xff, L * (size_t)C->n_hot * sizeof *C->hot_expert);
    size_t total = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        if (!C->host_exps[il]) continue;
        const size_t b = hot_expert_bytes(&C->m->layers[il]) * (size_t)C->n_hot;
        if (cudaMalloc((void **)&C->hot_w[il], b) != cudaSuccess)
            return ds_error_set(err, DS_ERR_OOM,
                                "device 'cuda': --gpu-experts %d needs %.2f GiB per layer; the GPU ran out after %.2f GiB",
                                C->n_hot, b / 1073741824.0, total / 1073741824.0);
        total += b;
    }
    fprintf(stderr, "cuda: hot-expert cache: %d experts of each CPU layer, %.2f GiB\n", C->n_hot, total / 1073741824.0);
    if (C->profile) {
        profile_load(C);
        for (int il = 0; il < hp->n_layer; il++) /* warm start: fill from the loaded counts */
            if (C->hot_w[il] && hot_refresh(C, il))
                return ds_error_set(err, DS_ERR_IO, "device 'cuda': filling the hot-expert cache failed");
        if (cudaStreamSynchronize(C->s) != cudaSuccess)
            return ds_error_set(err, DS_ERR_IO, "device 'cuda': filling the hot-expert cache failed");
    }
    return DS_OK;
}

/* Pinned copy chunks and copy threads (streamed prefill, the hot cache),
 * then the hot-expert cache (warm from the profile when there is one). */
ds_status cu_hybrid_setup(cu_impl *C, const ds_backend_params *p, ds_error *err) {
    if (C->stage_bytes || (p->gpu_experts > 0 && C->any_host_exps)) { /* pinned chunks + copy threads */
        const int nt = p->n_threads > 0 ? p->n_threads : ds_cpu_count();
        for (int i = 0; i < 2; i++)
            if (cudaMallocHost((void **)&C->pin[i], PIN_CHUNK) != cudaSuccess ||
                cudaEventCreateWithFlags(&C->ev_pin[i], cudaEventDisableTiming) != cudaSuccess) {
                return ds_error_set(err, DS_ERR_OOM, "device 'cuda': cannot allocate pinned copy buffers");
            }
        if (!(C->copy_pool = ds_threadpool_create(nt < 16 ? nt : 16))) {
            return ds_error_set(err, DS_ERR_OOM, "cannot create the copy threads");
        }
    }
    if (C->hstats && C->any_host_exps &&
        (cudaEventCreate(&C->ev_t0) != cudaSuccess || cudaEventCreate(&C->ev_t1) != cudaSuccess))
        return ds_error_set(err, DS_ERR_IO, "device 'cuda': cannot create timing events");
    C->profile = p->expert_profile;
    return hot_init(C, p->gpu_experts, err);
}

void cu_hybrid_report(const cu_impl *C) {
    if (C->hstats && C->n_host_calls)
        fprintf(stderr, "cuda hybrid: %ld host expert calls, %.3f ms each on the CPU; idle per call: the CPU waited "
                        "%.3f ms for the GPU's part of the layer, the GPU %.3f ms for the CPU's experts\n",
                C->n_host_calls, C->t_host_ms / C->n_host_calls, C->t_wait_ms / C->n_host_calls,
                C->t_gpu_idle_ms / C->n_host_calls);
    if (C->hstats && C->hot_pairs)
        fprintf(stderr, "cuda hybrid: hot-expert cache (%d experts per CPU layer on the GPU): %.1f%% of %ld "
                        "(row, expert) pairs served on the GPU; %ld experts copied in\n",
                C->n_hot, 100.0 * C->hot_hits / C->hot_pairs, C->hot_pairs, C->hot_uploads);
    if (C->hstats && (C->n_stream_calls || C->n_big_cpu))
        fprintf(stderr, "cuda hybrid: prefill micro-batches of %d+ rows: %ld layer calls streamed the experts to the "
                        "GPU (%.3f ms each, %.1f GB/s of experts), %ld computed them on the CPU (%.4f ms per row)\n",
                C->stream_rows, C->n_stream_calls, C->n_stream_calls ? C->t_stream_ms / C->n_stream_calls : 0,
                C->have_stream_cost ? 1e-6 / C->stream_ms_byte : 0, C->n_big_cpu, C->cpu_ms_row);
}

void cu_hybrid_free(cu_impl *C) {
    if (C->ev_t0) cudaEventDestroy(C->ev_t0);
    if (C->ev_t1) cudaEventDestroy(C->ev_t1);
    for (int i = 0; i < 2; i++) {
        if (C->ev_pin[i]) cudaEventDestroy(C->ev_pin[i]);
        if (C->pin[i]) cudaFreeHost(C->pin[i]);
    }
    if (C->copy_pool) ds_threadpool_free(C->copy_pool);
    if (C->profile && C->hot_count && C->hot_pairs) profile_save(C);
    for (int il = 0; C->hot_w && il < C->m->hp.n_layer; il++)
        if (C->hot_w[il]) cudaFree(C->hot_w[il]);
    free(C->hot_w); free(C->hot_slot); free(C->hot_expert); free(C->hot_count); free(C->hot_calls);
    if (C->h_gids) cudaFreeHost(C->h_gids);
}
