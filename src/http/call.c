/* The request pipeline in front of every handler: route -> body limit -> JSON -> auth -> handler. Each step answers
 * with the Matrix error the spec names before any work is done for the next. */
#include "http_internal.h"
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mxkeys/auth.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/json_parse.h"
#include "mxkeys/log.h"
#include "mxkeys/metrics.h"
#include "mxkeys/query_cache.h"
#include "mxkeys/db_statements.h"
#include "mxkeys/request_checks.h"
#include "mxkeys/utf8.h"

/* The auth step's state; lives in the call, so in the request pool. */
typedef struct st_mx_call_auth_t {
    mx_auth_waiter_t waiter;
    mx_call_t *call;
    bool pending;
} mx_call_auth_t;

static void on_call_dispose(void *p)
{
    mx_call_t *call = p;
    /* The client is gone (or the response is done): nothing may call back into this memory any more. */
    if (call->_job != NULL) {
        mx_db_cancel(call->_job);
        call->_job = NULL;
    }
    if (call->_offload_owner != NULL) { /* the job still runs, and frees itself when it comes back */
        *call->_offload_owner = NULL;
        call->_offload_owner = NULL;
    }
    if (h2o_timeout_is_linked(&call->_later))
        h2o_timeout_unlink(&call->_later);
    if (call->_auth != NULL && call->_auth->pending) {
        mx_auth_cancel(&call->_auth->waiter);
        call->_auth->pending = false;
    }
    if (call->body != NULL)
        json_decref(call->body);
    call->worker->inflight--;
}

/* ---- small request helpers ----------------------------------------------------------------------------------- */

/* Percent-decodes into pool memory; returns NULL on a malformed escape or an embedded NUL. */
static char *percent_decode(h2o_mem_pool_t *pool, const char *s, size_t len, bool plus_is_space)
{
    char *out = h2o_mem_alloc_pool(pool, len + 1);
    long n = mx_http_percent_decode(s, len, out, plus_is_space);
    if (n < 0 || memchr(out, '\0', (size_t)n) != NULL)
        return NULL;
    out[n] = '\0';
    return out;
}

void *mx_call_alloc(mx_call_t *call, size_t size)
{
    return h2o_mem_alloc_pool(&call->req->pool, size);
}

char *mx_call_strdup(mx_call_t *call, const char *s, size_t len)
{
    char *p = h2o_mem_alloc_pool(&call->req->pool, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static void on_buf_dispose(void *p)
{
    mx_buf_free(p);
}

mx_buf_t *mx_call_buf(mx_call_t *call)
{
    mx_buf_t *buf = h2o_mem_alloc_shared(&call->req->pool, sizeof(*buf), on_buf_dispose);
    *buf = (mx_buf_t)MX_BUF_INIT;
    return buf;
}

/* Finds a raw (still encoded) query parameter value; NULL when absent. */
static const char *find_query(h2o_req_t *req, const char *name, size_t *vlen)
{
    if (req->query_at == SIZE_MAX)
        return NULL;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nlen = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pend = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pend - p));
        const char *kend = eq ? eq : pend;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            const char *v = eq ? eq + 1 : pend;
            *vlen = (size_t)(pend - v);
            return v;
        }
        p = pend + 1;
    }
    return NULL;
}

const char *mx_call_query(mx_call_t *call, const char *name)
{
    size_t vlen;
    const char *v = find_query(call->req, name, &vlen);
    return v ? percent_decode(&call->req->pool, v, vlen, true) : NULL;
}

/* ---- DB -------------------------------------------------------------------------------------------------------- */

/* How long a client should wait before retrying when the database is down or stalled: about one reconnect try. */
#define DB_RETRY_AFTER "\"retry_after_ms\":1000"

static void db_unavailable(mx_call_t *call, mx_db_status_t status)
{
    if (call->_streaming)
        mx_call_stream_abort(call);
    else if (status == MX_DB_TIMEOUT)
        /* The statements were sent: a write may yet commit (or already has). Every mxkeys write can be retried. */
        mx_call_error_extra(call, MX_ERR_UNAVAILABLE, DB_RETRY_AFTER,
                            "the database did not answer in time; the request may or may not have been applied: "
                            "retry it");
    else
        mx_call_error_extra(call, MX_ERR_UNAVAILABLE, DB_RETRY_AFTER, "the database is unavailable; try again shortly");
}

/* ---- the query cache's read-your-writes ------------------------------------------------------------------------- */

