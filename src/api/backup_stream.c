/* Streamed reads of backed-up sessions. A whole backup can hold 100,000 sessions: it is read with keyset pagination
 * on the primary key (one round trip per page of PAGE_ROWS, never one per room) and each page is written to the
 * client as one chunk. The next page is fetched only when h2o has written the previous chunk (the generator's
 * proceed), so memory stays at one page whatever the backup's size and however slow the client.
 *
 * Lifetime: the stream state lives in the request pool. If the client goes away, the pool's dispose cancels the page
 * in flight (call.h) and frees the buffers here; nothing runs afterwards. A database failure after the first chunk
 * can no longer change the status, so the call layer cuts the body short (the client sees invalid JSON, never a
 * wrong answer).
 *
 * Pages are separate transactions: sessions written during a long read may or may not appear, each session itself
 * is always whole and each appears at most once (the keyset position only moves forward). */
#include "mxkeys/backup_stream.h"
#include <stdio.h>
#include <string.h>
#include "mxkeys/canonical_json.h"

#define PAGE_ROWS 2000
#define STR_(x) #x
#define STR(x) STR_(x)

typedef struct st_session_stream_t {
    h2o_generator_t super;
    mx_call_t *call;
    const char *version;
    const char *room_id; /* NULL: the whole backup */
    mx_buf_t chunk;      /* the chunk h2o is writing; reset only in proceed, when h2o is done with it */
    mx_buf_t last_room;  /* keyset position: the last row sent */
    mx_buf_t last_session;
    bool started;    /* the 200 and the body's head are out */
    bool room_open;  /* whole backup: a room's "sessions" object is open */
    bool need_comma; /* the open "sessions" object has members */
} session_stream_t;

void mx_backup_write_key_data(mx_buf_t *out, const PGresult *res, int row)
{
    mx_buf_puts(out, "{\"first_message_index\":");
    mx_buf_append(out, PQgetvalue(res, row, MX_BACKUP_COL_INDEX), (size_t)PQgetlength(res, row, MX_BACKUP_COL_INDEX));
    mx_buf_puts(out, ",\"forwarded_count\":");
    mx_buf_append(out, PQgetvalue(res, row, MX_BACKUP_COL_FORWARDED),
                  (size_t)PQgetlength(res, row, MX_BACKUP_COL_FORWARDED));
    mx_buf_puts(out, PQgetvalue(res, row, MX_BACKUP_COL_VERIFIED)[0] == 't' ? ",\"is_verified\":true"
                                                                            : ",\"is_verified\":false");
    mx_buf_puts(out, ",\"session_data\":");
    mx_buf_append(out, PQgetvalue(res, row, MX_BACKUP_COL_DATA), (size_t)PQgetlength(res, row, MX_BACKUP_COL_DATA));
    mx_buf_putc(out, '}');
}

static const char *text_of(const mx_buf_t *b)
{
    return b->len ? b->data : "";
}

static void set_text(mx_buf_t *b, const char *s, size_t len)
{
    mx_buf_reset(b);
    mx_buf_append(b, s, len);
}

static void on_page(mx_call_t *call, PGresult **results, size_t n);

static void fetch_page(session_stream_t *st)
{
    mx_call_t *call = st->call;
    const char *page[5] = {call->user_id, st->version, st->room_id ? st->room_id : text_of(&st->last_room),
                           text_of(&st->last_session), STR(PAGE_ROWS)};
    const char *exists[2] = {call->user_id, st->version};
    mx_db_stmt_t stmts[2] = {
        {.id = MX_STMT_BACKUP_EXISTS, .nparams = 2, .values = exists},
        {.id = st->room_id ? MX_STMT_BACKUP_PAGE_ROOM : MX_STMT_BACKUP_PAGE_ALL, .nparams = 5, .values = page}};
    /* The first page also checks that the version exists, in the same round trip. */
    (void)mx_call_db(call, st->started ? stmts + 1 : stmts, st->started ? 1 : 2, on_page);
}

