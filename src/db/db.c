/* Per-worker asynchronous PostgreSQL pool in pipeline mode.
 *
 * Each connection is a small state machine driven by its socket's events on the worker's h2o loop:
 *
 *   DOWN --(retry timer)--> CONNECTING --(PQconnectPoll OK; prepare every statement)--> READY
 *     ^                                                                                  |
 *     +------------------------ socket error / EOF / libpq failure ----------------------+
 *
 * On a READY connection jobs are sent as soon as they are submitted: N prepared statements and one Sync. The results
 * come back strictly in order, so each connection keeps a FIFO of jobs in flight. The result sequence of pipeline mode
 * (PostgreSQL's libpq_pipeline test shows it exactly): for every statement its PGresult then NULL; after an error in a
 * group, PGRES_PIPELINE_ABORTED then NULL for the rest of that group; then PGRES_PIPELINE_SYNC for the Sync (with no
 * NULL after it).
 *
 * Deadlines: a sweep every SWEEP_MS answers each job whose deadline passed with MX_DB_TIMEOUT (the job stays in the
 * FIFO, detached like a cancelled one, so the results still line up), fails a connection whose oldest job has waited
 * the pool's whole timeout (PostgreSQL stalled, the host frozen, the network black-holed: libpq alone would wait for
 * the kernel's TCP timeouts, about 15 minutes) and a connect attempt that takes as long. libpq's connect_timeout is
 * not enforced in non-blocking mode, hence our own. */
#include "mxkeys/db.h"
#define H2O_USE_LIBUV 0
#include <assert.h>
#include <fcntl.h>
#include <h2o.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mxkeys/db_hosts.h"
#include "mxkeys/db_sync.h"
#include "mxkeys/log.h"

typedef enum en_conn_state_t { CONN_DOWN, CONN_CONNECTING, CONN_READY } conn_state_t;

struct st_mx_db_job_t {
    mx_db_job_t *next; /* FIFO of the connection, or the pool's free list */
    mx_db_cb cb;       /* NULL: cancelled, or the connection's own prepare job */
    void *owner;
    size_t nstmts;
    size_t cur;        /* statement whose results are being read; == nstmts: waiting for the Sync */
    bool got_result;   /* results[cur] already set (a statement yields one result, then NULL) */
    bool is_prepare;   /* the connection's own PREPARE group: results are checked and cleared as they come */
    uint64_t sent_at;  /* loop milliseconds */
    uint64_t deadline; /* when the owner is answered MX_DB_TIMEOUT */
    PGresult *results[MX_DB_MAX_STMTS];
};

typedef struct st_conn_t {
    mx_db_pool_t *pool;
    unsigned index;
    PGconn *pg;
    h2o_socket_t *sock;
    int wrapped_fd; /* the PQsocket() value sock wraps (a dup of it), to notice changes during connect */
    conn_state_t state;
    bool write_armed;
    mx_db_job_t *head, *tail;
    unsigned inflight;
    unsigned backoff_step;
    bool timed_out;      /* the last attempt or job ran out of time: retry at once, time itself spaced the tries */
    bool on_standby;     /* a statement failed with read_only_sql_transaction: this server is (now) a standby */
    uint64_t connect_at; /* loop milliseconds when the current connect attempt started */
    size_t first_host;   /* multi-host conninfo: where the next attempt starts (past a host that stayed silent) */
    h2o_timeout_entry_t retry;
} conn_t;

/* Reconnect delays: quick at first (a restart of PostgreSQL), then settling at a few seconds. */
static const uint64_t backoff_ms[] = {100, 250, 500, 1000, 2000, 4000};
#define NBACKOFF (sizeof(backoff_ms) / sizeof(backoff_ms[0]))

struct st_mx_db_pool_t {
    h2o_evloop_t *loop;
    char *conninfo;
    mx_db_hosts_t *hosts; /* NULL unless the conninfo names several hosts */
    conn_t *conns;
    unsigned nconns;
    unsigned queue_depth;
    unsigned inflight;
    mx_db_job_t *free_jobs;
    h2o_timeout_t backoff[NBACKOFF];
    unsigned timeout_ms;
    h2o_timeout_t sweep_timeout;
    h2o_timeout_entry_t sweep;
    unsigned long long completed, failed, rejected_busy, timed_out;
};