struct st_mx_call_changed_t {
    struct st_mx_call_changed_t *next;
    const char *user;
    size_t len;
};

static void note_changed(void *ctx, const char *user, size_t len)
{
    mx_call_t *call = ctx;
    struct st_mx_call_changed_t *c = mx_call_alloc(call, sizeof(*c));
    c->user = mx_call_strdup(call, user, len);
    c->len = len;
    c->next = call->_changed;
    call->_changed = c;
}

/* Before a job is sent: the users whose query answers it may change (copied: the statements' arrays are the
 * caller's, often on its stack). */
static void note_changes(mx_call_t *call, const mx_db_stmt_t *stmts, size_t nstmts)
{
    call->_changed = NULL;
    if (call->worker->server->query_cache == NULL)
        return;
    for (size_t i = 0; i < nstmts; i++)
        mx_stmt_changed_users((int)stmts[i].id, stmts[i].values, stmts[i].nparams, note_changed, call);
}

/* When the job is over, whatever its outcome (a write that timed out may still commit): forgotten before anyone is
 * answered, so the next query on any worker reads the database. */
static void forget_changes(mx_call_t *call)
{
    for (struct st_mx_call_changed_t *c = call->_changed; c != NULL; c = c->next)
        mx_query_cache_forget(call->worker->server->query_cache, c->user, c->len);
    call->_changed = NULL;
}

static void on_call_db(void *owner, mx_db_status_t status, PGresult **results, size_t nresults)
{
    mx_call_t *call = owner;
    call->_job = NULL;
    forget_changes(call);
    if (status != MX_DB_OK && call->_db_quiet) {
        call->_db_quiet = false;
        call->_db_cb(call, NULL, 0);
        return;
    }
    call->_db_quiet = false;
    if (status != MX_DB_OK) {
        db_unavailable(call, status);
        return;
    }
    call->_db_cb(call, results, nresults);
}

int mx_call_db(mx_call_t *call, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb)
{
    call->_db_cb = cb;
    note_changes(call, stmts, nstmts);
    switch (mx_db_submit(call->worker->db, stmts, nstmts, on_call_db, call, &call->_job)) {
    case MX_DB_OK:
        return 0;
    case MX_DB_BUSY:
        if (call->_streaming)
            mx_call_stream_abort(call);
        else
            mx_call_error_extra(call, MX_ERR_LIMIT_EXCEEDED, "\"retry_after_ms\":100",
                                "too many requests in flight on this worker; retry shortly");
        return -1;
    default:
        db_unavailable(call, MX_DB_DOWN);
        return -1;
    }
}

int mx_call_db_within(mx_call_t *call, unsigned timeout_ms, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb)
{
    if (mx_call_db(call, stmts, nstmts, cb) != 0)
        return -1;
    mx_db_set_deadline(call->_job, timeout_ms);
    return 0;
}

static void on_later(h2o_timeout_entry_t *entry)
{
    mx_call_t *call = H2O_STRUCT_FROM_MEMBER(mx_call_t, _later, entry);
    call->_later_cb(call);
}

void mx_call_later(mx_call_t *call, void (*cb)(mx_call_t *call))
{
    call->_later_cb = cb;
    call->_later.cb = on_later;
    h2o_timeout_link(call->worker->loop, &call->worker->later_timeout, &call->_later);
}

int mx_call_db_quiet(mx_call_t *call, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb)
{
    call->_db_cb = cb;
    call->_db_quiet = true;
    note_changes(call, stmts, nstmts);
    if (mx_db_submit(call->worker->db, stmts, nstmts, on_call_db, call, &call->_job) != MX_DB_OK) {
        call->_db_quiet = false;
        return -1;
    }
    return 0;
}

bool mx_call_offload(mx_call_t *call, mx_offload_job_t *job, mx_call_t **owner)
{
    if (!mx_offload_submit(call->worker->server->offload, &call->worker->offload_done, job))
        return false;
    *owner = call;
    call->_offload_owner = owner;
    return true;
}

mx_call_t *mx_call_offload_return(mx_call_t **owner)
{
    mx_call_t *call = *owner;
    if (call != NULL)
        call->_offload_owner = NULL;
    *owner = NULL;
    return call;
}

bool mx_call_results_ok(mx_call_t *call, PGresult **results, size_t nresults)
{
    for (size_t i = 0; i < nresults; i++) {
        if (!mx_db_result_ok(results[i])) {
            mx_call_db_error(call, results[i]);
            return false;
        }
    }
    return true;
}

