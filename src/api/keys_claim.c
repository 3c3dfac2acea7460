/* POST /keys/claim: for each requested device, the oldest unclaimed one-time key of the algorithm, or else the
 * device's fallback key. The atomicity (never the same key twice, never the fallback while keys remain) lives in
 * mx_keys_claim (sql/functions/claims.sql); this handler validates and splices. Beside a homeserver, other servers'
 * users are claimed through it (it federates) while the local part runs, and the answers are merged. */
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"

typedef struct st_claim_t {
    mx_buf_t *failures;        /* standalone: other servers, encoded */
    const char *remote;        /* beside a homeserver: other servers' users, JSON text, or NULL */
    mx_keys_remote_ask_t *ask; /* ... asked of the homeserver */
    const char *local;         /* the database's one_time_keys object, once it came */
    size_t local_len;
} claim_t;

static void respond(mx_call_t *call)
{
    claim_t *c = call->data;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_puts(buf, "{\"failures\":");
    if (c->remote == NULL) {
        mx_buf_append(buf, c->failures->data, c->failures->len);
    } else {
        mx_buf_putc(buf, '{');
        mx_keys_remote_failures(c->ask->answer, c->remote, call->config->server_name, c->ask->why, buf);
        mx_buf_putc(buf, '}');
    }
    mx_buf_puts(buf, ",\"one_time_keys\":");
    /* the local object with the homeserver's users added before its closing brace */
    mx_buf_append(buf, c->local, c->local_len - 1);
    mx_keys_remote_members(json_object_get(c->ask ? c->ask->answer : NULL, "one_time_keys"), call->config->server_name,
                           c->local_len > 2, buf);
    mx_buf_puts(buf, "}}");
    mx_call_respond_buf(call, 200, buf);
}

static void maybe_respond(mx_call_t *call)
{
    claim_t *c = call->data;
    if (c->local != NULL && (c->ask == NULL || !c->ask->pending))
        respond(call);
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
    claim_t *c = mx_call_alloc(call, sizeof(*c));
    memset(c, 0, sizeof(*c));
    const char *wanted =
        mx_keys_split_request(call, "one_time_keys", "user id -> device id -> algorithm", mx_keys_claim_check_devices,
                              &c->failures, mx_mirror_enabled(call) ? &c->remote : NULL);
    if (wanted == NULL)
        return;
    call->data = c;
    /* not retry_safe: a claim sent twice hands out two keys */
    if (c->remote != NULL &&
        (c->ask = mx_keys_remote_ask(call, c->remote, "one_time_keys", false, maybe_respond)) == NULL)
        return;
    const char *params[1] = {wanted};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_CLAIM, .nparams = 1, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_claimed);
}