#define SWEEP_MS 50
/* How many owners one pass of the sweep answers before it walks the FIFO again (their callbacks may submit). */
#define SWEEP_BATCH 64

static void conn_connect(conn_t *c);
static void conn_fail(conn_t *c, const char *why);
static void conn_fail_status(conn_t *c, const char *why, mx_db_status_t status);
static void on_readable(h2o_socket_t *sock, const char *err);
static void on_writable(h2o_socket_t *sock, const char *err);

#define RELAXED_ADD(field, n) __atomic_add_fetch(&(field), (n), __ATOMIC_RELAXED)
#define RELAXED_LOAD(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* ---- jobs ---------------------------------------------------------------------------------------------------- */

static mx_db_job_t *job_alloc(mx_db_pool_t *pool)
{
    mx_db_job_t *job = pool->free_jobs;
    if (job != NULL)
        pool->free_jobs = job->next;
    else if ((job = malloc(sizeof(*job))) == NULL)
        return NULL;
    memset(job, 0, sizeof(*job));
    return job;
}

static void job_release(mx_db_pool_t *pool, mx_db_job_t *job)
{
    if (!job->is_prepare)
        for (size_t i = 0; i < job->nstmts; i++)
            PQclear(job->results[i]);
    job->next = pool->free_jobs;
    pool->free_jobs = job;
}

static void job_finish(conn_t *c, mx_db_job_t *job, mx_db_status_t status)
{
    mx_db_pool_t *pool = c->pool;
    if (job->cb != NULL) {
        assert(pool->inflight > 0);
        RELAXED_ADD(pool->inflight, -1);
        if (status == MX_DB_OK)
            RELAXED_ADD(pool->completed, 1);
        else
            RELAXED_ADD(pool->failed, 1);
        if (status == MX_DB_TIMEOUT)
            RELAXED_ADD(pool->timed_out, 1);
        job->cb(job->owner, status, job->results, job->nstmts);
    } else if (!job->is_prepare) {
        /* cancelled user job: it still counted as in flight until now */
        RELAXED_ADD(pool->inflight, -1);
    }
    job_release(pool, job);
}

/* ---- socket plumbing ----------------------------------------------------------------------------------------- */

static void conn_close_socket(conn_t *c)
{
    if (c->sock != NULL) {
        h2o_socket_read_stop(c->sock);
        /* h2o owns (and closes) the duplicate; libpq keeps its own descriptor. */
        h2o_socket_close(c->sock);
        c->sock = NULL;
    }
    c->write_armed = false;
    c->wrapped_fd = -1;
}

/* Wraps a duplicate of PQsocket(): h2o closes the descriptor it owns, and DONT_READ keeps it from consuming the
 * bytes libpq must read. */
static int conn_wrap_socket(conn_t *c)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -1;
    if (c->sock != NULL && c->wrapped_fd == fd)
        return 0;
    conn_close_socket(c);
    int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0)
        return -1;
    c->sock = h2o_evloop_socket_create(c->pool->loop, dupfd, H2O_SOCKET_FLAG_DONT_READ);
    if (c->sock == NULL) {
        close(dupfd);
        return -1;
    }
    c->sock->data = c;
    c->wrapped_fd = fd;
    return 0;
}

static void arm_write(conn_t *c)
{
    /* A second notify_write on the same socket asserts inside h2o. */
    if (!c->write_armed && c->sock != NULL) {
        c->write_armed = true;
        h2o_socket_notify_write(c->sock, on_writable);
    }
}

/* Pushes libpq's output buffer; arms a write notification when the kernel buffer is full. */
static int conn_flush(conn_t *c)
{
    int r = PQflush(c->pg);
    if (r < 0)
        return -1;
    if (r > 0)
        arm_write(c);
    return 0;
}

/* ---- connecting ---------------------------------------------------------------------------------------------- */

static void on_retry(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, retry, entry);
    conn_connect(c);
}

static void schedule_retry(conn_t *c)
{
    if (h2o_timeout_is_linked(&c->retry))
        return;
    unsigned step = c->backoff_step < NBACKOFF ? c->backoff_step : NBACKOFF - 1;
    if (c->timed_out) {
        /* The attempt already waited the whole timeout: try again at once, so that a database that comes back
         * (SIGCONT, the network healing) finds an attempt in progress rather than a back-off to sit out. */
        c->timed_out = false;
        step = 0;
    } else if (c->backoff_step < NBACKOFF) {
        c->backoff_step++;
    }
    c->retry.cb = on_retry;
    h2o_timeout_link(c->pool->loop, &c->pool->backoff[step], &c->retry);
}

