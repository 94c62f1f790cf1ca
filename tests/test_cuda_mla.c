/* test_cuda_mla.c: the tensor-core MLA core (ds_cu_mla_tc, mla_tc.cu)
 * against the f32 kernel ds_cu_mla (attn.cu; test_cuda_blocks checks it
 * against ref) on random paged caches built here: f16 and bf16, head counts
 * 1..128, kv_lora 64..512, d_rope 16..64, pages of 16 and 64 tokens
 * scattered through the pool, batches that mix sequences and positions
 * (pos 0, rows crossing pages), contexts 1..32768, split-KV with a full, a
 * small and no workspace, huge and tiny queries, and a CUDA-graph replay.
 * Not a benchmark. Exits 77 ("skipped") without a CUDA device. */
#include "testutil.h"
#include "backend/cuda/attn.h"
#include "backend/cuda/mla_tc.h"
#include "core/core.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { KV_F16 = 1, KV_BF16 = 30 };
enum { N_LAYER = 2, LAYER = 1, D_NOPE = 32 }; /* layer 1: the layer offset counts */

typedef enum { ROWS_DECODE, ROWS_PREFILL } rows_kind;
typedef enum { WORK_FULL, WORK_SMALL, WORK_NONE } work_kind;

typedef struct mla_case {
    int kv_type;      /* KV_F16 or KV_BF16 */
    int n_head, kv_lora, d_rope, block_tokens;
    int n;            /* batch rows */
    int ctx;          /* tokens of the longest sequence */
    rows_kind rows;   /* DECODE: row r alone in sequence r, positions spread over [0, ctx);
                         PREFILL: a chunk of consecutive positions ending at ctx - 1 of
                         sequence 0, then positions 0, 1, .. of sequence 1 */
    double q_mult;    /* query scale; kq_scale is divided by it, so the scores keep their spread */
    work_kind work;   /* FULL: ds_cu_mla_tc_work_floats; SMALL: room for 3 splits; NONE */
    int graph;        /* also run ds_cu_mla_tc captured in a CUDA graph */
} mla_case;

/* Score spread. Keys are uniform in [-1, 1] (variance 1/3), query entries
 * uniform in [-A, A]; a score kq * q.k then has standard deviation
 * sigma = kq * A * sqrt(D) / 3. We pick A for sigma = 2.5: peaked enough
 * that a few dozen tokens carry the softmax even at 32768 tokens (a flat
 * softmax over random values averages the output towards 0, and an error
 * relative to a vanishing output says little), broad enough that many
 * tokens count at every context. */
#define SIGMA 2.5
#define KQ_SCALE 0.07216878f /* 1/sqrt(192), V3's d_qk without YaRN */

/* Tolerance. The tensor-core kernel differs from the f32 one by two
 * roundings to the mma type, unit roundoff u = 2^-11 (f16) or 2^-8 (bf16):
 *  - the query: each score moves by kq * sum_d q_d k_d delta_d, standard
 *    deviation about sigma * u / sqrt(3) across tokens; the output, a
 *    p-weighted mean of values, moves by Cov_p(v, dscore): relative to
 *    |o| about sigma * u / sqrt(3) = 1.4u when a few tokens dominate;
 *  - the probabilities: o = sum p~ v / sum p~ with the same rounded p~ in
 *    both sums, so o stays a weighted mean; the weights' relative errors
 *    (<= u, rms ~u/sqrt(3)) move it by <= u/sqrt(3) = 0.6u of |o|.
 * Together ~1.5u rms, f32 accumulation order (2^-24 per add) is noise.
 * Bound: 4u on the whole output's relative L2 error. A single (row, head)
 * is a ratio of a few random terms (two dominant tokens: the error is
 * p1 p2 (ds1 - ds2)(v1 - v2), a Gaussian in ds); across up to 8192 heads
 * the worst sits ~4 standard deviations out, so 12u for the worst head. */
static double unit_roundoff(int kv_type) { return kv_type == KV_F16 ? 1.0 / 2048 : 1.0 / 256; }

static uint16_t to_half(int kv_type, float x) { return kv_type == KV_F16 ? ds_f32_to_fp16(x) : ds_f32_to_bf16(x); }

/* The batch rows and the block tables of one case (host side). */
typedef struct layout {
    int n_seq, max_blocks;
    int64_t n_blocks;  /* pool blocks per layer */
    int32_t *pos;      /* [n] */
    int32_t *row_tab;  /* [n] */
    int32_t *tables;   /* [n_seq][max_blocks], -1 past a sequence's blocks */
} layout;

