/* The local part of POST /keys/query through the query cache (include/mxkeys/query_cache.h): users cached and
 * live are written from memory; the others are fetched in one statement (mx_keys_query_parts), written from what it
 * returned, and offered to the cache under the tickets taken before it was sent. The answer is the same text
 * mx_keys_query writes: the same stored pieces, joined the same way. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/keys_query_cache.h"
#include "mxkeys/matrix_ids.h"
#include "mxkeys/query_cache.h"

typedef struct st_wanted_user_t {
    const char *user;
    size_t len;
    const char **devices; /* the device ids asked for; none: all */
    size_t ndevices;
    uint64_t ticket; /* a miss's fill ticket */
    bool hit;
} wanted_user_t;

struct st_mx_cached_query_t {
    wanted_user_t *users;
    size_t nusers;
    mx_buf_t *maps[4]; /* device_keys, master_keys, self_signing_keys, user_signing_keys: members so far */
    mx_keys_query_local_cb done;
};
typedef mx_cached_query_t cached_query_t;

/* The handler's state starts with a pointer to ours (include/mxkeys/keys_query_cache.h). */
static cached_query_t *state_of(mx_call_t *call)
{
    return *(cached_query_t **)call->data;
}

static void run(mx_call_t *call);

static mx_qc_out_t out_of(cached_query_t *cq)
{
    return (mx_qc_out_t){cq->maps[0], cq->maps[1], cq->maps[2], cq->maps[3]};
}

/* `{"device_keys": {...}, "master_keys": {...}, ...}` from the members written so far, handed to the caller. */
static void finish(mx_call_t *call, cached_query_t *cq)
{
    static const char *const names[4] = {"{\"device_keys\": {", "}, \"master_keys\": {", "}, \"self_signing_keys\": {",
                                         "}, \"user_signing_keys\": {"};
    mx_buf_t *buf = mx_call_buf(call);
    for (int i = 0; i < 4; i++) {
        mx_buf_puts(buf, names[i]);
        if (cq->maps[i]->len > 0)
            mx_buf_append(buf, cq->maps[i]->data, cq->maps[i]->len);
    }
    mx_buf_puts(buf, "}}");
    cq->done(call, buf->data, buf->len);
}

static mx_qc_entry_t *entry_for(mx_call_t *call, const wanted_user_t *w)
{
    mx_buf_t *quoted = mx_call_buf(call);
    mx_buf_putc(quoted, '"');
    mx_json_escape(quoted, w->user, w->len);
    mx_buf_putc(quoted, '"');
    return mx_qc_entry_new(w->user, w->len, quoted->data, quoted->len);
}

/* Byte order of user ids (PostgreSQL's COLLATE "C"): user ids hold no NUL. */
static int by_user(const void *a, const void *b)
{
    return strcmp((*(wanted_user_t *const *)a)->user, (*(wanted_user_t *const *)b)->user);
}

/* Rows of mx_keys_query_parts: user_id, kind, item, item_json, signer, body; each user's rows contiguous. */
enum { C_USER, C_KIND, C_ITEM, C_ITEM_JSON, C_SIGNER, C_BODY };

static void on_parts(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    cached_query_t *cq = state_of(call);
    mx_query_cache_t *qc = call->worker->server->query_cache;
    PGresult *res = results[0];
    int nrows = PQntuples(res);
    if (nrows == 1 && PQgetvalue(res, 0, C_KIND)[0] == 'w') {
        mx_call_later(call, run); /* an identity write of one of these users is in flight: ask again shortly */
        return;
    }
    /* The misses in byte order, the rows' order: one walk over both. */
    wanted_user_t **misses = mx_call_alloc(call, cq->nusers * sizeof(*misses));
    size_t nmisses = 0;
    for (size_t i = 0; i < cq->nusers; i++)
        if (!cq->users[i].hit)
            misses[nmisses++] = &cq->users[i];
    qsort(misses, nmisses, sizeof(*misses), by_user);
    int row = 0;
    for (size_t i = 0; i < nmisses; i++) {
        wanted_user_t *w = misses[i];
        mx_qc_entry_t *e = entry_for(call, w);
        if (e == NULL) {
            mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
            return;
        }
        while (row < nrows && strcmp(PQgetvalue(res, row, C_USER), w->user) < 0)
            row++; /* not asked about: cannot happen, but never a reason to misplace the rest */
        bool ok = true;
        for (; ok && row < nrows && strcmp(PQgetvalue(res, row, C_USER), w->user) == 0; row++)
            ok = mx_qc_entry_add(e, PQgetvalue(res, row, C_KIND)[0], PQgetvalue(res, row, C_ITEM),
                                 (size_t)PQgetlength(res, row, C_ITEM), PQgetvalue(res, row, C_ITEM_JSON),
                                 (size_t)PQgetlength(res, row, C_ITEM_JSON), PQgetvalue(res, row, C_SIGNER),
                                 (size_t)PQgetlength(res, row, C_SIGNER), PQgetvalue(res, row, C_BODY),
                                 (size_t)PQgetlength(res, row, C_BODY)) == 0;
        if (!ok) {
            mx_qc_entry_free(e);
            mx_call_error(call, MX_ERR_INTERNAL, "out of memory");
            return;
        }
        mx_qc_out_t out = out_of(cq);
        mx_qc_entry_write(e, call->user_id, w->devices, w->ndevices, &out);
        if (!mx_query_cache_end_fill(qc, w->ticket, e))
            mx_qc_entry_free(e);
    }
    finish(call, cq);
}