/* Sends PREPARE for every statement as the connection's first pipeline group; user jobs queue behind it. */
static int conn_prepare_statements(conn_t *c)
{
    mx_db_job_t *job = job_alloc(c->pool);
    if (job == NULL)
        return -1;
    job->is_prepare = true;
    for (size_t i = 0; i < MX_STMT__COUNT; i++) {
        if (!PQsendPrepare(c->pg, mx_stmt_defs[i].name, mx_stmt_defs[i].sql, 0, NULL)) {
            job_release(c->pool, job);
            return -1;
        }
    }
    if (!PQpipelineSync(c->pg)) {
        job_release(c->pool, job);
        return -1;
    }
    job->nstmts = MX_STMT__COUNT;
    job->next = NULL;
    job->sent_at = h2o_now(c->pool->loop);
    job->deadline = UINT64_MAX;
    c->head = c->tail = job;
    return 0;
}

static void on_connect_event(h2o_socket_t *sock, const char *err);

static void conn_poll_connect(conn_t *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (conn_wrap_socket(c) != 0)
            goto failed;
        h2o_socket_read_stop(c->sock);
        h2o_socket_read_start(c->sock, on_connect_event);
        return;
    case PGRES_POLLING_WRITING:
        if (conn_wrap_socket(c) != 0)
            goto failed;
        h2o_socket_read_stop(c->sock);
        h2o_socket_read_start(c->sock, on_connect_event);
        arm_write(c);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        goto failed;
    }
    if (conn_wrap_socket(c) != 0 || PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg) ||
        conn_prepare_statements(c) != 0)
        goto failed;
    c->state = CONN_READY;
    c->backoff_step = 0;
    h2o_socket_read_stop(c->sock);
    h2o_socket_read_start(c->sock, on_readable);
    if (conn_flush(c) != 0)
        goto failed;
    mx_info("db: connection %u of worker pool ready", c->index);
    return;
failed:
    conn_fail(c, PQerrorMessage(c->pg));
}

static void on_connect_event(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    if (err != NULL) {
        conn_fail(c, err);
        return;
    }
    conn_poll_connect(c);
}

