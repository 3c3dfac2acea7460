/* /metrics for the whole process: the workers' request counters (core/metrics.c) and the figures only the server
 * knows, its workers' database pools, homeserver clients and offload threads. Each module adds its own figures into a
 * sum (mx_*_stats_add); this file only walks the workers and prints. The api layer adds its own sections after. */
#include "mxkeys/server.h"
#include <stdlib.h>
#include "mxkeys/db.h"
#include "mxkeys/metrics.h"
#include "mxkeys/offload.h"
#include "mxkeys/query_cache_feed.h"
#include "mxkeys/upstream.h"

void mx_server_metrics_render(const mx_server_t *server, mx_buf_t *out)
{
    const mx_metrics_t **per_worker = calloc(server->nworkers ? server->nworkers : 1, sizeof(*per_worker));
    if (per_worker != NULL) {
        for (unsigned w = 0; w < server->nworkers; w++)
            per_worker[w] = server->workers[w].metrics;
        mx_metrics_render(per_worker, server->nworkers, out);
        free(per_worker);
    }

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
    if (server->query_cache != NULL) {
        mx_query_cache_stats_t qc;
        mx_query_cache_feed_stats_t feed;
        mx_query_cache_stats(server->query_cache, &qc);
        mx_query_cache_feed_stats(server->query_cache_feed, &feed);
        mx_buf_printf(
            out,
            "# HELP mxkeys_query_cache_hits_total Users of /keys/query answers written from the cache.\n"
            "# TYPE mxkeys_query_cache_hits_total counter\n"
            "mxkeys_query_cache_hits_total %llu\n"
            "# HELP mxkeys_query_cache_misses_total Users of /keys/query answers read from the database.\n"
            "# TYPE mxkeys_query_cache_misses_total counter\n"
            "mxkeys_query_cache_misses_total %llu\n"
            "# HELP mxkeys_query_cache_evictions_total Users dropped to stay within --query-cache-bytes.\n"
            "# TYPE mxkeys_query_cache_evictions_total counter\n"
            "mxkeys_query_cache_evictions_total %llu\n"
            "# HELP mxkeys_query_cache_forgets_total Users reported changed (by a write through this process or by the "
            "feed), cached or not: each drops the user's entry if there is one.\n"
            "# TYPE mxkeys_query_cache_forgets_total counter\n"
            "mxkeys_query_cache_forgets_total %llu\n"
            "# HELP mxkeys_query_cache_fills_total Answers read from the database offered to the cache, by "
            "outcome (voided: the user changed while it was read).\n"
            "# TYPE mxkeys_query_cache_fills_total counter\n"
            "mxkeys_query_cache_fills_total{outcome=\"stored\"} %llu\n"
            "mxkeys_query_cache_fills_total{outcome=\"voided\"} %llu\n"
            "# HELP mxkeys_query_cache_bytes Memory the cache holds (its entries and its table) against "
            "--query-cache-bytes.\n"
            "# TYPE mxkeys_query_cache_bytes gauge\n"
            "mxkeys_query_cache_bytes %zu\n"
            "# HELP mxkeys_query_cache_max_bytes The bound, --query-cache-bytes.\n"
            "# TYPE mxkeys_query_cache_max_bytes gauge\n"
            "mxkeys_query_cache_max_bytes %zu\n"
            "# HELP mxkeys_query_cache_users Users cached (fills in flight included).\n"
            "# TYPE mxkeys_query_cache_users gauge\n"
            "mxkeys_query_cache_users %zu\n"
            "# HELP mxkeys_query_cache_live 1 while the change feed proves the cache exact, else 0 (every "
            "query reads the database).\n"
            "# TYPE mxkeys_query_cache_live gauge\n"
            "mxkeys_query_cache_live %d\n"
            "# HELP mxkeys_query_cache_feed_total Change feed events: users heard of, connections made, "
            "connections lost or late.\n"
            "# TYPE mxkeys_query_cache_feed_total counter\n"
            "mxkeys_query_cache_feed_total{event=\"notification\"} %llu\n"
            "mxkeys_query_cache_feed_total{event=\"connect\"} %llu\n"
            "mxkeys_query_cache_feed_total{event=\"loss\"} %llu\n",
            qc.hits, qc.misses, qc.evictions, qc.forgets, qc.fills_stored, qc.fills_voided, qc.bytes, qc.max_bytes,
            qc.users, qc.live ? 1 : 0, feed.notifications, feed.connects, feed.losses);
    }
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
