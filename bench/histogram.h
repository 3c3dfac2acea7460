/* A log-linear latency histogram in the style of HdrHistogram: values below 128 µs are exact, above that each power
 * of two is split into 64 equal steps, so any recorded value is reported within 1/64 (1.6 %) of itself. Fixed size,
 * no allocation after creation, mergeable: each load thread records into its own and the report merges them. */
#ifndef MXKEYS_BENCH_HISTOGRAM_H
#define MXKEYS_BENCH_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_HIST_SLOTS 2304 /* 128 exact + 34 powers of two x 64: up to 2^40 µs */

typedef struct st_bench_hist_t {
    uint64_t count;
    uint64_t max_us;
    uint64_t sum_us;
    uint32_t slots[BENCH_HIST_SLOTS];
} bench_hist_t;

/** A zeroed histogram from the heap; NULL when out of memory. */
bench_hist_t *bench_hist_new(void);
void bench_hist_free(bench_hist_t *h);
/** Records one value in microseconds. */
void bench_hist_record(bench_hist_t *h, uint64_t us);
/** Adds every count of `from` to `into`. */
void bench_hist_merge(bench_hist_t *into, const bench_hist_t *from);
/** The value at quantile `q` (0..1) in microseconds: the highest value of the slot holding it; 0 when empty. */
uint64_t bench_hist_quantile(const bench_hist_t *h, double q);
/** Mean in microseconds; 0 when empty. */
double bench_hist_mean(const bench_hist_t *h);
/**
 * Walks the non-empty slots in increasing order: `fn` gets the slot's highest value in µs and the fraction of all
 * values at or below it. Used to draw the CDF.
 */
void bench_hist_each(const bench_hist_t *h, void (*fn)(void *ctx, uint64_t us, double cumulative), void *ctx);

#endif
