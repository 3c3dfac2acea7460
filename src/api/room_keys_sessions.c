/* room_keys_sessions.c: not written yet; owned by the issue that implements this family. */
#include "mxkeys/api.h"

void mx_api_backup_keys_put(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_backup_keys_get(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_backup_keys_delete(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}
