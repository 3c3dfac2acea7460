/* Token resolution per worker: a small cache keyed by the token's SHA-256 (the token itself is never kept), with
 * concurrent look-ups of one token coalesced into a single database query or whoami request. */
#include "mxkeys/auth.h"
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/db.h"
#include "mxkeys/log.h"
#include "mxkeys/revocations.h"
#include "mxkeys/whoami_client.h"

#define CACHE_SLOTS 65536 /* power of two; at most 3/4 used */
#define MAX_PROBE 32
/* Homeserver mode: whoami requests in flight per worker (h2o 2.2.5's socket pool does not enforce its capacity, so
 * this is what bounds the connections to the homeserver), and look-ups waiting for a slot before answering BUSY. */
#define MAX_WHOAMI_INFLIGHT 64
#define MAX_WHOAMI_QUEUED 4096

typedef struct st_entry_t {
    uint8_t hash[32];
    bool used;
    bool ok;          /* positive (user, device) or negative (unknown token) */
    uint64_t expires; /* h2o_now() milliseconds */
    char *user_id;    /* malloc'd, positive entries only */
    char *device_id;
    uint64_t gen; /* revocations generation the entry is known to be clear of */
    bool soft;    /* negative: the homeserver said soft_logout */
} entry_t;

/* One look-up in flight (or queued) for one token, with everybody waiting for it. */
typedef struct st_pending_t {
    h2o_linklist_t link;       /* auth->pending */
    h2o_linklist_t queue_link; /* auth->whoami_queue while waiting for a whoami slot */
    mx_auth_t *auth;
    uint8_t hash[32];
    char hex[65];
    h2o_linklist_t waiters;
    mx_db_job_t *job;
    mx_whoami_req_t *whoami;
    char *token; /* queued look-ups only: the token must be sent later; wiped and freed once sent */
    size_t token_len;
    uint64_t gen; /* revocations generation when the look-up began: its answer may predate a revocation */
} pending_t;

struct st_mx_auth_t {
    h2o_evloop_t *loop;
    const mx_config_t *config;
    struct st_mx_db_pool_t *db;
    mx_revocations_t *revocations;
    mx_whoami_client_t *whoami;
    entry_t *slots;
    size_t used;
    h2o_linklist_t pending;
    h2o_linklist_t whoami_queue;
    unsigned whoami_inflight, whoami_queued;
    bool draining;
    h2o_timeout_t zero_timeout; /* runs the drain once the current I/O callback is over */
    h2o_timeout_entry_t drain_entry;
};

static void on_drain(h2o_timeout_entry_t *entry);

void mx_token_hash_hex(const char *token, size_t len, char out[65])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, len);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

mx_auth_t *mx_auth_new(h2o_evloop_t *loop, const mx_config_t *config, struct st_mx_db_pool_t *db,
                       struct st_mx_upstream_t *homeserver, mx_revocations_t *revocations)
{
    mx_auth_t *auth = calloc(1, sizeof(*auth));
    if (auth == NULL)
        return NULL;
    auth->revocations = revocations;
    auth->loop = loop;
    auth->config = config;
    auth->db = db;
    h2o_linklist_init_anchor(&auth->pending);
    h2o_linklist_init_anchor(&auth->whoami_queue);
    h2o_timeout_init(loop, &auth->zero_timeout, 0);
    auth->drain_entry.cb = on_drain;
    auth->slots = calloc(CACHE_SLOTS, sizeof(entry_t));
    if (auth->slots == NULL)
        goto failed;
    if (config->auth_mode == MX_AUTH_HOMESERVER) {
        if (homeserver == NULL || (auth->whoami = mx_whoami_client_new(homeserver, 5000)) == NULL) {
            mx_error("auth: no client for the homeserver");
            goto failed;
        }
    }
    return auth;
failed:
    h2o_timeout_dispose(loop, &auth->zero_timeout);
    free(auth->slots);
    free(auth);
    return NULL;
}

static void entry_clear(entry_t *e)
{
    free(e->user_id);
    free(e->device_id);
    memset(e, 0, sizeof(*e));
}

/* ---- cache ------------------------------------------------------------------------------------------------------ */

static size_t slot_of(const uint8_t hash[32])
{
    size_t s;
    memcpy(&s, hash, sizeof(s)); /* SHA-256 bytes are already uniformly spread */
    return s & (CACHE_SLOTS - 1);
}

