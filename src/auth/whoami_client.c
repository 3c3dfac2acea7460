/* GET {homeserver}/_matrix/client/v3/account/whoami on the worker's upstream client (mxkeys/upstream.h), which
 * owns the connection pool, the deadline and the one retry on a kept-alive connection closed under us. */
#include "mxkeys/whoami_client.h"
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/buf.h"
#include "mxkeys/log.h"
#include <sodium.h>

#define WHOAMI_PATH "/_matrix/client/v3/account/whoami"
#define MAX_ANSWER_BYTES 65536

struct st_mx_whoami_client_t {
    mx_upstream_t *up;
    unsigned timeout_ms;
};

struct st_mx_whoami_req_t {
    mx_whoami_client_t *client;
    mx_upstream_req_t *up;
    mx_whoami_cb cb;
    void *data;
    int status;
    mx_buf_t body;
};

mx_whoami_client_t *mx_whoami_client_new(mx_upstream_t *up, unsigned timeout_ms)
{
    mx_whoami_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->up = up;
    c->timeout_ms = timeout_ms;
    return c;
}

void mx_whoami_client_free(mx_whoami_client_t *c)
{
    free(c);
}

static void finish(mx_whoami_req_t *req, mx_whoami_status_t status, const char *user_id, const char *device_id)
{
    req->cb(req->data, status, user_id, device_id);
    mx_buf_free(&req->body);
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
        /* soft_logout is the homeserver's word to the client: it is passed on with mxkeys' own 401 */
        finish(req, json_is_true(json_object_get(v, "soft_logout")) ? MX_WHOAMI_SOFT_LOGOUT : MX_WHOAMI_UNKNOWN_TOKEN,
               NULL, NULL);
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

static int on_head(void *data, int status, const h2o_header_t *headers, size_t nheaders)
{
    (void)headers, (void)nheaders;
    ((mx_whoami_req_t *)data)->status = status;
    return 0;
}

static int on_body(void *data, const char *bytes, size_t len, bool final)
{
    mx_whoami_req_t *req = data;
    if (req->body.len + len > MAX_ANSWER_BYTES) {
        req->up = NULL;
        unavailable(req, "answer too large");
        return -1;
    }
    mx_buf_append(&req->body, bytes, len);
    if (final) {
        req->up = NULL;
        conclude(req, req->body.data ? req->body.data : "", req->body.len);
    }
    return 0;
}

static void on_error(void *data, mx_upstream_error_t kind, const char *why)
{
    mx_whoami_req_t *req = data;
    req->up = NULL;
    unavailable(req, kind == MX_UPSTREAM_TIMEOUT ? "I/O timeout" : why);
}

static const mx_upstream_handlers_t handlers = {on_head, on_body, on_error};

int mx_whoami_lookup(mx_whoami_client_t *c, const char *token, size_t len, mx_whoami_cb cb, void *data,
                     mx_whoami_req_t **handle)
{
    /* The token goes into a header: anything but visible ASCII could smuggle another header in. */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
            return -1;
    mx_whoami_req_t *req = calloc(1, sizeof(*req));
    char *auth = malloc(len + 8);
    if (req == NULL || auth == NULL) {
        free(req);
        free(auth);
        return -1;
    }
    memcpy(auth, "Bearer ", 7);
    memcpy(auth + 7, token, len);
    req->client = c;
    req->cb = cb;
    req->data = data;
    mx_upstream_spec_t spec = {.method = "GET",
                               .target = WHOAMI_PATH,
                               .target_len = strlen(WHOAMI_PATH),
                               .headers = {{"Authorization", auth, 13, len + 7}, {"Accept", "application/json", 6, 16}},
                               .nheaders = 2,
                               .deadline_ms = c->timeout_ms,
                               .retry_safe = true};
    *handle = req;
    int rc = mx_upstream_start(c->up, &spec, &handlers, req, &req->up);
    sodium_memzero(auth, len + 7);
    free(auth);
    if (rc != 0) {
        free(req);
        return -1;
    }
    return 0;
}

void mx_whoami_cancel(mx_whoami_req_t *req)
{
    if (req->up != NULL)
        mx_upstream_cancel(req->up);
    mx_buf_free(&req->body);
    free(req);
}
