/* keys_changes.c: not written yet; owned by the issue that implements this family. */
#include "mxkeys/api.h"

void mx_api_keys_changes(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

void mx_api_stream_position(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

