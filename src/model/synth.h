/* synth.h: writes DeepSeek-V3-shaped deepseek2 GGUFs with random but valid
 * weights (any layer count, llama-quantize-like type mixes, both attention
 * layouts, a byte-level BPE vocabulary and the deepseek3 chat template), for
 * benchmarks and tests. Data is generated while the file is written, so a
 * 37 GB file never sits in memory. Not a quantizer: blocks are made from
 * random bits with controlled scales, never from float weights. */
#ifndef DS_SYNTH_H
#define DS_SYNTH_H

#include "../core/core.h"
#include "../gguf/gguf.h"
#include "../quant/quant.h"

/* Type mixes, named like llama-quantize's presets (see ds_synth_tensor_type). */
typedef enum ds_synth_mix {
    DS_SYNTH_Q3_K_M = 0,
    DS_SYNTH_Q4_K_M,
    DS_SYNTH_Q8_0,
    DS_SYNTH_F16,
    DS_SYNTH_IQ4_XS,
} ds_synth_mix;

typedef struct ds_synth_params {
    int n_layer;          /* block_count */
    int n_dense;          /* leading dense layers (may equal n_layer) */
    ds_synth_mix mix;
    bool tiny;            /* small test shapes instead of V3's (see synth.c) */
    bool legacy;          /* attn_kv_b layout instead of attn_k_b/attn_v_b */
    uint64_t seed;
    int n_split;          /* shards; <= 1 writes one file */
    int n_expert;         /* 0 = the width's default (256 full, 16 tiny) */
    int n_vocab;          /* 0 = the width's default (129280 full, 1024 tiny) */
    int n_threads;        /* generation threads (0 = all cores) */
    /* Called now and then while writing (may be NULL): bytes of tensor data
     * written so far of total. */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *progress_ctx;
} ds_synth_params;

void ds_synth_params_default(ds_synth_params *p);
/* "q3_k_m" ... (case-insensitive); -1 if unknown. */
int ds_synth_mix_from_name(const char *name);
const char *ds_synth_mix_name(ds_synth_mix mix);
/* llama.cpp's general.file_type value of the mix (LLAMA_FTYPE_MOSTLY_*). */
uint32_t ds_synth_mix_file_type(ds_synth_mix mix);

/* Type of tensor `name` ("blk.3.ffn_down_exps.weight", "output.weight", ...)
 * under p's mix and layer count; the rules are llama-quantize's (see synth.c
 * for where and why they differ). */
ds_type ds_synth_tensor_type(const ds_synth_params *p, const char *name);

/* Writes the model to path, or with n_split > 1 to "<path minus .gguf>-0000i-of-0000N.gguf"
 * shards. *bytes_out (may be NULL) gets the total size written. Errors say
 * what failed; a failed write leaves no partial shard behind. */
ds_status ds_synth_write(const ds_synth_params *p, const char *path, uint64_t *bytes_out, ds_error *err);

/* ---- pieces, exposed for tests ------------------------------------------- */

/* How one tensor's bytes are made: every row from its own PRNG stream
 * (seeded by tensor seed and row index), so the bytes do not depend on
 * chunking or threads. */
typedef enum ds_synth_kind {
    DS_SYNTH_WEIGHT = 0,  /* zero-mean, standard deviation sigma */
    DS_SYNTH_NORM,        /* 1 +- 10 % (RMSNorm weights) */
    DS_SYNTH_BIAS,        /* uniform +- sigma (router selection bias) */
} ds_synth_kind;

typedef struct ds_synth_gen {
    ds_type type;
    ds_synth_kind kind;
    int64_t row_elems;    /* ne0 */
    size_t row_bytes;
    float sigma;
    uint64_t seed;
    /* quantized: |d| candidates (fp16 bits, jittered around the scale that
     * gives sigma), the dmin/d ratio for types with a min term, and where
     * d and dmin sit in a block */
    uint16_t d_tab[64], m_tab[64];
    int d_off, m_off;     /* byte offsets in the block; m_off < 0: no min */
    int tie, scales_off;  /* types with a min: how and where min codes are tied to scales */
    bool sign_flip;       /* zero mean by a random sign on d per block */
    uint16_t *f16_tab;    /* F16: 4096 values of the target distribution (owned) */
} ds_synth_gen;

/* Prepares g; DS_ERR_UNSUPPORTED for types it cannot make (grid IQ types). */
ds_status ds_synth_gen_init(ds_synth_gen *g, ds_type type, int64_t row_elems, ds_synth_kind kind,
                            float sigma, uint64_t seed);
void ds_synth_gen_free(ds_synth_gen *g);
/* Writes rows [row0, row0 + n) into dst (n * row_bytes bytes). Thread-safe. */
void ds_synth_gen_rows(const ds_synth_gen *g, int64_t row0, int64_t n, void *dst);

/* Sets the tokenizer.* keys: a GPT-2 byte-level BPE vocabulary of n_vocab
 * tokens (BOS 0, EOS 1, the 256 byte tokens, merged letter tokens with their
 * merges, <｜User｜>/<｜Assistant｜> as control tokens) and the deepseek3
 * chat template. n_vocab >= 512. */
ds_status ds_synth_vocab(ds_gguf_writer *w, int n_vocab, uint64_t seed, ds_error *err);

#endif
