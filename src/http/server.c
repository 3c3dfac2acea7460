/* Listener and worker threads. One listening socket is shared by every worker (each wraps a duplicate in its own
 * loop): behind a reverse proxy that keeps a few long-lived connections, SO_REUSEPORT's hashing can pin all of them
 * to one worker, while a shared socket lets whichever worker is idle accept. */
#include "mxkeys/server.h"
#include "mxkeys/offload.h"
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "mxkeys/auth.h"
#include "mxkeys/db.h"
#include "mxkeys/log.h"
#include "mxkeys/metrics.h"
#include "mxkeys/notify.h"
#include "mxkeys/query_cache_feed.h"
#include "mxkeys/server_keys.h"
#include "mxkeys/upstream.h"
#include "mxkeys/revocations.h"
#include "http_internal.h"

/* How long a stopping worker waits for in-flight requests before it gives up on them. */
#define DRAIN_LIMIT_MS 30000
/* How long a starting worker waits for its database connections before accepting anyway. */
#define STARTUP_DB_WAIT_MS 5000

int mx_server_listen(mx_server_t *server, const mx_config_t *config, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    char port[8];
    snprintf(port, sizeof(port), "%u", config->listen_port);
    int rc = getaddrinfo(config->listen_host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--listen %s:%u: %s", config->listen_host, config->listen_port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "--listen %s:%u: %s", config->listen_host, config->listen_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    server->listen_fd = fd;
    server->config = config;
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    mx_worker_t *w = listener->data;
    if (err != NULL)
        return;
    /* Accept a bounded batch per wake-up so one busy worker does not starve its own requests. */
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        int one = 1;
        setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        h2o_accept(&w->accept_ctx, sock);
    }
}

static void stop_accepting(mx_worker_t *w)
{
    if (w->listener != NULL) {
        h2o_socket_read_stop(w->listener);
        h2o_socket_close(w->listener);
        w->listener = NULL;
    }
}

/* Federation claims: other servers' keys come through the homeserver as notary, on its federation listener (the
 * homeserver client itself when that is the same URL). */
static int start_federation(mx_worker_t *w)
{
    const mx_config_t *cfg = w->server->config;
    const char *url = cfg->homeserver_federation_url ? cfg->homeserver_federation_url : cfg->homeserver_url;
    if (url == NULL)
        return 0;
    mx_upstream_t *up = w->homeserver;
    if (up == NULL || strcmp(url, cfg->homeserver_url) != 0) {
        char err[256];
        if ((up = mx_upstream_new(w->loop, url, cfg->homeserver_timeout_ms, err, sizeof(err))) == NULL) {
            mx_error("worker %u: --homeserver-federation-url: %s", w->index, err);
            return -1;
        }
        w->federation = up;
    }
    if ((w->server_keys = mx_server_keys_new(w->loop, up, cfg->server_name, cfg->homeserver_timeout_ms)) == NULL) {
        mx_error("worker %u: out of memory", w->index);
        return -1;
    }
    return 0;
}

