/* Failing with a reason: the convention of functions that return 0, or -1 and a one-line reason in (err, errlen). */
#ifndef MXKEYS_REASON_H
#define MXKEYS_REASON_H

#include <stddef.h>

/** Formats the reason into err (truncated to errlen) and returns -1, so callers can `return mx_fail(...)`. */
__attribute__((format(printf, 3, 4))) int mx_fail(char *err, size_t errlen, const char *fmt, ...);

#endif
