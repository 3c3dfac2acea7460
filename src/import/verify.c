/* --verify: what Synapse's data implies a user's own client sees, against what mxkeys serves: the /keys/query
 * answer (the user's devices, cross-signing keys and the signatures the user may see, from mx_keys_query, the
 * function behind the endpoint), the claimable one-time keys per device and algorithm and the fallback keys, and
 * /room_keys (every version's algorithm, auth_data, etag, count and deleted state; every session). Every difference
 * is listed. Reads only; nothing is written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "mxkeys/db_sync.h"

typedef struct st_verifier_t {
    imp_sink_t super;
    PGconn *mx;
    imp_report_t *report;
    json_t *otk_counts;     /* "device\talgorithm" -> count from Synapse */
    json_t *session_counts; /* version -> count from Synapse */
    json_t *doc;            /* the user's document (begin) */
} verifier_t;

static char *dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (s == NULL)
        abort();
    if (strlen(s) > 300)
        strcpy(s + 297, "...");
    return s;
}

static void compare(verifier_t *v, const char *user, const char *what, const json_t *expected, const json_t *actual)
{
    bool no_expected = expected == NULL || json_is_null(expected), no_actual = actual == NULL || json_is_null(actual);
    if ((no_expected && no_actual) || (!no_expected && !no_actual && json_equal(expected, actual)))
        return;
    if (no_expected) {
        imp_difference(v->report, user, "%s: in mxkeys only", what);
        return;
    }
    if (no_actual) {
        imp_difference(v->report, user, "%s: missing in mxkeys", what);
        return;
    }
    char *a = dump(expected), *b = dump(actual);
    imp_difference(v->report, user, "%s: Synapse implies %s, mxkeys serves %s", what, a, b);
    free(a);
    free(b);
}

/* The rows of a query answering (key text, JSON text) as one object: key -> parsed value. NULL when out of memory or
 * a value does not parse (the query builds it: neither happens short of a bug). */
static json_t *rows_to_map(PGresult *res)
{
    json_t *map = json_object();
    json_error_t je;
    for (int row = 0; map != NULL && row < PQntuples(res); row++) {
        json_t *value = json_loads(PQgetvalue(res, row, 1), JSON_DECODE_ANY, &je);
        if (value == NULL || json_object_set_new(map, PQgetvalue(res, row, 0), value) != 0) {
            json_decref(map);
            map = NULL;
        }
    }
    return map;
}

/* Reports every key whose value differs between what Synapse implies and what mxkeys holds, both ways round. */
static void compare_maps(verifier_t *v, const char *user, const char *label, const json_t *expected,
                         const json_t *actual)
{
    const char *k;
    json_t *e;
    char what[700];
    json_object_foreach((json_t *)expected, k, e)
    {
        snprintf(what, sizeof(what), "%s %s", label, k);
        compare(v, user, what, e, json_object_get(actual, k));
    }
    json_object_foreach((json_t *)actual, k, e) if (json_object_get(expected, k) == NULL)
    {
        snprintf(what, sizeof(what), "%s %s", label, k);
        compare(v, user, what, NULL, e);
    }
}

/* obj with the signatures the user sees on target merged in (signed by the user itself: self-view) */
static json_t *with_signatures(const json_t *obj, const json_t *sigs, const char *user, const char *target)
{
    json_t *out = json_deep_copy(obj);
    size_t i;
    json_t *s;
    json_array_foreach(sigs, i, s)
    {
        if (strcmp(json_string_value(json_object_get(s, "t")), target) != 0 ||
            strcmp(json_string_value(json_object_get(s, "su")), user) != 0)
            continue;
        json_t *all = json_object_get(out, "signatures");
        if (all == NULL)
            json_object_set_new(out, "signatures", all = json_object());
        json_t *by = json_object_get(all, user);
        if (by == NULL)
            json_object_set_new(all, user, by = json_object());
        json_object_set(by, json_string_value(json_object_get(s, "sk")), json_object_get(s, "sig"));
    }
    return out;
}

