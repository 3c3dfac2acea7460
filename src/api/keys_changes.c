/* GET /keys/changes and GET /_mxkeys/v1/stream_position: the device-list change stream. Standalone, tokens are
 * mxkeys' own, "mxk_dl_<stream id>" (anything else is 400 M_INVALID_PARAM); beside a homeserver the request goes to
 * the homeserver, whose /sync tokens clients hold. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/hs_forward.h"

#define TOKEN_PREFIX "mxk_dl_"

/* Parses a stream token; returns -1 for anything this server did not write: exactly PREFIX + a decimal number
 * without sign or leading zeros, at most 18 digits (so it fits an int64 without overflow checks). */
static int parse_token(const char *s, int64_t *out)
{
    size_t plen = strlen(TOKEN_PREFIX);
    if (strncmp(s, TOKEN_PREFIX, plen) != 0 || s[plen] == '\0' || strlen(s + plen) > 18 ||
        (s[plen] == '0' && s[plen + 1] != '\0'))
        return -1;
    for (const char *p = s + plen; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    *out = strtoll(s + plen, NULL, 10);
    return 0;
}

static void on_changes(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_buf_t *buf = mx_call_buf(call);
    /* `left` stays empty: mxkeys does not know room membership. */
    mx_buf_puts(buf, "{\"changed\":");
    mx_buf_append(buf, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    mx_buf_puts(buf, ",\"left\":[]}");
    mx_call_respond_buf(call, 200, buf);
}

void mx_api_keys_changes(mx_call_t *call)
{
    /* Beside a homeserver, clients hold its /sync tokens, and it knows who shares rooms (and so `left`): it answers,
     * for local and remote users alike. */
    if (call->config->auth_mode == MX_AUTH_HOMESERVER) {
        mx_hs_forward(call);
        return;
    }
    const char *from = mx_call_query(call, "from"), *to = mx_call_query(call, "to");
    int64_t from_id, to_id = INT64_MAX;
    if (from == NULL) {
        mx_call_error(call, MX_ERR_MISSING_PARAM, "missing `from`");
        return;
    }
    if (parse_token(from, &from_id) != 0) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "`from` is not a stream token of this server (expected %s<n>)",
                      TOKEN_PREFIX);
        return;
    }
    if (to != NULL && parse_token(to, &to_id) != 0) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "`to` is not a stream token of this server (expected %s<n>)",
                      TOKEN_PREFIX);
        return;
    }
    char *from_text = mx_call_alloc(call, 24), *to_text = mx_call_alloc(call, 24);
    snprintf(from_text, 24, "%" PRId64, from_id);
    snprintf(to_text, 24, "%" PRId64, to_id);
    const char *params[3] = {call->user_id, from_text, to_text};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_CHANGES, .nparams = 3, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_changes);
}

static void on_position(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_printf(buf, "{\"device_list\":\"%s%s\"}", TOKEN_PREFIX, PQgetvalue(results[0], 0, 0));
    mx_call_respond_buf(call, 200, buf);
}

void mx_api_stream_position(mx_call_t *call)
{
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_STREAM_POSITION};
    (void)mx_call_db(call, &stmt, 1, on_position);
}
