/* Homeserver integration (admin token): a deleted device or a deactivated user loses its keys. Idempotent. */
#include "mxkeys/api.h"
#include "mxkeys/keys_validate.h"

static void on_deleted(mx_call_t *call, PGresult **results, size_t n)
{
    (void)n;
    if (!mx_db_result_ok(results[0])) {
        mx_call_db_error(call, results[0]);
        return;
    }
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

void mx_api_admin_allow_xsign_replacement(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "cross-signing is not served yet");
}