static int on_begin(imp_sink_t *s, const char *user, const json_t *doc, char *err, size_t errlen)
{
    verifier_t *v = (verifier_t *)s;
    json_decref(v->doc);
    v->doc = json_deep_copy(doc);
    json_object_clear(v->otk_counts);
    json_object_clear(v->session_counts);
    const char *params[] = {user};
    PGresult *res = mx_db_exec(v->mx, "SELECT mx_keys_query($1, jsonb_build_object($1::text, '[]'::jsonb))", 1, params,
                               err, errlen);
    if (res == NULL)
        return -1;
    json_error_t je;
    json_t *answer = json_loads(PQgetvalue(res, 0, 0), 0, &je);
    PQclear(res);
    json_t *sigs = json_object_get(doc, "sigs");

    /* device keys */
    json_t *expected = json_object(), *actual = json_object_get(json_object_get(answer, "device_keys"), user);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(doc, "devices"), i, d)
    {
        const json_t *keys = json_object_get(d, "keys");
        if (json_is_null(keys))
            continue;
        const char *device = json_string_value(json_object_get(d, "d"));
        json_t *obj = with_signatures(keys, sigs, user, device);
        const char *name = json_string_value(json_object_get(d, "name"));
        json_object_set_new(obj, "unsigned",
                            name != NULL ? json_pack("{s:s}", "device_display_name", name) : json_object());
        json_object_set_new(expected, device, obj);
    }
    compare_maps(v, user, "/keys/query device", expected, actual);
    json_decref(expected);
    json_t *e;
    char what[512];

    /* cross-signing keys: the newest generation of each usage */
    static const char *const usages[3][2] = {
        {"master", "master_keys"}, {"self_signing", "self_signing_keys"}, {"user_signing", "user_signing_keys"}};
    for (int u = 0; u < 3; u++) {
        const json_t *current = NULL;
        const char *pk = NULL;
        json_array_foreach(json_object_get(doc, "xsign"), i,
                           e) if (strcmp(json_string_value(json_object_get(e, "usage")), usages[u][0]) == 0)
        {
            current = json_object_get(e, "key");
            pk = json_string_value(json_object_get(e, "pk"));
        }
        json_t *exp = current != NULL ? with_signatures(current, sigs, user, pk) : NULL;
        snprintf(what, sizeof(what), "/keys/query %s", usages[u][1]);
        compare(v, user, what, exp, json_object_get(json_object_get(answer, usages[u][1]), user));
        json_decref(exp);
    }
    json_decref(answer);
    return 0;
}

static int on_otks(imp_sink_t *s, const char *user, const mx_buf_t *rows, char *err, size_t errlen)
{
    (void)user, (void)err, (void)errlen;
    verifier_t *v = (verifier_t *)s;
    json_error_t je;
    json_t *arr = json_loads(rows->data, 0, &je);
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r)
    {
        char k[600];
        snprintf(k, sizeof(k), "%s\t%s", json_string_value(json_array_get(r, 0)),
                 json_string_value(json_array_get(r, 1)));
        json_object_set_new(v->otk_counts, k, json_integer(json_integer_value(json_object_get(v->otk_counts, k)) + 1));
    }
    json_decref(arr);
    return 0;
}

static int on_sessions(imp_sink_t *s, const char *user, const mx_buf_t *rows, char *err, size_t errlen)
{
    verifier_t *v = (verifier_t *)s;
    json_error_t je;
    json_t *arr = json_loads(rows->data, 0, &je);
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r)
    {
        char k[32];
        snprintf(k, sizeof(k), "%lld", (long long)json_integer_value(json_array_get(r, 0)));
        json_object_set_new(v->session_counts, k,
                            json_integer(json_integer_value(json_object_get(v->session_counts, k)) + 1));
    }
    json_decref(arr);
    const char *params[] = {user, rows->data};
    PGresult *res = mx_db_exec(
        v->mx,
        "SELECT r ->> 0, r ->> 1, r ->> 2, CASE WHEN b.session_id IS NULL THEN 'missing in mxkeys' ELSE "
        "'differs: mxkeys serves first_message_index ' || b.first_message_index || ', forwarded_count ' || "
        "b.forwarded_count || ', is_verified ' || b.is_verified || ' and ' || "
        "CASE WHEN b.session_data = r -> 6 THEN 'the same session_data' ELSE 'other session_data' END END "
        "FROM jsonb_array_elements($2::jsonb) r "
        "LEFT JOIN backup_sessions b ON b.user_id = $1 AND b.version = (r ->> 0)::bigint AND b.room_id = r ->> 1 "
        "AND b.session_id = r ->> 2 "
        "WHERE b.session_id IS NULL OR (b.first_message_index, b.forwarded_count, b.is_verified, b.session_data) "
        "IS DISTINCT FROM ((r ->> 3)::bigint, (r ->> 4)::bigint, (r ->> 5)::boolean, r -> 6)",
        2, params, err, errlen);
    if (res == NULL)
        return -1;
    for (int row = 0; row < PQntuples(res); row++)
        imp_difference(v->report, user, "/room_keys version %s room %s session %s: %s", PQgetvalue(res, row, 0),
                       PQgetvalue(res, row, 1), PQgetvalue(res, row, 2), PQgetvalue(res, row, 3));
    PQclear(res);
    return 0;
}

