/* room_keys_versions.c: not written yet; owned by the issue that implements this family. */
#include "mxkeys/api.h"

void mx_api_backup_version_create(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_backup_version_get_current(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_backup_version_get(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_backup_version_update(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_backup_version_delete(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}
