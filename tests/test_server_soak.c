/* test_server_soak.c: the stability gate — `dsinfer soak` at concurrency 8
 * against `dsinfer serve` on the tiny model for DS_SOAK_SECONDS (default
 * 60): no request may fail and the server's RSS may not grow more than 1%
 * after warm-up (soak's own exit status says both). Not a speed test. */
#define _GNU_SOURCE /* strcasestr in test_server_util.h */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "test_server_util.h"

/* Under AddressSanitizer RSS is not a leak signal: freed blocks sit in
 * ASan's quarantine (up to 256 MB) and redzones inflate every allocation,
 * so RSS climbs for minutes by design. There the gate keeps "0 errors" and
 * leaves leaks to LeakSanitizer, which checks the server when it exits
 * (ds_test_server_stop requires exit status 0). */
#if defined(__SANITIZE_ADDRESS__)
#define DS_SOAK_RSS_LIMIT "1000000"
#else
#define DS_SOAK_RSS_LIMIT "1"
#endif

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const char *bin = getenv("DSINFER_BIN");
    if (!bin) {
        fprintf(stderr, "test_server_soak: SKIP: DSINFER_BIN not set\n");
        return 0;
    }
    const char *secs = getenv("DS_SOAK_SECONDS") ? getenv("DS_SOAK_SECONDS") : "60";
    char model[1024];
    snprintf(model, sizeof model, "%s", ds_test_data("models/dsv3_tiny/dsv3_tiny-f16-mla.gguf"));
    int port = ds_test_free_port();
    const char *args[] = { "-c", "1024", "-np", "8", "-t", "1", NULL };
    pid_t pid = ds_test_server_start(model, port, args, "serve_soak.log");
    CHECK(pid > 0, "server started");
    if (pid <= 0) return ds_test_finish("test_server_soak");
    char cmd[4096];
    /* warm-up: a sixth of the run, so allocator arenas and thread stacks
     * of all 8 connections exist before the RSS baseline is taken */
    snprintf(cmd, sizeof cmd,
             "'%s' soak --url http://127.0.0.1:%d --duration %s --concurrency 8 --stream-ratio 0.5 --max-tokens 32 "
             "--pid %d --warmup %g --sample-interval 2 --max-rss-growth %s --report '%s'",
             bin, port, secs, (int)pid, atof(secs) / 6, DS_SOAK_RSS_LIMIT, ds_test_tmp("soak_report.json"));
    int rc = system(cmd);
    CHECK(rc == 0, "soak: 0 errors and RSS growth < 1%% after warm-up (status %d, report %s)", rc,
          ds_test_tmp("soak_report.json"));
    CHECK(ds_test_server_stop(pid) == 0, "server exits 0 on SIGTERM");
    return ds_test_finish("test_server_soak");
}
