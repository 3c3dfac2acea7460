/* POST /_matrix/federation/v1/user/keys/claim: another server claims one-time keys of our users for its users' Olm
 * sessions. The origin is already authenticated (X-Matrix, MX_ROUTE_SERVER); the claim itself is /keys/claim's:
 * the same validation and the same mx_keys_claim, so never-twice, first-in-first-out and fallback-last hold across
 * local and federated claimers alike. Only our own users may be asked for, and each origin may take at most
 * --federation-claims-per-minute keys: a remote server must not be able to drain a device's keys.
 *
 * The limit is per process (one table under a mutex, shared by the workers: federation claims are rare, and a
 * per-worker limit would multiply by the number of workers). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "mxkeys/api.h"
#include "mxkeys/keys_remote.h"
#include "mxkeys/keys_validate.h"
#include "mxkeys/server_keys.h"

#define LIMIT_TABLE 1024

typedef struct st_bucket_t {
    char origin[256];
    double tokens;
    uint64_t last_ms;
} bucket_t;

static struct {
    pthread_mutex_t lock;
    bucket_t buckets[LIMIT_TABLE];
    size_t n;
} limits = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct {
    unsigned long long ok, rate_limited, keys_requested;
} counters;

#define BUMP(f, n) __atomic_fetch_add(&(f), (n), __ATOMIC_RELAXED)
#define LOAD(f) __atomic_load_n(&(f), __ATOMIC_RELAXED)

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Token bucket per origin: `per_minute` keys a minute, a minute's worth at once. Returns 0 when `n` keys may be
 * claimed now (and takes them), else the milliseconds until they could be. */
static unsigned take(const char *origin, unsigned per_minute, size_t n)
{
    double cap = per_minute, rate = per_minute / 60000.0;
    uint64_t now = mono_ms();
    unsigned wait = 0;
    pthread_mutex_lock(&limits.lock);
    bucket_t *b = NULL;
    for (size_t i = 0; i < limits.n && b == NULL; i++)
        if (strcmp(limits.buckets[i].origin, origin) == 0)
            b = &limits.buckets[i];
    if (b == NULL) {
        if (limits.n == LIMIT_TABLE) {
            /* a full bucket is the same as none: drop those; failing that, the one idle longest */
            size_t victim = 0;
            for (size_t i = 0; i < limits.n; i++) {
                bucket_t *c = &limits.buckets[i];
                if (c->tokens + (double)(now - c->last_ms) * rate >= cap) {
                    victim = i;
                    break;
                }
                if (c->last_ms < limits.buckets[victim].last_ms)
                    victim = i;
            }
            limits.buckets[victim] = limits.buckets[--limits.n];
        }
        b = &limits.buckets[limits.n++];
        snprintf(b->origin, sizeof(b->origin), "%s", origin);
        b->tokens = cap;
        b->last_ms = now;
    }
    b->tokens += (double)(now - b->last_ms) * rate;
    if (b->tokens > cap)
        b->tokens = cap;
    b->last_ms = now;
    if ((double)n <= b->tokens)
        b->tokens -= (double)n;
    else if ((double)n > cap)
        wait = 60000; /* never fits: the request is larger than a minute's allowance */
    else
        wait = (unsigned)(((double)n - b->tokens) / rate) + 1;
    pthread_mutex_unlock(&limits.lock);
    return wait;
}

static void on_claimed(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_buf_t *buf = mx_call_buf(call);
    mx_buf_puts(buf, "{\"one_time_keys\":");
    mx_buf_append(buf, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    mx_buf_putc(buf, '}');
    mx_call_respond_buf(call, 200, buf);
}

/* Counts each user's devices; users of other servers are refused (the spec: requested users must be local). */
static long check_user(mx_call_t *call, const char *user, const json_t *devices)
{
    if (strcmp(mx_user_id_server(user), call->config->server_name) != 0) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "%s is not a user of %s: claim their keys from their own server",
                      user, call->config->server_name);
        return -1;
    }
    return mx_keys_claim_check_devices(call, user, devices);
}

