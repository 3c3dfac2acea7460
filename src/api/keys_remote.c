#include "mxkeys/keys_remote.h"
#include <stdlib.h>
#include <string.h>
#include "mxkeys/call.h"
#include "mxkeys/hs_forward.h"
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

const char *mx_keys_split_request(mx_call_t *call, const char *member, const char *shape,
                                  mx_keys_user_value_check check, mx_buf_t **failures, const char **remote)
{
    const json_t *wanted = json_object_get(call->body, member);
    const json_t *timeout = json_object_get(call->body, "timeout");
    if (wanted == NULL) {
        mx_call_error(call, MX_ERR_MISSING_PARAM, "missing `%s`", member);
        return NULL;
    }
    if (!json_is_object(wanted)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`%s` must be an object of %s", member, shape);
        return NULL;
    }
    if (timeout != NULL && !json_is_integer(timeout)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`timeout` must be an integer");
        return NULL;
    }
    const char *result = NULL;
    mx_keys_remote_t remote_servers;
    mx_keys_remote_init(&remote_servers, call->config->server_name);
    json_t *local = json_object(), *others = json_object();
    size_t entries = 0;
    const char *user;
    json_t *value;
    json_object_foreach((json_t *)wanted, user, value)
    {
        if (!mx_user_id_valid(user)) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "`%s` is not a valid user id", user);
            goto done;
        }
        long n = check(call, user, value);
        if (n < 0)
            goto done;
        entries += (size_t)n;
        if (entries > call->config->max_keys_per_request) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "too many entries in `%s` (the limit is %u)", member,
                          call->config->max_keys_per_request);
            goto done;
        }
        if (remote != NULL && strcmp(mx_user_id_server(user), call->config->server_name) != 0)
            json_object_set(others, user, value);
        else if (mx_keys_remote_note(&remote_servers, user))
            json_object_set(local, user, value);
    }
    char *text = json_dumps(local, JSON_COMPACT);
    if (text == NULL) {
        mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
        goto done;
    }
    result = mx_call_strdup(call, text, strlen(text));
    free(text);
    if (remote != NULL) {
        *remote = NULL;
        if (json_object_size(others) > 0) {
            char *o = json_dumps(others, JSON_COMPACT);
            if (o == NULL) {
                mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
                result = NULL;
                goto done;
            }
            *remote = mx_call_strdup(call, o, strlen(o));
            free(o);
        }
    }
    *failures = mx_call_buf(call);
    mx_keys_remote_encode(&remote_servers, *failures);
done:
    mx_keys_remote_free(&remote_servers);
    json_decref(local);
    json_decref(others);
    return result;
}

/* Appends `,"name":` (no comma before the first member of an object: *first). */
static void put_name(mx_buf_t *out, bool *first, const char *name)
{
    if (!*first)
        mx_buf_putc(out, ',');
    *first = false;
    mx_jw_t jw;
    mx_jw_init(&jw, out);
    mx_jw_string(&jw, name);
    mx_buf_putc(out, ':');
}

size_t mx_keys_remote_members(const json_t *obj, const char *server_name, bool comma, mx_buf_t *out)
{
    size_t n = 0;
    const char *user;
    json_t *value;
    if (!json_is_object(obj))
        return 0;
    json_object_foreach((json_t *)obj, user, value)
    {
        if (!mx_user_id_valid(user) || strcmp(mx_user_id_server(user), server_name) == 0)
            continue;
        char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text == NULL)
            continue;
        bool first = !comma && n == 0;
        put_name(out, &first, user);
        mx_buf_puts(out, text);
        free(text);
        n++;
    }
    return n;
}

unsigned mx_keys_timeout_ms(const mx_call_t *call)
{
    const json_t *t = json_object_get(call->body, "timeout");
    json_int_t v = json_is_integer(t) ? json_integer_value(t) : 10000;
    return v < 0 ? 0 : v > 60000 ? 60000 : (unsigned)v;
}

void mx_keys_remote_failures(const json_t *answer, const char *remote, const char *server_name, const char *why,
                             mx_buf_t *out)
{
    const json_t *f = json_object_get(answer, "failures");
    if (answer != NULL) {
        /* the homeserver's word on each server it asked */
        const char *server;
        json_t *value;
        bool first = true;
        json_object_foreach((json_t *)f, server, value)
        {
            char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
            if (text == NULL || strcmp(server, server_name) == 0) {
                free(text);
                continue;
            }
            put_name(out, &first, server);
            mx_buf_puts(out, text);
            free(text);
        }
        return;
    }
    json_t *users = json_loads(remote, 0, NULL);
    mx_keys_remote_t servers;
    mx_keys_remote_init(&servers, server_name);
    const char *user;
    json_t *unused;
    json_object_foreach(users, user, unused)(void) mx_keys_remote_note(&servers, user);
    const char *server;
    bool first = true;
    json_object_foreach(servers.servers, server, unused)
    {
        put_name(out, &first, server);
        mx_jw_t jw;
        mx_jw_init(&jw, out);
        mx_jw_object_begin(&jw);
        mx_jw_key(&jw, "errcode");
        mx_jw_string(&jw, "M_UNKNOWN");
        mx_jw_key(&jw, "error");
        mx_jw_string(&jw, why);
        mx_jw_object_end(&jw);
    }
    mx_keys_remote_free(&servers);
    json_decref(users);
}

static void on_ask_dispose(void *p)
{
    json_decref(((mx_keys_remote_ask_t *)p)->answer);
}

static void on_answer(mx_call_t *call, const mx_hs_answer_t *a)
{
    mx_keys_remote_ask_t *ask = call->ext;
    ask->pending = false;
    if (a->status == 200) {
        ask->answer = json_loadb(a->body, a->len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(ask->answer)) {
            json_decref(ask->answer);
            ask->answer = NULL;
            ask->why = "the homeserver's answer is not a JSON object";
        }
    } else {
        ask->why = a->status == 0 ? (a->error == MX_UPSTREAM_TIMEOUT ? "the homeserver did not answer in time"
                                                                     : "the homeserver cannot be reached")
                                  : "the homeserver refused to ask other servers";
    }
    ask->then(call);
}

mx_keys_remote_ask_t *mx_keys_remote_ask(mx_call_t *call, const char *remote, const char *member, bool retry_safe,
                                         void (*then)(mx_call_t *call))
{
    mx_keys_remote_ask_t *ask = h2o_mem_alloc_shared(&call->req->pool, sizeof(*ask), on_ask_dispose);
    memset(ask, 0, sizeof(*ask));
    ask->remote = remote;
    ask->then = then;
    call->ext = ask;
    mx_buf_t *body = mx_call_buf(call);
    mx_buf_printf(body, "{\"%s\":", member);
    mx_buf_puts(body, remote);
    mx_buf_printf(body, ",\"timeout\":%u}", mx_keys_timeout_ms(call));
    h2o_req_t *req = call->req;
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    mx_upstream_spec_t spec;
    mx_hs_spec(call, &spec, "POST", req->path.base, path_len, body->data, body->len);
    spec.retry_safe = retry_safe;
    spec.deadline_ms = mx_keys_timeout_ms(call) + call->config->homeserver_timeout_ms;
    ask->pending = true;
    return mx_hs_fetch(call, &spec, on_answer) == 0 ? ask : NULL;
}
