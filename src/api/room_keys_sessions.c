/* /room_keys/keys[/{roomId}[/{sessionId}]]?version=V: backed-up sessions at three levels (all rooms, one room, one
 * session). Writes are one SQL function call each (exact etag/count); whole-backup and whole-room reads stream
 * page by page, so a 100,000-session backup is never held in memory at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/json_writer.h"
#include "mxkeys/room_keys.h"

#define PAGE_ROWS "1000"

/* ---- PUT ------------------------------------------------------------------------------------------------------- */

static void on_put(mx_call_t *call, PGresult **results, size_t n)
{
    (void)n;
    if (!mx_db_result_ok(results[0])) {
        mx_call_db_error(call, results[0]);
        return;
    }
    mx_backup_respond_write(call, results[0]);
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

void mx_api_backup_keys_put(mx_call_t *call)
{
    int64_t version = mx_backup_query_version(call);
    if (version < 0)
        return;
    /* Bring the three levels to one shape: {"<room>": {"sessions": {"<session>": data}}}. */
    json_t *rooms;
    if (call->nparams == 2) {
        if (mx_backup_check_key_data(call, call->body, "the session") != 0)
            return;
        rooms = json_pack("{s:{s:{s:O}}}", call->params[0], "sessions", call->params[1], call->body);
    } else if (call->nparams == 1) {
        rooms = json_pack("{s:O}", call->params[0], call->body);
    } else {
        rooms = json_incref(json_object_get(call->body, "rooms"));
        if (rooms == NULL) {
            mx_call_error(call, MX_ERR_MISSING_PARAM, "missing `rooms`");
            return;
        }
        if (!json_is_object(rooms)) {
            json_decref(rooms);
            mx_call_error(call, MX_ERR_BAD_JSON, "`rooms` must be an object");
            return;
        }
    }
    long total = 0;
    const char *room_id;
    json_t *room;
    json_object_foreach(rooms, room_id, room)
    {
        long n = check_room(call, room_id, room);
        if (n < 0)
            goto done;
        total += n;
    }
    if ((unsigned long)total > call->config->max_keys_per_request) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "too many sessions in one request: %ld (the limit is %u)", total,
                      call->config->max_keys_per_request);
        goto done;
    }
    char *text = json_dumps(rooms, JSON_COMPACT);
    if (text == NULL) {
        mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
        goto done;
    }
    char vtext[24];
    snprintf(vtext, sizeof(vtext), "%lld", (long long)version);
    const char *params[3] = {call->user_id, vtext, mx_call_strdup(call, text, strlen(text))};
    free(text);
    mx_db_stmt_t stmt = {.id = MX_STMT_BACKUP_PUT, .nparams = 3, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_put);
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
    (void)mx_call_db(call, &stmt, 1, on_put);
}

/* ---- GET ------------------------------------------------------------------------------------------------------- */

/* Column order of MX_STMT_BACKUP_SESSIONS_PAGE. */
enum { COL_ROOM, COL_SESSION, COL_INDEX, COL_FORWARDED, COL_VERIFIED, COL_DATA };

static void write_key_data(mx_jw_t *jw, const PGresult *res, int row)
{
    mx_jw_object_begin(jw);
    mx_jw_key(jw, "first_message_index");
    mx_jw_raw(jw, PQgetvalue(res, row, COL_INDEX), (size_t)PQgetlength(res, row, COL_INDEX));
    mx_jw_key(jw, "forwarded_count");
    mx_jw_raw(jw, PQgetvalue(res, row, COL_FORWARDED), (size_t)PQgetlength(res, row, COL_FORWARDED));
    mx_jw_key(jw, "is_verified");
    mx_jw_bool(jw, PQgetvalue(res, row, COL_VERIFIED)[0] == 't');
    mx_jw_key(jw, "session_data");
    mx_jw_raw(jw, PQgetvalue(res, row, COL_DATA), (size_t)PQgetlength(res, row, COL_DATA));
    mx_jw_object_end(jw);
}

/* A streamed read of many sessions: one page per round trip, one chunk per page, the chunk buffer reused. */
typedef struct st_session_stream_t {
    h2o_generator_t super;
    mx_call_t *call;
    bool all_rooms; /* {"rooms": {...}} rather than {"sessions": {...}} */
    char version[24];
    mx_buf_t chunk;                 /* what h2o is writing now; reset only in proceed, when h2o is done with it */
    char *last_room, *last_session; /* keyset position (malloc'd) */
    bool any_room;                  /* a room object is open (all-rooms level) */
    bool any_session;               /* the open sessions object has members */
} session_stream_t;

static void on_page(mx_call_t *call, PGresult **results, size_t n);

static void stream_dispose(void *p)
{
    session_stream_t *st = p;
    mx_buf_free(&st->chunk);
    free(st->last_room);
    free(st->last_session);
}

