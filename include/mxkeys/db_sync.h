/* Blocking database helpers for start-up and the CLI (never on a worker's request path). */
#ifndef MXKEYS_DB_SYNC_H
#define MXKEYS_DB_SYNC_H

#include <libpq-fe.h>
#include <stddef.h>

/** Connects, retrying for up to `wait_ms` while the server is starting. Returns NULL with a reason in `err`. */
PGconn *mx_db_connect_blocking(const char *conninfo, unsigned wait_ms, char *err, size_t errlen);
/** Runs one parameterised statement; returns the result (caller clears) or NULL with a reason in `err`. */
PGresult *mx_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *values, char *err, size_t errlen);

#endif
