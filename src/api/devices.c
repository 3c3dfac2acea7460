/* Beside a homeserver, the device lifecycle goes through mxkeys: logout, logout/all, device deletion and account
 * deactivation are forwarded to the homeserver as they came (user-interactive auth included) and, once it has said
 * yes, the devices' keys are removed here before the client hears back; the device list and renames teach mxkeys the
 * display names the homeserver knows; logins teach it the name a new device starts with.
 *
 * Ordering is that of identity writes (mxkeys/identity_mirror.h): while the homeserver decides, queries about the
 * user wait, so a device it removes is gone from mxkeys' answers by the time it announces the removal, and a device
 * it keeps (the first, user-interactive-auth 401 of a deletion; a refusal) never disappears, not even briefly. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/json_writer.h"
#include "mxkeys/log.h"
#include "mxkeys/revocations.h"

/* Retries of the removal after the homeserver removed the devices, and their spacing (MX_CALL_LATER_MS each). */
#define REMOVAL_TRIES 4
#define REMOVAL_SPACING 20

typedef struct st_removal_t {
    const char *write_id;
    const char *devices; /* JSON array of device ids, or NULL: every device */
    bool deactivate;
    mx_hs_answer_t answer; /* the homeserver's, passed on once the keys are gone */
    unsigned tries, wait;
} removal_t;

static bool hs_mode(mx_call_t *call)
{
    if (call->worker->homeserver != NULL)
        return true;
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH,
                  "devices and accounts are the homeserver's; mxkeys serves this path only beside one (--auth "
                  "homeserver)");
    return false;
}

static void revoke_locally(mx_call_t *call)
{
    removal_t *r = call->data;
    mx_revocations_t *rv = call->worker->server->revocations;
    if (r->devices == NULL) {
        mx_revocations_add(rv, call->user_id, NULL);
        return;
    }
    json_t *list = json_loads(r->devices, 0, NULL);
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d) mx_revocations_add(rv, call->user_id, json_string_value(d));
    json_decref(list);
}

static void remove_keys(mx_call_t *call);

static void on_removed(mx_call_t *call, PGresult **results, size_t n)
{
    removal_t *r = call->data;
    bool ok = n > 0;
    for (size_t i = 0; i < n; i++)
        ok &= mx_db_result_ok(results[i]) != 0;
    if (ok) {
        mx_hs_pass(call, &r->answer);
        return;
    }
    atomic_fetch_add_explicit(&call->worker->server->removal_retries, 1, memory_order_relaxed);
    if (++r->tries < REMOVAL_TRIES) {
        mx_warn("%s: the homeserver removed the device(s) of %s, mxkeys' removal failed; retrying", call->route->name,
                call->user_id);
        r->wait = REMOVAL_SPACING * r->tries;
        mx_call_later(call, remove_keys);
        return;
    }
    atomic_fetch_add_explicit(&call->worker->server->removal_failures, 1, memory_order_relaxed);
    mx_error("%s: the homeserver removed the device(s) of %s, but mxkeys could not remove their keys",
             call->route->name, call->user_id);
    mx_call_error_extra(call, MX_ERR_UNAVAILABLE, "\"retry_after_ms\":1000",
                        "the homeserver removed the device, but its keys could not be removed here yet: the device "
                        "may still be listed; the administrator can remove it with the admin API");
}

/* The removal: the first try settles the write (one transaction with it); a retry cannot know whether an earlier
 * try committed, so it repeats the idempotent removal and drops the marker instead. */
static void remove_keys(mx_call_t *call)
{
    removal_t *r = call->data;
    if (r->wait > 0) { /* spaced retries: MX_CALL_LATER_MS at a time */
        r->wait--;
        mx_call_later(call, remove_keys);
        return;
    }
    const char *user[2] = {call->user_id, r->devices};
    const char *write[1] = {r->write_id};
    mx_db_stmt_t stmts[4];
    size_t n = 0;
    if (r->tries == 0)
        stmts[n++] = (mx_db_stmt_t){.id = MX_STMT_IDENTITY_SETTLE, .nparams = 1, .values = write};
    if (r->deactivate)
        stmts[n++] = (mx_db_stmt_t){.id = MX_STMT_DEVICES_DEACTIVATE, .nparams = 1, .values = user};
    else
        stmts[n++] = (mx_db_stmt_t){.id = MX_STMT_DEVICES_REMOVE, .nparams = 2, .values = user};
    stmts[n++] = (mx_db_stmt_t){.id = MX_STMT_DEVICES_REVOKE_TOKENS, .nparams = 2, .values = user};
    if (r->tries > 0) /* not IDENTITY_END: its asynchronous commit would cover the removal too */
        stmts[n++] = (mx_db_stmt_t){.id = MX_STMT_IDENTITY_DROP, .nparams = 1, .values = write};
    if (mx_call_db_quiet(call, stmts, n, on_removed) != 0)
        on_removed(call, NULL, 0);
}

