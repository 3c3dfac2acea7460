/* Access token -> (user_id, device_id). Local mode looks tokens up (stored as SHA-256) in the database; homeserver mode
 * asks the homeserver's /account/whoami. Both cache answers per worker (positive for token_cache_ms, failures for
 * token_negative_ms) and coalesce concurrent look-ups of the same token into one. */
#ifndef MXKEYS_AUTH_H
#define MXKEYS_AUTH_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stddef.h>
#include "mxkeys/config.h"

struct st_mx_db_pool_t;
typedef struct st_mx_auth_t mx_auth_t;

typedef enum en_mx_auth_status_t {
    MX_AUTH_OK,
    MX_AUTH_UNKNOWN_TOKEN, /* 401 M_UNKNOWN_TOKEN */
    MX_AUTH_SOFT_LOGOUT,   /* 401 M_UNKNOWN_TOKEN with soft_logout: true, as the homeserver said */
    MX_AUTH_UNAVAILABLE,   /* database / homeserver unreachable: 503, never 401 */
    MX_AUTH_BUSY,          /* database queue full: 503 M_LIMIT_EXCEEDED */
} mx_auth_status_t;

typedef struct st_mx_auth_waiter_t mx_auth_waiter_t;
/** Result callback; user_id/device_id are valid only during the call. */
typedef void (*mx_auth_cb)(mx_auth_waiter_t *waiter, mx_auth_status_t status, const char *user_id,
                           const char *device_id);

/** Embedded in the caller's request state; zero it before the first mx_auth_resolve. */
struct st_mx_auth_waiter_t {
    h2o_linklist_t _link;
    mx_auth_cb cb;
};

struct st_mx_upstream_t;
struct st_mx_revocations_t;
/** Creates the per-worker resolver; homeserver mode asks through `homeserver` (borrowed). Cached tokens of devices in
 * `revocations` (borrowed, shared by the workers; may be NULL) stop working at once. */
mx_auth_t *mx_auth_new(h2o_evloop_t *loop, const mx_config_t *config, struct st_mx_db_pool_t *db,
                       struct st_mx_upstream_t *homeserver, struct st_mx_revocations_t *revocations);
void mx_auth_free(mx_auth_t *auth);
/** Resolves `token`; `waiter->cb` runs exactly once, possibly before this returns (cache hit), unless cancelled. */
void mx_auth_resolve(mx_auth_t *auth, const char *token, size_t len, mx_auth_waiter_t *waiter);
/** Withdraws a waiter whose callback has not run yet (request disposed). */
void mx_auth_cancel(mx_auth_waiter_t *waiter);
/** SHA-256 of a token as 64 lowercase hex characters + NUL: the only form in which tokens are stored. */
void mx_token_hash_hex(const char *token, size_t len, char out[65]);

#endif
