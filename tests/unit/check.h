/* Minimal unit-test helpers: CHECK records a failure and goes on; main returns check_finish(). */
#ifndef MXKEYS_TEST_CHECK_H
#define MXKEYS_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_count;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        check_count++;                                                                                                 \
        if (!(cond)) {                                                                                                 \
            check_failures++;                                                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                                   \
        }                                                                                                              \
    } while (0)

#define CHECK_STREQ(a, b)                                                                                              \
    do {                                                                                                               \
        const char *check_a_ = (a), *check_b_ = (b);                                                                   \
        check_count++;                                                                                                 \
        if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_) != 0) {                                 \
            check_failures++;                                                                                          \
            fprintf(stderr, "%s:%d: CHECK_STREQ failed:\n  got:      %s\n  expected: %s\n", __FILE__, __LINE__,        \
                    check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)");                                   \
        }                                                                                                              \
    } while (0)

static inline int check_finish(const char *suite)
{
    fprintf(stderr, "%s: %d checks, %d failed\n", suite, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
