/* The query cache's change feed (include/mxkeys/query_cache_feed.h says what it proves and why that holds). A plain
 * thread with a blocking connect and poll(2): it is not a worker, nothing waits on it, and the only thing it shares
 * is the cache, whose mutex it takes once per user heard of. */
#include "mxkeys/query_cache_feed.h"
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mxkeys/db_sync.h"
#include "mxkeys/log.h"

#define CHANNEL "mxkeys_query_cache"           /* the triggers' (sql/functions/query_cache.sql) */
#define BEAT_CHANNEL "mxkeys_query_cache_beat" /* the feed's own heartbeat */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct st_mx_query_cache_feed_t {
    mx_query_cache_t *qc;
    char *conninfo;
    unsigned max_lag_ms, beat_ms;
    pthread_t thread;
    int wake[2]; /* stop: a byte written to wake[1] */
    atomic_bool stopping;
    _Atomic unsigned long long notifications, connects, losses;
};

static uint64_t ms_to_ns(unsigned ms)
{
    return (uint64_t)ms * 1000000ULL;
}

/* Sleeps up to `ms`, or until stopped. Returns false when stopping. */
static bool nap(mx_query_cache_feed_t *f, unsigned ms)
{
    struct pollfd p = {.fd = f->wake[0], .events = POLLIN};
    (void)poll(&p, 1, (int)ms);
    return !atomic_load(&f->stopping);
}

