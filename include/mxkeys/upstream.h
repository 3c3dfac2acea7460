/* Outbound HTTP/1.1 to the homeserver, on a worker's own loop: the whoami look-ups, forwarded client requests and
 * held /sync long-polls all go through one of these per worker. The address is resolved once when the worker starts
 * (no resolver thread on the request path); idle connections are kept alive in a pool; every request has a deadline.
 *
 * Lifetime: a request lives until exactly one of these happens, after which it is freed and its handle is invalid:
 * on_error runs, on_body runs with `final`, a handler returns -1, or the owner calls mx_upstream_cancel (never from
 * inside one of the request's own handlers: return -1 there instead). */
#ifndef MXKEYS_UPSTREAM_H
#define MXKEYS_UPSTREAM_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>
#include "mxkeys/buf.h"

typedef struct st_mx_upstream_t mx_upstream_t;
typedef struct st_mx_upstream_req_t mx_upstream_req_t;

typedef enum en_mx_upstream_error_t {
    MX_UPSTREAM_UNREACHABLE, /* connect failed, connection dropped, unparsable answer: a Matrix 502 */
    MX_UPSTREAM_TIMEOUT,     /* the deadline passed: a Matrix 504 */
    MX_UPSTREAM_SHUTDOWN,    /* mxkeys is stopping (mx_upstream_end_long_polls): a 503 to retry elsewhere */
} mx_upstream_error_t;

typedef struct st_mx_upstream_handlers_t {
    /** The answer's status line and headers (valid during the call). Return 0 for the body, -1 to stop here. */
    int (*on_head)(void *data, int status, const h2o_header_t *headers, size_t nheaders);
    /** Body bytes as they arrive (valid during the call; len may be 0). `final` marks the last call. Return 0 to go
     * on, -1 to stop (ignored with final). */
    int (*on_body)(void *data, const char *bytes, size_t len, bool final);
    /** The request failed, before or during the body. `why` is for logs (never holds a token). */
    void (*on_error)(void *data, mx_upstream_error_t kind, const char *why);
} mx_upstream_handlers_t;

typedef struct st_mx_upstream_header_t {
    const char *name, *value;
    size_t name_len, value_len;
} mx_upstream_header_t;

#define MX_UPSTREAM_MAX_HEADERS 8

typedef struct st_mx_upstream_spec_t {
    const char *method; /* "GET", "POST", ... */
    const char *target; /* path and query as sent, starting with '/'; the URL's prefix goes first */
    size_t target_len;
    mx_upstream_header_t headers[MX_UPSTREAM_MAX_HEADERS]; /* besides Host, Content-Length (and User-Agent: mxkeysd when
                                                              none is given) */
    size_t nheaders;
    const char *body; /* copied; NULL/0: none */
    size_t body_len;
    unsigned deadline_ms; /* until the head arrives; 0: the client's default (--homeserver-timeout-ms) */
    unsigned stall_ms;    /* once the body flows, the longest pause between two reads; 0: the default */
    bool retry_safe;      /* may be sent twice: retried once when a kept-alive connection turns out closed */
    bool long_poll;       /* held for long: frees the connection's read buffer while waiting */
} mx_upstream_spec_t;

typedef struct st_mx_upstream_stats_t {
    unsigned long long requests, unreachable, timeouts;
    unsigned inflight;
} mx_upstream_stats_t;

/**
 * Creates the client for `url` ("http://host[:port][/prefix]"). Returns NULL with a reason in `err` when the URL is
 * not usable (https is refused: give the homeserver's plain-HTTP listener or a local TLS-terminating proxy) or the
 * host does not resolve.
 */
mx_upstream_t *mx_upstream_new(h2o_evloop_t *loop, const char *url, unsigned default_timeout_ms, char *err,
                               size_t errlen);
/** Fails nothing (the loop is going away): frees the pool and the client; requests must be cancelled first. */
void mx_upstream_free(mx_upstream_t *up);
/**
 * Starts a request. Returns 0 with the handle in `*handle` (set before any handler can run; handlers may run before
 * this returns), or -1 with nothing started when the spec holds a header value with CR, LF or NUL.
 */
int mx_upstream_start(mx_upstream_t *up, const mx_upstream_spec_t *spec, const mx_upstream_handlers_t *handlers,
                      void *data, mx_upstream_req_t **handle) __attribute__((warn_unused_result));
/** Abandons a request; no handler runs afterwards. */
void mx_upstream_cancel(mx_upstream_req_t *req);
/** Stops reading the body (the consumer has enough buffered); mx_upstream_resume goes on. No effect before the
 * body. */
void mx_upstream_pause(mx_upstream_req_t *req);
void mx_upstream_resume(mx_upstream_req_t *req);
/** Ends every long-poll still waiting for its answer's head with MX_UPSTREAM_SHUTDOWN: a stopping worker should
 * not hold its drain for the length of the clients' polls. */
void mx_upstream_end_long_polls(mx_upstream_t *up);
/** Adds the client's figures to *sum, for /metrics (read from another thread: relaxed, may be torn). */
void mx_upstream_stats_add(const mx_upstream_t *up, mx_upstream_stats_t *sum);
/** Time now on the client's loop, in milliseconds. */
uint64_t mx_upstream_now(const mx_upstream_t *up);

/** Splits "http://host[:port][/prefix]" (host may be [v6]); the prefix has no trailing '/'. 0, or -1 with a reason. */
int mx_upstream_parse_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen, char *prefix,
                          size_t prefixlen, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