static entry_t *cache_find(mx_auth_t *auth, const uint8_t hash[32])
{
    size_t s = slot_of(hash);
    for (int i = 0; i < MAX_PROBE; i++, s = (s + 1) & (CACHE_SLOTS - 1)) {
        entry_t *e = &auth->slots[s];
        if (!e->used)
            return NULL;
        if (memcmp(e->hash, hash, 32) == 0)
            return e;
    }
    return NULL;
}

/* Rebuilds the table without its expired entries, keeping at most half of it filled: when live entries alone overflow
 * that, the surplus is dropped in slot order, which is as good as random (a cache refills itself). */
static void cache_sweep(mx_auth_t *auth)
{
    uint64_t now = h2o_now(auth->loop);
    entry_t *old = auth->slots;
    entry_t *fresh = calloc(CACHE_SLOTS, sizeof(entry_t));
    if (fresh == NULL)
        return;
    auth->slots = fresh;
    auth->used = 0;
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        entry_t *e = &old[i];
        if (!e->used)
            continue;
        size_t s = slot_of(e->hash);
        int probe = 0;
        while (fresh[s].used && probe < MAX_PROBE) {
            s = (s + 1) & (CACHE_SLOTS - 1);
            probe++;
        }
        if (e->expires > now && probe < MAX_PROBE && auth->used < CACHE_SLOTS / 2) {
            fresh[s] = *e;
            auth->used++;
        } else {
            entry_clear(e);
        }
    }
    free(old);
}

static void cache_put(mx_auth_t *auth, const uint8_t hash[32], bool ok, const char *user_id, const char *device_id,
                      uint64_t gen, bool soft)
{
    unsigned ttl = ok ? auth->config->token_cache_ms : auth->config->token_negative_ms;
    if (ttl == 0)
        return;
    if (auth->used >= CACHE_SLOTS * 3 / 4)
        cache_sweep(auth);
    entry_t *e = cache_find(auth, hash);
    if (e == NULL) {
        size_t s = slot_of(hash);
        int i = 0;
        for (; i < MAX_PROBE && auth->slots[s].used; i++)
            s = (s + 1) & (CACHE_SLOTS - 1);
        if (i == MAX_PROBE)
            return; /* a long cluster: skip caching this one rather than probe further */
        e = &auth->slots[s];
        auth->used++;
    } else {
        free(e->user_id);
        free(e->device_id);
    }
    memcpy(e->hash, hash, 32);
    e->used = true;
    e->ok = ok;
    e->expires = h2o_now(auth->loop) + ttl;
    e->user_id = ok ? strdup(user_id) : NULL;
    e->device_id = ok ? strdup(device_id ? device_id : "") : NULL;
    e->gen = gen;
    e->soft = soft;
}

/* ---- pending look-ups ------------------------------------------------------------------------------------------- */

static void token_forget(pending_t *p)
{
    if (p->token != NULL) {
        sodium_memzero(p->token, p->token_len);
        free(p->token);
        p->token = NULL;
    }
}

/* Answers every waiter and frees the look-up. Waiters are detached first: a callback may resolve again. */
static void pending_finish(pending_t *p, mx_auth_status_t status, const char *user_id, const char *device_id)
{
    /* An answer given before a revocation that happened meanwhile must not be trusted. */
    if (status == MX_AUTH_OK && mx_revocations_check(p->auth->revocations, p->gen, user_id, device_id))
        status = MX_AUTH_UNKNOWN_TOKEN, user_id = device_id = NULL;
    if (status == MX_AUTH_OK || status == MX_AUTH_UNKNOWN_TOKEN || status == MX_AUTH_SOFT_LOGOUT)
        cache_put(p->auth, p->hash, status == MX_AUTH_OK, user_id, device_id, p->gen, status == MX_AUTH_SOFT_LOGOUT);
    h2o_linklist_unlink(&p->link);
    h2o_linklist_t waiters;
    h2o_linklist_init_anchor(&waiters);
    h2o_linklist_insert_list(&waiters, &p->waiters);
    while (!h2o_linklist_is_empty(&waiters)) {
        mx_auth_waiter_t *w = H2O_STRUCT_FROM_MEMBER(mx_auth_waiter_t, _link, waiters.next);
        h2o_linklist_unlink(&w->_link);
        w->cb(w, status, user_id, device_id);
    }
    token_forget(p);
    free(p);
}

