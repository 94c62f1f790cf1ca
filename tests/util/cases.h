/* cases.h: reads the token cases of a fixture's cases.json and runs a
 * prefill through the engine (shared by the model tests). */
#ifndef DS_TEST_CASES_H
#define DS_TEST_CASES_H

#include "engine/engine.h"

/* Loads tests/data/<rel>; NULL (and a failed check naming the file) on error. */
ds_model *ds_test_load_model(const char *rel);

/* Reads the int array after "name" in cases.json; returns count (<= cap) or -1. */
int ds_test_case_tokens(const char *json_path, const char *name, int32_t *out, int cap);
/* One prefill of ids[n] on a fresh context (device "cuda/ref": the model's
 * placement with "ref" as the GPU backend); logits [n][n_vocab] (malloc'd,
 * caller frees) or NULL on error (printed). record/force: routing capture. */
float *ds_test_prefill(const ds_model *m, const char *device, ds_type kv, int ubatch, int threads,
                       const int32_t *ids, int n, int32_t *record, const int32_t *force, float *margins);

/* The same tokens fed one per call on a fresh context (the decode path):
 * logits [n][n_vocab] (malloc'd, caller frees) or NULL on error (printed).
 * kv_block 0 = the default block size. */
float *ds_test_decode_steps(const ds_model *m, const char *device, ds_type kv, int kv_block, int threads,
                            const int32_t *ids, int n);

/* The same with the context's parameters as given. */
float *ds_test_decode_steps_p(const ds_model *m, const ds_ctx_params *p, const int32_t *ids, int n);

/* ... with each step's experts pinned to route ([n_layer][n][n_expert_used],
 * a prefill's record; NULL: chosen freely). Pinning needs the blocks path
 * (DSINFER_CUDA_FORWARD=0 for the CUDA backend). */
float *ds_test_decode_steps_pinned(const ds_model *m, const ds_ctx_params *p, const int32_t *ids, int n,
                                   const int32_t *route);

/* Greedy generation on a fresh context made with p: a prefill of ids[n],
 * then `steps` tokens, each ds_argmax_f32 of the last logits, fed back one
 * per call. out[steps] gets the ids and logits[steps][n_vocab] the logits
 * each pick was made from. p->n_ctx must hold n + steps. 0, or -1 on error
 * (printed). */
int ds_test_greedy(const ds_model *m, const ds_ctx_params *p, const int32_t *ids, int n, int steps, int32_t *out,
                   float *logits);

/* Two greedy runs of the same prompt side by side (a: the oracle):
 * first_diff is the first step whose ids differ (steps if none); at it,
 * margin is a's logit of its pick minus a's logit of b's pick and max_diff
 * the largest |a - b| logit difference there (a parting always has
 * margin <= 2 max_diff: the numbers say how near the tie was); rel_median and
 * rel_max are the per-step rel L2 distances of b's logits from a's over the
 * steps up to first_diff (included when it exists). */
typedef struct ds_test_greedy_cmp {
    int first_diff;
    double margin, max_diff, rel_median, rel_max;
} ds_test_greedy_cmp;
ds_test_greedy_cmp ds_test_greedy_compare(const int32_t *a, const float *la, const int32_t *b, const float *lb,
                                          int steps, size_t n_vocab);

/* Greedy runs of ids[n] on device a (the oracle) and device b (default
 * parameters, 2 threads, routing not pinned), `steps` tokens each, printed
 * under `label` with where they part and a's margin there against the
 * largest logit difference, and checked: the median step's logits up to
 * the parting stay within rel L2 `bound` of a's (a routing flip moves a
 * few steps, a wrong kernel every one). */
void ds_test_greedy_pair(const ds_model *m, const char *label, const char *a, const char *b, const int32_t *ids,
                         int n, int steps, double bound);

/* CUDA backends made after this call: ds_test_cuda_f32() runs every product
 * on the f32 GEMV and the attention core on the scalar f32 kernel (for the
 * tight bounds); ds_test_cuda_tc(r) the tensor-core GEMM from r rows on and
 * the tensor-core MLA core (f16/bf16 caches); ds_test_cuda_default() the
 * backend's own choice. Environment variables, read at backend creation. */
void ds_test_cuda_f32(void);
void ds_test_cuda_tc(int gemm_min_rows);
void ds_test_cuda_default(void);

#endif