static void on_accepted(mx_call_t *call, const mx_hs_answer_t *answer)
{
    removal_t *r = call->data;
    r->answer = *answer;
    /* The homeserver has let the tokens go: so does every worker here, whatever happens to the keys. */
    revoke_locally(call);
    remove_keys(call);
}

static void on_begun(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    removal_t *r = call->data;
    r->write_id = mx_call_strdup(call, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    h2o_req_t *req = call->req;
    char *method = mx_call_strdup(call, req->method.base, req->method.len);
    /* Not retried on a closed connection: a logout that went through once would be refused the second time. */
    mx_mirror_forward_as(call, r->write_id, method, req->entity.base, req->entity.base ? req->entity.len : 0, false,
                         on_accepted);
}

/* A JSON array text of one string (a device id, a user id). */
static const char *one_device(mx_call_t *call, const char *device_id)
{
    mx_buf_t *b = mx_call_buf(call);
    mx_jw_t jw;
    mx_jw_init(&jw, b);
    mx_jw_array_begin(&jw);
    mx_jw_string(&jw, device_id);
    mx_jw_array_end(&jw);
    return b->data;
}

static void start_removal(mx_call_t *call, const char *devices, bool deactivate)
{
    removal_t *r = mx_call_alloc(call, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->devices = devices;
    r->deactivate = deactivate;
    call->data = r;
    const char *params[2] = {one_device(call, call->user_id), mx_mirror_ttl_text(call)}; /* ["<user id>"] */
    mx_db_stmt_t stmt = {.id = MX_STMT_IDENTITY_BEGIN, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_begun);
}

void mx_api_logout(mx_call_t *call)
{
    if (!hs_mode(call))
        return;
    if (call->device_id[0] == '\0') { /* a token without a device has no keys here */
        mx_hs_forward(call);
        return;
    }
    start_removal(call, one_device(call, call->device_id), false);
}

void mx_api_logout_all(mx_call_t *call)
{
    if (hs_mode(call))
        start_removal(call, NULL, false);
}

void mx_api_device_delete(mx_call_t *call)
{
    if (hs_mode(call))
        start_removal(call, one_device(call, call->params[0]), false);
}

void mx_api_delete_devices(mx_call_t *call)
{
    if (!hs_mode(call))
        return;
    const json_t *devices = json_object_get(call->body, "devices");
    size_t i;
    json_t *d;
    if (!json_is_array(devices)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`devices` must be a list of device ids");
        return;
    }
    json_array_foreach(devices, i, d)
    {
        if (!json_is_string(d)) {
            mx_call_error(call, MX_ERR_BAD_JSON, "`devices` must be a list of device ids (strings)");
            return;
        }
    }
    char *text = json_dumps(devices, JSON_COMPACT);
    const char *copy = text ? mx_call_strdup(call, text, strlen(text)) : "[]";
    free(text);
    start_removal(call, copy, false);
}

void mx_api_account_deactivate(mx_call_t *call)
{
    if (hs_mode(call))
        start_removal(call, NULL, true);
}

/* ---- display names ------------------------------------------------------------------------------------------- */

typedef struct st_names_t {
    mx_hs_answer_t answer;
} names_t;

static void on_names_stored(mx_call_t *call, PGresult **results, size_t n)
{
    (void)results, (void)n; /* names are a nicety: a failure to keep one never fails the client's request */
    mx_hs_pass(call, &((names_t *)call->data)->answer);
}

/* Passes the homeserver's answer on after storing what it taught (names: {"<device>": name}; complete: every device
 * the user has). */
static void learn(mx_call_t *call, const mx_hs_answer_t *a, const char *user_id, json_t *names, bool complete)
{
    names_t *st = mx_call_alloc(call, sizeof(*st));
    st->answer = *a;
    call->data = st;
    char *text = json_dumps(names, JSON_COMPACT);
    json_decref(names);
    if (text == NULL || user_id == NULL) {
        free(text);
        mx_hs_pass(call, a);
        return;
    }
    const char *params[3] = {mx_call_strdup(call, user_id, strlen(user_id)), mx_call_strdup(call, text, strlen(text)),
                             complete ? "true" : "false"};
    free(text);
    mx_db_stmt_t stmt = {.id = MX_STMT_DEVICES_NAMES_LEARNED, .nparams = 3, .values = params};
    if (mx_call_db_quiet(call, &stmt, 1, on_names_stored) != 0)
        mx_hs_pass(call, a);
}

static void on_device_list(mx_call_t *call, const mx_hs_answer_t *a)
{
    json_t *body = a->status == 200 ? json_loadb(a->body, a->len, 0, NULL) : NULL;
    const json_t *devices = json_object_get(body, "devices");
    if (!json_is_array(devices)) {
        json_decref(body);
        mx_hs_pass(call, a);
        return;
    }
    /* The whole list: devices mxkeys holds keys for that the homeserver no longer has were removed behind mxkeys'
     * back (its admin API, an expiry): they go too. */
    json_t *names = json_object();
    size_t i;
    json_t *d;
    json_array_foreach(devices, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "device_id"));
        const json_t *name = json_object_get(d, "display_name");
        if (id != NULL)
            json_object_set(names, id, json_is_string(name) ? (json_t *)name : json_null());
    }
    json_decref(body);
    learn(call, a, call->user_id, names, true);
}

