/* placement.c: llama.cpp's placement flags applied to a loaded model's
 * tensors (see placement.h), and the per-device plan. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "placement.h"

#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

/* the routed-expert tensors, as llama.cpp's --cpu-moe names them (plus our fused gate_up) */
#define EXPS_RE "\\.ffn_(up|down|gate|gate_up)_(ch|)exps"

void ds_placement_spec_init(ds_placement_spec *s) {
    memset(s, 0, sizeof *s);
    s->n_gpu_layers = -1;
}

const char *ds_device_name(int device, char *buf, size_t n) {
    if (device == DS_DEV_CPU) snprintf(buf, n, "CPU");
    else snprintf(buf, n, "CUDA%d", device - 1);
    return buf;
}

bool ds_placement_parse_device(const char *s, int *device) {
    if (!strcasecmp(s, "CPU")) {
        *device = DS_DEV_CPU;
        return true;
    }
    if (strncasecmp(s, "CUDA", 4) || !s[4]) return false;
    int v = 0;
    for (const char *p = s + 4; *p; p++) {
        if (*p < '0' || *p > '9' || v > 1000) return false;
        v = v * 10 + (*p - '0');
    }
    if (v >= DS_MAX_DEVICES - 1) return false;
    *device = DS_DEV_CUDA(v);
    return true;
}

static pcre2_code *compile(const char *pattern, char *msg, size_t n) {
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR m[160];
        pcre2_get_error_message(code, m, sizeof m);
        snprintf(msg, n, "%s at offset %zu", (const char *)m, (size_t)at);
    }
    return re;
}

static ds_status add_rule(ds_placement_spec *s, const char *pattern, size_t len, int device, ds_error *err) {
    if (s->n_ot == DS_MAX_OT) return ds_error_set(err, DS_ERR_INVALID_ARG, "too many -ot rules (max %d)", DS_MAX_OT);
    if (len + 1 > (size_t)(DS_OT_BYTES - s->patterns_used))
        return ds_error_set(err, DS_ERR_INVALID_ARG, "-ot rules too long (%d bytes in all at most)", DS_OT_BYTES);
    char *p = s->patterns + s->patterns_used;
    memcpy(p, pattern, len);
    p[len] = 0;
    char msg[200];
    pcre2_code *re = compile(p, msg, sizeof msg);
    if (!re) return ds_error_set(err, DS_ERR_INVALID_ARG, "-ot: bad regex '%s': %s", p, msg);
    pcre2_code_free(re);
    s->ot[s->n_ot++] = (ds_ot_rule){ .off = s->patterns_used, .device = device };
    s->patterns_used += (int)len + 1;
    return DS_OK;
}

ds_status ds_placement_add_ot(ds_placement_spec *s, const char *arg, ds_error *err) {
    /* "re=DEV[,re=DEV...]": split on commas as llama.cpp does; the device is
     * after the last '=' of each piece (a regex may hold '=' itself) */
    const char *p = arg;
    do {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = NULL;
        for (const char *q = p; q < p + len; q++)
            if (*q == '=') eq = q;
        if (!eq || eq == p)
            return ds_error_set(err, DS_ERR_INVALID_ARG, "-ot '%.*s': expected REGEX=DEVICE (e.g. exps=CPU)",
                                (int)len, p);
        char dev[32];
        size_t dl = (size_t)(p + len - eq - 1);
        if (dl == 0 || dl >= sizeof dev)
            return ds_error_set(err, DS_ERR_INVALID_ARG, "-ot '%.*s': missing or overlong device name", (int)len, p);
        memcpy(dev, eq + 1, dl);
        dev[dl] = 0;
        int d;
        if (!ds_placement_parse_device(dev, &d))
            return ds_error_set(err, DS_ERR_INVALID_ARG, "-ot '%.*s': unknown device '%s' (CPU, CUDA0, CUDA1, ...)",
                                (int)len, p, dev);
        ds_status st = add_rule(s, p, (size_t)(eq - p), d, err);
        if (st) return st;
        p = end ? end + 1 : NULL;
    } while (p);
    return DS_OK;
}

ds_status ds_placement_add_cpu_moe(ds_placement_spec *s, ds_error *err) {
    return add_rule(s, EXPS_RE, strlen(EXPS_RE), DS_DEV_CPU, err);
}

