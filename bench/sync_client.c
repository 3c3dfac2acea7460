#include "sync_client.h"
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CALL_TIMEOUT_S 120 /* a set-up call that takes longer than this is a failure, not a slow server */
#define KEEP_BODY (64u << 20)

void bench_sync_init(bench_sync_t *s, const bench_target_t *target)
{
    memset(s, 0, sizeof(*s));
    s->target = target;
    s->fd = -1;
}

void bench_sync_close(bench_sync_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    mx_buf_free(&s->out);
    bench_resp_free(&s->resp);
}

static int open_conn(bench_sync_t *s, char *err)
{
    s->fd = socket(s->target->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        snprintf(err, 256, "socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = CALL_TIMEOUT_S};
    int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s->fd, (const struct sockaddr *)&s->target->addr, s->target->addrlen) != 0) {
        snprintf(err, 256, "connect to %.120s: %s", s->target->host, strerror(errno));
        close(s->fd);
        s->fd = -1;
        return -1;
    }
    return 0;
}

/* One attempt on the current connection. Returns 0, -1 (failed, retry may help: nothing was read), -2 (failed). */
static int attempt(bench_sync_t *s, char *err)
{
    size_t off = 0;
    while (off < s->out.len) {
        ssize_t n = send(s->fd, s->out.data + off, s->out.len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, 256, "send: %s", n < 0 ? strerror(errno) : "closed");
            return -1;
        }
        off += (size_t)n;
    }
    bench_resp_reset(&s->resp, KEEP_BODY);
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(s->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, 256, "recv: %s", errno == EAGAIN ? "timed out" : strerror(errno));
            return -2;
        }
        if (n == 0) {
            if (bench_resp_eof(&s->resp))
                return 0;
            snprintf(err, 256, "server closed the connection mid-response");
            return total == 0 ? -1 : -2;
        }
        total += (size_t)n;
        size_t used;
        int rc = bench_resp_feed(&s->resp, buf, (size_t)n, &used, err);
        if (rc < 0)
            return -2;
        if (rc == 1)
            return 0;
    }
}

int bench_sync_call(bench_sync_t *s, const char *method, const char *path, const char *token, const char *body,
                    size_t bodylen, char *err)
{
    mx_buf_reset(&s->out);
    bench_http_format(&s->out, s->target, method, path, token, body, bodylen);
    for (int tries = 0; tries < 2; tries++) {
        bool fresh = s->fd < 0;
        if (fresh && open_conn(s, err) != 0)
            return -1;
        int rc = attempt(s, err);
        if (rc == 0) {
            if (!s->resp.keep_alive) {
                close(s->fd);
                s->fd = -1;
            }
            return 0;
        }
        close(s->fd);
        s->fd = -1;
        if (rc == -2 || fresh)
            return -1;
    }
    return -1;
}
