/* bench_out.c: `dsinfer bench` results as llama-bench prints them (markdown
 * table, JSON array, CSV) with our two extra columns for decode tests —
 * bytes read per step and the fraction of the bandwidth roofline reached —
 * and ik_llama's sweep-bench table. Not measurement: cmd_bench.c times. */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static double mean_of(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return n ? s / n : 0;
}

/* Sample standard deviation (n - 1), as llama-bench's stdev. */
static double sd_of(const double *x, int n) {
    if (n < 2) return 0;
    double m = mean_of(x, n), s = 0;
    for (int i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (n - 1));
}

static void test_name(const ds_bench_row *r, char *buf, size_t cap) {
    int k;
    if (r->n_prompt && r->n_gen) k = snprintf(buf, cap, "pp%d+tg%d", r->n_prompt, r->n_gen);
    else if (r->n_prompt) k = snprintf(buf, cap, "pp%d", r->n_prompt);
    else k = snprintf(buf, cap, "tg%d", r->n_gen);
    if (r->n_depth > 0 && k > 0 && (size_t)k < cap) snprintf(buf + k, cap - (size_t)k, " @ d%d", r->n_depth);
}

/* tokens/s of the first n repetitions */
static void rates(const ds_bench_row *r, double *ts, int n) {
    for (int i = 0; i < n; i++) ts[i] = (r->n_prompt + r->n_gen) / r->samples_s[i];
}

static void fmt_size(uint64_t b, char *buf, size_t cap) {
    if (b >= (1ull << 30)) snprintf(buf, cap, "%.2f GiB", b / 1073741824.0);
    else snprintf(buf, cap, "%.2f MiB", b / 1048576.0);
}

static void fmt_params(uint64_t n, char *buf, size_t cap) {
    if (n >= 1000000000ull) snprintf(buf, cap, "%.2f B", n / 1e9);
    else if (n >= 1000000ull) snprintf(buf, cap, "%.2f M", n / 1e6);
    else snprintf(buf, cap, "%.2f K", n / 1e3);
}

