/* The HTTP server: one shared listening socket, N worker threads each owning an h2o loop, context, DB pool, auth cache
 * and metrics. Nothing is shared between workers on the request path except the read-only config. */
#ifndef MXKEYS_SERVER_H
#define MXKEYS_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "mxkeys/buf.h"
#include "mxkeys/config.h"

struct st_mx_db_pool_t;
struct st_mx_auth_t;
struct st_mx_metrics_t;
struct st_mx_offload_pool_t;
struct st_mx_upstream_t;
struct st_mx_revocations_t;
struct st_mx_server_keys_t;
struct st_mx_query_cache_t;
struct st_mx_query_cache_feed_t;

typedef struct st_mx_worker_t {
    unsigned index;
    struct st_mx_server_t *server;
    pthread_t thread;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    struct st_mx_db_pool_t *db;
    struct st_mx_auth_t *auth;
    struct st_mx_metrics_t *metrics;
    struct st_mx_upstream_t *homeserver;     /* --auth homeserver: this worker's client of the homeserver, else NULL */
    struct st_mx_upstream_t *federation;     /* the homeserver's federation listener, when not `homeserver`'s URL */
    struct st_mx_server_keys_t *server_keys; /* other servers' keys via the homeserver as notary, else NULL */
    h2o_timeout_t later_timeout;             /* mx_call_later's short waits */
    h2o_multithread_receiver_t offload_done; /* where this worker's offloaded jobs come back */
    size_t inflight;                         /* requests accepted by the router and not yet answered */
    bool serving;                            /* accepting, with a database connection up (counted in nserving) */
    uint64_t turns;                          /* loop passes, read by the main thread for the watchdog */
} mx_worker_t;

typedef struct st_mx_server_t {
    const mx_config_t *config;
    const struct st_mx_route_t *routes; /* the handler table, handed in by main.c (src/api/routes.c) */
    size_t nroutes;
    const char **route_names; /* routes[i].name, for the metrics */
    const char *conninfo;     /* database the workers connect to */
    h2o_globalconf_t h2o;
    int listen_fd;
    mx_worker_t *workers;
    unsigned nworkers;
    struct st_mx_offload_pool_t *offload;    /* threads for CPU-heavy work (signature checks), shared by the workers */
    struct st_mx_revocations_t *revocations; /* tokens revoked through mxkeys, shared by the workers */
    struct st_mx_query_cache_t *query_cache; /* /keys/query answers, shared by the workers; NULL: off */
    struct st_mx_query_cache_feed_t *query_cache_feed; /* ... and the thread that keeps it exact */
    atomic_bool stopping;
    _Atomic unsigned long long removal_retries;  /* device removals retried after the homeserver's success */
    _Atomic unsigned long long removal_failures; /* ... that failed every retry */
    const char *ready_line; /* logged (and sent as READY=1) once every worker serves with its database up */
    atomic_uint nserving;   /* workers that reached `serving` */
    atomic_uint nexited;    /* workers whose thread has finished */
} mx_server_t;

/** Binds the listening socket (so a bad --listen fails before anything starts). Returns 0 or -1 with a reason. */
int mx_server_listen(mx_server_t *server, const mx_config_t *config, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/** Starts the workers and runs until mx_server_stop; in-flight requests are drained before it returns. */
int mx_server_run(mx_server_t *server, const char *conninfo) __attribute__((warn_unused_result));
/** Appends the process's Prometheus figures: requests by route, database pools, homeserver clients, offload. */
void mx_server_metrics_render(const mx_server_t *server, mx_buf_t *out);
/** Async-signal-safe: asks every worker to stop accepting and drain. */
void mx_server_stop(mx_server_t *server);

#endif
