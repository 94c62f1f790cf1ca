/* gguf_open.c: maps GGUF files read-only, finds and checks the sibling shards
 * of a gguf-split set, owns the handle and its tensor accessors.
 * Not the byte parser (gguf_read.c) nor key access (gguf_kv.c). */
#define _GNU_SOURCE
#include "gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* "-00001-of-00003.gguf": llama.cpp gguf-split names, 1-based, %05d. */
#define SPLIT_SUFFIX_LEN 20

static ds_gguf_shard *add_shard(ds_gguf *g, const char *path) {
    ds_gguf_shard *n = realloc(g->shards, (size_t)(g->n_shards + 1) * sizeof *n);
    if (!n) return NULL;
    g->shards = n;
    ds_gguf_shard *s = &n[g->n_shards];
    memset(s, 0, sizeof *s);
    s->path = strdup(path ? path : "(memory)");
    if (!s->path) return NULL;
    g->n_shards++;
    return s;
}

/* Maps path read-only into s. Empty files get an empty buffer (the parser
 * then reports the missing magic) since mmap cannot map 0 bytes. */
static ds_status map_file(const char *path, ds_gguf_shard *s, ds_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ds_error_set(err, errno == ENOENT ? DS_ERR_NOT_FOUND : DS_ERR_IO,
                            "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return ds_error_set(err, DS_ERR_IO, "%s: not a regular file%s%s", path,
                            e ? ": " : "", e ? strerror(e) : "");
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return ds_error_set(err, DS_ERR_IO, "%s: file too large to map", path);
    }
    s->len = (size_t)st.st_size;
    if (s->len == 0) {
        close(fd);
        s->buf = (const uint8_t *)"";
        return DS_OK;
    }
    void *p = mmap(NULL, s->len, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return ds_error_set(err, DS_ERR_IO, "%s: mmap of %zu bytes failed: %s", path, s->len,
                            strerror(e));
    s->map = p;
    s->buf = p;
    return DS_OK;
}

/* Splits "<prefix>-NNNNN-of-MMMMM.gguf" into prefix length, no and count;
 * false if path does not follow the naming. */
static bool split_name(const char *path, size_t *prefix_len, unsigned *no, unsigned *count) {
    size_t n = strlen(path);
    if (n < SPLIT_SUFFIX_LEN) return false;
    const char *s = path + n - SPLIT_SUFFIX_LEN;
    unsigned a = 0, b = 0;
    if (s[0] != '-' || memcmp(s + 6, "-of-", 4) != 0 || memcmp(s + 15, ".gguf", 5) != 0)
        return false;
    for (int i = 0; i < 5; i++) {
        if (s[1 + i] < '0' || s[1 + i] > '9' || s[10 + i] < '0' || s[10 + i] > '9') return false;
        a = a * 10 + (unsigned)(s[1 + i] - '0');
        b = b * 10 + (unsigned)(s[10 + i] - '0');
    }
    *prefix_len = n - SPLIT_SUFFIX_LEN;
    *no = a;
    *count = b;
    return true;
}

/* The split.* checks that need only the first shard. */
static ds_status check_first(const ds_gguf *g, const ds_gguf_split *sp, ds_error *err) {
    const char *path = g->shards[0].path;
    if (!sp->has_count) return DS_OK;
    unsigned no = sp->has_no ? sp->no : 0;
    if (no != 0) {
        size_t pl;
        unsigned a, b;
        if (split_name(path, &pl, &a, &b))
            return ds_error_set(err, DS_ERR_INVALID_ARG,
                                "%s: this is shard %u of %u of a split model (split.no = %u); "
                                "pass the first shard, %.*s-00001-of-%05u.gguf",
                                path, no + 1, sp->count, no, (int)pl, path, sp->count);
        return ds_error_set(err, DS_ERR_INVALID_ARG,
                            "%s: this is shard %u of %u of a split model (split.no = %u); "
                            "pass the first shard (the -00001-of-%05u.gguf file)",
                            path, no + 1, sp->count, no, sp->count);
    }
    if (sp->count > 1 && !sp->has_total)
        return ds_error_set(err, DS_ERR_FORMAT,
                            "%s: split.count = %u but split.tensors.count is missing", path,
                            sp->count);
    return DS_OK;
}

