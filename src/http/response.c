/* Sending responses: JSON with Content-Type and Content-Length, CORS headers on everything, Matrix error objects,
 * and one access-log line plus metrics per answered request. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "http_internal.h"
#include "mxkeys/error_body.h"
#include "mxkeys/log.h"
#include "mxkeys/metrics.h"

uint64_t mx_http_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

/* Browser clients (Element Web and friends) call from other origins: the spec asks for these on every answer. */
static void add_cors(h2o_req_t *req)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, H2O_STRLIT("*"));
    /* h2o 2.2.5 has no tokens for these two: add them by name. */
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-methods"), 0, NULL,
                          H2O_STRLIT("GET, POST, PUT, DELETE, OPTIONS"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
                          H2O_STRLIT("X-Requested-With, Content-Type, Authorization"));
}

static void send_body(h2o_req_t *req, int status, const char *content_type, size_t ctlen, const char *body, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    assert(req->res.status == 0 && "a request is answered once");
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    add_cors(req);
    if (content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, ctlen);
    req->res.content_length = len;
    h2o_start_response(req, &generator);
    h2o_iovec_t buf = h2o_iovec_init(body, len);
    h2o_send(req, &buf, len ? 1 : 0, H2O_SEND_STATE_FINAL);
}

static void account(h2o_req_t *req, mx_worker_t *w, size_t route, const char *route_name, const char *user, int status,
                    uint64_t started_ns)
{
    uint64_t now = mx_http_now_ns();
    uint64_t took = started_ns ? now - started_ns : 0;
    mx_metrics_observe(w->metrics, route, status, took);
    /* The route template, never the raw path: a path can carry an access_token query parameter. */
    if (mx_log_enabled(MX_LOG_INFO)) {
        if (route_name != NULL)
            mx_log(MX_LOG_INFO, "%s %d %.3fms %s", route_name, status, (double)took / 1e6, user && *user ? user : "-");
        else
            mx_log(MX_LOG_INFO, "%.*s (no route) %d", (int)(req->method.len > 16 ? 16 : req->method.len),
                   req->method.base, status);
    }
}

/* ---- calls ----------------------------------------------------------------------------------------------------- */

void mx_call_respond_status(mx_call_t *call, int status, const char *json, size_t len)
{
    mx_call_respond_typed(call, status, "application/json", json, len);
}

void mx_call_respond_typed(mx_call_t *call, int status, const char *content_type, const char *body, size_t len)
{
    if (call->_status != 0) {
        mx_error("%s: second response attempted (%d after %d)", call->route->name, status, call->_status);
        return;
    }
    call->_status = status;
    account(call->req, call->worker, call->route_index, call->route->name, call->user_id, status, call->_started_ns);
    send_body(call->req, status, content_type, strlen(content_type), body, len);
}

void mx_call_add_header(mx_call_t *call, const char *name, size_t name_len, const char *value, size_t value_len)
{
    h2o_req_t *req = call->req;
    h2o_iovec_t n = h2o_strdup(&req->pool, name, name_len), v = h2o_strdup(&req->pool, value, value_len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
}

void mx_call_respond(mx_call_t *call, int status, const char *json, size_t len)
{
    mx_call_respond_status(call, status, json, len);
}

void mx_call_respond_buf(mx_call_t *call, int status, mx_buf_t *buf)
{
    mx_call_respond_status(call, status, buf->data ? buf->data : "", buf->len);
}

static void on_req_buf_dispose(void *p)
{
    mx_buf_free(p);
}

/* A buffer freed with the request's pool. */
static mx_buf_t *req_buf(h2o_req_t *req)
{
    mx_buf_t *buf = h2o_mem_alloc_shared(&req->pool, sizeof(*buf), on_req_buf_dispose);
    *buf = (mx_buf_t)MX_BUF_INIT;
    return buf;
}

static void call_error_v(mx_call_t *call, mx_err_t err, const char *extra, const char *fmt, va_list ap)
{
    if (call->_streaming) { /* too late for an error status: cut the body short */
        mx_call_stream_abort(call);
        return;
    }
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    mx_buf_t *buf = req_buf(call->req);
    mx_error_body(buf, mx_err_code(err), extra, msg);
    mx_call_respond_buf(call, mx_err_status(err), buf);
}

void mx_call_error(mx_call_t *call, mx_err_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    call_error_v(call, err, NULL, fmt, ap);
    va_end(ap);
}

void mx_call_error_extra(mx_call_t *call, mx_err_t err, const char *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    call_error_v(call, err, extra, fmt, ap);
    va_end(ap);
}

/* ---- before routing (no call yet) ------------------------------------------------------------------------------ */

void mx_http_respond_plain_error(h2o_req_t *req, mx_worker_t *w, size_t route, mx_err_t err, const char *msg,
                                 unsigned allow)
{
    mx_buf_t *buf = req_buf(req);
    mx_error_body(buf, mx_err_code(err), NULL, msg);
    if (allow != 0) {
        char value[64];
        mx_method_allow_str(allow, value, sizeof(value));
        size_t n = strlen(value);
        char *v = h2o_mem_alloc_pool(&req->pool, n);
        memcpy(v, value, n);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, v, n);
    }
    account(req, w, route, NULL, NULL, mx_err_status(err), 0);
    send_body(req, mx_err_status(err), H2O_STRLIT("application/json"), buf->data, buf->len);
}

