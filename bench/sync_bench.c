/* mxkeys-sync-bench: what mxkeys beside a homeserver (--auth homeserver) costs a client, measured against the same
 * homeserver reached directly, in one run (bench/sync.sh starts everything; bench/README.md has the figures).
 *
 *   1. sync: incremental /sync with timeout=0, closed loop at a few concurrencies, through mxkeys and straight to the
 *      homeserver, rounds interleaved (the order alternates): req/s, p50, p99, and the p50 mxkeys adds.
 *   2. upload: the identity-write path, device-key uploads (new keys every time, so mxkeys mirrors every one to the
 *      homeserver), through mxkeys and straight to the homeserver, interleaved the same way.
 *   3. hold: N long-polls held through mxkeys at once; mxkeysd's RSS before and while they are held (and the
 *      kernel's slab), then the homeserver ends them all at once (POST /_bench/release on bench_homeserver.py) and
 *      every answer is checked.
 *
 * Single-threaded epoll client, one request in flight per connection. Every loop is bounded by time and count. The
 * homeserver must be bench/bench_homeserver.py (its /_bench/ control paths); the tokens file is the one it writes.
 * Exit status: 0, 1 when an answer was unexpected, 2 when the run could not be made. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <dirent.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "histogram.h"
#include "http.h"
#include "payloads.h"
#include "sync_client.h"

#define CLIENT "/_matrix/client/v3"
#define KEEP_BODY (64u << 10)
#define MAX_LIST 8
#define MAX_ROUNDS 16
#define MAX_ERROR_KINDS 32
#define CONNECTS_IN_FLIGHT 256 /* hold phase: connection attempts at once (the listen backlog is 1024) */
#define DRAIN_NS 3000000000ULL /* closed loop: how long answers in flight at the end may take */
#define FD_MARGIN 64           /* descriptors a process needs besides its connections */

typedef enum en_kind_t { K_SYNC, K_UPLOAD, K_POLL } kind_t;

/* ---- options ---------------------------------------------------------------------------------------------------- */

static struct {
    const char *mx_url, *hs_url, *tokens_path;
    int pid, hs_pid, pg_pid;
    unsigned conc[MAX_LIST], nconc, upconc[MAX_LIST], nupconc;
    unsigned rounds;
    double slice_s, warmup_s;
    unsigned polls, poll_timeout_ms;
    double hold_wait_s, answer_wait_s;
    unsigned otks;
    bool do_sync, do_upload, do_hold;
} O = {.conc = {1, 4, 16, 64},
       .nconc = 4,
       .upconc = {1, 4},
       .nupconc = 2,
       .rounds = 3,
       .slice_s = 3,
       .warmup_s = 0.5,
       .polls = 10000,
       .poll_timeout_ms = 120000,
       .hold_wait_s = 60,
       .answer_wait_s = 60,
       .otks = 10,
       .do_sync = true,
       .do_upload = true,
       .do_hold = true};

static bench_target_t MX, HS;

typedef struct st_token_t {
    char *user_id, *device_id, *token;
} token_t;
static token_t *TOK;
static size_t NTOK;

static unsigned S_DEVICES; /* tokens [0, S): sync devices, with --otks one-time keys and a fallback key in mxkeys */
static unsigned U_BASE, U_DEVICES; /* tokens [U_BASE, U_BASE + U): upload devices */
static json_int_t EXPECT_OTKS[64]; /* what mxkeys holds for each sync device */
static char *UP_BODY[MAX_LIST * 64][2];
static size_t UP_LEN[MAX_LIST * 64][2];
static unsigned UP_NEXT[MAX_LIST * 64]; /* which body the device sends next (never the one mxkeys holds) */

static volatile sig_atomic_t interrupted;
static bool any_unexpected;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mxkeys-sync-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ---- errors: counted by kind, each kind printed once when first seen ------------------------------------------- */

typedef struct st_errkind_t {
    char key[120];
    uint64_t count;
} errkind_t;

typedef struct st_errtab_t {
    errkind_t kinds[MAX_ERROR_KINDS];
    size_t n;
    uint64_t total;
} errtab_t;

static void err_add(errtab_t *t, const char *what, const char *key, const char *detail)
{
    any_unexpected = true;
    t->total++;
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->kinds[i].key, key) == 0) {
            t->kinds[i].count++;
            return;
        }
    if (t->n < MAX_ERROR_KINDS) {
        snprintf(t->kinds[t->n].key, sizeof(t->kinds[t->n].key), "%s", key);
        t->kinds[t->n++].count = 1;
    }
    fprintf(stderr, "mxkeys-sync-bench: UNEXPECTED (%s) %s%s%.200s\n", what, key, detail && *detail ? " — " : "",
            detail ? detail : "");
}

static void err_print(const errtab_t *t, const char *indent)
{
    for (size_t i = 0; i < t->n; i++)
        printf("%s%llu x %s\n", indent, (unsigned long long)t->kinds[i].count, t->kinds[i].key);
}

/* ---- /proc ------------------------------------------------------------------------------------------------------ */

typedef struct st_mem_t {
    long rss_kb, anon_kb, fds, slab_kb, tcp_mem_pages;
} mem_t;

static long status_field(int pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t nl = strlen(name);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, name, nl) == 0 && line[nl] == ':')
            v = strtol(line + nl + 1, NULL, 10);
    if (f != NULL)
        fclose(f);
    return v;
}

static long count_fds(int pid)
{
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "ls /proc/%d/fd 2>/dev/null | wc -l", pid);
    FILE *p = popen(cmd, "r");
    long n = -1;
    if (p != NULL) {
        if (fscanf(p, "%ld", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

static long fd_limit(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/limits", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "Max open files", 14) == 0)
            v = strtol(line + 14, NULL, 10);
    if (f != NULL)
        fclose(f);
    return v;
}

static long meminfo_kb(const char *name)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long v = -1;
    size_t nl = strlen(name);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, name, nl) == 0 && line[nl] == ':')
            v = strtol(line + nl + 1, NULL, 10);
    if (f != NULL)
        fclose(f);
    return v;
}

