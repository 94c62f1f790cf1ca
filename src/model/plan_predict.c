/* plan_predict.c: the placement `dsinfer plan` chooses for given memory
 * limits and the speed the bandwidth model predicts for it (see
 * plan_predict.h). Pure: no printing, no GPU; the CLI reports. */
#include "plan_predict.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint64_t tensor_bytes(const ds_tensor *t) {
    return (uint64_t)t->row_bytes * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

static double tensor_elems(const ds_tensor *t) {
    return (double)t->ne[0] * (double)t->ne[1] * (double)t->ne[2] * (double)t->ne[3];
}

ds_status ds_plan_eval(ds_model *m, const ds_placement_spec *s, const ds_plan_limits *lim, ds_plan *p, ds_error *err) {
    ds_status st = ds_placement_apply(m, s, lim->n_gpu, err);
    if (st) return st;
    ds_plan_compute(m, lim->n_ctx, lim->kv_elem, lim->gpu_scratch + ds_placement_stream_bytes(m), p);
    /* the prefill stream stage lives on the GPU that runs the routers
     * (CUDA0); a further GPU holding experts is counted with the backend's
     * scratch only (an estimate: dsinfer does not run on two GPUs yet) */
    for (int d = DS_DEV_CUDA(1); d < p->n_dev; d++)
        if (p->scratch[d]) p->scratch[d] = lim->gpu_scratch;
    return DS_OK;
}

bool ds_plan_gpus_fit(const ds_plan *p, const ds_plan_limits *lim) {
    for (int d = 1; d < p->n_dev; d++) {
        const uint64_t need = p->weights[d] + p->kv[d] + p->scratch[d];
        if (!need) continue;
        if (d - 1 >= lim->n_gpu || need + lim->gpu_margin > lim->gpu_mem[d - 1]) return false;
    }
    return true;
}

uint64_t ds_plan_host_bytes(const ds_plan *p) { return p->weights[DS_DEV_CPU] + p->kv[DS_DEV_CPU]; }

bool ds_plan_host_fits(const ds_plan *p, const ds_plan_limits *lim) {
    return lim->cpu_mem == 0 || ds_plan_host_bytes(p) <= lim->cpu_mem;
}

bool ds_plan_ot_rule(const ds_model *m, int first, int end, int gpu, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "blk\\.(");
    int k = 0;
    for (int il = first < 0 ? 0 : first; il < end && il < m->hp.n_layer && len < n; il++)
        if (m->layers[il].is_moe) len += (size_t)snprintf(buf + len, n - len, "%s%d", k++ ? "|" : "", il);
    if (len < n) len += (size_t)snprintf(buf + len, n - len, ")\\.ffn_.*_exps=CUDA%d", gpu);
    return k > 0 && len < n;
}

/* ---- choosing ------------------------------------------------------------------- */

/* -ngl ngl, then one expert rule per GPU in [0, n_rules) (GPU order: the
 * first match wins and the ranges are disjoint), then --cpu-moe when some
 * MoE layer's experts are left for the host */
static ds_status build_spec(const ds_model *m, int ngl, const int *first, const int *end, int n_rules, bool cpu_moe,
                            ds_placement_spec *s, ds_error *err) {
    ds_placement_spec_init(s);
    s->n_gpu_layers = ngl;
    char rule[4096];
    for (int g = 0; g < n_rules; g++) {
        if (!ds_plan_ot_rule(m, first[g], end[g], g, rule, sizeof rule)) continue;
        ds_status st = ds_placement_add_ot(s, rule, err);
        if (st) return st;
    }
    return cpu_moe ? ds_placement_add_cpu_moe(s, err) : DS_OK;
}

static int first_moe_layer(const ds_model *m) {
    for (int il = 0; il < m->hp.n_layer; il++)
        if (m->layers[il].is_moe) return il;
    return m->hp.n_layer;
}

/* builds and evaluates a spec; *fits: every GPU within its limit */
static ds_status try_spec(ds_model *m, const ds_plan_limits *lim, int ngl, const int *first, const int *end, int n_rules,
                          bool cpu_moe, ds_placement_spec *s, ds_plan *p, bool *fits, ds_error *err) {
    ds_status st = build_spec(m, ngl, first, end, n_rules, cpu_moe, s, err);
    if (!st) st = ds_plan_eval(m, s, lim, p, err);
    *fits = !st && ds_plan_gpus_fit(p, lim);
    return st;
}