/* The extra members of a client error raised in SQL: DETAIL's text after "<status> <errcode>", empty or one JSON
 * object (mx_client_error in sql/functions/common.sql). Returns them compact and without braces, ready for
 * mx_call_error_extra ("" when there are none), or NULL when the text is not an object. */
static const char *sql_error_extra(mx_call_t *call, const char *rest)
{
    rest += strspn(rest, " ");
    if (*rest == '\0')
        return "";
    json_t *obj = json_loads(rest, 0, NULL);
    char *text = json_is_object(obj) ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text == NULL)
        return NULL;
    size_t len = strlen(text); /* "{...}": at least the two braces */
    const char *members = mx_call_strdup(call, text + 1, len - 2);
    free(text);
    return members;
}

/* Errors of a server that is going away or not (yet) the primary, rather than of the request: a standby's refusal to
 * write (25006, a conninfo with target_session_attrs=any), a shutdown or crash in progress (57P01-57P03), a lost
 * connection (class 08). Each comes with a Sync, so the transaction was rolled back: nothing was applied. */
static bool is_server_switching(const char *state)
{
    return strcmp(state, "25006") == 0 || strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
           strcmp(state, "57P03") == 0 || strncmp(state, "08", 2) == 0;
}

void mx_call_db_error(mx_call_t *call, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state != NULL && strcmp(state, MX_SQLSTATE_CLIENT_ERROR) == 0) {
        const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        int status = 0, used = 0;
        char errcode[64] = "";
        if (detail != NULL && sscanf(detail, "%d %63s%n", &status, errcode, &used) == 2) {
            int err = mx_err_lookup(errcode, status);
            const char *extra = err >= 0 ? sql_error_extra(call, detail + used) : NULL;
            if (extra != NULL) {
                mx_call_error_extra(call, (mx_err_t)err, extra, "%s", msg ? msg : "");
                return;
            }
        }
        mx_error("db: malformed client error from SQL (detail \"%s\")", detail ? detail : "");
    } else if (state != NULL && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
        mx_call_error_extra(call, MX_ERR_LIMIT_EXCEEDED, "\"retry_after_ms\":50",
                            "concurrent update conflict; retry the request");
        return;
    } else if (state != NULL && is_server_switching(state)) {
        mx_call_error_extra(call, MX_ERR_UNAVAILABLE, DB_RETRY_AFTER,
                            "the database is switching servers; the request was not applied: retry it");
        return;
    } else {
        /* Only the SQLSTATE and primary message: details can quote row values, i.e. key material. */
        mx_error("db: %s failed: %s %s", call->route->name, state ? state : "-",
                 res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "no result");
    }
    mx_call_error(call, MX_ERR_INTERNAL, "internal server error");
}

/* ---- auth ------------------------------------------------------------------------------------------------------ */

static void run_handler(mx_call_t *call)
{
    call->route->handler(call);
}

static void on_auth(mx_auth_waiter_t *waiter, mx_auth_status_t status, const char *user_id, const char *device_id)
{
    mx_call_auth_t *auth = H2O_STRUCT_FROM_MEMBER(mx_call_auth_t, waiter, waiter);
    mx_call_t *call = auth->call;
    auth->pending = false;
    switch (status) {
    case MX_AUTH_OK:
        call->user_id = mx_call_strdup(call, user_id, strlen(user_id));
        call->device_id = mx_call_strdup(call, device_id ? device_id : "", device_id ? strlen(device_id) : 0);
        run_handler(call);
        return;
    case MX_AUTH_UNKNOWN_TOKEN:
        mx_call_error(call, MX_ERR_UNKNOWN_TOKEN, "unrecognised access token");
        return;
    case MX_AUTH_SOFT_LOGOUT:
        mx_call_error_extra(call, MX_ERR_UNKNOWN_TOKEN, "\"soft_logout\":true",
                            "the homeserver no longer accepts this access token: log in again");
        return;
    case MX_AUTH_BUSY:
        mx_call_error_extra(call, MX_ERR_LIMIT_EXCEEDED, "\"retry_after_ms\":100", "server busy; retry shortly");
        return;
    default:
        mx_call_error_extra(call, MX_ERR_UNAVAILABLE, DB_RETRY_AFTER,
                            "cannot validate the access token right now; try again shortly");
        return;
    }
}

