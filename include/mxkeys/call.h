/* A call: one HTTP request as an endpoint handler sees it. The HTTP layer has already routed it, checked the body
 * limit, parsed the JSON body and resolved the access token; the handler validates, issues one DB job and answers.
 *
 * Lifetime: the call lives in the request's memory pool. If the client goes away while a DB job is in flight, the
 * pool's dispose cancels the job and the handler's callback never runs; an offloaded job (mx_call_offload) still
 * comes back, finds no call and only frees itself. */
#ifndef MXKEYS_CALL_H
#define MXKEYS_CALL_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include "mxkeys/buf.h"
#include "mxkeys/db.h"
#include "mxkeys/errors.h"
#include "mxkeys/offload.h"
#include "mxkeys/router.h"
#include "mxkeys/server.h"

typedef struct st_mx_call_t mx_call_t;
/** DB completion for a call: only runs while the client is still there and the database answered. */
typedef void (*mx_call_db_cb)(mx_call_t *call, PGresult **results, size_t nresults);

struct st_mx_call_t {
    h2o_req_t *req;
    mx_worker_t *worker;
    const mx_config_t *config;
    const mx_route_t *route;
    size_t route_index;
    const char *params[MX_ROUTE_MAX_PARAMS]; /* percent-decoded path captures, NUL-terminated, pool memory */
    size_t nparams;
    json_t *body;          /* the parsed JSON object, or NULL (MX_BODY_NONE / empty optional body) */
    const char *user_id;   /* authenticated user (MX_ROUTE_USER), pool memory */
    const char *device_id; /* device of the access token; may be "" when the homeserver reports none */
    const char *origin;    /* authenticated server (MX_ROUTE_SERVER), pool memory */
    void *data;            /* handler's own state (allocate with mx_call_alloc) */
    void *ext;             /* state of a helper layered over the handler (the identity mirror) */
    /* private */
    mx_db_job_t *_job;
    mx_call_db_cb _db_cb;
    struct st_mx_call_auth_t *_auth;
    mx_call_t **_offload_owner; /* an offloaded job's pointer to this call: cleared if the client goes away */
    h2o_timeout_entry_t _later; /* mx_call_later */
    void (*_later_cb)(mx_call_t *call);
    uint64_t _started_ns;
    int _status;
    bool _streaming;                       /* a streamed response has started: failures abort it instead of answering */
    bool _db_quiet;                        /* mx_call_db_quiet: an unavailable database is the callback's to handle */
    struct st_mx_call_changed_t *_changed; /* users the job in flight may change: forgotten from the query cache */
};

/** Request-lifetime memory. */
void *mx_call_alloc(mx_call_t *call, size_t size);
/** Request-lifetime copy of a string. */
char *mx_call_strdup(mx_call_t *call, const char *s, size_t len);
/** A buffer freed with the request: build response bodies here. */
mx_buf_t *mx_call_buf(mx_call_t *call);
/** The percent-decoded value of query parameter `name`, or NULL when absent (first occurrence wins). */
const char *mx_call_query(mx_call_t *call, const char *name);

/** Answers with a JSON body. The bytes must outlive the call: pool memory, an mx_call_buf, or static. */
void mx_call_respond(mx_call_t *call, int status, const char *json, size_t len);
/** Answers with the contents of a buffer from mx_call_buf. */
void mx_call_respond_buf(mx_call_t *call, int status, mx_buf_t *buf);
/** Answers with a Matrix error from the table; the message is printf-formatted. */
void mx_call_error(mx_call_t *call, mx_err_t err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/**
 * Answers with a Matrix error carrying extra members: `extra` is JSON object members without braces, e.g.
 * "\"current_version\":\"3\"" (the caller escapes them).
 */
void mx_call_error_extra(mx_call_t *call, mx_err_t err, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Answers with an error whose status/errcode are not in the table (e.g. 401 UIA bodies): raw JSON body. */
void mx_call_respond_status(mx_call_t *call, int status, const char *json, size_t len);
/** True once the call has been answered (or its streamed answer started). */
static inline bool mx_call_answered(const mx_call_t *call)
{
    return call->_status != 0;
}
/** Adds a response header (copied) to the answer about to be sent. */
void mx_call_add_header(mx_call_t *call, const char *name, size_t name_len, const char *value, size_t value_len);
/** The request's access token (Authorization: Bearer, or the access_token query parameter), or NULL. */
const char *mx_call_access_token(mx_call_t *call, size_t *len);
/** Answers with a non-JSON body of the given media type (e.g. Prometheus text). */
void mx_call_respond_typed(mx_call_t *call, int status, const char *content_type, const char *body, size_t len);

/**
 * Starts a streamed response (chunked; no Content-Length) for bodies too large to build at once. h2o calls
 * `generator->proceed` when the previous chunk is written: send the next one from there. The body is JSON unless a
 * Content-Type was added with mx_call_add_header. Metrics and the access log count the request when it ends.
 */
void mx_call_stream_start(mx_call_t *call, int status, h2o_generator_t *generator);
/** Sends a chunk of a streamed response; the bytes must stay valid until `proceed` runs or the request ends. */
void mx_call_stream_send(mx_call_t *call, const char *data, size_t len, bool final);
/** Ends a streamed response that cannot be completed (the client sees a truncated body, never a wrong one). */
void mx_call_stream_abort(mx_call_t *call);

/**
 * Submits a DB job for the call. On success returns 0 and `cb` runs with the results. When the pool is busy or down
 * (now or before the results arrive) the call is answered with 503 here (a streamed response is aborted) and `cb`
 * never runs; returns -1 if answered now.
 */
int mx_call_db(mx_call_t *call, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb);
/** Like mx_call_db, with a deadline shorter than --db-timeout-ms for this job (e.g. readiness probes). */
int mx_call_db_within(mx_call_t *call, unsigned timeout_ms, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb);
/**
 * Like mx_call_db, but nothing is answered when the database is busy or down: -1 then (nothing submitted), or `cb`
 * runs with no results (nresults 0) when the connection dropped before the results came.
 */
int mx_call_db_quiet(mx_call_t *call, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb);
/**
 * Runs `job` off the event loop (mxkeys/offload.h). `*owner`, a member of the job, is set to the call now and to
 * NULL if the client goes away first. The job's `done` must begin with mx_call_offload_return(owner): it answers
 * the call, or NULL when there is no one left to answer (then only free the job). False when the offload queue is
 * full: nothing was queued, and the caller does the work itself.
 */
bool mx_call_offload(mx_call_t *call, mx_offload_job_t *job, mx_call_t **owner);
/** Runs `cb` again in about MX_CALL_LATER_MS (unless the client goes away first): for short waits such as a query
 * waiting for an identity write in flight. One at a time per call. */
void mx_call_later(mx_call_t *call, void (*cb)(mx_call_t *call));
#define MX_CALL_LATER_MS 10
/** The call an offloaded job came back to (NULL: the client went away), detached from the job. */
mx_call_t *mx_call_offload_return(mx_call_t **owner);
/**
 * Checks every result of a job. On the first failed one it answers the call (as mx_call_db_error does) and returns
 * false: `if (!mx_call_results_ok(call, results, n)) return;` opens every DB callback.
 */
bool mx_call_results_ok(mx_call_t *call, PGresult **results, size_t nresults);
/**
 * Answers for a failed statement result: an MXERR raised by our SQL functions (mx_client_error) becomes the Matrix
 * error it names, with the extra members it carries; a serialization failure or deadlock becomes 503 (retry);
 * anything else is logged and answered 500.
 */
void mx_call_db_error(mx_call_t *call, const PGresult *res);

#endif
