/* Reads Synapse's end-to-end tables in one REPEATABLE READ, READ ONLY snapshot (plain SELECTs through cursors: only
 * ACCESS SHARE locks, which no write of the running homeserver waits for) and hands them to a sink user by user.
 *
 * Every table is read through its own cursor ordered by user id (byte order), and the cursors are merged: the next
 * user is the smallest id at any cursor's head. So memory holds one fetch per cursor and one user's small tables
 * (devices, fallback keys, cross-signing keys, signatures, backup versions); one-time keys and backup sessions, which
 * can be many per user, pass through in chunks. Table and column names are those of Synapse's schema (checked
 * against Synapse 1.67: synapse/storage/schema/ and synapse/storage/databases/main/{end_to_end_keys,
 * e2e_room_keys,devices}.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/db_sync.h"

#define FETCH_ROWS 2000
#define CHUNK_ROWS 2000
#define CHUNK_BYTES (1 << 20)

enum { C_DEV, C_FB, C_XS, C_SIG, C_VER, C_OTK, C_SESS, NCURSORS };

typedef struct st_cursor_t {
    const char *name;
    PGresult *res;
    int row, nrows;
    bool done;
} cursor_t;

struct st_imp_reader_t {
    PGconn *conn;
    const mx_import_opts_t *opts;
    bool strict;
    imp_report_t *report;
    cursor_t cur[NCURSORS];
    long long stream_pos;
    /* the user being read */
    json_t *devinfo;    /* device id -> device keys as imported */
    json_t *xs_current; /* usage -> current key object */
};

/* The queries, in cursor order. %1$s: a WHERE/AND clause on the ordering user column; %2$s: COLLATE "C" when the
 * database's collation is not already byte order. */
static const char *const queries[NCURSORS] = {
    /* devices that exist (hidden ones are Synapse's placeholders for cross-signing keys) and device keys, also of
     * deleted devices so that they can be counted */
    "SELECT user_id, device_id, d.display_name, k.key_json, d.user_id IS NOT NULL AS present "
    "FROM devices d FULL JOIN e2e_device_keys_json k USING (user_id, device_id) "
    "WHERE NOT COALESCE(d.hidden, false) %1$s ORDER BY user_id %2$s, device_id",
    "SELECT f.user_id, f.device_id, f.algorithm, f.key_id, f.key_json, f.used, "
    "       d.device_id IS NOT NULL AND NOT d.hidden AS present "
    "FROM e2e_fallback_keys_json f LEFT JOIN devices d USING (user_id, device_id) "
    "WHERE true %1$s ORDER BY f.user_id %2$s, f.device_id, f.algorithm",
    "SELECT user_id, keytype, keydata, stream_id FROM e2e_cross_signing_keys "
    "WHERE true %1$s ORDER BY user_id %2$s, stream_id",
    "SELECT target_user_id, target_device_id, user_id, key_id, signature FROM e2e_cross_signing_signatures "
    "WHERE true %1$s ORDER BY target_user_id %2$s, target_device_id, user_id, key_id, signature",
    "SELECT user_id, version, algorithm, auth_data, deleted <> 0, etag FROM e2e_room_keys_versions "
    "WHERE true %1$s ORDER BY user_id %2$s, version",
    /* Synapse hands keys out in no particular order; their upload order is ts_added_ms (one batch shares it) */
    "SELECT o.user_id, o.device_id, o.algorithm, o.key_id, o.key_json, "
    "       d.device_id IS NOT NULL AND NOT d.hidden AS present "
    "FROM e2e_one_time_keys_json o LEFT JOIN devices d USING (user_id, device_id) "
    "WHERE true %1$s ORDER BY o.user_id %2$s, o.device_id, o.algorithm, o.ts_added_ms, o.key_id",
    "SELECT user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data "
    "FROM e2e_room_keys WHERE true %1$s ORDER BY user_id %2$s, version, room_id, session_id",
};
static const char *const user_columns[NCURSORS] = {"user_id", "f.user_id", "user_id", "target_user_id",
                                                   "user_id", "o.user_id", "user_id"};
