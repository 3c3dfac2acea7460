/* /room_keys/version[/{version}]: backup versions (create, read, update auth_data, delete). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/base64.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/backup_common.h"

#define CURVE25519_KEY_BYTES 32

/* Checks {algorithm, auth_data} of a create or update; answers and returns -1 on a problem. */
static int check_version_body(mx_call_t *call, const char **algorithm, char **auth_data_text)
{
    const json_t *alg = json_object_get(call->body, "algorithm");
    const json_t *auth_data = json_object_get(call->body, "auth_data");
    if (alg == NULL || auth_data == NULL) {
        mx_call_error(call, MX_ERR_MISSING_PARAM, "missing `%s`", alg == NULL ? "algorithm" : "auth_data");
        return -1;
    }
    if (!json_is_string(alg)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`algorithm` must be a string");
        return -1;
    }
    if (call->config->validation == MX_VALIDATION_STRICT) {
        if (!mx_backup_algorithm_known(json_string_value(alg))) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "unknown backup algorithm %s", json_string_value(alg));
            return -1;
        }
        const char *pk = json_string_value(json_object_get(auth_data, "public_key"));
        if (!json_is_object(auth_data) || pk == NULL || !mx_base64_is_key(pk, CURVE25519_KEY_BYTES)) {
            mx_call_error(call, MX_ERR_INVALID_PARAM,
                          "`auth_data` must be an object with `public_key`: an unpadded-base64 curve25519 key");
            return -1;
        }
    }
    /* Strict: clients verify auth_data's signatures over its canonical form, so it must have one. Lenient: any JSON
     * value is kept as it came. */
    mx_buf_t *buf = mx_call_buf(call);
    if (call->config->validation == MX_VALIDATION_STRICT) {
        const char *why;
        if (mx_canonical_json(auth_data, buf, &why) != 0) {
            mx_call_error(call, MX_ERR_BAD_JSON, "`auth_data`: %s", why);
            return -1;
        }
    } else {
        char *text = json_dumps(auth_data, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text == NULL) {
            mx_call_error(call, MX_ERR_BAD_JSON, "`auth_data` cannot be encoded");
            return -1;
        }
        mx_buf_puts(buf, text);
        free(text);
    }
    *algorithm = json_string_value(alg);
    *auth_data_text = buf->data;
    return 0;
}

static void on_created(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_printf(buf, "{\"version\":\"%s\"}", PQgetvalue(results[0], 0, 0));
    mx_call_respond_buf(call, 200, buf);
}

void mx_api_backup_version_create(mx_call_t *call)
{
    const char *algorithm;
    char *auth_data;
    if (check_version_body(call, &algorithm, &auth_data) != 0)
        return;
    const char *params[3] = {call->user_id, algorithm, auth_data};
    mx_db_stmt_t stmt = {.id = MX_STMT_BACKUP_CREATE, .nparams = 3, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_created);
}

static void on_version(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    if (PQgetisnull(results[0], 0, 0)) {
        mx_call_error(call, MX_ERR_NOT_FOUND, "no such backup version");
        return;
    }
    size_t len = (size_t)PQgetlength(results[0], 0, 0);
    mx_call_respond(call, 200, mx_call_strdup(call, PQgetvalue(results[0], 0, 0), len), len);
}

static void get_version(mx_call_t *call, const char *version)
{
    const char *params[2] = {call->user_id, version};
    mx_db_stmt_t stmt = {.id = MX_STMT_BACKUP_GET, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_version);
}

void mx_api_backup_version_get_current(mx_call_t *call)
{
    get_version(call, NULL);
}

/* The path's version; answers 404 and returns NULL when it is not a version number. */
static const char *path_version(mx_call_t *call)
{
    if (mx_backup_parse_version(call->params[0]) < 0) {
        mx_call_error(call, MX_ERR_NOT_FOUND, "no backup version %s", call->params[0]);
        return NULL;
    }
    return call->params[0];
}

void mx_api_backup_version_get(mx_call_t *call)
{
    const char *version = path_version(call);
    if (version != NULL)
        get_version(call, version);
}

static void on_done_empty(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_call_respond(call, 200, "{}", 2);
}

void mx_api_backup_version_update(mx_call_t *call)
{
    const char *version = path_version(call);
    if (version == NULL)
        return;
    const json_t *body_version = json_object_get(call->body, "version");
    if (body_version != NULL && (!json_is_string(body_version) || strcmp(json_string_value(body_version), version))) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "the body's `version` must equal the path's version %s", version);
        return;
    }
    const char *algorithm;
    char *auth_data;
    if (check_version_body(call, &algorithm, &auth_data) != 0)
        return;
    const char *params[4] = {call->user_id, version, algorithm, auth_data};
    mx_db_stmt_t stmt = {.id = MX_STMT_BACKUP_UPDATE, .nparams = 4, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_done_empty);
}

void mx_api_backup_version_delete(mx_call_t *call)
{
    const char *version = path_version(call);
    if (version == NULL)
        return;
    const char *params[2] = {call->user_id, version};
    mx_db_stmt_t stmt = {.id = MX_STMT_BACKUP_DELETE, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_done_empty);
}
