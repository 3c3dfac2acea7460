/* A loopback for endpoint handlers: the mx_call_* API of mxkeys/call.h without h2o or a database, so a fuzz target
 * can run a handler's real parse-and-validate path on any body. Whatever the handler does first that leaves the
 * validation (an error answer, a database job, a call to the homeserver, a wait) ends the run and is written down as
 * its outcome, one line of text that two runs can compare. Errors are built with the server's own mx_error_body and
 * checked on the spot: valid JSON, a Matrix errcode of the table, a 4xx status (validation must never answer 5xx).
 * Database jobs never complete, so no handler ever gets past its first one. */
#include "call_loopback.h"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/canonical_json.h"
#include "mxkeys/json_parse.h"
#include "mxkeys/error_body.h"
#include "mxkeys/hs_forward.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/revocations.h"
#include "mxkeys/backup_stream.h"
#include "mxkeys/server_keys.h"
#include "mxkeys/utf8.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "loopback: %s failed (%s:%d)\n", #c, __FILE__, __LINE__);                                  \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static struct {
    mx_buf_t *outcome;
    unsigned answers;         /* outcomes written: more than one is a double answer */
    const char *const *query; /* name, value, ..., NULL */
    mx_offload_job_t *offloaded;
    mx_hs_cb hs_cb;
    const char *hs_answer;
} lb;

/* Request memory: freed when the run ends. */
static struct {
    void (*fn)(void *);
    void *p;
} * owned;
static size_t nowned, owned_cap;

static void *own(void *p, void (*fn)(void *))
{
    REQUIRE(p != NULL);
    if (nowned == owned_cap) {
        owned_cap = owned_cap ? owned_cap * 2 : 64;
        owned = realloc(owned, owned_cap * sizeof(*owned));
        REQUIRE(owned != NULL);
    }
    owned[nowned].fn = fn;
    owned[nowned].p = p;
    nowned++;
    return p;
}

static void free_buf(void *p)
{
    mx_buf_free(p);
    free(p);
}

static void outcome(const char *kind)
{
    REQUIRE(lb.answers == 0); /* a handler answers once, or hands over once */
    lb.answers++;
    mx_buf_puts(lb.outcome, kind);
}

void lb_begin(mx_buf_t *out, const char *const *query, const char *hs_answer)
{
    lb.outcome = out;
    lb.answers = 0;
    lb.query = query;
    lb.offloaded = NULL;
    lb.hs_cb = NULL;
    lb.hs_answer = hs_answer;
}

void lb_run(mx_call_t *call, void (*handler)(mx_call_t *))
{
    handler(call);
    /* What the server runs later, run now: an offloaded check comes back, the homeserver answers. */
    if (lb.offloaded != NULL) {
        mx_offload_job_t *job = lb.offloaded;
        lb.offloaded = NULL;
        job->work(job);
        job->done(job);
    }
    if (lb.hs_cb != NULL) {
        mx_hs_cb cb = lb.hs_cb;
        lb.hs_cb = NULL;
        mx_hs_answer_t a = {.status = 200, .body = lb.hs_answer, .len = strlen(lb.hs_answer)};
        lb.answers = 0; /* the forward was not an answer: what the handler does with the homeserver's is */
        mx_buf_puts(lb.outcome, " -> ");
        cb(call, &a);
    }
    REQUIRE(lb.answers == 1); /* every request is answered or handed over: none is left hanging */
}

void lb_end(void)
{
    while (nowned > 0) { /* newest first, as the request's pool would */
        nowned--;
        owned[nowned].fn(owned[nowned].p);
    }
}

/* ---- mxkeys/call.h ------------------------------------------------------------------------------------------- */

void *mx_call_alloc(mx_call_t *call, size_t size)
{
    (void)call;
    return own(calloc(1, size ? size : 1), free);
}

char *mx_call_strdup(mx_call_t *call, const char *s, size_t len)
{
    char *p = mx_call_alloc(call, len + 1);
    memcpy(p, s, len);
    return p;
}

mx_buf_t *mx_call_buf(mx_call_t *call)
{
    (void)call;
    return own(calloc(1, sizeof(mx_buf_t)), free_buf);
}

