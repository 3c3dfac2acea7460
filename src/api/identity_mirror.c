/* The homeserver-first protocol of identity writes; see include/mxkeys/identity_mirror.h. */
#include "mxkeys/identity_mirror.h"
#include <stdio.h>
#include <string.h>
#include "mxkeys/log.h"

/* Beyond the forward's own deadline: room for the settle job to reach the database. */
#define SETTLE_MARGIN_MS 3000

typedef struct st_mirror_t {
    const char *write_id;
    mx_hs_cb accepted;
    mx_call_db_cb commit_cb;
    mx_hs_answer_t refusal; /* what the client gets once the marker is gone (request memory) */
    enum { AFTER_END_PASS, AFTER_END_ERROR, AFTER_END_OK, AFTER_END_NOTHING } after_end;
    mx_err_t err;
    const char *message;
    const char *ok_json;
    size_t ok_len;
} mirror_t;

static mirror_t *mirror_of(mx_call_t *call)
{
    if (call->ext == NULL) {
        mirror_t *m = mx_call_alloc(call, sizeof(*m));
        memset(m, 0, sizeof(*m));
        call->ext = m;
    }
    return call->ext;
}

bool mx_mirror_enabled(const mx_call_t *call)
{
    return call->config->auth_mode == MX_AUTH_HOMESERVER;
}

const char *mx_mirror_ttl_text(mx_call_t *call)
{
    char *t = mx_call_alloc(call, 16);
    snprintf(t, 16, "%u", call->config->homeserver_timeout_ms + SETTLE_MARGIN_MS);
    return t;
}

static void answer_after_end(mx_call_t *call)
{
    mirror_t *m = mirror_of(call);
    switch (m->after_end) {
    case AFTER_END_PASS:
        mx_hs_pass(call, &m->refusal);
        return;
    case AFTER_END_ERROR:
        mx_call_error(call, m->err, "%s", m->message);
        return;
    case AFTER_END_OK:
        mx_call_respond(call, 200, m->ok_json, m->ok_len);
        return;
    case AFTER_END_NOTHING:
        return;
    }
}

static void on_ended(mx_call_t *call, PGresult **results, size_t n)
{
    (void)results, (void)n; /* a failed drop leaves the marker to expire: waiting queries then go on by themselves */
    answer_after_end(call);
}

/* Drops the marker, then answers as m->after_end says. */
static void end_write(mx_call_t *call)
{
    mirror_t *m = mirror_of(call);
    const char *params[1] = {m->write_id};
    mx_db_stmt_t stmt = {.id = MX_STMT_IDENTITY_END, .nparams = 1, .values = params};
    if (mx_call_db_quiet(call, &stmt, 1, on_ended) != 0)
        answer_after_end(call);
}

static void on_homeserver_answer(mx_call_t *call, const mx_hs_answer_t *a)
{
    mirror_t *m = mirror_of(call);
    if (a->status >= 200 && a->status < 300) {
        m->accepted(call, a);
        return;
    }
    if (a->status != 0)
        mx_info("homeserver refused %s with %d", call->route->name, a->status);
    m->refusal = *a;
    m->after_end = AFTER_END_PASS;
    end_write(call);
}

void mx_mirror_forward(mx_call_t *call, const char *write_id, const char *body, size_t len, mx_hs_cb accepted)
{
    /* Every identity write is idempotent at the homeserver (the same keys again change nothing), so a request lost
     * with a closed kept-alive connection may go again. */
    mx_mirror_forward_as(call, write_id, "POST", body, len, true, accepted);
}

void mx_mirror_forward_as(mx_call_t *call, const char *write_id, const char *method, const char *body, size_t len,
                          bool retry_safe, mx_hs_cb accepted)
{
    mirror_t *m = mirror_of(call);
    m->write_id = write_id;
    m->accepted = accepted;
    h2o_req_t *req = call->req;
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    mx_upstream_spec_t spec;
    mx_hs_spec(call, &spec, method, req->path.base, path_len, body, len);
    spec.retry_safe = retry_safe;
    if (mx_hs_fetch(call, &spec, on_homeserver_answer) != 0) {
        m->after_end = AFTER_END_NOTHING; /* mx_hs_fetch answered already; the marker must still go */
        end_write(call);
    }
}

static void on_committed(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mirror_of(call)->commit_cb(call, results + 1, n - 1);
}

int mx_mirror_commit(mx_call_t *call, const char *write_id, const mx_db_stmt_t *stmts, size_t nstmts, mx_call_db_cb cb)
{
    mx_db_stmt_t all[MX_DB_MAX_STMTS];
    const char *params[1] = {write_id};
    all[0] = (mx_db_stmt_t){.id = MX_STMT_IDENTITY_SETTLE, .nparams = 1, .values = params};
    memcpy(all + 1, stmts, nstmts * sizeof(*stmts));
    mirror_of(call)->commit_cb = cb;
    return mx_call_db(call, all, nstmts + 1, on_committed);
}

void mx_mirror_abandon(mx_call_t *call, const char *write_id, mx_err_t err, const char *message)
{
    mirror_t *m = mirror_of(call);
    m->write_id = write_id;
    m->after_end = AFTER_END_ERROR;
    m->err = err;
    m->message = mx_call_strdup(call, message, strlen(message));
    end_write(call);
}

void mx_mirror_abandon_ok(mx_call_t *call, const char *write_id, const char *json, size_t len)
{
    mirror_t *m = mirror_of(call);
    m->write_id = write_id;
    m->after_end = AFTER_END_OK;
    m->ok_json = json;
    m->ok_len = len;
    end_write(call);
}
