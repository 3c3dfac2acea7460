/* GET /sync and simplified sliding sync (MSC4186) through mxkeys, beside a homeserver. The homeserver answers; its
 * answer streams back to the client as it arrives, unchanged but for the calling device's one-time key counts and
 * unused fallback key types, which only mxkeys knows (the homeserver never sees those keys): without them clients
 * either upload keys on every sync or never replenish them.
 *
 * Memory stays bounded whatever the size of the answer: bytes go through the splicer (mxkeys/json_splice.h) into a
 * pending buffer while the previous chunk is being written to the client, and the homeserver's connection is paused
 * while the client is slower than the homeserver. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "mxkeys/api.h"
#include "mxkeys/hs_forward.h"
#include "mxkeys/json_splice.h"
#include "mxkeys/log.h"

#define HIGH_WATER (256u << 10)    /* pending bytes at which the homeserver's connection is paused */
#define LOW_WATER (64u << 10)      /* ... and resumed */
#define MAX_POLL_MS (600u * 1000u) /* the longest long-poll timeout honoured in mxkeys' own deadline */
#define COUNTS_PATIENCE_MS 5000    /* how long an answer waits for room in the database queue */

typedef struct st_sync_t {
    h2o_generator_t generator; /* first member: h2o hands it back to proceed/stop */
    mx_call_t *call;
    mx_upstream_req_t *up;
    bool sliding;
    bool splicing;      /* a 200 JSON answer for a device: counts go in */
    bool counts_ready;  /* the counts arrived from the database (or are not needed) */
    bool started;       /* the answer's head went to the client */
    bool sending;       /* a chunk is with h2o until proceed */
    bool upstream_done; /* the homeserver's answer is complete */
    bool final_sent;
    bool paused;
    bool splice_failed;
    bool counts_asked, counts_in; /* the counts query went / came back */
    uint64_t counts_since;        /* loop ms of the first try */
    mx_buf_t raw;                 /* body bytes that came before the counts */
    mx_buf_t out[2];              /* out[send]: with h2o; out[!send]: filling */
    int send;
    char *otk_counts, *fallback_types;
    mx_splice_rule_t rules[3];
    size_t nrules;
    mx_splice_t splice;
} sync_t;

static void on_sync_dispose(void *p)
{
    sync_t *s = p;
    if (s->up != NULL)
        mx_upstream_cancel(s->up);
    mx_buf_free(&s->raw);
    mx_buf_free(&s->out[0]);
    mx_buf_free(&s->out[1]);
}

/* Sends what is pending when h2o is free for it (and the end once everything is in). */
static void flush(sync_t *s)
{
    if (!s->started || s->sending || s->final_sent)
        return;
    mx_buf_t *pending = &s->out[!s->send];
    bool final = s->upstream_done && s->counts_ready;
    if (pending->len == 0 && !final)
        return;
    s->send = !s->send;
    s->sending = true;
    s->final_sent = final;
    mx_buf_t *now = &s->out[s->send];
    if (final)
        s->up = NULL; /* finished: nothing left to cancel */
    mx_call_stream_send(s->call, now->data ? now->data : "", now->len, final);
    if (s->paused && s->out[!s->send].len < LOW_WATER) {
        s->paused = false;
        if (s->up != NULL)
            mx_upstream_resume(s->up);
    }
}

static void on_proceed(h2o_generator_t *generator, h2o_req_t *req)
{
    (void)req;
    sync_t *s = (sync_t *)generator;
    s->sending = false;
    /* a chunk grown past the usual size is given back rather than kept for the rest of the answer */
    if (s->out[s->send].cap > 2 * HIGH_WATER)
        mx_buf_free(&s->out[s->send]);
    else
        mx_buf_reset(&s->out[s->send]);
    if (s->paused && s->out[!s->send].len < LOW_WATER && s->up != NULL) {
        s->paused = false;
        mx_upstream_resume(s->up);
    }
    flush(s);
}

static void on_stop(h2o_generator_t *generator, h2o_req_t *req)
{
    (void)generator, (void)req; /* the client went away: the pool's dispose cancels the homeserver request */
}

/* Body bytes in their final form, into the pending buffer. */
static void take(sync_t *s, const char *bytes, size_t len)
{
    mx_buf_t *pending = &s->out[!s->send];
    if (!s->splicing || s->splice_failed) {
        mx_buf_append(pending, bytes, len);
        return;
    }
    if (mx_splice_feed(&s->splice, bytes, len, pending) != 0) {
        s->splice_failed = true; /* passed through from here on: the bytes already sent cannot be taken back */
        mx_warn("%s: the homeserver's answer is not the JSON expected; passing it on unchanged", s->call->route->name);
    }
}

static void backpressure(sync_t *s)
{
    if (!s->paused && s->out[!s->send].len + s->raw.len >= HIGH_WATER && s->up != NULL) {
        s->paused = true;
        mx_upstream_pause(s->up);
    }
}

