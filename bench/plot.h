/* Plots via gnuplot (Debian: gnuplot-nox): PREFIX-timeline.png (answers/s and p50/p99 latency per second, per
 * scenario) and PREFIX-cdf.png (latency CDF per scenario). The data files and the script stay next to the images, so
 * a plot can be redrawn or restyled without running the load again. */
#ifndef MXKEYS_BENCH_PLOT_H
#define MXKEYS_BENCH_PLOT_H

#include "engine.h"

/** Writes PREFIX-series.dat, PREFIX-cdf.dat and PREFIX.gp, then runs gnuplot when it is installed. 0 or -1. */
int bench_plot(const char *prefix, const bench_ctx_t *ctx, const bench_results_t *res)
    __attribute__((warn_unused_result));

#endif
