/* Homeserver integration (admin token): a deleted device or a deactivated user loses its keys. Idempotent. */
#include <stdio.h>
#include "mxkeys/api.h"
#include "mxkeys/keys_validate.h"

static void on_deleted(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_call_respond(call, 200, "{}", 2);
}

static void delete_devices(mx_call_t *call, const char *device_id)
{
    const char *user_id = call->params[0];
    if (!mx_user_id_valid(user_id)) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "`%s` is not a valid user id", user_id);
        return;
    }
    const char *params[2] = {user_id, device_id};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_DELETE_DEVICES, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_deleted);
}

void mx_api_admin_delete_device(mx_call_t *call)
{
    delete_devices(call, call->params[1]);
}

void mx_api_admin_delete_user(mx_call_t *call)
{
    delete_devices(call, NULL);
}

static void on_allowed(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    if (PQgetvalue(results[0], 0, 0)[0] != 't') {
        mx_call_error(call, MX_ERR_NOT_FOUND, "%s has no master cross-signing key to replace", call->params[0]);
        return;
    }
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_printf(buf, "{\"window_ms\":%u}", call->config->xsign_replacement_window_ms);
    mx_call_respond_buf(call, 200, buf);
}

/* Opens the window in which the user may replace their cross-signing keys without UIA (MSC3967): mxkeys cannot run
 * UIA, so the homeserver (or an operator) vouches for the user here. The next successful replacement closes it. */
void mx_api_admin_allow_xsign_replacement(mx_call_t *call)
{
    const char *user_id = call->params[0];
    if (!mx_user_id_valid(user_id)) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "`%s` is not a valid user id", user_id);
        return;
    }
    char window[16];
    snprintf(window, sizeof(window), "%u", call->config->xsign_replacement_window_ms);
    const char *params[2] = {user_id, window};
    mx_db_stmt_t stmt = {.id = MX_STMT_XSIGN_ALLOW_REPLACEMENT, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_allowed);
}
