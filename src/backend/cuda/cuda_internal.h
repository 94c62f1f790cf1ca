/* cuda_internal.h: the CUDA backend's state shared by its C files —
 * cuda_backend.c (weights, scratch, blocks, the forward hook, graphs) and
 * cuda_hybrid.c (host experts, streamed prefill, the hot-expert cache).
 * Not a public interface: see cuda_backend.h. */
#ifndef DS_CUDA_INTERNAL_H
#define DS_CUDA_INTERNAL_H

#include "../backend.h"
#include "../cuda_scratch.h"
#include "../../model/placement.h"

#include "attn.h"

#include <cuda_runtime_api.h>

#define LM_CHUNK DS_CU_LM_CHUNK
#define GRAPH_MAX_ROWS 16 /* micro-batches up to this size replay a captured graph */
#define N_GRAPHS 8

/* a weight on the device: rows of row_bytes, K elements each */
typedef struct cu_w {
    const uint8_t *d;
    int type;
    int64_t K, rows;
    size_t row_bytes;
} cu_w;

typedef struct cu_layer {
    cu_w attn_norm, q_a, q_a_norm, q_b, q, kv_a, kv_a_norm, k_b, v_b, attn_out, ffn_norm;
    cu_w ffn_gate, ffn_up, ffn_down;
    cu_w gate_inp, exp_bias, gate_exps, up_exps, gate_up_exps, down_exps, gate_shexp, up_shexp, down_shexp;
} cu_layer;

/* DSINFER_CUDA_PROFILE=1: time each stage with events (no graphs), print at free */
enum { P_APROJ, P_ACORE, P_AOUT, P_NORM, P_DENSE, P_ROUTE, P_SHARED, P_MOE, P_LM, P_N };

/* which activation rows a converted copy (f16 or int8) holds */
typedef struct cu_xkey {
    const float *src;          /* NULL: nothing reusable */
    int64_t ldx, cols;
    int n;
} cu_xkey;

typedef struct cu_graph {
    int n, nw;                 /* the shape it was captured for (0 = empty slot) */
    bool best;                 /* with the argmax of the first LM_CHUNK rows */
    cudaGraphExec_t exec;
} cu_graph;

typedef struct cu_impl {
    const ds_model *m;
    cudaStream_t s;
    uint8_t *wbuf;             /* all weights, one allocation */
    size_t wbytes;
    cu_w token_embd, output_norm, output;
    cu_layer *L;               /* [n_layer] */
    float *freq;               /* [d_rope/2] */
    int max_rows;
    int64_t max_ctx;
    /* scratch, [max_rows][...] */
    float *h, *a, *y, *f, *xn, *cq, *q, *kvrow, *qabs, *olat, *heads, *ffa, *ffb, *rlogit, *rw, *margin, *act, *logits;
    int32_t *ids, *forced;
    int32_t *best, *h_best;    /* each wanted row's argmax id, and its pinned mirror [R] */
    /* grouped MoE prefill: rows gathered per expert, [max_rows*k][...] */
    float *moe_y, *moe_u;          /* [R*k][E] gathered inputs, then expert outputs; [R*k][F] up */
    int32_t *moe_idx;              /* device [2][R*k]: gathered row -> batch row, slot -> gathered row */
    int32_t *h_moe_idx, *h_ids;    /* pinned host mirrors ([2][R*k], [R*k]) */
    /* tensor-core GEMM (gemm.h) for micro-batches of gemm_min_rows rows or more
     * (DSINFER_GEMM_MIN_ROWS; 0 = never): activations converted to f16 in xh
     * with per-row scales xinv, converted from the rows xh_key names;
     * x_ready: the caller says those rows did not change since */
    int gemm_min_rows;
    void *xh;
    float *xinv;
    bool x_ready;
    cu_xkey xh_key;
    int32_t *moe_tiles, *h_moe_tiles; /* grouped MoE tiles, device and pinned [max][3] */
    /* MLA core on tensor cores (mla_tc.h, DSINFER_CUDA_MLA_TC=0 turns it off)
     * with its split-KV workspace */
    bool mla_tc, mla_tc_ok;    /* ok: on, and the bound cache's type and the shapes suit it */
    float *mla_work;
    size_t mla_work_floats;
    /* decode products on int8 activations (gemv_q8.h): x quantized into xq
     * (the rows xq_key names; x_ready as for xh) */
    bool gemv_q8;
    bool moe_q8;     /* the decode MoE too (expert mode) */
    bool fuse_q8;    /* quantize in the producer: RMSNorm, SwiGLU (DSINFER_CUDA_FUSE=0: separate launches) */
    int q8_max_rows; /* products of up to this many rows (DS_CU_Q8_MAX_ROWS, DSINFER_Q8_MAX_ROWS) */
    void *xq;
    cu_xkey xq_key;
    /* device KV (bound lazily to the engine's ds_kv: its geometry is known only then) */
    const ds_kv *kv;
    void *kv_pool;
    ds_cu_kv_view view;
    int n_tab;
    /* per-call inputs: one device buffer and its pinned host mirror
     * [tokens n][pos n][row_tab n][want_idx n][tables n_tab*max_blocks] */
    int32_t *d_in, *h_in;
    size_t in_len;
    bool use_graph;
    cu_graph graphs[N_GRAPHS];
    int next_graph;
    bool prof;
    cudaEvent_t ev0, ev1;
    double prof_ms[P_N];
    int prof_steps;
    /* DSINFER_CUDA_STEP_STATS=1: graph-replayed steps, their time in the
     * call (host) and on the GPU (events around the graph), printed at free */
    bool step_stats;
    cudaEvent_t sev0, sev1;
    long st_steps[2];          /* [0] one-row steps, [1] steps of more rows */
    double st_call_s[2], st_gpu_ms[2];
    /* placement (ds_backend_params.placed): only CUDA<gpu>'s weights are here */
    bool placed;
    int gpu, phys;             /* logical GPU of the placement, physical device */
    ds_backend *host;          /* computes the routed experts placed on the CPU */
    bool *host_exps;           /* [n_layer]: this layer's routed experts are on the host */
    bool any_host_exps;
    float *h_embd;             /* pinned [R][E]: embeddings when token_embd stays on the host, or
                                * its raw rows (embd_raw: the GPU dequantizes them) */
    bool embd_raw;
    float *h_y, *h_w, *h_xo;   /* pinned [R][E], [R][k], [R][E]: host experts' input, weights, output */
    int32_t *h_eids;           /* pinned [R][k] */
    cudaEvent_t ev_y;          /* the host experts' inputs are in pinned memory */
    /* prefill with host experts: micro-batches of at least stream_rows rows copy
     * the layer's used experts into stage and run them here (PCIe beats the
     * CPU once enough rows share each expert) */
    uint8_t *stage;
    size_t stage_bytes;
    int stream_rows;           /* 0 = never */
    /* measured cost of the two ways for batches of stream_rows or more rows:
     * CPU ms per row, streamed ms per byte of used experts (EMAs); each is
     * tried once, then the cheaper prediction wins per micro-batch */
    double cpu_ms_row, stream_ms_byte;
    bool have_cpu_cost, have_stream_cost;
    long n_big_cpu;
    /* host -> device copies of mmap'd weights (stage, hot cache): threads copy
     * chunks into two pinned buffers while the DMA engine sends the other */
    uint8_t *pin[2];
    cudaEvent_t ev_pin[2];
    int pin_next;
    ds_threadpool *copy_pool;
    /* hot-expert cache (--gpu-experts): per host-expert layer, n_hot experts
     * resident here in slots; usage counted online from the router's choice */
    int n_hot;
    uint8_t **hot_w;           /* [n_layer] device [n_hot][gate|up|down slices] (NULL: layer not cached) */
    int32_t *hot_slot;         /* [n_layer][n_expert]: slot of a cached expert, -1 */
    int32_t *hot_expert;       /* [n_layer][n_hot]: expert in a slot, -1 */
    float *hot_count;          /* [n_layer][n_expert]: decayed usage */
    int *hot_calls;            /* [n_layer]: calls since the last refresh */
    int32_t *h_gids;           /* pinned [R][k]: ids remapped to slots for the GPU part */
    long hot_hits, hot_pairs;  /* (row, expert) pairs served from the cache, of all */
    long hot_uploads;          /* experts copied into the cache */
    const char *profile;       /* usage counts file (--expert-profile) */
    /* hybrid timing (DSINFER_HYBRID_STATS=1 prints it at free) */
    bool hstats;
    cudaEvent_t ev_t0, ev_t1;  /* hstats: the GPU's own work while the host computes experts */
    double t_gpu_idle_ms;
    double t_host_ms, t_wait_ms, t_stream_ms;
    long n_host_calls, n_stream_calls;
} cu_impl;

