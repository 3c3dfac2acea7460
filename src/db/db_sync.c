/* Blocking libpq helpers for start-up and the CLI. The serving path never uses these: workers talk to the database
 * through the asynchronous pool. */
#include "mxkeys/db_sync.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mxkeys/log.h"

/* libpq messages end in a newline and may span lines ("DETAIL: ..."): callers want one line. */
static void one_line(char *dst, size_t dstlen, const char *msg)
{
    snprintf(dst, dstlen, "%s", msg != NULL && *msg != '\0' ? msg : "unknown error");
    size_t len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
    for (char *p = dst; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

/* The server's NOTICEs (e.g. "relation already exists, skipping") are routine here: debug level, not raw stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    char line[512];
    one_line(line, sizeof(line), message);
    mx_debug("database: %s", line);
}

/* Errors that mean "not there yet" while a freshly started cluster comes up; anything else (bad password, missing
 * database) will not fix itself by waiting. */
static int is_transient(const char *msg)
{
    static const char *const transient[] = {
        "starting up", "Connection refused", "No such file or directory", "Is the server running", "not yet accepting",
        "shutting down", "timeout expired", "recovery",
        /* target_session_attrs=read-write found only standbys: a promotion may be under way */
        "session is read-only"};
    for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++)
        if (strstr(msg, transient[i]) != NULL)
            return 1;
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *mx_db_writable_default(void)
{
    const char *env = getenv("PGTARGETSESSIONATTRS");
    return env != NULL && *env != '\0' ? env : "read-write";
}

void mx_db_serving_defaults(const char **keys, const char **values, const char *connect_timeout_s,
                            const char *user_timeout_ms, const char *application_name)
{
    static const char *const names[MX_DB_SERVING_DEFAULTS] = {
        "connect_timeout",  "keepalives",       "keepalives_idle",      "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "target_session_attrs", "fallback_application_name"};
    const char *const given[MX_DB_SERVING_DEFAULTS] = {
        connect_timeout_s, "1", "10", "3", "3", user_timeout_ms, mx_db_writable_default(), application_name};
    for (int i = 0; i < MX_DB_SERVING_DEFAULTS; i++) {
        keys[i] = names[i];
        values[i] = given[i];
    }
}

PGconn *mx_db_connect_blocking(const char *conninfo, mx_db_target_t target, unsigned wait_ms, char *err, size_t errlen)
{
    /* expand_dbname lets `conninfo` be a keyword string or a URI; keywords before dbname are defaults it overrides.
     * fallback_application_name names us in pg_stat_activity unless the operator chose a name. With several hosts
     * (`host=a,b`), libpq tries them in order; read-write makes it skip standbys, so migrations and the CLI's writes
     * reach the primary, wherever it is now. */
    /* connect_timeout: a blocking connect enforces it per host and then tries the next one, so a frozen first host of
     * a multi-host conninfo cannot hold start-up for good. A NULL value leaves the keyword out: MX_DB_ANY keeps
     * libpq's own default. */
    const char *const keys[] = {"connect_timeout", "target_session_attrs", "dbname", "fallback_application_name", NULL};
    const char *const values[] = {"10", target == MX_DB_WRITABLE ? mx_db_writable_default() : NULL, conninfo, "mxkeysd",
                                  NULL};
    long long deadline = now_ms() + wait_ms;
    for (;;) {
        PGconn *conn = PQconnectdbParams(keys, values, 1);
        if (conn == NULL) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        if (PQstatus(conn) == CONNECTION_OK) {
            PQsetNoticeProcessor(conn, on_notice, NULL);
            return conn;
        }
        one_line(err, errlen, PQerrorMessage(conn));
        int retry = is_transient(PQerrorMessage(conn)) && now_ms() < deadline;
        PQfinish(conn);
        if (!retry)
            return NULL;
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

PGresult *mx_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *values, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    one_line(err, errlen, res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    PQclear(res);
    return NULL;
}
