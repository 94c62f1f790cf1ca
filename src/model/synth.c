/* synth.c: the layout of a `synth` model — DeepSeek-V3 (or tiny test) shapes,
 * the deepseek2 keys and tensor names of DESIGN.md §3 (llama.cpp's), the
 * per-tensor type of each llama-quantize-like mix, the scale of each weight,
 * and the streamed write (data generated chunk by chunk, in parallel, while
 * the GGUF writer writes). Not the random blocks (synth_gen.c) nor the
 * vocabulary (synth_vocab.c). */
#include "synth.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- shapes ------------------------------------------------------------------ */

typedef struct shapes {
    int n_embd, n_head, q_lora, kv_lora, d_nope, d_rope, d_v;
    int n_ff, n_ff_exp, n_expert, n_used, n_group, n_group_used, n_shared, n_vocab;
} shapes;

/* DeepSeek-V3 / R1 */
static const shapes k_full = { 7168, 128, 1536, 512, 128, 64, 128, 18432, 2048, 256, 8, 8, 4, 1, 129280 };
/* Tiny: every row a multiple of 256 (K-quants fit everywhere but attn_k_b,
 * whose rows are d_nope long, as in V3), the widths of the llama-quantize'd
 * test fixture dsv3_kq, so both backends already run them. */
static const shapes k_tiny = { 256, 4, 256, 256, 64, 32, 64, 512, 256, 16, 4, 4, 2, 1, 1024 };

/* The width's shapes with the caller's expert count and vocabulary applied.
 * Groups are kept only if they still divide the experts and can supply the
 * used ones; otherwise the group keys are left out (no group limit). */
static shapes get_shapes(const ds_synth_params *p) {
    shapes s = p->tiny ? k_tiny : k_full;
    if (p->n_vocab > 0) s.n_vocab = p->n_vocab;
    if (p->n_expert > 0) {
        s.n_expert = p->n_expert;
        if (s.n_used > s.n_expert) s.n_used = s.n_expert;
        if (s.n_expert % s.n_group || s.n_used > s.n_group_used * (s.n_expert / s.n_group)) s.n_group = s.n_group_used = 0;
    }
    return s;
}

/* ---- mixes --------------------------------------------------------------------- */

static const struct {
    const char *name;
    ds_synth_mix mix;
    uint32_t file_type; /* llama.cpp's LLAMA_FTYPE_MOSTLY_* */
} k_mixes[] = {
    { "q3_k_m", DS_SYNTH_Q3_K_M, 12 }, { "q4_k_m", DS_SYNTH_Q4_K_M, 15 }, { "q8_0", DS_SYNTH_Q8_0, 7 },
    { "f16", DS_SYNTH_F16, 1 },         { "iq4_xs", DS_SYNTH_IQ4_XS, 30 },
};

int ds_synth_mix_from_name(const char *name) {
    for (size_t i = 0; i < sizeof k_mixes / sizeof *k_mixes; i++)
        if (!strcasecmp(name, k_mixes[i].name)) return (int)k_mixes[i].mix;
    return -1;
}

const char *ds_synth_mix_name(ds_synth_mix mix) {
    for (size_t i = 0; i < sizeof k_mixes / sizeof *k_mixes; i++)
        if (k_mixes[i].mix == mix) return k_mixes[i].name;
    return "?";
}

uint32_t ds_synth_mix_file_type(ds_synth_mix mix) {
    for (size_t i = 0; i < sizeof k_mixes / sizeof *k_mixes; i++)
        if (k_mixes[i].mix == mix) return k_mixes[i].file_type;
    return 0;
}

void ds_synth_params_default(ds_synth_params *p) {
    memset(p, 0, sizeof *p);
    p->n_layer = 2;
    p->n_dense = 1;
    p->mix = DS_SYNTH_Q3_K_M;
    p->seed = 1;
}

