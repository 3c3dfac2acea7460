/* UTF-8 checks for bytes that come from outside (path captures, query values) and for text quoted in error
 * messages, which must stay valid JSON whatever a client sent. */
#ifndef MXKEYS_UTF8_H
#define MXKEYS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include "mxkeys/buf.h"

/** True when `s[0..len)` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF) and
 * holds no NUL. */
bool mx_utf8_valid(const char *s, size_t len);
/** Appends `s[0..len)` to `out` with every ill-formed sequence and every NUL replaced by U+FFFD. */
void mx_utf8_sanitize(mx_buf_t *out, const char *s, size_t len);

#endif
