/* Requests to the homeserver for a client's call, answers buffered in request memory. The fetch state is a shared
 * object of the request pool: when the client goes away its dispose cancels the homeserver request, so no handler
 * runs on freed memory. */
#include "mxkeys/hs_forward.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "mxkeys/log.h"

typedef struct st_fetch_t {
    mx_call_t *call;
    mx_hs_cb cb;
    mx_upstream_req_t *up;
    mx_buf_t body;
    int status;
    h2o_header_t *headers;
    size_t nheaders;
} fetch_t;

static void on_fetch_dispose(void *p)
{
    fetch_t *f = p;
    if (f->up != NULL)
        mx_upstream_cancel(f->up);
    mx_buf_free(&f->body);
}

static int on_head(void *data, int status, const h2o_header_t *headers, size_t n)
{
    fetch_t *f = data;
    h2o_mem_pool_t *pool = &f->call->req->pool;
    f->status = status;
    f->headers = h2o_mem_alloc_pool(pool, sizeof(*f->headers) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        h2o_iovec_t *name = h2o_mem_alloc_pool(pool, sizeof(*name));
        *name = h2o_strdup(pool, headers[i].name->base, headers[i].name->len);
        f->headers[i].name = name;
        f->headers[i].orig_name = NULL;
        f->headers[i].value = h2o_strdup(pool, headers[i].value.base, headers[i].value.len);
    }
    f->nheaders = n;
    return 0;
}

static void deliver(fetch_t *f, mx_hs_answer_t *a)
{
    mx_call_t *call = f->call;
    f->up = NULL; /* finished: nothing left to cancel */
    f->cb(call, a);
}

static int on_body(void *data, const char *bytes, size_t len, bool final)
{
    fetch_t *f = data;
    if (f->body.len + len > MX_HS_MAX_ANSWER) {
        mx_warn("homeserver: an answer of more than %u bytes; giving up on it", MX_HS_MAX_ANSWER);
        mx_hs_answer_t a = {.status = 0, .error = MX_UPSTREAM_UNREACHABLE, .why = "answer too large"};
        deliver(f, &a);
        return -1;
    }
    mx_buf_append(&f->body, bytes, len);
    if (!final)
        return 0;
    mx_buf_putc(&f->body, '\0');
    f->body.len--;
    mx_hs_answer_t a = {.status = f->status,
                        .headers = f->headers,
                        .nheaders = f->nheaders,
                        .body = f->body.data ? f->body.data : "",
                        .len = f->body.len};
    deliver(f, &a);
    return 0;
}

static void on_error(void *data, mx_upstream_error_t kind, const char *why)
{
    fetch_t *f = data;
    mx_warn("homeserver: %s %s: %s", f->call->route->name, kind == MX_UPSTREAM_TIMEOUT ? "timed out" : "failed", why);
    mx_hs_answer_t a = {.status = 0, .error = kind, .why = why};
    deliver(f, &a);
}

static const mx_upstream_handlers_t fetch_handlers = {on_head, on_body, on_error};

/* Adds a client request header to the spec when present. */
static void pass_header(mx_call_t *call, mx_upstream_spec_t *spec, const h2o_token_t *token, const char *name)
{
    ssize_t i = h2o_find_header(&call->req->headers, token, -1);
    if (i >= 0 && spec->nheaders < MX_UPSTREAM_MAX_HEADERS) {
        h2o_iovec_t v = call->req->headers.entries[i].value;
        spec->headers[spec->nheaders++] = (mx_upstream_header_t){name, v.base, strlen(name), v.len};
    }
}

static void pass_header_by_name(mx_call_t *call, mx_upstream_spec_t *spec, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&call->req->headers, name, strlen(name), -1);
    if (i >= 0 && spec->nheaders < MX_UPSTREAM_MAX_HEADERS) {
        h2o_iovec_t v = call->req->headers.entries[i].value;
        spec->headers[spec->nheaders++] = (mx_upstream_header_t){name, v.base, strlen(name), v.len};
    }
}

/* A token in the query string moves to the Authorization header: a homeserver refuses both at once (Synapse does),
 * and the token stays out of its URLs. The rest of the target goes as it came, byte for byte. */
static void without_access_token(mx_call_t *call, mx_upstream_spec_t *spec)
{
    const char *q = memchr(spec->target, '?', spec->target_len);
    if (q == NULL)
        return;
    const char *end = spec->target + spec->target_len;
    char *out = mx_call_alloc(call, spec->target_len + 1), *o = out;
    memcpy(o, spec->target, (size_t)(q - spec->target));
    o += q - spec->target;
    char sep = '?';
    bool dropped = false;
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pend = amp ? amp : end;
        if ((size_t)(pend - p) >= 13 && memcmp(p, "access_token=", 13) == 0) {
            dropped = true;
        } else if (pend > p) {
            *o++ = sep;
            memcpy(o, p, (size_t)(pend - p));
            o += pend - p;
            sep = '&';
        }
        p = pend + 1;
    }
    if (dropped) {
        spec->target = out;
        spec->target_len = (size_t)(o - out);
    }
}