static void on_db(void *owner, mx_db_status_t status, PGresult **results, size_t n)
{
    pending_t *p = owner;
    p->job = NULL;
    if (status != MX_DB_OK || n != 1 || !mx_db_result_ok(results[0])) {
        if (status == MX_DB_OK)
            mx_error("auth: token look-up failed: %s",
                     results[0] ? PQresultErrorField(results[0], PG_DIAG_MESSAGE_PRIMARY) : "no result");
        pending_finish(p, MX_AUTH_UNAVAILABLE, NULL, NULL);
        return;
    }
    if (PQntuples(results[0]) == 0)
        pending_finish(p, MX_AUTH_UNKNOWN_TOKEN, NULL, NULL);
    else
        pending_finish(p, MX_AUTH_OK, PQgetvalue(results[0], 0, 0), PQgetvalue(results[0], 0, 1));
}

static void whoami_drain(mx_auth_t *auth);

static void on_whoami(void *data, mx_whoami_status_t status, const char *user_id, const char *device_id)
{
    pending_t *p = data;
    mx_auth_t *auth = p->auth;
    p->whoami = NULL;
    auth->whoami_inflight--;
    switch (status) {
    case MX_WHOAMI_OK:
        pending_finish(p, MX_AUTH_OK, user_id, device_id);
        break;
    case MX_WHOAMI_UNKNOWN_TOKEN:
        pending_finish(p, MX_AUTH_UNKNOWN_TOKEN, NULL, NULL);
        break;
    case MX_WHOAMI_SOFT_LOGOUT:
        pending_finish(p, MX_AUTH_SOFT_LOGOUT, NULL, NULL);
        break;
    default:
        pending_finish(p, MX_AUTH_UNAVAILABLE, NULL, NULL);
        break;
    }
    /* Not now: h2o returns this look-up's connection to the pool only after this callback, and the next look-up
     * should get that connection instead of opening another. */
    if (!h2o_linklist_is_empty(&auth->whoami_queue) && !h2o_timeout_is_linked(&auth->drain_entry))
        h2o_timeout_link(auth->loop, &auth->zero_timeout, &auth->drain_entry);
}

/* Sends a look-up's whoami request. p may be gone when this returns (the answer can come at once). */
static void whoami_send(pending_t *p, const char *token, size_t len)
{
    mx_auth_t *auth = p->auth;
    auth->whoami_inflight++; /* before the call: on_whoami may run inside it */
    if (mx_whoami_lookup(auth->whoami, token, len, on_whoami, p, &p->whoami) != 0) {
        auth->whoami_inflight--;
        pending_finish(p, MX_AUTH_UNAVAILABLE, NULL, NULL);
    }
}

/* Starts queued look-ups while slots are free. Not re-entered: a look-up that fails at once calls on_whoami from
 * inside whoami_send, and the outer loop carries on instead of recursing once per queued token. */
static void whoami_drain(mx_auth_t *auth)
{
    if (auth->draining)
        return;
    auth->draining = true;
    while (auth->whoami_inflight < MAX_WHOAMI_INFLIGHT && !h2o_linklist_is_empty(&auth->whoami_queue)) {
        pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, queue_link, auth->whoami_queue.next);
        h2o_linklist_unlink(&p->queue_link);
        auth->whoami_queued--;
        char *token = p->token;
        size_t len = p->token_len;
        p->token = NULL; /* whoami_send builds its request head from it; wiped right after */
        whoami_send(p, token, len);
        sodium_memzero(token, len);
        free(token);
    }
    auth->draining = false;
}

static void on_drain(h2o_timeout_entry_t *entry)
{
    whoami_drain(H2O_STRUCT_FROM_MEMBER(mx_auth_t, drain_entry, entry));
}

static void start_whoami(pending_t *p, const char *token, size_t len)
{
    mx_auth_t *auth = p->auth;
    if (auth->whoami_inflight < MAX_WHOAMI_INFLIGHT) {
        whoami_send(p, token, len);
        return;
    }
    if (auth->whoami_queued >= MAX_WHOAMI_QUEUED || (p->token = malloc(len)) == NULL) {
        pending_finish(p, MX_AUTH_BUSY, NULL, NULL);
        return;
    }
    memcpy(p->token, token, len);
    p->token_len = len;
    h2o_linklist_insert(&auth->whoami_queue, &p->queue_link);
    auth->whoami_queued++;
}