/* The access token from `Authorization: Bearer` or, for old clients, the `access_token` query parameter. */
const char *mx_call_access_token(mx_call_t *call, size_t *len)
{
    h2o_req_t *req = call->req;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (v.len > 7 && strncasecmp(v.base, "Bearer ", 7) == 0) {
            size_t off = 7;
            while (off < v.len && v.base[off] == ' ')
                off++;
            *len = v.len - off;
            return *len ? v.base + off : NULL;
        }
        return NULL;
    }
    const char *q = mx_call_query(call, "access_token");
    if (q != NULL && *q != '\0') {
        *len = strlen(q);
        return q;
    }
    return NULL;
}

static void authorise(mx_call_t *call)
{
    size_t len = 0;
    const char *token;
    switch (call->route->auth) {
    case MX_ROUTE_PUBLIC:
        run_handler(call);
        return;
    case MX_ROUTE_ADMIN: {
        const char *admin = call->config->admin_token;
        if (admin == NULL) {
            mx_call_error(call, MX_ERR_FORBIDDEN, "the admin API is disabled (start mxkeysd with --admin-token)");
            return;
        }
        if ((token = mx_call_access_token(call, &len)) == NULL) {
            mx_call_error(call, MX_ERR_MISSING_TOKEN, "missing admin access token");
            return;
        }
        /* Constant time over the configured token's length, so timing reveals nothing of it. */
        if (len != strlen(admin) || sodium_memcmp(token, admin, len) != 0) {
            mx_call_error(call, MX_ERR_UNKNOWN_TOKEN, "unrecognised admin token");
            return;
        }
        call->user_id = "";
        call->device_id = "";
        run_handler(call);
        return;
    }
    case MX_ROUTE_SERVER:
        mx_call_server_auth(call, run_handler);
        return;
    case MX_ROUTE_USER:
        if ((token = mx_call_access_token(call, &len)) == NULL) {
            mx_call_error(call, MX_ERR_MISSING_TOKEN, "missing access token");
            return;
        }
        call->_auth = h2o_mem_alloc_pool(&call->req->pool, sizeof(*call->_auth));
        memset(call->_auth, 0, sizeof(*call->_auth));
        call->_auth->call = call;
        call->_auth->pending = true;
        call->_auth->waiter.cb = on_auth;
        mx_auth_resolve(call->worker->auth, token, len, &call->_auth->waiter);
        return;
    }
}

/* ---- entry ----------------------------------------------------------------------------------------------------- */

/* Takes a parsed body (NULL: not JSON, `why` says where). False when it answered the call with an error. */
static bool accept_body(mx_call_t *call, json_t *body, const char *why)
{
    if (body == NULL) {
        mx_call_error(call, MX_ERR_NOT_JSON, "request body is not valid JSON: %s", why);
        return false;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        mx_call_error(call, MX_ERR_BAD_JSON, "request body must be a JSON object");
        return false;
    }
    call->body = body;
    return true;
}

/* Bodies from this size on are parsed off the event loop: a 100-session backup write (~100 KB) takes about a
 * millisecond to parse, a 1 MiB body ten, and every other request of the worker would wait for it. */
#define PARSE_OFF_LOOP_BYTES 16384
#define PARSE_WHY_LEN 200

typedef struct st_body_parse_t {
    mx_offload_job_t job; /* first member: the callbacks get this pointer back */
    mx_call_t *call;      /* NULL once the client is gone */
    char *text;           /* a copy of the body: the job must not read request memory */
    size_t len;
    json_t *body;
    char why[PARSE_WHY_LEN];
} body_parse_t;

static void parse_off_loop(mx_offload_job_t *job)
{
    body_parse_t *bp = (body_parse_t *)job;
    bp->body = mx_json_parse(bp->text, bp->len, bp->why, sizeof(bp->why));
}

static void on_parsed(mx_offload_job_t *job)
{
    body_parse_t *bp = (body_parse_t *)job;
    mx_call_t *call = mx_call_offload_return(&bp->call);
    if (call == NULL)
        json_decref(bp->body);
    else if (accept_body(call, bp->body, bp->why))
        authorise(call);
    free(bp->text);
    free(bp);
}

typedef enum en_body_status_t { BODY_READY, BODY_PARSING, BODY_ANSWERED } body_status_t;