void mx_http_respond_options(h2o_req_t *req, mx_worker_t *w)
{
    account(req, w, MX_METRICS_UNROUTED, NULL, NULL, 204, 0);
    send_body(req, 204, NULL, 0, "", 0);
}

/* ---- streamed responses ----------------------------------------------------------------------------------------- */

void mx_call_stream_start(mx_call_t *call, int status, h2o_generator_t *generator)
{
    h2o_req_t *req = call->req;
    /* Counted when the stream ends (final chunk or abort), so the duration covers the whole body. */
    assert(req->res.status == 0 && "a request is answered once");
    call->_status = status;
    call->_streaming = true;
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    add_cors(req);
    if (h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1) < 0)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_start_response(req, generator);
}

void mx_call_stream_send(mx_call_t *call, const char *data, size_t len, bool final)
{
    if (final)
        account(call->req, call->worker, call->route_index, call->route->name, call->user_id, call->_status,
                call->_started_ns);
    h2o_iovec_t buf = h2o_iovec_init(data, len);
    h2o_send(call->req, &buf, len ? 1 : 0, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

void mx_call_stream_abort(mx_call_t *call)
{
    mx_warn("%s: streamed response aborted", call->route->name);
    /* The client saw a 200 header but a truncated body: count it as the server error it is. */
    account(call->req, call->worker, call->route_index, call->route->name, call->user_id, 500, call->_started_ns);
    h2o_send(call->req, NULL, 0, H2O_SEND_STATE_ERROR);
}

/* ---- h2o's own error answers ------------------------------------------------------------------------------------- */

/* h2o 2.2.5 answers some requests itself, before any handler runs, in text/plain: a body over its
 * max_request_entity_size (413, from the Content-Length alone or once a chunked body passes it), a broken
 * Content-Length or chunked body or an unknown Transfer-Encoding (400), an unknown Expect (417). It binds those
 * requests to the host's fallback path (every routed request binds "/"), so a filter there rewrites each of them as a
 * Matrix error object with the same status. The only answer it cannot reach is the fixed "400 Bad Request" h2o
 * writes straight to the socket when a request head does not parse as HTTP at all (or is over 8 KiB). */

typedef struct st_error_filter_t {
    h2o_filter_t super;
    size_t max_body_bytes;
} error_filter_t;

typedef struct st_error_ostream_t {
    h2o_ostream_t super;
    error_filter_t *filter;
} error_ostream_t;

static void on_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
    error_ostream_t *os = (error_ostream_t *)self;
    if (h2o_send_state_is_in_progress(state)) { /* h2o's errors come in one final send; anything else is dropped */
        h2o_ostream_send_next(self, req, NULL, 0, state);
        return;
    }
    int status = req->res.status;
    char msg[256];
    if (status == 413) {
        snprintf(msg, sizeof(msg), "request body is over the limit of %zu bytes", os->filter->max_body_bytes);
    } else {
        size_t n = 0;
        for (size_t i = 0; i < bufcnt && n < sizeof(msg) - 1; i++) {
            size_t take = bufs[i].len < sizeof(msg) - 1 - n ? bufs[i].len : sizeof(msg) - 1 - n;
            memcpy(msg + n, bufs[i].base, take);
            n += take;
        }
        msg[n] = '\0';
        if (n == 0)
            snprintf(msg, sizeof(msg), "%s", reason_phrase(status));
    }
    mx_buf_t *buf = req_buf(req);
    mx_error_body(buf, status == 413 ? mx_err_code(MX_ERR_TOO_LARGE) : "M_UNKNOWN", NULL, msg);
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct >= 0)
        req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
    else
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    add_cors(req);
    req->res.content_length = buf->len;
    mx_worker_t *w = H2O_STRUCT_FROM_MEMBER(mx_worker_t, ctx, req->conn->ctx);
    account(req, w, MX_METRICS_UNROUTED, NULL, NULL, status, 0);
    h2o_iovec_t body = h2o_iovec_init(buf->data, buf->len);
    bool head = req->input.method.len == 4 && memcmp(req->input.method.base, "HEAD", 4) == 0;
    h2o_ostream_send_next(self, req, &body, head ? 0 : 1, state);
}

static void on_error_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    if (req->res.status >= 400) {
        error_ostream_t *os = (error_ostream_t *)h2o_add_ostream(req, sizeof(*os), slot);
        os->super.do_send = on_error_send;
        os->filter = (error_filter_t *)self;
        slot = &os->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

void mx_http_register_error_filter(h2o_pathconf_t *fallback, size_t max_body_bytes)
{
    error_filter_t *f = (error_filter_t *)h2o_create_filter(fallback, sizeof(*f));
    f->super.on_setup_ostream = on_error_setup_ostream;
    f->max_body_bytes = max_body_bytes;
}
