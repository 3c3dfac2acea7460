/* Per-worker cache of other servers' signing keys, filled through the homeserver as notary.
 *
 * A look-up of (server, key id) is answered from the cache, joins a look-up of the same key in flight, or starts
 * one: first the notary's own keys when they are not known (or expired), then the key query. The cache is a small
 * array scanned linearly: federation claims are rare next to client traffic, and a scan of a few hundred entries costs
 * microseconds. Full, it drops expired entries first, then the one expiring soonest. */
#include "mxkeys/server_keys.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mxkeys/buf.h"
#include "mxkeys/log.h"
#include "mxkeys/server_key_json.h"

#define CACHE_MAX 512
#define NEGATIVE_MS 5000      /* a refused key (unknown, old, badly signed) is asked again after this */
#define MAX_PENDING 256       /* distinct keys being looked up at once per worker */
#define MAX_ANSWER (1u << 20) /* a key answer is a few hundred bytes; anything near this is not one */
#define MAX_NOTARY_KEYS 8
#define WHY_LEN 640

typedef struct st_entry_t {
    char server[MX_SERVER_NAME_MAX + 1];
    char key_id[MX_XMATRIX_KEY_ID_MAX + 1];
    bool ok;
    uint8_t key[MX_ED25519_PUBLIC_KEY_BYTES];
    int64_t expires_ms; /* wall clock: valid_until_ts is one */
    char why[WHY_LEN];  /* refusals */
} entry_t;

/* One HTTP exchange with the notary, its answer buffered. */
typedef struct st_fetch_t {
    mx_upstream_req_t *req;
    int status;
    mx_buf_t body;
    void (*done)(struct st_fetch_t *f, const char *error); /* error NULL: status and body are the answer */
} fetch_t;

typedef struct st_pending_t {
    h2o_linklist_t link; /* sk->pending */
    mx_server_keys_t *sk;
    char server[MX_SERVER_NAME_MAX + 1];
    char key_id[MX_XMATRIX_KEY_ID_MAX + 1];
    h2o_linklist_t waiters;
    bool awaiting_notary_keys; /* queued behind the fetch of the notary's own keys */
    fetch_t fetch;
} pending_t;

struct st_mx_server_keys_t {
    h2o_evloop_t *loop;
    mx_upstream_t *notary;
    char notary_name[MX_SERVER_NAME_MAX + 1];
    unsigned timeout_ms;
    entry_t *cache;
    size_t ncache;
    h2o_linklist_t pending;
    size_t npending;
    mx_server_key_t notary_keys[MAX_NOTARY_KEYS];
    size_t nnotary_keys;
    int64_t notary_keys_until;
    bool fetching_notary_keys;
    fetch_t notary_fetch;
    mx_server_keys_stats_t stats;
};

#define BUMP(f) __atomic_store_n(&(f), (f) + 1, __ATOMIC_RELAXED)
#define LOAD(f) __atomic_load_n(&(f), __ATOMIC_RELAXED)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

mx_server_keys_t *mx_server_keys_new(h2o_evloop_t *loop, mx_upstream_t *notary, const char *notary_name,
                                     unsigned timeout_ms)
{
    mx_server_keys_t *sk = calloc(1, sizeof(*sk));
    if (sk == NULL || (sk->cache = calloc(CACHE_MAX, sizeof(entry_t))) == NULL) {
        free(sk);
        return NULL;
    }
    sk->loop = loop;
    sk->notary = notary;
    snprintf(sk->notary_name, sizeof(sk->notary_name), "%s", notary_name);
    sk->timeout_ms = timeout_ms;
    h2o_linklist_init_anchor(&sk->pending);
    return sk;
}

void mx_server_keys_stats_add(const mx_server_keys_t *sk, mx_server_keys_stats_t *sum)
{
    sum->cache_hits += LOAD(sk->stats.cache_hits);
    sum->notary_queries += LOAD(sk->stats.notary_queries);
    sum->notary_failures += LOAD(sk->stats.notary_failures);
    sum->refused += LOAD(sk->stats.refused);
    sum->auth_ok += LOAD(sk->stats.auth_ok);
    sum->auth_refused += LOAD(sk->stats.auth_refused);
    sum->auth_unavailable += LOAD(sk->stats.auth_unavailable);
}