ds_status ds_placement_add_n_cpu_moe(ds_placement_spec *s, int n, ds_error *err) {
    if (n <= 0) return DS_OK;
    /* one rule: blk\.(0|1|...|n-1)\.<experts> */
    size_t cap = (size_t)n * 6 + 64;
    char *re = malloc(cap);
    if (!re) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    size_t len = (size_t)snprintf(re, cap, "^blk\\.(");
    for (int i = 0; i < n; i++) len += (size_t)snprintf(re + len, cap - len, "%s%d", i ? "|" : "", i);
    len += (size_t)snprintf(re + len, cap - len, ")" EXPS_RE);
    ds_status st = add_rule(s, re, len, DS_DEV_CPU, err);
    free(re);
    return st;
}

ds_status ds_placement_parse_split(ds_placement_spec *s, const char *arg, ds_error *err) {
    s->n_split = 0;
    const char *p = arg;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || v < 0 || v != v || v > 1e9 || (*end && *end != ',' && *end != '/'))
            return ds_error_set(err, DS_ERR_INVALID_ARG, "-ts '%s': expected proportions like 3,1", arg);
        if (s->n_split == DS_MAX_DEVICES - 1)
            return ds_error_set(err, DS_ERR_INVALID_ARG, "-ts '%s': too many devices", arg);
        s->split[s->n_split++] = (float)v;
        p = *end ? end + 1 : end;
    }
    float sum = 0;
    for (int i = 0; i < s->n_split; i++) sum += s->split[i];
    if (s->n_split == 0 || sum <= 0)
        return ds_error_set(err, DS_ERR_INVALID_ARG, "-ts '%s': the proportions must not all be 0", arg);
    return DS_OK;
}

/* ---- the model's weights by block -------------------------------------------------- */

typedef struct weight_ref {
    ds_tensor *t;
    ds_block_kind kind;
    int il; /* -1 for model-level blocks */
} weight_ref;

/* every present weight of the model, in a fixed order; returns the count
 * (out may be NULL to count) */
static int list_weights(ds_model *m, weight_ref *out) {
    int n = 0;
#define W(tensor, k, l)                                                        \
    do {                                                                       \
        if (ds_tensor_present(&(tensor))) {                                    \
            if (out) out[n] = (weight_ref){ &(tensor), (k), (l) };             \
            n++;                                                               \
        }                                                                      \
    } while (0)
    W(m->token_embd, DS_BLK_EMBED, -1);
    for (int il = 0; il < m->hp.n_layer; il++) {
        ds_layer *L = &m->layers[il];
        W(L->attn_norm, DS_BLK_ATTN, il); W(L->q_a, DS_BLK_ATTN, il); W(L->q_a_norm, DS_BLK_ATTN, il);
        W(L->q_b, DS_BLK_ATTN, il); W(L->q, DS_BLK_ATTN, il); W(L->kv_a, DS_BLK_ATTN, il);
        W(L->kv_a_norm, DS_BLK_ATTN, il); W(L->k_b, DS_BLK_ATTN, il); W(L->v_b, DS_BLK_ATTN, il);
        W(L->attn_out, DS_BLK_ATTN, il); /* not kv_b: the pass reads the k_b/v_b derived from it */
        if (!L->is_moe) {
            W(L->ffn_norm, DS_BLK_DENSE, il); W(L->ffn_gate, DS_BLK_DENSE, il); W(L->ffn_up, DS_BLK_DENSE, il);
            W(L->ffn_down, DS_BLK_DENSE, il);
        } else {
            W(L->ffn_norm, DS_BLK_ROUTER, il); W(L->gate_inp, DS_BLK_ROUTER, il); W(L->exp_bias, DS_BLK_ROUTER, il);
            W(L->gate_shexp, DS_BLK_SHARED, il); W(L->up_shexp, DS_BLK_SHARED, il);
            W(L->down_shexp, DS_BLK_SHARED, il);
            W(L->gate_exps, DS_BLK_EXPERTS, il); W(L->up_exps, DS_BLK_EXPERTS, il);
            W(L->gate_up_exps, DS_BLK_EXPERTS, il); W(L->down_exps, DS_BLK_EXPERTS, il);
        }
    }
    W(m->output_norm, DS_BLK_OUTPUT, -1);
    W(m->output, DS_BLK_OUTPUT, -1);
#undef W
    return n;
}

