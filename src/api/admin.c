/* admin.c: not written yet; owned by the issue that implements this family. */
#include "mxkeys/api.h"

void mx_api_admin_delete_device(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_admin_delete_user(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_admin_allow_xsign_replacement(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