static long tcp_mem_pages(void)
{
    FILE *f = fopen("/proc/net/sockstat", "r");
    char line[256];
    long v = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        const char *m = strncmp(line, "TCP:", 4) == 0 ? strstr(line, " mem ") : NULL;
        if (m != NULL)
            v = strtol(m + 5, NULL, 10);
    }
    if (f != NULL)
        fclose(f);
    return v;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

/* CPU time (user + system) of a process, all its threads, in seconds; -1 when it is gone. */
static double cpu_of(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut, st;
    int ppid;
    if (p == NULL || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ppid, &ut, &st) != 3)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU of a PostgreSQL postmaster's children (the backends, the WAL writer, ...). */
static double cpu_of_children(int parent)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    double sum = 0;
    char path[300], buf[512];
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        int ppid;
        if (p != NULL && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == parent)
            sum += cpu_of(atoi(e->d_name));
    }
    if (d != NULL)
        closedir(d);
    return sum;
}

typedef struct st_cpu_t {
    double mx, pg, hs;
} cpu_t;

static cpu_t cpu_now(void)
{
    cpu_t c = {cpu_of(O.pid), O.pg_pid ? cpu_of_children(O.pg_pid) : 0, O.hs_pid ? cpu_of(O.hs_pid) : 0};
    return c;
}

/* Medians of `n` samples `gap_s` apart: a single reading of RSS moves with whatever the process does just then. */
static mem_t sample_mem(int pid, int n, double gap_s)
{
    long rss[16], anon[16], slab[16];
    mem_t m = {0};
    if (n > 16)
        n = 16;
    for (int i = 0; i < n; i++) {
        if (i > 0)
            sleep_s(gap_s);
        rss[i] = status_field(pid, "VmRSS");
        anon[i] = status_field(pid, "RssAnon");
        slab[i] = meminfo_kb("Slab");
    }
    qsort(rss, (size_t)n, sizeof(long), cmp_long);
    qsort(anon, (size_t)n, sizeof(long), cmp_long);
    qsort(slab, (size_t)n, sizeof(long), cmp_long);
    m.rss_kb = rss[n / 2];
    m.anon_kb = anon[n / 2];
    m.slab_kb = slab[n / 2];
    m.fds = count_fds(pid);
    m.tcp_mem_pages = tcp_mem_pages();
    return m;
}

/* ---- the homeserver's control paths ----------------------------------------------------------------------------- */

static json_t *hs_call(bench_sync_t *s, const char *method, const char *path)
{
    char err[256];
    if (bench_sync_call(s, method, path, NULL, method[0] == 'P' ? "{}" : NULL, method[0] == 'P' ? 2 : 0, err) != 0)
        die("homeserver %s %s: %s", method, path, err);
    if (s->resp.status != 200)
        die("homeserver %s %s: status %d", method, path, s->resp.status);
    json_t *j = json_loadb(s->resp.body.data, s->resp.body.len, 0, NULL);
    if (j == NULL)
        die("homeserver %s %s: not JSON", method, path);
    return j;
}

static long long hs_stat(bench_sync_t *s, const char *name)
{
    json_t *j = hs_call(s, "GET", "/_bench/stats");
    json_t *v = json_object_get(j, name);
    if (v == NULL)
        v = json_object_get(json_object_get(j, "requests"), name);
    long long r = json_integer_value(v);
    json_decref(j);
    return r;
}

/* ---- connections ------------------------------------------------------------------------------------------------ */

typedef enum en_cstate_t { C_CLOSED, C_CONNECTING, C_BUSY, C_IDLE, C_DONE } cstate_t;

typedef struct st_conn_t {
    int fd;
    cstate_t state;
    unsigned tok, seq;
    unsigned body; /* upload: which of the device's two bodies is in flight */
    mx_buf_t out;
    size_t off;
    bench_resp_t resp;
    uint64_t sent_ns;
    char since[40];
} conn_t;

typedef struct st_loop_t {
    int epfd;
    const bench_target_t *target;
    bool via_mx;
    kind_t kind;
    uint64_t warm_end, end; /* closed loop: answers completed inside [warm_end, end] are measured */
    bench_hist_t *hist;
    uint64_t ok, done, early, answered_ok;
    errtab_t errs;
    /* hold */
    uint64_t release_ns;
    char expect_batch[40];
    unsigned busy, connecting;
} loop_t;

static int conn_connect(loop_t *L, conn_t *c, bool wait)
{
    c->fd = socket(L->target->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (wait ? 0 : SOCK_NONBLOCK), 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(c->fd, (const struct sockaddr *)&L->target->addr, L->target->addrlen);
    if (rc != 0 && !(errno == EINPROGRESS && !wait)) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    if (wait)
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = rc == 0 ? EPOLLIN : EPOLLOUT, .data.ptr = c};
    epoll_ctl(L->epfd, EPOLL_CTL_ADD, c->fd, &ev);
    c->state = rc == 0 ? C_IDLE : C_CONNECTING;
    if (rc != 0)
        L->connecting++;
    return 0;
}