static void layout_free(layout *l) {
    free(l->pos);
    free(l->row_tab);
    free(l->tables);
}

/* Positions and sequences per the case; each sequence gets the blocks for
 * its longest row, drawn from a shuffled pool (so neighbouring pages of a
 * sequence are far apart), with a few pool blocks left unused. */
static void layout_make(const mla_case *c, layout *l, uint64_t *st) {
    const int n = c->n, bt = c->block_tokens;
    l->pos = malloc(n * sizeof(int32_t));
    l->row_tab = malloc(n * sizeof(int32_t));
    int *len = calloc(n + 1, sizeof(int)); /* tokens per sequence */
    if (c->rows == ROWS_DECODE) {
        l->n_seq = n;
        for (int r = 0; r < n; r++) {
            int p = c->ctx - 1 - (int)((int64_t)r * 977 % c->ctx); /* spread, row 0 the longest */
            if (r == n - 1 && n > 1) p = 0;
            l->pos[r] = p;
            l->row_tab[r] = r;
            len[r] = p + 1;
        }
    } else {
        const int n0 = (n + 1) / 2, n1 = n - n0;
        l->n_seq = n1 > 0 ? 2 : 1;
        for (int r = 0; r < n0; r++) {
            int p = c->ctx - n0 + r;
            l->pos[r] = p < 0 ? 0 : p;
            l->row_tab[r] = 0;
        }
        for (int r = 0; r < n1; r++) {
            l->pos[n0 + r] = r;
            l->row_tab[n0 + r] = 1;
        }
        len[0] = c->ctx;
        len[1] = n1;
    }
    int64_t total = 0;
    l->max_blocks = 1;
    for (int s = 0; s < l->n_seq; s++) {
        const int nb = (len[s] + bt - 1) / bt;
        total += nb;
        if (nb > l->max_blocks) l->max_blocks = nb;
    }
    l->n_blocks = total + 3;
    int32_t *perm = malloc(l->n_blocks * sizeof(int32_t));
    for (int64_t i = 0; i < l->n_blocks; i++) perm[i] = (int32_t)i;
    for (int64_t i = l->n_blocks - 1; i > 0; i--) {
        const int64_t j = (int64_t)(ds_test_rand(st) % (uint64_t)(i + 1));
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    l->tables = malloc((size_t)l->n_seq * l->max_blocks * sizeof(int32_t));
    int64_t k = 0;
    for (int s = 0; s < l->n_seq; s++) {
        const int nb = (len[s] + bt - 1) / bt;
        for (int b = 0; b < l->max_blocks; b++) l->tables[(size_t)s * l->max_blocks + b] = b < nb ? perm[k++] : -1;
    }
    free(perm);
    free(len);
}

/* Device copies of everything one case reads and writes. */
typedef struct dev_bufs {
    void *pool;
    int32_t *tables, *row_tab, *pos;
    float *qabs, *q, *o_ref, *o_tc, *work;
} dev_bufs;

static void dev_free(dev_bufs *d) {
    cudaFree(d->pool);
    cudaFree(d->tables);
    cudaFree(d->row_tab);
    cudaFree(d->pos);
    cudaFree(d->qabs);
    cudaFree(d->q);
    cudaFree(d->o_ref);
    cudaFree(d->o_tc);
    cudaFree(d->work);
}

static int upload(void **dst, const void *src, size_t bytes) {
    return cudaMalloc(dst, bytes) == cudaSuccess && cudaMemcpy(*dst, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess;
}

/* Relative L2 error of the whole output and of the worst (row, head). */
static void compare(const float *tc, const float *ref, int n_rh, int L, double *whole, double *worst, int *bad) {
    double num = 0, den = 0;
    *worst = 0;
    *bad = 0;
    for (int i = 0; i < n_rh; i++) {
        double a = 0, b = 0;
        for (int d = 0; d < L; d++) {
            const double x = tc[(size_t)i * L + d], y = ref[(size_t)i * L + d];
            if (!isfinite(x)) (*bad)++;
            a += (x - y) * (x - y);
            b += y * y;
        }
        num += a;
        den += b;
        const double e = b > 0 ? sqrt(a / b) : sqrt(a);
        if (e > *worst) *worst = e; /* NaN is counted in *bad */
    }
    *whole = den > 0 ? sqrt(num / den) : sqrt(num);
}

static void run_case(const mla_case *c, uint64_t seed) {
    const int H = c->n_head, L = c->kv_lora, R = c->d_rope, D = L + R, DQK = D_NOPE + R, n = c->n;
    char name[160];
    snprintf(name, sizeof name, "%s H %3d lora %3d rope %2d bt %2d n %2d ctx %5d %s q*%g work %s%s",
             c->kv_type == KV_F16 ? "f16 " : "bf16", H, L, R, c->block_tokens, n, c->ctx,
             c->rows == ROWS_DECODE ? "decode " : "prefill", c->q_mult,
             c->work == WORK_FULL ? "full" : c->work == WORK_SMALL ? "small" : "none", c->graph ? " graph" : "");
    CHECK(ds_cu_mla_tc_supported(c->kv_type, L, R, H), "%s: not supported", name);

    uint64_t st = seed;
    layout lay;
    layout_make(c, &lay, &st);
    const size_t pool_elems = (size_t)N_LAYER * lay.n_blocks * c->block_tokens * D;
    const size_t n_rh = (size_t)n * H;
    uint16_t *pool = malloc(pool_elems * sizeof(uint16_t));
    float *qabs = malloc(n_rh * L * sizeof(float)), *q = malloc(n_rh * DQK * sizeof(float));
    float *o_ref = malloc(n_rh * L * sizeof(float)), *o_tc = malloc(n_rh * L * sizeof(float));
    for (size_t i = 0; i < pool_elems; i++) pool[i] = to_half(c->kv_type, ds_test_randf(&st));
    const double amp = SIGMA * 3.0 / (KQ_SCALE * sqrt((double)D)) * c->q_mult;
    const float kq = (float)(KQ_SCALE / c->q_mult);
    for (size_t i = 0; i < n_rh * L; i++) qabs[i] = (float)(amp * ds_test_randf(&st));
    for (size_t i = 0; i < n_rh; i++)
        for (int d = 0; d < DQK; d++) /* q_nope is never read: NaN would show */
            q[i * DQK + d] = d < D_NOPE ? NAN : (float)(amp * ds_test_randf(&st));

    size_t work_floats = ds_cu_mla_tc_work_floats(n, H, L, (int64_t)lay.max_blocks * c->block_tokens);
    if (c->work == WORK_SMALL && work_floats > 0) work_floats = (size_t)3 * n * H * (L + 2);
    if (c->work == WORK_NONE) work_floats = 0;

    dev_bufs d = { 0 };
    bool ok = upload(&d.pool, pool, pool_elems * sizeof(uint16_t)) &&
              upload((void **)&d.tables, lay.tables, (size_t)lay.n_seq * lay.max_blocks * sizeof(int32_t)) &&
              upload((void **)&d.row_tab, lay.row_tab, n * sizeof(int32_t)) &&
              upload((void **)&d.pos, lay.pos, n * sizeof(int32_t)) &&
              upload((void **)&d.qabs, qabs, n_rh * L * sizeof(float)) &&
              upload((void **)&d.q, q, n_rh * DQK * sizeof(float)) &&
              cudaMalloc((void **)&d.o_ref, n_rh * L * sizeof(float)) == cudaSuccess &&
              cudaMalloc((void **)&d.o_tc, n_rh * L * sizeof(float)) == cudaSuccess &&
              (work_floats == 0 || cudaMalloc((void **)&d.work, work_floats * sizeof(float)) == cudaSuccess) &&
              cudaMemset(d.o_tc, 0xFF, n_rh * L * sizeof(float)) == cudaSuccess && /* NaN: unwritten shows */
              (work_floats == 0 || cudaMemset(d.work, 0xFF, work_floats * sizeof(float)) == cudaSuccess);
    CHECK(ok, "%s: cuda alloc/copy", name);
    if (ok) {
        const ds_cu_kv_view kv = { .pool = d.pool, .kv_type = c->kv_type, .row_dim = D,
                                   .block_tokens = c->block_tokens, .n_blocks = lay.n_blocks, .tables = d.tables,
                                   .max_blocks = lay.max_blocks, .row_tab = d.row_tab, .pos = d.pos };
        int rc = ds_cu_mla(d.qabs, d.q, n, H, DQK, D_NOPE, L, R, kq, &kv, LAYER, d.o_ref, 0);
        CHECK(rc == 0, "%s: ds_cu_mla rc %d", name, rc);
        if (c->graph) { /* as the backend does: thread-local capture on its own stream */
            cudaStream_t s;
            cudaGraph_t g = NULL;
            cudaGraphExec_t ge = NULL;
            ok = cudaStreamCreate(&s) == cudaSuccess &&
                 cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
            rc = ok ? ds_cu_mla_tc(d.qabs, d.q, n, H, DQK, D_NOPE, L, R, kq, &kv, LAYER, d.o_tc, d.work, work_floats, s)
                    : -1;
            ok = ok && cudaStreamEndCapture(s, &g) == cudaSuccess && rc == 0 &&
                 cudaGraphInstantiate(&ge, g, 0) == cudaSuccess && cudaGraphLaunch(ge, s) == cudaSuccess &&
                 cudaGraphLaunch(ge, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess; /* twice */
            CHECK(ok, "%s: graph capture/replay (rc %d)", name, rc);
            if (ge) cudaGraphExecDestroy(ge);
            if (g) cudaGraphDestroy(g);
            cudaStreamDestroy(s);
        } else {
            rc = ds_cu_mla_tc(d.qabs, d.q, n, H, DQK, D_NOPE, L, R, kq, &kv, LAYER, d.o_tc, d.work, work_floats, 0);
            CHECK(rc == 0, "%s: ds_cu_mla_tc rc %d", name, rc);
        }
        const cudaError_t e = cudaDeviceSynchronize();
        CHECK(e == cudaSuccess, "%s: %s", name, cudaGetErrorString(e));
        const size_t bytes = n_rh * L * sizeof(float);
        ok = e == cudaSuccess && cudaMemcpy(o_ref, d.o_ref, bytes, cudaMemcpyDeviceToHost) == cudaSuccess &&
             cudaMemcpy(o_tc, d.o_tc, bytes, cudaMemcpyDeviceToHost) == cudaSuccess;
        CHECK(ok, "%s: copy back", name);
    }
    if (ok) {
        double whole, worst;
        int bad;
        compare(o_tc, o_ref, (int)n_rh, L, &whole, &worst, &bad);
        const double u = unit_roundoff(c->kv_type);
        printf("%s: work %9zu floats, rel L2 %.2e (%.2fu), worst head %.2e (%.2fu)\n", name, work_floats, whole,
               whole / u, worst, worst / u);
        CHECK(bad == 0, "%s: %d non-finite outputs", name, bad);
        CHECK(whole <= 4 * u, "%s: rel L2 %.3e > 4u", name, whole);
        CHECK(worst <= 12 * u, "%s: worst head %.3e > 12u", name, worst);
    }
    dev_free(&d);
    layout_free(&lay);
    free(pool); free(qabs); free(q); free(o_ref); free(o_tc);
}

static void test_supported(void) {
    CHECK(ds_cu_mla_tc_supported(KV_F16, 512, 64, 128), "V3 f16");
    CHECK(ds_cu_mla_tc_supported(KV_BF16, 512, 64, 128), "V3 bf16");
    CHECK(!ds_cu_mla_tc_supported(0, 512, 64, 128), "f32 cache is ds_cu_mla's");
    CHECK(!ds_cu_mla_tc_supported(KV_F16, 96, 64, 128), "kv_lora not a multiple of 64");
    CHECK(!ds_cu_mla_tc_supported(KV_F16, 1024, 64, 128), "kv_lora over 512");
    CHECK(!ds_cu_mla_tc_supported(KV_F16, 512, 8, 128), "d_rope not a multiple of 16");
    CHECK(!ds_cu_mla_tc_supported(KV_F16, 512, 128, 128), "d_rope over 64");
    CHECK(!ds_cu_mla_tc_supported(KV_F16, 512, 64, 0), "no heads");
    /* refused at the API edge, before any pointer is touched */
    const ds_cu_kv_view f32 = { .kv_type = 0, .row_dim = 576, .block_tokens = 64 };
    CHECK(ds_cu_mla_tc(NULL, NULL, 1, 128, 192, 128, 512, 64, 1.f, &f32, 0, NULL, NULL, 0, 0) != 0, "f32 refused");
    const ds_cu_kv_view bad_dim = { .kv_type = KV_F16, .row_dim = 512, .block_tokens = 64 };
    CHECK(ds_cu_mla_tc(NULL, NULL, 1, 128, 192, 128, 512, 64, 1.f, &bad_dim, 0, NULL, NULL, 0, 0) != 0,
          "row_dim != kv_lora + d_rope refused");
    CHECK(ds_cu_mla_tc(NULL, NULL, 0, 128, 192, 128, 512, 64, 1.f, &f32, 0, NULL, NULL, 0, 0) == 0, "no rows: nothing");
}

int main(void) {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    test_supported();
    const int F = KV_F16, B = KV_BF16;
    const rows_kind DEC = ROWS_DECODE, PRE = ROWS_PREFILL;
    const mla_case cases[] = {
        /* type  H   lora rope bt  n   ctx    rows q    work        graph */
        { F,    1,   64, 16, 16,  1,     1, DEC, 1,    WORK_FULL,  0 }, /* one token, one head */
        { F,    4,  256, 32,  4,  1,    19, DEC, 1,    WORK_FULL,  0 }, /* 4-token pages (test_cuda_blocks) */
        { F,    8,   64, 16,  1,  7,   300, DEC, 1,    WORK_FULL,  0 }, /* 1-token pages */
        { B,    4,  256, 32,  4,  2,   300, PRE, 1,    WORK_FULL,  0 },
        { F,    3,   64, 16, 16,  2,    33, DEC, 1,    WORK_FULL,  0 }, /* pos 32 and pos 0 */
        { F,    3,  512, 64, 16, 64,    33, PRE, 1,    WORK_FULL,  0 }, /* two sequences, pages crossed */
        { F,   16,  512, 64, 64,  7,  1000, PRE, 1,    WORK_FULL,  0 },
        { F,   16,   64, 64, 64,  7,  4100, DEC, 1,    WORK_FULL,  0 }, /* split-KV, 7 lengths + pos 0 */
        { F,   16,   64, 16, 16, 64,  1000, DEC, 1,    WORK_FULL,  0 }, /* 64 sequences */
        { F,   32,  512, 16, 16,  7,  1000, DEC, 1,    WORK_FULL,  0 }, /* 32-head tiles */
        { F,   40,  128, 48, 16,  2,  1000, DEC, 1,    WORK_FULL,  0 }, /* odd k-steps, masked heads */
        { F,  128,  512, 64, 16,  1,  4100, DEC, 1,    WORK_FULL,  0 },
        { F,   72,  512, 64, 16,  3,  1000, DEC, 1,    WORK_FULL,  0 }, /* 64-head tiles, 56 masked */
        { F,   72,  512, 64, 16,  1,  1500, DEC, 1,    WORK_FULL,  0 }, /* the same split, in the quick set */
        { B,   72,  512, 64, 16,  5,   300, PRE, 1,    WORK_FULL,  0 },
        { F,   72,  512, 32, 16,  3,  1000, DEC, 1,    WORK_FULL,  0 }, /* d_rope 32: not the wgmma kernel's */
        { F,  128,  512, 64, 64,  2,  4100, DEC, 1,    WORK_FULL,  1 },
        { F,  128,  512, 64, 64, 64,  1000, PRE, 1,    WORK_FULL,  0 },
        { F,  128,  512, 64, 64,  1, 32768, DEC, 1,    WORK_FULL,  1 }, /* long decode */
        { F,  128,  512, 64, 16,  1,  4100, DEC, 1,    WORK_SMALL, 0 }, /* 3 splits only */
        { F,  128,  512, 64, 16,  2,  4100, DEC, 1,    WORK_NONE,  0 }, /* no split */
        { F,  128,  512, 64, 64,  2,  1000, DEC, 1e5,  WORK_FULL,  0 }, /* |q| ~ 1e5: past f16 range */
        { F,  128,  512, 64, 64,  7,  1000, PRE, 1e-6, WORK_FULL,  0 }, /* |q| ~ 1e-6: f16 subnormals */
        { B,    1,   64, 16, 16,  1,     1, DEC, 1,    WORK_FULL,  0 },
        { B,    3,  512, 64, 16, 64,    33, PRE, 1,    WORK_FULL,  0 },
        { B,   16,   64, 64, 64,  7,  4100, DEC, 1,    WORK_FULL,  0 },
        { B,   40,  128, 48, 16,  2,  1000, DEC, 1,    WORK_FULL,  0 },
        { B,  128,  512, 64, 16,  2,  4100, DEC, 1,    WORK_FULL,  1 },
        { B,  128,  512, 64, 64, 64,  1000, PRE, 1,    WORK_FULL,  0 },
        { B,  128,  512, 64, 64,  1, 32768, DEC, 1,    WORK_FULL,  0 },
        { B,  128,  512, 64, 64,  1,  4100, DEC, 1,    WORK_SMALL, 0 },
        { B,  128,  512, 64, 64,  2,  1000, DEC, 1e5,  WORK_FULL,  0 },
    };
    const bool quick = getenv("DS_CUDA_TEST_QUICK") != NULL; /* under compute-sanitizer: the small cases */
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (!quick || (int64_t)cases[i].ctx * cases[i].n_head * cases[i].n <= 1000 * 16 * 7)
            run_case(&cases[i], 1000 + i);
    return ds_test_finish("test_cuda_mla");
}
