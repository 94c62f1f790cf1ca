/* bench.h: the pieces `dsinfer bench` is made of — the host read-bandwidth
 * probe and page warm-up (bench_bw.c), result tables in llama-bench's
 * md/json/csv shapes (bench_out.c) and the command itself (cmd_bench.c).
 * Not a library interface: only src/cli uses it. */
#ifndef DS_CLI_BENCH_H
#define DS_CLI_BENCH_H

#include "cli.h"

/* ---- bench_bw.c ----------------------------------------------------------- */
typedef struct ds_bench_bw {
    double gbs;        /* best pass, 1e9 bytes/s */
    double gbs_median; /* median pass */
    uint64_t bytes;    /* buffer size read per pass */
    int n_threads, n_passes;
} ds_bench_bw;

/* Streaming read of a >= 1 GiB buffer with n_threads threads (all reading
 * disjoint slices at once), n_passes timed passes after one untimed.
 * DS_ERR_OOM if the buffer cannot be had. */
ds_status ds_bench_read_bw(int n_threads, int n_passes, ds_bench_bw *out, ds_error *err);

/* Reads one byte of every page of every tensor so the mmap'd weights are
 * resident before timing; returns the bytes touched. */
uint64_t ds_bench_touch_weights(const ds_model *m);

/* ---- bench_out.c ---------------------------------------------------------- */
typedef enum { DS_BENCH_MD = 0, DS_BENCH_JSON, DS_BENCH_CSV } ds_bench_fmt;

/* What is common to every row: the model and the run's settings. */
typedef struct ds_bench_info {
    const char *model_path;
    char model_type[96];   /* "deepseek2 ?B Q3_K - Medium", llama-bench's spelling */
    uint64_t model_bytes;  /* tensor data */
    uint64_t model_params; /* elements */
    const char *backend;   /* "CPU" / "CPU (ref)" */
    int n_threads, n_batch, n_ubatch;
    const char *kv_type;
    double bw_gbs;         /* measured host read bandwidth */
    uint64_t decode_bytes; /* weights one decode step reads */
    uint64_t kv_row_bytes; /* KV bytes per cached token, all layers */
} ds_bench_info;

/* One llama-bench test: pp (n_gen 0), tg (n_prompt 0) or pp+tg, at a depth. */
typedef struct ds_bench_row {
    int n_prompt, n_gen, n_depth;
    int n_samples;
    double *samples_s;     /* [n_samples] seconds per repetition */
    double bytes_per_step; /* tg only: weights + average KV rows read; 0 = n/a */
} ds_bench_row;

/* One ik_llama sweep-bench line. */
typedef struct ds_bench_sweep_row {
    int pp, tg, n_kv;
    double t_pp, t_tg;     /* seconds */
    double bytes_per_step; /* of the tg part */
} ds_bench_sweep_row;

void ds_bench_print_header(const ds_bench_info *info, ds_bench_fmt fmt);
void ds_bench_print_row(const ds_bench_info *info, const ds_bench_row *r, ds_bench_fmt fmt, bool first);
void ds_bench_print_end(ds_bench_fmt fmt);
void ds_bench_print_sweep_header(const ds_bench_info *info, ds_bench_fmt fmt);
void ds_bench_print_sweep_row(const ds_bench_info *info, const ds_bench_sweep_row *r, ds_bench_fmt fmt, bool first);

#endif
