/* Canonical JSON as the Matrix appendix defines it: keys sorted by code point, no insignificant whitespace, UTF-8
 * output, shortest escapes, integers within +-(2^53-1) only, no floats. */
#ifndef MXKEYS_CANONICAL_JSON_H
#define MXKEYS_CANONICAL_JSON_H

#include <jansson.h>
#include <stddef.h>
#include "mxkeys/buf.h"

/** Limits of the integers canonical JSON allows. */
#define MX_JSON_MAX_SAFE_INT 9007199254740991LL

/** Appends `s` (UTF-8, `len` bytes) escaped as the body of a JSON string, without quotes, exactly as canonical JSON
 * escapes it: `"` and `\\` and control characters only, shortest form, lowercase hex; everything else verbatim. */
void mx_json_escape(mx_buf_t *out, const char *s, size_t len);

/**
 * Appends the canonical encoding of `value` to `out`. Returns 0, or -1 when the value cannot be encoded canonically
 * (a float, an integer outside +-(2^53-1)), with `*why` set to a static reason. On failure `out` may hold a partial
 * encoding: callers reset it.
 */
int mx_canonical_json(const json_t *value, mx_buf_t *out, const char **why) __attribute__((warn_unused_result));

/**
 * Same as mx_canonical_json for an object, leaving out its top-level members named in `skip` (a NULL-terminated list).
 * This is how signed JSON drops `signatures` and `unsigned` without copying or changing the object.
 */
int mx_canonical_json_except(const json_t *object, const char *const *skip, mx_buf_t *out, const char **why)
    __attribute__((warn_unused_result));

/**
 * Checks that `value` can be encoded canonically, without encoding it. Returns 0 or -1 with a static reason; the
 * reason names the first offending JSON path when `path` (at least 256 bytes) is given.
 */
int mx_canonical_json_check(const json_t *value, char *path, size_t pathlen, const char **why)
    __attribute__((warn_unused_result));

#endif