static void conn_close(loop_t *L, conn_t *c)
{
    if (c->fd >= 0) {
        epoll_ctl(L->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->state == C_BUSY)
        L->busy--;
    if (c->state == C_CONNECTING)
        L->connecting--;
    c->fd = -1;
    c->state = C_CLOSED;
}

static void set_events(loop_t *L, conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(L->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void flush_out(loop_t *L, conn_t *c)
{
    while (c->off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->off, c->out.len - c->off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(L, c, EPOLLIN | EPOLLOUT);
            return;
        }
        if (n <= 0) {
            err_add(&L->errs, L->via_mx ? "mxkeys" : "homeserver", "send failed", strerror(errno));
            conn_close(L, c);
            return;
        }
        c->off += (size_t)n;
    }
    set_events(L, c, EPOLLIN);
}

static void conn_send(loop_t *L, conn_t *c)
{
    const token_t *t = &TOK[c->tok];
    char path[256];
    mx_buf_reset(&c->out);
    switch (L->kind) {
    case K_SYNC:
        snprintf(path, sizeof(path), CLIENT "/sync?filter=0&since=%s&timeout=0", c->since);
        bench_http_format(&c->out, L->target, "GET", path, t->token, NULL, 0);
        break;
    case K_POLL:
        snprintf(path, sizeof(path), CLIENT "/sync?filter=0&since=%s&timeout=%u", c->since, O.poll_timeout_ms);
        bench_http_format(&c->out, L->target, "GET", path, t->token, NULL, 0);
        break;
    case K_UPLOAD: {
        unsigned d = c->tok - U_BASE;
        c->body = UP_NEXT[d];
        bench_http_format(&c->out, L->target, "POST", CLIENT "/keys/upload", t->token, UP_BODY[d][c->body],
                          UP_LEN[d][c->body]);
        break;
    }
    }
    c->off = 0;
    c->seq++;
    c->state = C_BUSY;
    L->busy++;
    bench_resp_reset(&c->resp, KEEP_BODY);
    c->sent_ns = now_ns();
    flush_out(L, c);
}

/* The key counts an answer must carry: mxkeys' for its sync devices, the homeserver's (none) otherwise. */
static int check_counts(loop_t *L, conn_t *c, json_t *j, char *key, size_t keylen)
{
    bool spliced = L->via_mx && c->tok < S_DEVICES;
    json_int_t want = spliced ? EXPECT_OTKS[c->tok] : 0;
    json_t *otk = json_object_get(json_object_get(j, "device_one_time_keys_count"), "signed_curve25519");
    json_t *fb = json_object_get(j, "device_unused_fallback_key_types");
    if (!json_is_integer(otk) || json_integer_value(otk) != want) {
        snprintf(key, keylen, "device_one_time_keys_count.signed_curve25519 is not %lld", (long long)want);
        return -1;
    }
    const char *fb0 = json_string_value(json_array_get(fb, 0));
    if (!json_is_array(fb) || json_array_size(fb) != (spliced ? 1u : 0u) ||
        (spliced && (fb0 == NULL || strcmp(fb0, "signed_curve25519") != 0))) {
        snprintf(key, keylen, "device_unused_fallback_key_types is not %s", spliced ? "[signed_curve25519]" : "[]");
        return -1;
    }
    return 0;
}

/* 0 when the answer is what the request expects; -1 with a key for the error table. */
static int check_answer(loop_t *L, conn_t *c, char *key, size_t keylen)
{
    const char *body = c->resp.body.data ? c->resp.body.data : "";
    if (c->resp.status != 200) {
        const char *e = strstr(body, "\"errcode\"");
        char code[48] = "";
        if (e != NULL && (e = strchr(e + 9, '"')) != NULL)
            sscanf(e + 1, "%47[^\"]", code);
        snprintf(key, keylen, "status %d %s", c->resp.status, code);
        return -1;
    }
    if (L->kind == K_UPLOAD) {
        if (strstr(body, "\"one_time_key_counts\"") == NULL) {
            snprintf(key, keylen, "200 without one_time_key_counts");
            return -1;
        }
        return 0;
    }
    const char *nb = strstr(body, "\"next_batch\":\"");
    char batch[40] = "";
    if (nb == NULL || sscanf(nb + 14, "%39[^\"]", batch) != 1) {
        snprintf(key, keylen, "200 without next_batch");
        return -1;
    }
    snprintf(c->since, sizeof(c->since), "%s", batch);
    if (L->kind == K_POLL && strcmp(batch, L->expect_batch) != 0) {
        snprintf(key, keylen, "next_batch is not the release's");
        return -1;
    }
    /* Every long-poll answer and every fourth incremental one is parsed in full (the parse costs the client about
     * as much as the server's splice). */
    if (L->kind == K_SYNC && c->seq % 4 != 0)
        return 0;
    json_t *j = json_loadb(body, c->resp.body.len, 0, NULL);
    if (j == NULL) {
        snprintf(key, keylen, "200 that is not JSON");
        return -1;
    }
    int rc = check_counts(L, c, j, key, keylen);
    if (rc == 0 && json_object_size(json_object_get(json_object_get(j, "rooms"), "join")) != 3) {
        snprintf(key, keylen, "rooms.join is not the homeserver's three rooms");
        rc = -1;
    }
    json_decref(j);
    return rc;
}

static void on_answer(loop_t *L, conn_t *c, uint64_t now)
{
    char key[120];
    L->busy--;
    c->state = C_IDLE;
    L->done++;
    int ok = check_answer(L, c, key, sizeof(key));
    if (ok != 0)
        err_add(&L->errs, L->via_mx ? "mxkeys" : "homeserver", key, c->resp.body.data);
    if (L->kind == K_POLL) {
        c->state = C_DONE;
        if (L->release_ns == 0) {
            L->early++;
            if (ok == 0)
                err_add(&L->errs, "mxkeys", "a long-poll answered before the homeserver ended it", NULL);
        } else if (ok == 0) {
            L->ok++;
            bench_hist_record(L->hist, (now - L->release_ns) / 1000);
        }
    } else if (ok == 0) {
        L->answered_ok++;
        if (L->kind == K_UPLOAD && L->via_mx)
            UP_NEXT[c->tok - U_BASE] = !c->body; /* mxkeys holds this body now */
        if (now >= L->warm_end && now <= L->end) {
            L->ok++;
            bench_hist_record(L->hist, (now - c->sent_ns) / 1000);
        }
    }
    if (!c->resp.keep_alive) {
        int tok = (int)c->tok;
        conn_close(L, c);
        c->tok = (unsigned)tok;
        if (L->kind != K_POLL && now < L->end && conn_connect(L, c, true) != 0)
            err_add(&L->errs, L->via_mx ? "mxkeys" : "homeserver", "reconnect failed", strerror(errno));
    }
    if (L->kind != K_POLL && c->state == C_IDLE && now < L->end && !interrupted)
        conn_send(L, c);
}

static void on_event(loop_t *L, conn_t *c, uint32_t events, uint64_t now)
{
    if (c->state == C_CONNECTING) {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        L->connecting--;
        if (soerr != 0 || (events & EPOLLERR)) {
            c->state = C_IDLE; /* not connecting any more */
            err_add(&L->errs, "mxkeys", "connect failed", strerror(soerr ? soerr : ECONNREFUSED));
            conn_close(L, c);
            c->state = C_DONE;
            return;
        }
        c->state = C_IDLE;
        set_events(L, c, EPOLLIN);
        conn_send(L, c);
        return;
    }
    if ((events & EPOLLOUT) && c->state == C_BUSY)
        flush_out(L, c);
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->fd < 0)
        return;
    static char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (c->state == C_BUSY && n == 0 && bench_resp_eof(&c->resp)) {
                c->resp.keep_alive = false;
                on_answer(L, c, now);
                return;
            }
            bool busy = c->state == C_BUSY;
            unsigned tok = c->tok;
            if (busy)
                err_add(&L->errs, L->via_mx ? "mxkeys" : "homeserver",
                        n == 0 ? "connection closed mid-request" : "connection failed mid-request",
                        n < 0 ? strerror(errno) : NULL);
            conn_close(L, c);
            c->tok = tok;
            if (L->kind == K_POLL)
                c->state = C_DONE;
            else if (now < L->end && conn_connect(L, c, true) == 0 && busy)
                conn_send(L, c);
            return;
        }
        if (c->state != C_BUSY) {
            err_add(&L->errs, L->via_mx ? "mxkeys" : "homeserver", "bytes with no request in flight", NULL);
            conn_close(L, c);
            return;
        }
        size_t used;
        char why[128];
        int rc = bench_resp_feed(&c->resp, buf, (size_t)n, &used, why);
        if (rc < 0) {
            err_add(&L->errs, L->via_mx ? "mxkeys" : "homeserver", "malformed HTTP answer", why);
            conn_close(L, c);
            return;
        }
        if (rc == 1) {
            on_answer(L, c, now);
            return;
        }
    }
}

