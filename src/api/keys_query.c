/* POST /keys/query: device keys (and cross-signing keys) of local users in one statement, however many users.
 * Other servers' users are reported in `failures` standalone; beside a homeserver they are asked of it (it federates
 * and keeps remote device lists current) while the local part runs, and the two answers are merged. Beside a
 * homeserver the local part also waits, bounded, while an identity write of one of its users is in flight to the
 * homeserver (mxkeys/identity_mirror.h), so that the state it answers is the one the homeserver announces. */
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/json_splice.h"
#include "mxkeys/keys_query_cache.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"

/* The maps of the answer that can hold other servers' users. */
static const char *const merged_maps[] = {"device_keys", "master_keys", "self_signing_keys", "user_signing_keys"};
#define NMAPS 4

typedef struct st_query_t {
    mx_cached_query_t *cached; /* first: the cache's state (include/mxkeys/keys_query_cache.h) */
    mx_buf_t *failures;        /* the failures object, already encoded (standalone) */
    const char *wanted;        /* local users asked about, JSON text */
    const char *remote;        /* other servers' users, JSON text, or NULL */
    mx_keys_remote_ask_t *ask; /* ... asked of the homeserver */
    const char *local;         /* the database's answer, once it came */
    size_t local_len;
} query_t;

/* The local answer with the homeserver's users merged into its maps, `failures` first. */
static void respond_merged(mx_call_t *call)
{
    query_t *q = call->data;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_puts(buf, "{\"failures\":");
    if (q->remote == NULL) {
        mx_buf_append(buf, q->failures->data, q->failures->len);
        mx_buf_putc(buf, ',');
        mx_buf_append(buf, q->local + 1, q->local_len - 1);
        mx_call_respond_buf(call, 200, buf);
        return;
    }
    mx_buf_putc(buf, '{');
    mx_keys_remote_failures(q->ask->answer, q->remote, call->config->server_name, q->ask->why, buf);
    mx_buf_puts(buf, "},");
    mx_splice_rule_t rules[NMAPS];
    mx_buf_t *members = mx_call_buf(call);
    size_t starts[NMAPS + 1];
    for (int i = 0; i < NMAPS; i++) {
        starts[i] = members->len;
        mx_keys_remote_members(json_object_get(q->ask->answer, merged_maps[i]), call->config->server_name, false,
                               members);
    }
    starts[NMAPS] = members->len;
    for (int i = 0; i < NMAPS; i++)
        rules[i] = (mx_splice_rule_t){.path = {merged_maps[i]},
                                      .depth = 1,
                                      .action = MX_SPLICE_APPEND_MEMBERS,
                                      .text = members->data ? members->data + starts[i] : "",
                                      .len = starts[i + 1] - starts[i],
                                      .add_if_missing = true};
    /* The local text is an object whose first byte is '{': the splicer sees it whole, and its output after that
     * brace follows `failures`. */
    mx_buf_t *merged = mx_call_buf(call);
    mx_splice_t s;
    if (mx_splice_init(&s, rules, NMAPS) != 0 || mx_splice_feed(&s, q->local, q->local_len, merged) != 0 ||
        mx_splice_finish(&s, merged) != 0) {
        mx_call_error(call, MX_ERR_INTERNAL, "cannot merge the homeserver's answer");
        return;
    }
    mx_buf_append(buf, merged->data + 1, merged->len - 1);
    mx_call_respond_buf(call, 200, buf);
}

static void maybe_respond(mx_call_t *call)
{
    query_t *q = call->data;
    if (q->local != NULL && (q->ask == NULL || !q->ask->pending))
        respond_merged(call);
}

static void query_local(mx_call_t *call);

static void on_queried(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    query_t *q = call->data;
    int col = PQnfields(results[0]) - 1; /* the settled form has the wait first, the answer last */
    if (col > 0 && !PQgetisnull(results[0], 0, 0)) {
        mx_call_later(call, query_local); /* an identity write of one of these users is in flight */
        return;
    }
    q->local_len = (size_t)PQgetlength(results[0], 0, col);
    q->local = mx_call_strdup(call, PQgetvalue(results[0], 0, col), q->local_len);
    maybe_respond(call);
}

static void on_cached(mx_call_t *call, const char *answer, size_t len)
{
    query_t *q = call->data;
    q->local = answer;
    q->local_len = len;
    maybe_respond(call);
}

static void query_local(mx_call_t *call)
{
    query_t *q = call->data;
    if (mx_keys_query_cached(call, json_object_get(call->body, "device_keys"), on_cached))
        return;
    const char *params[2] = {call->user_id, q->wanted};
    mx_db_stmt_t stmt = {.id = mx_mirror_enabled(call) ? MX_STMT_KEYS_QUERY_SETTLED : MX_STMT_KEYS_QUERY,
                         .nparams = 2,
                         .values = params};
    (void)mx_call_db(call, &stmt, 1, on_queried);
}

/* device_keys[user]: a list of device ids (empty: all devices). Counts the user plus each device. */
static long check_devices(mx_call_t *call, const char *user, const json_t *devices)
{
    size_t i;
    json_t *d;
    if (!json_is_array(devices)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "device_keys[%s] must be a list of device ids", user);
        return -1;
    }
    json_array_foreach(devices, i, d)
    {
        if (!json_is_string(d)) {
            mx_call_error(call, MX_ERR_BAD_JSON, "device_keys[%s] must be a list of device ids (strings)", user);
            return -1;
        }
    }
    return 1 + (long)json_array_size(devices);
}

void mx_api_keys_query(mx_call_t *call)
{
    query_t *q = mx_call_alloc(call, sizeof(*q));
    memset(q, 0, sizeof(*q));
    q->wanted = mx_keys_split_request(call, "device_keys", "user id -> list of device ids", check_devices, &q->failures,
                                      mx_mirror_enabled(call) ? &q->remote : NULL);
    if (q->wanted == NULL)
        return;
    call->data = q;
    if (q->remote != NULL && (q->ask = mx_keys_remote_ask(call, q->remote, "device_keys", true, maybe_respond)) == NULL)
        return;
    query_local(call);
}
