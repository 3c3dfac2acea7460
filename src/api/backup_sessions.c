/* /room_keys/keys[/{roomId}[/{sessionId}]]?version=V: backed-up sessions at three levels (all rooms, one room, one
 * session). Writes and deletes are one SQL function call each, which keeps etag and count exact; whole-backup and
 * whole-room reads are streamed (backup_stream.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/backup_common.h"
#include "mxkeys/backup_stream.h"

/* ---- PUT ------------------------------------------------------------------------------------------------------- */

/* Writes and deletes answer the {"etag","count"} text their SQL function returns. A write to a version that is not
 * the current one is an error raised in SQL (403 M_WRONG_ROOM_KEYS_VERSION carrying current_version), answered by
 * mx_call_results_ok like every other client error. */
static void on_written(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    size_t len = (size_t)PQgetlength(results[0], 0, 0);
    mx_call_respond(call, 200, mx_call_strdup(call, PQgetvalue(results[0], 0, 0), len), len);
}

/* Checks a {"sessions": {...}} room object; returns the number of sessions or -1 (answered). */
static long check_room(mx_call_t *call, const char *room_id, const json_t *room)
{
    char where[512];
    if (room_id[0] == '\0') {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "room ids must not be empty");
        return -1;
    }
    const json_t *sessions = json_object_get(room, "sessions");
    if (!json_is_object(room) || sessions == NULL) {
        mx_call_error(call, json_is_object(room) ? MX_ERR_MISSING_PARAM : MX_ERR_BAD_JSON,
                      "room %s must be an object with `sessions`", room_id);
        return -1;
    }
    if (!json_is_object(sessions)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "rooms[%s].sessions must be an object", room_id);
        return -1;
    }
    const char *session_id;
    json_t *data;
    json_object_foreach((json_t *)sessions, session_id, data)
    {
        if (session_id[0] == '\0') {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "session ids must not be empty");
            return -1;
        }
        snprintf(where, sizeof(where), "rooms[%s].sessions[%s]", room_id, session_id);
        if (mx_backup_check_key_data(call, data, where) != 0)
            return -1;
    }
    return (long)json_object_size(sessions);
}

/* Sessions in a rooms map whose shape is not checked yet; counted first so an oversized request costs nothing more. */
static size_t count_sessions(json_t *rooms)
{
    size_t total = 0;
    const char *room_id;
    json_t *room;
    json_object_foreach(rooms, room_id, room) total += json_object_size(json_object_get(room, "sessions"));
    return total;
}

void mx_api_backup_keys_put(mx_call_t *call)
{
    int64_t version = mx_backup_query_version(call);
    if (version < 0)
        return;
    /* Bring the three levels to one shape, {"<room>": {"sessions": {"<session>": data}}}, sent to SQL as one jsonb
     * parameter: one round trip however many sessions. */
    json_t *rooms;
    if (call->nparams == 2) {
        rooms = json_pack("{s:{s:{s:O}}}", call->params[0], "sessions", call->params[1], call->body);
    } else if (call->nparams == 1) {
        rooms = json_pack("{s:O}", call->params[0], call->body);
    } else {
        rooms = json_incref(json_object_get(call->body, "rooms"));
        if (rooms == NULL) {
            mx_call_error(call, MX_ERR_MISSING_PARAM, "missing `rooms`");
            return;
        }
    }
    if (rooms == NULL) {
        mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
        return;
    }
    if (!json_is_object(rooms)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`rooms` must be an object");
        goto done;
    }
    size_t total = count_sessions(rooms);
    if (total > call->config->max_keys_per_request) {
        mx_call_error(call, MX_ERR_INVALID_PARAM,
                      "too many sessions in one request: %zu (the limit is %u); send them in several requests", total,
                      call->config->max_keys_per_request);
        goto done;
    }
    const char *room_id;
    json_t *room;
    json_object_foreach(rooms, room_id, room)
    {
        if (check_room(call, room_id, room) < 0)
            goto done;
    }
    char vtext[24];
    snprintf(vtext, sizeof(vtext), "%lld", (long long)version);
    /* The whole-backup form sends the request body as it came (validated above, so valid JSON): encoding 100 KB of
     * sessions again cost as much as parsing them. The room and session forms wrap the body, so they are encoded. */
    bool raw = call->nparams == 0;
    char *text = raw ? NULL : json_dumps(rooms, JSON_COMPACT);
    if (!raw && text == NULL) {
        mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
        goto done;
    }
    /* libpq wants text parameters NUL-terminated, which h2o's body is not: one copy, far cheaper than encoding. */
    const char *body = raw ? mx_call_strdup(call, call->req->entity.base, call->req->entity.len) : NULL;
    const char *params[3] = {call->user_id, vtext, raw ? body : text};
    mx_db_stmt_t stmt = {.id = raw ? MX_STMT_BACKUP_PUT_BODY : MX_STMT_BACKUP_PUT, .nparams = 3, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_written); /* parameters are copied during the submit */
    free(text);
done:
    json_decref(rooms);
}

/* ---- DELETE ---------------------------------------------------------------------------------------------------- */

void mx_api_backup_keys_delete(mx_call_t *call)
{
    int64_t version = mx_backup_query_version(call);
    if (version < 0)
        return;
    char *vtext = mx_call_alloc(call, 24);
    snprintf(vtext, 24, "%lld", (long long)version);
    const char *params[4] = {call->user_id, vtext, call->nparams > 0 ? call->params[0] : NULL,
                             call->nparams > 1 ? call->params[1] : NULL};
    mx_db_stmt_t stmt = {.id = MX_STMT_BACKUP_DELETE_SESSIONS, .nparams = 4, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_written);
}

/* ---- GET ------------------------------------------------------------------------------------------------------- */

static void on_session(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    if (PQgetvalue(results[0], 0, 0)[0] != 't') {
        mx_call_error(call, MX_ERR_NOT_FOUND, "no backup version %s", mx_call_query(call, "version"));
        return;
    }
    if (PQntuples(results[1]) == 0) {
        mx_call_error(call, MX_ERR_NOT_FOUND, "no backed-up session %s in room %s", call->params[1], call->params[0]);
        return;
    }
    mx_buf_t *buf = mx_call_buf(call);
    mx_backup_write_key_data(buf, results[1], 0);
    mx_call_respond_buf(call, 200, buf);
}

void mx_api_backup_keys_get(mx_call_t *call)
{
    int64_t version = mx_backup_query_version(call);
    if (version < 0)
        return;
    char *vtext = mx_call_alloc(call, 24);
    snprintf(vtext, 24, "%lld", (long long)version);
    if (call->nparams < 2) {
        mx_backup_stream_sessions(call, vtext, call->nparams == 1 ? call->params[0] : NULL);
        return;
    }
    const char *exists[2] = {call->user_id, vtext};
    const char *params[4] = {call->user_id, vtext, call->params[0], call->params[1]};
    mx_db_stmt_t stmts[2] = {{.id = MX_STMT_BACKUP_EXISTS, .nparams = 2, .values = exists},
                             {.id = MX_STMT_BACKUP_SESSION, .nparams = 4, .values = params}};
    (void)mx_call_db(call, stmts, 2, on_session);
}
