/* test_cli.c: the command-line contracts other tools depend on, by running
 * the dsinfer binary (DSINFER_BIN): exit codes for bad input, the logits
 * file layout, tokenize's output line, info and run on the tiny model. */
#include "testutil.h"
#include "cases.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *bin(void) {
    const char *b = getenv("DSINFER_BIN");
    return b ? b : "build/dsinfer";
}

/* Runs a shell command line; returns its exit status (or -1). */
static int sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, bin(), a ? a : "", b ? b : "");
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

int main(void) {
    const char *model = ds_test_data("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf");
    char mdl[1024];
    snprintf(mdl, sizeof mdl, "%s", model);

    /* usage errors: one line, exit 2 */
    CHECK(sh("%s logits --bogus 2>/dev/null", NULL, NULL) == 2, "unknown flag");
    CHECK(sh("%s frobnicate 2>/dev/null", NULL, NULL) == 2, "unknown subcommand");
    CHECK(sh("%s info -m /nonexistent/x.gguf 2>/dev/null", NULL, NULL) == 2, "missing file");
    CHECK(sh("%s logits -m %s --tokens 1,x,3 -o /dev/null 2>/dev/null", mdl, NULL) == 2, "bad token list");
    CHECK(sh("%s run -m %s -p hi -t -3 2>/dev/null", mdl, NULL) == 2, "bad thread count");
    CHECK(sh("%s logits -m %s --tokens 1 -o /dev/null -ctk q9 2>/dev/null", mdl, NULL) == 2, "bad cache type");
    CHECK(sh("%s logits -m %s --tokens 99999 -o /dev/null 2>/dev/null", mdl, NULL) == 2, "token outside vocab");
    CHECK(sh("%s info -m %s --override-kv nokind 2>/dev/null", mdl, NULL) == 2, "bad --override-kv");
    /* placement flags: bad ones are usage errors naming the problem */
    CHECK(sh("%s info -m %s -ot '(exps=CPU' 2>&1 | grep -q 'bad regex'", mdl, NULL) == 0, "bad -ot regex");
    CHECK(sh("%s info -m %s -ot exps=GPU0 2>/dev/null", mdl, NULL) == 2, "unknown -ot device");
    CHECK(sh("%s info -m %s -ts 0,0 2>/dev/null", mdl, NULL) == 2, "bad -ts");
    /* info plans for GPUs the machine may lack: --cpu-moe with all layers up */
    CHECK(sh("%s info -m %s -ngl 99 --cpu-moe | grep -q 'routed experts of 3 MoE layers run on the CPU'", mdl, NULL) == 0,
          "info prints the plan");
    /* a GPU placement on a build or machine without one: a clear error, not a crash */
    CHECK(sh("%s logits -m %s --tokens 1 -o /dev/null -ngl 2 -ot exps=CUDA5 2>/dev/null", mdl, NULL) == 2,
          "-ot on an absent GPU");
    /* a file that is not GGUF: clear error, exit 1, no crash */
    CHECK(sh("%s info -m %s 2>/dev/null", ds_test_data("models/dsv3_tiny/cases.json"), NULL) == 1, "not a gguf");

    /* logits: [n][n_vocab] f32 of one prefill, equal to the library's */
    const char *out = ds_test_tmp("cli_logits.f32");
    CHECK(sh("%s logits -m %s --tokens 336,242,1011 -o %s -ctk f32 2>/dev/null", mdl, out) == 0, "logits");
    size_t len;
    float *got = ds_test_read_file(out, &len);
    ds_model *m;
    ds_error err = { 0 };
    ds_model_params mp = { .path = model };
    CHECK(ds_model_load(&mp, &m, &err) == DS_OK, "load");
    int32_t ids[3] = { 336, 242, 1011 };
    float *want = ds_test_prefill(m, "cpu", DS_TYPE_F32, 512, 0, ids, 3, NULL, NULL, NULL);
    CHECK(got && want && len == 3 * (size_t)m->hp.n_vocab * 4, "logits size %zu", len);
    if (got && want) CHECK(ds_test_rel_l2(got, want, 3 * (size_t)m->hp.n_vocab) < 1e-6, "cli logits differ");
    free(got);
    free(want);
    ds_model_free(m);

    /* tokenize --ids: one line of ids; the V3 override case from the fixtures */
    const char *tout = ds_test_tmp("cli_tok.txt");
    CHECK(sh("%s tokenize -m %s --ids --no-bos -p 'Hello world' > %s", ds_test_data("tokenizer/ggml-vocab-deepseek-llm.gguf"), tout) == 0,
          "tokenize");
    char *line = ds_test_read_file(tout, &len);
    CHECK(line && strcmp(line, "17464 1843\n") == 0, "tokenize output '%s'", line ? line : "(none)");
    free(line);

    /* run and info succeed on the tiny model */
    CHECK(sh("%s run -m %s -p 'Hello' -n 8 --seed 1 >/dev/null 2>&1", mdl, NULL) == 0, "run");
    CHECK(sh("%s run -m %s -p 'Hello' -n 8 --chat --chat-template deepseek3 >/dev/null 2>&1", mdl, NULL) == 0, "run --chat");
    CHECK(sh("%s info -m %s >/dev/null", mdl, NULL) == 0, "info");
    /* same seed, same text */
    const char *r1 = ds_test_tmp("run1.txt"), *r2 = ds_test_tmp("run2.txt");
    sh("%s run -m %s -p Hello -n 16 --seed 7 --temp 1 > %s 2>/dev/null", mdl, r1);
    sh("%s run -m %s -p Hello -n 16 --seed 7 --temp 1 > %s 2>/dev/null", mdl, r2);
    size_t l1, l2;
    char *a = ds_test_read_file(r1, &l1), *b = ds_test_read_file(r2, &l2);
    CHECK(a && b && l1 == l2 && memcmp(a, b, l1) == 0 && l1 > 1, "same seed, same text");
    free(a);
    free(b);
    return ds_test_finish("test_cli");
}
