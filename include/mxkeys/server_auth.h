/* Authenticating a server-server request: its X-Matrix Authorization headers checked against the origin's signing
 * keys (server_keys.h). The state lives in the caller's request memory; cancel it when the request goes away. */
#ifndef MXKEYS_SERVER_AUTH_H
#define MXKEYS_SERVER_AUTH_H

#include <jansson.h>
#include "mxkeys/server_keys.h"
#include "mxkeys/xmatrix.h"

#define MX_SERVER_AUTH_MAX_HEADERS 4
#define MX_SERVER_AUTH_WHY_LEN 768

typedef struct st_mx_server_auth_t mx_server_auth_t;
/** `origin` (OK) and `why` (otherwise: a sentence for the 401 or 503 answer) are valid during the call. */
typedef void (*mx_server_auth_cb)(mx_server_auth_t *auth, mx_server_key_status_t status, const char *origin,
                                  const char *why);

typedef struct st_mx_server_auth_request_t {
    const char *method;
    const char *uri; /* the raw request target as received: path and query, still percent-encoded */
    size_t uri_len;
    const json_t *content;      /* the parsed body, or NULL when the request has none */
    const char *server_name;    /* ours: what `destination` must say when given */
    const h2o_iovec_t *headers; /* every Authorization header value of the request */
    size_t nheaders;
} mx_server_auth_request_t;

struct st_mx_server_auth_t {
    mx_server_auth_cb cb;
    /* private */
    mx_server_keys_t *_sk;
    mx_xmatrix_t _h[MX_SERVER_AUTH_MAX_HEADERS];
    size_t _n, _next;
    mx_buf_t _payload;
    mx_server_key_waiter_t _waiter;
    bool _verified, _unavailable;
    char _why[MX_SERVER_AUTH_WHY_LEN];
};

/**
 * Checks the request. Every X-Matrix header must parse and name the same origin and destination, the destination (if
 * any) must be `server_name`; each header's key is looked up and its signature checked over the signed request
 * JSON. One valid signature by a current key authenticates, a wrong signature by a known key refuses. `auth->cb` (set
 * by the caller) runs exactly once, possibly before this returns, unless mx_server_auth_cancel is called first.
 */
void mx_server_auth_start(mx_server_auth_t *auth, mx_server_keys_t *sk, const mx_server_auth_request_t *r);
/** Withdraws a check whose callback has not run; frees its memory. Harmless after the callback. */
void mx_server_auth_cancel(mx_server_auth_t *auth);

#endif