static void start_lookup(mx_auth_t *auth, const char *token, size_t len, const uint8_t hash[32],
                         mx_auth_waiter_t *waiter)
{
    pending_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        waiter->cb(waiter, MX_AUTH_UNAVAILABLE, NULL, NULL);
        return;
    }
    p->auth = auth;
    p->gen = mx_revocations_gen(auth->revocations);
    memcpy(p->hash, hash, 32);
    sodium_bin2hex(p->hex, sizeof(p->hex), hash, 32);
    h2o_linklist_init_anchor(&p->waiters);
    h2o_linklist_insert(&p->waiters, &waiter->_link);
    h2o_linklist_insert(&auth->pending, &p->link);
    if (auth->whoami != NULL) {
        start_whoami(p, token, len);
        return;
    }
    const char *params[1] = {p->hex};
    mx_db_stmt_t stmt = {.id = MX_STMT_AUTH_LOCAL_TOKEN, .nparams = 1, .values = params};
    switch (mx_db_submit(auth->db, &stmt, 1, on_db, p, &p->job)) {
    case MX_DB_OK:
        return;
    case MX_DB_BUSY:
        pending_finish(p, MX_AUTH_BUSY, NULL, NULL);
        return;
    default:
        pending_finish(p, MX_AUTH_UNAVAILABLE, NULL, NULL);
        return;
    }
}

/* Matrix access tokens are visible ASCII; anything else cannot be a token we issued or could ask about. */
static bool token_chars_ok(const char *token, size_t len)
{
    if (len == 0 || len > 1024)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
            return false;
    return true;
}

void mx_auth_resolve(mx_auth_t *auth, const char *token, size_t len, mx_auth_waiter_t *waiter)
{
    if (!token_chars_ok(token, len)) {
        waiter->cb(waiter, MX_AUTH_UNKNOWN_TOKEN, NULL, NULL);
        return;
    }
    uint8_t hash[32];
    crypto_hash_sha256(hash, (const unsigned char *)token, len);
    entry_t *e = cache_find(auth, hash);
    if (e != NULL && e->expires > h2o_now(auth->loop)) {
        uint64_t gen = mx_revocations_gen(auth->revocations);
        if (e->ok && gen != e->gen) {
            if (mx_revocations_check(auth->revocations, e->gen, e->user_id, e->device_id)) {
                free(e->user_id);
                free(e->device_id);
                e->user_id = e->device_id = NULL;
                e->ok = false; /* revoked: answered as unknown until the entry expires */
            } else {
                e->gen = gen;
            }
        }
        if (e->ok)
            waiter->cb(waiter, MX_AUTH_OK, e->user_id, e->device_id);
        else
            waiter->cb(waiter, e->soft ? MX_AUTH_SOFT_LOGOUT : MX_AUTH_UNKNOWN_TOKEN, NULL, NULL);
        return;
    }
    for (h2o_linklist_t *l = auth->pending.next; l != &auth->pending; l = l->next) {
        pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, link, l);
        if (memcmp(p->hash, hash, 32) == 0) {
            h2o_linklist_insert(&p->waiters, &waiter->_link);
            return;
        }
    }
    start_lookup(auth, token, len, hash, waiter);
}

void mx_auth_cancel(mx_auth_waiter_t *waiter)
{
    /* The look-up itself goes on: its answer still fills the cache for the next request. */
    if (h2o_linklist_is_linked(&waiter->_link))
        h2o_linklist_unlink(&waiter->_link);
}

void mx_auth_free(mx_auth_t *auth)
{
    if (auth == NULL)
        return;
    /* Worker shutdown: the waiters' requests are gone with the loop, so nobody is called back. */
    while (!h2o_linklist_is_empty(&auth->pending)) {
        pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, link, auth->pending.next);
        h2o_linklist_unlink(&p->link);
        if (p->job != NULL)
            mx_db_cancel(p->job);
        if (p->whoami != NULL)
            mx_whoami_cancel(p->whoami);
        token_forget(p);
        free(p);
    }
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (auth->slots[i].used)
            entry_clear(&auth->slots[i]);
    free(auth->slots);
    if (h2o_timeout_is_linked(&auth->drain_entry))
        h2o_timeout_unlink(&auth->drain_entry);
    h2o_timeout_dispose(auth->loop, &auth->zero_timeout);
    if (auth->whoami != NULL)
        mx_whoami_client_free(auth->whoami);
    free(auth);
}
