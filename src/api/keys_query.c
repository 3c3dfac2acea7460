/* keys_query.c: not written yet; owned by the issue that implements this family. */
#include "mxkeys/api.h"

void mx_api_keys_query(mx_call_t *call)
{
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH, "not implemented yet");
}

