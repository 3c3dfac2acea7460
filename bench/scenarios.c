#include "scenarios.h"
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mxkeys/canonical_json.h"

#define CLIENT "/_matrix/client/v3"
#define ROOM_SESSIONS 20 /* backup sessions per room */

enum { NOTE_UPLOAD_FRESH, NOTE_UPLOAD_REPEAT };
enum { NOTE_CLAIM_OTK, NOTE_CLAIM_FALLBACK, NOTE_CLAIM_NONE };

uint64_t bench_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t below(uint64_t *rng, size_t n)
{
    return n == 0 ? 0 : (size_t)(bench_rand(rng) % n);
}

int64_t bench_index_start(int64_t backup_epoch)
{
    /* Megolm message indexes are 32-bit and servers store them so (Synapse: a signed 32-bit column, which answers
     * 500 to anything larger): start at the top of that range when the backups are created and fall by
     * BENCH_INDEX_PER_SECOND each second since. Every process that writes to the same backups (set-up, each run,
     * pgbench in bench/run.sh) then starts below whatever an earlier one wrote, as long as none wrote more than
     * that many backup requests a second. */
    int64_t now = (int64_t)time(NULL);
    int64_t elapsed = backup_epoch > 0 && backup_epoch <= now ? now - backup_epoch : 0;
    return BENCH_INDEX_TOP - elapsed * BENCH_INDEX_PER_SECOND;
}

void bench_room_id(size_t i, char *out, size_t outlen)
{
    snprintf(out, outlen, "!benchroom%zu:bench.invalid", i / ROOM_SESSIONS);
}