static void loop_once(loop_t *L, int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(L->epfd, evs, 256, timeout_ms);
    uint64_t now = now_ns();
    for (int i = 0; i < n; i++)
        on_event(L, evs[i].data.ptr, evs[i].events, now);
}

/* ---- closed loop ------------------------------------------------------------------------------------------------ */

typedef struct st_sample_t {
    double rate;
    double p50, p99; /* ms */
    uint64_t ok, errors;
    uint64_t answered_ok;          /* every expected answer, warm-up and drain included */
    double cpu_mx, cpu_pg, cpu_hs; /* µs of CPU per answered request */
} sample_t;

static sample_t closed_loop(const bench_target_t *t, bool via_mx, kind_t kind, unsigned conc, unsigned tok_base)
{
    loop_t L = {.epfd = epoll_create1(EPOLL_CLOEXEC), .target = t, .via_mx = via_mx, .kind = kind};
    L.hist = bench_hist_new();
    conn_t *conns = calloc(conc, sizeof(conn_t));
    if (L.epfd < 0 || L.hist == NULL || conns == NULL)
        die("out of memory");
    for (unsigned i = 0; i < conc; i++) {
        conns[i].tok = tok_base + i;
        snprintf(conns[i].since, sizeof(conns[i].since), "s1");
        if (conn_connect(&L, &conns[i], true) != 0)
            die("connect to %s: %s", t->host, strerror(errno));
    }
    uint64_t t0 = now_ns();
    L.warm_end = t0 + (uint64_t)(O.warmup_s * 1e9);
    L.end = L.warm_end + (uint64_t)(O.slice_s * 1e9);
    cpu_t cpu0 = cpu_now();
    for (unsigned i = 0; i < conc; i++)
        conn_send(&L, &conns[i]);
    uint64_t drain_end = L.end + DRAIN_NS;
    for (;;) {
        uint64_t now = now_ns();
        if ((now >= L.end || interrupted) && (L.busy == 0 || now >= drain_end))
            break;
        loop_once(&L, 20);
    }
    cpu_t cpu1 = cpu_now();
    sample_t s = {.ok = L.ok, .errors = L.errs.total, .answered_ok = L.answered_ok};
    double per = L.done > 0 ? 1e6 / (double)L.done : 0;
    s.cpu_mx = (cpu1.mx - cpu0.mx) * per;
    s.cpu_pg = (cpu1.pg - cpu0.pg) * per;
    s.cpu_hs = (cpu1.hs - cpu0.hs) * per;
    s.rate = (double)L.ok / O.slice_s;
    s.p50 = (double)bench_hist_quantile(L.hist, 0.50) / 1000.0;
    s.p99 = (double)bench_hist_quantile(L.hist, 0.99) / 1000.0;
    if (L.busy != 0)
        err_add(&L.errs, via_mx ? "mxkeys" : "homeserver", "answers still missing after the drain", NULL);
    for (unsigned i = 0; i < conc; i++) {
        conn_close(&L, &conns[i]);
        mx_buf_free(&conns[i].out);
        bench_resp_free(&conns[i].resp);
    }
    if (L.errs.n > 0)
        err_print(&L.errs, "    ");
    free(conns);
    bench_hist_free(L.hist);
    close(L.epfd);
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct st_spread_t {
    double med, lo, hi;
} spread_t;

static spread_t spread(const double *v, unsigned n)
{
    double s[MAX_ROUNDS];
    memcpy(s, v, n * sizeof(double));
    qsort(s, n, sizeof(double), cmp_double);
    spread_t r = {n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1]};
    return r;
}

