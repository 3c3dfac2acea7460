#include "mxkeys/backup_common.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/canonical_json.h"

/* Backup algorithms strict mode accepts. */
static const char *const known_algorithms[] = {"m.megolm_backup.v1.curve25519-aes-sha2"};

bool mx_backup_algorithm_known(const char *algorithm)
{
    for (size_t i = 0; i < sizeof(known_algorithms) / sizeof(known_algorithms[0]); i++)
        if (strcmp(algorithm, known_algorithms[i]) == 0)
            return true;
    return false;
}

int64_t mx_backup_parse_version(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > 18 || s[0] == '0')
        return -1;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    return strtoll(s, NULL, 10);
}

static bool is_count(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= MX_JSON_MAX_SAFE_INT;
}

int mx_backup_check_key_data(mx_call_t *call, const json_t *data, const char *where)
{
    static const char *const required[] = {"first_message_index", "forwarded_count", "is_verified", "session_data"};
    if (!json_is_object(data)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "%s must be a KeyBackupData object", where);
        return -1;
    }
    for (size_t i = 0; i < 4; i++) {
        if (json_object_get(data, required[i]) == NULL) {
            mx_call_error(call, MX_ERR_MISSING_PARAM, "%s: missing `%s`", where, required[i]);
            return -1;
        }
    }
    if (!is_count(json_object_get(data, "first_message_index")) ||
        !is_count(json_object_get(data, "forwarded_count"))) {
        mx_call_error(call, MX_ERR_BAD_JSON, "%s: `first_message_index` and `forwarded_count` must be integers >= 0",
                      where);
        return -1;
    }
    if (!json_is_boolean(json_object_get(data, "is_verified"))) {
        mx_call_error(call, MX_ERR_BAD_JSON, "%s: `is_verified` must be a boolean", where);
        return -1;
    }
    if (call->config->validation == MX_VALIDATION_STRICT && !json_is_object(json_object_get(data, "session_data"))) {
        mx_call_error(call, MX_ERR_BAD_JSON, "%s: `session_data` must be an object", where);
        return -1;
    }
    return 0;
}

int64_t mx_backup_query_version(mx_call_t *call)
{
    const char *v = mx_call_query(call, "version");
    if (v == NULL) {
        mx_call_error(call, MX_ERR_MISSING_PARAM, "missing the `version` query parameter");
        return -1;
    }
    int64_t version = mx_backup_parse_version(v);
    if (version < 0)
        mx_call_error(call, MX_ERR_NOT_FOUND, "no backup version %s", v);
    return version;
}