static void fetch_page(session_stream_t *st, bool first)
{
    mx_call_t *call = st->call;
    const char *room = st->all_rooms ? NULL : call->params[0];
    const char *params[7] = {call->user_id,
                             st->version,
                             room,
                             NULL,
                             st->last_room ? st->last_room : "",
                             st->last_session ? st->last_session : "",
                             PAGE_ROWS};
    const char *exists[2] = {call->user_id, st->version};
    mx_db_stmt_t stmts[2] = {{.id = MX_STMT_BACKUP_EXISTS, .nparams = 2, .values = exists},
                             {.id = MX_STMT_BACKUP_SESSIONS_PAGE, .nparams = 7, .values = params}};
    /* The first page also checks that the version exists: one round trip either way. */
    (void)mx_call_db(call, first ? stmts : stmts + 1, first ? 2 : 1, on_page);
}

static void on_proceed(h2o_generator_t *self, h2o_req_t *req)
{
    (void)req;
    session_stream_t *st = (session_stream_t *)self;
    mx_buf_reset(&st->chunk);
    fetch_page(st, false);
}

static void on_stop(h2o_generator_t *self, h2o_req_t *req)
{
    (void)self, (void)req; /* the request's dispose cancels any page in flight */
}

static void on_page(mx_call_t *call, PGresult **results, size_t n)
{
    session_stream_t *st = call->data;
    PGresult *page = results[n - 1];
    if (n == 2) {
        if (!mx_db_result_ok(results[0])) {
            mx_call_db_error(call, results[0]);
            return;
        }
        if (PQgetvalue(results[0], 0, 0)[0] != 't') {
            mx_call_error(call, MX_ERR_NOT_FOUND, "no backup version %s", st->version);
            return;
        }
    }
    if (!mx_db_result_ok(page)) {
        mx_call_db_error(call, page);
        return;
    }
    mx_jw_t jw;
    mx_jw_init(&jw, &st->chunk);
    if (n == 2) {
        mx_call_stream_start(call, 200, &st->super);
        mx_buf_puts(&st->chunk, st->all_rooms ? "{\"rooms\":{" : "{\"sessions\":{");
    }
    int rows = PQntuples(page);
    for (int i = 0; i < rows; i++) {
        const char *room = PQgetvalue(page, i, COL_ROOM), *session = PQgetvalue(page, i, COL_SESSION);
        if (st->all_rooms && (!st->any_room || strcmp(room, st->last_room) != 0)) {
            if (st->any_room)
                mx_buf_puts(&st->chunk, "}},");
            mx_buf_putc(&st->chunk, '"');
            mx_json_escape(&st->chunk, room, strlen(room));
            mx_buf_puts(&st->chunk, "\":{\"sessions\":{");
            st->any_room = true;
            st->any_session = false;
        }
        if (st->any_session)
            mx_buf_putc(&st->chunk, ',');
        mx_buf_putc(&st->chunk, '"');
        mx_json_escape(&st->chunk, session, strlen(session));
        mx_buf_puts(&st->chunk, "\":");
        jw.depth = 0;
        jw.need_comma[0] = false;
        write_key_data(&jw, page, i);
        st->any_session = true;
        free(st->last_room);
        free(st->last_session);
        st->last_room = strdup(room);
        st->last_session = strdup(session);
    }
    bool last = rows < atoi(PAGE_ROWS);
    if (last)
        mx_buf_puts(&st->chunk, st->all_rooms ? (st->any_room ? "}}}}" : "}}") : "}}");
    mx_call_stream_send(call, st->chunk.data, st->chunk.len, last);
}

static void on_session(mx_call_t *call, PGresult **results, size_t n)
{
    (void)n;
    for (int i = 0; i < 2; i++) {
        if (!mx_db_result_ok(results[i])) {
            mx_call_db_error(call, results[i]);
            return;
        }
    }
    if (PQgetvalue(results[0], 0, 0)[0] != 't') {
        mx_call_error(call, MX_ERR_NOT_FOUND, "no such backup version");
        return;
    }
    if (PQntuples(results[1]) == 0) {
        mx_call_error(call, MX_ERR_NOT_FOUND, "no backed-up session %s in room %s", call->params[1], call->params[0]);
        return;
    }
    mx_buf_t *buf = mx_call_buf(call);
    mx_jw_t jw;
    mx_jw_init(&jw, buf);
    write_key_data(&jw, results[1], 0);
    mx_call_respond_buf(call, 200, buf);
}

void mx_api_backup_keys_get(mx_call_t *call)
{
    int64_t version = mx_backup_query_version(call);
    if (version < 0)
        return;
    session_stream_t *st = h2o_mem_alloc_shared(&call->req->pool, sizeof(*st), stream_dispose);
    memset(st, 0, sizeof(*st));
    st->super.proceed = on_proceed;
    st->super.stop = on_stop;
    st->call = call;
    st->all_rooms = call->nparams == 0;
    snprintf(st->version, sizeof(st->version), "%lld", (long long)version);
    call->data = st;
    if (call->nparams == 2) {
        const char *params[7] = {call->user_id, st->version, call->params[0], call->params[1], "", "", "1"};
        const char *exists[2] = {call->user_id, st->version};
        mx_db_stmt_t stmts[2] = {{.id = MX_STMT_BACKUP_EXISTS, .nparams = 2, .values = exists},
                                 {.id = MX_STMT_BACKUP_SESSIONS_PAGE, .nparams = 7, .values = params}};
        (void)mx_call_db(call, stmts, 2, on_session);
        return;
    }
    fetch_page(st, true);
}
