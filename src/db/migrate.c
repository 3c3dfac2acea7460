/* Applies the SQL compiled into the binary: the schema migrations, then the function files (mxkeys/migrate.h).
 *
 * The advisory lock is taken before anything else, including the CREATE TABLE IF NOT EXISTS, because two sessions
 * racing on that statement can still collide on the catalog; with the lock a second instance simply waits and then
 * finds everything applied. The function files are applied under the same lock, so two instances starting together
 * never interleave their CREATE OR REPLACE statements. */
#include "mxkeys/migrate.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/db_sync.h"
#include "mxkeys/log.h"

/* "mxkeys" in ASCII: one constant shared by every mxkeysd version, so old and new binaries serialise too. */
#define MIGRATION_LOCK_KEY "120379780397427"

#define SHA256_HEX_LEN (crypto_hash_sha256_BYTES * 2 + 1)

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

static void rollback(PGconn *conn)
{
    PGresult *res = PQexec(conn, "ROLLBACK");
    PQclear(res);
}

/* The checksum recorded for a migration: SHA-256 of its text exactly as compiled in, in lower-case hex. */
static void text_sha256(const char *text, char hex[SHA256_HEX_LEN])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)text, strlen(text));
    sodium_bin2hex(hex, SHA256_HEX_LEN, digest, sizeof(digest));
}

static const mx_migration_t *compiled_migration(const char *name)
{
    for (size_t i = 0; i < mx_nmigrations; i++)
        if (strcmp(mx_migrations[i].name, name) == 0)
            return &mx_migrations[i];
    return NULL;
}

static int is_applied(PGresult *applied, const char *name)
{
    for (int i = 0; i < PQntuples(applied); i++)
        if (strcmp(PQgetvalue(applied, i, 0), name) == 0)
            return 1;
    return 0;
}

/*
 * Compares every applied migration with the text compiled in. A recorded checksum that differs refuses the start:
 * the edit would never reach this database (it applied the old text), and a fresh database would get the new one,
 * so the two would differ without anyone noticing. `*unknown` is set to the first applied name this binary does not
 * know (the database was migrated by a newer mxkeysd), else NULL.
 *
 * Databases migrated before checksums existed (mxkeysd before issue 14) have NULL in `sha256`: on their first start
 * with this code the checksums of the texts compiled in are recorded, in one transaction. Their earlier texts,
 * which also defined the functions, are kept in tests/integration/data/sql-before-14/, where a test checks that they
 * and today's files build the same database.
 */
static int verify_applied(PGconn *conn, PGresult *applied, const char **unknown, char *err, size_t errlen)
{
    char why[400];
    int recorded = 0, open = 0;
    *unknown = NULL;
    for (int i = 0; i < PQntuples(applied); i++) {
        const char *name = PQgetvalue(applied, i, 0);
        const mx_migration_t *m = compiled_migration(name);
        if (m == NULL) {
            if (*unknown == NULL)
                *unknown = name;
            continue;
        }
        char have[SHA256_HEX_LEN];
        text_sha256(m->sql, have);
        if (!PQgetisnull(applied, i, 1)) {
            const char *recorded_sha = PQgetvalue(applied, i, 1);
            if (strcmp(recorded_sha, have) != 0) {
                snprintf(err, errlen,
                         "migration %s was changed after this database applied it (sha256 then %s, in this mxkeysd "
                         "%s); an applied migration is never edited: restore its text and put the change in a new "
                         "migration",
                         name, recorded_sha, have);
                goto failed_reported;
            }
            continue;
        }
        const char *params[] = {name, have};
        if (!open) {
            if (run(conn, "BEGIN", 0, NULL, why, sizeof(why)) != 0)
                goto failed;
            open = 1;
        }
        if (run(conn, "UPDATE schema_migrations SET sha256 = $2 WHERE name = $1 AND sha256 IS NULL", 2, params, why,
                sizeof(why)) != 0)
            goto failed;
        recorded++;
    }
    if (open && run(conn, "COMMIT", 0, NULL, why, sizeof(why)) != 0)
        goto failed;
    if (recorded > 0)
        mx_info("migrations: recorded the checksums of %d migrations applied before checksums existed", recorded);
    return 0;

failed:
    snprintf(err, errlen, "recording migration checksums: %s", why);
failed_reported:
    if (open)
        rollback(conn);
    return -1;
}

