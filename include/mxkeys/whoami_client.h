/* The homeserver's GET /_matrix/client/v3/account/whoami, asked on the worker's own loop. */
#ifndef MXKEYS_WHOAMI_CLIENT_H
#define MXKEYS_WHOAMI_CLIENT_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include "mxkeys/upstream.h"

typedef struct st_mx_whoami_client_t mx_whoami_client_t;
typedef struct st_mx_whoami_req_t mx_whoami_req_t;

typedef enum en_mx_whoami_status_t {
    MX_WHOAMI_OK,
    MX_WHOAMI_UNKNOWN_TOKEN, /* the homeserver said 401 (or 403 M_UNKNOWN_TOKEN-ish): token is bad */
    MX_WHOAMI_SOFT_LOGOUT,   /* ... with "soft_logout": true: the client should log in again, keeping its data */
    MX_WHOAMI_UNAVAILABLE,   /* connect failure, timeout, 5xx, unparsable answer */
} mx_whoami_status_t;

/** user_id/device_id valid only during the call; device_id may be NULL (appservice users). */
typedef void (*mx_whoami_cb)(void *data, mx_whoami_status_t status, const char *user_id, const char *device_id);

/** Creates a client asking through `up` (the worker's homeserver client, borrowed), each look-up bounded by
 * `timeout_ms`. NULL when memory runs out. */
mx_whoami_client_t *mx_whoami_client_new(mx_upstream_t *up, unsigned timeout_ms);
void mx_whoami_client_free(mx_whoami_client_t *client);
/**
 * Starts a look-up. Returns 0 and stores the handle in `*handle` before anything can call back; `cb` then runs exactly
 * once, possibly before this returns (a pooled connection can fail at once), unless cancelled. Returns -1 (no
 * callback) when the token cannot be sent (characters outside visible ASCII) or memory runs out.
 */
int mx_whoami_lookup(mx_whoami_client_t *client, const char *token, size_t len, mx_whoami_cb cb, void *data,
                     mx_whoami_req_t **handle) __attribute__((warn_unused_result));
void mx_whoami_cancel(mx_whoami_req_t *req);

#endif
