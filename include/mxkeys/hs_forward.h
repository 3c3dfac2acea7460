/* Calls to the homeserver made on behalf of a client's request (--auth homeserver): the request's own credentials,
 * the answer buffered (bounded) and handed to the handler, or passed through to the client as the homeserver sent
 * it. Built on the worker's upstream client (mxkeys/upstream.h). */
#ifndef MXKEYS_HS_FORWARD_H
#define MXKEYS_HS_FORWARD_H

#include "mxkeys/call.h"
#include "mxkeys/upstream.h"

/** Largest homeserver answer buffered for a handler or passed through whole (a /sync is streamed instead). */
#define MX_HS_MAX_ANSWER (16u << 20)

typedef struct st_mx_hs_answer_t {
    int status; /* 0: no answer; `error` says why */
    mx_upstream_error_t error;
    const char *why;             /* for logs, when status is 0 */
    const h2o_header_t *headers; /* the answer's headers (names lower-case), request memory */
    size_t nheaders;
    const char *body; /* request memory, NUL-terminated */
    size_t len;
} mx_hs_answer_t;

/** Runs with the homeserver's answer (or its absence), only while the client is still there. */
typedef void (*mx_hs_cb)(mx_call_t *call, const mx_hs_answer_t *answer);

/**
 * Fills `spec` for a request to the homeserver carrying the call's credentials and client headers (Authorization as
 * the client sent it, or made from an access_token parameter; User-Agent, X-Forwarded-*), with `target` (path and
 * query) and an optional JSON body. Memory stays the caller's.
 */
void mx_hs_spec(mx_call_t *call, mx_upstream_spec_t *spec, const char *method, const char *target, size_t target_len,
                const char *body, size_t body_len);
/** Sends `spec`; `cb` runs once with the answer, unless the client goes away first (the request is then cancelled). On
 * a start failure the call is answered 502 here and -1 returned. */
int mx_hs_fetch(mx_call_t *call, const mx_upstream_spec_t *spec, mx_hs_cb cb);
/** Answers the client with the homeserver's answer as it came (status, body, end-to-end headers); a missing answer
 * becomes a Matrix 502 (unreachable) or 504 (too slow). */
void mx_hs_pass(mx_call_t *call, const mx_hs_answer_t *answer);
/** Forwards the client's request as it came (method, request target, body) and passes the answer through. */
void mx_hs_forward(mx_call_t *call);
/** True when a homeserver header is end-to-end, i.e. passed on to the client (not framing, hop-by-hop or CORS). */
bool mx_hs_header_passes(const h2o_header_t *header);
/** Answers the call with the Matrix error for a missing answer (502 or 504), naming the homeserver. */
void mx_hs_error(mx_call_t *call, const mx_hs_answer_t *answer);

#endif
