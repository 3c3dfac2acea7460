/* Applies the migrations compiled into the binary. The advisory lock is taken before anything else, including the
 * CREATE TABLE IF NOT EXISTS, because two sessions racing on that statement can still collide on the catalog; with
 * the lock a second instance simply waits and then finds everything applied. */
#include "mxkeys/migrate.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/db_sync.h"
#include "mxkeys/log.h"

/* "mxkeys" in ASCII: one constant shared by every mxkeysd version, so old and new binaries serialise too. */
#define MIGRATION_LOCK_KEY "120379780397427"

static int run(PGconn *conn, const char *sql, int nparams, const char *const *values, char *err, size_t errlen)
{
    PGresult *res = mx_db_exec(conn, sql, nparams, values, err, errlen);
    PQclear(res);
    return res != NULL ? 0 : -1;
}

/* The file text may hold several statements: only the simple query protocol (PQexec) accepts that. */
static int run_script(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok) {
        snprintf(err, errlen, "%s", res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        for (char *p = err; *p != '\0'; p++)
            if (*p == '\n')
                *p = ' ';
        size_t len = strlen(err);
        while (len > 0 && err[len - 1] == ' ')
            err[--len] = '\0';
    }
    PQclear(res);
    return ok ? 0 : -1;
}

static int is_applied(PGresult *applied, const char *name)
{
    for (int i = 0; i < PQntuples(applied); i++)
        if (strcmp(PQgetvalue(applied, i, 0), name) == 0)
            return 1;
    return 0;
}

static int apply_one(PGconn *conn, const mx_migration_t *m, char *err, size_t errlen)
{
    char why[400];
    const char *params[] = {m->name};
    if (run(conn, "BEGIN", 0, NULL, why, sizeof(why)) != 0 || run_script(conn, m->sql, why, sizeof(why)) != 0 ||
        run(conn, "INSERT INTO schema_migrations (name) VALUES ($1)", 1, params, why, sizeof(why)) != 0 ||
        run(conn, "COMMIT", 0, NULL, why, sizeof(why)) != 0)
        goto failed;
    mx_info("migrations: applied %s", m->name);
    return 0;

failed:
    snprintf(err, errlen, "%s: %s", m->name, why);
    PGresult *res = PQexec(conn, "ROLLBACK");
    PQclear(res);
    return -1;
}

int mx_migrate(PGconn *conn, char *err, size_t errlen)
{
    char why[400];
    PGresult *applied = NULL;
    int count = 0, locked = 0;

    if (run(conn, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")", 0, NULL, why, sizeof(why)) != 0)
        goto failed;
    locked = 1;
    if (run(conn,
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL "
            "DEFAULT now())",
            0, NULL, why, sizeof(why)) != 0 ||
        (applied = mx_db_exec(conn, "SELECT name FROM schema_migrations", 0, NULL, why, sizeof(why))) == NULL)
        goto failed;

    /* The generator already sorted them by file name; do not rely on it silently. */
    for (size_t i = 1; i < mx_nmigrations; i++)
        if (strcmp(mx_migrations[i - 1].name, mx_migrations[i].name) >= 0) {
            snprintf(why, sizeof(why), "compiled migrations out of order at %s", mx_migrations[i].name);
            goto failed;
        }
    for (size_t i = 0; i < mx_nmigrations; i++) {
        if (is_applied(applied, mx_migrations[i].name))
            continue;
        if (apply_one(conn, &mx_migrations[i], err, errlen) != 0)
            goto failed_reported;
        count++;
    }
    PQclear(applied);
    if (run(conn, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")", 0, NULL, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "releasing the migration lock: %s", why);
        return -1;
    }
    if (count == 0)
        mx_debug("migrations: schema up to date (%zu known)", mx_nmigrations);
    return count;

failed:
    snprintf(err, errlen, "%s", why);
failed_reported:
    PQclear(applied);
    if (locked) {
        PGresult *res = PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")");
        PQclear(res);
    }
    return -1;
}
