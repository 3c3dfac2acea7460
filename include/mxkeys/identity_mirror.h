/* Mirroring identity writes to the homeserver (--auth homeserver; design in sql/functions/sidecar.sql):
 *
 *   the handler validates, and begins the write (a marker) in its first job
 *   -> mx_mirror_forward: the homeserver gets the write with the client's own credentials
 *   -> 2xx: `accepted` runs; it stores with mx_mirror_commit (the settle statement, then its own, one transaction)
 *   -> anything else: the marker is dropped, then the client gets the homeserver's answer as it came
 *      (user-interactive-auth 401s included); unreachable or slow: 502/504.
 *
 * Queries about the users of a write in flight wait for it (keys_query.c), so neither the homeserver's
 * announcement of a change nor its refusal can be seen ahead of mxkeys. */
#ifndef MXKEYS_IDENTITY_MIRROR_H
#define MXKEYS_IDENTITY_MIRROR_H

#include "mxkeys/hs_forward.h"

/** True when identity writes go to the homeserver first (--auth homeserver). */
bool mx_mirror_enabled(const mx_call_t *call);
/** The marker's lifetime, in milliseconds, for IDENTITY_BEGIN*'s ttl parameter (text, request memory). */
const char *mx_mirror_ttl_text(mx_call_t *call);
/**
 * Sends the write (`body`, JSON, to the path the client called) to the homeserver. `write_id` is the text of the
 * begun write's id (request memory). `accepted` runs on a 2xx answer; otherwise the call is answered here.
 */
void mx_mirror_forward(mx_call_t *call, const char *write_id, const char *body, size_t len, mx_hs_cb accepted);
/** mx_mirror_forward with the method given, retried on a closed kept-alive connection only when `retry_safe`. */
void mx_mirror_forward_as(mx_call_t *call, const char *write_id, const char *method, const char *body, size_t len,
                          bool retry_safe, mx_hs_cb accepted);
/**
 * Submits the settle statement of `write_id` followed by `stmts` (at most MX_DB_MAX_STMTS - 1) as one transaction;
 * `cb` gets the results of `stmts` only (the settle's failure has answered the call already).
 */
int mx_mirror_commit(mx_call_t *call, const char *write_id, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb);
/** Drops the marker of a write that will not be stored, then answers with the Matrix error given (a local refusal
 * found after the write was begun). */
void mx_mirror_abandon(mx_call_t *call, const char *write_id, mx_err_t err, const char *message);
/** Drops the marker, then answers 200 with `json` (request memory): a begun write that turned out to change nothing. */
void mx_mirror_abandon_ok(mx_call_t *call, const char *write_id, const char *json, size_t len);

#endif