static void fmt_spread(char *out, size_t len, spread_t s, const char *fmt)
{
    char a[20], b[20], c[20];
    snprintf(a, sizeof(a), fmt, s.med);
    snprintf(b, sizeof(b), fmt, s.lo);
    snprintf(c, sizeof(c), fmt, s.hi);
    snprintf(out, len, "%s (%s–%s)", a, b, c);
}

typedef struct st_row_t {
    const char *what;
    unsigned conc;
    sample_t mx[MAX_ROUNDS], hs[MAX_ROUNDS];
} row_t;

static row_t ROWS[2 * MAX_LIST];
static unsigned NROWS;

/* Rounds of mxkeys and the homeserver back to back, the order alternating, so drift on a shared machine hits
 * both alike. */
static void compare(const char *what, kind_t kind, unsigned conc, unsigned tok_base, bench_sync_t *ctl)
{
    row_t *row = &ROWS[NROWS++];
    row->what = what;
    row->conc = conc;
    for (unsigned r = 0; r < O.rounds && !interrupted; r++) {
        for (int k = 0; k < 2; k++) {
            bool mx = (r % 2 == 0) == (k == 0);
            long long before = kind == K_UPLOAD ? hs_stat(ctl, "keys_upload") : 0;
            sample_t s = closed_loop(mx ? &MX : &HS, mx, kind, conc, tok_base);
            if (kind == K_UPLOAD && mx) {
                /* Every upload through mxkeys carried new device keys: each must have reached the homeserver. */
                long long mirrored = hs_stat(ctl, "keys_upload") - before;
                if (mirrored < (long long)s.answered_ok) {
                    any_unexpected = true;
                    fprintf(stderr, "mxkeys-sync-bench: UNEXPECTED only %lld of %llu uploads reached the homeserver\n",
                            mirrored, (unsigned long long)s.answered_ok);
                }
            }
            (mx ? row->mx : row->hs)[r] = s;
            fprintf(stderr,
                    "  %s c=%u round %u %-10s %8.0f req/s  p50 %.3f ms  p99 %.3f ms  CPU/req: mxkeysd %.0f µs, "
                    "PostgreSQL %.0f µs, homeserver %.0f µs%s\n",
                    what, conc, r + 1, mx ? "mxkeys" : "homeserver", s.rate, s.p50, s.p99, s.cpu_mx, s.cpu_pg, s.cpu_hs,
                    s.errors ? "  (errors)" : "");
        }
    }
}

static void print_rows(void)
{
    printf("| test | concurrency | path | req/s | p50 ms | p99 ms | mxkeys adds at p50, ms | CPU µs per request: "
           "mxkeysd / PostgreSQL / homeserver |\n");
    printf("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (unsigned i = 0; i < NROWS; i++) {
        row_t *row = &ROWS[i];
        unsigned n = O.rounds;
        double v[MAX_ROUNDS], add[MAX_ROUNDS];
        for (int k = 0; k < 2; k++) {
            sample_t *s = k == 0 ? row->mx : row->hs;
            char rate[80], p50[80], p99[80], added[80] = "";
            for (unsigned r = 0; r < n; r++)
                v[r] = s[r].rate;
            fmt_spread(rate, sizeof(rate), spread(v, n), "%.0f");
            for (unsigned r = 0; r < n; r++)
                v[r] = s[r].p50;
            fmt_spread(p50, sizeof(p50), spread(v, n), "%.2f");
            for (unsigned r = 0; r < n; r++)
                v[r] = s[r].p99;
            fmt_spread(p99, sizeof(p99), spread(v, n), "%.2f");
            if (k == 0) {
                for (unsigned r = 0; r < n; r++)
                    add[r] = row->mx[r].p50 - row->hs[r].p50;
                fmt_spread(added, sizeof(added), spread(add, n), "%+.2f");
            }
            double cm[MAX_ROUNDS], cp[MAX_ROUNDS], ch[MAX_ROUNDS];
            for (unsigned r = 0; r < n; r++)
                cm[r] = s[r].cpu_mx, cp[r] = s[r].cpu_pg, ch[r] = s[r].cpu_hs;
            char cpu[96];
            if (O.pg_pid)
                snprintf(cpu, sizeof(cpu), "%.0f / %.0f / %.0f", spread(cm, n).med, spread(cp, n).med,
                         spread(ch, n).med);
            else
                snprintf(cpu, sizeof(cpu), "%.0f / – / %.0f", spread(cm, n).med, spread(ch, n).med);
            printf("| %s | %u | %s | %s | %s | %s | %s | %s |\n", k == 0 ? row->what : "", row->conc,
                   k == 0 ? "mxkeys" : "homeserver", rate, p50, p99, added, cpu);
        }
    }
    printf("\nFigures: median over %u rounds (min–max); \"adds\": mxkeys' p50 minus the homeserver's p50 of the same "
           "round; CPU: user+system time of each process (PostgreSQL: every child of the postmaster) over the "
           "round, per answer (median).\n",
           O.rounds);
}

/* ---- set-up ----------------------------------------------------------------------------------------------------- */

static void load_tokens(void)
{
    json_error_t je;
    json_t *a = json_load_file(O.tokens_path, 0, &je);
    if (!json_is_array(a))
        die("%s: %s", O.tokens_path, a == NULL ? je.text : "not a JSON array");
    NTOK = json_array_size(a);
    TOK = calloc(NTOK ? NTOK : 1, sizeof(*TOK));
    for (size_t i = 0; i < NTOK; i++) {
        json_t *e = json_array_get(a, i);
        const char *u = json_string_value(json_object_get(e, "user_id"));
        const char *d = json_string_value(json_object_get(e, "device_id"));
        const char *t = json_string_value(json_object_get(e, "access_token"));
        if (u == NULL || d == NULL || t == NULL)
            die("%s: entry %zu lacks user_id, device_id or access_token", O.tokens_path, i);
        TOK[i] = (token_t){strdup(u), strdup(d), strdup(t)};
    }
    json_decref(a);
}