static PGconn *connect_feed(mx_query_cache_feed_t *f)
{
    /* The workers' defaults (mx_db_serving_defaults), so also a writable server only: a standby cannot LISTEN. */
    char user_ms[16];
    snprintf(user_ms, sizeof(user_ms), "%u", f->max_lag_ms);
    const char *keys[MX_DB_SERVING_DEFAULTS + 2] = {NULL}, *values[MX_DB_SERVING_DEFAULTS + 2] = {NULL};
    mx_db_serving_defaults(keys, values, "2", user_ms, "mxkeysd-query-cache-feed");
    keys[MX_DB_SERVING_DEFAULTS] = "dbname"; /* last: the conninfo it expands to overrides every default */
    values[MX_DB_SERVING_DEFAULTS] = f->conninfo;
    PGconn *pg = PQconnectdbParams(keys, values, 1);
    if (pg == NULL)
        return NULL;
    if (PQstatus(pg) != CONNECTION_OK) {
        mx_debug("query cache feed: cannot connect: %.*s", (int)strcspn(PQerrorMessage(pg), "\n"), PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    PGresult *res = PQexec(pg, "LISTEN " CHANNEL "; LISTEN " BEAT_CHANNEL);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok || PQsetnonblocking(pg, 1) != 0) {
        mx_debug("query cache feed: LISTEN failed: %.*s", (int)strcspn(PQerrorMessage(pg), "\n"), PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/* Handles what was heard: users to forget, and the beat this connection is waiting for (true when it came). */
static bool take_heard(mx_query_cache_feed_t *f, PGconn *pg, const char *beat)
{
    bool proven = false;
    PGnotify *n;
    while ((n = PQnotifies(pg)) != NULL) {
        if (strcmp(n->relname, BEAT_CHANNEL) == 0) {
            proven |= beat[0] != '\0' && strcmp(n->extra, beat) == 0;
        } else {
            mx_query_cache_forget(f->qc, n->extra, strlen(n->extra));
            atomic_fetch_add(&f->notifications, 1);
        }
        PQfreemem(n);
    }
    return proven;
}

/* One connection's life until it fails or the feed stops. The heartbeat is a notification this connection sends to
 * itself: PostgreSQL queues notifications in commit order and delivers a listener's in that order, so once the
 * beat sent at T comes back, every change committed before T has been heard. It also proves delivery end to end:
 * behind a pool that does not keep this session (PgBouncer in transaction mode), no beat ever comes back and the
 * cache never answers. */
static void serve(mx_query_cache_feed_t *f, PGconn *pg)
{
    char beat[32] = "";
    unsigned long long beats = 0;
    bool lapsed = false;
    uint64_t beat_sent = 0, next_beat = mx_query_cache_now_ns(); /* the first beat at once: no proof before it */
    while (!atomic_load(&f->stopping)) {
        uint64_t now = mx_query_cache_now_ns();
        if (beat[0] == '\0' && now >= next_beat) {
            char sql[96];
            snprintf(beat, sizeof(beat), "%llu", ++beats);
            snprintf(sql, sizeof(sql), "NOTIFY " BEAT_CHANNEL ", '%s'", beat);
            if (PQsendQuery(pg, sql) != 1)
                return;
            beat_sent = now;
            lapsed = false;
        }
        if (PQflush(pg) < 0)
            return;
        /* Wake for the next beat, for the current beat's deadline, or (past it) at the beat's pace. */
        uint64_t until = beat[0] == '\0' ? next_beat
                         : lapsed        ? now + ms_to_ns(f->beat_ms)
                                         : beat_sent + ms_to_ns(f->max_lag_ms);
        int wait_ms = until > now ? (int)((until - now) / 1000000ULL) + 1 : 0;
        struct pollfd p[2] = {{.fd = PQsocket(pg), .events = POLLIN}, {.fd = f->wake[0], .events = POLLIN}};
        if (poll(p, 2, wait_ms) < 0 && errno != EINTR)
            return;
        if (p[0].revents != 0) {
            if (PQconsumeInput(pg) != 1)
                return;
            while (!PQisBusy(pg)) { /* the NOTIFY's own result: anything but success ends the connection */
                PGresult *res = PQgetResult(pg);
                if (res == NULL)
                    break;
                bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
                PQclear(res);
                if (!ok)
                    return;
            }
            if (take_heard(f, pg, beat)) {
                mx_query_cache_confirm(f->qc, beat_sent + ms_to_ns(f->max_lag_ms));
                beat[0] = '\0';
                next_beat = beat_sent + ms_to_ns(f->beat_ms);
            }
        }
        if (beat[0] != '\0' && !lapsed && mx_query_cache_now_ns() >= beat_sent + ms_to_ns(f->max_lag_ms)) {
            /* The cache has stopped answering by itself (its proof ran out). Nothing heard on this connection is lost,
             * so keep waiting on it; the beat, when it comes, proves too little, and the next one goes at once. */
            lapsed = true;
            atomic_fetch_add(&f->losses, 1);
        }
    }
}

static void *feed_main(void *arg)
{
    mx_query_cache_feed_t *f = arg;
    unsigned backoff = BACKOFF_MIN_MS;
    while (!atomic_load(&f->stopping)) {
        PGconn *pg = connect_feed(f);
        if (pg == NULL) {
            if (!nap(f, backoff))
                break;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        atomic_fetch_add(&f->connects, 1);
        backoff = BACKOFF_MIN_MS;
        serve(f, pg);
        if (!atomic_load(&f->stopping)) {
            mx_warn(
                "query cache feed: connection lost (%.*s): answering /keys/query from the database until it is back",
                (int)strcspn(PQerrorMessage(pg), "\n"), PQerrorMessage(pg));
            atomic_fetch_add(&f->losses, 1);
        }
        mx_query_cache_lost(f->qc);
        PQfinish(pg);
    }
    return NULL;
}

mx_query_cache_feed_t *mx_query_cache_feed_start(mx_query_cache_t *qc, const char *conninfo, unsigned max_lag_ms)
{
    mx_query_cache_feed_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->qc = qc;
    f->conninfo = strdup(conninfo);
    f->max_lag_ms = max_lag_ms;
    f->beat_ms = max_lag_ms / 4 > 0 ? max_lag_ms / 4 : 1;
    if (f->conninfo == NULL || pipe2(f->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(f->conninfo);
        free(f);
        return NULL;
    }
    if (pthread_create(&f->thread, NULL, feed_main, f) != 0) {
        close(f->wake[0]);
        close(f->wake[1]);
        free(f->conninfo);
        free(f);
        return NULL;
    }
    return f;
}

void mx_query_cache_feed_stop(mx_query_cache_feed_t *f)
{
    if (f == NULL)
        return;
    atomic_store(&f->stopping, true);
    ssize_t w = write(f->wake[1], "x", 1);
    (void)w;
    pthread_join(f->thread, NULL);
    close(f->wake[0]);
    close(f->wake[1]);
    free(f->conninfo);
    free(f);
}

void mx_query_cache_feed_stats(mx_query_cache_feed_t *f, mx_query_cache_feed_stats_t *out)
{
    out->notifications = atomic_load(&f->notifications);
    out->connects = atomic_load(&f->connects);
    out->losses = atomic_load(&f->losses);
}