static int apply_one(PGconn *conn, const mx_migration_t *m, char *err, size_t errlen)
{
    char why[400], sha[SHA256_HEX_LEN];
    text_sha256(m->sql, sha);
    const char *params[] = {m->name, sha};
    if (run(conn, "BEGIN", 0, NULL, why, sizeof(why)) != 0 || run_script(conn, m->sql, why, sizeof(why)) != 0 ||
        run(conn, "INSERT INTO schema_migrations (name, sha256) VALUES ($1, $2)", 2, params, why, sizeof(why)) != 0 ||
        run(conn, "COMMIT", 0, NULL, why, sizeof(why)) != 0)
        goto failed;
    mx_info("migrations: applied %s", m->name);
    return 0;

failed:
    snprintf(err, errlen, "%s: %s", m->name, why);
    rollback(conn);
    return -1;
}

/* Every function file, in one transaction: a start either installs all of this binary's functions or none. On a
 * database that is already current this rewrites identical definitions, which is cheap (milliseconds) and makes the
 * files, not whatever a database happens to hold, the definition. */
static int apply_functions(PGconn *conn, char *err, size_t errlen)
{
    char why[400];
    const char *where = "BEGIN";
    if (run(conn, "BEGIN", 0, NULL, why, sizeof(why)) != 0)
        goto failed;
    for (size_t i = 0; i < mx_nsql_functions; i++) {
        where = mx_sql_functions[i].name;
        if (run_script(conn, mx_sql_functions[i].sql, why, sizeof(why)) != 0)
            goto failed;
    }
    where = "COMMIT";
    if (run(conn, "COMMIT", 0, NULL, why, sizeof(why)) != 0)
        goto failed;
    mx_debug("migrations: %zu function files applied", mx_nsql_functions);
    return 0;

failed:
    snprintf(err, errlen, "%s: %s", where, why);
    rollback(conn);
    return -1;
}

int mx_migrate(PGconn *conn, mx_migrate_scope_t scope, char *err, size_t errlen)
{
    char why[400];
    PGresult *applied = NULL;
    const char *unknown = NULL;
    int count = 0, locked = 0;

    if (run(conn, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")", 0, NULL, why, sizeof(why)) != 0)
        goto failed;
    locked = 1;
    if (run(conn,
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL "
            "DEFAULT now(), sha256 text)",
            0, NULL, why, sizeof(why)) != 0 ||
        /* the table as mxkeysd made it before checksums */
        run(conn, "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS sha256 text", 0, NULL, why, sizeof(why)) !=
            0 ||
        (applied = mx_db_exec(conn, "SELECT name, sha256 FROM schema_migrations ORDER BY name", 0, NULL, why,
                              sizeof(why))) == NULL)
        goto failed;

    /* The generator already sorted them by file name; do not rely on it silently. */
    for (size_t i = 1; i < mx_nmigrations; i++)
        if (strcmp(mx_migrations[i - 1].name, mx_migrations[i].name) >= 0) {
            snprintf(why, sizeof(why), "compiled migrations out of order at %s", mx_migrations[i].name);
            goto failed;
        }
    if (verify_applied(conn, applied, &unknown, err, errlen) != 0)
        goto failed_reported;
    for (size_t i = 0; i < mx_nmigrations; i++) {
        if (is_applied(applied, mx_migrations[i].name))
            continue;
        if (apply_one(conn, &mx_migrations[i], err, errlen) != 0)
            goto failed_reported;
        count++;
    }
    if (unknown != NULL) {
        /* A newer mxkeysd migrated this database (a rolling upgrade, or a downgrade): its functions go with its
         * schema, and ours might not work on that schema, so they stay as they are. */
        mx_warn("migrations: this database has migration %s, which this mxkeysd does not know: it was upgraded by a "
                "newer mxkeysd, whose SQL functions are left in place",
                unknown);
    } else if ((scope == MX_MIGRATE_ALL || count > 0) && apply_functions(conn, err, errlen) != 0) {
        goto failed_reported; /* a migration always brings this binary's functions with it: they go together */
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
