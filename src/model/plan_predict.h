/* plan_predict.h: `dsinfer plan` without the printing — choose a placement
 * for given memory limits (greedy, as llama.cpp's -ngl/-ot would be set by
 * hand) and predict decode/prefill speed from a bandwidth model with
 * overheads measured on our H200. Pure host code on a mapped model: nothing
 * is computed or uploaded. Not a scheduler: engine/ runs what the spec says. */
#ifndef DS_PLAN_PREDICT_H
#define DS_PLAN_PREDICT_H

#include "placement.h"

#define DS_MAX_GPUS (DS_MAX_DEVICES - 1)

/* Calibration, measured with the 10-layer full-width synth (3 dense,
 * q3_k_m, 37.6 GiB, 3.72 GB/step) on an H200 host (16 cores), in one job
 * (2026-11-27 06:12 UTC, session 3: tensor-core prefill, int8 decode GEMV):
 * host reads 90.5 GB/s, GPU reads 4477 GB/s; all on the GPU tg 267.3 tok/s
 * and pp512 4048 tok/s; -ngl 99 --cpu-moe tg 47.55 tok/s (1.169 GB host,
 * 2.551 GB GPU). The CPU rate is session 2's (pp512 127 tok/s with the
 * host experts on the CPU; that code did not change). */
#define DS_PLAN_O_GPU_LAYER 0.29102e-3  /* s per decode step per layer whose attention is on a GPU: (1/267.3 - 3.72/4477) / 10 */
#define DS_PLAN_O_HYB_LAYER 0.66191e-3  /* s per decode step per layer with host experts: (1/47.55 - 1.169/90.5 - 2.551/4477 - 10 * 0.29102 ms) / 7 */
#define DS_PLAN_GPU_TFLOPS 50.98        /* dsinfer's prefill rate on the H200 (TFLOP/s of weight matmuls), not the GPU's peak:
                                           5.988 TFLOP per 512 tokens (as predicted) in 512/4048.3 s - 40.36 GB / 4477 GB/s */
#define DS_PLAN_CPU_TFLOPS 0.72         /* 16 host cores computing routed experts (8-bit activations) */

/* What the planner may use. */
typedef struct ds_plan_limits {
    int n_gpu;                    /* GPUs (--gpu-mem entries); 0 = host only */
    uint64_t gpu_mem[DS_MAX_GPUS];/* [n_gpu] bytes of memory per GPU */
    uint64_t cpu_mem;             /* bytes of host RAM for weights + KV; 0 = not checked */
    uint64_t gpu_margin;          /* bytes kept free on each GPU (1 GiB) */
    uint64_t gpu_scratch;         /* the CUDA backend's scratch for the micro-batch (ds_cuda_scratch_bytes);
                                     the prefill stream stage is added per placement */
    int64_t n_ctx;                /* KV cache tokens (-c) */
    int kv_elem;                  /* bytes per cached value: 2 (f16/bf16) or 4 (f32) */
} ds_plan_limits;

typedef enum ds_plan_mode {
    DS_PLAN_HOST_ONLY,     /* no GPU, or not even one layer fits */
    DS_PLAN_ALL_GPU,       /* everything but token_embd on CUDA0 */
    DS_PLAN_EXPERTS_SPLIT, /* all but routed experts on CUDA0; experts of the last layers on GPUs, the rest on the host */
    DS_PLAN_LAYERS,        /* the non-expert part does not fit CUDA0: -ngl N --cpu-moe (the last N layers' non-expert blocks) */
} ds_plan_mode;

/* A chosen placement. Routed experts are placed by whole layers, last
 * layers first: GPU g holds the experts of layers [exp_first[g], exp_end[g]). */
typedef struct ds_plan_choice {
    ds_plan_mode mode;
    int n_gpu_layers;             /* -ngl of both specs (0 when host only) */
    int exp_first[DS_MAX_GPUS], exp_end[DS_MAX_GPUS];
    int n_moe;                    /* MoE layers of the model */
    ds_placement_spec spec;       /* every GPU of the limits (for prediction) */
    ds_placement_spec run_spec;   /* CUDA0 only: the fast one-GPU path (CUDA1's share on the host) */
    ds_plan plan, run_plan;       /* their bytes per device */
    bool gpu_fits;                /* false only when a GPU cannot hold even one layer's non-expert blocks */
    bool host_fits, run_host_fits;/* weights + KV on the host within cpu_mem (true when not checked) */
} ds_plan_choice;

/* Applies s to m (n_gpus = lim->n_gpu) and computes its plan with the
 * limits' context, KV type and scratch: CUDA0 gets the stream stage of this
 * placement on top, CUDA1.. the backend scratch only. Errors are the
 * placement's (a bad rule). */
ds_status ds_plan_eval(ds_model *m, const ds_placement_spec *s, const ds_plan_limits *lim, ds_plan *p, ds_error *err);
/* True when every GPU of p fits its limit (weights + KV + scratch + margin). */
bool ds_plan_gpus_fit(const ds_plan *p, const ds_plan_limits *lim);
/* Host bytes of p (weights + KV) and whether they fit (true if not checked). */
uint64_t ds_plan_host_bytes(const ds_plan *p);
bool ds_plan_host_fits(const ds_plan *p, const ds_plan_limits *lim);