/* Opens shards 2..count next to the first and checks each one's split.* keys. */
static ds_status open_siblings(ds_gguf *g, const ds_gguf_split *first, ds_error *err) {
    const char *path0 = g->shards[0].path;
    size_t pl;
    unsigned a, b;
    if (!split_name(path0, &pl, &a, &b) || a != 1 || b != first->count)
        return ds_error_set(err, DS_ERR_INVALID_ARG,
                            "%s: split.count = %u but the name does not end in "
                            "-00001-of-%05u.gguf, so the other shards cannot be found",
                            path0, first->count, first->count);
    size_t cap = pl + SPLIT_SUFFIX_LEN + 1;
    char *name = malloc(cap);
    if (!name) return ds_error_set(err, DS_ERR_OOM, "%s: out of memory", path0);
    ds_status st = DS_OK;
    for (unsigned i = 1; i < first->count && !st; i++) {
        snprintf(name, cap, "%.*s-%05u-of-%05u.gguf", (int)pl, path0, i + 1, first->count);
        ds_gguf_shard *s = add_shard(g, name);
        if (!s) { st = ds_error_set(err, DS_ERR_OOM, "%s: out of memory", name); break; }
        if ((st = map_file(name, s, err))) {
            if (st == DS_ERR_NOT_FOUND)
                ds_error_set(err, st, "%s: shard %u of %u is missing (opening %s)", name, i + 1,
                             first->count, path0);
            break;
        }
        ds_gguf_split sp;
        st = ds_gguf_parse_shard(g, (int)i, first->count, &sp, err);
    }
    free(name);
    return st;
}

ds_status ds_gguf_open(const char *path, ds_gguf **out, ds_error *err) {
    *out = NULL;
    ds_gguf *g = calloc(1, sizeof *g);
    ds_gguf_shard *s = g ? add_shard(g, path) : NULL;
    if (!s) {
        ds_gguf_close(g);
        return ds_error_set(err, DS_ERR_OOM, "%s: out of memory", path);
    }
    ds_gguf_split sp;
    ds_status st = map_file(path, s, err);
    if (!st) st = ds_gguf_parse_shard(g, 0, 0, &sp, err);
    if (!st) st = check_first(g, &sp, err);
    if (!st && sp.has_count && sp.count > 1) st = open_siblings(g, &sp, err);
    if (!st && sp.has_count && sp.count > 1 && g->n_tensors != sp.total)
        st = ds_error_set(err, DS_ERR_FORMAT,
                          "%s: split.tensors.count is %lld but the %u shards hold %lld tensors",
                          path, (long long)sp.total, sp.count, (long long)g->n_tensors);
    if (st) {
        ds_gguf_close(g);
        return st;
    }
    *out = g;
    return DS_OK;
}

ds_status ds_gguf_open_memory(const void *buf, size_t len, const char *name, ds_gguf **out,
                              ds_error *err) {
    *out = NULL;
    if (!name) name = "(memory)";
    ds_gguf *g = calloc(1, sizeof *g);
    ds_gguf_shard *s = g ? add_shard(g, name) : NULL;
    if (!s) {
        ds_gguf_close(g);
        return ds_error_set(err, DS_ERR_OOM, "%s: out of memory", name);
    }
    s->buf = buf ? buf : (const void *)"";
    s->len = buf ? len : 0;
    ds_gguf_split sp;
    ds_status st = ds_gguf_parse_shard(g, 0, 0, &sp, err);
    if (!st) st = check_first(g, &sp, err);
    /* A buffer has no siblings; a lone first shard is fine only if complete. */
    if (!st && sp.has_count && sp.count > 1)
        st = ds_error_set(err, DS_ERR_UNSUPPORTED,
                          "%s: first shard of a %u-way split; open the files with ds_gguf_open",
                          name, sp.count);
    if (st) {
        ds_gguf_close(g);
        return st;
    }
    *out = g;
    return DS_OK;
}

void ds_gguf_close(ds_gguf *g) {
    if (!g) return;
    for (int i = 0; i < g->n_shards; i++) {
        if (g->shards[i].map) munmap(g->shards[i].map, g->shards[i].len);
        free(g->shards[i].path);
    }
    for (int64_t i = 0; i < g->n_owned; i++) free(g->owned[i]);
    free(g->owned);
    free(g->shards);
    free(g->kvs);
    free(g->tensors);
    ds_gguf_index_free(&g->kv_index);
    ds_gguf_index_free(&g->tensor_index);
    free(g);
}

uint32_t ds_gguf_version(const ds_gguf *g) { return g->shards[0].version; }
int ds_gguf_n_shards(const ds_gguf *g) { return g->n_shards; }

uint64_t ds_gguf_total_bytes(const ds_gguf *g) {
    uint64_t n = 0;
    for (int i = 0; i < g->n_shards; i++) n += g->shards[i].len;
    return n;
}

int64_t ds_gguf_n_tensors(const ds_gguf *g) { return g->n_tensors; }

const ds_gguf_tensor *ds_gguf_tensor_at(const ds_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const ds_gguf_tensor *ds_gguf_find_tensor(const ds_gguf *g, const char *name) {
    int64_t i = ds_gguf_index_find(&g->tensor_index, g->tensors, sizeof(ds_gguf_tensor), name,
                                   strlen(name));
    return i >= 0 ? &g->tensors[i] : NULL;
}
