/* GET {homeserver}/_matrix/client/v3/account/whoami with h2o 2.2.5's HTTP/1 client, on the worker's loop.
 * The homeserver's address is resolved once when the worker starts, so look-ups need no resolver thread; the socket
 * pool keeps connections to the homeserver alive between look-ups. */
#include "mxkeys/whoami_client.h"
#include <h2o/http1client.h>
#include <jansson.h>
#include <stdbool.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/log.h"

#define WHOAMI_PATH "/_matrix/client/v3/account/whoami"
#define MAX_ANSWER_BYTES 65536
#define POOL_CAPACITY 64
#define IDLE_KEEPALIVE_MS 30000

struct st_mx_whoami_client_t {
    h2o_evloop_t *loop;
    h2o_socketpool_t sockpool;
    h2o_timeout_t io_timeout;
    h2o_http1client_ctx_t ctx;
    char host[300]; /* Host header value */
    char path[600]; /* prefix + WHOAMI_PATH */
};

struct st_mx_whoami_req_t {
    mx_whoami_client_t *client;
    h2o_http1client_t *http;
    mx_whoami_cb cb;
    void *data;
    int status;
    bool retried;
    h2o_iovec_t request; /* malloc'd request head: must live until written */
};

/* Splits "http://host[:port][/prefix]". Returns 0 or -1 with a reason. */
static int parse_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen, char *prefix,
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

mx_whoami_client_t *mx_whoami_client_new(h2o_evloop_t *loop, const char *homeserver_url, unsigned timeout_ms, char *err,
                                         size_t errlen)
{
    char host[256], port[16], prefix[512];
    if (homeserver_url == NULL) {
        snprintf(err, errlen, "--auth homeserver needs --homeserver-url");
        return NULL;
    }
    if (parse_url(homeserver_url, host, sizeof(host), port, sizeof(port), prefix, sizeof(prefix), err, errlen) != 0)
        return NULL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--homeserver-url %s: %s", homeserver_url, gai_strerror(rc));
        return NULL;
    }
    mx_whoami_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        freeaddrinfo(res);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->loop = loop;
    h2o_socketpool_init_by_address(&c->sockpool, res->ai_addr, res->ai_addrlen, 0, POOL_CAPACITY);
    freeaddrinfo(res);
    h2o_socketpool_set_timeout(&c->sockpool, loop, IDLE_KEEPALIVE_MS);
    h2o_timeout_init(loop, &c->io_timeout, timeout_ms);
    c->ctx.loop = loop;
    c->ctx.io_timeout = &c->io_timeout;
    snprintf(c->host, sizeof(c->host), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    snprintf(c->path, sizeof(c->path), "%s%s", prefix, WHOAMI_PATH);
    return c;
}

void mx_whoami_client_free(mx_whoami_client_t *c)
{
    if (c == NULL)
        return;
    h2o_socketpool_dispose(&c->sockpool);
    h2o_timeout_dispose(c->loop, &c->io_timeout);
    free(c);
}

static void finish(mx_whoami_req_t *req, mx_whoami_status_t status, const char *user_id, const char *device_id)
{
    req->cb(req->data, status, user_id, device_id);
    free(req->request.base);
    free(req);
}

/* Says why (never with the token) once per failed look-up: an operator needs to see the homeserver is the problem. */
static void unavailable(mx_whoami_req_t *req, const char *why)
{
    if (req->status != 0)
        mx_warn("whoami: homeserver answered %d: %s", req->status, why);
    else
        mx_warn("whoami: homeserver unreachable: %s", why);
    finish(req, MX_WHOAMI_UNAVAILABLE, NULL, NULL);
}