static void start_answer(sync_t *s, int status)
{
    s->started = true;
    mx_call_stream_start(s->call, status, &s->generator);
}

/* The answer's head is in and the counts too: the rules are set and the bytes held so far go through them. */
static void apply_counts(sync_t *s)
{
    if (s->sliding) {
        s->rules[0] = (mx_splice_rule_t){{"extensions", "e2ee", "device_one_time_keys_count"},
                                         3,
                                         MX_SPLICE_REPLACE,
                                         s->otk_counts,
                                         strlen(s->otk_counts),
                                         true};
        s->rules[1] = (mx_splice_rule_t){{"extensions", "e2ee", "device_unused_fallback_key_types"},
                                         3,
                                         MX_SPLICE_REPLACE,
                                         s->fallback_types,
                                         strlen(s->fallback_types),
                                         true};
        s->nrules = 2;
    } else {
        s->rules[0] = (mx_splice_rule_t){{"device_one_time_keys_count"}, 1,   MX_SPLICE_REPLACE, s->otk_counts,
                                         strlen(s->otk_counts),          true};
        s->rules[1] = (mx_splice_rule_t){{"device_unused_fallback_key_types"},
                                         1,
                                         MX_SPLICE_REPLACE,
                                         s->fallback_types,
                                         strlen(s->fallback_types),
                                         true};
        /* the unstable name only where the homeserver still sends it */
        s->rules[2] = (mx_splice_rule_t){{"org.matrix.msc2732.device_unused_fallback_key_types"},
                                         1,
                                         MX_SPLICE_REPLACE,
                                         s->fallback_types,
                                         strlen(s->fallback_types),
                                         false};
        s->nrules = 3;
    }
    if (mx_splice_init(&s->splice, s->rules, s->nrules) != 0)
        s->splice_failed = true;
    s->counts_ready = true;
    start_answer(s, 200);
    take(s, s->raw.data ? s->raw.data : "", s->raw.len);
    mx_buf_free(&s->raw);
    if (s->upstream_done && !s->splice_failed && mx_splice_finish(&s->splice, &s->out[!s->send]) != 0)
        mx_warn("%s: the homeserver's answer ended early or was not JSON", s->call->route->name);
    flush(s);
}

static void read_counts(mx_call_t *call);