void mx_server_keys_count_auth(mx_server_keys_t *sk, mx_server_key_status_t outcome)
{
    if (outcome == MX_SERVER_KEY_OK)
        BUMP(sk->stats.auth_ok);
    else if (outcome == MX_SERVER_KEY_REFUSED)
        BUMP(sk->stats.auth_refused);
    else
        BUMP(sk->stats.auth_unavailable);
}

/* ---- cache ------------------------------------------------------------------------------------------------------ */

static entry_t *cache_find(mx_server_keys_t *sk, const char *server, const char *key_id)
{
    for (size_t i = 0; i < sk->ncache; i++)
        if (strcmp(sk->cache[i].key_id, key_id) == 0 && strcmp(sk->cache[i].server, server) == 0)
            return &sk->cache[i];
    return NULL;
}

static entry_t *cache_slot(mx_server_keys_t *sk, const char *server, const char *key_id)
{
    entry_t *e = cache_find(sk, server, key_id);
    if (e != NULL)
        return e;
    if (sk->ncache == CACHE_MAX) {
        int64_t now = now_ms();
        size_t kept = 0;
        for (size_t i = 0; i < sk->ncache; i++)
            if (sk->cache[i].expires_ms > now)
                sk->cache[kept++] = sk->cache[i];
        sk->ncache = kept;
        if (sk->ncache == CACHE_MAX) {
            size_t soonest = 0;
            for (size_t i = 1; i < sk->ncache; i++)
                if (sk->cache[i].expires_ms < sk->cache[soonest].expires_ms)
                    soonest = i;
            sk->cache[soonest] = sk->cache[--sk->ncache];
        }
    }
    e = &sk->cache[sk->ncache++];
    memset(e, 0, sizeof(*e));
    snprintf(e->server, sizeof(e->server), "%s", server);
    snprintf(e->key_id, sizeof(e->key_id), "%s", key_id);
    return e;
}

static void cache_key(mx_server_keys_t *sk, const char *server, const mx_server_key_t *key, int64_t until)
{
    entry_t *e = cache_slot(sk, server, key->key_id);
    if (e->ok && e->expires_ms > until && memcmp(e->key, key->public_key, sizeof(e->key)) == 0)
        return; /* an older copy of the same key said it was good for longer */
    e->ok = true;
    memcpy(e->key, key->public_key, sizeof(e->key));
    e->expires_ms = until;
    e->why[0] = '\0';
}

static void cache_refusal(mx_server_keys_t *sk, const char *server, const char *key_id, const char *why)
{
    entry_t *e = cache_slot(sk, server, key_id);
    e->ok = false;
    e->expires_ms = now_ms() + NEGATIVE_MS;
    snprintf(e->why, sizeof(e->why), "%s", why);
}

/* ---- fetching -----------------------------------------------------------------------------------------------------
 */

static int on_fetch_head(void *data, int status, const h2o_header_t *headers, size_t n)
{
    (void)headers, (void)n;
    ((fetch_t *)data)->status = status;
    return 0;
}

static int on_fetch_body(void *data, const char *bytes, size_t len, bool final)
{
    fetch_t *f = data;
    if (f->body.len + len > MAX_ANSWER) {
        f->req = NULL; /* returning -1 ends the request */
        f->done(f, "the answer is too large");
        return -1;
    }
    mx_buf_append(&f->body, bytes, len);
    if (final) {
        f->req = NULL;
        f->done(f, NULL);
    }
    return 0;
}

static void on_fetch_error(void *data, mx_upstream_error_t kind, const char *why)
{
    fetch_t *f = data;
    f->req = NULL;
    (void)why;
    f->done(f, kind == MX_UPSTREAM_TIMEOUT ? "the homeserver did not answer in time"
                                           : "the homeserver's federation listener cannot be reached");
}

static const mx_upstream_handlers_t fetch_handlers = {on_fetch_head, on_fetch_body, on_fetch_error};

