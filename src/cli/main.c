/* main.c: `dsinfer SUBCOMMAND ...` dispatch and the top-level help. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } subcommand;

static const subcommand g_cmds[] = {
    { "run", ds_cmd_run, "generate text in the terminal (llama-cli)" },
    { "logits", ds_cmd_logits, "all-position logits of one prefill as float32" },
    { "tokenize", ds_cmd_tokenize, "text to token ids" },
    { "info", ds_cmd_info, "GGUF metadata, tensors, memory and bytes per decode step" },
    { "plan", ds_cmd_plan, "choose a placement for given GPU/host memory and predict tok/s" },
    { "synth", ds_cmd_synth, "write a DeepSeek-shaped GGUF with random valid weights" },
    { "bench", ds_cmd_bench, "prompt/generation speed table (llama-bench)" },
    { "serve", ds_cmd_serve, "OpenAI-compatible HTTP server (llama-server)" },
    { "soak", ds_cmd_soak, "load generator and stability gate for a running server" },
};

static void usage(FILE *f) {
    fprintf(f, "usage: dsinfer SUBCOMMAND [options]\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof g_cmds / sizeof *g_cmds; i++) fprintf(f, "  %-9s %s\n", g_cmds[i].name, g_cmds[i].help);
    fprintf(f, "\n'dsinfer SUBCOMMAND --help' shows its options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof g_cmds / sizeof *g_cmds; i++)
        if (!strcmp(argv[1], g_cmds[i].name)) return g_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dsinfer: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
