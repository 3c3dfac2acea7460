/* Which statements change /keys/query answers, and whose (include/mxkeys/db_statements.h). Missing one here costs
 * read-your-writes for that write on this process, never exactness for long: the triggers' feed forgets the user
 * within --query-cache-max-lag-ms anyway. tests/integration/test_query_cache.py writes through each of them. */
#include <jansson.h>
#include <string.h>
#include "mxkeys/db_statements.h"

/* A JSON array whose elements are user ids (as_member NULL) or objects naming one in member `as_member`. */
static void users_in_list(const char *json, const char *as_member, void (*cb)(void *, const char *, size_t), void *ctx)
{
    json_t *list = json != NULL ? json_loads(json, 0, NULL) : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        json_t *u = as_member != NULL ? json_object_get(v, as_member) : v;
        if (json_is_string(u))
            cb(ctx, json_string_value(u), json_string_length(u));
    }
    json_decref(list);
}

void mx_stmt_changed_users(int id, const char *const *values, int nvalues,
                           void (*cb)(void *ctx, const char *user, size_t len), void *ctx)
{
    if (nvalues < 1 || values == NULL || values[0] == NULL)
        return;
    switch (id) {
    case MX_STMT_KEYS_UPLOAD:                /* device keys of $1 */
    case MX_STMT_KEYS_DELETE_DEVICES:        /* $1's devices (admin API) */
    case MX_STMT_DEVICES_REMOVE:             /* $1's devices (logout, deletion) */
    case MX_STMT_DEVICES_DEACTIVATE:         /* all of $1 */
    case MX_STMT_DEVICES_NAMES_LEARNED:      /* $1's display names, devices gone */
    case MX_STMT_XSIGN_UPLOAD:               /* $1's cross-signing keys */
    case MX_STMT_IDENTITY_BEGIN_DEVICE_KEYS: /* an identity write of $1 in flight: queries must wait for it */
        cb(ctx, values[0], strlen(values[0]));
        break;
    case MX_STMT_IDENTITY_BEGIN: /* $1: the users of an identity write in flight */
        users_in_list(values[0], NULL, cb, ctx);
        break;
    case MX_STMT_XSIGN_STORE_SIGNATURES: /* $2: signatures on these users' keys */
        if (nvalues >= 2)
            users_in_list(values[1], "target_user", cb, ctx);
        break;
    default:
        break;
    }
}
