/* What a run tells its reader: a summary table on stdout, the same figures as JSON and CSV for machines, and the
 * per-second series behind the plots. */
#ifndef MXKEYS_BENCH_REPORT_H
#define MXKEYS_BENCH_REPORT_H

#include <stdio.h>
#include "engine.h"

/** Prints the summary (throughput, latency percentiles, answer kinds, unexpected errors) to `f`. */
void bench_report_print(FILE *f, const bench_ctx_t *ctx, const bench_results_t *res);
/** Writes the results as JSON (with the per-second series). 0 or -1. */
int bench_report_json(const char *path, const bench_ctx_t *ctx, const bench_results_t *res)
    __attribute__((warn_unused_result));
/** Writes one CSV row per scenario plus a total row. 0 or -1. */
int bench_report_csv(const char *path, const bench_ctx_t *ctx, const bench_results_t *res)
    __attribute__((warn_unused_result));
/** Throughput of a scenario's expected answers per measured second. */
double bench_report_rate(const bench_results_t *res, int sc);

#endif
