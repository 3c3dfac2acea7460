/* A blocking keep-alive HTTP/1.1 connection for the set-up phase (one per set-up thread). Set-up is not measured,
 * so plain blocking calls keep it simple; the measured load goes through engine.c. */
#ifndef MXKEYS_BENCH_SYNC_CLIENT_H
#define MXKEYS_BENCH_SYNC_CLIENT_H

#include "http.h"

typedef struct st_bench_sync_t {
    const bench_target_t *target;
    int fd;
    mx_buf_t out;
    bench_resp_t resp; /* the last response: resp.status, resp.body */
} bench_sync_t;

void bench_sync_init(bench_sync_t *s, const bench_target_t *target);
void bench_sync_close(bench_sync_t *s);
/**
 * Sends one request and reads the whole response into s->resp. A kept-alive connection the server closed meanwhile
 * is reopened once. Returns 0 when a response arrived (any status), -1 on a transport failure with a reason in `err`
 * (at least 256 bytes).
 */
int bench_sync_call(bench_sync_t *s, const char *method, const char *path, const char *token, const char *body,
                    size_t bodylen, char *err) __attribute__((warn_unused_result));

#endif
