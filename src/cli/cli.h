/* cli.h: the dsinfer subcommands and the option parsing they share.
 * Flags follow llama.cpp's spelling. A bad flag or value prints one line
 * and the command exits 2; runtime failures exit 1. */
#ifndef DS_CLI_H
#define DS_CLI_H

#include "../engine/engine.h"
#include "../model/placement.h"

#define DS_CLI_MAX_OVERRIDES 64

/* Options every model-opening command accepts. */
typedef struct ds_cli_model_opts {
    const char *model;              /* -m */
    int n_threads;                  /* -t (0 = all cores) */
    const char *device;             /* --device ref|cpu|cuda */
    int64_t n_ctx;                  /* -c */
    int n_batch, n_ubatch;          /* -b, -ub */
    ds_type kv_type;                /* -ctk */
    const char *overrides[DS_CLI_MAX_OVERRIDES];
    int n_overrides;                /* --override-kv */
    ds_placement_spec place;        /* -ngl, -ot, --cpu-moe, --n-cpu-moe, -ts */
    bool mlock;                     /* --mlock: lock host-resident weights in RAM */
    bool no_mmap;                   /* --no-mmap: copy host-resident weights to (huge-page) memory */
    int gpu_experts;                /* --gpu-experts N: hot experts of CPU layers kept on the GPU */
    const char *expert_profile;     /* --expert-profile FILE: their usage counts, loaded and saved */
    bool quiet_plan;                /* do not print the placement plan at load */
} ds_cli_model_opts;

void ds_cli_model_opts_init(ds_cli_model_opts *o);
/* If argv[*i] is a model option, consumes it (and its value), returns 1;
 * returns 0 if it is not one; -1 after printing an error. */
int ds_cli_model_opt(ds_cli_model_opts *o, int argc, char **argv, int *i);
/* Value of argv[*i]'s flag, advancing *i; NULL (and an error printed) if missing. */
const char *ds_cli_value(int argc, char **argv, int *i);
/* Parses an integer in [lo, hi] for flag; false (and error printed) if bad. */
bool ds_cli_int(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out);
bool ds_cli_float(const char *flag, const char *s, double *out);
/* Prints "dsinfer CMD: msg" to stderr; returns 2 (usage error). */
int ds_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Exit code for a failed load or run: 2 for what the user can fix on the
 * command line (missing file, bad value), 1 for everything else. */
static inline int ds_cli_exit_code(ds_status st) {
    return st == DS_ERR_NOT_FOUND || st == DS_ERR_INVALID_ARG ? 2 : 1;
}
/* Loads the model, applies the placement, prints the plan (when a GPU is
 * involved) and creates a context from the options (prints errors). */
ds_status ds_cli_load(const ds_cli_model_opts *o, ds_model **m, ds_ctx **c, int n_seq);
/* After loading: applies the placement (when a GPU is asked for), prints
 * the plan, locks host weights with --mlock; *device gets the context's
 * device ("cuda" when anything is on a GPU). Prints errors. */
ds_status ds_cli_prepare(const ds_cli_model_opts *o, ds_model *m, const char **device);
/* Applies o's placement to a loaded model (n_gpus: GPUs to check device
 * names against; -1 = those visible). Prints the error. */
ds_status ds_cli_place(const ds_cli_model_opts *o, ds_model *m, int n_gpus);
/* GPU scratch bytes the CUDA backend allocates for micro-batch ub with the
 * model's placement (the prefill stage included); plain C, so plans print it
 * in builds without CUDA too. */
uint64_t ds_cli_gpu_scratch(const ds_model *m, int ub);


int ds_cmd_logits(int argc, char **argv);
int ds_cmd_tokenize(int argc, char **argv);
int ds_cmd_run(int argc, char **argv);
int ds_cmd_info(int argc, char **argv);
int ds_cmd_plan(int argc, char **argv);
int ds_cmd_synth(int argc, char **argv);
int ds_cmd_bench(int argc, char **argv);
int ds_cmd_serve(int argc, char **argv);
int ds_cmd_soak(int argc, char **argv);

#endif
