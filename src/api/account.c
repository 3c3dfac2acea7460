/* GET /account/whoami answered from the access token itself: lets clients, tests and benchmarks check a token
 * against mxkeys without a homeserver. */
#include "mxkeys/api.h"
#include "mxkeys/json_writer.h"

void mx_api_whoami(mx_call_t *call)
{
    mx_buf_t *buf = mx_call_buf(call);
    mx_jw_t jw;
    mx_jw_init(&jw, buf);
    mx_jw_object_begin(&jw);
    mx_jw_key(&jw, "user_id");
    mx_jw_string(&jw, call->user_id);
    if (call->device_id != NULL && *call->device_id != '\0') {
        mx_jw_key(&jw, "device_id");
        mx_jw_string(&jw, call->device_id);
    }
    mx_jw_object_end(&jw);
    mx_call_respond_buf(call, 200, buf);
}