/* llama-quantize's "more bits here" layer pattern for Q4_K_M. */
static bool use_more_bits(int il, int n) { return il < n / 8 || il >= 7 * n / 8 || (il - n / 8) % 3 == 2; }

static bool has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* Rules of llama-quantize (llama_tensor_get_type) for deepseek2, with two
 * deliberate differences, both to match the files the peers were measured
 * on (BENCHMARKS.md):
 * - attn_k_b (rows of d_nope = 128, too short for K-quants) is Q8_0, where
 *   llama-quantize falls back to Q4_0 / Q5_0 / IQ4_NL;
 * - the "first layers get more bits" rules for ffn_down (Q3_K_M: layers
 *   < n/16 Q5_K; IQ4_XS: < n/8 Q5_K) give at least layer 0, so a short file
 *   starts like a full 61-layer one instead of losing those layers to the
 *   integer division.
 * Vectors, the router and its bias stay F32, as llama-quantize leaves them. */
ds_type ds_synth_tensor_type(const ds_synth_params *p, const char *name) {
    int il = -1;
    sscanf(name, "blk.%d.", &il);
    if (has_suffix(name, "_norm.weight") || has_suffix(name, ".bias") || strstr(name, "ffn_gate_inp")) return DS_TYPE_F32;
    if (p->mix == DS_SYNTH_F16) return DS_TYPE_F16;
    if (p->mix == DS_SYNTH_Q8_0) return DS_TYPE_Q8_0;
    const int n = p->n_layer;
    const ds_type base = p->mix == DS_SYNTH_Q3_K_M ? DS_TYPE_Q3_K : p->mix == DS_SYNTH_Q4_K_M ? DS_TYPE_Q4_K : DS_TYPE_IQ4_XS;
    if (!strcmp(name, "output.weight")) return DS_TYPE_Q6_K;
    if (!strcmp(name, "token_embd.weight")) return base;
    if (strstr(name, "attn_k_b")) return DS_TYPE_Q8_0;
    if (strstr(name, "attn_kv_b")) { /* an "attn_v"-like tensor for llama-quantize, one per layer */
        if (p->mix == DS_SYNTH_Q3_K_M) return il < 2 ? DS_TYPE_Q5_K : DS_TYPE_Q4_K;
        if (p->mix == DS_SYNTH_Q4_K_M) return use_more_bits(il, n) ? DS_TYPE_Q6_K : DS_TYPE_Q4_K;
        return base; /* IQ4_XS: its attn_v rule needs n_gqa >= 4; legacy files have 1 */
    }
    if (strstr(name, "attn_output")) return p->mix == DS_SYNTH_Q3_K_M ? DS_TYPE_Q4_K : base;
    if (strstr(name, "ffn_down")) { /* ffn_down, ffn_down_exps, ffn_down_shexp */
        if (p->mix == DS_SYNTH_Q3_K_M) return il < (n / 16 > 1 ? n / 16 : 1) ? DS_TYPE_Q5_K : DS_TYPE_Q4_K;
        if (p->mix == DS_SYNTH_Q4_K_M) return use_more_bits(il, n) ? DS_TYPE_Q6_K : DS_TYPE_Q4_K;
        return il < (n / 8 > 1 ? n / 8 : 1) ? DS_TYPE_Q5_K : base;
    }
    return base;
}

/* ---- the tensor list ------------------------------------------------------------- */

typedef struct synth_run synth_run;

typedef struct synth_tensor {
    char name[64];
    uint32_t n_dims;
    int64_t ne[3];
    ds_synth_gen gen;
    uint64_t nbytes;
    synth_run *run;
} synth_tensor;

struct synth_run {
    const ds_synth_params *p;
    synth_tensor *t;
    int n_t, cap_t;
    ds_threadpool *tp;
    uint8_t *row_tmp;      /* one row, for ranges that cut a row */
    uint64_t done, total, reported;
    ds_status st;          /* first error while building the list */
};

