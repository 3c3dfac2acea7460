/* The load engine: one thread per core, each with its own epoll loop and its share of keep-alive connections.
 * Closed loop: every connection has exactly one request in flight and sends the next as soon as the answer is in.
 * Open loop: requests are due at fixed intervals from the start; latency is measured from when a request was due,
 * not from when a connection became free to send it, so a stalled server cannot hide its stall (no coordinated
 * omission). Requests finishing inside [warm-up end, end] are measured; errors are counted over the whole run. */
#ifndef MXKEYS_BENCH_ENGINE_H
#define MXKEYS_BENCH_ENGINE_H

#include <stdint.h>
#include "histogram.h"
#include "scenarios.h"

typedef struct st_bench_sc_stats_t {
    uint64_t ok, errors; /* in the measured window */
    uint64_t notes[BENCH_NOTES];
    uint64_t body_bytes;
    bench_hist_t *hist; /* latency of expected answers in the window */
} bench_sc_stats_t;

typedef struct st_bench_second_t {
    uint64_t ok[SC_COUNT], errors;
    bench_hist_t *hist[SC_COUNT]; /* NULL for a scenario with no answer that second */
} bench_second_t;

typedef struct st_bench_error_t {
    int sc; /* -1: a connection-level failure outside any request */
    char key[96];
    char detail[200];
    uint64_t count;
    double first_s; /* seconds after load start */
} bench_error_t;

typedef struct st_bench_results_t {
    bench_sc_stats_t sc[SC_COUNT];
    bench_hist_t *total;
    bench_error_t *errors;
    size_t nerrors;
    uint64_t unexpected;     /* every unexpected answer or failure, warm-up included */
    bench_second_t *seconds; /* per second since load start, warm-up included */
    size_t nseconds;
    double warmup_s, window_s;
    uint64_t sent, unsent; /* open loop: due but never sent because no connection was free in time */
    bool interrupted;
} bench_results_t;

/** Runs the load described by ctx->opts. Returns 0 (results filled) or -1 with a reason in `err`. */
int bench_engine_run(bench_ctx_t *ctx, bool progress, bench_results_t *res, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void bench_results_free(bench_results_t *res);
/** Asks a running engine to stop early (from a signal handler). */
void bench_engine_interrupt(void);

#endif