/* Writes every cached user, fetches the rest. Runs again from the start after a wait for an identity write. */
static void run(mx_call_t *call)
{
    cached_query_t *cq = state_of(call);
    mx_query_cache_t *qc = call->worker->server->query_cache;
    for (int i = 0; i < 4; i++)
        mx_buf_reset(cq->maps[i]);
    mx_qc_out_t out = out_of(cq);
    size_t misses = 0;
    for (size_t i = 0; i < cq->nusers; i++) {
        wanted_user_t *w = &cq->users[i];
        w->hit = mx_query_cache_write(qc, w->user, w->len, call->user_id, w->devices, w->ndevices, &out);
        misses += !w->hit;
    }
    if (misses == 0) {
        finish(call, cq);
        return;
    }
    mx_query_cache_count_miss(qc, misses);
    /* The users to fetch, as the JSON object mx_keys_query_parts takes; tickets first, statement after. */
    mx_buf_t *wanted = mx_call_buf(call);
    mx_buf_putc(wanted, '{');
    for (size_t i = 0; i < cq->nusers; i++) {
        wanted_user_t *w = &cq->users[i];
        if (w->hit)
            continue;
        w->ticket = mx_query_cache_begin_fill(qc, w->user, w->len);
        if (wanted->len > 1)
            mx_buf_putc(wanted, ',');
        mx_buf_putc(wanted, '"');
        mx_json_escape(wanted, w->user, w->len);
        mx_buf_puts(wanted, "\":0");
    }
    mx_buf_putc(wanted, '}');
    const char *params[2] = {wanted->data, mx_mirror_enabled(call) ? "true" : "false"};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_QUERY_PARTS, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_parts);
}

bool mx_keys_query_cached(mx_call_t *call, const json_t *requested, mx_keys_query_local_cb done)
{
    if (call->worker->server->query_cache == NULL || !json_is_object(requested))
        return false;
    const char *server_name = call->config->server_name;
    cached_query_t *cq = mx_call_alloc(call, sizeof(*cq));
    memset(cq, 0, sizeof(*cq));
    cq->done = done;
    size_t asked = json_object_size(requested); /* at most this many are local */
    cq->users = mx_call_alloc(call, (asked ? asked : 1) * sizeof(*cq->users));
    const char *user;
    json_t *devices;
    json_object_foreach((json_t *)requested, user, devices)
    {
        if (strcmp(mx_user_id_server(user), server_name) != 0)
            continue; /* another server's user: answered in `failures`, or asked of the homeserver */
        wanted_user_t *w = &cq->users[cq->nusers++];
        memset(w, 0, sizeof(*w));
        w->user = user;
        w->len = strlen(user);
        w->ndevices = json_array_size(devices);
        w->devices = mx_call_alloc(call, (w->ndevices ? w->ndevices : 1) * sizeof(*w->devices));
        for (size_t d = 0; d < w->ndevices; d++)
            w->devices[d] = json_string_value(json_array_get(devices, d));
    }
    for (int m = 0; m < 4; m++)
        cq->maps[m] = mx_call_buf(call);
    *(cached_query_t **)call->data = cq;
    run(call);
    return true;
}