ds_status ds_plan_choose(ds_model *m, const ds_plan_limits *lim, ds_plan_choice *out, ds_error *err) {
    memset(out, 0, sizeof *out);
    const int nl = m->hp.n_layer, fm = first_moe_layer(m);
    const int all = nl + 1 > 99 ? nl + 1 : 99; /* printed as llama.cpp users write it */
    for (int il = 0; il < nl; il++) out->n_moe += m->layers[il].is_moe;
    for (int g = 0; g < DS_MAX_GPUS; g++) out->exp_first[g] = out->exp_end[g] = nl;
    out->gpu_fits = true;
    ds_status st;
    bool fits = false;
    ds_placement_spec s;
    ds_plan p;

    /* 1-2: the non-expert part on CUDA0, or as many whole layers' of it as fit */
    if (lim->n_gpu > 0) {
        if ((st = try_spec(m, lim, all, NULL, NULL, 0, out->n_moe > 0, &s, &p, &fits, err))) return st;
        if (fits) {
            out->mode = DS_PLAN_EXPERTS_SPLIT;
            out->n_gpu_layers = all;
        } else {
            for (int n = nl; n >= 1 && !fits; n--) {
                if ((st = try_spec(m, lim, n, NULL, NULL, 0, out->n_moe > 0, &s, &p, &fits, err))) return st;
                if (fits) out->mode = DS_PLAN_LAYERS, out->n_gpu_layers = n;
            }
        }
    }
    if (!fits) { /* no GPU, or not even one layer fits */
        out->mode = DS_PLAN_HOST_ONLY;
        out->gpu_fits = lim->n_gpu == 0;
        ds_placement_spec_init(&out->spec);
        if ((st = ds_plan_eval(m, &out->spec, lim, &out->plan, err))) return st;
        out->run_spec = out->spec;
        out->run_plan = out->plan;
        out->host_fits = out->run_host_fits = ds_plan_host_fits(&out->plan, lim);
        return DS_OK;
    }
    out->spec = s;
    out->plan = p;

    /* 3: routed experts of whole layers, last first, GPU by GPU */
    if (out->mode == DS_PLAN_EXPERTS_SPLIT) {
        int cur = nl;
        for (int g = 0; g < lim->n_gpu; g++) {
            out->exp_first[g] = out->exp_end[g] = cur;
            for (int il = cur - 1; il >= fm; il--) {
                if (!m->layers[il].is_moe) continue;
                int first[DS_MAX_GPUS], end[DS_MAX_GPUS];
                memcpy(first, out->exp_first, sizeof first);
                memcpy(end, out->exp_end, sizeof end);
                first[g] = il;
                if ((st = try_spec(m, lim, all, first, end, g + 1, il > fm, &s, &p, &fits, err))) return st;
                if (!fits) break;
                out->exp_first[g] = cur = il;
                out->spec = s;
                out->plan = p;
            }
        }
        if (out->exp_first[0] <= fm) out->mode = DS_PLAN_ALL_GPU;
    }

    /* what runs today: CUDA0's share only; the rest of the experts on the host */
    const bool rest_on_host = out->n_moe > 0 && out->exp_first[0] > fm;
    if (out->mode == DS_PLAN_ALL_GPU) {
        ds_placement_spec_init(&out->run_spec);
        out->run_spec.n_gpu_layers = all;
        out->spec = out->run_spec;
        if ((st = ds_plan_eval(m, &out->spec, lim, &out->plan, err))) return st;
    } else if ((st = build_spec(m, out->n_gpu_layers, out->exp_first, out->exp_end, 1, rest_on_host, &out->run_spec, err))) {
        return st;
    }
    if ((st = ds_plan_eval(m, &out->run_spec, lim, &out->run_plan, err))) return st;
    out->host_fits = ds_plan_host_fits(&out->plan, lim);
    out->run_host_fits = ds_plan_host_fits(&out->run_plan, lim);
    return DS_OK;
}

/* ---- loads -------------------------------------------------------------------------- */

/* one weight into the per-device sums; is_exp: a routed-expert tensor */
static void add_weight(ds_plan_loads *l, const ds_model *m, const ds_tensor *t, bool is_exp, bool hyb, bool per_token) {
    if (!ds_tensor_present(t) || t->device < 0 || t->device >= DS_MAX_DEVICES) return;
    const ds_hparams *hp = &m->hp;
    const double used = is_exp && hp->n_expert > 0 ? (double)hp->n_expert_used / hp->n_expert : 1.0;
    const double b = (double)tensor_bytes(t), fl = per_token ? 2.0 * tensor_elems(t) * used : 0;
    if (hyb) {
        l->hyb_bytes += b;
        l->hyb_flops_tok += fl;
        return;
    }
    if (is_exp) l->experts[t->device] += b;
    else l->dense[t->device] += b;
    l->flops_tok[t->device] += fl;
}