/* Starts a request; f->done runs once (maybe before this returns). */
static void fetch_start(mx_server_keys_t *sk, fetch_t *f, const char *method, const char *target, const char *body)
{
    mx_upstream_spec_t spec = {.method = method, .target = target, .target_len = strlen(target)};
    if (body != NULL) {
        spec.body = body;
        spec.body_len = strlen(body);
        spec.headers[spec.nheaders++] = (mx_upstream_header_t){"Content-Type", "application/json", 12, 16};
    }
    spec.deadline_ms = sk->timeout_ms;
    spec.retry_safe = true; /* key queries change nothing */
    f->status = 0;
    mx_buf_reset(&f->body);
    BUMP(sk->stats.notary_queries);
    if (sk->notary == NULL || mx_upstream_start(sk->notary, &spec, &fetch_handlers, f, &f->req) != 0) {
        f->req = NULL;
        f->done(f, "cannot send a request to the homeserver");
    }
}

static void fetch_cancel(fetch_t *f)
{
    if (f->req != NULL)
        mx_upstream_cancel(f->req);
    f->req = NULL;
    mx_buf_free(&f->body);
}

/* ---- look-ups ------------------------------------------------------------------------------------------------------
 */

static void pending_finish(pending_t *p, mx_server_key_status_t status, const uint8_t *key, const char *why)
{
    mx_server_keys_t *sk = p->sk;
    if (status == MX_SERVER_KEY_REFUSED) {
        BUMP(sk->stats.refused);
        cache_refusal(sk, p->server, p->key_id, why);
    } else if (status == MX_SERVER_KEY_UNAVAILABLE) {
        BUMP(sk->stats.notary_failures);
    }
    h2o_linklist_unlink(&p->link);
    sk->npending--;
    h2o_linklist_t waiters;
    h2o_linklist_init_anchor(&waiters);
    h2o_linklist_insert_list(&waiters, &p->waiters);
    uint8_t copy[MX_ED25519_PUBLIC_KEY_BYTES];
    if (key != NULL)
        memcpy(copy, key, sizeof(copy));
    char why_copy[WHY_LEN];
    snprintf(why_copy, sizeof(why_copy), "%s", why ? why : "");
    mx_buf_free(&p->fetch.body);
    free(p);
    /* waiters are detached first and the look-up is gone: a callback may start another look-up */
    while (!h2o_linklist_is_empty(&waiters)) {
        mx_server_key_waiter_t *w = H2O_STRUCT_FROM_MEMBER(mx_server_key_waiter_t, _link, waiters.next);
        h2o_linklist_unlink(&w->_link);
        w->cb(w, status, key ? copy : NULL, why_copy);
    }
}