/* Appends a tensor: sigma is the standard deviation of its dequantized
 * weights (or of the bias); norms ignore it. */
static void add(synth_run *r, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                ds_synth_kind kind, float sigma) {
    if (r->st) return;
    if (r->n_t == r->cap_t) {
        int cap = r->cap_t ? r->cap_t * 2 : 256;
        synth_tensor *n = realloc(r->t, (size_t)cap * sizeof *n);
        if (!n) { r->st = DS_ERR_OOM; return; }
        r->t = n;
        r->cap_t = cap;
    }
    synth_tensor *t = &r->t[r->n_t];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2;
    t->run = r;
    ds_type type = ds_synth_tensor_type(r->p, name);
    /* each tensor its own stream: the seed mixed with the name */
    uint64_t seed = r->p->seed * 0x9e3779b97f4a7c15ull;
    for (const char *c = name; *c; c++) seed = (seed ^ (uint8_t)*c) * 0x100000001b3ull;
    if ((r->st = ds_synth_gen_init(&t->gen, type, ne0, kind, sigma, seed))) {
        ds_synth_gen_free(&t->gen);
        return;
    }
    t->nbytes = (uint64_t)t->gen.row_bytes * (uint64_t)ne1 * (uint64_t)ne2;
    r->n_t++;
}

/* A weight whose rows are dotted with normalised inputs of width ne0: sigma
 * gain/sqrt(ne0) keeps every projection's output at unit scale, so
 * activations stay O(1) through any number of layers. */
static void add_w(synth_run *r, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2, float gain) {
    add(r, name, n_dims, ne0, ne1, ne2, DS_SYNTH_WEIGHT, gain / sqrtf((float)ne0));
}

static void build_list(synth_run *r, const shapes *s) {
    const ds_synth_params *p = r->p;
    const int64_t E = s->n_embd, H = s->n_head, R = s->kv_lora, QK = s->d_nope + s->d_rope;
    char nm[64];
#define BLK(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, il), nm)
    /* embeddings are looked up, not multiplied: unit scale like the activations */
    add(r, "token_embd.weight", 2, E, s->n_vocab, 1, DS_SYNTH_WEIGHT, 1.0f);
    for (int il = 0; il < p->n_layer; il++) {
        add(r, BLK("attn_norm.weight"), 1, E, 1, 1, DS_SYNTH_NORM, 1);
        add_w(r, BLK("attn_q_a.weight"), 2, E, s->q_lora, 1, 1);
        add(r, BLK("attn_q_a_norm.weight"), 1, s->q_lora, 1, 1, DS_SYNTH_NORM, 1);
        add_w(r, BLK("attn_q_b.weight"), 2, s->q_lora, H * QK, 1, 1);
        add_w(r, BLK("attn_kv_a_mqa.weight"), 2, E, R + s->d_rope, 1, 1);
        add(r, BLK("attn_kv_a_norm.weight"), 1, R, 1, 1, DS_SYNTH_NORM, 1);
        if (p->legacy) {
            add_w(r, BLK("attn_kv_b.weight"), 2, R, H * (s->d_nope + s->d_v), 1, 1);
        } else {
            /* gain 0.5: q_abs.c_kv sums kv_lora products, so scores would
             * otherwise come out ~sqrt(kv_lora) and the softmax too peaked */
            add_w(r, BLK("attn_k_b.weight"), 3, s->d_nope, R, H, 0.5f);
            add_w(r, BLK("attn_v_b.weight"), 3, R, s->d_v, H, 1);
        }
        add_w(r, BLK("attn_output.weight"), 2, H * s->d_v, E, 1, 1);
        add(r, BLK("ffn_norm.weight"), 1, E, 1, 1, DS_SYNTH_NORM, 1);
        if (il < p->n_dense) {
            add_w(r, BLK("ffn_gate.weight"), 2, E, s->n_ff, 1, 1);
            add_w(r, BLK("ffn_up.weight"), 2, E, s->n_ff, 1, 1);
            add_w(r, BLK("ffn_down.weight"), 2, s->n_ff, E, 1, 1);
            continue;
        }
        const int64_t X = s->n_expert, F = s->n_ff_exp, FS = F * s->n_shared;
        add_w(r, BLK("ffn_gate_inp.weight"), 2, E, X, 1, 1);
        /* a small selection bias: routing stays close to uniform, as in real decode */
        add(r, BLK("exp_probs_b.bias"), 1, X, 1, 1, DS_SYNTH_BIAS, 0.01f);
        add_w(r, BLK("ffn_gate_exps.weight"), 3, E, F, X, 1);
        add_w(r, BLK("ffn_up_exps.weight"), 3, E, F, X, 1);
        add_w(r, BLK("ffn_down_exps.weight"), 3, F, E, X, 1);
        add_w(r, BLK("ffn_gate_shexp.weight"), 2, E, FS, 1, 1);
        add_w(r, BLK("ffn_up_shexp.weight"), 2, E, FS, 1, 1);
        add_w(r, BLK("ffn_down_shexp.weight"), 2, FS, E, 1, 1);
    }
#undef BLK
    add(r, "output_norm.weight", 1, E, 1, 1, DS_SYNTH_NORM, 1);
    add_w(r, "output.weight", 2, E, s->n_vocab, 1, 1);
}

