/* `mxkeysd import synapse`: copies a Synapse database's end-to-end keys and backups into mxkeys (see
 * sql/functions/import.sql for what a run owns and what it leaves alone). Blocking; runs in place of the server. */
#ifndef MXKEYS_IMPORT_H
#define MXKEYS_IMPORT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include "mxkeys/config.h"

typedef enum en_mx_import_invalid_t { MX_IMPORT_INVALID_IMPORT, MX_IMPORT_INVALID_SKIP } mx_import_invalid_t;

typedef struct st_mx_import_opts_t {
    const char *from;            /* libpq conninfo or URI of the Synapse database (read only) */
    const char *users;           /* POSIX regular expression on user ids (PostgreSQL `~`), or NULL for all */
    bool dry_run;                /* read and check everything; every user's transaction is rolled back */
    bool verify;                 /* compare what Synapse's data implies with what mxkeys serves; writes nothing */
    mx_import_invalid_t invalid; /* what to do with stored objects strict validation refuses */
} mx_import_opts_t;

/**
 * Runs one import (or verification) into the mxkeys database `mx` (migrated). Returns the process exit status: 0, or 1
 * (Synapse could not be read, a user's transaction failed, or --verify found differences).
 */
int mx_import_synapse(PGconn *mx, const mx_config_t *cfg, const mx_import_opts_t *opts);

#endif
