/* no_server.c: `serve` and `soak` in a build configured with
 * -DDSINFER_SERVER=OFF (e.g. a GPU host without the HTTP libraries). */
#include "cli.h"

#include <stdio.h>

static int no_server(const char *cmd) {
    fprintf(stderr,
            "dsinfer %s: this build has no server; install libmicrohttpd-dev libjansson-dev "
            "libcurl4-openssl-dev and configure with -DDSINFER_SERVER=ON\n", cmd);
    return 2;
}

int ds_cmd_serve(int argc, char **argv) { (void)argc; (void)argv; return no_server("serve"); }
int ds_cmd_soak(int argc, char **argv) { (void)argc; (void)argv; return no_server("soak"); }