void mx_api_federation_claim(mx_call_t *call)
{
    mx_buf_t *failures;
    const char *wanted =
        mx_keys_split_request(call, "one_time_keys", "user id -> device id -> algorithm", check_user, &failures, NULL);
    if (wanted == NULL)
        return;
    size_t keys = 0;
    const char *user;
    json_t *devices;
    json_object_foreach(json_object_get(call->body, "one_time_keys"), user, devices) keys += json_object_size(devices);
    unsigned per_minute = call->config->federation_claims_per_minute;
    unsigned wait = per_minute > 0 && keys > 0 ? take(call->origin, per_minute, keys) : 0;
    if (wait > 0) {
        BUMP(counters.rate_limited, 1);
        char extra[48];
        snprintf(extra, sizeof(extra), "\"retry_after_ms\":%u", wait);
        mx_call_error_extra(call, MX_ERR_RATE_LIMITED, extra,
                            "%s may claim %u one-time keys a minute; this request asks for %zu", call->origin,
                            per_minute, keys);
        return;
    }
    BUMP(counters.ok, 1);
    BUMP(counters.keys_requested, keys);
    const char *params[1] = {wanted};
    mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_CLAIM, .nparams = 1, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_claimed);
}

void mx_api_federation_claim_unstable(mx_call_t *call)
{
    /* Newer servers try this (MSC3983: several keys per device, lists of algorithms) and fall back to v1 on a 404
     * M_UNRECOGNIZED; answering here rather than leaving it to the homeserver keeps its stale keys out of reach. */
    mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH,
                  "the unstable claim with lists of algorithms is not served here: use "
                  "/_matrix/federation/v1/user/keys/claim");
}

void mx_api_federation_metrics(const mx_server_t *server, mx_buf_t *out)
{
    mx_server_keys_stats_t sum = {0};
    bool enabled = false;
    for (unsigned w = 0; w < server->nworkers; w++) {
        const mx_server_keys_t *sk = __atomic_load_n(&server->workers[w].server_keys, __ATOMIC_ACQUIRE);
        if (sk == NULL)
            continue;
        enabled = true;
        mx_server_keys_stats_add(sk, &sum);
    }
    if (!enabled)
        return;
    mx_buf_printf(out,
                  "# HELP mxkeys_federation_auth_total Server-server requests by authentication outcome.\n"
                  "# TYPE mxkeys_federation_auth_total counter\n"
                  "mxkeys_federation_auth_total{outcome=\"ok\"} %llu\n"
                  "mxkeys_federation_auth_total{outcome=\"refused\"} %llu\n"
                  "mxkeys_federation_auth_total{outcome=\"unavailable\"} %llu\n"
                  "# HELP mxkeys_federation_claims_total Authenticated federation claims by outcome.\n"
                  "# TYPE mxkeys_federation_claims_total counter\n"
                  "mxkeys_federation_claims_total{outcome=\"ok\"} %llu\n"
                  "mxkeys_federation_claims_total{outcome=\"rate_limited\"} %llu\n"
                  "# HELP mxkeys_federation_claimed_keys_requested_total Device entries in federation claims let "
                  "through the per-origin limit.\n"
                  "# TYPE mxkeys_federation_claimed_keys_requested_total counter\n"
                  "mxkeys_federation_claimed_keys_requested_total %llu\n"
                  "# HELP mxkeys_server_key_lookups_total Other servers' key look-ups by outcome.\n"
                  "# TYPE mxkeys_server_key_lookups_total counter\n"
                  "mxkeys_server_key_lookups_total{outcome=\"cache_hit\"} %llu\n"
                  "mxkeys_server_key_lookups_total{outcome=\"refused\"} %llu\n"
                  "mxkeys_server_key_lookups_total{outcome=\"notary_failure\"} %llu\n"
                  "# HELP mxkeys_notary_requests_total Requests to the homeserver's key APIs (its own keys and key "
                  "queries).\n"
                  "# TYPE mxkeys_notary_requests_total counter\n"
                  "mxkeys_notary_requests_total %llu\n",
                  sum.auth_ok, sum.auth_refused, sum.auth_unavailable, LOAD(counters.ok), LOAD(counters.rate_limited),
                  LOAD(counters.keys_requested), sum.cache_hits, sum.refused, sum.notary_failures, sum.notary_queries);
}