/* ---- keys ------------------------------------------------------------------------ */

/* The keys of a converted V3 file, with the exact GGUF value types llama.cpp
 * checks (u32 for counts, f32, bool, str), in the converter's order. */
static ds_status set_keys(ds_gguf_writer *w, const ds_synth_params *p, const shapes *s, ds_error *err) {
    ds_status st = DS_OK;
    char name[96];
    snprintf(name, sizeof name, "dsinfer synth %s %dL %s", p->tiny ? "tiny" : "V3", p->n_layer, ds_synth_mix_name(p->mix));
#define U32(k, v) if (!st) st = ds_gguf_writer_set_u32(w, "deepseek2." k, (uint32_t)(v))
#define F32(k, v) if (!st) st = ds_gguf_writer_set_f32(w, "deepseek2." k, (float)(v))
    st = ds_gguf_writer_set_str(w, "general.architecture", "deepseek2");
    if (!st) st = ds_gguf_writer_set_str(w, "general.name", name);
    U32("context_length", 163840);
    U32("embedding_length", s->n_embd);
    U32("block_count", p->n_layer);
    U32("feed_forward_length", s->n_ff);
    U32("attention.head_count", s->n_head);
    F32("rope.freq_base", 10000.0);
    F32("attention.layer_norm_rms_epsilon", 1e-6);
    U32("expert_used_count", s->n_used);
    if (s->n_group) {
        U32("expert_group_count", s->n_group);
        U32("expert_group_used_count", s->n_group_used);
    }
    U32("expert_gating_func", 2); /* sigmoid */
    U32("leading_dense_block_count", p->n_dense);
    U32("vocab_size", s->n_vocab);
    U32("attention.q_lora_rank", s->q_lora);
    U32("attention.kv_lora_rank", s->kv_lora);
    if (p->legacy) {
        U32("attention.head_count_kv", s->n_head);
        U32("attention.key_length", s->d_nope + s->d_rope);
        U32("attention.value_length", s->d_v);
    } else { /* MLA: one latent "head" of kv_lora + rope; the _mla keys give the per-head sizes */
        U32("attention.head_count_kv", 1);
        U32("attention.key_length", s->kv_lora + s->d_rope);
        U32("attention.value_length", s->kv_lora);
        U32("attention.key_length_mla", s->d_nope + s->d_rope);
        U32("attention.value_length_mla", s->d_v);
    }
    U32("expert_feed_forward_length", s->n_ff_exp);
    U32("expert_count", s->n_expert);
    U32("expert_shared_count", s->n_shared);
    F32("expert_weights_scale", 2.5);
    if (!st) st = ds_gguf_writer_set_bool(w, "deepseek2.expert_weights_norm", true);
    U32("rope.dimension_count", s->d_rope);
    if (!st) st = ds_gguf_writer_set_str(w, "deepseek2.rope.scaling.type", "yarn");
    F32("rope.scaling.factor", 40.0);
    U32("rope.scaling.original_context_length", 4096);
    F32("rope.scaling.yarn_log_multiplier", 0.1); /* 0.1 * mscale_all_dim, as the converter stores it */
#undef U32
#undef F32
    if (st) return ds_error_set(err, st, "synth: cannot set keys (%s)", ds_status_name(st));
    if ((st = ds_synth_vocab(w, s->n_vocab, p->seed, err))) return st;
    st = ds_gguf_writer_set_u32(w, "general.quantization_version", 2);
    if (!st) st = ds_gguf_writer_set_u32(w, "general.file_type", ds_synth_mix_file_type(p->mix));
    if (st) return ds_error_set(err, st, "synth: cannot set keys (%s)", ds_status_name(st));
    return DS_OK;
}

