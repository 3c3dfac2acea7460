/* The auth step of MX_ROUTE_SERVER routes (federation): the call's X-Matrix headers, method, raw request target and
 * parsed body handed to server_auth.c; the handler runs once the origin is authenticated. The check's state is a
 * shared object of the request pool, so a client that goes away cancels it. */
#include <string.h>
#include "http_internal.h"
#include "mxkeys/server_auth.h"

typedef struct st_call_server_auth_t {
    mx_server_auth_t auth; /* first: on_checked gets this pointer back */
    mx_call_t *call;
    void (*next)(mx_call_t *call);
    bool pending;
} call_server_auth_t;

static void on_dispose(void *p)
{
    call_server_auth_t *s = p;
    if (s->pending)
        mx_server_auth_cancel(&s->auth);
}

static void on_checked(mx_server_auth_t *auth, mx_server_key_status_t status, const char *origin, const char *why)
{
    call_server_auth_t *s = (call_server_auth_t *)auth;
    mx_call_t *call = s->call;
    s->pending = false;
    switch (status) {
    case MX_SERVER_KEY_OK:
        call->origin = mx_call_strdup(call, origin, strlen(origin));
        s->next(call);
        return;
    case MX_SERVER_KEY_REFUSED:
        mx_call_error(call, MX_ERR_UNAUTHORIZED, "%s", why);
        return;
    case MX_SERVER_KEY_UNAVAILABLE:
        mx_call_error_extra(call, MX_ERR_UNAVAILABLE, "\"retry_after_ms\":1000", "cannot check the origin's key: %s",
                            why);
        return;
    }
}

void mx_call_server_auth(mx_call_t *call, void (*next)(mx_call_t *call))
{
    h2o_req_t *req = call->req;
    if (call->worker->server_keys == NULL) {
        mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH,
                      "this mxkeys does not serve federation (start it with --homeserver-federation-url or "
                      "--homeserver-url)");
        return;
    }
    h2o_iovec_t values[8];
    size_t n = 0;
    for (ssize_t i = -1; n < sizeof(values) / sizeof(values[0]) &&
                         (i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, i)) >= 0;)
        values[n++] = req->headers.entries[i].value;
    call_server_auth_t *s = h2o_mem_alloc_shared(&req->pool, sizeof(*s), on_dispose);
    memset(s, 0, sizeof(*s));
    s->call = call;
    s->next = next;
    s->pending = true;
    s->auth.cb = on_checked;
    char *method = mx_call_strdup(call, req->method.base, req->method.len);
    /* the target as the origin sent and signed it, not h2o's normalised form */
    mx_server_auth_request_t r = {.method = method,
                                  .uri = req->input.path.base,
                                  .uri_len = req->input.path.len,
                                  .content = call->body,
                                  .server_name = call->config->server_name,
                                  .headers = values,
                                  .nheaders = n};
    mx_server_auth_start(&s->auth, call->worker->server_keys, &r);
}
