/* The offload pool: jobs run off the loop and come back to the submitting loop; a full queue refuses a job without
 * queueing it; every queued job comes back exactly once. */
#include "mxkeys/offload.h"
#include <pthread.h>
#include "check.h"

typedef struct st_test_job_t {
    mx_offload_job_t job;
    int value, result;
    pthread_t ran_on;
} test_job_t;

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_open_cond = PTHREAD_COND_INITIALIZER;
static int gate_open = 1, started;
static int returned, returned_sum, returned_on_loop_thread;
static pthread_t loop_thread;

static void square(mx_offload_job_t *job)
{
    test_job_t *t = (test_job_t *)job;
    pthread_mutex_lock(&gate_lock);
    started++;
    while (!gate_open)
        pthread_cond_wait(&gate_open_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    t->result = t->value * t->value;
    t->ran_on = pthread_self();
}

static void came_back(mx_offload_job_t *job)
{
    test_job_t *t = (test_job_t *)job;
    returned++;
    returned_sum += t->result;
    if (pthread_equal(pthread_self(), loop_thread) && !pthread_equal(t->ran_on, loop_thread))
        returned_on_loop_thread++;
}

static void run_until(h2o_evloop_t *loop, int want)
{
    for (int i = 0; i < 1000 && returned < want; i++)
        h2o_evloop_run(loop, 10);
}

int main(void)
{
    loop_thread = pthread_self();
    h2o_evloop_t *loop = h2o_evloop_create();
    h2o_multithread_queue_t *queue = h2o_multithread_create_queue(loop);
    h2o_multithread_receiver_t receiver;
    mx_offload_receiver_init(&receiver, queue);

    mx_offload_pool_t *pool = mx_offload_pool_new(1);
    CHECK(pool != NULL);

    /* Jobs run on the pool's thread and come back to this loop. */
    test_job_t jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (test_job_t){.job = {.work = square, .done = came_back}, .value = i + 1};
        CHECK(mx_offload_submit(pool, &receiver, &jobs[i].job));
    }
    run_until(loop, 8);
    CHECK(returned == 8);
    CHECK(returned_sum == 1 + 4 + 9 + 16 + 25 + 36 + 49 + 64);
    CHECK(returned_on_loop_thread == 8);
    mx_offload_stats_t st;
    mx_offload_pool_stats(pool, &st);
    CHECK(st.done == 8 && st.refused == 0 && st.queued == 0);

    /* Full queue: with the only thread held inside a job, MX_OFFLOAD_QUEUE_PER_THREAD more are queued, then the
     * next is refused (and not queued). */
    enum { CAP = MX_OFFLOAD_QUEUE_PER_THREAD };
    static test_job_t more[CAP + 2];
    returned = returned_sum = 0;
    pthread_mutex_lock(&gate_lock);
    gate_open = 0;
    started = 0;
    pthread_mutex_unlock(&gate_lock);
    more[0] = (test_job_t){.job = {.work = square, .done = came_back}, .value = 1};
    CHECK(mx_offload_submit(pool, &receiver, &more[0].job));
    for (int i = 0; i < 1000; i++) { /* until the thread holds it */
        pthread_mutex_lock(&gate_lock);
        int s = started;
        pthread_mutex_unlock(&gate_lock);
        if (s == 1)
            break;
        h2o_evloop_run(loop, 1);
    }
    int accepted = 0;
    for (int i = 1; i < CAP + 2; i++) {
        more[i] = (test_job_t){.job = {.work = square, .done = came_back}, .value = 1};
        accepted += mx_offload_submit(pool, &receiver, &more[i].job);
    }
    CHECK(accepted == CAP);
    mx_offload_pool_stats(pool, &st);
    CHECK(st.queued == CAP && st.refused == 1);
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_open_cond);
    pthread_mutex_unlock(&gate_lock);
    run_until(loop, CAP + 1);
    CHECK(returned == CAP + 1); /* the refused one never comes back */
    h2o_evloop_run(loop, 20);
    CHECK(returned == CAP + 1);
    mx_offload_pool_stats(pool, &st);
    CHECK(st.done == 8 + CAP + 1 && st.refused == 1 && st.queued == 0);

    mx_offload_pool_free(pool);
    h2o_multithread_unregister_receiver(queue, &receiver);
    h2o_multithread_destroy_queue(queue);
    return check_finish("offload");
}
