/* Schema migrations compiled into the binary (sql/NNN_*.sql), applied in order, each in its own transaction, under a
 * PostgreSQL advisory lock so that several instances may start at once. Blocking: start-up and CLI only. */
#ifndef MXKEYS_MIGRATE_H
#define MXKEYS_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

typedef struct st_mx_migration_t {
    const char *name; /* file name, e.g. "001_init.sql" */
    const char *sql;
} mx_migration_t;

/** Generated from sql/ by tools/embed_sql.py. */
extern const mx_migration_t mx_migrations[];
extern const size_t mx_nmigrations;

/** Applies pending migrations. Returns the number applied, or -1 with a reason in `err`. */
int mx_migrate(PGconn *conn, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
