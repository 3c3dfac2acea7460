/* Blocking database helpers for start-up and the CLI (never on a worker's request path). */
#ifndef MXKEYS_DB_SYNC_H
#define MXKEYS_DB_SYNC_H

#include <libpq-fe.h>
#include <stddef.h>

/* Which server of a multi-host conninfo a connection may land on. */
typedef enum en_mx_db_target_t {
    MX_DB_WRITABLE, /* mxkeys' own database: a read-write server only (libpq target_session_attrs=read-write) */
    MX_DB_ANY,      /* a database mxkeys only reads (Synapse's, for the import): whatever the conninfo says */
} mx_db_target_t;

/** Connects, retrying for up to `wait_ms` while the server is starting (or, for MX_DB_WRITABLE, while every host is
 * read-only: a standby being promoted). Returns NULL with a reason in `err`. */
PGconn *mx_db_connect_blocking(const char *conninfo, mx_db_target_t target, unsigned wait_ms, char *err, size_t errlen);
/** The default target_session_attrs of a connection to mxkeys' own database: PGTARGETSESSIONATTRS when set (libpq's
 * own default, kept), else "read-write". The conninfo's own target_session_attrs always wins over it. */
const char *mx_db_writable_default(void);
/* The keywords every serving connection (the workers' pools, the query cache's feed) sets before its conninfo, which
 * overrides any of them: connect_timeout, TCP keepalives (idle 10 s, 3 probes 3 s apart) to find a dead peer on an
 * idle connection, tcp_user_timeout to bound how long sent bytes may stay unacknowledged (a black-holed network;
 * both ignored on unix sockets), target_session_attrs (mx_db_writable_default) and the name in pg_stat_activity. */
#define MX_DB_SERVING_DEFAULTS 8
/** Fills keys[0..7] and values[0..7]; the strings given must outlive the connect call. */
void mx_db_serving_defaults(const char **keys, const char **values, const char *connect_timeout_s,
                            const char *user_timeout_ms, const char *application_name);
/** Runs one parameterised statement; returns the result (caller clears) or NULL with a reason in `err`. */
PGresult *mx_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *values, char *err, size_t errlen);

#endif
