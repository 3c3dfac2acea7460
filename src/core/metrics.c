/* Prometheus text exposition. Counters are per worker and only ever written by their worker thread; the scrape sums
 * them with relaxed atomic loads, so the request path takes no lock. */
#include "mxkeys/metrics.h"
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/call.h"
#include "mxkeys/db.h"
#include "mxkeys/offload.h"
#include "mxkeys/upstream.h"

static const int status_slots[] = {200, 204, 400, 401, 403, 404, 405, 413, 429, 500, 502, 503, 504};
#define NSTATUS (sizeof(status_slots) / sizeof(status_slots[0]) + 1) /* last: any other status */

static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
#define NBUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))

typedef struct st_route_counters_t {
    uint64_t status[NSTATUS];
    uint64_t bucket[NBUCKETS + 1]; /* last: +Inf only */
    uint64_t sum_ns;
    uint64_t count;
} route_counters_t;

struct st_mx_metrics_t {
    size_t nroutes; /* slots: one per route, then one for unrouted requests */
    route_counters_t r[];
};

mx_metrics_t *mx_metrics_new(size_t nroutes)
{
    mx_metrics_t *m = calloc(1, sizeof(*m) + sizeof(route_counters_t) * (nroutes + 1));
    if (m != NULL)
        m->nroutes = nroutes;
    return m;
}

void mx_metrics_free(mx_metrics_t *m)
{
    free(m);
}

#define BUMP(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define LOAD(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

void mx_metrics_observe(mx_metrics_t *m, size_t route, int status, uint64_t duration_ns)
{
    if (m == NULL)
        return;
    route_counters_t *rc = &m->r[route < m->nroutes ? route : m->nroutes];
    size_t s = 0;
    while (s < NSTATUS - 1 && status_slots[s] != status)
        s++;
    BUMP(rc->status[s], 1);
    double secs = (double)duration_ns / 1e9;
    size_t b = 0;
    while (b < NBUCKETS && secs > bucket_le[b])
        b++;
    BUMP(rc->bucket[b], 1);
    BUMP(rc->sum_ns, duration_ns);
    BUMP(rc->count, 1);
}

static void route_labels(size_t slot, size_t nroutes, mx_buf_t *out)
{
    if (slot == nroutes) {
        mx_buf_puts(out, "method=\"-\",route=\"unrouted\"");
        return;
    }
    const char *name = mx_routes[slot].name, *sp = strchr(name, ' ');
    mx_buf_printf(out, "method=\"%.*s\",route=\"%s\"", (int)(sp - name), name, sp + 1);
}

