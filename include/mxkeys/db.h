/* Asynchronous PostgreSQL access for one worker: a few non-blocking libpq connections in pipeline mode whose sockets
 * are watched by the worker's h2o loop. A job is N prepared statements followed by one Sync: one round trip, and
 * (pipeline mode) one implicit transaction, so a job is atomic. Nothing here blocks. */
#ifndef MXKEYS_DB_H
#define MXKEYS_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include "mxkeys/db_statements.h"

struct st_h2o_evloop_t;
typedef struct st_mx_db_pool_t mx_db_pool_t;
typedef struct st_mx_db_job_t mx_db_job_t;

typedef enum en_mx_db_status_t {
    MX_DB_OK,      /* submitted / all results arrived (statement errors are in the results) */
    MX_DB_BUSY,    /* the worker's in-flight limit is reached: answer 503 M_LIMIT_EXCEEDED */
    MX_DB_DOWN,    /* no usable connection, or it dropped before the results came: answer 503 */
    MX_DB_TIMEOUT, /* no results within the job's deadline: answer 503; the outcome of a write is unknown (it may
                    * still commit: the statements were sent) */
} mx_db_status_t;

#define MX_DB_MAX_STMTS 16

/** One statement of a job: text parameters, each NUL-terminated (libpq reads text parameters up to the NUL and has
 * no length for them). Only read during submit. */
typedef struct st_mx_db_stmt_t {
    mx_stmt_id_t id;
    int nparams;
    const char *const *values;
} mx_db_stmt_t;

/**
 * Completion callback. `results[i]` belongs to statement i (NULL when the connection dropped first); they are cleared
 * after the callback returns, so copy what you keep.
 */
typedef void (*mx_db_cb)(void *owner, mx_db_status_t status, PGresult **results, size_t nresults);

typedef struct st_mx_db_stats_t {
    unsigned connections, connected, connecting, down;
    unsigned inflight, queue_depth;
    unsigned long long completed, failed, rejected_busy, timed_out;
} mx_db_stats_t;

/**
 * Creates the pool and starts connecting `nconn` connections on `loop`. Statements are prepared on connect.
 * `timeout_ms` bounds every job (mx_db_set_deadline can shorten one) and every connect attempt; a connection whose
 * oldest job has waited that long is failed and re-established. Unless the conninfo sets them, connections use
 * connect_timeout, TCP keepalives and tcp_user_timeout derived from it.
 */
mx_db_pool_t *mx_db_pool_new(struct st_h2o_evloop_t *loop, const char *conninfo, unsigned nconn, unsigned queue_depth,
                             unsigned timeout_ms);
/** Fails every in-flight job with MX_DB_DOWN, closes the connections, frees the pool. */
void mx_db_pool_free(mx_db_pool_t *pool);
/**
 * Sends the statements and one Sync on the least-loaded ready connection. On MX_DB_OK `*job` is the handle (valid until
 * the callback runs or mx_db_cancel); on BUSY/DOWN nothing was sent and the callback will not run.
 */
mx_db_status_t mx_db_submit(mx_db_pool_t *pool, const mx_db_stmt_t *stmts, size_t nstmts, mx_db_cb cb, void *owner,
                            mx_db_job_t **job) __attribute__((warn_unused_result));
/** Answers the job's owner with MX_DB_TIMEOUT if no results came within `ms` of now (only ever shortens the pool's
 * deadline; the connection is failed only by the pool's own). */
void mx_db_set_deadline(mx_db_job_t *job, unsigned ms);
/** The owner went away: the job still completes on the wire (it is atomic) but the callback will not run. */
void mx_db_cancel(mx_db_job_t *job);
/** True when at least one connection can take a job now (safe from another thread: a relaxed read). */
bool mx_db_pool_ready(const mx_db_pool_t *pool);
/** Adds the pool's figures to *sum (the workers' pools summed for /metrics, from another thread: values are
 * relaxed, may be torn). */
void mx_db_pool_stats_add(const mx_db_pool_t *pool, mx_db_stats_t *sum);

/** True when `res` is a successful (TUPLES_OK / COMMAND_OK) result. */
int mx_db_result_ok(const PGresult *res);

/** SQLSTATE that mxkeys' SQL functions raise for a client error; the DETAIL is "<http status> <M_ERRCODE>". */
#define MX_SQLSTATE_CLIENT_ERROR "MXERR"

#endif