/* ---- streamed data ---------------------------------------------------------------- */

typedef struct {
    const ds_synth_gen *g;
    int64_t row0, n;
    uint8_t *dst;
} rows_job;

static void rows_task(void *ctx, int ith, int nth) {
    const rows_job *j = ctx;
    int64_t a = j->n * ith / nth, b = j->n * (ith + 1) / nth;
    if (b > a) ds_synth_gen_rows(j->g, j->row0 + a, b - a, j->dst + (size_t)a * j->g->row_bytes);
}

static void report(synth_run *r, uint64_t add_bytes) {
    r->done += add_bytes;
    if (!r->p->progress) return;
    /* about every 2 % and at the end */
    if (r->done == r->total || r->done - r->reported >= r->total / 50) {
        r->reported = r->done;
        r->p->progress(r->p->progress_ctx, r->done, r->total);
    }
}

/* ds_gguf_fill_fn: bytes [off, off + len) of one tensor. Whole rows are made
 * in parallel straight into dst; a row cut by the range goes through row_tmp. */
static ds_status fill(void *ctx, uint64_t off, void *dst, size_t len, ds_error *err) {
    synth_tensor *t = ctx;
    synth_run *r = t->run;
    const size_t rb = t->gen.row_bytes;
    uint8_t *p = dst;
    size_t left = len;
    (void)err;
    while (left) {
        int64_t row = (int64_t)(off / rb);
        size_t skip = (size_t)(off % rb);
        if (skip || left < rb) {
            ds_synth_gen_rows(&t->gen, row, 1, r->row_tmp);
            size_t n = rb - skip < left ? rb - skip : left;
            memcpy(p, r->row_tmp + skip, n);
            p += n, off += n, left -= n;
            continue;
        }
        int64_t n = (int64_t)(left / rb);
        rows_job j = { &t->gen, row, n, p };
        if (r->tp && (size_t)n * rb >= ((size_t)1 << 20)) ds_threadpool_run(r->tp, rows_task, &j);
        else rows_task(&j, 0, 1);
        p += (size_t)n * rb, off += (uint64_t)n * rb, left -= (size_t)n * rb;
    }
    report(r, len);
    return DS_OK;
}

/* "<path minus .gguf>" for the shards' names. */
static char *split_prefix(const char *path) {
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".gguf")) n -= 5;
    char *s = malloc(n + 1);
    if (s) memcpy(s, path, n), s[n] = 0;
    return s;
}