static void *worker_run(void *arg)
{
    mx_worker_t *w = arg;
    mx_server_t *server = w->server;
    const mx_config_t *cfg = server->config;

    w->loop = h2o_evloop_create();
    h2o_context_init(&w->ctx, w->loop, &server->h2o);
    mx_offload_receiver_init(&w->offload_done, w->ctx.queue);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = server->h2o.hosts;
    /* Published with a release store: /metrics on other workers reads it. */
    __atomic_store_n(
        &w->db, mx_db_pool_new(w->loop, server->conninfo, cfg->db_connections, cfg->db_queue_depth, cfg->db_timeout_ms),
        __ATOMIC_RELEASE);
    h2o_timeout_init(w->loop, &w->later_timeout, MX_CALL_LATER_MS);
    if (cfg->auth_mode == MX_AUTH_HOMESERVER) {
        char err[256];
        mx_upstream_t *up = mx_upstream_new(w->loop, cfg->homeserver_url, cfg->homeserver_timeout_ms, err, sizeof(err));
        if (up == NULL) {
            mx_error("worker %u: %s", w->index, err);
            atomic_store(&server->stopping, true);
            return NULL;
        }
        __atomic_store_n(&w->homeserver, up, __ATOMIC_RELEASE); /* /metrics on other workers reads it */
    }
    w->auth = mx_auth_new(w->loop, cfg, w->db, w->homeserver, server->revocations);
    if (w->index == 0 && server->revocations != NULL && w->db != NULL)
        mx_revocations_follow(server->revocations, w->loop, w->db); /* one worker follows other instances' */
    if (start_federation(w) != 0) {
        atomic_store(&server->stopping, true);
        return NULL;
    }
    int fd = fcntl(server->listen_fd, F_DUPFD_CLOEXEC, 0);
    if (w->db == NULL || w->auth == NULL || fd < 0) {
        mx_error("worker %u: start-up failed", w->index);
        atomic_store(&server->stopping, true);
        return NULL;
    }
    /* Accept only once this worker's database connections are up (or a few seconds passed): the first requests
     * must not get 503 merely because the pool was still connecting. Connections wait in the listen backlog. */
    uint64_t connect_deadline = h2o_now(w->loop) + STARTUP_DB_WAIT_MS;
    while (!mx_db_pool_ready(w->db) && h2o_now(w->loop) < connect_deadline && !atomic_load(&server->stopping))
        h2o_evloop_run(w->loop, 50);
    w->listener = h2o_evloop_socket_create(w->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_socket_read_start(w->listener, on_accept);

    uint64_t drain_deadline = 0;
    for (;;) {
        h2o_evloop_run(w->loop, 100);
        __atomic_store_n(&w->turns, w->turns + 1, __ATOMIC_RELAXED);
        if (!w->serving && mx_db_pool_ready(w->db)) {
            w->serving = true;
            atomic_fetch_add(&server->nserving, 1);
        }
        if (!atomic_load(&server->stopping))
            continue;
        if (drain_deadline == 0) {
            stop_accepting(w);
            /* Turns off keep-alive so connections close once their current request is answered. */
            h2o_context_request_shutdown(&w->ctx);
            /* Held /sync long-polls would keep the drain waiting for their whole timeout: they get a 503 now. */
            if (w->homeserver != NULL)
                mx_upstream_end_long_polls(w->homeserver);
            drain_deadline = h2o_now(w->loop) + DRAIN_LIMIT_MS;
        }
        if (w->inflight == 0)
            break;
        if (h2o_now(w->loop) > drain_deadline) {
            mx_warn("worker %u: %zu requests still in flight after %d ms; stopping anyway", w->index, w->inflight,
                    DRAIN_LIMIT_MS);
            break;
        }
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    mx_worker_t *w = arg;
    worker_run(w);
    atomic_fetch_add(&w->server->nexited, 1);
    return NULL;
}

/* True when every worker's loop has turned since the last look (an idle loop turns every 100 ms). */
static bool workers_turning(mx_server_t *server, uint64_t *seen)
{
    bool all = true;
    for (unsigned i = 0; i < server->nworkers; i++) {
        uint64_t t = __atomic_load_n(&server->workers[i].turns, __ATOMIC_RELAXED);
        if (t == seen[i])
            all = false;
        seen[i] = t;
    }
    return all;
}

/* The main thread, until every worker has exited: announces readiness once every worker serves with its database
 * up (the ready line, READY=1); pings systemd's watchdog only while every worker loop keeps turning (a stuck worker
 * stops the pings and systemd restarts the service); announces the drain (STOPPING=1) and pings on through it, which
 * DRAIN_LIMIT_MS bounds, so that a long drain is not taken for a hang. */
static void supervise(mx_server_t *server)
{
    uint64_t watchdog_ms = mx_notify_watchdog_interval_ms(), since_ping_ms = 0;
    uint64_t *seen = calloc(server->nworkers, sizeof(*seen));
    bool ready = false, stopping = false;
    while (atomic_load(&server->nexited) < server->nworkers) {
        unsigned nap_ms = ready ? 100 : 10;
        struct timespec nap = {.tv_sec = 0, .tv_nsec = nap_ms * 1000000L};
        nanosleep(&nap, NULL);
        since_ping_ms += nap_ms;
        if (!stopping && atomic_load(&server->stopping)) {
            stopping = true;
            mx_notify_stopping();
        }
        if (!ready && !stopping && atomic_load(&server->nserving) == server->nworkers) {
            ready = true;
            if (server->ready_line != NULL)
                mx_info("%s", server->ready_line);
            mx_notify_ready(server->ready_line != NULL ? server->ready_line : "ready");
        }
        if (ready && watchdog_ms != 0 && seen != NULL && since_ping_ms >= watchdog_ms) {
            since_ping_ms = 0;
            if (stopping || workers_turning(server, seen))
                mx_notify_watchdog();
            else
                mx_warn("a worker's event loop has not turned for %llu ms: watchdog not pinged",
                        (unsigned long long)watchdog_ms);
        }
    }
    if (!stopping)
        mx_notify_stopping();
    free(seen);
}

int mx_server_run(mx_server_t *server, const char *conninfo)
{
    const mx_config_t *cfg = server->config;
    server->conninfo = conninfo;
    h2o_config_init(&server->h2o);
    server->h2o.server_name = h2o_iovec_init(H2O_STRLIT("mxkeys"));
    /* h2o answers bodies over its own limit with a 413 before any handler runs (rewritten as a Matrix M_TOO_LARGE by
     * the error filter below). Give it headroom above ours so that ordinary oversize bodies are read and answered by
     * the handler on a connection that stays open; past twice the limit h2o stops reading and closes. */
    server->h2o.max_request_entity_size = cfg->max_body_bytes * 2 + 65536;
    h2o_hostconf_t *host = h2o_config_register_host(&server->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    mx_http_register_error_filter(&host->fallback_path, cfg->max_body_bytes);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = mx_http_on_req;

    server->nworkers = cfg->workers;
    server->workers = calloc(server->nworkers, sizeof(mx_worker_t));
    server->offload = mx_offload_pool_new(server->nworkers);
    if (cfg->auth_mode == MX_AUTH_HOMESERVER)
        server->revocations = mx_revocations_new(cfg->token_cache_ms + 60000);
    if (cfg->query_cache_bytes > 0) {
        server->query_cache = mx_query_cache_new(cfg->query_cache_bytes);
        if (server->query_cache == NULL || (server->query_cache_feed = mx_query_cache_feed_start(
                                                server->query_cache, conninfo, cfg->query_cache_max_lag_ms)) == NULL)
            return -1;
    }
    if (server->workers == NULL || server->offload == NULL ||
        (cfg->auth_mode == MX_AUTH_HOMESERVER && server->revocations == NULL))
        return -1;
    server->route_names = calloc(server->nroutes ? server->nroutes : 1, sizeof(*server->route_names));
    if (server->route_names == NULL)
        return -1;
    for (size_t r = 0; r < server->nroutes; r++)
        server->route_names[r] = server->routes[r].name;
    for (unsigned i = 0; i < server->nworkers; i++) {
        mx_worker_t *w = &server->workers[i];
        w->index = i;
        w->server = server;
        w->metrics = mx_metrics_new(server->route_names, server->nroutes);
    }
    for (unsigned i = 0; i < server->nworkers; i++) {
        if (pthread_create(&server->workers[i].thread, NULL, worker_main, &server->workers[i]) != 0) {
            mx_error("cannot start worker %u", i);
            atomic_store(&server->stopping, true);
            server->nworkers = i;
            break;
        }
    }
    mx_info("listening on http://%s:%u with %u workers", cfg->listen_host, cfg->listen_port, server->nworkers);
    supervise(server);
    for (unsigned i = 0; i < server->nworkers; i++)
        pthread_join(server->workers[i].thread, NULL);
    close(server->listen_fd);
    /* Workers' loops are not torn down: the process exits next, and h2o 2.2.5 has no evloop destroy. The DB
     * connections are closed so PostgreSQL sees a clean disconnect. */
    for (unsigned i = 0; i < server->nworkers; i++) {
        mx_worker_t *w = &server->workers[i];
        mx_auth_free(w->auth);
        mx_server_keys_free(w->server_keys);
        mx_upstream_free(w->federation);
        mx_db_pool_free(w->db);
        mx_upstream_free(w->homeserver);
    }
    mx_offload_pool_free(server->offload);
    mx_query_cache_feed_stop(server->query_cache_feed);
    mx_query_cache_free(server->query_cache);
    return 0;
}

void mx_server_stop(mx_server_t *server)
{
    atomic_store(&server->stopping, true);
}
