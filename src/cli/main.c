/* main.c: the dsinfer command dispatcher (placeholder until the CLI lands). */
#include <stdio.h>
int main(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "dsinfer: no subcommands yet\n"); return 2; }