/* The notary's answer about p's server: every entry that checks out fills the cache. */
static void on_query_done(fetch_t *f, const char *error)
{
    pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, fetch, f);
    mx_server_keys_t *sk = p->sk;
    char why[WHY_LEN];
    if (error != NULL || f->status != 200) {
        if (error == NULL)
            snprintf(why, sizeof(why), "the homeserver answered the key query with status %d", f->status);
        else
            snprintf(why, sizeof(why), "asking the homeserver for %s's keys: %s", p->server, error);
        pending_finish(p, MX_SERVER_KEY_UNAVAILABLE, NULL, why);
        return;
    }
    json_t *answer = json_loadb(f->body.data ? f->body.data : "", f->body.len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *list = json_object_get(answer, "server_keys");
    if (!json_is_array(list)) {
        json_decref(answer);
        pending_finish(p, MX_SERVER_KEY_UNAVAILABLE, NULL, "the homeserver's key query answer has no server_keys list");
        return;
    }
    int64_t now = now_ms();
    mx_server_key_find_t best = MX_SERVER_KEY_ABSENT;
    uint8_t key[MX_ED25519_PUBLIC_KEY_BYTES];
    char check_why[WHY_LEN] = "";
    bool notary_sig_failed = false;
    size_t i;
    json_t *obj;
    json_array_foreach(list, i, obj)
    {
        const json_t *name = json_object_get(obj, "server_name");
        if (!json_is_string(name) || strcmp(json_string_value(name), p->server) != 0)
            continue;
        int64_t until;
        char w[WHY_LEN];
        if (mx_server_keys_check(obj, p->server, sk->notary_name, sk->notary_keys, sk->nnotary_keys, now, &until, w,
                                 sizeof(w)) != NULL) {
            snprintf(check_why, sizeof(check_why), "%s", w);
            notary_sig_failed |= strstr(w, "the notary") == w;
            continue;
        }
        mx_server_key_t keys[16];
        size_t n = mx_server_keys_list(obj, keys, 16);
        for (size_t k = 0; k < n; k++)
            cache_key(sk, p->server, &keys[k], until);
        /* a key the server has since retired stops authenticating here at once, not when its old copy expires */
        const char *old_id;
        json_t *unused;
        json_object_foreach(json_object_get(obj, "old_verify_keys"), old_id, unused)
        {
            entry_t *e = cache_find(sk, p->server, old_id);
            if (e != NULL && e->ok)
                cache_refusal(sk, p->server, old_id, "a key the server has retired (now in its old_verify_keys)");
        }
        uint8_t found[MX_ED25519_PUBLIC_KEY_BYTES];
        mx_server_key_find_t r = mx_server_keys_find(obj, p->key_id, found);
        if (r == MX_SERVER_KEY_CURRENT) {
            memcpy(key, found, sizeof(key));
            best = r;
        } else if (r == MX_SERVER_KEY_OLD && best == MX_SERVER_KEY_ABSENT) {
            best = r;
        }
    }
    json_decref(answer);
    /* The notary may have rotated its own key: fetch its keys again before the next look-up. */
    if (notary_sig_failed)
        sk->notary_keys_until = 0;
    if (best == MX_SERVER_KEY_CURRENT) {
        pending_finish(p, MX_SERVER_KEY_OK, key, "");
        return;
    }
    if (best == MX_SERVER_KEY_OLD)
        snprintf(why, sizeof(why), "%s of %s is one of its old_verify_keys; old keys never authenticate requests",
                 p->key_id, p->server);
    else if (check_why[0] != '\0')
        snprintf(why, sizeof(why), "%s", check_why);
    else
        snprintf(why, sizeof(why), "the homeserver (notary) knows no key %s of %s", p->key_id, p->server);
    pending_finish(p, MX_SERVER_KEY_REFUSED, NULL, why);
}

static void query_start(pending_t *p)
{
    json_t *criteria = json_pack("{s:{s:{s:{s:I}}}}", "server_keys", p->server, p->key_id, "minimum_valid_until_ts",
                                 (json_int_t)now_ms());
    char *body = criteria ? json_dumps(criteria, JSON_COMPACT) : NULL;
    json_decref(criteria);
    if (body == NULL) {
        pending_finish(p, MX_SERVER_KEY_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    p->fetch.done = on_query_done;
    fetch_start(p->sk, &p->fetch, "POST", "/_matrix/key/v2/query", body);
    free(body);
}

/* The notary's own keys: its key server answer, self-signed, for our own server name. */
static void on_notary_keys(fetch_t *f, const char *error)
{
    mx_server_keys_t *sk = H2O_STRUCT_FROM_MEMBER(mx_server_keys_t, notary_fetch, f);
    sk->fetching_notary_keys = false;
    char why[WHY_LEN] = "";
    if (error != NULL) {
        snprintf(why, sizeof(why), "asking the homeserver for its own signing keys: %s", error);
    } else if (f->status != 200) {
        snprintf(why, sizeof(why), "the homeserver answered GET /_matrix/key/v2/server with status %d", f->status);
    } else {
        json_t *obj = json_loadb(f->body.data ? f->body.data : "", f->body.len, JSON_REJECT_DUPLICATES, NULL);
        int64_t until;
        char w[WHY_LEN - 64];
        if (mx_server_keys_check(obj, sk->notary_name, NULL, NULL, 0, now_ms(), &until, w, sizeof(w)) != NULL) {
            snprintf(why, sizeof(why), "the homeserver's own signing keys: %s", w);
        } else {
            sk->nnotary_keys = mx_server_keys_list(obj, sk->notary_keys, MAX_NOTARY_KEYS);
            sk->notary_keys_until = until;
        }
        json_decref(obj);
    }
    mx_buf_free(&f->body);
    if (why[0] != '\0')
        mx_warn("federation: %s", why);
    /* Every look-up waiting for these keys goes on (or fails). Collected first: finishing one may start others. */
    h2o_linklist_t waiting;
    h2o_linklist_init_anchor(&waiting);
    for (h2o_linklist_t *l = sk->pending.next; l != &sk->pending;) {
        pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, link, l);
        l = l->next;
        if (p->awaiting_notary_keys) {
            h2o_linklist_unlink(&p->link);
            h2o_linklist_insert(&waiting, &p->link);
        }
    }
    while (!h2o_linklist_is_empty(&waiting)) {
        pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, link, waiting.next);
        h2o_linklist_unlink(&p->link);
        h2o_linklist_insert(&sk->pending, &p->link);
        p->awaiting_notary_keys = false;
        if (why[0] != '\0')
            pending_finish(p, MX_SERVER_KEY_UNAVAILABLE, NULL, why);
        else
            query_start(p);
    }
}

