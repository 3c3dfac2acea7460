/* cross_signing.c: not written yet; owned by the issue that implements this family. */
#include "mxkeys/api.h"

void mx_api_device_signing_upload(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_signatures_upload(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}
