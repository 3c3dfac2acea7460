#include "engine.h"
#include "ledger.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 50                /* housekeeping: timeouts, reconnects, the end of the run */
#define RECONNECT_NS 200000000ULL /* after a failed connect */
#define DRAIN_NS 5000000000ULL    /* how long in-flight requests may finish after the end */
#define KEEP_BODY (256u << 10)    /* answer bytes kept for checks; the rest is counted */
#define MAX_ERROR_KINDS 256

typedef enum en_conn_state_t { C_WAIT, C_CONNECTING, C_IDLE, C_BUSY } conn_state_t;

typedef struct st_thread_t thread_t;

typedef struct st_conn_t {
    thread_t *th;
    int fd;
    conn_state_t state;
    bool want_out;
    mx_buf_t out;
    size_t out_off;
    bench_resp_t resp;
    bench_scenario_t sc;
    int note;
    const char *user_id; /* the sender, when the ledger needs it */
    uint64_t start_ns;   /* latency origin: when the request was due (open) or sent (closed) */
    uint64_t sent_ns;
    uint64_t retry_at;
} conn_t;

typedef struct st_engine_t engine_t;

struct st_thread_t {
    pthread_t tid;
    engine_t *eng;
    int epfd, tfd;
    conn_t *conns;
    size_t nconns;
    conn_t **idle; /* open loop: connections free to send */
    size_t nidle;
    uint64_t rng;
    mx_buf_t scratch;
    double interval_ns; /* open loop */
    uint64_t next_k;
    uint64_t first_due;
    size_t busy;
    bench_sc_stats_t sc[SC_COUNT];
    bench_second_t *seconds;
    _Atomic uint64_t done, failed;
    uint64_t unsent, sent;
};

struct st_engine_t {
    bench_ctx_t *ctx;
    const bench_options_t *o;
    uint64_t t0, warm_end, end, drain_end;
    size_t nseconds;
    _Atomic uint64_t issued;
    pthread_mutex_t lock; /* the error table */
    bench_error_t *errors;
    size_t nerrors;
    _Atomic uint64_t unexpected;
    bool progress;
    thread_t *threads;
    unsigned nthreads;
};

static _Atomic int interrupted;

