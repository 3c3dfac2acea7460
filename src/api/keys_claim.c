/* POST /keys/claim: for each requested device, the oldest unclaimed one-time key of the algorithm, or else the
 * device's fallback key. The atomicity (never the same key twice, never the fallback while keys remain) lives in
 * mx_keys_claim (sql/002_keys.sql); this handler validates and splices. Beside a homeserver, other servers' users
 * are claimed through it (it federates) while the local part runs, and the answers are merged. */
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/hs_forward.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"

typedef struct st_claim_t {
    mx_buf_t *failures; /* standalone: other servers, encoded */
    const char *remote; /* beside a homeserver: other servers' users, JSON text, or NULL */
    const char *local;  /* the database's one_time_keys object, once it came */
    size_t local_len;
    bool remote_pending;
    json_t *remote_answer;
    const char *remote_why;
} claim_t;

static void on_claim_dispose(void *p)
{
    json_decref(((claim_t *)p)->remote_answer);
}

static void respond(mx_call_t *call)
{
    claim_t *c = call->data;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_puts(buf, "{\"failures\":");
    if (c->remote == NULL) {
        mx_buf_append(buf, c->failures->data, c->failures->len);
    } else {
        mx_buf_putc(buf, '{');
        mx_keys_remote_failures(c->remote_answer, c->remote, call->config->server_name, c->remote_why, buf);
        mx_buf_putc(buf, '}');
    }
    mx_buf_puts(buf, ",\"one_time_keys\":");
    /* the local object with the homeserver's users added before its closing brace */
    mx_buf_append(buf, c->local, c->local_len - 1);
    mx_keys_remote_members(json_object_get(c->remote_answer, "one_time_keys"), call->config->server_name,
                           c->local_len > 2, buf);
    mx_buf_puts(buf, "}}");
    mx_call_respond_buf(call, 200, buf);
}

static void maybe_respond(mx_call_t *call)
{
    claim_t *c = call->data;
    if (c->local != NULL && !c->remote_pending)
        respond(call);
}

static void on_remote(mx_call_t *call, const mx_hs_answer_t *a)
{
    claim_t *c = call->data;
    c->remote_pending = false;
    if (a->status == 200) {
        c->remote_answer = json_loadb(a->body, a->len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(c->remote_answer)) {
            json_decref(c->remote_answer);
            c->remote_answer = NULL;
            c->remote_why = "the homeserver's answer is not a JSON object";
        }
    } else {
        c->remote_why = a->status == 0 ? (a->error == MX_UPSTREAM_TIMEOUT ? "the homeserver did not answer in time"
                                                                          : "the homeserver cannot be reached")
                                       : "the homeserver refused to ask other servers";
    }
    maybe_respond(call);
}

static void ask_homeserver(mx_call_t *call)
{
    claim_t *c = call->data;
    mx_buf_t *body = mx_call_buf(call);
    mx_buf_puts(body, "{\"one_time_keys\":");
    mx_buf_puts(body, c->remote);
    mx_buf_printf(body, ",\"timeout\":%u}", mx_keys_timeout_ms(call));
    h2o_req_t *req = call->req;
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    mx_upstream_spec_t spec;
    mx_hs_spec(call, &spec, "POST", req->path.base, path_len, body->data, body->len);
    spec.deadline_ms = mx_keys_timeout_ms(call) + call->config->homeserver_timeout_ms;
    /* not retry_safe: a claim sent twice hands out two keys */
    c->remote_pending = true;
    if (mx_hs_fetch(call, &spec, on_remote) != 0)
        c->remote_pending = false;
}

static void on_claimed(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    claim_t *c = call->data;
    c->local_len = (size_t)PQgetlength(results[0], 0, 0);
    c->local = mx_call_strdup(call, PQgetvalue(results[0], 0, 0), c->local_len);
    maybe_respond(call);
}

/* one_time_keys[user]: device id -> algorithm. Counts each device. */
long mx_keys_claim_check_devices(mx_call_t *call, const char *user, const json_t *devices)
{
    const char *device;
    json_t *algorithm;
    if (!json_is_object(devices)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "one_time_keys[%s] must be an object of device id -> algorithm", user);
        return -1;
    }
    json_object_foreach((json_t *)devices, device, algorithm)
    {
        if (!json_is_string(algorithm) || json_string_length(algorithm) == 0 ||
            strchr(json_string_value(algorithm), ':') != NULL) {
            mx_call_error(call, MX_ERR_BAD_JSON, "one_time_keys[%s][%s] must be an algorithm name", user, device);
            return -1;
        }
    }
    return (long)json_object_size(devices);
}

void mx_api_keys_claim(mx_call_t *call)
{
    claim_t *c = h2o_mem_alloc_shared(&call->req->pool, sizeof(*c), on_claim_dispose);
    memset(c, 0, sizeof(*c));
    const char *wanted =
        mx_keys_split_request(call, "one_time_keys", "user id -> device id -> algorithm", mx_keys_claim_check_devices,
                              &c->failures, mx_mirror_enabled(call) ? &c->remote : NULL);
    if (wanted == NULL)
        return;
    call->data = c;
    if (c->remote != NULL)
        ask_homeserver(call);
    if (mx_call_answered(call))
        return;
    const char *params[1] = {wanted};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_CLAIM, .nparams = 1, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_claimed);
}