static void on_counts(mx_call_t *call, PGresult **results, size_t n)
{
    sync_t *s = call->ext;
    if (s->started && !s->splicing)
        return;   /* read ahead for an answer that turned out to need none */
    if (n == 0) { /* the connection dropped: ask again */
        read_counts(call);
        return;
    }
    if (!mx_call_results_ok(call, results, n))
        return;
    s->otk_counts = mx_call_strdup(call, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    s->fallback_types = mx_call_strdup(call, PQgetvalue(results[0], 0, 1), (size_t)PQgetlength(results[0], 0, 1));
    s->counts_in = true;
    if (s->splicing) /* else the head has not come yet (read ahead), or it needs no counts */
        apply_counts(s);
}

/* The counts of the calling device. When the database's queue is full (thousands of held polls the homeserver ends
 * at once all want theirs), the answer waits for room, bounded, instead of failing: the homeserver's answer must
 * not be dropped for want of two numbers. */
static void read_counts(mx_call_t *call)
{
    sync_t *s = call->ext;
    const char *params[2] = {call->user_id, call->device_id};
    mx_db_stmt_t stmt = {.id = MX_STMT_SYNC_KEY_COUNTS, .nparams = 2, .values = params};
    uint64_t now = h2o_now(call->worker->loop);
    if (s->counts_since == 0)
        s->counts_since = now;
    bool patient = now - s->counts_since < COUNTS_PATIENCE_MS; /* a timed-out try counts too */
    if (patient && mx_call_db_quiet(call, &stmt, 1, on_counts) == 0)
        return;
    if (patient) {
        mx_call_later(call, read_counts);
        return;
    }
    if (s->up != NULL) {
        mx_upstream_cancel(s->up);
        s->up = NULL;
    }
    if (s->started)
        mx_call_stream_abort(call);
    else
        mx_call_error_extra(call, MX_ERR_UNAVAILABLE, "\"retry_after_ms\":1000",
                            "the database is unavailable; sync again shortly");
}

/* ---- the homeserver's answer ------------------------------------------------------------------------------------ */

static int on_head(void *data, int status, const h2o_header_t *headers, size_t n)
{
    sync_t *s = data;
    mx_call_t *call = s->call;
    if (mx_call_answered(call)) { /* the counts read ahead failed, and that was answered */
        s->up = NULL;
        return -1;
    }
    bool json = false;
    for (size_t i = 0; i < n; i++) {
        const h2o_header_t *h = &headers[i];
        if (h->name->len == 12 && strncasecmp(h->name->base, "content-type", 12) == 0) {
            json = h->value.len >= 16 && strncasecmp(h->value.base, "application/json", 16) == 0;
            mx_call_add_header(call, h->name->base, h->name->len, h->value.base, h->value.len);
        } else if (h->name->len == 16 && strncasecmp(h->name->base, "content-encoding", 16) == 0) {
            json = false; /* cannot be read: passed on as it is (mxkeys never asks for it) */
            mx_call_add_header(call, h->name->base, h->name->len, h->value.base, h->value.len);
        } else if (mx_hs_header_passes(h)) {
            mx_call_add_header(call, h->name->base, h->name->len, h->value.base, h->value.len);
        }
    }
    if (status == 200 && json && call->device_id[0] != '\0') {
        s->splicing = true;
        if (s->counts_in)
            apply_counts(s);
        else if (!s->counts_asked) {
            /* read now, not when the poll began: claims made meanwhile count */
            s->counts_asked = true;
            read_counts(call);
        }
        return 0;
    }
    s->counts_ready = true;
    start_answer(s, status);
    return 0;
}

static int on_body(void *data, const char *bytes, size_t len, bool final)
{
    sync_t *s = data;
    if (mx_call_answered(s->call) && !s->started) {
        s->up = NULL; /* answered otherwise (the database failed while the counts were read): freed on return */
        return -1;
    }
    if (final) {
        s->upstream_done = true;
        s->up = NULL; /* freed after this returns */
    }
    if (!s->counts_ready)
        mx_buf_append(&s->raw, bytes, len);
    else
        take(s, bytes, len);
    if (final && s->splicing && !s->counts_ready)
        return 0; /* apply_counts finishes it */
    if (final && s->splicing && !s->splice_failed && mx_splice_finish(&s->splice, &s->out[!s->send]) != 0)
        mx_warn("%s: the homeserver's answer ended early or was not JSON", s->call->route->name);
    if (!final)
        backpressure(s);
    flush(s);
    return 0;
}

static void on_error(void *data, mx_upstream_error_t kind, const char *why)
{
    sync_t *s = data;
    mx_call_t *call = s->call;
    s->up = NULL;
    mx_warn("homeserver: %s %s: %s", call->route->name, kind == MX_UPSTREAM_TIMEOUT ? "timed out" : "failed", why);
    if (s->started) {
        mx_call_stream_abort(call); /* the client sees a cut answer, never a wrong one */
        return;
    }
    if (mx_call_answered(call))
        return;
    mx_hs_answer_t a = {.status = 0, .error = kind, .why = why};
    mx_hs_error(call, &a);
}

static const mx_upstream_handlers_t sync_handlers = {on_head, on_body, on_error};

/* The poll's own timeout (ms): the `timeout` query parameter, as the homeserver will read it. */
static unsigned poll_timeout_ms(mx_call_t *call)
{
    const char *t = mx_call_query(call, "timeout");
    if (t == NULL)
        return 0;
    char *end;
    unsigned long v = strtoul(t, &end, 10);
    return *end != '\0' ? 0 : v > MAX_POLL_MS ? MAX_POLL_MS : (unsigned)v;
}

static void forward_sync(mx_call_t *call, bool sliding)
{
    if (call->worker->homeserver == NULL) {
        mx_call_error(call, MX_ERR_UNRECOGNIZED_PATH,
                      "/sync is served by the homeserver; mxkeys answers it only beside one (--auth homeserver)");
        return;
    }
    sync_t *s = h2o_mem_alloc_shared(&call->req->pool, sizeof(*s), on_sync_dispose);
    memset(s, 0, sizeof(*s));
    s->generator.proceed = on_proceed;
    s->generator.stop = on_stop;
    s->call = call;
    s->sliding = sliding;
    call->ext = s;
    h2o_req_t *req = call->req;
    char *method = mx_call_strdup(call, req->method.base, req->method.len);
    mx_upstream_spec_t spec;
    mx_hs_spec(call, &spec, method, req->path.base, req->path.len, req->entity.base,
               req->entity.base ? req->entity.len : 0);
    unsigned poll_ms = poll_timeout_ms(call);
    spec.deadline_ms = poll_ms + call->config->homeserver_timeout_ms;
    spec.long_poll = true;
    spec.retry_safe = true; /* a sync changes nothing by being asked twice */
    if (mx_upstream_start(call->worker->homeserver, &spec, &sync_handlers, s, &s->up) != 0) {
        s->up = NULL;
        mx_call_error(call, MX_ERR_HS_UNREACHABLE, "cannot send this request to the homeserver");
        return;
    }
    /* A poll that is answered at once: the counts are read while the homeserver works, not after it. */
    if (poll_ms == 0 && !mx_call_answered(call) && call->device_id[0] != '\0' && !s->counts_asked) {
        s->counts_asked = true;
        read_counts(call);
    }
}

void mx_api_sync(mx_call_t *call)
{
    forward_sync(call, false);
}

void mx_api_sliding_sync(mx_call_t *call)
{
    forward_sync(call, true);
}
