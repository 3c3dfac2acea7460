#include "mxkeys/offload.h"
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include "mxkeys/log.h"

struct st_mx_offload_pool_t {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    h2o_linklist_t queue; /* of mx_offload_job_t.queued, oldest first */
    size_t queued, max_queued;
    unsigned long long done, refused;
    bool stopping;
    unsigned nthreads;
    pthread_t threads[];
};

static void *thread_main(void *arg)
{
    mx_offload_pool_t *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (h2o_linklist_is_empty(&pool->queue) && !pool->stopping)
            pthread_cond_wait(&pool->wake, &pool->lock);
        if (h2o_linklist_is_empty(&pool->queue)) { /* stopping, nothing left */
            pthread_mutex_unlock(&pool->lock);
            return NULL;
        }
        mx_offload_job_t *job = H2O_STRUCT_FROM_MEMBER(mx_offload_job_t, queued, pool->queue.next);
        h2o_linklist_unlink(&job->queued);
        pool->queued--;
        pthread_mutex_unlock(&pool->lock);

        job->work(job);
        pthread_mutex_lock(&pool->lock);
        pool->done++;
        pthread_mutex_unlock(&pool->lock);
        /* Thread-safe: locks the receiving loop's queue and wakes that loop. */
        h2o_multithread_send_message(job->reply_to, &job->reply);
    }
}

mx_offload_pool_t *mx_offload_pool_new(unsigned nthreads)
{
    mx_offload_pool_t *pool = calloc(1, sizeof(*pool) + nthreads * sizeof(pthread_t));
    if (pool == NULL)
        return NULL;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    h2o_linklist_init_anchor(&pool->queue);
    pool->max_queued = (size_t)nthreads * MX_OFFLOAD_QUEUE_PER_THREAD;
    for (; pool->nthreads < nthreads; pool->nthreads++) {
        if (pthread_create(&pool->threads[pool->nthreads], NULL, thread_main, pool) != 0) {
            mx_error("offload: cannot start thread %u", pool->nthreads);
            mx_offload_pool_free(pool);
            return NULL;
        }
    }
    return pool;
}

void mx_offload_pool_free(mx_offload_pool_t *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

static void on_replies(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        mx_offload_job_t *job = H2O_STRUCT_FROM_MEMBER(mx_offload_job_t, reply.link, messages->next);
        h2o_linklist_unlink(&job->reply.link);
        job->done(job);
    }
}

void mx_offload_receiver_init(h2o_multithread_receiver_t *receiver, h2o_multithread_queue_t *loop_queue)
{
    h2o_multithread_register_receiver(loop_queue, receiver, on_replies);
}

bool mx_offload_submit(mx_offload_pool_t *pool, h2o_multithread_receiver_t *reply_to, mx_offload_job_t *job)
{
    job->reply_to = reply_to;
    job->queued = (h2o_linklist_t){NULL, NULL};
    job->reply = (h2o_multithread_message_t){{NULL, NULL}};
    pthread_mutex_lock(&pool->lock);
    bool room = pool->queued < pool->max_queued;
    if (room) {
        h2o_linklist_insert(&pool->queue, &job->queued);
        pool->queued++;
        pthread_cond_signal(&pool->wake);
    } else {
        pool->refused++;
    }
    pthread_mutex_unlock(&pool->lock);
    return room;
}

void mx_offload_pool_stats(mx_offload_pool_t *pool, mx_offload_stats_t *out)
{
    pthread_mutex_lock(&pool->lock);
    *out = (mx_offload_stats_t){.queued = pool->queued, .done = pool->done, .refused = pool->refused};
    pthread_mutex_unlock(&pool->lock);
}
