/* CPU-heavy work off the event loops. A few threads shared by every worker run a job's `work`; the submitting
 * worker's loop then runs its `done`. Checking the 50 signatures of a key upload takes milliseconds: on the loop it
 * holds up every other request of that worker. Measured with 50 uploads/s beside 1,000 claims/s (open loop): a
 * claim's 99th percentile was 33-38 ms with the checks on the loop, 8-18 ms with them here. Parsing large bodies
 * (src/http/call.c) likewise: beside 40 backup writes of 100 sessions per second, 27-51 ms -> 7-18 ms.
 *
 * `work` may touch only what the job owns (copies, or values nobody changes meanwhile); `done` always runs, on the
 * loop, and is where the job is freed. */
#ifndef MXKEYS_OFFLOAD_H
#define MXKEYS_OFFLOAD_H

#include <h2o.h>
#include <stdbool.h>

typedef struct st_mx_offload_pool_t mx_offload_pool_t;
typedef struct st_mx_offload_job_t mx_offload_job_t;
typedef void (*mx_offload_fn)(mx_offload_job_t *job);

struct st_mx_offload_job_t {
    mx_offload_fn work; /* on a pool thread */
    mx_offload_fn done; /* on the loop of `reply_to` */
    /* internal */
    h2o_linklist_t queued;
    h2o_multithread_message_t reply;
    h2o_multithread_receiver_t *reply_to;
};

/** Starts `nthreads` threads. NULL when they cannot be started. */
mx_offload_pool_t *mx_offload_pool_new(unsigned nthreads);
/** Stops the threads once the queue is empty and joins them. Jobs still queued then are never run. */
void mx_offload_pool_free(mx_offload_pool_t *pool);
/** Makes `receiver` the place where a worker's finished jobs arrive: `loop_queue` is its context's message queue. */
void mx_offload_receiver_init(h2o_multithread_receiver_t *receiver, h2o_multithread_queue_t *loop_queue);
/**
 * Queues a job; its `done` will run on the loop that owns `reply_to`. False, and nothing queued, when the queue is
 * full (MX_OFFLOAD_QUEUE_PER_THREAD jobs per thread): the caller then does the work on its loop, which slows that
 * loop's intake instead of letting queued copies of request bodies pile up without bound.
 */
bool mx_offload_submit(mx_offload_pool_t *pool, h2o_multithread_receiver_t *reply_to, mx_offload_job_t *job);

#define MX_OFFLOAD_QUEUE_PER_THREAD 32

typedef struct st_mx_offload_stats_t {
    size_t queued;              /* waiting for a thread now */
    unsigned long long done;    /* run, since start */
    unsigned long long refused; /* not queued because the queue was full (run on a loop instead) */
} mx_offload_stats_t;

/** A consistent snapshot of the pool's counters, from any thread. */
void mx_offload_pool_stats(mx_offload_pool_t *pool, mx_offload_stats_t *out);

#endif