void mx_metrics_render(const mx_server_t *server, mx_buf_t *out)
{
    size_t nroutes = mx_nroutes;
    route_counters_t total;
    mx_buf_puts(out, "# HELP mxkeys_http_requests_total Answered HTTP requests by route and status.\n"
                     "# TYPE mxkeys_http_requests_total counter\n");
    mx_buf_t hist = MX_BUF_INIT;
    mx_buf_puts(&hist, "# HELP mxkeys_http_request_duration_seconds Time from request to response, by route.\n"
                       "# TYPE mxkeys_http_request_duration_seconds histogram\n");
    for (size_t slot = 0; slot <= nroutes; slot++) {
        memset(&total, 0, sizeof(total));
        for (unsigned w = 0; w < server->nworkers; w++) {
            const mx_metrics_t *m = server->workers[w].metrics;
            if (m == NULL)
                continue;
            route_counters_t *rc = (route_counters_t *)&m->r[slot];
            for (size_t s = 0; s < NSTATUS; s++)
                total.status[s] += LOAD(rc->status[s]);
            for (size_t b = 0; b <= NBUCKETS; b++)
                total.bucket[b] += LOAD(rc->bucket[b]);
            total.sum_ns += LOAD(rc->sum_ns);
            total.count += LOAD(rc->count);
        }
        if (total.count == 0)
            continue;
        for (size_t s = 0; s < NSTATUS; s++) {
            if (total.status[s] == 0)
                continue;
            mx_buf_puts(out, "mxkeys_http_requests_total{");
            route_labels(slot, nroutes, out);
            if (s < NSTATUS - 1)
                mx_buf_printf(out, ",status=\"%d\"} %llu\n", status_slots[s], (unsigned long long)total.status[s]);
            else
                mx_buf_printf(out, ",status=\"other\"} %llu\n", (unsigned long long)total.status[s]);
        }
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= NBUCKETS; b++) {
            cumulative += total.bucket[b];
            mx_buf_puts(&hist, "mxkeys_http_request_duration_seconds_bucket{");
            route_labels(slot, nroutes, &hist);
            if (b < NBUCKETS)
                mx_buf_printf(&hist, ",le=\"%g\"} %llu\n", bucket_le[b], (unsigned long long)cumulative);
            else
                mx_buf_printf(&hist, ",le=\"+Inf\"} %llu\n", (unsigned long long)cumulative);
        }
        mx_buf_puts(&hist, "mxkeys_http_request_duration_seconds_sum{");
        route_labels(slot, nroutes, &hist);
        mx_buf_printf(&hist, "} %.6f\n", (double)total.sum_ns / 1e9);
        mx_buf_puts(&hist, "mxkeys_http_request_duration_seconds_count{");
        route_labels(slot, nroutes, &hist);
        mx_buf_printf(&hist, "} %llu\n", (unsigned long long)total.count);
    }
    mx_buf_append(out, hist.data, hist.len);
    mx_buf_free(&hist);

    mx_db_stats_t sum = {0};
    for (unsigned w = 0; w < server->nworkers; w++) {
        const mx_db_pool_t *pool = __atomic_load_n(&server->workers[w].db, __ATOMIC_ACQUIRE);
        if (pool != NULL)
            mx_db_pool_stats_add(pool, &sum);
    }
    mx_buf_printf(out,
                  "# HELP mxkeys_db_connections Database connections by state, all workers.\n"
                  "# TYPE mxkeys_db_connections gauge\n"
                  "mxkeys_db_connections{state=\"ready\"} %u\n"
                  "mxkeys_db_connections{state=\"connecting\"} %u\n"
                  "mxkeys_db_connections{state=\"down\"} %u\n"
                  "# HELP mxkeys_db_inflight Database jobs sent and not yet answered, all workers.\n"
                  "# TYPE mxkeys_db_inflight gauge\n"
                  "mxkeys_db_inflight %u\n"
                  "# HELP mxkeys_db_queue_limit In-flight jobs allowed before answering 503, all workers.\n"
                  "# TYPE mxkeys_db_queue_limit gauge\n"
                  "mxkeys_db_queue_limit %u\n"
                  "# HELP mxkeys_db_jobs_total Database jobs by outcome.\n"
                  "# TYPE mxkeys_db_jobs_total counter\n"
                  "mxkeys_db_jobs_total{outcome=\"completed\"} %llu\n"
                  "mxkeys_db_jobs_total{outcome=\"failed\"} %llu\n"
                  "mxkeys_db_jobs_total{outcome=\"rejected_busy\"} %llu\n"
                  "mxkeys_db_jobs_total{outcome=\"timed_out\"} %llu\n",
                  sum.connected, sum.connecting, sum.down, sum.inflight, sum.queue_depth, sum.completed, sum.failed,
                  sum.rejected_busy, sum.timed_out);
    if (server->config->auth_mode == MX_AUTH_HOMESERVER) {
        mx_upstream_stats_t hs = {0};
        for (unsigned w = 0; w < server->nworkers; w++) {
            const mx_upstream_t *up = __atomic_load_n(&server->workers[w].homeserver, __ATOMIC_ACQUIRE);
            if (up != NULL)
                mx_upstream_stats_add(up, &hs);
        }
        mx_buf_printf(out,
                      "# HELP mxkeys_homeserver_requests_total Requests sent to the homeserver (whoami, forwarded "
                      "and mirrored requests, /sync).\n"
                      "# TYPE mxkeys_homeserver_requests_total counter\n"
                      "mxkeys_homeserver_requests_total %llu\n"
                      "# HELP mxkeys_homeserver_failures_total Requests to the homeserver that got no answer.\n"
                      "# TYPE mxkeys_homeserver_failures_total counter\n"
                      "mxkeys_homeserver_failures_total{kind=\"unreachable\"} %llu\n"
                      "mxkeys_homeserver_failures_total{kind=\"timeout\"} %llu\n"
                      "# HELP mxkeys_homeserver_inflight Requests to the homeserver in flight (held /syncs "
                      "included).\n"
                      "# TYPE mxkeys_homeserver_inflight gauge\n"
                      "mxkeys_homeserver_inflight %u\n",
                      hs.requests, hs.unreachable, hs.timeouts, hs.inflight);
        mx_buf_printf(out,
                      "# HELP mxkeys_device_removals_retried_total Removals of a device's keys retried after the "
                      "homeserver removed the device.\n"
                      "# TYPE mxkeys_device_removals_retried_total counter\n"
                      "mxkeys_device_removals_retried_total %llu\n"
                      "# HELP mxkeys_device_removals_failed_total Removals that failed every retry (the keys are "
                      "still served: remove them with the admin API).\n"
                      "# TYPE mxkeys_device_removals_failed_total counter\n"
                      "mxkeys_device_removals_failed_total %llu\n",
                      __atomic_load_n(&server->removal_retries, __ATOMIC_RELAXED),
                      __atomic_load_n(&server->removal_failures, __ATOMIC_RELAXED));
    }
    mx_api_federation_metrics(server, out);
    mx_buf_printf(out, "# HELP mxkeys_workers Worker threads.\n# TYPE mxkeys_workers gauge\nmxkeys_workers %u\n",
                  server->nworkers);
    if (server->offload != NULL) {
        mx_offload_stats_t off;
        mx_offload_pool_stats(server->offload, &off);
        mx_buf_printf(
            out,
            "# HELP mxkeys_offload_queued Jobs (signature checks, large body parses) waiting for an offload "
            "thread.\n"
            "# TYPE mxkeys_offload_queued gauge\n"
            "mxkeys_offload_queued %zu\n"
            "# HELP mxkeys_offload_jobs_total Offload jobs by outcome (refused: queue full, run on the loop).\n"
            "# TYPE mxkeys_offload_jobs_total counter\n"
            "mxkeys_offload_jobs_total{outcome=\"done\"} %llu\n"
            "mxkeys_offload_jobs_total{outcome=\"refused\"} %llu\n",
            off.queued, off.done, off.refused);
    }
}
