/* HTTP/1.1 client pieces shared by the load engine and the set-up calls: the target URL, request formatting and an
 * incremental response parser (Content-Length, chunked, or until close). Only what a JSON API client needs. */
#ifndef MXKEYS_BENCH_HTTP_H
#define MXKEYS_BENCH_HTTP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include "mxkeys/buf.h"

typedef struct st_bench_target_t {
    char host[256]; /* as given, for the Host header */
    char base[512]; /* path prefix from the URL, without a trailing slash ("" for none) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
} bench_target_t;

/** Parses http://host[:port][/prefix] and resolves the host once. Returns 0, or -1 with a reason in `err`. */
int bench_target_parse(bench_target_t *t, const char *url, char *err, size_t errlen);

/**
 * Appends a complete request to `out`: `path` is appended to the target's prefix; `token` may be NULL; `body` may be
 * NULL (no body) and is sent as application/json.
 */
void bench_http_format(mx_buf_t *out, const bench_target_t *t, const char *method, const char *path, const char *token,
                       const char *body, size_t bodylen);

typedef enum en_bench_resp_state_t {
    RESP_HEAD,
    RESP_BODY_LENGTH,
    RESP_BODY_CLOSE,
    RESP_CHUNK_SIZE,
    RESP_CHUNK_DATA,
    RESP_CHUNK_CRLF,
    RESP_TRAILERS,
    RESP_DONE,
} bench_resp_state_t;

typedef struct st_bench_resp_t {
    bench_resp_state_t state;
    int status;
    bool keep_alive;
    size_t remaining;  /* of the body (RESP_BODY_LENGTH) or of the current chunk */
    size_t body_bytes; /* all body bytes seen, kept or not */
    size_t keep_max;   /* body bytes kept in `body`; the rest is counted only */
    mx_buf_t head;     /* status line and headers, or the partial chunk-size line */
    mx_buf_t body;
} bench_resp_t;

/** Prepares for the next response, keeping the buffers' memory. */
void bench_resp_reset(bench_resp_t *r, size_t keep_max);
void bench_resp_free(bench_resp_t *r);
/**
 * Feeds received bytes. Returns 1 when the response is complete (bytes after it, if any, are reported through
 * `*used`), 0 when more is needed, -1 on a malformed response with a reason in `err` (at least 128 bytes).
 */
int bench_resp_feed(bench_resp_t *r, const char *data, size_t len, size_t *used, char *err);
/** Tells a response read until close that the peer closed: returns 1 when that completes it, else 0. */
int bench_resp_eof(bench_resp_t *r);

#endif
