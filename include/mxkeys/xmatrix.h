/* The server-server API's request authentication, the pure part: the `X-Matrix` Authorization header (RFC 7235
 * credentials) and the signed JSON of a request. Looking the origin's key up is server_keys.h's job. */
#ifndef MXKEYS_XMATRIX_H
#define MXKEYS_XMATRIX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mxkeys/buf.h"
#include "mxkeys/signed_json.h"

#define MX_SERVER_NAME_MAX 255
#define MX_XMATRIX_KEY_ID_MAX 127
#define MX_XMATRIX_SIG_MAX 127

typedef struct st_mx_xmatrix_t {
    char origin[MX_SERVER_NAME_MAX + 1];
    char destination[MX_SERVER_NAME_MAX + 1]; /* "" when the header has none (servers before Matrix 1.3) */
    char key[MX_XMATRIX_KEY_ID_MAX + 1];      /* "ed25519:<version>" */
    char sig[MX_XMATRIX_SIG_MAX + 1];         /* unpadded base64 */
    bool has_destination;
} mx_xmatrix_t;

typedef enum en_mx_xmatrix_parse_t {
    MX_XMATRIX_OK,
    MX_XMATRIX_OTHER_SCHEME, /* not X-Matrix (e.g. Bearer): not ours to judge */
    MX_XMATRIX_MALFORMED,    /* X-Matrix, but broken: `why` says how */
} mx_xmatrix_parse_t;

/**
 * Parses one Authorization header value: scheme `X-Matrix` (any case), one or more spaces, then comma-separated
 * name=value parameters in any order, names in any case, values as tokens (colons allowed, for older servers) or
 * quoted strings with backslash escapes; empty list elements and spaces around commas and '=' are allowed, unknown
 * parameters ignored, a repeated known one refused. origin, key and sig are required; the key must be ed25519.
 * On anything but MX_XMATRIX_OK `out` is zeroed; on MX_XMATRIX_MALFORMED `*why` is a static reason.
 */
mx_xmatrix_parse_t mx_xmatrix_parse(const char *value, size_t len, mx_xmatrix_t *out, const char **why)
    __attribute__((warn_unused_result));

/**
 * Appends the canonical JSON a request signature covers: {method, uri, origin[, destination][, content]}. `uri` is
 * the raw request target (path and query exactly as sent); `destination` NULL leaves it out (the header had none);
 * `content` NULL leaves it out (no body). Returns 0, or -1 with `*why` when the body cannot be encoded canonically.
 */
int mx_xmatrix_payload(const char *method, const char *uri, size_t uri_len, const char *origin, const char *destination,
                       const json_t *content, mx_buf_t *out, const char **why) __attribute__((warn_unused_result));

/** Checks a header's signature over `payload` with the origin's ed25519 public key. */
mx_sig_result_t mx_xmatrix_verify(const mx_buf_t *payload, const char *sig_b64,
                                  const uint8_t public_key[MX_ED25519_PUBLIC_KEY_BYTES])
    __attribute__((warn_unused_result));

#endif