static uint64_t tensor_bytes(const ds_tensor *t) {
    return (uint64_t)t->row_bytes * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

/* the device of the layers -ngl and -ts give: the last ngl layers on GPUs,
 * split in proportion (llama.cpp's layer split), the rest on the host */
static int layer_device(const ds_model *m, const ds_placement_spec *s, int il) {
    const int nl = m->hp.n_layer, ngl = s->n_gpu_layers < 0 ? 0 : (s->n_gpu_layers > nl + 1 ? nl + 1 : s->n_gpu_layers);
    const int first = nl - ngl < 0 ? 0 : nl - ngl;
    if (il < first) return DS_DEV_CPU;
    if (s->n_split <= 1) return DS_DEV_CUDA(0);
    float sum = 0, acc = 0;
    for (int i = 0; i < s->n_split; i++) sum += s->split[i];
    const int n_gpu_layers = nl - first; /* layers only: the output goes with the last device */
    const float at = (float)(il - first) / (float)(n_gpu_layers > 0 ? n_gpu_layers : 1);
    for (int i = 0; i < s->n_split; i++) {
        acc += s->split[i] / sum;
        if (at < acc - 1e-6f) return DS_DEV_CUDA(i);
    }
    return DS_DEV_CUDA(s->n_split - 1);
}

ds_status ds_placement_apply(ds_model *m, const ds_placement_spec *s, int n_gpus, ds_error *err) {
    ds_status st = DS_OK;
    const int n = list_weights(m, NULL);
    weight_ref *w = malloc((size_t)n * sizeof *w);
    int *rule_of = malloc((size_t)n * sizeof *rule_of);
    pcre2_code *re[DS_MAX_OT] = { 0 };
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!w || !rule_of || !md) {
        st = ds_error_set(err, DS_ERR_OOM, "out of memory");
        goto done;
    }
    list_weights(m, w);
    for (int r = 0; r < s->n_ot; r++) {
        char msg[200];
        if (!(re[r] = compile(ds_ot_pattern(s, r), msg, sizeof msg))) {
            st = ds_error_set(err, DS_ERR_INVALID_ARG, "-ot: bad regex '%s': %s", ds_ot_pattern(s, r), msg);
            goto done;
        }
    }
    const int nl = m->hp.n_layer;
    const int ngl = s->n_gpu_layers < 0 ? 0 : s->n_gpu_layers;
    const int last_gpu = layer_device(m, s, nl - 1);
    for (int i = 0; i < n; i++) {
        ds_tensor *t = w[i].t;
        rule_of[i] = -1;
        for (int r = 0; r < s->n_ot; r++) {
            if (pcre2_match(re[r], (PCRE2_SPTR)t->name, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL) >= 0) {
                rule_of[i] = r;
                break;
            }
        }
        if (rule_of[i] >= 0) t->device = s->ot[rule_of[i]].device;
        else if (w[i].kind == DS_BLK_EMBED) t->device = DS_DEV_CPU; /* llama.cpp keeps the input layer on the host */
        else if (w[i].kind == DS_BLK_OUTPUT) t->device = ngl > nl ? last_gpu : DS_DEV_CPU;
        else t->device = layer_device(m, s, w[i].il);
        if (t->device > n_gpus) {
            char dn[16];
            if (rule_of[i] >= 0)
                st = ds_error_set(err, DS_ERR_INVALID_ARG, "-ot '%s=%s' places '%s' on %s, but %d GPU%s visible",
                                  ds_ot_pattern(s, rule_of[i]), ds_device_name(t->device, dn, sizeof dn), t->name, dn,
                                  n_gpus, n_gpus == 1 ? " is" : "s are");
            else
                st = ds_error_set(err, DS_ERR_INVALID_ARG, "-ngl/-ts place '%s' on %s, but %d GPU%s visible%s",
                                  t->name, ds_device_name(t->device, dn, sizeof dn), n_gpus,
                                  n_gpus == 1 ? " is" : "s are",
                                  n_gpus == 0 ? " (no CUDA device, or a build without -DDSINFER_CUDA=ON)" : "");
            goto done;
        }
    }
    /* make blocks whole: a block runs on one device, the one holding its largest weight */
    int notices = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && w[j].kind == w[i].kind && w[j].il == w[i].il) j++;
        int best = i;
        for (int k = i; k < j; k++)
            if (tensor_bytes(w[k].t) > tensor_bytes(w[best].t)) best = k;
        const int dev = w[best].t->device;
        for (int k = i; k < j; k++) {
            if (w[k].t->device == dev) continue;
            char a[16], b[16];
            if (notices++ < 8)
                fprintf(stderr, "dsinfer: note: '%s' runs with its block on %s, not %s (a block of weights runs on one device; "
                                "'%s' is its largest)\n",
                        w[k].t->name, ds_device_name(dev, a, sizeof a), ds_device_name(w[k].t->device, b, sizeof b),
                        w[best].t->name);
            w[k].t->device = dev;
        }
        i = j;
    }
    if (notices > 8) fprintf(stderr, "dsinfer: note: %d more tensors moved to their block's device\n", notices - 8);