const char *mx_call_query(mx_call_t *call, const char *name)
{
    (void)call;
    for (size_t i = 0; lb.query != NULL && lb.query[i] != NULL; i += 2)
        if (strcmp(lb.query[i], name) == 0)
            return lb.query[i + 1];
    return NULL;
}

void mx_call_respond_status(mx_call_t *call, int status, const char *json, size_t len)
{
    outcome("respond ");
    call->_status = status;
    mx_buf_printf(lb.outcome, "%d ", status);
    mx_buf_append(lb.outcome, json, len);
}

void mx_call_respond(mx_call_t *call, int status, const char *json, size_t len)
{
    mx_call_respond_status(call, status, json, len);
}

void mx_call_respond_buf(mx_call_t *call, int status, mx_buf_t *buf)
{
    mx_call_respond_status(call, status, buf->data ? buf->data : "", buf->len);
}

static void error_v(mx_call_t *call, mx_err_t err, const char *extra, const char *fmt, va_list ap)
{
    REQUIRE(err >= 0 && err < MX_ERR__COUNT);
    char msg[1024]; /* as the server formats it (src/http/response.c) */
    vsnprintf(msg, sizeof(msg), fmt, ap);
    mx_buf_t body = MX_BUF_INIT;
    mx_error_body(&body, mx_err_code(err), extra, msg);
    int status = mx_err_status(err);
    /* The bytes a client gets: one strict JSON object, valid UTF-8, naming an errcode of the table. */
    REQUIRE(mx_utf8_valid(body.data, body.len));
    char why[256];
    json_t *j = mx_json_parse(body.data, body.len, why, sizeof(why));
    REQUIRE(json_is_object(j));
    const char *errcode = json_string_value(json_object_get(j, "errcode"));
    REQUIRE(errcode != NULL && strncmp(errcode, "M_", 2) == 0 && mx_err_lookup(errcode, status) >= 0);
    REQUIRE(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    REQUIRE(status >= 400 && status < 500);
    outcome("error ");
    call->_status = status;
    mx_buf_printf(lb.outcome, "%d ", status);
    mx_buf_append(lb.outcome, body.data, body.len);
    mx_buf_free(&body);
}

void mx_call_error(mx_call_t *call, mx_err_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_v(call, err, NULL, fmt, ap);
    va_end(ap);
}

void mx_call_error_extra(mx_call_t *call, mx_err_t err, const char *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_v(call, err, extra, fmt, ap);
    va_end(ap);
}

/* A parameter as the outcome records it. JSON text is written re-encoded: a handler may hand the body on as the
 * client spelled it (the whole-backup PUT does, to save encoding it again), and only its value has to be the same. */
static void put_param(const char *v)
{
    json_t *j = v[0] == '{' || v[0] == '[' ? json_loads(v, 0, NULL) : NULL;
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    mx_buf_puts(lb.outcome, text != NULL ? text : v);
    free(text);
    json_decref(j);
}

static int db(mx_call_t *call, const mx_db_stmt_t *stmts, size_t n)
{
    (void)call;
    outcome("database");
    for (size_t s = 0; s < n; s++) {
        mx_buf_printf(lb.outcome, " [%d", (int)stmts[s].id);
        for (int i = 0; i < stmts[s].nparams; i++) {
            const char *v = stmts[s].values[i];
            /* A parameter goes to PostgreSQL as text: it must be valid UTF-8 without NUL (strlen sees to the NUL). */
            REQUIRE(v == NULL || mx_utf8_valid(v, strlen(v)));
            mx_buf_puts(lb.outcome, v != NULL ? " | " : " | NULL");
            if (v != NULL)
                put_param(v);
        }
        mx_buf_putc(lb.outcome, ']');
    }
    return 0;
}

int mx_call_db(mx_call_t *call, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb)
{
    (void)cb;
    return db(call, stmts, nstmts);
}

int mx_call_db_within(mx_call_t *call, unsigned timeout_ms, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb)
{
    (void)timeout_ms;
    (void)cb;
    return db(call, stmts, nstmts);
}

int mx_call_db_quiet(mx_call_t *call, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb)
{
    (void)cb;
    return db(call, stmts, nstmts);
}

bool mx_call_results_ok(mx_call_t *call, PGresult **results, size_t nresults)
{
    (void)call, (void)results, (void)nresults;
    REQUIRE(!"no database job ever completes in the loopback");
    return false;
}

void mx_call_later(mx_call_t *call, void (*cb)(mx_call_t *call))
{
    (void)call, (void)cb;
    outcome("later");
}

bool mx_call_offload(mx_call_t *call, mx_offload_job_t *job, mx_call_t **owner)
{
    REQUIRE(lb.offloaded == NULL);
    lb.offloaded = job;
    *owner = call;
    return true;
}

mx_call_t *mx_call_offload_return(mx_call_t **owner)
{
    mx_call_t *c = *owner;
    *owner = NULL;
    return c;
}

/* Request memory with a destructor (the signature upload keeps its state so): disposed of when the run ends. */
typedef struct st_shared_t {
    void (*dispose)(void *);
    max_align_t bytes[]; /* what the caller gets */
} shared_t;

static void free_shared(void *p)
{
    shared_t *s = p;
    if (s->dispose != NULL)
        s->dispose(s->bytes);
    free(s);
}

void *h2o_mem_alloc_shared(h2o_mem_pool_t *pool, size_t sz, void (*dispose)(void *))
{
    (void)pool;
    shared_t *s = own(calloc(1, sizeof(shared_t) + sz), free_shared);
    s->dispose = dispose;
    return s->bytes;
}

/* ---- the homeserver (sidecar routes): one canned answer ------------------------------------------------------ */

void mx_hs_spec(mx_call_t *call, mx_upstream_spec_t *spec, const char *method, const char *target, size_t target_len,
                const char *body, size_t body_len)
{
    (void)call;
    memset(spec, 0, sizeof(*spec));
    spec->method = method, spec->target = target, spec->target_len = target_len;
    spec->body = body, spec->body_len = body_len;
}

int mx_hs_fetch(mx_call_t *call, const mx_upstream_spec_t *spec, mx_hs_cb cb)
{
    (void)call;
    outcome("homeserver ");
    mx_buf_puts(lb.outcome, spec->method);
    lb.hs_cb = cb;
    return 0;
}

void mx_hs_pass(mx_call_t *call, const mx_hs_answer_t *answer)
{
    outcome("pass ");
    call->_status = answer->status;
    mx_buf_printf(lb.outcome, "%d", answer->status);
}

void mx_hs_forward(mx_call_t *call)
{
    call->_status = 200;
    outcome("forward");
}

/* ---- what the validation paths never reach (standalone: no identity mirror, no streams, no revocations) ---- */

bool mx_mirror_enabled(const mx_call_t *call)
{
    (void)call;
    return false;
}

/* The sidecar's device removals start with an identity-write marker whose lifetime is a parameter. */
const char *mx_mirror_ttl_text(mx_call_t *call)
{
    (void)call;
    return "30000";
}

#define UNREACHED(decl)                                                                                                \
    decl                                                                                                               \
    {                                                                                                                  \
        REQUIRE(!"unreached");                                                                                         \
    }
UNREACHED(void mx_mirror_forward(mx_call_t *call, const char *write_id, const char *body, size_t len, mx_hs_cb cb))
UNREACHED(void mx_mirror_forward_as(mx_call_t *call, const char *write_id, const char *method, const char *body,
                                    size_t len, bool retry_safe, mx_hs_cb cb))
UNREACHED(int mx_mirror_commit(mx_call_t *call, const char *write_id, const mx_db_stmt_t *stmts, size_t nstmts,
                               mx_call_db_cb cb))
UNREACHED(void mx_mirror_abandon(mx_call_t *call, const char *write_id, mx_err_t err, const char *message))
UNREACHED(void mx_mirror_abandon_ok(mx_call_t *call, const char *write_id, const char *json, size_t len))
UNREACHED(void mx_revocations_add(mx_revocations_t *r, const char *user_id, const char *device_id))
UNREACHED(void mx_server_keys_stats_add(const mx_server_keys_t *sk, mx_server_keys_stats_t *sum))
UNREACHED(int mx_db_result_ok(const PGresult *res))
UNREACHED(void mx_backup_stream_sessions(mx_call_t *call, const char *version, const char *room_id))
UNREACHED(void mx_backup_write_key_data(mx_buf_t *out, const PGresult *res, int row))