/* A Matrix user id: '@', a server name after a ':', visible ASCII, at most 255 bytes (the spec's limit). */
static bool user_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 4 || n > 255 || s[0] != '@' || strchr(s, ':') == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* Device ids have no grammar in the spec; they end up in logs and stored keys, so no control characters. */
static bool device_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* The homeserver's errcode, for the log only when it looks like one (the answer is not ours to trust). */
static const char *errcode_for_log(const char *errcode, const char *otherwise)
{
    if (errcode == NULL || strlen(errcode) > 64)
        return otherwise;
    for (const char *p = errcode; *p != '\0'; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'))
            return otherwise;
    return errcode;
}

/* The homeserver's verdict on a complete answer. */
static void conclude(mx_whoami_req_t *req, const char *body, size_t len)
{
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    const char *errcode = json_string_value(json_object_get(v, "errcode"));
    if (req->status == 401) {
        finish(req, MX_WHOAMI_UNKNOWN_TOKEN, NULL, NULL);
    } else if (req->status == 403) {
        /* 403 is a token verdict only when the homeserver says so; any other 403 is not a reason to log a client
         * out (a 401 from mxkeys makes clients drop the session), so it is an outage-like answer. */
        if (errcode != NULL && (strcmp(errcode, "M_UNKNOWN_TOKEN") == 0 || strcmp(errcode, "M_MISSING_TOKEN") == 0))
            finish(req, MX_WHOAMI_UNKNOWN_TOKEN, NULL, NULL);
        else
            unavailable(req, errcode_for_log(errcode, "403 without a token errcode"));
    } else if (req->status != 200) {
        unavailable(req, errcode_for_log(errcode, "unexpected status"));
    } else {
        const char *user = json_string_value(json_object_get(v, "user_id"));
        json_t *dev = json_object_get(v, "device_id");
        if (!json_is_object(v))
            unavailable(req, "the whoami answer is not a JSON object");
        else if (user == NULL || !user_id_ok(user))
            unavailable(req, "the whoami answer has no valid user_id");
        else if (dev != NULL && !json_is_null(dev) && !(json_is_string(dev) && device_id_ok(json_string_value(dev))))
            unavailable(req, "the whoami answer has an invalid device_id");
        else
            finish(req, MX_WHOAMI_OK, user, json_string_value(dev));
    }
    json_decref(v);
}

static int on_body(h2o_http1client_t *http, const char *errstr)
{
    mx_whoami_req_t *req = http->data;
    h2o_buffer_t *in = http->sock->input;
    /* The body accumulates in the socket's input buffer (nothing consumes it) until the end of the answer. */
    if (errstr == NULL) {
        if (in->size <= MAX_ANSWER_BYTES)
            return 0;
        unavailable(req, "answer too large");
        return -1; /* h2o closes the client */
    }
    if (errstr != h2o_http1client_error_is_eos) {
        unavailable(req, errstr);
        return -1;
    }
    conclude(req, in->bytes, in->size);
    return 0;
}

static void start(mx_whoami_req_t *req);

static h2o_http1client_body_cb on_head(h2o_http1client_t *http, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    (void)minor_version, (void)msg, (void)headers, (void)num_headers, (void)rlen;
    mx_whoami_req_t *req = http->data;
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        /* A pooled keep-alive connection the homeserver closed just as we sent fails here without an answer: try once
         * more on a fresh connection (whoami is idempotent). A timeout is not retried: it would double the wait. */
        if (!req->retried && strcmp(errstr, "I/O timeout") != 0) {
            req->retried = true;
            start(req); /* h2o closes this attempt's client after we return */
            return NULL;
        }
        unavailable(req, errstr);
        return NULL;
    }
    req->status = status;
    if (errstr == h2o_http1client_error_is_eos) { /* no body (204, 304) */
        conclude(req, "", 0);
        return NULL;
    }
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *http, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head)
{
    mx_whoami_req_t *req = http->data;
    if (errstr != NULL) {
        unavailable(req, errstr);
        return NULL;
    }
    *reqbufs = &req->request;
    *reqbufcnt = 1;
    *method_is_head = 0;
    return on_head;
}

/* May call back before it returns (a pooled socket is handed over at once; a connect can fail at once). */
static void start(mx_whoami_req_t *req)
{
    mx_whoami_client_t *c = req->client;
    h2o_http1client_connect_with_pool(&req->http, req, &c->ctx, &c->sockpool, on_connect);
}

int mx_whoami_lookup(mx_whoami_client_t *c, const char *token, size_t len, mx_whoami_cb cb, void *data,
                     mx_whoami_req_t **handle)
{
    /* The token goes into a header: anything but visible ASCII could smuggle another header in. */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
            return -1;
    mx_whoami_req_t *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return -1;
    req->client = c;
    req->cb = cb;
    req->data = data;
    int n = asprintf(&req->request.base,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %.*s\r\nAccept: application/json\r\n"
                     "User-Agent: mxkeysd\r\n\r\n",
                     c->path, c->host, (int)len, token);
    if (n < 0) {
        free(req);
        return -1;
    }
    req->request.len = (size_t)n;
    *handle = req;
    start(req);
    return 0;
}

void mx_whoami_cancel(mx_whoami_req_t *req)
{
    h2o_http1client_cancel(req->http);
    free(req->request.base);
    free(req);
}
