/* h2o 2.2.5's HTTP/1 client with the parts it lacks for a sidecar: a per-request deadline (its io_timeout is one
 * fixed value per context and restarts at every read, so it cannot bound a long-poll), pausing a body, and one
 * retry on a kept-alive connection that the homeserver closed just as it was reused.
 *
 * Deadlines are checked by one sweep per client every SWEEP_MS over the requests in flight: a per-request h2o timer
 * is not possible (timers share their duration per h2o_timeout_t) and thousands of held long-polls make a walk of a
 * linked list a few microseconds. */
#include "mxkeys/upstream.h"
#include <h2o/http1client.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POOL_CAPACITY 4096 /* h2o 2.2.5 does not enforce it; callers bound their own concurrency */
#define IDLE_KEEPALIVE_MS 30000
#define SWEEP_MS 100
#define LONG_POLL_RCVBUF (128 << 10)
/* h2o's own I/O timeout: only a backstop, since our deadlines are shorter. */
#define IO_BACKSTOP_MS (3600u * 1000u)

struct st_mx_upstream_t {
    h2o_evloop_t *loop;
    h2o_socketpool_t sockpool;
    h2o_timeout_t io_timeout;
    h2o_http1client_ctx_t ctx;
    h2o_timeout_t sweep_timeout;
    h2o_timeout_entry_t sweep_entry;
    h2o_linklist_t active;
    unsigned default_timeout_ms;
    char host[300];   /* Host header value */
    char prefix[512]; /* path prefix of the URL, no trailing '/' */
    size_t prefix_len;
    mx_upstream_stats_t stats;
};

struct st_mx_upstream_req_t {
    mx_upstream_t *up;
    h2o_http1client_t *http;
    h2o_linklist_t link; /* up->active */
    const mx_upstream_handlers_t *h;
    void *data;
    h2o_iovec_t bufs[2]; /* request head and body, malloc'd: they must live until written */
    uint64_t deadline;   /* loop milliseconds; UINT64_MAX while paused */
    unsigned stall_ms;
    bool retry_safe, retried, long_poll;
    bool in_body, paused;
    bool in_handler, cancelled; /* mx_upstream_cancel from inside a handler only marks */
    h2o_socket_cb saved_read;   /* the client's body reader while paused */
};

#define LOAD(f) __atomic_load_n(&(f), __ATOMIC_RELAXED)
#define BUMP(f) __atomic_store_n(&(f), (f) + 1, __ATOMIC_RELAXED)

int mx_upstream_parse_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen, char *prefix,
                          size_t prefixlen, char *err, size_t errlen)
{
    if (strncmp(url, "https://", 8) == 0) {
        snprintf(err, errlen,
                 "--homeserver-url %s: https is not supported; give an http:// URL: the homeserver's plain-HTTP "
                 "listener or a local TLS-terminating proxy",
                 url);
        return -1;
    }
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "--homeserver-url %s: expected http://host[:port]", url);
        return -1;
    }
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t authority = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = NULL;
    if (h[0] == '[') {
        const char *close = memchr(h, ']', authority);
        if (close == NULL)
            goto bad;
        if ((size_t)(close - h) + 1 < authority && close[1] == ':')
            colon = close + 1;
        snprintf(host, hostlen, "%.*s", (int)(close - h - 1), h + 1);
    } else {
        colon = memchr(h, ':', authority);
        snprintf(host, hostlen, "%.*s", (int)(colon ? (size_t)(colon - h) : authority), h);
    }
    if (colon != NULL)
        snprintf(port, portlen, "%.*s", (int)(h + authority - colon - 1), colon + 1);
    else
        snprintf(port, portlen, "80");
    snprintf(prefix, prefixlen, "%s", slash ? slash : "");
    size_t plen = strlen(prefix);
    while (plen > 0 && prefix[plen - 1] == '/')
        prefix[--plen] = '\0';
    if (host[0] == '\0' || port[0] == '\0')
        goto bad;
    return 0;
bad:
    snprintf(err, errlen, "--homeserver-url %s: cannot parse the host and port", url);
    return -1;
}

static void on_sweep(h2o_timeout_entry_t *entry);