ds_status ds_synth_write(const ds_synth_params *p, const char *path, uint64_t *bytes_out, ds_error *err) {
    if (bytes_out) *bytes_out = 0;
    if (p->n_layer < 1 || p->n_layer > DS_MAX_LAYERS || p->n_dense < 0 || p->n_dense > p->n_layer)
        return ds_error_set(err, DS_ERR_INVALID_ARG,
                            "synth: %d layers with %d dense (need 1 <= layers <= %d, 0 <= dense <= layers)", p->n_layer,
                            p->n_dense, DS_MAX_LAYERS);
    if (ds_synth_mix_file_type(p->mix) == 0) return ds_error_set(err, DS_ERR_INVALID_ARG, "synth: unknown mix %d", (int)p->mix);
    const shapes s = get_shapes(p);
    if (s.n_expert < 1 || s.n_expert > 4096)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "synth: %d experts (need 1..4096)", s.n_expert);
    if (s.n_vocab < 512 || s.n_vocab > (1 << 24))
        return ds_error_set(err, DS_ERR_INVALID_ARG, "synth: vocabulary of %d (need 512..%d)", s.n_vocab, 1 << 24);

    synth_run r = { .p = p };
    ds_gguf_writer *w = ds_gguf_writer_create();
    ds_status st = w ? DS_OK : DS_ERR_OOM;
    if (st) return ds_error_set(err, st, "synth: out of memory");
    build_list(&r, &s);
    if (r.st) {
        st = ds_error_set(err, r.st, "synth: cannot prepare tensor %s (%s)", r.n_t < r.cap_t ? r.t[r.n_t].name : "?",
                          ds_status_name(r.st));
        goto done;
    }
    size_t max_row = 0;
    for (int i = 0; i < r.n_t; i++) {
        r.total += r.t[i].nbytes;
        if (r.t[i].gen.row_bytes > max_row) max_row = r.t[i].gen.row_bytes;
        if ((st = ds_gguf_writer_add_tensor_fn(w, r.t[i].name, r.t[i].gen.type, r.t[i].n_dims, r.t[i].ne, r.t[i].nbytes,
                                               fill, &r.t[i]))) {
            st = ds_error_set(err, st, "synth: cannot add tensor %s", r.t[i].name);
            goto done;
        }
    }
    if ((st = set_keys(w, p, &s, err))) goto done;
    int nt = p->n_threads > 0 ? p->n_threads : ds_cpu_count();
    r.tp = nt > 1 ? ds_threadpool_create(nt) : NULL; /* serial generation if this fails */
    if (!(r.row_tmp = malloc(max_row))) {
        st = ds_error_set(err, DS_ERR_OOM, "synth: out of memory");
        goto done;
    }
    if (p->n_split > 1) {
        char *prefix = split_prefix(path);
        st = prefix ? ds_gguf_writer_write_split(w, prefix, p->n_split, err) : ds_error_set(err, DS_ERR_OOM, "synth: out of memory");
        free(prefix);
    } else {
        st = ds_gguf_writer_write(w, path, err);
    }
    if (!st && bytes_out) {
        /* the total is the files' sizes: reopen rather than recompute the padding */
        ds_gguf *g;
        const char *first = path;
        char *shard = NULL;
        if (p->n_split > 1) {
            char *prefix = split_prefix(path);
            size_t n = prefix ? strlen(prefix) + 32 : 0;
            if (prefix && (shard = malloc(n))) snprintf(shard, n, "%s-%05d-of-%05d.gguf", prefix, 1, p->n_split);
            free(prefix);
            first = shard;
        }
        if (first && ds_gguf_open(first, &g, NULL) == DS_OK) {
            *bytes_out = ds_gguf_total_bytes(g);
            ds_gguf_close(g);
        }
        free(shard);
    }
done:
    for (int i = 0; i < r.n_t; i++) ds_synth_gen_free(&r.t[i].gen);
    free(r.t);
    free(r.row_tmp);
    if (r.tp) ds_threadpool_free(r.tp);
    ds_gguf_writer_free(w);
    return st;
}