static const char *const cursor_names[NCURSORS] = {"imp_dev", "imp_fb",  "imp_xs",  "imp_sig",
                                                   "imp_ver", "imp_otk", "imp_sess"};

static PGresult *exec(imp_reader_t *rd, const char *sql, char *err, size_t errlen)
{
    return mx_db_exec(rd->conn, sql, 0, NULL, err, errlen);
}

static int fetch(imp_reader_t *rd, cursor_t *c, char *err, size_t errlen)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "FETCH %d FROM %s", FETCH_ROWS, c->name);
    PQclear(c->res);
    if ((c->res = exec(rd, sql, err, errlen)) == NULL)
        return -1;
    c->row = 0;
    c->nrows = PQntuples(c->res);
    c->done = c->nrows == 0;
    return 0;
}

static const char *head(const cursor_t *c)
{
    return c->done ? NULL : PQgetvalue(c->res, c->row, 0);
}

static int advance(imp_reader_t *rd, cursor_t *c, char *err, size_t errlen)
{
    return ++c->row < c->nrows ? 0 : fetch(rd, c, err, errlen);
}

static const char *val(const cursor_t *c, int col)
{
    return PQgetisnull(c->res, c->row, col) ? NULL : PQgetvalue(c->res, c->row, col);
}

static bool at_user(const cursor_t *c, const char *user)
{
    return !c->done && strcmp(PQgetvalue(c->res, c->row, 0), user) == 0;
}