static char *dump(json_t *j, size_t *len)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s == NULL)
        die("out of memory");
    *len = strlen(s);
    return s;
}

/* Sync devices get real signed keys in mxkeys (so their spliced counts are known); upload devices get two key sets
 * each, sent in turn, so that every upload carries keys other than the stored ones. */
static void setup(void)
{
    char err[256];
    bench_sync_t http;
    bench_sync_init(&http, &MX);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "sb%lx", (unsigned long)time(NULL));
    for (unsigned i = 0; i < S_DEVICES && !interrupted; i++) {
        bench_olm_device_t *d = bench_olm_device_new(TOK[i].user_id, TOK[i].device_id, err);
        json_t *otks = json_object(), *fb = json_object(), *keys = d ? bench_olm_device_keys(d, err) : NULL;
        if (keys == NULL || bench_olm_one_time_keys(d, O.otks, prefix, otks, err) != 0 ||
            bench_olm_fallback_key(d, prefix, fb, err) != 0)
            die("set-up keys: %s", err);
        json_t *body = json_pack("{s:o, s:o, s:o}", "device_keys", keys, "one_time_keys", otks, "fallback_keys", fb);
        size_t len;
        char *text = dump(body, &len);
        if (bench_sync_call(&http, "POST", CLIENT "/keys/upload", TOK[i].token, text, len, err) != 0)
            die("set-up upload through mxkeys: %s", err);
        if (http.resp.status != 200)
            die("set-up upload through mxkeys: status %d: %.300s", http.resp.status, http.resp.body.data);
        json_t *r = json_loadb(http.resp.body.data, http.resp.body.len, 0, NULL);
        json_int_t n =
            json_integer_value(json_object_get(json_object_get(r, "one_time_key_counts"), "signed_curve25519"));
        if (n < (json_int_t)O.otks)
            die("set-up: %s holds %lld one-time keys in mxkeys after uploading %u", TOK[i].device_id, (long long)n,
                O.otks);
        EXPECT_OTKS[i] = n; /* more when an earlier run used this database */
        json_decref(r);
        free(text);
        json_decref(body);
        bench_olm_device_free(d);
    }
    for (unsigned i = 0; i < U_DEVICES && !interrupted; i++) {
        const token_t *t = &TOK[U_BASE + i];
        for (int k = 0; k < 2; k++) {
            bench_olm_device_t *d = bench_olm_device_new(t->user_id, t->device_id, err);
            json_t *keys = d ? bench_olm_device_keys(d, err) : NULL;
            if (keys == NULL)
                die("set-up keys: %s", err);
            json_t *body = json_pack("{s:o}", "device_keys", keys);
            UP_BODY[i][k] = dump(body, &UP_LEN[i][k]);
            json_decref(body);
            bench_olm_device_free(d);
        }
        /* The device's first keys, so that every measured upload replaces keys, as a re-keyed device does. */
        if (bench_sync_call(&http, "POST", CLIENT "/keys/upload", t->token, UP_BODY[i][0], UP_LEN[i][0], err) != 0 ||
            http.resp.status != 200)
            die("set-up upload through mxkeys: %s%d", err, http.resp.status);
        UP_NEXT[i] = 1;
    }
    bench_sync_close(&http);
}

/* ---- hold --------------------------------------------------------------------------------------------------------*/

