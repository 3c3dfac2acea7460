/* The query cache's store (src/core/query_cache.c): viewer variants, device lists, tickets voided by forgets and
 * clears, the proof's expiry, the memory bound. The integration tests (test_query_cache.py) cover it with a database.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"
#include "mxkeys/query_cache.h"

#define LIVE_FOR_S(s) (mx_query_cache_now_ns() + (uint64_t)(s)*1000000000ULL)

typedef struct {
    mx_buf_t dk, m, s, u;
    mx_qc_out_t out;
} outs_t;

static void outs_init(outs_t *o)
{
    memset(o, 0, sizeof(*o));
    o->out = (mx_qc_out_t){&o->dk, &o->m, &o->s, &o->u};
}

static void outs_free(outs_t *o)
{
    mx_buf_free(&o->dk);
    mx_buf_free(&o->m);
    mx_buf_free(&o->s);
    mx_buf_free(&o->u);
}

static const char *text(const mx_buf_t *b)
{
    return b->len ? b->data : "";
}

#define ADD(e, kind, item, item_json, signer, body)                                                                    \
    CHECK(mx_qc_entry_add(e, kind, item, strlen(item), item_json, strlen(item_json), signer, strlen(signer), body,     \
                          strlen(body)) == 0)

/* @a: devices D1 (signed by nobody else) and D2, a master key signed by @b (a variant for @b), a user-signing key. */
static mx_qc_entry_t *alice(void)
{
    mx_qc_entry_t *e = mx_qc_entry_new("@a:x", 4, "\"@a:x\"", 6);
    ADD(e, 'd', "D1", "\"D1\"", "", "{\"d\": 1}");
    ADD(e, 'd', "D2", "\"D2\"", "", "{\"d\": 2}");
    ADD(e, 'm', "MPK", "", "", "{\"m\": \"base\"}");
    ADD(e, 'm', "MPK", "", "@b:x", "{\"m\": \"with b\"}");
    ADD(e, 'u', "UPK", "", "", "{\"u\": 1}");
    return e;
}

static void test_views(void)
{
    mx_qc_entry_t *e = alice();
    outs_t o;
    outs_init(&o);
    mx_qc_entry_write(e, "@c:x", NULL, 0, &o.out);
    CHECK_STREQ(text(&o.dk), "\"@a:x\": {\"D1\": {\"d\": 1}, \"D2\": {\"d\": 2}}");
    CHECK_STREQ(text(&o.m), "\"@a:x\": {\"m\": \"base\"}");
    CHECK_STREQ(text(&o.u), ""); /* not the owner */
    outs_free(&o);

    outs_init(&o);
    mx_qc_entry_write(e, "@b:x", NULL, 0, &o.out);
    CHECK_STREQ(text(&o.m), "\"@a:x\": {\"m\": \"with b\"}"); /* the signer sees its signature */
    outs_free(&o);

    outs_init(&o);
    mx_qc_entry_write(e, "@a:x", NULL, 0, &o.out);
    CHECK_STREQ(text(&o.m), "\"@a:x\": {\"m\": \"base\"}"); /* the owner never sees @b's */
    CHECK_STREQ(text(&o.u), "\"@a:x\": {\"u\": 1}");
    outs_free(&o);

    const char *wanted[] = {"D2", "NOSUCH"};
    outs_init(&o);
    mx_qc_entry_write(e, "@c:x", wanted, 2, &o.out);
    mx_qc_entry_write(e, "@c:x", wanted, 2, &o.out); /* a second user in the same maps: comma-separated */
    CHECK_STREQ(text(&o.dk), "\"@a:x\": {\"D2\": {\"d\": 2}}, \"@a:x\": {\"D2\": {\"d\": 2}}");
    outs_free(&o);

    mx_qc_entry_t *empty = mx_qc_entry_new("@n:x", 4, "\"@n:x\"", 6);
    outs_init(&o);
    mx_qc_entry_write(empty, "@c:x", NULL, 0, &o.out);
    CHECK_STREQ(text(&o.dk), "\"@n:x\": {}");
    CHECK_STREQ(text(&o.m), "");
    outs_free(&o);
    mx_qc_entry_free(empty);
    mx_qc_entry_free(e);
}

static bool cached(mx_query_cache_t *qc, const char *user)
{
    outs_t o;
    outs_init(&o);
    bool hit = mx_query_cache_write(qc, user, strlen(user), "@c:x", NULL, 0, &o.out);
    outs_free(&o);
    return hit;
}

