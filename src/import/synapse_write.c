/* The writer: one transaction per user in mxkeys, through the functions of sql/functions/import.sql (begin, chunks
 * of one-time keys and sessions, finish). A dry run does all of it and rolls each user back, so its counts are
 * exactly what a real run would write. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "mxkeys/db_sync.h"

typedef struct st_writer_t {
    imp_sink_t super; /* first: the sink is the writer */
    PGconn *mx;
    bool dry_run, in_tx;
    imp_report_t *report;
    unsigned users; /* since the scratch tables were last truncated */
} writer_t;

#define USERS_PER_TRUNCATE 500

static int run(writer_t *w, const char *sql, int n, const char *const *params, char *err, size_t errlen)
{
    PGresult *res = mx_db_exec(w->mx, sql, n, params, err, errlen);
    PQclear(res);
    return res != NULL ? 0 : -1;
}

static int on_begin(imp_sink_t *s, const char *user, const json_t *doc, char *err, size_t errlen)
{
    writer_t *w = (writer_t *)s;
    if (++w->users >= USERS_PER_TRUNCATE) {
        w->users = 0; /* the scratch tables' dead rows go (between transactions) */
        if (run(w, "SELECT mx_import_prepare()", 0, NULL, err, errlen) != 0)
            return -1;
    }
    if (run(w, "BEGIN", 0, NULL, err, errlen) != 0)
        return -1;
    w->in_tx = true;
    char *text = json_dumps(doc, JSON_COMPACT);
    if (text == NULL)
        abort();
    const char *params[] = {user, text};
    int rc = run(w, "SELECT mx_import_begin($1, $2::jsonb)", 2, params, err, errlen);
    free(text);
    return rc;
}

static int on_otks(imp_sink_t *s, const char *user, const mx_buf_t *rows, char *err, size_t errlen)
{
    const char *params[] = {user, rows->data};
    return run((writer_t *)s, "SELECT mx_import_otks($1, $2::jsonb)", 2, params, err, errlen);
}

static int on_sessions(imp_sink_t *s, const char *user, const mx_buf_t *rows, char *err, size_t errlen)
{
    const char *params[] = {user, rows->data};
    return run((writer_t *)s, "SELECT mx_import_sessions($1, $2::jsonb)", 2, params, err, errlen);
}

/* [[table, outcome, reason, n], ...] into the report */
static void take_counts(writer_t *w, const char *text)
{
    json_error_t e;
    json_t *rows = json_loads(text, 0, &e);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        int t = imp_table_by_name(json_string_value(json_array_get(row, 0)));
        const char *outcome = json_string_value(json_array_get(row, 1));
        long long n = (long long)json_integer_value(json_array_get(row, 3));
        if (t < 0 || outcome == NULL)
            continue;
        imp_outcome_t o = strcmp(outcome, "written") == 0     ? IMP_WRITTEN
                          : strcmp(outcome, "unchanged") == 0 ? IMP_UNCHANGED
                          : strcmp(outcome, "removed") == 0   ? IMP_REMOVED
                                                              : IMP_SKIPPED;
        imp_count(w->report, (imp_table_t)t, o, json_string_value(json_array_get(row, 2)), n);
    }
    json_decref(rows);
}

static int on_finish(imp_sink_t *s, const char *user, bool ok, char *err, size_t errlen)
{
    writer_t *w = (writer_t *)s;
    if (!w->in_tx)
        return ok ? 0 : -1;
    w->in_tx = false;
    PGresult *res = NULL;
    if (ok) {
        const char *params[] = {user};
        res = mx_db_exec(w->mx, "SELECT mx_import_finish($1)", 1, params, err, errlen);
    }
    if (res == NULL) {
        char ignored[128];
        (void)run(w, "ROLLBACK", 0, NULL, ignored, sizeof(ignored));
        return -1;
    }
    char *counts = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (counts == NULL)
        abort();
    int rc = run(w, w->dry_run ? "ROLLBACK" : "COMMIT", 0, NULL, err, errlen);
    if (rc == 0)
        take_counts(w, counts); /* only what was committed (or would have been) counts */
    free(counts);
    return rc;
}

imp_sink_t *imp_writer_new(PGconn *mx, bool dry_run, imp_report_t *report, char *err, size_t errlen)
{
    writer_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        abort();
    w->super = (imp_sink_t){on_begin, on_otks, on_sessions, on_finish};
    w->mx = mx;
    w->dry_run = dry_run;
    w->report = report;
    if (run(w, "SELECT mx_import_prepare()", 0, NULL, err, errlen) != 0) {
        free(w);
        return NULL;
    }
    return &w->super;
}

void imp_writer_free(imp_sink_t *s)
{
    free(s);
}
