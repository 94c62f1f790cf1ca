/* cmd_info.c: `dsinfer info` — what a GGUF holds and what running it costs:
 * hyperparameters, tensor count and bytes by type, KV bytes per token, and
 * the bytes one batch-1 decode step reads. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void help(void) {
    printf("usage: dsinfer info -m MODEL [-c CTX] [-ctk f16|bf16|f32] [--override-kv KEY=TYPE:VALUE]\n"
           "                    [-ngl N] [-ot REGEX=DEV]... [--cpu-moe] [--n-cpu-moe N] [-ts P0,P1] [-ub N]\n"
           "Prints what the GGUF holds and, with placement flags (or --device cuda), the plan:\n"
           "per device the bytes of weights, KV cache and scratch, and the bytes a decode step\n"
           "reads there. Nothing is loaded onto a GPU; CUDA<n> may name GPUs this machine lacks.\n");
}

int ds_cmd_info(int argc, char **argv) {
    ds_cli_model_opts o;
    ds_cli_model_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        int r = ds_cli_model_opt(&o, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { help(); return 0; }
        return ds_cli_usage_error("info", "unknown option '%s'", argv[i]);
    }
    if (!o.model) return ds_cli_usage_error("info", "-m MODEL is required");
    ds_model *m;
    ds_status lst = ds_cli_load(&o, &m, NULL, 1);
    if (lst) return ds_cli_exit_code(lst);
    const ds_hparams *hp = &m->hp;
    const ds_gguf *g = m->gguf;

    printf("model:        %s\n", m->name);
    printf("file:         %s (%d shard%s, GGUF v%u, %.2f GiB)\n", o.model, ds_gguf_n_shards(g),
           ds_gguf_n_shards(g) > 1 ? "s" : "", ds_gguf_version(g), ds_gguf_total_bytes(g) / 1073741824.0);
    printf("architecture: %s, %s attention layout%s\n", m->arch, hp->mla_layout ? "MLA (attn_k_b/attn_v_b)" : "legacy (attn_kv_b)",
           hp->mla_layout ? "" : ", k_b/v_b derived at load");
    printf("layers:       %d (%d dense, %d MoE)%s\n", hp->n_layer, hp->n_dense_lead, hp->n_layer - hp->n_dense_lead,
           hp->n_nextn ? " + MTP layers (not run)" : "");
    printf("embedding:    %d, vocab %d, context %d\n", hp->n_embd, hp->n_vocab, hp->n_ctx_train);
    printf("attention:    %d heads, q_lora %d, kv_lora %d, nope %d, rope %d, v %d, kq_scale %.5f\n", hp->n_head,
           hp->q_lora, hp->kv_lora, hp->d_nope, hp->d_rope, hp->d_v, hp->kq_scale);
    printf("rope:         base %g%s", hp->rope_base, hp->yarn ? ", YaRN" : "");
    if (hp->yarn) printf(" factor %g, original context %d, log multiplier %g", hp->yarn_factor, hp->yarn_orig_ctx, hp->yarn_log_mul);
    printf("\n");
    printf("ffn:          dense %d; %d experts of %d, %d used, %d shared", hp->n_ff, hp->n_expert, hp->n_ff_exp,
           hp->n_expert_used, hp->n_expert_shared);
    if (hp->n_group) printf(", top %d of %d groups", hp->n_group_used, hp->n_group);
    printf(", %s gating, %snormalised, scale %g\n", hp->gating == DS_GATING_SIGMOID ? "sigmoid" : "softmax",
           hp->expert_weights_norm ? "" : "not ", hp->expert_weights_scale);

    uint64_t bytes_by_type[DS_TYPE_COUNT] = { 0 }, total = 0;
    int count_by_type[DS_TYPE_COUNT] = { 0 };
    for (int64_t i = 0; i < ds_gguf_n_tensors(g); i++) {
        const ds_gguf_tensor *t = ds_gguf_tensor_at(g, i);
        if (t->type < DS_TYPE_COUNT) { count_by_type[t->type]++; bytes_by_type[t->type] += t->nbytes; }
        total += t->nbytes;
    }
    printf("tensors:      %lld, %.3f GiB\n", (long long)ds_gguf_n_tensors(g), total / 1073741824.0);
    for (int t = 0; t < DS_TYPE_COUNT; t++)
        if (count_by_type[t])
            printf("  %-8s %5d tensors %10.3f GiB\n", ds_type_info(t)->name, count_by_type[t],
                   bytes_by_type[t] / 1073741824.0);
    size_t kv_el = o.kv_type == DS_TYPE_F32 ? 4 : 2;
    uint64_t kv_tok = (uint64_t)hp->d_kv_row * hp->n_layer * kv_el;
    printf("kv cache:     %llu bytes/token (%s); %.3f GiB at -c %lld\n", (unsigned long long)kv_tok,
           ds_type_info(o.kv_type)->name, kv_tok * (double)o.n_ctx / 1073741824.0, (long long)o.n_ctx);
    uint64_t step = ds_model_decode_bytes(m);
    printf("decode step:  %.3f GB of weights read per token at batch 1 (+ KV rows)\n", step / 1e9);
    /* the placement plan, for the GPUs the flags name (none need be present) */
    if (ds_cli_place(&o, m, DS_MAX_DEVICES - 1)) {
        ds_model_free(m);
        return 2;
    }
    ds_plan p;
    const int ub = o.n_ubatch < o.n_batch ? o.n_ubatch : o.n_batch;
    /* GPU scratch as the CUDA backend allocates it, even in a build without CUDA */
    ds_plan_compute(m, o.n_ctx, o.kv_type == DS_TYPE_F32 ? 4 : 2, ds_cli_gpu_scratch(m, ub), &p);
    ds_plan_print(&p, stdout);
    ds_model_free(m);
    return 0;
}
