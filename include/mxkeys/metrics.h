/* Prometheus metrics. Each worker owns its counters (no locks on the request path); /metrics sums all workers with
 * relaxed atomic loads. */
#ifndef MXKEYS_METRICS_H
#define MXKEYS_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include "mxkeys/buf.h"

typedef struct st_mx_metrics_t mx_metrics_t;

/** Slot for requests that matched no route (404/405 before routing). */
#define MX_METRICS_UNROUTED ((size_t)-1)

/** Creates counters for `nroutes` routes, named by `route_names` ("METHOD /path"; borrowed, must outlive them). */
mx_metrics_t *mx_metrics_new(const char *const *route_names, size_t nroutes);
void mx_metrics_free(mx_metrics_t *m);
/** Counts one answered request (route slot or MX_METRICS_UNROUTED) with its status and duration. */
void mx_metrics_observe(mx_metrics_t *m, size_t route, int status, uint64_t duration_ns);
/** Appends the Prometheus text of the request counters summed over `n` workers' counters (NULL entries skipped). */
void mx_metrics_render(const mx_metrics_t *const *per_worker, size_t n, mx_buf_t *out);

#endif