/* Parses the body per the route's contract: ready, being parsed off the loop (on_parsed goes on), or answered. */
static body_status_t read_body(mx_call_t *call)
{
    h2o_req_t *req = call->req;
    if (req->entity.len > call->config->max_body_bytes) {
        mx_call_error(call, MX_ERR_TOO_LARGE, "request body is %zu bytes; the limit is %zu", req->entity.len,
                      call->config->max_body_bytes);
        return BODY_ANSWERED;
    }
    if (call->route->body == MX_BODY_NONE)
        return BODY_READY;
    if (req->entity.base == NULL || req->entity.len == 0) {
        if (call->route->body == MX_BODY_OPTIONAL)
            return BODY_READY;
        mx_call_error(call, MX_ERR_NOT_JSON, "request body is empty; expected a JSON object");
        return BODY_ANSWERED;
    }
    if (req->entity.len >= PARSE_OFF_LOOP_BYTES) {
        body_parse_t *bp = calloc(1, sizeof(*bp));
        if (bp != NULL && (bp->text = malloc(req->entity.len)) != NULL) {
            memcpy(bp->text, req->entity.base, req->entity.len);
            bp->len = req->entity.len;
            bp->job.work = parse_off_loop;
            bp->job.done = on_parsed;
            if (mx_call_offload(call, &bp->job, &bp->call))
                return BODY_PARSING;
            free(bp->text);
        }
        free(bp); /* no memory for the copy, or the offload queue is full: parse here after all */
    }
    char why[PARSE_WHY_LEN];
    return accept_body(call, mx_json_parse(req->entity.base, req->entity.len, why, sizeof(why)), why) ? BODY_READY
                                                                                                      : BODY_ANSWERED;
}

int mx_http_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    mx_worker_t *w = H2O_STRUCT_FROM_MEMBER(mx_worker_t, ctx, req->conn->ctx);
    uint64_t started = mx_http_now_ns();
    const char *why;
    if (!mx_http_framing_ok(req, &why)) {
        /* h2o framed the body one way, a proxy in front may have framed it another: the rest of the connection
         * cannot be trusted, so it is closed after the answer. */
        req->http1_is_persistent = 0;
        mx_http_respond_plain_error(req, w, MX_METRICS_UNROUTED, MX_ERR_BAD_REQUEST, why, 0);
        return 0;
    }
    unsigned method = mx_method_parse(req->method.base, req->method.len);
    if (method == MX_METHOD_OPTIONS) {
        /* CORS pre-flight: answered for every path, without authentication (the spec asks servers to). */
        mx_http_respond_options(req, w);
        return 0;
    }
    size_t pathlen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    mx_route_match_t m;
    unsigned allowed = 0;
    const mx_server_t *server = w->server;
    switch (mx_router_match(server->routes, server->nroutes, method, req->path.base, pathlen, &m, &allowed)) {
    case MX_ROUTE_NO_PATH:
        mx_http_respond_plain_error(req, w, MX_METRICS_UNROUTED, MX_ERR_UNRECOGNIZED_PATH, "unrecognised path", 0);
        return 0;
    case MX_ROUTE_WRONG_METHOD:
        mx_http_respond_plain_error(req, w, MX_METRICS_UNROUTED, MX_ERR_UNRECOGNIZED_METHOD,
                                    "method not allowed on this path", allowed);
        return 0;
    case MX_ROUTE_FOUND:
        break;
    }
    /* Every query value is text before any handler reads one (a handler only looks at the ones it knows). */
    if (!mx_http_query_ok(req, &why)) {
        mx_http_respond_plain_error(req, w, m.index, MX_ERR_INVALID_PARAM, why, 0);
        return 0;
    }

    mx_call_t *call = h2o_mem_alloc_shared(&req->pool, sizeof(*call), on_call_dispose);
    memset(call, 0, sizeof(*call));
    call->req = req;
    call->worker = w;
    call->config = w->server->config;
    call->route = m.route;
    call->route_index = m.index;
    call->_started_ns = started;
    w->inflight++;
    for (size_t i = 0; i < m.nparams; i++) {
        call->params[i] = percent_decode(&req->pool, m.params[i].base, m.params[i].len, false);
        if (call->params[i] == NULL) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "malformed percent-encoding in the path");
            return 0;
        }
        /* Ids go into JSON answers and into PostgreSQL text: both need UTF-8. */
        if (!mx_utf8_valid(call->params[i], strlen(call->params[i]))) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "a path parameter is not valid UTF-8");
            return 0;
        }
    }
    call->nparams = m.nparams;
    if (read_body(call) == BODY_READY)
        authorise(call); /* a body parsed off the loop continues from on_parsed */
    return 0;
}
