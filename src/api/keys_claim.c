/* POST /keys/claim: for each requested device, the oldest unclaimed one-time key of the algorithm, or else the
 * device's fallback key. The atomicity (never the same key twice, never the fallback while keys remain) lives in
 * mx_keys_claim (sql/002_keys.sql); this handler validates and splices. */
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"

static void on_claimed(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_buf_t *failures = call->data;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_puts(buf, "{\"failures\":");
    mx_buf_append(buf, failures->data, failures->len);
    mx_buf_puts(buf, ",\"one_time_keys\":");
    mx_buf_append(buf, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    mx_buf_putc(buf, '}');
    mx_call_respond_buf(call, 200, buf);
}

/* one_time_keys[user]: device id -> algorithm. Counts each device. */
static long check_algorithms(mx_call_t *call, const char *user, const json_t *devices)
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
    mx_buf_t *failures;
    const char *wanted =
        mx_keys_split_request(call, "one_time_keys", "user id -> device id -> algorithm", check_algorithms, &failures);
    if (wanted == NULL)
        return;
    call->data = failures;
    const char *params[1] = {wanted};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_CLAIM, .nparams = 1, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_claimed);
}
