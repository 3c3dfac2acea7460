/* POST /keys/claim: for each requested device, the oldest unclaimed one-time key of the algorithm, or else the
 * device's fallback key. The atomicity (never the same key twice, never the fallback while keys remain) lives in
 * mx_keys_claim (sql/002_keys.sql); this handler validates and splices. */
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"

static void on_claimed(mx_call_t *call, PGresult **results, size_t n)
{
    (void)n;
    if (!mx_db_result_ok(results[0])) {
        mx_call_db_error(call, results[0]);
        return;
    }
    mx_buf_t *failures = call->data;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_puts(buf, "{\"failures\":");
    mx_buf_append(buf, failures->data, failures->len);
    mx_buf_puts(buf, ",\"one_time_keys\":");
    mx_buf_append(buf, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    mx_buf_putc(buf, '}');
    mx_call_respond_buf(call, 200, buf);
}

void mx_api_keys_claim(mx_call_t *call)
{
    const json_t *wanted = json_object_get(call->body, "one_time_keys");
    const json_t *timeout = json_object_get(call->body, "timeout");
    if (wanted == NULL) {
        mx_call_error(call, MX_ERR_MISSING_PARAM, "missing `one_time_keys`");
        return;
    }
    if (!json_is_object(wanted)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`one_time_keys` must be an object of user id -> device id -> algorithm");
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
        if (!json_is_object(devices)) {
            mx_call_error(call, MX_ERR_BAD_JSON, "one_time_keys[%s] must be an object of device id -> algorithm", user);
            goto done;
        }
        const char *device;
        json_t *algorithm;
        json_object_foreach(devices, device, algorithm)
        {
            if (!json_is_string(algorithm) || json_string_length(algorithm) == 0 ||
                strchr(json_string_value(algorithm), ':') != NULL) {
                mx_call_error(call, MX_ERR_BAD_JSON, "one_time_keys[%s][%s] must be an algorithm name", user, device);
                goto done;
            }
        }
        entries += json_object_size(devices);
        if (entries > call->config->max_keys_per_request) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "too many devices in one claim (the limit is %u)",
                          call->config->max_keys_per_request);
            goto done;
        }
        if (mx_keys_remote_note(&remote, user))
            json_object_set(local, user, devices);
    }
    mx_buf_t *failures = mx_call_buf(call);
    mx_keys_remote_encode(&remote, failures);
    call->data = failures;
    char *wanted_text = json_dumps(local, JSON_COMPACT);
    if (wanted_text == NULL) {
        mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
        goto done;
    }
    const char *params[1] = {mx_call_strdup(call, wanted_text, strlen(wanted_text))};
    free(wanted_text);
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_CLAIM, .nparams = 1, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_claimed);
done:
    mx_keys_remote_free(&remote);
    json_decref(local);
}
