/* What the files of the HTTP layer share among themselves and nobody else uses. The direction is one way:
 * server.c -> call.c (the pipeline) -> response.c (answers, access log, metrics), call_server_auth.c beside call.c;
 * response.c calls nothing of the others. */
#ifndef MXKEYS_HTTP_INTERNAL_H
#define MXKEYS_HTTP_INTERNAL_H

#include "mxkeys/call.h"

/* ---- response.c ---- */

/** Monotonic clock in nanoseconds: request durations in the log and metrics. */
uint64_t mx_http_now_ns(void);
/** Answers a request that never became a call (framing, routing, query checks) with a Matrix error; `allow`: the
 * methods for a 405's Allow header (a router bit set), else 0. */
void mx_http_respond_plain_error(h2o_req_t *req, mx_worker_t *w, size_t route, mx_err_t err, const char *msg,
                                 unsigned allow);
/** Answers a CORS preflight. */
void mx_http_respond_options(h2o_req_t *req, mx_worker_t *w);
/** h2o's own text/plain errors (413 past its limit, broken framing) become Matrix errors. */
void mx_http_register_error_filter(h2o_pathconf_t *fallback, size_t max_body_bytes);

/* ---- call.c ---- */

/** The single h2o handler that routes every request through the server's route table. */
int mx_http_on_req(h2o_handler_t *self, h2o_req_t *req);

/* ---- call_server_auth.c ---- */

/** Authenticates a server-server request (X-Matrix), then runs `next` or answers the refusal. */
void mx_call_server_auth(mx_call_t *call, void (*next)(mx_call_t *call));

#endif
