/* POST /keys/query: device keys (and cross-signing keys) of local users in one statement, however many users;
 * users of other servers are reported in `failures` (federation is not served by mxkeys). */
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/json_writer.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"

typedef struct st_query_t {
    mx_buf_t *failures; /* the failures object, already encoded */
} query_t;

static void on_queried(mx_call_t *call, PGresult **results, size_t n)
{
    (void)n;
    if (!mx_db_result_ok(results[0])) {
        mx_call_db_error(call, results[0]);
        return;
    }
    query_t *q = call->data;
    /* The database returns the whole answer but `failures`: splice that in after the opening brace. */
    const char *text = PQgetvalue(results[0], 0, 0);
    size_t len = (size_t)PQgetlength(results[0], 0, 0);
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_puts(buf, "{\"failures\":");
    mx_buf_append(buf, q->failures->data, q->failures->len);
    mx_buf_putc(buf, ',');
    mx_buf_append(buf, text + 1, len - 1);
    mx_call_respond_buf(call, 200, buf);
}

void mx_api_keys_query(mx_call_t *call)
{
    const json_t *wanted = json_object_get(call->body, "device_keys");
    const json_t *timeout = json_object_get(call->body, "timeout");
    if (wanted == NULL) {
        mx_call_error(call, MX_ERR_MISSING_PARAM, "missing `device_keys`");
        return;
    }
    if (!json_is_object(wanted)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`device_keys` must be an object of user id -> list of device ids");
        return;
    }
    if (timeout != NULL && !json_is_integer(timeout)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`timeout` must be an integer");
        return;
    }
    mx_keys_remote_t remote;
    mx_keys_remote_init(&remote, call->config->server_name);
    json_t *local = json_object();
    size_t entries = 0;
    const char *user;
    json_t *devices;
    json_object_foreach((json_t *)wanted, user, devices)
    {
        if (!mx_user_id_valid(user)) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "`%s` is not a valid user id", user);
            goto done;
        }
        if (!json_is_array(devices)) {
            mx_call_error(call, MX_ERR_BAD_JSON, "device_keys[%s] must be a list of device ids", user);
            goto done;
        }
        size_t i;
        json_t *d;
        json_array_foreach(devices, i, d)
        {
            if (!json_is_string(d)) {
                mx_call_error(call, MX_ERR_BAD_JSON, "device_keys[%s] must be a list of device ids (strings)", user);
                goto done;
            }
        }
        entries += 1 + json_array_size(devices);
        if (entries > call->config->max_keys_per_request) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "too many users and devices in one query (the limit is %u)",
                          call->config->max_keys_per_request);
            goto done;
        }
        if (mx_keys_remote_note(&remote, user))
            json_object_set(local, user, devices);
    }
    query_t *q = mx_call_alloc(call, sizeof(*q));
    q->failures = mx_call_buf(call);
    mx_keys_remote_encode(&remote, q->failures);
    call->data = q;
    char *wanted_text = json_dumps(local, JSON_COMPACT);
    if (wanted_text == NULL) {
        mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
        goto done;
    }
    const char *params[2] = {call->user_id, mx_call_strdup(call, wanted_text, strlen(wanted_text))};
    free(wanted_text);
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_QUERY, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_queried);
done:
    mx_keys_remote_free(&remote);
    json_decref(local);
}
