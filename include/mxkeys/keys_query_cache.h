/* The local part of POST /keys/query through the query cache (src/api/keys_query_cache.c). */
#ifndef MXKEYS_KEYS_QUERY_CACHE_H
#define MXKEYS_KEYS_QUERY_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include "mxkeys/call.h"

typedef struct st_mx_cached_query_t mx_cached_query_t;

/** Gets the answer's text (`{"device_keys": ..., "user_signing_keys": ...}`, call memory). */
typedef void (*mx_keys_query_local_cb)(mx_call_t *call, const char *answer, size_t len);

/** Answers the local users of `requested` (the request's `device_keys`, user id -> list of device ids, already
 * validated; it must live as long as the call: its strings are used in place) as mx_keys_query does, from the cache
 * where it can, and calls `done` (or answers the call with an error). `call->data` must point to the handler's state,
 * whose first member is the mx_cached_query_t * this fills in. Returns false, doing nothing, when the cache is off. */
bool mx_keys_query_cached(mx_call_t *call, const json_t *requested, mx_keys_query_local_cb done);

#endif