static void conn_connect(conn_t *c)
{
    mx_db_pool_t *pool = c->pool;
    c->state = CONN_CONNECTING;
    c->on_standby = false;
    c->connect_at = h2o_now(pool->loop);
    /* expand_dbname: the conninfo may be a URI or key=value list. Keywords before dbname are defaults the conninfo
     * overrides (libpq takes the last value of a keyword): mx_db_serving_defaults says which. target_session_attrs
     * =read-write: with several hosts (`host=a,b`) libpq tries each in turn and keeps only a writable one, so after a
     * failover the next attempt finds the promoted standby by itself instead of settling on a read-only server. */
    char connect_s[16], user_ms[16];
    snprintf(connect_s, sizeof(connect_s), "%u", pool->timeout_ms < 2000 ? 2 : (pool->timeout_ms + 999) / 1000);
    snprintf(user_ms, sizeof(user_ms), "%u", pool->timeout_ms);
    enum { NDEFAULTS = MX_DB_SERVING_DEFAULTS };
    const char *keys[NDEFAULTS + 2] = {NULL}, *values[NDEFAULTS + 2] = {NULL};
    mx_db_serving_defaults(keys, values, connect_s, user_ms, "mxkeysd");
    if (pool->hosts != NULL) {
        /* several hosts: the conninfo, parsed once, follows the defaults with its hosts in order from first_host */
        c->pg = mx_db_hosts_connect_start(pool->hosts, c->first_host, keys, values);
    } else {
        keys[NDEFAULTS] = "dbname"; /* last: the conninfo it expands to overrides every default */
        values[NDEFAULTS] = pool->conninfo;
        c->pg = PQconnectStartParams(keys, values, 1);
    }
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_fail(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    conn_poll_connect(c);
}

/* ---- failure ------------------------------------------------------------------------------------------------- */

/* Fails every job in flight (their callbacks see MX_DB_DOWN), drops the connection and schedules a reconnect. */
static void conn_fail(conn_t *c, const char *why)
{
    conn_fail_status(c, why, MX_DB_DOWN);
}

static void conn_fail_status(conn_t *c, const char *why, mx_db_status_t status)
{
    if (c->state == CONN_READY || c->head != NULL)
        mx_warn("db: connection %u lost: %.*s", c->index, (int)strcspn(why ? why : "", "\n"), why ? why : "");
    else
        mx_debug("db: connection %u failed: %.*s", c->index, (int)strcspn(why ? why : "", "\n"), why ? why : "");
    conn_close_socket(c);
    mx_db_job_t *job = c->head;
    c->head = c->tail = NULL;
    c->inflight = 0;
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->state = CONN_DOWN;
    while (job != NULL) {
        mx_db_job_t *next = job->next;
        job_finish(c, job, status);
        job = next;
    }
    schedule_retry(c);
}

/* ---- deadlines ----------------------------------------------------------------------------------------------- */

/* Answers owners whose deadline passed; true when it answered any (the FIFO may have changed under it). */
static bool answer_expired(conn_t *c, uint64_t now)
{
    struct {
        mx_db_cb cb;
        void *owner;
    } due[SWEEP_BATCH];
    size_t n = 0;
    for (mx_db_job_t *job = c->head; job != NULL && n < SWEEP_BATCH; job = job->next) {
        if (job->cb == NULL || now < job->deadline)
            continue;
        due[n].cb = job->cb;
        due[n].owner = job->owner;
        n++;
        job->cb = NULL; /* detached: job_finish releases the in-flight count when the results (or a failure) come */
        RELAXED_ADD(c->pool->failed, 1);
        RELAXED_ADD(c->pool->timed_out, 1);
    }
    for (size_t i = 0; i < n; i++)
        due[i].cb(due[i].owner, MX_DB_TIMEOUT, NULL, 0);
    return n > 0;
}

/* A connection (or attempt) that timed out: its next attempt starts with the host after the one that stayed silent,
 * since libpq would try that one first again and never reach a promoted standby listed after it. */
static void skip_silent_host(conn_t *c)
{
    mx_db_hosts_t *hosts = c->pool->hosts;
    if (hosts == NULL)
        return;
    int at = mx_db_hosts_current(hosts, c->pg);
    size_t from = at >= 0 ? (size_t)at : c->first_host;
    c->first_host = (from + 1) % mx_db_hosts_count(hosts);
}

static void on_sweep(h2o_timeout_entry_t *entry)
{
    mx_db_pool_t *pool = H2O_STRUCT_FROM_MEMBER(mx_db_pool_t, sweep, entry);
    uint64_t now = h2o_now(pool->loop);
    for (unsigned i = 0; i < pool->nconns; i++) {
        conn_t *c = &pool->conns[i];
        if (c->state == CONN_CONNECTING && now - c->connect_at >= pool->timeout_ms) {
            c->timed_out = true;
            skip_silent_host(c);
            conn_fail(c, "connect attempt timed out");
            continue;
        }
        if (c->state != CONN_READY)
            continue;
        if (c->head != NULL && now - c->head->sent_at >= pool->timeout_ms) {
            mx_warn("db: connection %u: no answer within %u ms; reconnecting", c->index, pool->timeout_ms);
            c->timed_out = true;
            skip_silent_host(c);
            conn_fail_status(c, "timed out", MX_DB_TIMEOUT);
            continue;
        }
        while (c->state == CONN_READY && answer_expired(c, now))
            ;
    }
    h2o_timeout_link(pool->loop, &pool->sweep_timeout, &pool->sweep);
}

/* ---- results ------------------------------------------------------------------------------------------------- */

static void check_prepare_result(PGresult *r, size_t index)
{
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        mx_error("db: preparing statement %s failed: %s", mx_stmt_defs[index].name, PQresultErrorMessage(r));
}

/* Reads every result that is complete. Returns 0, -1 when the connection is broken, or 1 when a callback's own work
 * already failed the connection (it is gone: touch nothing more). */
static int read_results(conn_t *c)
{
    while (c->head != NULL) {
        if (c->pg == NULL)
            return 1;
        if (PQisBusy(c->pg))
            return 0;
        mx_db_job_t *job = c->head;
        PGresult *r = PQgetResult(c->pg);
        bool is_prepare = job->is_prepare;
        if (job->cur < job->nstmts) {
            if (r == NULL) { /* end of this statement's results */
                job->cur++;
                job->got_result = false;
                continue;
            }
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
                mx_error("db: protocol desync (early sync)");
                PQclear(r);
                return -1;
            }
            if (is_prepare) {
                check_prepare_result(r, job->cur);
                PQclear(r);
            } else if (job->got_result) {
                PQclear(r); /* a prepared statement yields one result; ignore anything extra */
            } else {
                job->results[job->cur] = r;
                job->got_result = true;
                const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                if (state != NULL && strcmp(state, "25006") == 0)
                    c->on_standby = true;
            }
            continue;
        }
        /* every statement is done: the next result is the Sync */
        if (r == NULL)
            return 0;
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st != PGRES_PIPELINE_SYNC) {
            mx_error("db: protocol desync (expected sync, got %s)", PQresStatus(st));
            return -1;
        }
        c->head = job->next;
        if (c->head == NULL)
            c->tail = NULL;
        if (is_prepare) {
            job_release(c->pool, job);
        } else {
            assert(c->inflight > 0);
            c->inflight--;
            job_finish(c, job, MX_DB_OK);
        }
    }
    return 0;
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    if (err != NULL) {
        conn_fail(c, err);
        return;
    }
    if (!PQconsumeInput(c->pg)) {
        conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
    int r = read_results(c);
    if (r == 1)
        return;
    if (r == 0 && c->on_standby) {
        /* Only a conninfo that asks for it (target_session_attrs=any) lands on a standby: writes cannot succeed
         * here, so look again for the primary (its job was answered 503, those behind it are failed the same way). */
        conn_fail(c, "the server is read-only (a standby): looking for the primary");
        return;
    }
    if (r != 0 || PQstatus(c->pg) == CONNECTION_BAD || conn_flush(c) != 0)
        conn_fail(c, PQerrorMessage(c->pg));
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    c->write_armed = false;
    if (err != NULL) {
        conn_fail(c, err);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_poll_connect(c);
        return;
    }
    if (conn_flush(c) != 0)
        conn_fail(c, PQerrorMessage(c->pg));
}

