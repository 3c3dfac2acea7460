/* POST /keys/query: device keys (and cross-signing keys) of local users in one statement, however many users;
 * users of other servers are reported in `failures` (federation is not served by mxkeys). */
#include "mxkeys/api.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"

typedef struct st_query_t {
    mx_buf_t *failures; /* the failures object, already encoded */
} query_t;

static void on_queried(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
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

/* device_keys[user]: a list of device ids (empty: all devices). Counts the user plus each device. */
static long check_devices(mx_call_t *call, const char *user, const json_t *devices)
{
    size_t i;
    json_t *d;
    if (!json_is_array(devices)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "device_keys[%s] must be a list of device ids", user);
        return -1;
    }
    json_array_foreach(devices, i, d)
    {
        if (!json_is_string(d)) {
            mx_call_error(call, MX_ERR_BAD_JSON, "device_keys[%s] must be a list of device ids (strings)", user);
            return -1;
        }
    }
    return 1 + (long)json_array_size(devices);
}

void mx_api_keys_query(mx_call_t *call)
{
    query_t *q = mx_call_alloc(call, sizeof(*q));
    const char *wanted =
        mx_keys_split_request(call, "device_keys", "user id -> list of device ids", check_devices, &q->failures);
    if (wanted == NULL)
        return;
    call->data = q;
    const char *params[2] = {call->user_id, wanted};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_QUERY, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_queried);
}