static inline void prof_begin(cu_impl *C) {
    if (C->prof) cudaEventRecord(C->ev0, C->s);
}
/* ends stage cat and passes the stage's return code through */
static inline int prof_end(cu_impl *C, int cat, int rc) {
    if (!C->prof) return rc;
    float ms = 0;
    cudaEventRecord(C->ev1, C->s);
    cudaEventSynchronize(C->ev1);
    cudaEventElapsedTime(&ms, C->ev0, C->ev1);
    C->prof_ms[cat] += ms;
    return rc;
}
/* runs call (an int expression) as profile stage cat; the comma puts
 * prof_begin before the call, and prof_end runs after its arguments */
#define PROF(C, cat, call) prof_end(C, cat, (prof_begin(C), (call)))

static inline size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* ---- cuda_backend.c, used by cuda_hybrid.c ---- */
/* out = shared expert(y) of layer il (overwrites) */
int cu_dev_shared(cu_impl *C, int il, int n, const float *y, float *out);
/* out += routed experts of host ids (grouped by expert), w: device [n][k] */
int cu_dev_moe_grouped(cu_impl *C, int il, int n, const float *y, const int32_t *ids, const float *w, float *out);

/* ---- cuda_hybrid.c ---- */
/* Routed experts of a host-placed layer for the rows in C->y (router output
 * in C->ids/C->rw), added into C->f: on the CPU (overlapped with the shared
 * expert) with the hot cache's share on the GPU ... */
int cu_host_moe(cu_impl *C, int il, int n);
/* ... or streamed to the GPU's stage for a prefill micro-batch */
int cu_stream_moe(cu_impl *C, int il, int n);
/* which of the two, by measured cost */
bool cu_stream_cheaper(cu_impl *C, int il, int n);
/* pinned copy buffers, copy threads, the hot cache (after the weights are up) */
ds_status cu_hybrid_setup(cu_impl *C, const ds_backend_params *p, ds_error *err);
/* DSINFER_HYBRID_STATS=1: the timing and cache lines at free */
void cu_hybrid_report(const cu_impl *C);
/* frees what cu_hybrid_setup made (saves the profile first) */
void cu_hybrid_free(cu_impl *C);

#endif
