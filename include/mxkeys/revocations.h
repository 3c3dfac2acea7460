/* Access tokens revoked through mxkeys (a logout, a device deletion), shared by the workers of a process: every
 * worker's token cache checks it on a hit, so a revoked token stops working on all of them at once. Revocations made
 * by other instances sharing the database reach it through a poll of the token_revocations stream
 * (sql/functions/sidecar.sql) every MX_REVOCATIONS_POLL_MS.
 *
 * Cost on the request path: one relaxed atomic load per cached-token hit; the list is searched only when a revocation
 * happened since the entry was cached. */
#ifndef MXKEYS_REVOCATIONS_H
#define MXKEYS_REVOCATIONS_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

struct st_mx_db_pool_t;
typedef struct st_mx_revocations_t mx_revocations_t;

#define MX_REVOCATIONS_POLL_MS 200

/** Creates the registry; `keep_ms` is how long a revocation matters (the longest a token stays cached). */
mx_revocations_t *mx_revocations_new(unsigned keep_ms);
void mx_revocations_free(mx_revocations_t *r);
/** The generation now: a cache entry made now is tagged with it. */
uint64_t mx_revocations_gen(const mx_revocations_t *r);
/** Revokes the tokens of (user, device); device NULL: every device of the user. Any thread. */
void mx_revocations_add(mx_revocations_t *r, const char *user_id, const char *device_id);
/** True when a token of (user, device) cached at generation `gen` was revoked since. Any thread. */
bool mx_revocations_check(mx_revocations_t *r, uint64_t gen, const char *user_id, const char *device_id);
/** Starts following the database's revocation stream from `loop` (one worker per process does it). */
void mx_revocations_follow(mx_revocations_t *r, h2o_evloop_t *loop, struct st_mx_db_pool_t *db);

#endif
