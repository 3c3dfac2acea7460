/* Every SQL statement the server prepares, by id. Each endpoint family keeps its statements in its own .def file
 * (include/mxkeys/sql/), so families grow without touching each other. */
#ifndef MXKEYS_DB_STATEMENTS_H
#define MXKEYS_DB_STATEMENTS_H

#include <stddef.h>

typedef enum en_mx_stmt_id_t {
#define MX_STMT(id, sql) MX_STMT_##id,
#include "mxkeys/sql/core.def"
#include "mxkeys/sql/keys.def"
#include "mxkeys/sql/xsign.def"
#include "mxkeys/sql/backup.def"
#include "mxkeys/sql/sidecar.def"
#include "mxkeys/sql/devices.def"
#undef MX_STMT
    MX_STMT__COUNT
} mx_stmt_id_t;

typedef struct st_mx_stmt_def_t {
    const char *name; /* prepared statement name */
    const char *sql;
} mx_stmt_def_t;

/** The statement table, indexed by mx_stmt_id_t. */
extern const mx_stmt_def_t mx_stmt_defs[MX_STMT__COUNT];

/** Calls `cb` with each user whose /keys/query answer the statement (id, parameter values) may change once it commits:
 * what a write made through this process forgets from the query cache before its client is answered
 * (src/db/stmt_changes.c lists them; the database's own feed, sql/functions/query_cache.sql, covers every writer). */
void mx_stmt_changed_users(int id, const char *const *values, int nvalues,
                           void (*cb)(void *ctx, const char *user, size_t len), void *ctx);

#endif
