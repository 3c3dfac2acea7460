/* The hosts of a multi-host conninfo (`host=a,b`, `postgresql://a,b/db`), so that a connection's next attempt can
 * start past a host that stayed silent. libpq moves on by itself from a host that refuses, fails or is read-only, but
 * a non-blocking connect to one that never answers (a frozen or powered-off machine) waits until mxkeys abandons the
 * attempt, and the next attempt would start with that same host again. */
#ifndef MXKEYS_DB_HOSTS_H
#define MXKEYS_DB_HOSTS_H

#include <libpq-fe.h>
#include <stddef.h>

typedef struct st_mx_db_hosts_t mx_db_hosts_t;

/** Parses `conninfo` with libpq's own parser. NULL when it names fewer than two hosts or does not parse (connect with
 * the conninfo as it is then: libpq reports any error). Free with mx_db_hosts_free. */
mx_db_hosts_t *mx_db_hosts_new(const char *conninfo);
void mx_db_hosts_free(mx_db_hosts_t *hosts);
/** How many hosts the conninfo names (at least 2). */
size_t mx_db_hosts_count(const mx_db_hosts_t *hosts);
/** Index of the host `pg` is connected or connecting to, or -1 when it cannot be told. */
int mx_db_hosts_current(const mx_db_hosts_t *hosts, const PGconn *pg);
/** PQconnectStartParams with the hosts (and their ports and addresses) in order from `first`, wrapping around.
 * `keys`/`values` (NULL-terminated) are defaults: the conninfo's own keywords win over them. */
PGconn *mx_db_hosts_connect_start(const mx_db_hosts_t *hosts, size_t first, const char *const *keys,
                                  const char *const *values);

#endif
