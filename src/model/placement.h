/* placement.h: which device holds each weight — llama.cpp's placement flags
 * (-ngl, -ot REGEX=DEV, --cpu-moe, --n-cpu-moe, -ts) turned into the
 * `device` field of every ds_tensor, coarsened to blocks (a block runs where
 * its weights are), and the plan that reports bytes per device. Pure host
 * code: CI tests it without a GPU. Not execution: engine/ runs each block on
 * its device's backend. */
#ifndef DS_PLACEMENT_H
#define DS_PLACEMENT_H

#include "model.h"

#include <stdio.h>

/* Device indices in ds_tensor.device: 0 is the host, 1 + i is CUDA<i>. */
#define DS_DEV_CPU 0
#define DS_DEV_CUDA(i) (1 + (i))
#define DS_MAX_OT 64

/* The blocks of the backend interface (backend.h), per layer, plus the two
 * model-level ones. Every weight belongs to exactly one block. */
typedef enum ds_block_kind {
    DS_BLK_EMBED,   /* token_embd (model level) */
    DS_BLK_ATTN,    /* attn_norm .. attn_output */
    DS_BLK_DENSE,   /* ffn_norm + dense ffn_gate/up/down */
    DS_BLK_ROUTER,  /* ffn_norm + ffn_gate_inp + exp_probs_b */
    DS_BLK_SHARED,  /* ffn_*_shexp */
    DS_BLK_EXPERTS, /* ffn_*_exps */
    DS_BLK_OUTPUT,  /* output_norm + output (model level) */
    DS_BLK_COUNT
} ds_block_kind;

/* One -ot rule (or a rule added by --cpu-moe / --n-cpu-moe), in
 * command-line order: the first rule whose regex is found in a tensor's
 * name decides its device. */
typedef struct ds_ot_rule {
    int off;    /* the regex, at patterns + off (PCRE2, unanchored search like llama.cpp's std::regex_search) */
    int device;
} ds_ot_rule;

#define DS_OT_BYTES 16384

typedef struct ds_placement_spec {
    int n_gpu_layers;    /* -ngl: the last N layers (and the output when N > n_layer); -1 = unset */
    ds_ot_rule ot[DS_MAX_OT];
    int n_ot;
    char patterns[DS_OT_BYTES]; /* the rules' regexes, NUL-terminated (a plain value: copies need no free) */
    int patterns_used;
    float split[DS_MAX_DEVICES]; /* -ts proportions per GPU (all 0 = everything on CUDA0) */
    int n_split;
} ds_placement_spec;

void ds_placement_spec_init(ds_placement_spec *s);
/* "CPU" or "CUDA<n>" (any case) -> device index; false if neither. */
bool ds_placement_parse_device(const char *s, int *device);
/* Adds an -ot "REGEX=DEV" rule (also "REGEX1=DEV1,REGEX2=DEV2", as llama.cpp
 * allows). The regex is checked here; errors name the rule and the reason. */
ds_status ds_placement_add_ot(ds_placement_spec *s, const char *arg, ds_error *err);
/* --cpu-moe: every layer's routed experts on the CPU (an -ot rule at this
 * point of the command line, as in llama.cpp). */
ds_status ds_placement_add_cpu_moe(ds_placement_spec *s, ds_error *err);
/* --n-cpu-moe N: the routed experts of layers 0..N-1 on the CPU. */
ds_status ds_placement_add_n_cpu_moe(ds_placement_spec *s, int n, ds_error *err);
/* -ts "3,1": proportions of the GPU layers per device. */
ds_status ds_placement_parse_split(ds_placement_spec *s, const char *arg, ds_error *err);
/* The regex of rule i. */
static inline const char *ds_ot_pattern(const ds_placement_spec *s, int i) { return s->patterns + s->ot[i].off; }

/* Sets every tensor's device from the spec: -ot rules first (first match
 * wins), then -ngl by layer (token_embd stays on the host, as in llama.cpp).
 * Then each block is made whole: a block whose weights the rules split over
 * two devices runs on the device of its largest weight, and a notice names
 * the tensors that moved. n_gpus: GPUs visible (a rule naming CUDA<n> with n
 * >= n_gpus is an error naming the rule). */
ds_status ds_placement_apply(ds_model *m, const ds_placement_spec *s, int n_gpus, ds_error *err);

/* mlock()s the pages of every host-resident weight (--mlock); *bytes gets
 * the total. The error says how to raise RLIMIT_MEMLOCK. */
ds_status ds_placement_lock_host(const ds_model *m, uint64_t *bytes, ds_error *err);

/* --no-mmap: copies every host-resident weight out of the file mapping into
 * one anonymous allocation advised for transparent huge pages (a decode
 * step streams gigabytes of experts: 2 MiB pages spare the TLB the misses
 * of 4 KiB file pages) and points the tensors there; n_threads copy. *bytes
 * gets the size. Errors: DS_ERR_OOM with the size. */
ds_status ds_placement_copy_host(ds_model *m, int n_threads, uint64_t *bytes, ds_error *err);

/* The device of a block (after ds_placement_apply); il is ignored for the
 * model-level blocks. -1 if the layer has no such block. */
int ds_block_device(const ds_model *m, ds_block_kind kind, int il);
/* True if any tensor is on a device other than the host. */
bool ds_placement_uses_gpu(const ds_model *m);
/* True when everything but some layers' routed experts is on CUDA0 and
 * token_embd is on the host or CUDA0: the CUDA backend can run whole
 * micro-batches itself, handing those experts to the CPU. */
bool ds_placement_gpu_with_cpu_experts(const ds_model *m);

/* Bytes of the largest layer's routed experts among layers whose experts
 * are on the host and whose router is on a GPU (the stage that prefill
 * streams them through); 0 if none. Each tensor rounded up to 256. */
uint64_t ds_placement_stream_bytes(const ds_model *m);

/* What a placement costs, per device (index as in ds_tensor.device). */
typedef struct ds_plan {
    int n_dev;                          /* devices used: 1 + highest index */
    uint64_t weights[DS_MAX_DEVICES];   /* bytes of weights resident */
    uint64_t kv[DS_MAX_DEVICES];        /* bytes of KV cache (layers whose attention is there) */
    uint64_t scratch[DS_MAX_DEVICES];   /* bytes of device scratch (estimate for GPUs) */
    uint64_t step[DS_MAX_DEVICES];      /* weight bytes a batch-1 decode step reads there */
    int n_tensors[DS_MAX_DEVICES];
    int experts_cpu_layers;             /* MoE layers whose routed experts are on the host */
} ds_plan;

/* kv_elem: bytes per cached value (2 for f16/bf16, 4 for f32); n_ctx: cache
 * tokens over all sequences; gpu_scratch: the scratch each GPU in use
 * allocates (the CUDA backend's ds_cuda_scratch_bytes for the micro-batch). */
void ds_plan_compute(const ds_model *m, int64_t n_ctx, int kv_elem, uint64_t gpu_scratch, ds_plan *p);
/* Prints the plan table to f. */
void ds_plan_print(const ds_plan *p, FILE *f);
/* "CPU", "CUDA0", … */
const char *ds_device_name(int device, char *buf, size_t n);

#endif