imp_reader_t *imp_reader_open(const char *conninfo, const mx_import_opts_t *opts, bool strict, imp_report_t *report,
                              char *err, size_t errlen)
{
    imp_reader_t *rd = calloc(1, sizeof(*rd));
    PGresult *res = NULL;
    if (rd == NULL)
        abort();
    rd->opts = opts;
    rd->strict = strict;
    rd->report = report;
    if ((rd->conn = mx_db_connect_blocking(conninfo, MX_DB_ANY, 10000, err, errlen)) == NULL)
        goto failed;
    if ((res = exec(rd, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", err, errlen)) == NULL)
        goto failed;
    PQclear(res);
    /* A missing table is a clear one-line failure, not a confusing one later. */
    if ((res = exec(rd,
                    "SELECT string_agg(t, ', ') FROM unnest(ARRAY['devices', 'e2e_device_keys_json', "
                    "'e2e_one_time_keys_json', 'e2e_fallback_keys_json', 'e2e_cross_signing_keys', "
                    "'e2e_cross_signing_signatures', 'e2e_room_keys_versions', 'e2e_room_keys', "
                    "'device_lists_stream']) t WHERE to_regclass(t) IS NULL",
                    err, errlen)) == NULL)
        goto failed;
    if (!PQgetisnull(res, 0, 0)) {
        snprintf(err, errlen, "not a Synapse database (or too old): missing %s", PQgetvalue(res, 0, 0));
        goto failed;
    }
    PQclear(res);
    if ((res = exec(rd,
                    "SELECT datcollate IN ('C', 'POSIX'), GREATEST((SELECT max(stream_id) FROM device_lists_stream), "
                    "(SELECT max(stream_id) FROM e2e_cross_signing_keys), 0) "
                    "FROM pg_database WHERE datname = current_database()",
                    err, errlen)) == NULL)
        goto failed;
    const char *collate = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? "" : "COLLATE \"C\"";
    rd->stream_pos = atoll(PQgetvalue(res, 0, 1));
    PQclear(res);
    res = NULL;

    /* progress totals: users exactly, rows from the planner's estimates (a count would read everything twice) */
    char *literal = NULL;
    if (opts->users != NULL && (literal = PQescapeLiteral(rd->conn, opts->users, strlen(opts->users))) == NULL) {
        snprintf(err, errlen, "--users: %s", PQerrorMessage(rd->conn));
        goto failed;
    }
    mx_buf_t sql = MX_BUF_INIT;
    mx_buf_printf(&sql,
                  "SELECT (SELECT count(*) FROM (SELECT user_id FROM devices UNION SELECT user_id FROM "
                  "e2e_cross_signing_keys UNION SELECT user_id FROM e2e_room_keys_versions) u %s%s), "
                  "(SELECT COALESCE(sum(GREATEST(reltuples, 0)), 0)::bigint FROM pg_class WHERE relname IN "
                  "('e2e_device_keys_json', 'e2e_one_time_keys_json', 'e2e_fallback_keys_json', "
                  "'e2e_cross_signing_keys', 'e2e_cross_signing_signatures', 'e2e_room_keys_versions', "
                  "'e2e_room_keys') AND relkind = 'r')",
                  literal != NULL ? "WHERE user_id ~ " : "", literal != NULL ? literal : "");
    res = exec(rd, sql.data, err, errlen);
    mx_buf_free(&sql);
    if (res == NULL) {
        PQfreemem(literal);
        goto failed;
    }
    imp_set_totals(report, atoll(PQgetvalue(res, 0, 0)), atoll(PQgetvalue(res, 0, 1)));
    PQclear(res);
    res = NULL;

    for (int i = 0; i < NCURSORS; i++) {
        mx_buf_t q = MX_BUF_INIT, filter = MX_BUF_INIT;
        if (literal != NULL)
            mx_buf_printf(&filter, "AND %s ~ %s", user_columns[i], literal);
        mx_buf_printf(&q, "DECLARE %s NO SCROLL CURSOR FOR ", cursor_names[i]);
        /* queries[] use positional %1$s / %2$s */
        char text[1024];
        snprintf(text, sizeof(text), queries[i], filter.data != NULL ? filter.data : "", collate);
        mx_buf_puts(&q, text);
        /* the device query has its own WHERE: "AND" fits after it as after "WHERE true" */
        res = exec(rd, q.data, err, errlen);
        mx_buf_free(&q);
        mx_buf_free(&filter);
        if (res == NULL) {
            PQfreemem(literal);
            goto failed;
        }
        PQclear(res);
        res = NULL;
        rd->cur[i].name = cursor_names[i];
        if (fetch(rd, &rd->cur[i], err, errlen) != 0) {
            PQfreemem(literal);
            goto failed;
        }
    }
    PQfreemem(literal);
    return rd;

failed:
    PQclear(res);
    imp_reader_close(rd);
    return NULL;
}

long long imp_reader_stream_position(const imp_reader_t *rd)
{
    return rd->stream_pos;
}

void imp_reader_close(imp_reader_t *rd)
{
    if (rd == NULL)
        return;
    for (int i = 0; i < NCURSORS; i++)
        PQclear(rd->cur[i].res);
    if (rd->conn != NULL) {
        PQclear(PQexec(rd->conn, "ROLLBACK"));
        PQfinish(rd->conn);
    }
    json_decref(rd->devinfo);
    json_decref(rd->xs_current);
    free(rd);
}

/* An object strict validation refuses: reported; kept or dropped as the operator chose. Returns true to keep. */
static bool refused(imp_reader_t *rd, imp_table_t t, const char *user, const char *what, const char *why)
{
    bool keep = rd->opts->invalid == MX_IMPORT_INVALID_IMPORT;
    imp_finding(rd->report, user, what, why, keep ? "imported" : "skipped");
    if (!keep)
        imp_count(rd->report, t, IMP_SKIPPED, "refused by strict validation", 1);
    return keep;
}

static void invalid_json(imp_reader_t *rd, imp_table_t t, const char *user, const char *what, const char *why)
{
    imp_finding(rd->report, user, what, why, "skipped: mxkeys cannot store it");
    imp_count(rd->report, t, IMP_SKIPPED, "not valid JSON", 1);
}

static const char *device_ed25519(imp_reader_t *rd, const char *device)
{
    char key_id[300];
    snprintf(key_id, sizeof(key_id), "ed25519:%s", device);
    return json_string_value(json_object_get(json_object_get(json_object_get(rd->devinfo, device), "keys"), key_id));
}

static int read_devices(imp_reader_t *rd, const char *user, json_t *doc, char *err, size_t errlen)
{
    cursor_t *c = &rd->cur[C_DEV];
    for (; at_user(c, user);) {
        const char *device = val(c, 1), *name = val(c, 2), *text = val(c, 3);
        bool present = strcmp(val(c, 4), "t") == 0;
        json_t *keys = NULL;
        char why[256], what[400];
        snprintf(what, sizeof(what), "device %s device keys", device);
        if (text != NULL)
            imp_count(rd->report, IMP_DEVICE_KEYS, IMP_READ, NULL, 1);
        if (!present) {
            imp_count(rd->report, IMP_DEVICE_KEYS, IMP_SKIPPED, "device deleted in Synapse", 1);
        } else {
            if (text != NULL && (keys = imp_parse(text, why, sizeof(why))) == NULL)
                invalid_json(rd, IMP_DEVICE_KEYS, user, what, why);
            if (keys != NULL) {
                json_object_del(keys, "unsigned"); /* mxkeys stores device keys without it, as an upload does */
                if (rd->strict && imp_check_device_keys(user, device, keys, why, sizeof(why)) != 0 &&
                    !refused(rd, IMP_DEVICE_KEYS, user, what, why)) {
                    json_decref(keys);
                    keys = NULL;
                }
            }
            if (keys != NULL)
                json_object_set(rd->devinfo, device, keys);
            json_array_append_new(
                json_object_get(doc, "devices"),
                json_pack("{s:s,s:s?,s:o}", "d", device, "name", name, "keys", keys != NULL ? keys : json_null()));
        }
        if (advance(rd, c, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int read_fallbacks(imp_reader_t *rd, const char *user, json_t *doc, char *err, size_t errlen)
{
    cursor_t *c = &rd->cur[C_FB];
    for (; at_user(c, user);) {
        const char *device = val(c, 1), *alg = val(c, 2), *kid = val(c, 3), *text = val(c, 4);
        bool used = strcmp(val(c, 5), "t") == 0, present = strcmp(val(c, 6), "t") == 0;
        char why[256], what[600];
        snprintf(what, sizeof(what), "device %s fallback key %s:%s", device, alg, kid);
        imp_count(rd->report, IMP_FALLBACK_KEYS, IMP_READ, NULL, 1);
        json_t *key = NULL;
        if (!present)
            imp_count(rd->report, IMP_FALLBACK_KEYS, IMP_SKIPPED, "device deleted in Synapse", 1);
        else if ((key = imp_parse(text, why, sizeof(why))) == NULL)
            invalid_json(rd, IMP_FALLBACK_KEYS, user, what, why);
        else if (rd->strict &&
                 imp_check_signed_key(user, device, alg, key, device_ed25519(rd, device), why, sizeof(why)) != 0 &&
                 !refused(rd, IMP_FALLBACK_KEYS, user, what, why))
            json_decref(key);
        else
            json_array_append_new(
                json_object_get(doc, "fallbacks"),
                json_pack("{s:s,s:s,s:s,s:o,s:b}", "d", device, "alg", alg, "id", kid, "key", key, "used", used));
        if (advance(rd, c, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static const char *const usages[3] = {"master", "self_signing", "user_signing"};

static int read_cross_signing(imp_reader_t *rd, const char *user, json_t *doc, char *err, size_t errlen)
{
    cursor_t *c = &rd->cur[C_XS];
    json_t *all = json_array();
    for (; at_user(c, user);) {
        const char *usage = val(c, 1), *text = val(c, 2);
        char why[256], what[128];
        snprintf(what, sizeof(what), "%s key (stream %s)", usage, val(c, 3));
        imp_count(rd->report, IMP_CROSS_SIGNING_KEYS, IMP_READ, NULL, 1);
        json_t *key = imp_parse(text, why, sizeof(why));
        const char *pk = key != NULL ? imp_cross_signing_public_key(key) : NULL;
        if (key == NULL)
            invalid_json(rd, IMP_CROSS_SIGNING_KEYS, user, what, why);
        else if (pk == NULL || (strcmp(usage, "master") != 0 && strcmp(usage, "self_signing") != 0 &&
                                strcmp(usage, "user_signing") != 0)) {
            imp_finding(rd->report, user, what, "no single ed25519 public key, or an unknown usage",
                        "skipped: mxkeys cannot store it");
            imp_count(rd->report, IMP_CROSS_SIGNING_KEYS, IMP_SKIPPED, "no public key", 1);
            json_decref(key);
        } else {
            json_array_append_new(all, json_pack("{s:s,s:s,s:o}", "usage", usage, "pk", pk, "key", key));
            json_object_set(rd->xs_current, usage, key); /* rows come oldest first: the last one is current */
        }
        if (advance(rd, c, err, errlen) != 0) {
            json_decref(all);
            return -1;
        }
    }
    /* Older generations are history; only the current key of each usage is checked (master first, the others
     * against it). A refused current key in skip mode drops the usage altogether: an older generation must not
     * become current instead. */
    bool drop[3] = {false, false, false};
    const json_t *dropped[3] = {NULL, NULL, NULL}; /* still referenced by `all` */
    const char *master_pk = imp_cross_signing_public_key(json_object_get(rd->xs_current, "master"));
    for (int u = 0; u < 3; u++) {
        json_t *key = json_object_get(rd->xs_current, usages[u]);
        char why[256], what[64];
        snprintf(what, sizeof(what), "current %s key", usages[u]);
        if (key != NULL && rd->strict &&
            imp_check_cross_signing_key(user, usages[u], key, master_pk, why, sizeof(why)) != 0 &&
            !refused(rd, IMP_CROSS_SIGNING_KEYS, user, what, why)) {
            drop[u] = true;
            dropped[u] = key;
            json_object_del(rd->xs_current, usages[u]);
        }
    }
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        const char *usage = json_string_value(json_object_get(e, "usage"));
        int u = strcmp(usage, "master") == 0 ? 0 : strcmp(usage, "self_signing") == 0 ? 1 : 2;
        if (drop[u] && json_object_get(e, "key") != dropped[u])
            imp_count(rd->report, IMP_CROSS_SIGNING_KEYS, IMP_SKIPPED, "older generation of a refused key", 1);
        else if (!drop[u])
            json_array_append(json_object_get(doc, "xsign"), e);
    }
    json_decref(all);
    return 0;
}

/* The current user-signing public key of another user (signatures across users are rare: one look-up each). */
static int other_usk(imp_reader_t *rd, const char *signer, char *out, size_t outlen, char *err, size_t errlen)
{
    const char *params[] = {signer};
    PGresult *res = mx_db_exec(rd->conn,
                               "SELECT keydata FROM e2e_cross_signing_keys WHERE user_id = $1 "
                               "AND keytype = 'user_signing' ORDER BY stream_id DESC LIMIT 1",
                               1, params, err, errlen);
    if (res == NULL)
        return -1;
    out[0] = '\0';
    if (PQntuples(res) == 1) {
        char why[160];
        json_t *key = imp_parse(PQgetvalue(res, 0, 0), why, sizeof(why));
        const char *pk = key != NULL ? imp_cross_signing_public_key(key) : NULL;
        if (pk != NULL)
            snprintf(out, outlen, "%s", pk);
        json_decref(key);
    }
    PQclear(res);
    return 0;
}

static int read_signatures(imp_reader_t *rd, const char *user, json_t *doc, char *err, size_t errlen)
{
    cursor_t *c = &rd->cur[C_SIG];
    json_t *sigs = json_object_get(doc, "sigs");
    char prev[1024] = "";
    bool prev_valid = false;
    for (; at_user(c, user);) {
        const char *target = val(c, 1), *signer = val(c, 2), *key_id = val(c, 3), *sig = val(c, 4);
        imp_count(rd->report, IMP_CROSS_SIGNATURES, IMP_READ, NULL, 1);
        char ident[1024], what[1200], why[256];
        snprintf(ident, sizeof(ident), "%s|%s|%s", target, signer, key_id);
        snprintf(what, sizeof(what), "signature by %s %s on %s", signer, key_id, target);
        bool duplicate = strcmp(ident, prev) == 0;
        if (duplicate && prev_valid) {
            imp_count(rd->report, IMP_CROSS_SIGNATURES, IMP_SKIPPED, "duplicate row", 1);
            goto next;
        }
        /* the signed object: one of the user's devices, or one of its current cross-signing keys */
        const json_t *obj = json_object_get(rd->devinfo, target);
        for (int u = 0; obj == NULL && u < 3; u++) {
            json_t *k = json_object_get(rd->xs_current, usages[u]);
            const char *pk = imp_cross_signing_public_key(k);
            if (pk != NULL && strcmp(pk, target) == 0)
                obj = k;
        }
        if (obj == NULL) {
            imp_count(rd->report, IMP_CROSS_SIGNATURES, IMP_SKIPPED, "signed key is not a current key", 1);
            goto next;
        }
        bool valid = true;
        if (rd->strict) {
            const char *pk = NULL;
            char usk[64];
            const char *kid = strncmp(key_id, "ed25519:", 8) == 0 ? key_id + 8 : NULL;
            if (kid != NULL && strcmp(signer, user) == 0) {
                pk = device_ed25519(rd, kid);
                for (int u = 0; pk == NULL && u < 3; u++) {
                    const char *x = imp_cross_signing_public_key(json_object_get(rd->xs_current, usages[u]));
                    if (x != NULL && strcmp(x, kid) == 0)
                        pk = x;
                }
            } else if (kid != NULL) {
                if (other_usk(rd, signer, usk, sizeof(usk), err, errlen) != 0)
                    return -1;
                if (strcmp(usk, kid) == 0)
                    pk = usk;
            }
            if (imp_check_signature(obj, signer, key_id, sig, pk, why, sizeof(why)) != 0) {
                valid = false;
                if (!duplicate && !refused(rd, IMP_CROSS_SIGNATURES, user, what, why))
                    goto next;
            }
        }
        if (duplicate) {
            /* the previous row of this signature was invalid: a valid one replaces it, another invalid one is
             * just a duplicate */
            if (valid) {
                json_array_remove(sigs, json_array_size(sigs) - 1);
                imp_count(rd->report, IMP_CROSS_SIGNATURES, IMP_SKIPPED, "duplicate row (an invalid one)", 1);
            } else {
                imp_count(rd->report, IMP_CROSS_SIGNATURES, IMP_SKIPPED, "duplicate row", 1);
                goto next;
            }
        }
        json_array_append_new(sigs,
                              json_pack("{s:s,s:s,s:s,s:s}", "t", target, "su", signer, "sk", key_id, "sig", sig));
        snprintf(prev, sizeof(prev), "%s", ident);
        prev_valid = valid;
    next:
        if (advance(rd, c, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int read_versions(imp_reader_t *rd, const char *user, json_t *doc, char *err, size_t errlen)
{
    cursor_t *c = &rd->cur[C_VER];
    for (; at_user(c, user);) {
        const char *version = val(c, 1), *alg = val(c, 2), *text = val(c, 3), *etag = val(c, 5);
        bool deleted = strcmp(val(c, 4), "t") == 0;
        char why[256], what[64];
        snprintf(what, sizeof(what), "backup version %s auth_data", version);
        imp_count(rd->report, IMP_BACKUP_VERSIONS, IMP_READ, NULL, 1);
        json_t *auth = deleted ? json_object() : imp_parse(text, why, sizeof(why));
        if (auth == NULL) {
            invalid_json(rd, IMP_BACKUP_VERSIONS, user, what, why);
        } else {
            json_array_append_new(json_object_get(doc, "versions"),
                                  json_pack("{s:I,s:s,s:o,s:b,s:o}", "v", (json_int_t)atoll(version), "alg", alg,
                                            "auth", auth, "deleted", deleted, "etag",
                                            etag != NULL ? json_integer(atoll(etag)) : json_null()));
        }
        if (advance(rd, c, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static void chunk_string(mx_buf_t *b, const char *s)
{
    mx_buf_putc(b, '"');
    mx_json_escape(b, s, strlen(s));
    mx_buf_putc(b, '"');
}

typedef int (*chunk_fn)(imp_sink_t *s, const char *user, const mx_buf_t *rows, char *err, size_t errlen);

/* Sends a chunk; after a failure the user's remaining rows are still read (the cursors must move past them) but no
 * longer sent. */
static void flush(imp_sink_t *sink, chunk_fn fn, const char *user, mx_buf_t *b, int *n, bool *ok, char *fail,
                  size_t faillen)
{
    if (*n == 0)
        return;
    mx_buf_putc(b, ']');
    if (*ok && fn(sink, user, b, fail, faillen) != 0)
        *ok = false;
    mx_buf_reset(b);
    *n = 0;
}

/* One-time keys, in upload order per device and algorithm, in chunks. */
static int read_otks(imp_reader_t *rd, imp_sink_t *sink, const char *user, bool *ok, char *fail, size_t faillen,
                     char *err, size_t errlen)
{
    cursor_t *c = &rd->cur[C_OTK];
    mx_buf_t b = MX_BUF_INIT;
    int n = 0;
    for (; at_user(c, user);) {
        const char *device = val(c, 1), *alg = val(c, 2), *kid = val(c, 3), *text = val(c, 4);
        bool present = strcmp(val(c, 5), "t") == 0;
        char why[256], what[600];
        imp_count(rd->report, IMP_ONE_TIME_KEYS, IMP_READ, NULL, 1);
        if (!present) {
            imp_count(rd->report, IMP_ONE_TIME_KEYS, IMP_SKIPPED, "device deleted in Synapse", 1);
        } else {
            snprintf(what, sizeof(what), "device %s one-time key %s:%s", device, alg, kid);
            json_t *key = imp_parse(text, why, sizeof(why));
            bool keep = key != NULL;
            if (key == NULL)
                invalid_json(rd, IMP_ONE_TIME_KEYS, user, what, why);
            else if (rd->strict &&
                     imp_check_signed_key(user, device, alg, key, device_ed25519(rd, device), why, sizeof(why)) != 0)
                keep = refused(rd, IMP_ONE_TIME_KEYS, user, what, why);
            json_decref(key);
            if (keep) {
                mx_buf_putc(&b, n == 0 ? '[' : ',');
                mx_buf_putc(&b, '[');
                chunk_string(&b, device);
                mx_buf_putc(&b, ',');
                chunk_string(&b, alg);
                mx_buf_putc(&b, ',');
                chunk_string(&b, kid);
                mx_buf_putc(&b, ',');
                mx_buf_puts(&b, text);
                mx_buf_putc(&b, ']');
                n++;
            }
        }
        if (n >= CHUNK_ROWS || b.len >= CHUNK_BYTES)
            flush(sink, sink->otks, user, &b, &n, ok, fail, faillen);
        if (advance(rd, c, err, errlen) != 0) {
            mx_buf_free(&b);
            return -1;
        }
    }
    flush(sink, sink->otks, user, &b, &n, ok, fail, faillen);
    mx_buf_free(&b);
    return 0;
}

static int read_sessions(imp_reader_t *rd, imp_sink_t *sink, const char *user, bool *ok, char *fail, size_t faillen,
                         char *err, size_t errlen)
{
    cursor_t *c = &rd->cur[C_SESS];
    mx_buf_t b = MX_BUF_INIT;
    int n = 0;
    for (; at_user(c, user);) {
        const char *version = val(c, 1), *room = val(c, 2), *session = val(c, 3), *fmi = val(c, 4), *fc = val(c, 5),
                   *verified = val(c, 6), *text = val(c, 7);
        char why[256], what[1200];
        imp_count(rd->report, IMP_BACKUP_SESSIONS, IMP_READ, NULL, 1);
        json_t *data = imp_parse(text, why, sizeof(why));
        if (data == NULL || !json_is_object(data)) {
            snprintf(what, sizeof(what), "backup version %s room %s session %s", version, room, session);
            invalid_json(rd, IMP_BACKUP_SESSIONS, user, what, data == NULL ? why : "session_data is not an object");
        } else {
            mx_buf_printf(&b, "%c[%s,", n == 0 ? '[' : ',', version);
            chunk_string(&b, room);
            mx_buf_putc(&b, ',');
            chunk_string(&b, session);
            /* Synapse's columns are nullable; what it would serve for NULL is what mxkeys' defaults say */
            mx_buf_printf(&b, ",%s,%s,%s,", fmi != NULL ? fmi : "0", fc != NULL ? fc : "0",
                          verified != NULL && strcmp(verified, "t") == 0 ? "true" : "false");
            mx_buf_puts(&b, text);
            mx_buf_putc(&b, ']');
            n++;
        }
        json_decref(data);
        if (n >= CHUNK_ROWS || b.len >= CHUNK_BYTES)
            flush(sink, sink->sessions, user, &b, &n, ok, fail, faillen);
        if (advance(rd, c, err, errlen) != 0) {
            mx_buf_free(&b);
            return -1;
        }
    }
    flush(sink, sink->sessions, user, &b, &n, ok, fail, faillen);
    mx_buf_free(&b);
    return 0;
}

int imp_reader_run(imp_reader_t *rd, imp_sink_t *sink, char *err, size_t errlen)
{
    for (;;) {
        const char *next = NULL;
        for (int i = 0; i < NCURSORS; i++) {
            const char *h = head(&rd->cur[i]);
            if (h != NULL && (next == NULL || strcmp(h, next) < 0))
                next = h;
        }
        if (next == NULL)
            return 0;
        char *user = strdup(next); /* the head row goes away with the next fetch */
        if (user == NULL)
            abort();
        json_decref(rd->devinfo);
        json_decref(rd->xs_current);
        rd->devinfo = json_object();
        rd->xs_current = json_object();
        json_t *doc = json_pack("{s:[],s:[],s:[],s:[],s:[]}", "devices", "fallbacks", "xsign", "sigs", "versions");
        int rc = read_devices(rd, user, doc, err, errlen);
        if (rc == 0)
            rc = read_fallbacks(rd, user, doc, err, errlen);
        if (rc == 0)
            rc = read_cross_signing(rd, user, doc, err, errlen);
        if (rc == 0)
            rc = read_signatures(rd, user, doc, err, errlen);
        if (rc == 0)
            rc = read_versions(rd, user, doc, err, errlen);
        char fail[512] = "";
        bool ok = true;
        if (rc == 0 && sink->begin(sink, user, doc, fail, sizeof(fail)) != 0)
            ok = false;
        json_decref(doc);
        if (rc == 0)
            rc = read_otks(rd, sink, user, &ok, fail, sizeof(fail), err, errlen);
        if (rc == 0)
            rc = read_sessions(rd, sink, user, &ok, fail, sizeof(fail), err, errlen);
        if (rc != 0) {
            char ignored[64];
            (void)sink->finish(sink, user, false, ignored, sizeof(ignored));
            free(user);
            return -1;
        }
        char fin[512];
        if (sink->finish(sink, user, ok, fin, sizeof(fin)) != 0 && ok) {
            ok = false;
            snprintf(fail, sizeof(fail), "%s", fin);
        }
        if (!ok)
            imp_user_failed(rd->report, user, fail);
        imp_user_done(rd->report);
        free(user);
    }
}