done:
    for (int r = 0; r < s->n_ot; r++) pcre2_code_free(re[r]);
    pcre2_match_data_free(md);
    free(w);
    free(rule_of);
    return st;
}

/* ---- queries --------------------------------------------------------------------------- */

static const ds_tensor *block_main(const ds_model *m, ds_block_kind kind, int il) {
    const ds_layer *L = il >= 0 && il < m->hp.n_layer ? &m->layers[il] : NULL;
    switch (kind) {
    case DS_BLK_EMBED: return &m->token_embd;
    case DS_BLK_OUTPUT: return &m->output;
    case DS_BLK_ATTN: return L ? &L->attn_out : NULL;
    case DS_BLK_DENSE: return L && !L->is_moe ? &L->ffn_down : NULL;
    case DS_BLK_ROUTER: return L && L->is_moe ? &L->gate_inp : NULL;
    case DS_BLK_SHARED: return L && L->is_moe && ds_tensor_present(&L->down_shexp) ? &L->down_shexp : NULL;
    case DS_BLK_EXPERTS: return L && L->is_moe ? &L->down_exps : NULL;
    default: return NULL;
    }
}

int ds_block_device(const ds_model *m, ds_block_kind kind, int il) {
    const ds_tensor *t = block_main(m, kind, il);
    return t && ds_tensor_present(t) ? t->device : -1;
}

bool ds_placement_uses_gpu(const ds_model *m) {
    int n = list_weights((ds_model *)m, NULL);
    weight_ref *w = malloc((size_t)n * sizeof *w);
    if (!w) return true; /* the caller's backend creation will fail loudly */
    list_weights((ds_model *)m, w);
    bool any = false;
    for (int i = 0; i < n && !any; i++) any = w[i].t->device != DS_DEV_CPU;
    free(w);
    return any;
}

bool ds_placement_gpu_with_cpu_experts(const ds_model *m) {
    const int g = DS_DEV_CUDA(0);
    if (ds_block_device(m, DS_BLK_OUTPUT, -1) != g) return false;
    const int e = ds_block_device(m, DS_BLK_EMBED, -1);
    if (e != g && e != DS_DEV_CPU) return false;
    for (int il = 0; il < m->hp.n_layer; il++) {
        for (int k = DS_BLK_ATTN; k <= DS_BLK_SHARED; k++) {
            const int d = ds_block_device(m, (ds_block_kind)k, il);
            if (d >= 0 && d != g) return false;
        }
        const int d = ds_block_device(m, DS_BLK_EXPERTS, il);
        if (d >= 0 && d != g && d != DS_DEV_CPU) return false;
    }
    return true;
}

uint64_t ds_placement_stream_bytes(const ds_model *m) {
    uint64_t best = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        if (ds_block_device(m, DS_BLK_EXPERTS, il) != DS_DEV_CPU || ds_block_device(m, DS_BLK_ROUTER, il) <= DS_DEV_CPU)
            continue;
        const ds_layer *L = &m->layers[il];
        const ds_tensor *t[4] = { &L->gate_exps, &L->up_exps, &L->gate_up_exps, &L->down_exps };
        uint64_t b = 0;
        for (int i = 0; i < 4; i++)
            if (ds_tensor_present(t[i])) b += (tensor_bytes(t[i]) + 255) & ~(uint64_t)255;
        best = b > best ? b : best;
    }
    return best;
}

