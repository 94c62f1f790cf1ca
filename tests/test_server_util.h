/* test_server_util.h: what the live server tests share — a minimal HTTP/1.1
 * client over a blocking socket (Connection: close, chunked bodies decoded),
 * a free local port, and starting/stopping `dsinfer serve` (DSINFER_BIN)
 * as a child process. Header-only (static functions) so the tests need no
 * extra build rules. Not a general HTTP client. */
#ifndef DS_TEST_SERVER_UTIL_H
#define DS_TEST_SERVER_UTIL_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"

typedef struct ds_http_resp {
    int status;
    char *body; /* NUL-terminated, chunked encoding removed */
    size_t len;
} ds_http_resp;

static void ds_http_resp_free(ds_http_resp *r) {
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

static int ds_http_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = { .tv_sec = 120 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool ds_http_write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Sends a request and returns the socket (the caller reads or closes). */
static int ds_http_send_only(int port, const char *method, const char *path, const char *hdrs, const char *body,
                             size_t len) {
    int fd = ds_http_connect(port);
    if (fd < 0) return -1;
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, hdrs ? hdrs : "", body ? len : 0);
    if (!ds_http_write_all(fd, head, (size_t)n) || (body && len && !ds_http_write_all(fd, body, len))) {
        /* the server may answer (413) before reading everything */
    }
    return fd;
}

static void ds_http_dechunk(ds_http_resp *r) {
    char *in = r->body, *out = r->body;
    size_t left = r->len, w = 0;
    while (left) {
        char *end;
        unsigned long sz = strtoul(in, &end, 16);
        char *crlf = strstr(in, "\r\n");
        if (!crlf || end > crlf) break;
        size_t hdr = (size_t)(crlf - in) + 2;
        if (sz == 0 || hdr + sz > left) break;
        memmove(out + w, in + hdr, sz);
        w += sz;
        in += hdr + sz + 2;
        left = left > hdr + sz + 2 ? left - hdr - sz - 2 : 0;
    }
    r->len = w;
    r->body[w] = 0;
}

/* Full request; returns the status or -1. Body read until EOF. */
static int ds_http_request(int port, const char *method, const char *path, const char *hdrs, const char *body,
                           size_t len, ds_http_resp *r) {
    memset(r, 0, sizeof *r);
    r->status = -1;
    int fd = ds_http_send_only(port, method, path, hdrs, body, len);
    if (fd < 0) return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t k = recv(fd, buf + n, cap - n - 1, 0);
        if (k <= 0) break;
        n += (size_t)k;
    }
    close(fd);
    buf[n] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) || !sep) {
        free(buf);
        return -1;
    }
    r->status = atoi(buf + 9);
    *sep = 0;
    bool chunked = strcasestr(buf, "transfer-encoding: chunked") != NULL;
    size_t blen = n - (size_t)(sep + 4 - buf);
    r->body = malloc(blen + 1);
    memcpy(r->body, sep + 4, blen);
    r->body[blen] = 0;
    r->len = blen;
    free(buf);
    if (chunked) ds_http_dechunk(r);
    return r->status;
}

static int ds_test_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &l)) {
        if (fd >= 0) close(fd);
        return 18000 + (int)(getpid() % 1000);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts `dsinfer serve -m model --port port args...` with stderr in
 * DS_TEST_TMP/logname and waits (up to 60 s) for /health 200. */
static pid_t ds_test_server_start(const char *model, int port, const char *const *args, const char *logname) {
    const char *bin = getenv("DSINFER_BIN");
    if (!bin) return -1;
    char ports[16], logpath[1024];
    snprintf(ports, sizeof ports, "%d", port);
    const char *tmp = getenv("DS_TEST_TMP");
    snprintf(logpath, sizeof logpath, "%s/%s", tmp ? tmp : "/tmp", logname);
    const char *argv[64] = { bin, "serve", "-m", model, "--host", "127.0.0.1", "--port", ports };
    int n = 8;
    for (int i = 0; args && args[i] && n < 62; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        /* a test that crashes must not leave its server running */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    double t0 = ds_time_s();
    while (ds_time_s() - t0 < 60) {
        ds_http_resp r;
        int st = ds_http_request(port, "GET", "/health", "", NULL, 0, &r);
        ds_http_resp_free(&r);
        if (st == 200) return pid;
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid) {
            fprintf(stderr, "server exited during start; see %s\n", logpath);
            return -1;
        }
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* SIGTERM and wait up to 40 s; returns the exit status (-1: killed). */
static int ds_test_server_stop(pid_t pid) {
    kill(pid, SIGTERM);
    double t0 = ds_time_s();
    while (ds_time_s() - t0 < 40) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

#endif
