/* dsinfer.h: the public interface of libdsinfer, for programs that embed the
 * engine rather than run the `dsinfer` binary. One include gives:
 *   - ds_model_load / ds_model_free             (model/model.h)
 *   - ds_ctx_create / ds_ctx_decode / ds_ctx_free (engine/engine.h): batches of
 *     (token, position, sequence) rows, logits per row, KV per sequence
 *   - ds_tokenizer_*, ds_chat_*, ds_sampler_*     (text/text.h)
 *   - ds_status / ds_error                        (core/core.h)
 * A minimal generation loop: load, create a context, tokenize, decode the
 * prompt with logits on the last row, then sample / decode one token at a
 * time (src/cli/cmd_run.c is the reference use). Not stable ABI yet: link
 * statically against the same revision. */
#ifndef DSINFER_H
#define DSINFER_H

#include "engine/engine.h"
#include "text/text.h"

#define DSINFER_VERSION "0.1.0"

#endif
