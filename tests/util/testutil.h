/* testutil.h: the tiny test harness every tests/test_*.c uses.
 * CHECK records a failure with file:line and goes on; the test's main returns
 * ds_test_finish(), which prints "N passed, N failed" and is non-zero on any
 * failure. Not a framework: no registration, no fixtures. */
#ifndef DS_TESTUTIL_H
#define DS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int ds_test_passed, ds_test_failed;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (cond) ds_test_passed++;                                          \
        else {                                                               \
            ds_test_failed++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

int ds_test_finish(const char *name);

/* Path under tests/data (DS_TEST_DATA); static buffer, valid until next call. */
const char *ds_test_data(const char *rel);
/* Path under the scratch dir (DS_TEST_TMP); static buffer (4 rotating slots). */
const char *ds_test_tmp(const char *rel);
/* Reads a whole file into a malloc'd buffer with a NUL after the last byte
 * (*len excludes it); NULL on failure. */
void *ds_test_read_file(const char *path, size_t *len);
/* Deterministic xorshift random numbers. */
uint64_t ds_test_rand(uint64_t *state);
float ds_test_randf(uint64_t *state); /* uniform [-1, 1) */
/* ||a-b||_2 / ||b||_2 in double. */
double ds_test_rel_l2(const float *a, const float *b, size_t n);

#endif