/* ---- the plan ----------------------------------------------------------------------------- */

void ds_plan_compute(const ds_model *m, int64_t n_ctx, int kv_elem, uint64_t gpu_scratch, ds_plan *p) {
    memset(p, 0, sizeof *p);
    const ds_hparams *hp = &m->hp;
    p->n_dev = 1;
    int n = list_weights((ds_model *)m, NULL);
    weight_ref *w = malloc((size_t)n * sizeof *w);
    if (!w) return;
    list_weights((ds_model *)m, w);
    const bool tied = m->output.data == m->token_embd.data;
    for (int i = 0; i < n; i++) {
        const ds_tensor *t = w[i].t;
        const int d = t->device;
        if (d < 0 || d >= DS_MAX_DEVICES) continue;
        if (d + 1 > p->n_dev) p->n_dev = d + 1;
        const bool shares = tied && t == &m->output && m->token_embd.device == d;
        const uint64_t b = tensor_bytes(t);
        if (!shares) {
            p->weights[d] += b;
            p->n_tensors[d]++;
        }
        if (w[i].kind == DS_BLK_EMBED) p->step[d] += t->row_bytes;
        else if (w[i].kind == DS_BLK_EXPERTS && hp->n_expert > 0) p->step[d] += b / (uint64_t)hp->n_expert * (uint64_t)hp->n_expert_used;
        else p->step[d] += b;
    }
    for (int il = 0; il < hp->n_layer; il++) {
        const int d = ds_block_device(m, DS_BLK_ATTN, il);
        if (d >= 0) p->kv[d] += (uint64_t)n_ctx * (uint64_t)hp->d_kv_row * (uint64_t)kv_elem;
        if (ds_block_device(m, DS_BLK_EXPERTS, il) == DS_DEV_CPU && ds_block_device(m, DS_BLK_ROUTER, il) != DS_DEV_CPU)
            p->experts_cpu_layers++;
    }
    for (int d = 1; d < p->n_dev; d++)
        if (p->weights[d] || p->kv[d]) p->scratch[d] = gpu_scratch;
    free(w);
}

void ds_plan_print(const ds_plan *p, FILE *f) {
    const double G = 1073741824.0;
    fprintf(f, "placement plan (GiB; 'step' = weights one batch-1 decode step reads there, GB):\n");
    fprintf(f, "  %-6s %8s %10s %8s %8s %8s %10s\n", "device", "tensors", "weights", "kv", "scratch", "total", "step GB");
    for (int d = 0; d < p->n_dev; d++) {
        if (!p->n_tensors[d] && !p->kv[d] && d > 0) continue;
        char dn[16];
        fprintf(f, "  %-6s %8d %10.3f %8.3f %8.3f %8.3f %10.3f\n", ds_device_name(d, dn, sizeof dn), p->n_tensors[d],
                p->weights[d] / G, p->kv[d] / G, p->scratch[d] / G, (p->weights[d] + p->kv[d] + p->scratch[d]) / G,
                p->step[d] / 1e9);
    }
    if (p->experts_cpu_layers)
        fprintf(f, "  routed experts of %d MoE layer%s run on the CPU, the rest of those layers on the GPU;\n"
                   "  prefill micro-batches of 32+ rows compute them on the CPU or stream the used experts to the\n"
                   "  GPU, whichever measures cheaper (scratch includes the largest layer's experts;\n"
                   "  DSINFER_STREAM_ROWS=0 keeps them on the CPU)\n",
                p->experts_cpu_layers, p->experts_cpu_layers == 1 ? "" : "s");
}

