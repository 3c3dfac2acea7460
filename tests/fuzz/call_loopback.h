/* The loopback behind fuzz_bodies (call_loopback.c): runs an endpoint handler on a call without h2o or a database
 * and writes what it did first into an outcome line. */
#ifndef MXKEYS_FUZZ_CALL_LOOPBACK_H
#define MXKEYS_FUZZ_CALL_LOOPBACK_H

#include "mxkeys/call.h"

/** Starts a run: the outcome goes to `out`; `query` is name/value pairs ending in NULL (or NULL); `hs_answer` the
 * body of the homeserver's 200 when the handler asks it something. */
void lb_begin(mx_buf_t *out, const char *const *query, const char *hs_answer);
/** Runs `handler`, then what would come back later (an offloaded check, the homeserver's answer). Aborts unless the
 * call was answered or handed over exactly once. */
void lb_run(mx_call_t *call, void (*handler)(mx_call_t *));
/** Frees the run's request memory. */
void lb_end(void);

#endif