void ds_plan_loads_compute(const ds_model *m, const ds_plan *p, ds_plan_loads *l) {
    memset(l, 0, sizeof *l);
    const ds_hparams *hp = &m->hp;
    l->n_dev = p->n_dev;
    for (int d = 0; d < p->n_dev; d++) l->step[d] = (double)p->step[d];
    l->hyb_layers = p->experts_cpu_layers;
    l->n_expert = hp->n_expert;
    l->n_expert_used = hp->n_expert_used;
    for (int il = 0; il < hp->n_layer; il++) {
        const ds_layer *L = &m->layers[il];
        /* kv_b is not read by the pass: k_b/v_b derived from it are */
        const ds_tensor *nonexp[] = { &L->attn_norm, &L->q_a, &L->q_a_norm, &L->q_b, &L->q, &L->kv_a, &L->kv_a_norm,
                                      &L->k_b, &L->v_b, &L->attn_out, &L->ffn_norm, &L->ffn_gate, &L->ffn_up,
                                      &L->ffn_down, &L->gate_inp, &L->exp_bias, &L->gate_shexp, &L->up_shexp,
                                      &L->down_shexp };
        const ds_tensor *exps[] = { &L->gate_exps, &L->up_exps, &L->gate_up_exps, &L->down_exps };
        for (size_t i = 0; i < sizeof nonexp / sizeof *nonexp; i++) add_weight(l, m, nonexp[i], false, false, true);
        const int attn = ds_block_device(m, DS_BLK_ATTN, il);
        if (attn > DS_DEV_CPU) l->gpu_layers++;
        if (!L->is_moe) continue;
        const bool hyb = ds_block_device(m, DS_BLK_EXPERTS, il) == DS_DEV_CPU && ds_block_device(m, DS_BLK_ROUTER, il) > DS_DEV_CPU;
        for (size_t i = 0; i < sizeof exps / sizeof *exps; i++) add_weight(l, m, exps[i], true, hyb, true);
    }
    /* prefill computes the logits of its last row only: the LM head is read
     * once per micro-batch (tied to token_embd or not), its FLOPs are
     * negligible; token_embd itself: one row per token, left out */
    add_weight(l, m, &m->output_norm, false, false, false);
    add_weight(l, m, &m->output, false, false, false);
}

/* ---- prediction --------------------------------------------------------------------- */

void ds_plan_predict(const ds_plan_loads *l, const ds_plan_hw *hw, int ub, ds_plan_prediction *o) {
    memset(o, 0, sizeof *o);
    const double G = 1e9, T = 1e12;
    double t = 0;
    for (int d = 0; d < l->n_dev; d++) {
        if (l->step[d] <= 0) continue;
        const double bw = d == DS_DEV_CPU ? hw->cpu_bw : hw->gpu_bw[d - 1];
        o->t_step[d] = l->step[d] / (bw * G);
        t += o->t_step[d];
    }
    o->tg_bw = t > 0 ? 1.0 / t : 0;
    o->t_overhead = l->gpu_layers * DS_PLAN_O_GPU_LAYER + l->hyb_layers * DS_PLAN_O_HYB_LAYER;
    o->tg_cal = t + o->t_overhead > 0 ? 1.0 / (t + o->t_overhead) : 0;

    o->ub = ub;
    /* distinct experts a micro-batch touches: all of them from 64 rows on,
     * else the expectation under uniform routing */
    const double k = l->n_expert > 0 ? (double)l->n_expert_used / l->n_expert : 1.0;
    o->frac = ub >= 64 ? 1.0 : 1.0 - pow(1.0 - k, ub);
    for (int d = 1; d < l->n_dev; d++)
        o->t_gpu += (l->dense[d] + o->frac * l->experts[d]) / (hw->gpu_bw[d - 1] * G) + ub * l->flops_tok[d] / (hw->gpu_tflops * T);
    const double hb = (l->dense[0] + o->frac * l->experts[0]) / (hw->cpu_bw * G), hf = ub * l->flops_tok[0] / (hw->cpu_tflops * T);
    o->t_host = hb > hf ? hb : hf;
    o->t_stream = -1;
    o->t_cpu = 0;
    if (l->hyb_bytes > 0) {
        const double cb = o->frac * l->hyb_bytes / (hw->cpu_bw * G), cf = ub * l->hyb_flops_tok / (hw->cpu_tflops * T);
        o->t_cpu = cb > cf ? cb : cf;
        /* the CUDA backend streams only micro-batches of DS_CU_STREAM_ROWS (32) rows or more */
        if (ub >= 32) o->t_stream = o->frac * l->hyb_bytes / (hw->pcie_bw * G) + ub * l->hyb_flops_tok / (hw->gpu_tflops * T);
    }
    o->streamed = o->t_stream >= 0 && o->t_stream < o->t_cpu;
    const double tm = o->t_gpu + o->t_host + (o->streamed ? o->t_stream : o->t_cpu);
    o->pp = tm > 0 ? ub / tm : 0;
}

double ds_plan_cpu_bw_needed(const ds_plan_loads *l, const ds_plan_prediction *p, double target) {
    if (l->step[DS_DEV_CPU] <= 0 || target <= 0) return 0;
    double rest = p->t_overhead;
    for (int d = 1; d < l->n_dev; d++) rest += p->t_step[d];
    const double left = 1.0 / target - rest;
    return left > 0 ? l->step[DS_DEV_CPU] / left / 1e9 : -1;
}