void mx_api_devices_list(mx_call_t *call)
{
    if (!hs_mode(call))
        return;
    mx_upstream_spec_t spec;
    h2o_req_t *req = call->req;
    mx_hs_spec(call, &spec, "GET", req->path.base, req->path.len, NULL, 0);
    spec.retry_safe = true;
    (void)mx_hs_fetch(call, &spec, on_device_list);
}

static void on_renamed(mx_call_t *call, const mx_hs_answer_t *a)
{
    const json_t *name = json_object_get(call->body, "display_name");
    if (a->status != 200 || !json_is_string(name)) {
        mx_hs_pass(call, a);
        return;
    }
    json_t *names = json_object();
    json_object_set(names, call->params[0], (json_t *)name);
    learn(call, a, call->user_id, names, false);
}

void mx_api_device_update(mx_call_t *call)
{
    if (!hs_mode(call))
        return;
    h2o_req_t *req = call->req;
    mx_upstream_spec_t spec;
    mx_hs_spec(call, &spec, "PUT", req->path.base, req->path.len, req->entity.base, req->entity.len);
    spec.retry_safe = true;
    (void)mx_hs_fetch(call, &spec, on_renamed);
}

static void on_logged_in(mx_call_t *call, const mx_hs_answer_t *a)
{
    const json_t *name = json_object_get(call->body, "initial_device_display_name");
    json_t *body = a->status == 200 && json_is_string(name) ? json_loadb(a->body, a->len, 0, NULL) : NULL;
    const char *user = json_string_value(json_object_get(body, "user_id"));
    const char *device = json_string_value(json_object_get(body, "device_id"));
    if (user == NULL || device == NULL) {
        json_decref(body);
        mx_hs_pass(call, a);
        return;
    }
    json_t *names = json_object();
    json_object_set(names, device, (json_t *)name);
    char *u = mx_call_strdup(call, user, strlen(user));
    json_decref(body);
    learn(call, a, u, names, false);
}

void mx_api_login(mx_call_t *call)
{
    if (!hs_mode(call))
        return;
    h2o_req_t *req = call->req;
    mx_upstream_spec_t spec;
    mx_hs_spec(call, &spec, "POST", req->path.base, req->path.len, req->entity.base, req->entity.len);
    /* not retry_safe: a login sent twice makes two devices */
    (void)mx_hs_fetch(call, &spec, on_logged_in);
}

void mx_api_login_flows(mx_call_t *call)
{
    if (hs_mode(call))
        mx_hs_forward(call);
}

void mx_api_device_get(mx_call_t *call)
{
    if (hs_mode(call))
        mx_hs_forward(call);
}
