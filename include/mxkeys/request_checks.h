/* Checks on the raw request made before routing, so that no handler ever sees ambiguous framing or query values that
 * are not text. */
#ifndef MXKEYS_REQUEST_CHECKS_H
#define MXKEYS_REQUEST_CHECKS_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>

/**
 * HTTP/1 framing: false (and `*why`, static text) when the request head carries Content-Length more than once,
 * Transfer-Encoding more than once, or both (RFC 9112 section 6.3: a request smuggling vector). h2o 2.2.5 frames by
 * the first Content-Length or the last Transfer-Encoding and drops both headers from req->headers, so the head is
 * read again from the connection's input buffer, where it stays until the response is done.
 */
bool mx_http_framing_ok(h2o_req_t *req, const char **why);
/** Decodes the %-escapes of `s[0..len)` into `out` (room for len bytes; not NUL-terminated), '+' as a space when
 * `plus_is_space` (query strings). Returns the decoded length, or -1 for a malformed escape. */
long mx_http_percent_decode(const char *s, size_t len, char *out, bool plus_is_space);
/** Query string: false when a name or value has a malformed %-escape, or decodes to bytes that are not UTF-8 or hold
 * a NUL. */
bool mx_http_query_ok(h2o_req_t *req, const char **why);

#endif