/* ---- public -------------------------------------------------------------------------------------------------- */

mx_db_pool_t *mx_db_pool_new(h2o_evloop_t *loop, const char *conninfo, unsigned nconn, unsigned queue_depth,
                             unsigned timeout_ms)
{
    mx_db_pool_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return NULL;
    pool->loop = loop;
    pool->conninfo = strdup(conninfo);
    pool->hosts = mx_db_hosts_new(conninfo);
    pool->nconns = nconn ? nconn : 1;
    pool->queue_depth = queue_depth ? queue_depth : 1;
    pool->conns = calloc(pool->nconns, sizeof(conn_t));
    pool->timeout_ms = timeout_ms ? timeout_ms : 1;
    for (size_t i = 0; i < NBACKOFF; i++)
        h2o_timeout_init(loop, &pool->backoff[i], backoff_ms[i]);
    h2o_timeout_init(loop, &pool->sweep_timeout, SWEEP_MS);
    pool->sweep.cb = on_sweep;
    h2o_timeout_link(loop, &pool->sweep_timeout, &pool->sweep);
    for (unsigned i = 0; i < pool->nconns; i++) {
        conn_t *c = &pool->conns[i];
        c->pool = pool;
        c->index = i;
        c->wrapped_fd = -1;
        conn_connect(c);
    }
    return pool;
}

void mx_db_pool_free(mx_db_pool_t *pool)
{
    if (pool == NULL)
        return;
    for (unsigned i = 0; i < pool->nconns; i++) {
        conn_t *c = &pool->conns[i];
        if (h2o_timeout_is_linked(&c->retry))
            h2o_timeout_unlink(&c->retry);
        conn_close_socket(c);
        mx_db_job_t *job = c->head;
        c->head = c->tail = NULL;
        if (c->pg != NULL)
            PQfinish(c->pg);
        c->pg = NULL;
        while (job != NULL) {
            mx_db_job_t *next = job->next;
            job_finish(c, job, MX_DB_DOWN);
            job = next;
        }
    }
    if (h2o_timeout_is_linked(&pool->sweep))
        h2o_timeout_unlink(&pool->sweep);
    h2o_timeout_dispose(pool->loop, &pool->sweep_timeout);
    for (size_t i = 0; i < NBACKOFF; i++)
        h2o_timeout_dispose(pool->loop, &pool->backoff[i]);
    while (pool->free_jobs != NULL) {
        mx_db_job_t *next = pool->free_jobs->next;
        free(pool->free_jobs);
        pool->free_jobs = next;
    }
    free(pool->conns);
    free(pool->conninfo);
    mx_db_hosts_free(pool->hosts);
    free(pool);
}