void bench_engine_interrupt(void)
{
    atomic_store(&interrupted, 1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool running(const engine_t *e, uint64_t now)
{
    return now < e->end && !atomic_load_explicit(&interrupted, memory_order_relaxed);
}

/* ---- error table ---------------------------------------------------------------------------------------------- */

static void record_error(thread_t *th, int sc, const char *key, const char *detail, uint64_t now)
{
    engine_t *e = th->eng;
    atomic_fetch_add(&e->unexpected, 1);
    atomic_fetch_add_explicit(&th->failed, 1, memory_order_relaxed);
    if (sc >= 0 && now >= e->warm_end && now <= e->end)
        th->sc[sc].errors++;
    size_t second = (size_t)((now - e->t0) / 1000000000ULL);
    if (now >= e->t0 && second < e->nseconds)
        th->seconds[second].errors++;
    pthread_mutex_lock(&e->lock);
    size_t i = 0;
    while (i < e->nerrors && !(e->errors[i].sc == sc && strcmp(e->errors[i].key, key) == 0))
        i++;
    if (i == e->nerrors && e->nerrors < MAX_ERROR_KINDS) {
        bench_error_t *x = &e->errors[e->nerrors++];
        x->sc = sc;
        snprintf(x->key, sizeof(x->key), "%s", key);
        snprintf(x->detail, sizeof(x->detail), "%s", detail);
        x->first_s = (double)(now - e->t0) / 1e9;
        /* Loud, once per kind, as it happens: an operator watching the run sees it at once. */
        fprintf(stderr, "%smxkeys-bench: UNEXPECTED %s: %s%s%s\n", e->progress ? "\n" : "",
                sc >= 0 ? bench_scenario_name((bench_scenario_t)sc) : "connection", key, detail[0] ? " — " : "",
                detail);
    }
    if (i < e->nerrors)
        e->errors[i].count++;
    pthread_mutex_unlock(&e->lock);
}

/* ---- connections ---------------------------------------------------------------------------------------------- */

static void set_events(conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(c->th->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void push_idle(conn_t *c)
{
    c->th->idle[c->th->nidle++] = c;
}

static void drop_idle(conn_t *c)
{
    thread_t *th = c->th;
    for (size_t i = 0; i < th->nidle; i++) {
        if (th->idle[i] == c) {
            th->idle[i] = th->idle[--th->nidle];
            return;
        }
    }
}

static void start_connect(conn_t *c, uint64_t now);
static void dispatch(conn_t *c, uint64_t start, uint64_t now);

static void close_conn(conn_t *c)
{
    if (c->state == C_BUSY)
        c->th->busy--;
    if (c->state == C_IDLE)
        drop_idle(c);
    if (c->fd >= 0) {
        epoll_ctl(c->th->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = C_WAIT;
    c->want_out = false;
}

/* The request on `c` failed: count it, then start over on a new connection (later, if connecting failed). */
static void fail_conn(conn_t *c, const char *key, const char *detail, uint64_t now, bool backoff)
{
    int sc = c->state == C_BUSY ? (int)c->sc : -1;
    close_conn(c);
    record_error(c->th, sc, key, detail, now);
    c->retry_at = backoff ? now + RECONNECT_NS : now;
    if (!backoff && running(c->th->eng, now))
        start_connect(c, now);
}

static void became_idle(conn_t *c, uint64_t now)
{
    engine_t *e = c->th->eng;
    c->state = C_IDLE;
    if (!running(e, now))
        return;
    if (e->o->rate > 0)
        push_idle(c);
    else
        dispatch(c, now, now);
}

static void start_connect(conn_t *c, uint64_t now)
{
    const bench_target_t *t = c->th->eng->ctx->target;
    c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        char why[128];
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        fail_conn(c, why, "", now, true);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(c->fd, (const struct sockaddr *)&t->addr, t->addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        close(c->fd);
        c->fd = -1;
        fail_conn(c, why, "", now, true);
        return;
    }
    c->state = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(c->th->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void flush_out(conn_t *c, uint64_t now)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) {
                c->want_out = true;
                set_events(c, EPOLLIN | EPOLLOUT);
            }
            return;
        }
        char why[128];
        snprintf(why, sizeof(why), "send: %s", n < 0 ? strerror(errno) : "closed");
        fail_conn(c, why, "", now, false);
        return;
    }
    if (c->want_out) {
        c->want_out = false;
        set_events(c, EPOLLIN);
    }
}

static void dispatch(conn_t *c, uint64_t start, uint64_t now)
{
    thread_t *th = c->th;
    engine_t *e = th->eng;
    if (atomic_fetch_add_explicit(&e->issued, 1, memory_order_relaxed) >= e->o->max_requests) {
        bench_engine_interrupt(); /* the count bound is reached: end the run like an interrupt */
        return;
    }
    if (c->state == C_IDLE && e->o->rate > 0)
        drop_idle(c);
    c->sc = bench_pick(e->o, &th->rng);
    mx_buf_reset(&c->out);
    bench_scenario_build(e->ctx, c->sc, &th->rng, &c->out, &th->scratch, &c->note, &c->user_id);
    c->out_off = 0;
    c->start_ns = start;
    c->sent_ns = now;
    c->state = C_BUSY;
    th->busy++;
    th->sent++;
    bench_resp_reset(&c->resp, KEEP_BODY);
    flush_out(c, now);
}

static void record_ok(thread_t *th, conn_t *c, uint64_t now, int note)
{
    engine_t *e = th->eng;
    uint64_t us = (now - c->start_ns) / 1000;
    size_t second = (size_t)((now - e->t0) / 1000000000ULL);
    if (second < e->nseconds) {
        bench_second_t *s = &th->seconds[second];
        s->ok[c->sc]++;
        if (s->hist[c->sc] == NULL)
            s->hist[c->sc] = bench_hist_new();
        if (s->hist[c->sc] != NULL)
            bench_hist_record(s->hist[c->sc], us);
    }
    if (now < e->warm_end || now > e->end)
        return;
    bench_sc_stats_t *st = &th->sc[c->sc];
    st->ok++;
    st->body_bytes += c->resp.body_bytes;
    if (note >= 0 && note < BENCH_NOTES)
        st->notes[note]++;
    bench_hist_record(st->hist, us);
}

static void complete(conn_t *c, uint64_t now)
{
    thread_t *th = c->th;
    int note = c->note;
    char key[96], detail[200];
    atomic_fetch_add_explicit(&th->done, 1, memory_order_relaxed);
    if (bench_scenario_check(c->sc, c->resp.status, c->resp.body.data, c->resp.body.len, &note, key, sizeof(key),
                             detail, sizeof(detail)) == 0) {
        record_ok(th, c, now, note);
        /* Every acknowledged write, warm-up and drain included: the checker must see all of them. */
        bench_ledger_record(th->eng->ctx->ledger, c->sc, c->user_id, c->out.data, c->out.len, c->resp.body.data,
                            c->resp.body.len);
    } else
        record_error(th, (int)c->sc, key, detail, now);
    th->busy--;
    c->state = C_IDLE; /* not yet on the idle list */
    if (!c->resp.keep_alive) {
        c->state = C_WAIT;
        epoll_ctl(th->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->retry_at = now;
        if (running(th->eng, now))
            start_connect(c, now);
        return;
    }
    became_idle(c, now);
}

static void on_readable(conn_t *c, uint64_t now)
{
    static __thread char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (c->state == C_BUSY && n == 0 && bench_resp_eof(&c->resp)) {
                c->resp.keep_alive = false;
                complete(c, now);
            } else if (c->state == C_BUSY) {
                char why[128];
                snprintf(why, sizeof(why), "connection %s mid-request", n == 0 ? "closed" : strerror(errno));
                fail_conn(c, why, "", now, false);
            } else {
                /* An idle keep-alive connection the server let go: not an error, just reconnect. */
                close_conn(c);
                if (running(c->th->eng, now))
                    start_connect(c, now);
            }
            return;
        }
        if (c->state != C_BUSY) {
            fail_conn(c, "bytes from the server with no request in flight", "", now, false);
            return;
        }
        size_t used;
        char why[128];
        int rc = bench_resp_feed(&c->resp, buf, (size_t)n, &used, why);
        if (rc < 0) {
            fail_conn(c, "malformed HTTP response", why, now, false);
            return;
        }
        if (rc == 1) {
            if (used != (size_t)n) {
                fail_conn(c, "bytes after the response", "", now, false);
                return;
            }
            complete(c, now);
            return; /* the next response (if any) is read on the next event */
        }
    }
}

static void on_event(conn_t *c, uint32_t events, uint64_t now)
{
    if (c->state == C_CONNECTING) {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            char why[128];
            snprintf(why, sizeof(why), "connect: %s", strerror(soerr ? soerr : ECONNREFUSED));
            fail_conn(c, why, "", now, true);
            return;
        }
        set_events(c, EPOLLIN);
        became_idle(c, now);
        return;
    }
    if ((events & EPOLLOUT) && c->state == C_BUSY)
        flush_out(c, now);
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->fd >= 0)
        on_readable(c, now);
}

/* ---- per-thread loop ------------------------------------------------------------------------------------------ */

static uint64_t due(const thread_t *th, uint64_t k)
{
    return th->first_due + (uint64_t)((double)k * th->interval_ns);
}

static void send_due(thread_t *th, uint64_t now)
{
    while (th->nidle > 0 && due(th, th->next_k) <= now && due(th, th->next_k) < th->eng->end) {
        conn_t *c = th->idle[th->nidle - 1];
        dispatch(c, due(th, th->next_k), now);
        th->next_k++;
        if (atomic_load_explicit(&interrupted, memory_order_relaxed))
            return;
    }
}

static void arm_timer(thread_t *th, uint64_t at)
{
    struct itimerspec its = {
        .it_value = {.tv_sec = (time_t)(at / 1000000000ULL), .tv_nsec = (long)(at % 1000000000ULL)}};
    timerfd_settime(th->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void housekeeping(thread_t *th, uint64_t now)
{
    engine_t *e = th->eng;
    uint64_t timeout = (uint64_t)(e->o->timeout_s * 1e9);
    for (size_t i = 0; i < th->nconns; i++) {
        conn_t *c = &th->conns[i];
        if (c->state == C_BUSY && now - c->sent_ns > timeout)
            fail_conn(c, "timeout", "", now, false);
        else if (c->state == C_WAIT && c->fd < 0 && now >= c->retry_at && running(e, now))
            start_connect(c, now);
    }
}

static void *thread_main(void *arg)
{
    thread_t *th = arg;
    engine_t *e = th->eng;
    struct epoll_event evs[64];
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(th->epfd, EPOLL_CTL_ADD, th->tfd, &tev);
    uint64_t now = now_ns(), last_tick = now;
    for (size_t i = 0; i < th->nconns; i++)
        start_connect(&th->conns[i], now);
    for (;;) {
        now = now_ns();
        bool run = running(e, now);
        if ((!run && th->busy == 0) || now >= e->drain_end)
            break;
        if (run && e->o->rate > 0) {
            send_due(th, now);
            if (th->nidle > 0 && due(th, th->next_k) < e->end)
                arm_timer(th, due(th, th->next_k));
        }
        if (now - last_tick >= TICK_MS * 1000000ULL) {
            housekeeping(th, now);
            last_tick = now;
        }
        int n = epoll_wait(th->epfd, evs, 64, TICK_MS);
        now = now_ns();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t ticks;
                if (read(th->tfd, &ticks, sizeof(ticks)) < 0) {
                    /* nothing to do: the loop looks at the clock anyway */
                }
                continue;
            }
            on_event(evs[i].data.ptr, evs[i].events, now);
        }
    }
    /* Requests due before the end but never sent: the server was too slow for the rate asked. */
    if (e->o->rate > 0) {
        uint64_t stop = now < e->end ? now : e->end; /* interrupted: only what was due until then */
        for (; due(th, th->next_k) < stop; th->next_k++)
            th->unsent++;
    }
    for (size_t i = 0; i < th->nconns; i++)
        close_conn(&th->conns[i]);
    return NULL;
}

/* ---- run ------------------------------------------------------------------------------------------------------ */

static void free_second(bench_second_t *s)
{
    for (int k = 0; k < SC_COUNT; k++)
        bench_hist_free(s->hist[k]);
}

static void merge_results(engine_t *e, bench_results_t *res)
{
    for (int k = 0; k < SC_COUNT; k++)
        res->sc[k].hist = bench_hist_new();
    res->total = bench_hist_new();
    res->nseconds = e->nseconds;
    res->seconds = calloc(e->nseconds, sizeof(*res->seconds));
    for (unsigned t = 0; t < e->nthreads; t++) {
        thread_t *th = &e->threads[t];
        for (int k = 0; k < SC_COUNT; k++) {
            bench_sc_stats_t *d = &res->sc[k], *s = &th->sc[k];
            d->ok += s->ok;
            d->errors += s->errors;
            d->body_bytes += s->body_bytes;
            for (int n = 0; n < BENCH_NOTES; n++)
                d->notes[n] += s->notes[n];
            bench_hist_merge(d->hist, s->hist);
            bench_hist_merge(res->total, s->hist);
        }
        for (size_t i = 0; i < e->nseconds; i++) {
            bench_second_t *d = &res->seconds[i], *s = &th->seconds[i];
            d->errors += s->errors;
            for (int k = 0; k < SC_COUNT; k++) {
                d->ok[k] += s->ok[k];
                if (s->hist[k] != NULL) {
                    if (d->hist[k] == NULL)
                        d->hist[k] = bench_hist_new();
                    bench_hist_merge(d->hist[k], s->hist[k]);
                }
            }
        }
        res->unsent += th->unsent;
        res->sent += th->sent;
    }
    res->errors = e->errors;
    res->nerrors = e->nerrors;
    res->unexpected = atomic_load(&e->unexpected);
}

static void show_progress(engine_t *e, uint64_t now, uint64_t *last_done, uint64_t *last_at)
{
    uint64_t done = 0, failed = 0;
    for (unsigned t = 0; t < e->nthreads; t++) {
        done += atomic_load_explicit(&e->threads[t].done, memory_order_relaxed);
        failed += atomic_load_explicit(&e->threads[t].failed, memory_order_relaxed);
    }
    double elapsed = (double)(now - e->t0) / 1e9, total = (double)(e->end - e->t0) / 1e9;
    double rate = now > *last_at ? (double)(done - *last_done) / ((double)(now - *last_at) / 1e9) : 0;
    fprintf(stderr, "\r\033[K[%5.0fs/%.0fs]%s requests %llu  rate %.0f/s  errors %llu", elapsed, total,
            now < e->warm_end ? " warm-up" : "", (unsigned long long)done, rate, (unsigned long long)failed);
    fflush(stderr);
    *last_done = done;
    *last_at = now;
}

int bench_engine_run(bench_ctx_t *ctx, bool progress, bench_results_t *res, char *err, size_t errlen)
{
    const bench_options_t *o = ctx->opts;
    memset(res, 0, sizeof(*res));
    engine_t e = {.ctx = ctx, .o = o, .progress = progress, .nthreads = o->threads};
    pthread_mutex_init(&e.lock, NULL);
    e.errors = calloc(MAX_ERROR_KINDS, sizeof(*e.errors));
    unsigned nconns = o->rate > 0 ? o->connections : o->concurrency;
    if (e.nthreads > nconns)
        e.nthreads = nconns;
    e.threads = calloc(e.nthreads, sizeof(*e.threads));
    double span = o->warmup_s + o->duration_s;
    e.nseconds = (size_t)ceil(span) + 1;
    if (e.errors == NULL || e.threads == NULL) {
        snprintf(err, errlen, "out of memory");
        free(e.errors);
        free(e.threads);
        return -1;
    }
    atomic_store(&interrupted, 0);
    uint64_t seed = o->seed != 0 ? o->seed : now_ns();
    int rc = 0;
    unsigned started = 0;
    for (unsigned t = 0; t < e.nthreads; t++) {
        thread_t *th = &e.threads[t];
        th->eng = &e;
        th->nconns = nconns / e.nthreads + (t < nconns % e.nthreads ? 1 : 0);
        th->conns = calloc(th->nconns, sizeof(conn_t));
        th->idle = calloc(th->nconns, sizeof(conn_t *));
        th->seconds = calloc(e.nseconds, sizeof(bench_second_t));
        th->rng = (seed + 0x9E3779B97F4A7C15ULL * (t + 1)) | 1;
        th->epfd = epoll_create1(EPOLL_CLOEXEC);
        th->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        for (int k = 0; k < SC_COUNT; k++)
            th->sc[k].hist = bench_hist_new();
        if (th->conns == NULL || th->idle == NULL || th->seconds == NULL || th->epfd < 0 || th->tfd < 0) {
            snprintf(err, errlen, "cannot set up load thread %u", t);
            rc = -1;
        }
        for (size_t i = 0; th->conns != NULL && i < th->nconns; i++) {
            th->conns[i].th = th;
            th->conns[i].fd = -1;
        }
        if (o->rate > 0)
            th->interval_ns = 1e9 / (o->rate / e.nthreads);
    }
    uint64_t t0 = now_ns();
    e.t0 = t0;
    e.warm_end = t0 + (uint64_t)(o->warmup_s * 1e9);
    e.end = e.warm_end + (uint64_t)(o->duration_s * 1e9);
    e.drain_end = e.end + DRAIN_NS;
    for (unsigned t = 0; rc == 0 && t < e.nthreads; t++) {
        /* Threads' arrivals are staggered so that together they arrive evenly, not in bursts of nthreads. */
        e.threads[t].first_due = t0 + (uint64_t)(e.threads[t].interval_ns * t / e.nthreads);
        if (pthread_create(&e.threads[t].tid, NULL, thread_main, &e.threads[t]) != 0) {
            snprintf(err, errlen, "cannot start load thread %u", t);
            bench_engine_interrupt();
            rc = -1;
            break;
        }
        started++;
    }
    /* The main thread only watches: a progress line once a second on a terminal. */
    uint64_t last_done = 0, last_at = t0, next_show = t0 + 1000000000ULL;
    while (rc == 0) {
        struct timespec nap = {0, 100000000};
        nanosleep(&nap, NULL);
        uint64_t now = now_ns();
        if (now >= e.drain_end || (!running(&e, now) && now >= e.end))
            break;
        if (atomic_load(&interrupted))
            break;
        if (progress && now >= next_show) {
            show_progress(&e, now, &last_done, &last_at);
            next_show += 1000000000ULL;
        }
    }
    for (unsigned t = 0; t < started; t++)
        pthread_join(e.threads[t].tid, NULL);
    if (progress) {
        show_progress(&e, now_ns(), &last_done, &last_at);
        fputc('\n', stderr);
    }
    res->interrupted = atomic_load(&interrupted) != 0;
    uint64_t stop = now_ns() < e.end ? now_ns() : e.end;
    res->warmup_s = o->warmup_s;
    res->window_s = stop > e.warm_end ? (double)(stop - e.warm_end) / 1e9 : 0;
    if (rc == 0)
        merge_results(&e, res);
    else
        free(e.errors);
    for (unsigned t = 0; t < e.nthreads; t++) {
        thread_t *th = &e.threads[t];
        for (size_t i = 0; th->conns != NULL && i < th->nconns; i++) {
            mx_buf_free(&th->conns[i].out);
            bench_resp_free(&th->conns[i].resp);
        }
        for (size_t i = 0; th->seconds != NULL && i < e.nseconds; i++)
            free_second(&th->seconds[i]);
        for (int k = 0; k < SC_COUNT; k++)
            bench_hist_free(th->sc[k].hist);
        free(th->conns);
        free(th->idle);
        free(th->seconds);
        mx_buf_free(&th->scratch);
        if (th->epfd >= 0)
            close(th->epfd);
        if (th->tfd >= 0)
            close(th->tfd);
    }
    free(e.threads);
    pthread_mutex_destroy(&e.lock);
    return rc;
}

void bench_results_free(bench_results_t *res)
{
    for (int k = 0; k < SC_COUNT; k++)
        bench_hist_free(res->sc[k].hist);
    bench_hist_free(res->total);
    for (size_t i = 0; i < res->nseconds; i++)
        free_second(&res->seconds[i]);
    free(res->seconds);
    free(res->errors);
    memset(res, 0, sizeof(*res));
}