static void hold_phase(bench_sync_t *ctl)
{
    unsigned n = O.polls;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (n > NTOK)
        n = (unsigned)NTOK;
    if (rl.rlim_cur < n + FD_MARGIN) {
        printf("note: this client may open %llu descriptors: %u long-polls, not %u\n", (unsigned long long)rl.rlim_cur,
               (unsigned)(rl.rlim_cur - FD_MARGIN), n);
        n = (unsigned)(rl.rlim_cur - FD_MARGIN);
    }
    long mx_limit = fd_limit(O.pid), mx_fds = count_fds(O.pid);
    /* Each held sync is two descriptors in mxkeysd: the client's connection and its own to the homeserver. */
    if (mx_limit > 0 && mx_fds > 0 && (long)n * 2 + mx_fds + FD_MARGIN > mx_limit) {
        unsigned fit = (unsigned)((mx_limit - mx_fds - FD_MARGIN) / 2);
        printf("note: mxkeysd may open %ld descriptors and has %ld open; each held sync takes two (client and "
               "homeserver connections): %u long-polls, not %u\n",
               mx_limit, mx_fds, fit, n);
        n = fit;
    }
    if (hs_stat(ctl, "held") != 0)
        die("the homeserver already holds long-polls");
    fprintf(stderr, "  hold: %u long-polls through mxkeys (timeout %u ms)\n", n, O.poll_timeout_ms);
    mem_t m0 = sample_mem(O.pid, 5, 0.2);
    long hs_conns0 = hs_stat(ctl, "connections");

    loop_t L = {.epfd = epoll_create1(EPOLL_CLOEXEC), .target = &MX, .via_mx = true, .kind = K_POLL};
    L.hist = bench_hist_new();
    L.end = UINT64_MAX;
    conn_t *conns = calloc(n, sizeof(conn_t));
    if (L.epfd < 0 || L.hist == NULL || conns == NULL)
        die("out of memory");
    long long pos = hs_stat(ctl, "pos");
    snprintf(L.expect_batch, sizeof(L.expect_batch), "s%lld", pos + 1);
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(O.hold_wait_s * 1e9), next_stat = 0, next_show = 0;
    unsigned opened = 0;
    long long held = 0;
    while (!interrupted) {
        while (opened < n && L.connecting < CONNECTS_IN_FLIGHT) {
            conn_t *c = &conns[opened];
            c->tok = opened++;
            snprintf(c->since, sizeof(c->since), "s%lld", pos);
            if (conn_connect(&L, c, false) != 0) {
                err_add(&L.errs, "mxkeys", "connect failed", strerror(errno));
                c->state = C_DONE;
            } else if (c->state == C_IDLE) {
                conn_send(&L, c);
            }
        }
        loop_once(&L, 10);
        uint64_t now = now_ns();
        if (now >= next_stat) {
            held = hs_stat(ctl, "held");
            next_stat = now + 250000000ULL;
            if (now >= next_show) {
                fprintf(stderr, "    %5.1f s: %u connections opened, %u requests in flight, %lld held\n",
                        (double)(now - t0) / 1e9, opened, L.busy, held);
                next_show = now + 2000000000ULL;
            }
            if (opened == n && L.connecting == 0 && held >= (long long)L.busy)
                break;
        }
        if (now >= deadline)
            break;
    }
    double ramp_s = (double)(now_ns() - t0) / 1e9;
    held = hs_stat(ctl, "held");
    long hs_conns = hs_stat(ctl, "connections");
    sleep_s(0.5);
    mem_t m1 = sample_mem(O.pid, 9, 0.25);
    held = hs_stat(ctl, "held");

    /* The homeserver ends every poll at once, as news for everybody would. */
    json_t *rel = hs_call(ctl, "POST", "/_bench/release");
    L.release_ns = now_ns();
    long long released = json_integer_value(json_object_get(rel, "released"));
    json_decref(rel);
    uint64_t answer_deadline = L.release_ns + (uint64_t)(O.answer_wait_s * 1e9);
    while (L.busy > 0 && now_ns() < answer_deadline && !interrupted)
        loop_once(&L, 20);
    double answer_s = (double)(now_ns() - L.release_ns) / 1e9;
    unsigned missing = L.busy;
    sleep_s(0.5);
    mem_t m2 = sample_mem(O.pid, 5, 0.2);
    for (unsigned i = 0; i < n; i++) {
        conn_close(&L, &conns[i]);
        mx_buf_free(&conns[i].out);
        bench_resp_free(&conns[i].resp);
    }
    free(conns);
    close(L.epfd);

    bool alive = kill(O.pid, 0) == 0;
    if (!alive) {
        any_unexpected = true;
        fprintf(stderr, "mxkeys-sync-bench: UNEXPECTED mxkeysd (pid %d) is gone after the release\n", O.pid);
    }
    double per = held > 0 ? (double)(m1.rss_kb - m0.rss_kb) / (double)held : 0;
    double per_anon = held > 0 ? (double)(m1.anon_kb - m0.anon_kb) / (double)held : 0;
    double slab_per = held > 0 ? (double)(m1.slab_kb - m0.slab_kb) / (double)held : 0;
    printf("| held long-polls through mxkeys | |\n| --- | --- |\n");
    printf("| asked, held | %u asked; %lld held by the homeserver %.1f s after the first connect (%ld homeserver "
           "connections, %ld before) |\n",
           n, held, ramp_s, hs_conns, hs_conns0);
    printf("| mxkeysd descriptors | %ld before, %ld while held (limit %ld) |\n", m0.fds, m1.fds, mx_limit);
    if (alive)
        printf("| mxkeysd RSS | %.1f MiB before, %.1f MiB while held, %.1f MiB after the answers |\n",
               m0.rss_kb / 1024.0, m1.rss_kb / 1024.0, m2.rss_kb / 1024.0);
    else
        printf("| mxkeysd RSS | %.1f MiB before, %.1f MiB while held; **mxkeysd died after the release** |\n",
               m0.rss_kb / 1024.0, m1.rss_kb / 1024.0);
    printf("| **mxkeysd RSS per held sync** | **%.1f KiB** (anonymous memory: %.1f KiB) |\n", per, per_anon);
    printf("| kernel slab per held sync (all 4 socket ends: client, mxkeysd x2, homeserver) | %.1f KiB (TCP buffer "
           "pages: %ld before, %ld while held) |\n",
           slab_per, m0.tcp_mem_pages, m1.tcp_mem_pages);
    printf("| released by the homeserver | %lld |\n", released);
    printf("| answered 200 with next_batch %s and the counts (mxkeys' for its %u set-up devices) | %llu of %u, "
           "%u missing after %.1f s; %llu early |\n",
           L.expect_batch, S_DEVICES, (unsigned long long)L.ok, n, missing, answer_s, (unsigned long long)L.early);
    printf("| from the release to the answer | p50 %.0f ms, p99 %.0f ms, last %.0f ms |\n",
           (double)bench_hist_quantile(L.hist, 0.5) / 1000.0, (double)bench_hist_quantile(L.hist, 0.99) / 1000.0,
           (double)L.hist->max_us / 1000.0);
    if (L.errs.n > 0) {
        printf("\nUnexpected answers while holding:\n");
        err_print(&L.errs, "  ");
    }
    if (L.ok != n)
        any_unexpected = true;
    bench_hist_free(L.hist);
}

/* ---- main ------------------------------------------------------------------------------------------------------- */

static unsigned parse_list(const char *s, unsigned *out, const char *what)
{
    unsigned n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (*end != '\0' || v == 0 || v > 64 || n == MAX_LIST)
            die("%s: expected up to %d numbers 1..64 separated by commas, got %s", what, MAX_LIST, s);
        out[n++] = (unsigned)v;
    }
    free(copy);
    return n;
}

static double parse_num(const char *s, const char *what, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0' || !(v >= lo && v <= hi))
        die("%s: expected a number in [%g, %g], got %s", what, lo, hi, s);
    return v;
}