ds_status ds_placement_lock_host(const ds_model *m, uint64_t *bytes, ds_error *err) {
    *bytes = 0;
    int n = list_weights((ds_model *)m, NULL);
    weight_ref *w = malloc((size_t)n * sizeof *w);
    if (!w) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    list_weights((ds_model *)m, w);
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    ds_status st = DS_OK;
    for (int i = 0; i < n; i++) {
        const ds_tensor *t = w[i].t;
        if (t->device != DS_DEV_CPU) continue;
        const uintptr_t a = (uintptr_t)t->data & ~(page - 1), e = (uintptr_t)t->data + tensor_bytes(t);
        if (mlock((const void *)a, e - a)) {
            st = ds_error_set(err, DS_ERR_OOM,
                              "mlock of '%s' failed (%s) after %.2f GiB: raise the limit (ulimit -l unlimited, or "
                              "--ulimit memlock=-1 in docker) or drop --mlock",
                              t->name, strerror(errno), *bytes / 1073741824.0);
            break;
        }
        *bytes += tensor_bytes(t);
    }
    free(w);
    return st;
}

typedef struct copy_part {
    uint8_t *dst;
    const uint8_t *src;
    size_t n;
} copy_part;

typedef struct copy_all {
    copy_part *parts;
    int n;
} copy_all;

static void copy_parts_task(void *ctx, int ith, int nth) {
    const copy_all *c = ctx;
    for (int i = ith; i < c->n; i += nth) memcpy(c->parts[i].dst, c->parts[i].src, c->parts[i].n);
}

ds_status ds_placement_copy_host(ds_model *m, int n_threads, uint64_t *bytes, ds_error *err) {
    *bytes = 0;
    if (m->host_copy) return DS_OK;
    int n = list_weights(m, NULL);
    weight_ref *w = malloc((size_t)n * sizeof *w);
    copy_part *parts = NULL;
    if (!w) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    list_weights(m, w);
    /* a tied output shares token_embd's copy when both stay on the host */
    const bool tied_host = m->output.data == m->token_embd.data && m->output.device == DS_DEV_CPU &&
                           m->token_embd.device == DS_DEV_CPU;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (w[i].t->device == DS_DEV_CPU && !(tied_host && w[i].t == &m->output))
            total += (tensor_bytes(w[i].t) + 63) & ~(size_t)63;
    ds_status st = DS_OK;
    const size_t huge = (size_t)2 << 20, len = (total + huge - 1) / huge * huge;
    uint8_t *buf = len ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : NULL;
    if (len && buf == MAP_FAILED) {
        st = ds_error_set(err, DS_ERR_OOM, "--no-mmap: cannot allocate %.2f GiB for the host-resident weights",
                          len / 1073741824.0);
        goto done;
    }
    if (len) (void)madvise(buf, len, MADV_HUGEPAGE); /* advice only: no THP, still correct */
    /* 64 MiB parts so the threads share the copy evenly */
    const size_t part = (size_t)64 << 20;
    int n_parts = 0;
    for (int i = 0; i < n; i++)
        if (w[i].t->device == DS_DEV_CPU) n_parts += (int)((tensor_bytes(w[i].t) + part - 1) / part);
    parts = malloc((size_t)(n_parts ? n_parts : 1) * sizeof *parts);
    if (!parts) {
        st = ds_error_set(err, DS_ERR_OOM, "out of memory");
        goto done;
    }
    size_t off = 0;
    int k = 0;
    const void *embd_old = m->token_embd.data;
    for (int i = 0; i < n; i++) {
        ds_tensor *t = w[i].t;
        if (t->device != DS_DEV_CPU) continue;
        if (tied_host && t == &m->output && t->data == embd_old) {
            t->data = m->token_embd.data; /* tied: already copied (token_embd comes first) */
            continue;
        }
        const size_t b = tensor_bytes(t);
        for (size_t o = 0; o < b; o += part)
            parts[k++] = (copy_part){ buf + off + o, (const uint8_t *)t->data + o, b - o < part ? b - o : part };
        t->data = buf + off;
        off += (b + 63) & ~(size_t)63;
    }
    copy_all all = { parts, k };
    ds_threadpool *tp = n_threads > 1 ? ds_threadpool_create(n_threads) : NULL;
    if (tp) {
        ds_threadpool_run(tp, copy_parts_task, &all);
        ds_threadpool_free(tp);
    } else {
        copy_parts_task(&all, 0, 1);
    }
    m->host_copy = buf;
    m->host_copy_bytes = len;
    *bytes = off;
done:
    free(parts);
    free(w);
    return st;
}