/* JSON string body (quotes, backslashes and control characters escaped). */
static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* CSV field: quoted when it holds a comma, quote or newline. */
static void csv_str(const char *s) {
    if (!strpbrk(s, ",\"\n")) { fputs(s, stdout); return; }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static void now_iso(char *buf, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void ds_bench_print_header(const ds_bench_info *info, ds_bench_fmt fmt) {
    if (fmt == DS_BENCH_MD) {
        printf("| model                          |       size |     params | backend    | threads |            test |"
               "                  t/s | GB/step | %% roofline |\n");
        printf("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: |"
               " -------------------: | ------: | ---------: |\n");
    } else if (fmt == DS_BENCH_JSON) {
        printf("[\n");
    } else {
        printf("model_filename,model_type,model_size,model_n_params,backends,n_threads,n_batch,n_ubatch,type_k,"
               "n_prompt,n_gen,n_depth,test_time,avg_ns,stddev_ns,avg_ts,stddev_ts,bytes_per_step,roofline_ts,"
               "roofline_pct,read_bw_gbs\n");
    }
    (void)info;
}

void ds_bench_print_row(const ds_bench_info *info, const ds_bench_row *r, ds_bench_fmt fmt, bool first) {
    double ts[256] = { 0 };
    int n = r->n_samples < 256 ? r->n_samples : 256;
    rates(r, ts, n);
    double avg_ts = mean_of(ts, n), sd_ts = sd_of(ts, n);
    double avg_s = mean_of(r->samples_s, n), sd_s = sd_of(r->samples_s, n);
    /* the roofline: what bandwidth alone allows, bytes per step over bytes per second */
    double roof = r->bytes_per_step > 0 && info->bw_gbs > 0 ? info->bw_gbs * 1e9 / r->bytes_per_step : 0;
    double pct = roof > 0 ? 100.0 * avg_ts / roof : 0;
    char name[64], size[32], params[32], t[32];
    test_name(r, name, sizeof name);
    fmt_size(info->model_bytes, size, sizeof size);
    fmt_params(info->model_params, params, sizeof params);
    now_iso(t, sizeof t);
    if (fmt == DS_BENCH_MD) {
        char tps[48], gbs[16] = "", pcts[16] = "";
        snprintf(tps, sizeof tps, "%.2f ± %.2f", avg_ts, sd_ts);
        if (r->bytes_per_step > 0) snprintf(gbs, sizeof gbs, "%.3f", r->bytes_per_step / 1e9);
        if (roof > 0) snprintf(pcts, sizeof pcts, "%.1f", pct);
        /* "±" is two bytes but one column: one more byte of width */
        printf("| %-30s | %10s | %10s | %-10s | %7d | %15s | %21s | %7s | %10s |\n", info->model_type, size, params,
               info->backend, info->n_threads, name, tps, gbs, pcts);
    } else if (fmt == DS_BENCH_JSON) {
        printf("%s  {\n    \"model_filename\": ", first ? "" : ",\n");
        json_str(info->model_path);
        printf(",\n    \"model_type\": ");
        json_str(info->model_type);
        printf(",\n    \"model_size\": %llu,\n    \"model_n_params\": %llu,\n    \"backends\": ",
               (unsigned long long)info->model_bytes, (unsigned long long)info->model_params);
        json_str(info->backend);
        printf(",\n    \"n_threads\": %d,\n    \"n_batch\": %d,\n    \"n_ubatch\": %d,\n    \"type_k\": \"%s\",\n",
               info->n_threads, info->n_batch, info->n_ubatch, info->kv_type);
        printf("    \"n_prompt\": %d,\n    \"n_gen\": %d,\n    \"n_depth\": %d,\n    \"test_time\": \"%s\",\n",
               r->n_prompt, r->n_gen, r->n_depth, t);
        printf("    \"avg_ns\": %.0f,\n    \"stddev_ns\": %.0f,\n    \"avg_ts\": %.6f,\n    \"stddev_ts\": %.6f,\n",
               avg_s * 1e9, sd_s * 1e9, avg_ts, sd_ts);
        printf("    \"samples_ns\": [");
        for (int i = 0; i < n; i++) printf("%s%.0f", i ? ", " : " ", r->samples_s[i] * 1e9);
        printf(" ],\n    \"samples_ts\": [");
        for (int i = 0; i < n; i++) printf("%s%.6f", i ? ", " : " ", ts[i]);
        printf(" ],\n    \"bytes_per_step\": %.0f,\n    \"roofline_ts\": %.6f,\n    \"roofline_pct\": %.3f,\n"
               "    \"read_bw_gbs\": %.3f\n  }",
               r->bytes_per_step, roof, pct, info->bw_gbs);
    } else {
        csv_str(info->model_path);
        putchar(',');
        csv_str(info->model_type);
        printf(",%llu,%llu,", (unsigned long long)info->model_bytes, (unsigned long long)info->model_params);
        csv_str(info->backend);
        printf(",%d,%d,%d,%s,%d,%d,%d,%s,%.0f,%.0f,%.6f,%.6f,%.0f,%.6f,%.3f,%.3f\n", info->n_threads, info->n_batch,
               info->n_ubatch, info->kv_type, r->n_prompt, r->n_gen, r->n_depth, t, avg_s * 1e9, sd_s * 1e9, avg_ts,
               sd_ts, r->bytes_per_step, roof, pct, info->bw_gbs);
    }
    fflush(stdout);
}

void ds_bench_print_end(ds_bench_fmt fmt) {
    if (fmt == DS_BENCH_JSON) printf("\n]\n");
    fflush(stdout);
}

void ds_bench_print_sweep_header(const ds_bench_info *info, ds_bench_fmt fmt) {
    if (fmt == DS_BENCH_MD) {
        printf("|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s | GB/step | %% roofline |\n");
        printf("|-------|--------|--------|----------|----------|----------|----------|---------|------------|\n");
    } else if (fmt == DS_BENCH_JSON) {
        printf("[\n");
    } else {
        printf("pp,tg,n_kv,t_pp_s,s_pp_ts,t_tg_s,s_tg_ts,bytes_per_step,roofline_ts,roofline_pct,read_bw_gbs\n");
    }
    (void)info;
}

void ds_bench_print_sweep_row(const ds_bench_info *info, const ds_bench_sweep_row *r, ds_bench_fmt fmt, bool first) {
    double s_pp = r->t_pp > 0 ? r->pp / r->t_pp : 0, s_tg = r->t_tg > 0 ? r->tg / r->t_tg : 0;
    double roof = r->bytes_per_step > 0 && info->bw_gbs > 0 ? info->bw_gbs * 1e9 / r->bytes_per_step : 0;
    double pct = roof > 0 ? 100.0 * s_tg / roof : 0;
    if (fmt == DS_BENCH_MD)
        printf("|%6d | %6d | %6d | %8.3f | %8.2f | %8.3f | %8.2f | %7.3f | %10.1f |\n", r->pp, r->tg, r->n_kv, r->t_pp,
               s_pp, r->t_tg, s_tg, r->bytes_per_step / 1e9, pct);
    else if (fmt == DS_BENCH_JSON)
        printf("%s  { \"pp\": %d, \"tg\": %d, \"n_kv\": %d, \"t_pp\": %.6f, \"speed_pp\": %.6f, \"t_tg\": %.6f, "
               "\"speed_tg\": %.6f, \"bytes_per_step\": %.0f, \"roofline_ts\": %.6f, \"roofline_pct\": %.3f, "
               "\"read_bw_gbs\": %.3f }",
               first ? "" : ",\n", r->pp, r->tg, r->n_kv, r->t_pp, s_pp, r->t_tg, s_tg, r->bytes_per_step, roof, pct,
               info->bw_gbs);
    else
        printf("%d,%d,%d,%.6f,%.6f,%.6f,%.6f,%.0f,%.6f,%.3f,%.3f\n", r->pp, r->tg, r->n_kv, r->t_pp, s_pp, r->t_tg, s_tg,
               r->bytes_per_step, roof, pct, info->bw_gbs);
    fflush(stdout);
}
