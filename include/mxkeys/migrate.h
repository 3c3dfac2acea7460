/* The database's SQL, compiled into the binary and applied at start-up under a PostgreSQL advisory lock (so several
 * instances may start at once). Blocking: start-up and CLI only.
 *
 * Two kinds of files (docs/ARCHITECTURE.md, "the migration/function rule"):
 *   schema migrations, sql/NNN_*.sql: DDL and data moves, each applied once in its own transaction, in file-name
 *     order; the SHA-256 of its text is recorded, and a start against a database where an applied file's text has
 *     changed since is refused;
 *   function files, sql/functions/<family>.sql: every mx_* function as CREATE OR REPLACE, all applied after the
 *     migrations on every start (and by every CLI command that applied a migration), in one transaction. */
#ifndef MXKEYS_MIGRATE_H
#define MXKEYS_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

typedef struct st_mx_migration_t {
    const char *name; /* file name, e.g. "001_init.sql" or "functions/keys.sql" */
    const char *sql;
} mx_migration_t;

/** Generated from sql/ by tools/embed_sql.py: the migrations in file-name order. */
extern const mx_migration_t mx_migrations[];
extern const size_t mx_nmigrations;
/** Generated from sql/functions/ by tools/embed_sql.py, in the order meson.build lists them. */
extern const mx_migration_t mx_sql_functions[];
extern const size_t mx_nsql_functions;

/** When the function files are applied. */
typedef enum en_mx_migrate_scope_t {
    /* On every call (serve, `mxkeysd migrate`, the import): the files, not whatever a database happens to hold, are
     * the definition. */
    MX_MIGRATE_ALL,
    /* Only after a migration was applied (CLI commands that use tables alone, such as `token create`): on a current
     * database they cost one advisory lock and two catalog checks instead of rewriting every function, which made
     * minting tokens in bulk wait on each other's rewrites. */
    MX_MIGRATE_SCHEMA,
} mx_migrate_scope_t;

/**
 * Applies pending migrations, then the function files as `scope` says. Returns the number of migrations applied, or
 * -1 with a reason in `err` (an applied migration whose text changed is named there, with both checksums).
 */
int mx_migrate(PGconn *conn, mx_migrate_scope_t scope, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