/* The -ot rule that puts the routed experts of MoE layers [first, end) on
 * CUDA<gpu>: "blk\.(5|6|7)\.ffn_.*_exps=CUDA0" into buf[n]; false if none
 * of those layers is MoE or buf is too small. */
bool ds_plan_ot_rule(const ds_model *m, int first, int end, int gpu, char *buf, size_t n);

/* Chooses the placement greedily (see docs/hybrid.md, "Planning"):
 *   1. host only without GPUs;
 *   2. everything but routed experts on CUDA0 if it fits with KV, scratch
 *      and margin; else the largest -ngl N (with --cpu-moe) that fits, else
 *      host only;
 *   3. then routed experts of whole layers, last first, onto CUDA0 while
 *      they fit, then CUDA1, ...; the rest stay on the host.
 * m's placement is left as run_spec. Errors: a placement error (a bug). */
ds_status ds_plan_choose(ds_model *m, const ds_plan_limits *lim, ds_plan_choice *out, ds_error *err);

/* ---- prediction --------------------------------------------------------------- */

/* What one placement makes each device do (from a placed model). Index as
 * in ds_tensor.device. Host entries exclude the hybrid layers' experts. */
typedef struct ds_plan_loads {
    int n_dev;
    double step[DS_MAX_DEVICES];       /* bytes a batch-1 decode step reads there (ds_plan.step) */
    double dense[DS_MAX_DEVICES];      /* bytes of non-expert weights there, read once per micro-batch (token_embd excluded) */
    double experts[DS_MAX_DEVICES];    /* bytes of routed experts resident there */
    double flops_tok[DS_MAX_DEVICES];  /* FLOPs of one prefill token there: 2 x weights it multiplies (experts: n_used of n_expert) */
    double hyb_bytes;                  /* routed experts on the host whose router is on a GPU */
    double hyb_flops_tok;              /* their FLOPs per prefill token */
    int gpu_layers;                    /* layers whose attention is on a GPU */
    int hyb_layers;                    /* layers with hybrid experts (ds_plan.experts_cpu_layers) */
    int n_expert, n_expert_used;
} ds_plan_loads;

/* Fills l from m's current placement and its plan p. */
void ds_plan_loads_compute(const ds_model *m, const ds_plan *p, ds_plan_loads *l);

/* The machine, as the bandwidth model sees it. */
typedef struct ds_plan_hw {
    int n_gpu;
    double gpu_bw[DS_MAX_GPUS];   /* GB/s (1e9 bytes/s) each GPU reads its memory */
    double cpu_bw;                /* GB/s the host reads weights with all threads */
    double pcie_bw;               /* GB/s host -> GPU (streamed prefill experts) */
    double gpu_tflops, cpu_tflops;/* effective prefill matmul rates (DS_PLAN_*_TFLOPS) */
} ds_plan_hw;

typedef struct ds_plan_prediction {
    double t_step[DS_MAX_DEVICES];/* s per decode step per device: step / bw */
    double tg_bw;                 /* tok/s: 1 / sum t_step */
    double t_overhead;            /* s per step: gpu_layers * O_GPU + hyb_layers * O_HYB */
    double tg_cal;                /* tok/s: 1 / (sum t_step + t_overhead) */
    int ub;                       /* micro-batch rows */
    double frac;                  /* fraction of each layer's experts a micro-batch uses */
    double t_gpu;                 /* s per micro-batch on the GPUs (bytes + compute) */
    double t_host;                /* s per micro-batch for host-resident layers */
    double t_stream, t_cpu;       /* s per micro-batch for the hybrid experts: streamed / on the CPU (<0: not possible) */
    bool streamed;                /* the faster of the two was streaming */
    double pp;                    /* tok/s: ub / (t_gpu + t_host + min(t_stream, t_cpu)) */
} ds_plan_prediction;

/* The model (formulas in docs/hybrid.md, "Planning"), per micro-batch of ub rows:
 *   tg_bw  = 1 / sum_d step_d / bw_d
 *   tg_cal = 1 / (sum_d step_d / bw_d + gpu_layers * O_GPU + hyb_layers * O_HYB)
 *   f      = 1 if ub >= 64 else 1 - (1 - k/E)^ub
 *   t_gpu  = sum_g (dense_g + f * experts_g) / bw_g + ub * flops_tok_g / gpu_flops
 *   t_host = max((dense_0 + f * experts_0) / cpu_bw, ub * flops_tok_0 / cpu_flops)
 *   t_stream = f * hyb_bytes / pcie_bw + ub * hyb_flops_tok / gpu_flops   (ub >= 32 only)
 *   t_cpu  = max(f * hyb_bytes / cpu_bw, ub * hyb_flops_tok / cpu_flops)
 *   pp     = ub / (t_gpu + t_host + min(t_stream, t_cpu)) */
void ds_plan_predict(const ds_plan_loads *l, const ds_plan_hw *hw, int ub, ds_plan_prediction *out);

/* The host bandwidth (GB/s) decode needs to reach target tok/s (calibrated
 * model) with everything else as predicted; 0 if nothing is read on the
 * host, < 0 if the GPU part alone is too slow. */
double ds_plan_cpu_bw_needed(const ds_plan_loads *l, const ds_plan_prediction *p, double target);

#endif
