/* The process-wide list of revoked devices; see include/mxkeys/revocations.h. */
#include "mxkeys/revocations.h"
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mxkeys/db.h"
#include "mxkeys/log.h"

#define MAX_KEPT 8192 /* revocations remembered at once; the oldest go first */

typedef struct st_revocation_t {
    uint64_t gen;
    uint64_t at_ms;
    char *user_id, *device_id; /* device_id NULL: every device */
} revocation_t;

struct st_mx_revocations_t {
    pthread_mutex_t lock;
    _Atomic uint64_t gen;
    unsigned keep_ms;
    revocation_t *list; /* ring of MAX_KEPT */
    size_t head, count;
    /* the database stream, followed from one loop */
    h2o_evloop_t *loop;
    struct st_mx_db_pool_t *db;
    h2o_timeout_t poll_timeout;
    h2o_timeout_entry_t poll_entry;
    mx_db_job_t *job;
    char since[24];
    bool started;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

mx_revocations_t *mx_revocations_new(unsigned keep_ms)
{
    mx_revocations_t *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->list = calloc(MAX_KEPT, sizeof(*r->list))) == NULL) {
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->keep_ms = keep_ms;
    snprintf(r->since, sizeof(r->since), "-1");
    return r;
}

void mx_revocations_free(mx_revocations_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < MAX_KEPT; i++) {
        free(r->list[i].user_id);
        free(r->list[i].device_id);
    }
    free(r->list);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

uint64_t mx_revocations_gen(const mx_revocations_t *r)
{
    return r == NULL ? 0 : __atomic_load_n(&r->gen, __ATOMIC_ACQUIRE);
}

void mx_revocations_add(mx_revocations_t *r, const char *user_id, const char *device_id)
{
    pthread_mutex_lock(&r->lock);
    revocation_t *slot = &r->list[(r->head + r->count) % MAX_KEPT];
    if (r->count == MAX_KEPT) {
        r->head = (r->head + 1) % MAX_KEPT;
        r->count--;
    }
    free(slot->user_id);
    free(slot->device_id);
    slot->user_id = strdup(user_id);
    slot->device_id = device_id != NULL ? strdup(device_id) : NULL;
    slot->at_ms = now_ms();
    slot->gen = __atomic_load_n(&r->gen, __ATOMIC_RELAXED) + 1;
    r->count++;
    /* published after the entry is in place: a reader that sees the new generation finds the entry */
    __atomic_store_n(&r->gen, slot->gen, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->lock);
}

bool mx_revocations_check(mx_revocations_t *r, uint64_t gen, const char *user_id, const char *device_id)
{
    if (r == NULL || __atomic_load_n(&r->gen, __ATOMIC_ACQUIRE) == gen)
        return false;
    bool revoked = false;
    pthread_mutex_lock(&r->lock);
    uint64_t now = now_ms();
    for (size_t i = 0; i < r->count && !revoked; i++) {
        const revocation_t *v = &r->list[(r->head + i) % MAX_KEPT];
        /* older than any cache entry can live: it cannot concern one */
        if (v->gen <= gen || now - v->at_ms > r->keep_ms)
            continue;
        revoked = v->user_id != NULL && strcmp(v->user_id, user_id) == 0 &&
                  (v->device_id == NULL || (device_id != NULL && strcmp(v->device_id, device_id) == 0));
    }
    pthread_mutex_unlock(&r->lock);
    return revoked;
}

/* ---- following the database ------------------------------------------------------------------------------------ */

static void poll_later(mx_revocations_t *r)
{
    h2o_timeout_link(r->loop, &r->poll_timeout, &r->poll_entry);
}

static void on_polled(void *owner, mx_db_status_t status, PGresult **results, size_t n)
{
    mx_revocations_t *r = owner;
    r->job = NULL;
    if (status == MX_DB_OK && n == 1 && mx_db_result_ok(results[0])) {
        int rows = PQntuples(results[0]);
        if (!r->started) { /* where to begin: what came before cannot concern a token cached now */
            snprintf(r->since, sizeof(r->since), "%s", rows ? PQgetvalue(results[0], 0, 0) : "0");
            r->started = true;
        } else {
            for (int i = 0; i < rows; i++) {
                mx_revocations_add(r, PQgetvalue(results[0], i, 1),
                                   PQgetisnull(results[0], i, 2) ? NULL : PQgetvalue(results[0], i, 2));
                snprintf(r->since, sizeof(r->since), "%s", PQgetvalue(results[0], i, 0));
            }
        }
    }
    poll_later(r);
}

static void on_poll(h2o_timeout_entry_t *entry)
{
    mx_revocations_t *r = H2O_STRUCT_FROM_MEMBER(mx_revocations_t, poll_entry, entry);
    char keep[24];
    snprintf(keep, sizeof(keep), "%u", r->keep_ms);
    const char *params[1] = {r->started ? r->since : keep};
    mx_db_stmt_t stmt = {.id = r->started ? MX_STMT_DEVICES_REVOCATIONS_SINCE : MX_STMT_DEVICES_REVOCATIONS_HEAD,
                         .nparams = 1,
                         .values = params};
    if (mx_db_submit(r->db, &stmt, 1, on_polled, r, &r->job) != MX_DB_OK)
        poll_later(r); /* the database is away: the next poll catches up */
}

void mx_revocations_follow(mx_revocations_t *r, h2o_evloop_t *loop, struct st_mx_db_pool_t *db)
{
    r->loop = loop;
    r->db = db;
    h2o_timeout_init(loop, &r->poll_timeout, MX_REVOCATIONS_POLL_MS);
    r->poll_entry.cb = on_poll;
    poll_later(r);
}