static void usage(void)
{
    puts("usage: mxkeys-sync-bench --mxkeys URL --homeserver URL --tokens FILE --pid MXKEYSD_PID [options]\n"
         "  --hs-pid PID --pg-pid POSTMASTER_PID   CPU time per request of the homeserver and PostgreSQL\n"
         "  --phases sync,upload,hold   which measurements (default all three)\n"
         "  --concurrency 1,4,16,64     incremental /sync (timeout=0) concurrencies\n"
         "  --upload-concurrency 1,4    device-key upload concurrencies\n"
         "  --rounds 3 --slice 3 --warmup 0.5   rounds per comparison, seconds per side and round, warm-up\n"
         "  --polls 10000 --poll-timeout-ms 120000 --hold-wait 60 --answer-wait 60\n"
         "  --otks 10                   one-time keys of each sync device in mxkeys");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"mxkeys", 1, 0, 'm'},
                                             {"homeserver", 1, 0, 'H'},
                                             {"tokens", 1, 0, 't'},
                                             {"pid", 1, 0, 'p'},
                                             {"phases", 1, 0, 'P'},
                                             {"concurrency", 1, 0, 'c'},
                                             {"upload-concurrency", 1, 0, 'u'},
                                             {"rounds", 1, 0, 'r'},
                                             {"slice", 1, 0, 's'},
                                             {"warmup", 1, 0, 'w'},
                                             {"polls", 1, 0, 'n'},
                                             {"poll-timeout-ms", 1, 0, 'T'},
                                             {"hold-wait", 1, 0, 'W'},
                                             {"answer-wait", 1, 0, 'A'},
                                             {"otks", 1, 0, 'o'},
                                             {"hs-pid", 1, 0, 'S'},
                                             {"pg-pid", 1, 0, 'G'},
                                             {"help", 0, 0, 'h'},
                                             {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            O.mx_url = optarg;
            break;
        case 'H':
            O.hs_url = optarg;
            break;
        case 't':
            O.tokens_path = optarg;
            break;
        case 'p':
            O.pid = (int)parse_num(optarg, "--pid", 1, 1e9);
            break;
        case 'P':
            O.do_sync = strstr(optarg, "sync") != NULL;
            O.do_upload = strstr(optarg, "upload") != NULL;
            O.do_hold = strstr(optarg, "hold") != NULL;
            break;
        case 'c':
            O.nconc = parse_list(optarg, O.conc, "--concurrency");
            break;
        case 'u':
            O.nupconc = parse_list(optarg, O.upconc, "--upload-concurrency");
            break;
        case 'r':
            O.rounds = (unsigned)parse_num(optarg, "--rounds", 1, MAX_ROUNDS);
            break;
        case 's':
            O.slice_s = parse_num(optarg, "--slice", 0.2, 60);
            break;
        case 'w':
            O.warmup_s = parse_num(optarg, "--warmup", 0, 10);
            break;
        case 'n':
            O.polls = (unsigned)parse_num(optarg, "--polls", 1, 100000);
            break;
        case 'T':
            O.poll_timeout_ms = (unsigned)parse_num(optarg, "--poll-timeout-ms", 1000, 600000);
            break;
        case 'W':
            O.hold_wait_s = parse_num(optarg, "--hold-wait", 1, 600);
            break;
        case 'A':
            O.answer_wait_s = parse_num(optarg, "--answer-wait", 1, 600);
            break;
        case 'o':
            O.otks = (unsigned)parse_num(optarg, "--otks", 1, 100);
            break;
        case 'S':
            O.hs_pid = (int)parse_num(optarg, "--hs-pid", 1, 1e9);
            break;
        case 'G':
            O.pg_pid = (int)parse_num(optarg, "--pg-pid", 1, 1e9);
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (O.mx_url == NULL || O.hs_url == NULL || O.tokens_path == NULL || O.pid == 0) {
        usage();
        return 2;
    }
    char err[256];
    if (sodium_init() < 0)
        die("sodium_init failed");
    if (bench_target_parse(&MX, O.mx_url, err, sizeof(err)) != 0 ||
        bench_target_parse(&HS, O.hs_url, err, sizeof(err)) != 0)
        die("%s", err);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    load_tokens();
    S_DEVICES = 1;
    for (unsigned i = 0; i < O.nconc; i++)
        if (O.conc[i] > S_DEVICES)
            S_DEVICES = O.conc[i];
    U_BASE = S_DEVICES;
    U_DEVICES = 0;
    for (unsigned i = 0; O.do_upload && i < O.nupconc; i++)
        if (O.upconc[i] > U_DEVICES)
            U_DEVICES = O.upconc[i];
    if (NTOK < U_BASE + U_DEVICES)
        die("%s has %zu tokens; %u are needed", O.tokens_path, NTOK, U_BASE + U_DEVICES);

    bench_sync_t ctl;
    bench_sync_init(&ctl, &HS);
    fprintf(stderr, "mxkeys-sync-bench: set-up (%u sync devices with %u one-time keys, %u upload devices)\n", S_DEVICES,
            O.otks, U_DEVICES);
    setup();
    if (O.do_sync) {
        fprintf(stderr, "mxkeys-sync-bench: incremental /sync, timeout=0\n");
        for (unsigned i = 0; i < O.nconc && !interrupted; i++)
            compare("/sync timeout=0", K_SYNC, O.conc[i], 0, &ctl);
    }
    if (O.do_upload) {
        fprintf(stderr, "mxkeys-sync-bench: device-key uploads (identity writes)\n");
        for (unsigned i = 0; i < O.nupconc && !interrupted; i++)
            compare("/keys/upload, new device keys", K_UPLOAD, O.upconc[i], U_BASE, &ctl);
    }
    if (NROWS > 0) {
        print_rows();
        printf("\n");
    }
    if (O.do_hold && !interrupted) {
        fprintf(stderr, "mxkeys-sync-bench: held long-polls\n");
        hold_phase(&ctl);
    }
    bench_sync_close(&ctl);
    fflush(stdout);
    return interrupted ? 2 : any_unexpected ? 1 : 0;
}
