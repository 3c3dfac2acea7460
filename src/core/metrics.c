/* Prometheus text exposition. Counters are per worker and only ever written by their worker thread; the scrape sums
 * them with relaxed atomic loads, so the request path takes no lock. */
#include "mxkeys/metrics.h"
#include <stdlib.h>
#include <string.h>

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
    const char *const *route_names; /* borrowed: "METHOD /path" per route */
    size_t nroutes;                 /* slots: one per route, then one for unrouted requests */
    route_counters_t r[];
};

mx_metrics_t *mx_metrics_new(const char *const *route_names, size_t nroutes)
{
    mx_metrics_t *m = calloc(1, sizeof(*m) + sizeof(route_counters_t) * (nroutes + 1));
    if (m != NULL) {
        m->route_names = route_names;
        m->nroutes = nroutes;
    }
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

static void route_labels(const mx_metrics_t *m, size_t slot, mx_buf_t *out)
{
    if (slot == m->nroutes) {
        mx_buf_puts(out, "method=\"-\",route=\"unrouted\"");
        return;
    }
    const char *name = m->route_names[slot], *sp = strchr(name, ' ');
    mx_buf_printf(out, "method=\"%.*s\",route=\"%s\"", (int)(sp - name), name, sp + 1);
}

void mx_metrics_render(const mx_metrics_t *const *per_worker, size_t nworkers, mx_buf_t *out)
{
    const mx_metrics_t *first = NULL;
    for (size_t w = 0; w < nworkers && first == NULL; w++)
        first = per_worker[w];
    if (first == NULL)
        return;
    size_t nroutes = first->nroutes;
    route_counters_t total;
    mx_buf_puts(out, "# HELP mxkeys_http_requests_total Answered HTTP requests by route and status.\n"
                     "# TYPE mxkeys_http_requests_total counter\n");
    mx_buf_t hist = MX_BUF_INIT;
    mx_buf_puts(&hist, "# HELP mxkeys_http_request_duration_seconds Time from request to response, by route.\n"
                       "# TYPE mxkeys_http_request_duration_seconds histogram\n");
    for (size_t slot = 0; slot <= nroutes; slot++) {
        memset(&total, 0, sizeof(total));
        for (size_t w = 0; w < nworkers; w++) {
            const mx_metrics_t *m = per_worker[w];
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
            route_labels(first, slot, out);
            if (s < NSTATUS - 1)
                mx_buf_printf(out, ",status=\"%d\"} %llu\n", status_slots[s], (unsigned long long)total.status[s]);
            else
                mx_buf_printf(out, ",status=\"other\"} %llu\n", (unsigned long long)total.status[s]);
        }
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= NBUCKETS; b++) {
            cumulative += total.bucket[b];
            mx_buf_puts(&hist, "mxkeys_http_request_duration_seconds_bucket{");
            route_labels(first, slot, &hist);
            if (b < NBUCKETS)
                mx_buf_printf(&hist, ",le=\"%g\"} %llu\n", bucket_le[b], (unsigned long long)cumulative);
            else
                mx_buf_printf(&hist, ",le=\"+Inf\"} %llu\n", (unsigned long long)cumulative);
        }
        mx_buf_puts(&hist, "mxkeys_http_request_duration_seconds_sum{");
        route_labels(first, slot, &hist);
        mx_buf_printf(&hist, "} %.6f\n", (double)total.sum_ns / 1e9);
        mx_buf_puts(&hist, "mxkeys_http_request_duration_seconds_count{");
        route_labels(first, slot, &hist);
        mx_buf_printf(&hist, "} %llu\n", (unsigned long long)total.count);
    }
    mx_buf_append(out, hist.data, hist.len);
    mx_buf_free(&hist);
}
