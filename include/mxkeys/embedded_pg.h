/* The embedded private PostgreSQL cluster used when no --database-url is given: initdb once into <state-dir>/pg,
 * start with pg_ctl listening only on a unix socket inside the state dir, stop on shutdown. When run as root the
 * cluster runs as an unprivileged user (PostgreSQL refuses root). Blocking: start-up and shutdown only. */
#ifndef MXKEYS_EMBEDDED_PG_H
#define MXKEYS_EMBEDDED_PG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct st_mx_embedded_pg_t mx_embedded_pg_t;

typedef enum en_mx_embedded_mode_t {
    MX_EMBEDDED_OWNER,  /* serve / migrate: take the state-dir lock (fail if another mxkeysd holds it), start cluster */
    MX_EMBEDDED_CLIENT, /* token commands: use the running server's cluster if the lock is held, else start briefly */
} mx_embedded_mode_t;

/**
 * Makes the cluster available. On success returns the handle and writes a libpq conninfo into `conninfo`; on failure
 * returns NULL with a one-line reason in `err`.
 */
mx_embedded_pg_t *mx_embedded_pg_start(const char *state_dir, mx_embedded_mode_t mode, char *conninfo,
                                       size_t conninfolen, char *err, size_t errlen);
/** Stops the cluster if this handle started it, releases the lock, frees the handle. */
void mx_embedded_pg_stop(mx_embedded_pg_t *pg);

#endif