void mx_hs_spec(mx_call_t *call, mx_upstream_spec_t *spec, const char *method, const char *target, size_t target_len,
                const char *body, size_t body_len)
{
    memset(spec, 0, sizeof(*spec));
    spec->method = method;
    spec->target = target;
    spec->target_len = target_len;
    without_access_token(call, spec);
    spec->body = body;
    spec->body_len = body_len;
    if (h2o_find_header(&call->req->headers, H2O_TOKEN_AUTHORIZATION, -1) >= 0) {
        pass_header(call, spec, H2O_TOKEN_AUTHORIZATION, "Authorization");
    } else {
        /* The client put its token in the query string; a request mxkeys builds carries it in the header. */
        size_t len;
        const char *token = mx_call_access_token(call, &len);
        if (token != NULL) {
            char *v = mx_call_alloc(call, len + 8);
            memcpy(v, "Bearer ", 7);
            memcpy(v + 7, token, len);
            spec->headers[spec->nheaders++] = (mx_upstream_header_t){"Authorization", v, 13, len + 7};
        }
    }
    if (body_len > 0)
        spec->headers[spec->nheaders++] = (mx_upstream_header_t){"Content-Type", "application/json", 12, 16};
    pass_header(call, spec, H2O_TOKEN_USER_AGENT, "User-Agent");
    pass_header(call, spec, H2O_TOKEN_X_FORWARDED_FOR, "X-Forwarded-For");
    pass_header_by_name(call, spec, "x-forwarded-proto");
    pass_header_by_name(call, spec, "x-real-ip");
}

int mx_hs_fetch(mx_call_t *call, const mx_upstream_spec_t *spec, mx_hs_cb cb)
{
    fetch_t *f = h2o_mem_alloc_shared(&call->req->pool, sizeof(*f), on_fetch_dispose);
    memset(f, 0, sizeof(*f));
    f->call = call;
    f->cb = cb;
    /* f->up is set before any handler can run, and cleared by deliver(): an answer that comes at once leaves it NULL */
    if (call->worker->homeserver == NULL ||
        mx_upstream_start(call->worker->homeserver, spec, &fetch_handlers, f, &f->up) != 0) {
        f->up = NULL;
        mx_call_error(call, MX_ERR_HS_UNREACHABLE, "cannot send this request to the homeserver");
        return -1;
    }
    return 0;
}

bool mx_hs_header_passes(const h2o_header_t *h)
{
    static const char *const dropped[] = {"connection",       "keep-alive", "transfer-encoding", "content-length",
                                          "proxy-connection", "te",         "trailer",           "upgrade",
                                          "server",           "date",       "content-type"};
    const h2o_iovec_t *n = h->name;
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        if (n->len == strlen(dropped[i]) && strncasecmp(n->base, dropped[i], n->len) == 0)
            return false;
    /* mxkeys sets its own CORS headers on every answer */
    return !(n->len >= 15 && strncasecmp(n->base, "access-control-", 15) == 0);
}

void mx_hs_error(mx_call_t *call, const mx_hs_answer_t *a)
{
    if (a->error == MX_UPSTREAM_TIMEOUT)
        mx_call_error(call, MX_ERR_HS_TIMEOUT, "the homeserver did not answer in time");
    else if (a->error == MX_UPSTREAM_SHUTDOWN)
        mx_call_error_extra(call, MX_ERR_UNAVAILABLE, "\"retry_after_ms\":1000", "mxkeys is restarting; try again");
    else
        mx_call_error(call, MX_ERR_HS_UNREACHABLE, "the homeserver cannot be reached");
}

void mx_hs_pass(mx_call_t *call, const mx_hs_answer_t *a)
{
    if (a->status == 0) {
        mx_hs_error(call, a);
        return;
    }
    const char *type = "application/json";
    size_t type_len = 16;
    for (size_t i = 0; i < a->nheaders; i++) {
        const h2o_header_t *h = &a->headers[i];
        if (h->name->len == 12 && strncasecmp(h->name->base, "content-type", 12) == 0) {
            type = h->value.base;
            type_len = h->value.len;
        } else if (mx_hs_header_passes(h)) {
            mx_call_add_header(call, h->name->base, h->name->len, h->value.base, h->value.len);
        }
    }
    char *ct = mx_call_strdup(call, type, type_len);
    mx_call_respond_typed(call, a->status, ct, a->body, a->len);
}

static void on_forwarded(mx_call_t *call, const mx_hs_answer_t *a)
{
    mx_hs_pass(call, a);
}

void mx_hs_forward(mx_call_t *call)
{
    h2o_req_t *req = call->req;
    mx_upstream_spec_t spec;
    char *method = mx_call_strdup(call, req->method.base, req->method.len);
    mx_hs_spec(call, &spec, method, req->path.base, req->path.len, req->entity.base,
               req->entity.base ? req->entity.len : 0);
    spec.retry_safe = strcmp(method, "GET") == 0;
    (void)mx_hs_fetch(call, &spec, on_forwarded);
}
