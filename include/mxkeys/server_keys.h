/* Other servers' signing keys, fetched through the homeserver acting as notary (POST /_matrix/key/v2/query on its
 * federation listener) on a worker's own loop, checked (the origin's own signature and the notary's), cached until
 * their valid_until_ts (at most 7 days; bounded), refusals cached briefly, concurrent look-ups of one key coalesced.
 * The notary's own keys come from its GET /_matrix/key/v2/server on the same trusted local listener. */
#ifndef MXKEYS_SERVER_KEYS_H
#define MXKEYS_SERVER_KEYS_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdint.h>
#include "mxkeys/signed_json.h"
#include "mxkeys/upstream.h"

typedef struct st_mx_server_keys_t mx_server_keys_t;
typedef struct st_mx_server_key_waiter_t mx_server_key_waiter_t;

typedef enum en_mx_server_key_status_t {
    MX_SERVER_KEY_OK,
    MX_SERVER_KEY_REFUSED,     /* unknown, old, expired or badly signed key: a 401 */
    MX_SERVER_KEY_UNAVAILABLE, /* the notary could not be asked (unreachable, slow, an error status): retry later */
} mx_server_key_status_t;

/** `public_key` (OK only) and `why` (otherwise) are valid during the call. */
typedef void (*mx_server_key_cb)(mx_server_key_waiter_t *waiter, mx_server_key_status_t status,
                                 const uint8_t *public_key, const char *why);

/** Embedded in the caller's state; zero it before mx_server_keys_get. */
struct st_mx_server_key_waiter_t {
    h2o_linklist_t _link;
    mx_server_key_cb cb;
};

typedef struct st_mx_server_keys_stats_t {
    unsigned long long cache_hits, notary_queries, notary_failures, refused;
    /* request authentication outcomes (server_auth.c counts them here: one place per worker) */
    unsigned long long auth_ok, auth_refused, auth_unavailable;
} mx_server_keys_stats_t;

/** Creates the per-worker cache asking `notary` (borrowed), whose server name is `notary_name` (copied). */
mx_server_keys_t *mx_server_keys_new(h2o_evloop_t *loop, mx_upstream_t *notary, const char *notary_name,
                                     unsigned timeout_ms);
/** Cancels look-ups in flight (no callbacks) and frees everything. */
void mx_server_keys_free(mx_server_keys_t *sk);
/** Resolves (server_name, key_id); `waiter->cb` runs exactly once, possibly before this returns, unless cancelled. */
void mx_server_keys_get(mx_server_keys_t *sk, const char *server_name, const char *key_id,
                        mx_server_key_waiter_t *waiter);
/** Withdraws a waiter whose callback has not run (the look-up goes on and fills the cache). */
void mx_server_keys_cancel(mx_server_key_waiter_t *waiter);
/** Adds the counters to *sum, for /metrics (another thread: relaxed, may be torn). */
void mx_server_keys_stats_add(const mx_server_keys_t *sk, mx_server_keys_stats_t *sum);
/** Counts one request-authentication outcome (OK, REFUSED or UNAVAILABLE). */
void mx_server_keys_count_auth(mx_server_keys_t *sk, mx_server_key_status_t outcome);

#endif
