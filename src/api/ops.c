/* Operations endpoints: liveness, readiness (the database answers), Prometheus metrics. */
#include "mxkeys/api.h"
#include "mxkeys/metrics.h"
#include "mxkeys/server.h"

/* The readiness probe's deadline (or --db-timeout-ms when shorter). */
#define MX_READY_TIMEOUT_MS 1000

void mx_api_health(mx_call_t *call)
{
    static const char body[] = "{\"status\":\"ok\"}";
    mx_call_respond(call, 200, body, sizeof(body) - 1);
}

static void on_ping(mx_call_t *call, PGresult **results, size_t n)
{
    static const char ok[] = "{\"status\":\"ready\"}";
    if (n == 1 && mx_db_result_ok(results[0]))
        mx_call_respond(call, 200, ok, sizeof(ok) - 1);
    else
        mx_call_error(call, MX_ERR_UNAVAILABLE, "the database did not answer");
}

void mx_api_ready(mx_call_t *call)
{
    /* Every worker has its own pool and takes its share of the connections: one with no database connection (still
     * backing off after an outage) fails every request it accepts, so the process is not ready until all are. */
    const mx_server_t *server = call->worker->server;
    for (unsigned i = 0; i < server->nworkers; i++) {
        const mx_db_pool_t *pool = __atomic_load_n(&server->workers[i].db, __ATOMIC_ACQUIRE);
        if (pool == NULL || !mx_db_pool_ready(pool)) {
            /* like every other 503 the database causes: a client (or probe) is told when to look again */
            mx_call_error_extra(call, MX_ERR_UNAVAILABLE, "\"retry_after_ms\":1000",
                                "worker %u has no database connection", i);
            return;
        }
    }
    /* Then a real round trip, not just the pools' connection state: a wedged server must read as not ready, and
     * soon: a load balancer's probe has its own short timeout. */
    mx_db_stmt_t ping = {.id = MX_STMT_PING};
    unsigned ms = call->config->db_timeout_ms < MX_READY_TIMEOUT_MS ? call->config->db_timeout_ms : MX_READY_TIMEOUT_MS;
    (void)mx_call_db_within(call, ms, &ping, 1, on_ping);
}

void mx_api_metrics(mx_call_t *call)
{
    mx_buf_t *buf = mx_call_buf(call);
    mx_metrics_render(call->worker->server, buf);
    mx_call_respond_typed(call, 200, "text/plain; version=0.0.4", buf->data, buf->len);
}
