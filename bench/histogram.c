/* Slot layout: index v for v < 128; above, the power of two containing v picks a group of 64 slots and the six bits
 * below the leading one pick the slot. Counts are 32-bit per slot (a run that puts 4 billion requests in one slot is
 * far outside what a bench run does) and 64-bit in total. */
#include "histogram.h"
#include <stdlib.h>

#define LINEAR 128
#define SUB 64
#define MAX_US ((1ULL << 40) - 1)

static size_t slot_of(uint64_t v)
{
    if (v < LINEAR)
        return (size_t)v;
    if (v > MAX_US)
        v = MAX_US;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 7 */
    unsigned shift = msb - 6;                          /* v >> shift lands in [64, 128) */
    return LINEAR + (size_t)(shift - 1) * SUB + (size_t)((v >> shift) - SUB);
}

/* The highest value that maps to `slot`. */
static uint64_t slot_top(size_t slot)
{
    if (slot < LINEAR)
        return slot;
    size_t g = (slot - LINEAR) / SUB, s = (slot - LINEAR) % SUB;
    unsigned shift = (unsigned)g + 1;
    return ((uint64_t)(SUB + s) << shift) + ((1ULL << shift) - 1);
}

bench_hist_t *bench_hist_new(void)
{
    return calloc(1, sizeof(bench_hist_t));
}

void bench_hist_free(bench_hist_t *h)
{
    free(h);
}

void bench_hist_record(bench_hist_t *h, uint64_t us)
{
    h->slots[slot_of(us)]++;
    h->count++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
}

void bench_hist_merge(bench_hist_t *into, const bench_hist_t *from)
{
    if (from == NULL || from->count == 0)
        return;
    for (size_t i = 0; i < BENCH_HIST_SLOTS; i++)
        into->slots[i] += from->slots[i];
    into->count += from->count;
    into->sum_us += from->sum_us;
    if (from->max_us > into->max_us)
        into->max_us = from->max_us;
}

uint64_t bench_hist_quantile(const bench_hist_t *h, double q)
{
    if (h == NULL || h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max_us;
    /* The smallest slot whose cumulative count reaches ceil(q * count), never past the true maximum. */
    uint64_t want = (uint64_t)(q * (double)h->count);
    if ((double)want < q * (double)h->count)
        want++;
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HIST_SLOTS; i++) {
        seen += h->slots[i];
        if (seen >= want) {
            uint64_t top = slot_top(i);
            return top < h->max_us ? top : h->max_us;
        }
    }
    return h->max_us;
}

double bench_hist_mean(const bench_hist_t *h)
{
    return h == NULL || h->count == 0 ? 0.0 : (double)h->sum_us / (double)h->count;
}

void bench_hist_each(const bench_hist_t *h, void (*fn)(void *ctx, uint64_t us, double cumulative), void *ctx)
{
    if (h == NULL || h->count == 0)
        return;
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HIST_SLOTS; i++) {
        if (h->slots[i] == 0)
            continue;
        seen += h->slots[i];
        uint64_t top = slot_top(i);
        fn(ctx, top < h->max_us ? top : h->max_us, (double)seen / (double)h->count);
    }
}