static void on_proceed(h2o_generator_t *self, h2o_req_t *req)
{
    (void)req;
    session_stream_t *st = (session_stream_t *)self;
    mx_buf_reset(&st->chunk);
    fetch_page(st);
}

static void on_stop(h2o_generator_t *self, h2o_req_t *req)
{
    (void)self, (void)req; /* the request pool's dispose cancels the page in flight */
}

static void on_stream_dispose(void *p)
{
    session_stream_t *st = p;
    mx_buf_free(&st->chunk);
    mx_buf_free(&st->last_room);
    mx_buf_free(&st->last_session);
}

/* Appends the page's rows to the chunk, opening and closing room objects as the room changes. */
static void write_rows(session_stream_t *st, const PGresult *page, int rows)
{
    mx_buf_t *out = &st->chunk;
    for (int i = 0; i < rows; i++) {
        if (st->room_id == NULL) {
            const char *room = PQgetvalue(page, i, MX_BACKUP_COL_ROOM);
            const char *prev = i > 0 ? PQgetvalue(page, i - 1, MX_BACKUP_COL_ROOM) : text_of(&st->last_room);
            if (!st->room_open || strcmp(room, prev) != 0) {
                mx_buf_puts(out, st->room_open ? "}},\"" : "\"");
                mx_json_escape(out, room, (size_t)PQgetlength(page, i, MX_BACKUP_COL_ROOM));
                mx_buf_puts(out, "\":{\"sessions\":{");
                st->room_open = true;
                st->need_comma = false;
            }
        }
        mx_buf_puts(out, st->need_comma ? ",\"" : "\"");
        mx_json_escape(out, PQgetvalue(page, i, MX_BACKUP_COL_SESSION),
                       (size_t)PQgetlength(page, i, MX_BACKUP_COL_SESSION));
        mx_buf_puts(out, "\":");
        mx_backup_write_key_data(out, page, i);
        st->need_comma = true;
    }
    if (rows > 0) {
        set_text(&st->last_room, PQgetvalue(page, rows - 1, MX_BACKUP_COL_ROOM),
                 (size_t)PQgetlength(page, rows - 1, MX_BACKUP_COL_ROOM));
        set_text(&st->last_session, PQgetvalue(page, rows - 1, MX_BACKUP_COL_SESSION),
                 (size_t)PQgetlength(page, rows - 1, MX_BACKUP_COL_SESSION));
    }
}

static void on_page(mx_call_t *call, PGresult **results, size_t n)
{
    session_stream_t *st = call->data;
    /* after the first chunk a failed page aborts the stream (mx_call_db_error knows) */
    if (!mx_call_results_ok(call, results, n))
        return;
    if (!st->started) {
        if (PQgetvalue(results[0], 0, 0)[0] != 't') {
            mx_call_error(call, MX_ERR_NOT_FOUND, "no backup version %s", st->version);
            return;
        }
    }
    PGresult *page = results[n - 1];
    if (!st->started) {
        st->started = true;
        mx_call_stream_start(call, 200, &st->super);
        mx_buf_puts(&st->chunk, st->room_id ? "{\"sessions\":{" : "{\"rooms\":{");
    }
    int rows = PQntuples(page);
    write_rows(st, page, rows);
    bool last = rows < PAGE_ROWS;
    if (last)
        mx_buf_puts(&st->chunk, st->room_id || !st->room_open ? "}}" : "}}}}");
    mx_call_stream_send(call, st->chunk.data, st->chunk.len, last);
}

void mx_backup_stream_sessions(mx_call_t *call, const char *version, const char *room_id)
{
    session_stream_t *st = h2o_mem_alloc_shared(&call->req->pool, sizeof(*st), on_stream_dispose);
    memset(st, 0, sizeof(*st));
    st->super.proceed = on_proceed;
    st->super.stop = on_stop;
    st->call = call;
    st->version = version;
    st->room_id = room_id;
    call->data = st;
    fetch_page(st);
}
