/* cpu_moe.c: routed experts on the cpu backend. Rows are grouped by
 * expert so each selected expert's weights stream from memory once per
 * micro-batch, whatever the number of rows that chose it. */
#include "cpu_internal.h"

#include <string.h>

ds_status ds_cpu_moe_experts(ds_backend *be, const ds_model *m, int il, int n, const float *y,
                             const int32_t *ids, const float *weights, float *out) {
    cpu_impl *C = be->impl;
    const ds_layer *L = &m->layers[il];
    const ds_hparams *hp = &m->hp;
    const int E = hp->n_embd, k = hp->n_expert_used;
    const int64_t F = hp->n_ff_exp;
    const bool fused = ds_tensor_present(&L->gate_up_exps);
    unsigned char used[DS_MAX_EXPERTS] = { 0 };
    for (int i = 0; i < n * k; i++)
        if (ids[i] >= 0) used[ids[i]] = 1;

    for (int e = 0; e < hp->n_expert; e++) {
        if (!used[e]) continue;
        int cnt = 0;
        for (int r = 0; r < n; r++)
            for (int j = 0; j < k; j++)
                if (ids[(size_t)r * k + j] == e) {
                    memcpy(C->ey + (size_t)cnt * E, y + (size_t)r * E, (size_t)E * sizeof(float));
                    C->erow[cnt] = r;
                    C->ew[cnt] = weights[(size_t)r * k + j];
                    cnt++;
                }
        if (fused)
            ds_cpu_ffn(C, &L->gate_up_exps, e * 2 * F, &L->gate_up_exps, e * 2 * F + F, &L->down_exps,
                       (int64_t)e * E, F, E, cnt, C->ey, C->eo);
        else
            ds_cpu_ffn(C, &L->gate_exps, e * F, &L->up_exps, e * F, &L->down_exps, (int64_t)e * E, F, E, cnt, C->ey,
                       C->eo);
        for (int i = 0; i < cnt; i++)
            C->vec->axpy(C->ew[i], C->eo + (size_t)i * E, out + (size_t)C->erow[i] * E, E);
    }
    return DS_OK;
}