static conn_t *pick_connection(mx_db_pool_t *pool)
{
    conn_t *best = NULL;
    for (unsigned i = 0; i < pool->nconns; i++) {
        conn_t *c = &pool->conns[i];
        if (c->state == CONN_READY && (best == NULL || c->inflight < best->inflight))
            best = c;
    }
    return best;
}

mx_db_status_t mx_db_submit(mx_db_pool_t *pool, const mx_db_stmt_t *stmts, size_t nstmts, mx_db_cb cb, void *owner,
                            mx_db_job_t **out)
{
    conn_t *c = pick_connection(pool);
    if (c == NULL)
        return MX_DB_DOWN;
    if (pool->inflight >= pool->queue_depth) {
        RELAXED_ADD(pool->rejected_busy, 1);
        return MX_DB_BUSY;
    }
    if (nstmts == 0 || nstmts > MX_DB_MAX_STMTS)
        return MX_DB_DOWN;
    mx_db_job_t *job = job_alloc(pool);
    if (job == NULL)
        return MX_DB_BUSY;
    for (size_t i = 0; i < nstmts; i++) {
        const mx_db_stmt_t *s = &stmts[i];
        if (!PQsendQueryPrepared(c->pg, mx_stmt_defs[s->id].name, s->nparams, s->values, NULL, NULL, 0))
            goto broken;
    }
    if (!PQpipelineSync(c->pg))
        goto broken;
    job->cb = cb;
    job->owner = owner;
    job->nstmts = nstmts;
    job->next = NULL;
    job->sent_at = h2o_now(pool->loop);
    job->deadline = job->sent_at + pool->timeout_ms;
    if (c->tail != NULL)
        c->tail->next = job;
    else
        c->head = job;
    c->tail = job;
    c->inflight++;
    RELAXED_ADD(pool->inflight, 1);
    if (conn_flush(c) != 0) {
        /* Withdraw this job before failing the rest: its caller learns of the failure from our return value, never
         * through a callback run inside submit. */
        mx_db_job_t **link = &c->head, *prev = NULL;
        while (*link != job) {
            prev = *link;
            link = &(*link)->next;
        }
        *link = NULL;
        c->tail = prev;
        c->inflight--;
        RELAXED_ADD(pool->inflight, -1);
        goto broken;
    }
    *out = job;
    return MX_DB_OK;
broken:
    job->nstmts = 0;
    job_release(pool, job);
    conn_fail(c, PQerrorMessage(c->pg));
    return MX_DB_DOWN;
}

int mx_db_result_ok(const PGresult *res)
{
    if (res == NULL)
        return 0;
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

void mx_db_set_deadline(mx_db_job_t *job, unsigned ms)
{
    if (job != NULL && job->sent_at + ms < job->deadline)
        job->deadline = job->sent_at + ms;
}

void mx_db_cancel(mx_db_job_t *job)
{
    if (job != NULL)
        job->cb = NULL; /* owner stays non-NULL so the in-flight count is released when it completes */
}

bool mx_db_pool_ready(const mx_db_pool_t *pool)
{
    for (unsigned i = 0; i < pool->nconns; i++)
        if (RELAXED_LOAD(pool->conns[i].state) == CONN_READY)
            return true;
    return false;
}

void mx_db_pool_stats_add(const mx_db_pool_t *pool, mx_db_stats_t *sum)
{
    sum->connections += pool->nconns;
    for (unsigned i = 0; i < pool->nconns; i++) {
        switch (RELAXED_LOAD(pool->conns[i].state)) {
        case CONN_READY:
            sum->connected++;
            break;
        case CONN_CONNECTING:
            sum->connecting++;
            break;
        default:
            sum->down++;
        }
    }
    sum->inflight += RELAXED_LOAD(pool->inflight);
    sum->queue_depth += pool->queue_depth;
    sum->completed += RELAXED_LOAD(pool->completed);
    sum->failed += RELAXED_LOAD(pool->failed);
    sum->rejected_busy += RELAXED_LOAD(pool->rejected_busy);
    sum->timed_out += RELAXED_LOAD(pool->timed_out);
}
