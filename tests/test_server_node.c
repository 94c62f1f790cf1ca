/* test_server_node.c: runs tests/node/openai.test.mjs (the official openai
 * npm package) against a live `dsinfer serve` on the tiny model. SKIPS with
 * a message (exit 0) when node or tests/node/node_modules/openai is missing:
 * install it with `npm install --prefix tests/node` (CI does; tests never
 * fetch anything themselves). Not the C-level checks: test_server_live.c. */
#define _GNU_SOURCE /* strcasestr in test_server_util.h */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_server_util.h"

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const char *data = getenv("DS_TEST_DATA");
    if (!getenv("DSINFER_BIN") || !data) {
        fprintf(stderr, "test_server_node: SKIP: DSINFER_BIN / DS_TEST_DATA not set\n");
        return 0;
    }
    /* tests/data -> tests/node */
    char dir[1024], mod[1100], script[1100];
    snprintf(dir, sizeof dir, "%s/../node", data);
    snprintf(mod, sizeof mod, "%s/node_modules/openai/package.json", dir);
    snprintf(script, sizeof script, "%s/openai.test.mjs", dir);
    struct stat sb;
    if (system("node --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_server_node: SKIP: node is not installed\n");
        return 0;
    }
    if (stat(mod, &sb) != 0) {
        fprintf(stderr, "test_server_node: SKIP: %s missing (run: npm install --prefix %s)\n", mod, dir);
        return 0;
    }
    char model[1024];
    snprintf(model, sizeof model, "%s", ds_test_data("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf"));
    int port = ds_test_free_port();
    const char *args[] = { "-c", "1024", "-np", "4", "-t", "1", "--api-key", "node-test-key", "--chat-template",
                           "deepseek3", NULL };
    pid_t pid = ds_test_server_start(model, port, args, "serve_node.log");
    CHECK(pid > 0, "server started");
    if (pid <= 0) return ds_test_finish("test_server_node");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && DSINFER_URL=http://127.0.0.1:%d DSINFER_API_KEY=node-test-key timeout 300 node --test "
             "openai.test.mjs",
             dir, port);
    int rc = system(cmd);
    CHECK(rc == 0, "node --test openai.test.mjs passed (status %d)", rc);
    CHECK(ds_test_server_stop(pid) == 0, "server exits 0 on SIGTERM");
    return ds_test_finish("test_server_node");
}
