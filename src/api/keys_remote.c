#include "mxkeys/keys_remote.h"
#include <string.h>
#include "mxkeys/json_writer.h"
#include "mxkeys/keys_validate.h"

void mx_keys_remote_init(mx_keys_remote_t *r, const char *server_name)
{
    r->server_name = server_name;
    r->servers = json_object();
}

bool mx_keys_remote_note(mx_keys_remote_t *r, const char *user_id)
{
    const char *server = mx_user_id_server(user_id);
    if (strcmp(server, r->server_name) == 0)
        return true;
    json_object_set_new(r->servers, server, json_true());
    return false;
}

void mx_keys_remote_encode(const mx_keys_remote_t *r, mx_buf_t *out)
{
    mx_jw_t jw;
    mx_jw_init(&jw, out);
    mx_jw_object_begin(&jw);
    const char *server;
    json_t *unused;
    json_object_foreach(r->servers, server, unused)
    {
        mx_jw_key(&jw, server);
        mx_jw_object_begin(&jw);
        mx_jw_key(&jw, "errcode");
        mx_jw_string(&jw, "M_UNKNOWN");
        mx_jw_key(&jw, "error");
        mx_jw_string(&jw, "this key server does not query other servers");
        mx_jw_object_end(&jw);
    }
    mx_jw_object_end(&jw);
}

void mx_keys_remote_free(mx_keys_remote_t *r)
{
    json_decref(r->servers);
    r->servers = NULL;
}