static void test_tickets(void)
{
    mx_query_cache_t *qc = mx_query_cache_new(1 << 20);
    CHECK(mx_query_cache_begin_fill(qc, "@a:x", 4) == 0); /* not live yet: no fills */
    mx_query_cache_confirm(qc, LIVE_FOR_S(60));

    uint64_t t = mx_query_cache_begin_fill(qc, "@a:x", 4);
    mx_qc_entry_t *e = alice();
    CHECK(t != 0 && mx_query_cache_end_fill(qc, t, e));
    CHECK(cached(qc, "@a:x"));

    /* a forget between ticket and fill voids the fill */
    mx_query_cache_forget(qc, "@a:x", 4);
    CHECK(!cached(qc, "@a:x"));
    t = mx_query_cache_begin_fill(qc, "@a:x", 4);
    mx_query_cache_forget(qc, "@a:x", 4);
    e = alice();
    CHECK(!mx_query_cache_end_fill(qc, t, e));
    mx_qc_entry_free(e);
    CHECK(!cached(qc, "@a:x"));

    /* so does a clear */
    t = mx_query_cache_begin_fill(qc, "@a:x", 4);
    mx_query_cache_clear(qc);
    e = alice();
    CHECK(!mx_query_cache_end_fill(qc, t, e));
    mx_qc_entry_free(e);

    /* concurrent readers of one user: the first to finish is stored, the other's fill is simply not needed */
    uint64_t first = mx_query_cache_begin_fill(qc, "@a:x", 4);
    uint64_t second = mx_query_cache_begin_fill(qc, "@a:x", 4);
    e = alice();
    CHECK(mx_query_cache_end_fill(qc, second, e));
    e = alice();
    CHECK(!mx_query_cache_end_fill(qc, first, e));
    mx_qc_entry_free(e);
    CHECK(cached(qc, "@a:x"));
    /* an abandoned fill (its request failed) does not stop the next reader */
    mx_query_cache_forget(qc, "@a:x", 4);
    (void)mx_query_cache_begin_fill(qc, "@a:x", 4); /* never finished */
    t = mx_query_cache_begin_fill(qc, "@a:x", 4);
    e = alice();
    CHECK(mx_query_cache_end_fill(qc, t, e));
    /* a ticket taken before a forget is void even when a newer placeholder exists by the time it finishes */
    mx_query_cache_forget(qc, "@a:x", 4);
    uint64_t stale = mx_query_cache_begin_fill(qc, "@a:x", 4);
    mx_query_cache_forget(qc, "@a:x", 4);
    uint64_t fresh = mx_query_cache_begin_fill(qc, "@a:x", 4);
    e = alice();
    CHECK(!mx_query_cache_end_fill(qc, stale, e));
    CHECK(mx_query_cache_end_fill(qc, fresh, e));
    /* a ready entry is never replaced by a fill that started after it was stored */
    t = mx_query_cache_begin_fill(qc, "@a:x", 4);
    e = alice();
    CHECK(!mx_query_cache_end_fill(qc, t, e));
    mx_qc_entry_free(e);

    mx_query_cache_free(qc);

    /* the proof runs out: no answers; a new proof empties the cache first */
    qc = mx_query_cache_new(1 << 20);
    mx_query_cache_confirm(qc, mx_query_cache_now_ns() + 300000000ULL); /* 300 ms */
    t = mx_query_cache_begin_fill(qc, "@a:x", 4);
    CHECK(mx_query_cache_end_fill(qc, t, alice()) && cached(qc, "@a:x"));
    struct timespec nap = {0, 400000000L};
    nanosleep(&nap, NULL);
    CHECK(!mx_query_cache_live(qc));
    CHECK(!cached(qc, "@a:x"));
    mx_query_cache_confirm(qc, LIVE_FOR_S(60));
    CHECK(mx_query_cache_live(qc) && !cached(qc, "@a:x"));

    /* a lost feed: not live, empty */
    t = mx_query_cache_begin_fill(qc, "@a:x", 4);
    CHECK(mx_query_cache_end_fill(qc, t, alice()));
    mx_query_cache_lost(qc);
    CHECK(!mx_query_cache_live(qc));
    mx_query_cache_confirm(qc, LIVE_FOR_S(60));
    CHECK(!cached(qc, "@a:x"));
    mx_query_cache_free(qc);
}

static void test_bound(void)
{
    size_t bound = 20000;
    mx_query_cache_t *qc = mx_query_cache_new(bound);
    mx_query_cache_confirm(qc, LIVE_FOR_S(60));
    char user[32];
    for (int i = 0; i < 500; i++) {
        int n = snprintf(user, sizeof(user), "@u%d:x", i);
        uint64_t t = mx_query_cache_begin_fill(qc, user, (size_t)n);
        mx_qc_entry_t *e = mx_qc_entry_new(user, (size_t)n, user, (size_t)n);
        ADD(e, 'd', "D", "\"D\"", "", "{\"keys\": \"0123456789012345678901234567890123456789\"}");
        if (!mx_query_cache_end_fill(qc, t, e))
            mx_qc_entry_free(e);
        mx_query_cache_stats_t st;
        mx_query_cache_stats(qc, &st);
        CHECK(st.bytes <= bound);
    }
    mx_query_cache_stats_t st;
    mx_query_cache_stats(qc, &st);
    CHECK(st.evictions > 0 && st.users > 10 && st.users < 500);
    CHECK(cached(qc, "@u499:x")); /* the most recent stays */
    CHECK(!cached(qc, "@u0:x"));  /* the oldest went */
    /* an entry bigger than the whole bound is never stored */
    uint64_t t = mx_query_cache_begin_fill(qc, "@big:x", 6);
    mx_qc_entry_t *e = mx_qc_entry_new("@big:x", 6, "\"@big:x\"", 8);
    char *body = malloc(bound + 1);
    memset(body, 'x', bound);
    body[bound] = '\0';
    ADD(e, 'd', "D", "\"D\"", "", body);
    free(body);
    CHECK(!mx_query_cache_end_fill(qc, t, e));
    mx_qc_entry_free(e);
    mx_query_cache_free(qc);
}

int main(void)
{
    test_views();
    test_tickets();
    test_bound();
    return check_finish("query_cache");
}
