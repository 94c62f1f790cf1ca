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

/* CUDA backends made after this call: ds_test_cuda_f32() runs every product
 * on the f32 GEMV and the attention core on the scalar f32 kernel (for the
 * tight bounds); ds_test_cuda_tc(r) the tensor-core GEMM from r rows on and
 * the tensor-core MLA core (f16/bf16 caches); ds_test_cuda_default() the
 * backend's own choice. Environment variables, read at backend creation. */
void ds_test_cuda_f32(void);
void ds_test_cuda_tc(int gemm_min_rows);
void ds_test_cuda_default(void);

#endif