static int check_claimable(verifier_t *v, const char *user, char *err, size_t errlen)
{
    const char *params[] = {user};
    PGresult *res = mx_db_exec(v->mx,
                               "SELECT device_id || E'\\t' || algorithm, count(*) FROM one_time_keys "
                               "WHERE user_id = $1 GROUP BY 1",
                               1, params, err, errlen);
    if (res == NULL)
        return -1;
    json_t *actual = rows_to_map(res);
    PQclear(res);
    if (actual == NULL) {
        snprintf(err, errlen, "reading mxkeys' one-time key counts failed");
        return -1;
    }
    const char *k;
    json_t *e;
    json_object_foreach(v->otk_counts, k, e)
    {
        long long want = json_integer_value(e), have = json_integer_value(json_object_get(actual, k));
        if (want != have)
            imp_difference(v->report, user,
                           "/keys/claim device and algorithm %s: %lld one-time keys in Synapse, "
                           "%lld claimable in mxkeys",
                           k, want, have);
    }
    json_object_foreach(actual, k, e) if (json_object_get(v->otk_counts, k) == NULL) imp_difference(
        v->report, user, "/keys/claim device and algorithm %s: none in Synapse, %lld claimable in mxkeys", k,
        (long long)json_integer_value(e));
    json_decref(actual);

    /* fallback keys: key id and used flag per device and algorithm */
    res = mx_db_exec(v->mx,
                     "SELECT device_id || E'\\t' || algorithm, jsonb_build_array(key_id, key_json, used)::text "
                     "FROM fallback_keys WHERE user_id = $1",
                     1, params, err, errlen);
    if (res == NULL)
        return -1;
    actual = rows_to_map(res);
    PQclear(res);
    if (actual == NULL) {
        snprintf(err, errlen, "reading mxkeys' fallback keys failed");
        return -1;
    }
    size_t i;
    json_t *f;
    json_t *expected = json_object();
    json_array_foreach(json_object_get(v->doc, "fallbacks"), i, f)
    {
        char key[600];
        snprintf(key, sizeof(key), "%s\t%s", json_string_value(json_object_get(f, "d")),
                 json_string_value(json_object_get(f, "alg")));
        json_object_set_new(
            expected, key,
            json_pack("[O,O,O]", json_object_get(f, "id"), json_object_get(f, "key"), json_object_get(f, "used")));
    }
    compare_maps(v, user, "fallback key of device and algorithm", expected, actual);
    json_decref(expected);
    json_decref(actual);
    return 0;
}

static int check_versions(verifier_t *v, const char *user, char *err, size_t errlen)
{
    const char *params[] = {user};
    PGresult *res = mx_db_exec(v->mx,
                               "SELECT version::text, jsonb_build_object('algorithm', algorithm, 'auth_data', "
                               "auth_data, 'etag', etag::text, 'count', count, 'deleted', deleted)::text "
                               "FROM backup_versions WHERE user_id = $1",
                               1, params, err, errlen);
    if (res == NULL)
        return -1;
    json_t *actual = rows_to_map(res);
    PQclear(res);
    if (actual == NULL) {
        snprintf(err, errlen, "reading mxkeys' backup versions failed");
        return -1;
    }
    json_t *expected = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(v->doc, "versions"), i, e)
    {
        char k[32], etag[32];
        snprintf(k, sizeof(k), "%lld", (long long)json_integer_value(json_object_get(e, "v")));
        snprintf(etag, sizeof(etag), "%lld", (long long)json_integer_value(json_object_get(e, "etag")));
        bool deleted = json_is_true(json_object_get(e, "deleted"));
        json_t *exp =
            json_pack("{s:O,s:O,s:s,s:I,s:b}", "algorithm", json_object_get(e, "alg"), "auth_data",
                      json_object_get(e, "auth"), "etag", etag, "count",
                      deleted ? 0 : json_integer_value(json_object_get(v->session_counts, k)), "deleted", deleted);
        json_t *act = json_object_get(actual, k);
        if (deleted && act != NULL) {
            /* a deleted version only has to stay deleted (and its number taken) */
            json_object_set(exp, "etag", json_object_get(act, "etag"));
            json_object_set(exp, "auth_data", json_object_get(act, "auth_data"));
        }
        json_object_set_new(expected, k, exp);
    }
    compare_maps(v, user, "/room_keys version", expected, actual);
    json_decref(expected);
    json_decref(actual);
    return 0;
}

static int on_finish(imp_sink_t *s, const char *user, bool ok, char *err, size_t errlen)
{
    verifier_t *v = (verifier_t *)s;
    if (!ok)
        return -1;
    return check_claimable(v, user, err, errlen) == 0 && check_versions(v, user, err, errlen) == 0 ? 0 : -1;
}

imp_sink_t *imp_verifier_new(PGconn *mx, imp_report_t *report, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    verifier_t *v = calloc(1, sizeof(*v));
    if (v == NULL)
        abort();
    v->super = (imp_sink_t){on_begin, on_otks, on_sessions, on_finish};
    v->mx = mx;
    v->report = report;
    v->otk_counts = json_object();
    v->session_counts = json_object();
    return &v->super;
}

void imp_verifier_free(imp_sink_t *s)
{
    verifier_t *v = (verifier_t *)s;
    if (v == NULL)
        return;
    json_decref(v->otk_counts);
    json_decref(v->session_counts);
    json_decref(v->doc);
    free(v);
}