void mx_server_keys_get(mx_server_keys_t *sk, const char *server_name, const char *key_id,
                        mx_server_key_waiter_t *waiter)
{
    waiter->_link = (h2o_linklist_t){NULL, NULL};
    entry_t *e = cache_find(sk, server_name, key_id);
    if (e != NULL && e->expires_ms > now_ms()) {
        BUMP(sk->stats.cache_hits);
        if (e->ok)
            waiter->cb(waiter, MX_SERVER_KEY_OK, e->key, NULL);
        else
            waiter->cb(waiter, MX_SERVER_KEY_REFUSED, NULL, e->why);
        return;
    }
    for (h2o_linklist_t *l = sk->pending.next; l != &sk->pending; l = l->next) {
        pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, link, l);
        if (strcmp(p->key_id, key_id) == 0 && strcmp(p->server, server_name) == 0) {
            h2o_linklist_insert(&p->waiters, &waiter->_link);
            return;
        }
    }
    pending_t *p = sk->npending < MAX_PENDING ? calloc(1, sizeof(*p)) : NULL;
    if (p == NULL) {
        waiter->cb(waiter, MX_SERVER_KEY_UNAVAILABLE, NULL, "too many server key look-ups in flight; retry shortly");
        return;
    }
    p->sk = sk;
    snprintf(p->server, sizeof(p->server), "%s", server_name);
    snprintf(p->key_id, sizeof(p->key_id), "%s", key_id);
    h2o_linklist_init_anchor(&p->waiters);
    h2o_linklist_insert(&p->waiters, &waiter->_link);
    h2o_linklist_insert(&sk->pending, &p->link);
    sk->npending++;
    if (sk->nnotary_keys > 0 && sk->notary_keys_until > now_ms()) {
        query_start(p);
        return;
    }
    p->awaiting_notary_keys = true;
    if (!sk->fetching_notary_keys) {
        sk->fetching_notary_keys = true;
        sk->notary_fetch.done = on_notary_keys;
        fetch_start(sk, &sk->notary_fetch, "GET", "/_matrix/key/v2/server", NULL);
    }
}

void mx_server_keys_cancel(mx_server_key_waiter_t *waiter)
{
    if (h2o_linklist_is_linked(&waiter->_link))
        h2o_linklist_unlink(&waiter->_link);
}

void mx_server_keys_free(mx_server_keys_t *sk)
{
    if (sk == NULL)
        return;
    while (!h2o_linklist_is_empty(&sk->pending)) {
        pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, link, sk->pending.next);
        h2o_linklist_unlink(&p->link);
        fetch_cancel(&p->fetch);
        free(p);
    }
    fetch_cancel(&sk->notary_fetch);
    free(sk->cache);
    free(sk);
}