int bench_ctx_init(bench_ctx_t *ctx, char *err, size_t errlen)
{
    const bench_options_t *o = ctx->opts;
    /* The backup size is the population's (a loaded state may differ from this run's --backup-sessions). */
    unsigned stored = ctx->pop->backup_sessions;
    ctx->session_space = stored > o->sessions ? stored : o->sessions;
    ctx->session_ids = calloc(ctx->session_space, sizeof(char *));
    ctx->backup_window = calloc(ctx->pop->nusers ? ctx->pop->nusers : 1, sizeof(*ctx->backup_window));
    if (ctx->session_ids == NULL || ctx->backup_window == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Session ids look like megolm session ids (43 characters of unpadded base64) and are the same for every user. */
    for (size_t i = 0; i < ctx->session_space; i++) {
        uint8_t h[32];
        char b64[64];
        char seed[32];
        int n = snprintf(seed, sizeof(seed), "session %zu", i);
        crypto_hash_sha256(h, (const uint8_t *)seed, (unsigned long long)n);
        sodium_bin2base64(b64, sizeof(b64), h, sizeof(h), sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
        ctx->session_ids[i] = strdup(b64);
        if (ctx->session_ids[i] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    int64_t index = bench_index_start(ctx->pop->backup_epoch);
    if (ctx->pop->backup_sessions > 0 && index < BENCH_INDEX_FLOOR) {
        snprintf(err, errlen,
                 "the backups of this population were created %lld days ago: too long for first_message_index to go "
                 "on falling within 32 bits; set up a new population",
                 (long long)((BENCH_INDEX_TOP - index) / BENCH_INDEX_PER_SECOND / 86400));
        return -1;
    }
    atomic_init(&ctx->next_index, index);
    atomic_init(&ctx->upload_next, 0);
    size_t claimable = ctx->pop->ndevices;
    ctx->claim_targets = o->claim_devices > 0 && o->claim_devices < claimable ? o->claim_devices : claimable;
    return 0;
}

void bench_ctx_free(bench_ctx_t *ctx)
{
    for (size_t i = 0; ctx->session_ids != NULL && i < ctx->session_space; i++)
        free(ctx->session_ids[i]);
    free(ctx->session_ids);
    free(ctx->backup_window);
    for (size_t i = 0; i < ctx->nupload_bodies; i++)
        free(ctx->upload_bodies[i]);
    free(ctx->upload_bodies);
    free(ctx->upload_lens);
    free(ctx->upload_device);
    for (size_t i = 0; i < ctx->nxsign; i++)
        free(ctx->xsign_bodies[i]);
    free(ctx->xsign_bodies);
    free(ctx->xsign_lens);
    free(ctx->xsign_device);
    free(ctx->xsign_kind);
}

bench_scenario_t bench_pick(const bench_options_t *o, uint64_t *rng)
{
    unsigned total = bench_options_weight(o), r = (unsigned)(bench_rand(rng) % total);
    for (int i = 0; i < SC_COUNT; i++) {
        if (r < o->weights[i])
            return (bench_scenario_t)i;
        r -= o->weights[i];
    }
    return SC_QUERY;
}

void bench_backup_body(const bench_ctx_t *ctx, size_t u, size_t from, size_t to, int64_t index, mx_buf_t *out)
{
    const bench_user_t *user = &ctx->pop->users[u];
    char room[128], prev[128] = "";
    mx_buf_puts(out, "{\"rooms\":{");
    for (size_t i = from; i < to; i++) {
        bench_room_id(i, room, sizeof(room));
        if (strcmp(room, prev) != 0) {
            mx_buf_printf(out, "%s\"%s\":{\"sessions\":{", prev[0] != '\0' ? "}}," : "", room);
            memcpy(prev, room, sizeof(room));
        } else {
            mx_buf_putc(out, ',');
        }
        /* Members in canonical order, so a raw-SQL replay can find and replace the index textually. */
        mx_buf_printf(out,
                      "\"%s\":{\"first_message_index\":%lld,\"forwarded_count\":0,\"is_verified\":false,"
                      "\"session_data\":%s}",
                      ctx->session_ids[i], (long long)index, user->blobs[i % user->nblobs]);
    }
    mx_buf_puts(out, from < to ? "}}}}" : "}}");
}

static void put_query_value(mx_buf_t *out, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c))
            mx_buf_putc(out, (char)c);
        else
            mx_buf_printf(out, "%%%02X", c);
    }
}

static const bench_device_t *any_device(const bench_ctx_t *ctx, uint64_t *rng)
{
    return &ctx->pop->devices[below(rng, ctx->pop->ndevices)];
}

/* A user with a backup, and one of that user's devices to act as. */
static size_t backup_user(const bench_ctx_t *ctx, uint64_t *rng, const bench_device_t **dev)
{
    size_t u = below(rng, ctx->pop->nusers);
    for (size_t tries = 0; tries < ctx->pop->nusers && ctx->pop->users[u].backup_version == NULL; tries++)
        u = (u + 1) % ctx->pop->nusers;
    const bench_user_t *user = &ctx->pop->users[u];
    *dev = &ctx->pop->devices[user->first_device + below(rng, user->ndevices)];
    return u;
}

void bench_scenario_build(bench_ctx_t *ctx, bench_scenario_t sc, uint64_t *rng, mx_buf_t *req, mx_buf_t *scratch,
                          int *note, const char **user_id)
{
    const bench_target_t *t = ctx->target;
    const bench_population_t *pop = ctx->pop;
    *note = -1;
    *user_id = NULL;
    mx_buf_reset(scratch);
    switch (sc) {
    case SC_UPLOAD: {
        uint64_t i = atomic_fetch_add_explicit(&ctx->upload_next, 1, memory_order_relaxed);
        size_t b = (size_t)(i % ctx->nupload_bodies);
        *note = i < ctx->nupload_bodies ? NOTE_UPLOAD_FRESH : NOTE_UPLOAD_REPEAT;
        bench_http_format(req, t, "POST", CLIENT "/keys/upload", pop->upload[ctx->upload_device[b]].token,
                          ctx->upload_bodies[b], ctx->upload_lens[b]);
        return;
    }
    case SC_QUERY: {
        size_t start = below(rng, pop->nusers);
        mx_buf_puts(scratch, "{\"device_keys\":{");
        size_t nq = ctx->opts->query_users < pop->nusers ? ctx->opts->query_users : pop->nusers;
        for (size_t k = 0; k < nq; k++) {
            mx_buf_puts(scratch, k > 0 ? ",\"" : "\"");
            const char *uid = pop->users[(start + k) % pop->nusers].user_id;
            mx_json_escape(scratch, uid, strlen(uid));
            mx_buf_puts(scratch, "\":[]");
        }
        mx_buf_puts(scratch, "}}");
        bench_http_format(req, t, "POST", CLIENT "/keys/query", any_device(ctx, rng)->token, scratch->data,
                          scratch->len);
        return;
    }
    case SC_CLAIM: {
        const bench_device_t *target = &pop->devices[below(rng, ctx->claim_targets)];
        mx_buf_puts(scratch, "{\"one_time_keys\":{\"");
        mx_json_escape(scratch, target->user_id, strlen(target->user_id));
        mx_buf_puts(scratch, "\":{\"");
        mx_json_escape(scratch, target->device_id, strlen(target->device_id));
        mx_buf_puts(scratch, "\":\"signed_curve25519\"}}}");
        bench_http_format(req, t, "POST", CLIENT "/keys/claim", any_device(ctx, rng)->token, scratch->data,
                          scratch->len);
        return;
    }
    case SC_CHANGES: {
        mx_buf_puts(scratch, CLIENT "/keys/changes?from=");
        put_query_value(scratch, pop->changes_from);
        mx_buf_puts(scratch, "&to=");
        put_query_value(scratch, pop->changes_to);
        bench_http_format(req, t, "GET", scratch->data, any_device(ctx, rng)->token, NULL, 0);
        return;
    }
    case SC_BACKUP_PUT: {
        const bench_device_t *dev;
        size_t u = backup_user(ctx, rng, &dev);
        size_t per = ctx->opts->sessions < ctx->session_space ? ctx->opts->sessions : ctx->session_space;
        size_t windows = ctx->session_space / per;
        size_t w = (size_t)(atomic_fetch_add_explicit(&ctx->backup_window[u], 1, memory_order_relaxed) % windows);
        int64_t index = atomic_fetch_sub_explicit(&ctx->next_index, 1, memory_order_relaxed);
        bench_backup_body(ctx, u, w * per, w * per + per, index, scratch);
        *user_id = pop->users[u].user_id;
        /* The path goes after the body's NUL in the same buffer: both are read once all appends are done. */
        size_t body_len = scratch->len;
        mx_buf_putc(scratch, '\0');
        mx_buf_puts(scratch, CLIENT "/room_keys/keys?version=");
        put_query_value(scratch, pop->users[u].backup_version);
        bench_http_format(req, t, "PUT", scratch->data + body_len + 1, dev->token, scratch->data, body_len);
        return;
    }
    case SC_BACKUP_GET: {
        const bench_device_t *dev;
        size_t u = backup_user(ctx, rng, &dev);
        mx_buf_puts(scratch, CLIENT "/room_keys/keys?version=");
        put_query_value(scratch, pop->users[u].backup_version);
        bench_http_format(req, t, "GET", scratch->data, dev->token, NULL, 0);
        return;
    }
    case SC_CROSS_SIGN: {
        size_t i = below(rng, ctx->nxsign);
        *note = ctx->xsign_kind[i];
        bench_http_format(req, t, "POST", CLIENT "/keys/signatures/upload", pop->devices[ctx->xsign_device[i]].token,
                          ctx->xsign_bodies[i], ctx->xsign_lens[i]);
        return;
    }
    case SC_COUNT:
        break;
    }
}

static bool contains(const char *body, size_t len, const char *needle)
{
    return body != NULL && memmem(body, len, needle, strlen(needle)) != NULL;
}

/* `"fallback": true` in any JSON spacing (a server may splice stored JSON in as its database prints it). */
static bool marked_fallback(const char *body, size_t len)
{
    static const char name[] = "\"fallback\"";
    const char *end = body + len, *p = body;
    while (p < end && (p = memmem(p, (size_t)(end - p), name, sizeof(name) - 1)) != NULL) {
        p += sizeof(name) - 1;
        const char *q = p;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        if (q < end && *q++ == ':') {
            while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
                q++;
            if (end - q >= 4 && memcmp(q, "true", 4) == 0)
                return true;
        }
    }
    return false;
}

static const char *const expect[SC_COUNT] = {
    [SC_UPLOAD] = "\"one_time_key_counts\"", [SC_QUERY] = "\"device_keys\"",
    [SC_CLAIM] = "\"one_time_keys\"",        [SC_CHANGES] = "\"changed\"",
    [SC_CROSS_SIGN] = "\"failures\"",        [SC_BACKUP_PUT] = "\"etag\"",
    [SC_BACKUP_GET] = "\"rooms\"",
};

int bench_scenario_check(bench_scenario_t sc, int status, const char *body, size_t len, int *note, char *key,
                         size_t keylen, char *detail, size_t detaillen)
{
    /* signatures/upload answers 200 even when it refused a signature: a refusal is in `failures`. */
    bool refused = sc == SC_CROSS_SIGN && contains(body, len, "errcode");
    if (status == 200 && contains(body, len, expect[sc]) && !refused) {
        if (sc == SC_CLAIM)
            *note = marked_fallback(body, len)                  ? NOTE_CLAIM_FALLBACK
                    : contains(body, len, "signed_curve25519:") ? NOTE_CLAIM_OTK
                                                                : NOTE_CLAIM_NONE;
        return 0;
    }
    /* Unexpected: name it by status and Matrix errcode when the body says one. */
    json_t *j = len > 0 && body[0] == '{' ? json_loadb(body, len, 0, NULL) : NULL;
    const char *errcode = json_string_value(json_object_get(j, "errcode"));
    if (errcode != NULL)
        snprintf(key, keylen, "%d %.60s", status, errcode);
    else if (refused)
        snprintf(key, keylen, "200 with failures");
    else if (status == 200)
        snprintf(key, keylen, "200 without %s", expect[sc]);
    else
        snprintf(key, keylen, "%d", status);
    json_decref(j);
    size_t n = len < detaillen - 1 ? len : detaillen - 1;
    for (size_t i = 0; i < n; i++)
        detail[i] = body[i] == '\n' || body[i] == '\r' ? ' ' : body[i];
    detail[n] = '\0';
    return -1;
}

const char *bench_note_name(bench_scenario_t sc, int note)
{
    static const char *const upload[] = {"fresh", "repeated"}, *const claim[] = {"one-time", "fallback", "nothing"},
                             *const xsign[] = {"own device", "other user"};
    if (sc == SC_CROSS_SIGN && note >= 0 && note < 2)
        return xsign[note];
    if (sc == SC_UPLOAD && note >= 0 && note < 2)
        return upload[note];
    if (sc == SC_CLAIM && note >= 0 && note < 3)
        return claim[note];
    return NULL;
}