mx_upstream_t *mx_upstream_new(h2o_evloop_t *loop, const char *url, unsigned default_timeout_ms, char *err,
                               size_t errlen)
{
    char host[256], port[16], prefix[512];
    if (url == NULL) {
        snprintf(err, errlen, "--auth homeserver needs --homeserver-url");
        return NULL;
    }
    if (mx_upstream_parse_url(url, host, sizeof(host), port, sizeof(port), prefix, sizeof(prefix), err, errlen) != 0)
        return NULL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--homeserver-url %s: %s", url, gai_strerror(rc));
        return NULL;
    }
    mx_upstream_t *up = calloc(1, sizeof(*up));
    if (up == NULL) {
        freeaddrinfo(res);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    up->loop = loop;
    up->default_timeout_ms = default_timeout_ms;
    h2o_socketpool_init_by_address(&up->sockpool, res->ai_addr, res->ai_addrlen, 0, POOL_CAPACITY);
    freeaddrinfo(res);
    h2o_socketpool_set_timeout(&up->sockpool, loop, IDLE_KEEPALIVE_MS);
    h2o_timeout_init(loop, &up->io_timeout, IO_BACKSTOP_MS);
    h2o_timeout_init(loop, &up->sweep_timeout, SWEEP_MS);
    up->sweep_entry.cb = on_sweep;
    up->ctx.loop = loop;
    up->ctx.io_timeout = &up->io_timeout;
    h2o_linklist_init_anchor(&up->active);
    snprintf(up->host, sizeof(up->host), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    snprintf(up->prefix, sizeof(up->prefix), "%s", prefix);
    up->prefix_len = strlen(up->prefix);
    return up;
}

void mx_upstream_free(mx_upstream_t *up)
{
    if (up == NULL)
        return;
    if (h2o_timeout_is_linked(&up->sweep_entry))
        h2o_timeout_unlink(&up->sweep_entry);
    h2o_socketpool_dispose(&up->sockpool);
    h2o_timeout_dispose(up->loop, &up->io_timeout);
    h2o_timeout_dispose(up->loop, &up->sweep_timeout);
    free(up);
}

uint64_t mx_upstream_now(const mx_upstream_t *up)
{
    return h2o_now(up->loop);
}

void mx_upstream_stats_add(const mx_upstream_t *up, mx_upstream_stats_t *sum)
{
    sum->requests += LOAD(up->stats.requests);
    sum->unreachable += LOAD(up->stats.unreachable);
    sum->timeouts += LOAD(up->stats.timeouts);
    sum->inflight += LOAD(up->stats.inflight);
}

/* ---- request lifetime ------------------------------------------------------------------------------------------ */

static void req_free(mx_upstream_req_t *req)
{
    mx_upstream_t *up = req->up;
    h2o_linklist_unlink(&req->link);
    __atomic_store_n(&up->stats.inflight, up->stats.inflight - 1, __ATOMIC_RELAXED);
    free(req->bufs[0].base);
    free(req->bufs[1].base);
    free(req);
}

/* The request ends with an error; h2o's client is already gone or closes after the current callback. */
static void fail(mx_upstream_req_t *req, mx_upstream_error_t kind, const char *why)
{
    if (kind == MX_UPSTREAM_TIMEOUT)
        BUMP(req->up->stats.timeouts);
    else if (kind == MX_UPSTREAM_UNREACHABLE)
        BUMP(req->up->stats.unreachable);
    req->http = NULL;
    if (!req->cancelled) {
        req->in_handler = true; /* a cancel from inside on_error only marks: the request is freed right here */
        req->h->on_error(req->data, kind, why);
    }
    req_free(req);
}

static void on_sweep(h2o_timeout_entry_t *entry)
{
    mx_upstream_t *up = H2O_STRUCT_FROM_MEMBER(mx_upstream_t, sweep_entry, entry);
    uint64_t now = h2o_now(up->loop);
    h2o_linklist_t *l = up->active.next;
    while (l != &up->active) {
        mx_upstream_req_t *req = H2O_STRUCT_FROM_MEMBER(mx_upstream_req_t, link, l);
        l = l->next; /* fail() unlinks req */
        if (now < req->deadline)
            continue;
        if (req->http != NULL)
            h2o_http1client_cancel(req->http);
        fail(req, MX_UPSTREAM_TIMEOUT, req->in_body ? "the answer stalled" : "no answer in time");
    }
    if (!h2o_linklist_is_empty(&up->active))
        h2o_timeout_link(up->loop, &up->sweep_timeout, &up->sweep_entry);
}

void mx_upstream_end_long_polls(mx_upstream_t *up)
{
    h2o_linklist_t *l = up->active.next;
    while (l != &up->active) {
        mx_upstream_req_t *req = H2O_STRUCT_FROM_MEMBER(mx_upstream_req_t, link, l);
        l = l->next;
        if (!req->long_poll || req->in_body)
            continue;
        if (req->http != NULL)
            h2o_http1client_cancel(req->http);
        fail(req, MX_UPSTREAM_SHUTDOWN, "mxkeys is stopping");
    }
}

/* Runs a handler with re-entrant cancels turned into a -1. */
static int call_head(mx_upstream_req_t *req, int status, const h2o_header_t *headers, size_t n)
{
    req->in_handler = true;
    int rc = req->h->on_head(req->data, status, headers, n);
    req->in_handler = false;
    return req->cancelled ? -1 : rc;
}

static int call_body(mx_upstream_req_t *req, const char *bytes, size_t len, bool final)
{
    req->in_handler = true;
    int rc = req->h->on_body(req->data, bytes, len, final);
    req->in_handler = false;
    return req->cancelled ? -1 : rc;
}

/* ---- h2o callbacks ------------------------------------------------------------------------------------------------
 */

static void start(mx_upstream_req_t *req);

static int on_body(h2o_http1client_t *http, const char *errstr)
{
    mx_upstream_req_t *req = http->data;
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        fail(req, MX_UPSTREAM_UNREACHABLE, errstr);
        return -1;
    }
    h2o_buffer_t *in = http->sock->input;
    bool final = errstr == h2o_http1client_error_is_eos;
    int rc = call_body(req, in->bytes, in->size, final);
    h2o_buffer_consume(&http->sock->input, in->size);
    if (final || rc != 0) {
        req->http = NULL; /* h2o closes (or pools) the connection after we return */
        req_free(req);
        return -1;
    }
    if (!req->paused)
        req->deadline = h2o_now(req->up->loop) + req->stall_ms;
    return 0;
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *http, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    (void)minor_version, (void)msg, (void)rlen;
    mx_upstream_req_t *req = http->data;
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        /* A kept-alive connection the homeserver closed just as we reused it fails here with no answer: once more on
         * a fresh connection, when sending twice is harmless. A timeout is not retried: it would double the wait. */
        if (req->retry_safe && !req->retried && strcmp(errstr, "I/O timeout") != 0) {
            req->retried = true;
            start(req); /* h2o closes this attempt's client after we return */
            return NULL;
        }
        fail(req, MX_UPSTREAM_UNREACHABLE, errstr);
        return NULL;
    }
    if (call_head(req, status, headers, num_headers) != 0) {
        req->http = NULL;
        req_free(req);
        return NULL;
    }
    if (errstr == h2o_http1client_error_is_eos) { /* no body (204, 304, HEAD) */
        call_body(req, "", 0, true);
        req->http = NULL;
        req_free(req);
        return NULL;
    }
    req->in_body = true;
    req->deadline = h2o_now(req->up->loop) + req->stall_ms;
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *http, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head)
{
    mx_upstream_req_t *req = http->data;
    if (errstr != NULL) {
        fail(req, MX_UPSTREAM_UNREACHABLE, errstr);
        return NULL;
    }
    if (req->long_poll) {
        /* A reused connection keeps the read buffer of its last answer; a held long-poll need not hold it
         * meanwhile. */
        if (http->sock->input->size == 0 && http->sock->input->bytes != NULL) {
            h2o_buffer_dispose(&http->sock->input);
            h2o_buffer_init(&http->sock->input, &h2o_socket_buffer_prototype);
        }
        /* h2o reads until the kernel has nothing left, growing the buffer to match: a small receive buffer bounds
         * what one read of a large answer (a 50 MB initial sync) brings in, and so what pausing has to hold. */
        int size = LONG_POLL_RCVBUF;
        (void)setsockopt(h2o_socket_get_fd(http->sock), SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
    /* Deadlines bound each request; these bound the connection itself, idle in the pool or not: keepalive probes find
     * a homeserver host that vanished, TCP_USER_TIMEOUT drops a connection whose sent bytes stay unacknowledged (a
     * black-holed network) instead of the kernel's default of about 15 minutes of retransmissions. */
    int fd = h2o_socket_get_fd(http->sock), on = 1, idle = 10, intvl = 3, cnt = 3;
    unsigned user_timeout = req->up->default_timeout_ms;
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
    *reqbufs = req->bufs;
    *reqbufcnt = req->bufs[1].len ? 2 : 1;
    *method_is_head = 0;
    return on_head;
}

/* May call back before it returns (a pooled socket is handed over at once; a connect can fail at once). */
static void start(mx_upstream_req_t *req)
{
    mx_upstream_t *up = req->up;
    h2o_http1client_connect_with_pool(&req->http, req, &up->ctx, &up->sockpool, on_connect);
}

/* ---- public ------------------------------------------------------------------------------------------------------ */

static bool header_value_ok(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
            return false;
    return true;
}

int mx_upstream_start(mx_upstream_t *up, const mx_upstream_spec_t *spec, const mx_upstream_handlers_t *handlers,
                      void *data, mx_upstream_req_t **handle)
{
    if (!header_value_ok(spec->target, spec->target_len) || spec->nheaders > MX_UPSTREAM_MAX_HEADERS)
        return -1;
    for (size_t i = 0; i < spec->nheaders; i++)
        if (!header_value_ok(spec->headers[i].name, spec->headers[i].name_len) ||
            !header_value_ok(spec->headers[i].value, spec->headers[i].value_len))
            return -1;
    mx_upstream_req_t *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return -1;
    mx_buf_t head = MX_BUF_INIT;
    mx_buf_printf(&head, "%s %.*s%.*s HTTP/1.1\r\nHost: %s\r\n", spec->method, (int)up->prefix_len, up->prefix,
                  (int)spec->target_len, spec->target, up->host);
    for (size_t i = 0; i < spec->nheaders; i++)
        mx_buf_printf(&head, "%.*s: %.*s\r\n", (int)spec->headers[i].name_len, spec->headers[i].name,
                      (int)spec->headers[i].value_len, spec->headers[i].value);
    if (spec->body_len > 0 || strcmp(spec->method, "POST") == 0 || strcmp(spec->method, "PUT") == 0)
        mx_buf_printf(&head, "Content-Length: %zu\r\n", spec->body_len);
    bool has_agent = false;
    for (size_t i = 0; i < spec->nheaders; i++)
        has_agent |= spec->headers[i].name_len == 10 && strncasecmp(spec->headers[i].name, "user-agent", 10) == 0;
    mx_buf_puts(&head, has_agent ? "\r\n" : "User-Agent: mxkeysd\r\n\r\n");
    req->bufs[0] = h2o_iovec_init(head.data, head.len);
    if (spec->body_len > 0) {
        req->bufs[1].base = malloc(spec->body_len);
        if (req->bufs[1].base == NULL) {
            free(head.data);
            free(req);
            return -1;
        }
        memcpy(req->bufs[1].base, spec->body, spec->body_len);
        req->bufs[1].len = spec->body_len;
    }
    req->up = up;
    req->h = handlers;
    req->data = data;
    req->retry_safe = spec->retry_safe;
    req->long_poll = spec->long_poll;
    req->stall_ms = spec->stall_ms ? spec->stall_ms : up->default_timeout_ms;
    req->deadline = h2o_now(up->loop) + (spec->deadline_ms ? spec->deadline_ms : up->default_timeout_ms);
    h2o_linklist_insert(&up->active, &req->link);
    BUMP(up->stats.requests);
    __atomic_store_n(&up->stats.inflight, up->stats.inflight + 1, __ATOMIC_RELAXED);
    if (!h2o_timeout_is_linked(&up->sweep_entry))
        h2o_timeout_link(up->loop, &up->sweep_timeout, &up->sweep_entry);
    *handle = req;
    start(req);
    return 0;
}

void mx_upstream_cancel(mx_upstream_req_t *req)
{
    if (req->in_handler) {
        req->cancelled = true;
        return;
    }
    if (req->http != NULL)
        h2o_http1client_cancel(req->http);
    req_free(req);
}

void mx_upstream_pause(mx_upstream_req_t *req)
{
    if (!req->in_body || req->paused || req->http == NULL || req->http->sock == NULL)
        return;
    req->paused = true;
    req->deadline = UINT64_MAX; /* waiting for our own consumer, not for the homeserver */
    req->saved_read = req->http->sock->_cb.read;
    h2o_socket_read_stop(req->http->sock);
}

void mx_upstream_resume(mx_upstream_req_t *req)
{
    if (!req->paused)
        return;
    req->paused = false;
    req->deadline = h2o_now(req->up->loop) + req->stall_ms;
    if (req->http != NULL && req->http->sock != NULL && req->saved_read != NULL)
        h2o_socket_read_start(req->http->sock, req->saved_read);
}
