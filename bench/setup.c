#include "setup.h"
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mint.h"
#include "payloads.h"
#include "sync_client.h"

#define CLIENT "/_matrix/client/v3"
#define BACKUP_ALGORITHM "m.megolm_backup.v1.curve25519-aes-sha2"
#define ERRLEN 512

/* ---- a parallel for over blocking connections ----------------------------------------------------------------- */

typedef int (*job_fn)(bench_ctx_t *ctx, size_t i, bench_sync_t *http, char *err);

typedef struct st_jobs_t {
    bench_ctx_t *ctx;
    job_fn fn;
    size_t n;
    _Atomic size_t next, done;
    _Atomic int failed;
    pthread_mutex_t lock;
    char err[ERRLEN];
} jobs_t;

static void *jobs_thread(void *arg)
{
    jobs_t *j = arg;
    bench_sync_t http;
    bench_sync_init(&http, j->ctx->target);
    char err[ERRLEN];
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n || atomic_load(&j->failed))
            break;
        err[0] = '\0';
        if (j->fn(j->ctx, i, &http, err) != 0) {
            pthread_mutex_lock(&j->lock);
            if (!atomic_exchange(&j->failed, 1))
                snprintf(j->err, sizeof(j->err), "%s", err);
            pthread_mutex_unlock(&j->lock);
            break;
        }
        atomic_fetch_add(&j->done, 1);
    }
    bench_sync_close(&http);
    return NULL;
}

/* Runs fn(0..n-1) on up to --setup-threads threads; the first failure stops the rest. */
static int run_jobs(bench_ctx_t *ctx, const char *what, size_t n, job_fn fn, bool progress, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    jobs_t j = {.ctx = ctx, .fn = fn, .n = n};
    pthread_mutex_init(&j.lock, NULL);
    size_t nthreads = ctx->opts->setup_threads < n ? ctx->opts->setup_threads : n;
    pthread_t tids[256];
    size_t started = 0;
    for (; started < nthreads; started++)
        if (pthread_create(&tids[started], NULL, jobs_thread, &j) != 0)
            break;
    if (started == 0) {
        snprintf(err, errlen, "%s: cannot start a set-up thread", what);
        return -1;
    }
    if (progress) {
        while (atomic_load(&j.done) < n && !atomic_load(&j.failed) && atomic_load(&j.next) < n + started) {
            fprintf(stderr, "\r\033[K[set-up] %s %zu/%zu", what, atomic_load(&j.done), n);
            struct timespec nap = {0, 250000000};
            nanosleep(&nap, NULL);
        }
    }
    for (size_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    if (progress)
        fprintf(stderr, "\r\033[K[set-up] %s %zu/%zu\n", what, atomic_load(&j.done), n);
    pthread_mutex_destroy(&j.lock);
    if (atomic_load(&j.failed)) {
        snprintf(err, errlen, "set-up, %s: %s", what, j.err);
        return -1;
    }
    return 0;
}

/* ---- helpers -------------------------------------------------------------------------------------------------- */

/* One call that must answer 200 with a JSON object; returns the parsed body (caller decrefs) or NULL with `err`. */
static json_t *call_json(bench_sync_t *http, const char *method, const char *path, const char *token, const char *body,
                         size_t len, char *err)
{
    if (bench_sync_call(http, method, path, token, body, len, err) != 0)
        return NULL;
    json_t *j = json_loadb(http->resp.body.data ? http->resp.body.data : "", http->resp.body.len, 0, NULL);
    if (http->resp.status != 200 || !json_is_object(j)) {
        snprintf(err, ERRLEN, "%s %s answered %d: %.300s", method, path, http->resp.status,
                 http->resp.body.data ? http->resp.body.data : "");
        json_decref(j);
        return NULL;
    }
    return j;
}

static json_t *call_json_obj(bench_sync_t *http, const char *method, const char *path, const char *token, json_t *body,
                             char *err)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_t *r = text != NULL ? call_json(http, method, path, token, text, strlen(text), err) : NULL;
    free(text);
    return r;
}

static void random_nonce(char out[8])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int i = 0; i < 6; i++)
        out[i] = alphabet[randombytes_uniform(sizeof(alphabet) - 1)];
    out[6] = '\0';
}

/* Unclaimed signed_curve25519 keys the server holds for the token's device (an empty upload reports them). */
static long otk_count(bench_sync_t *http, const char *token, char *err)
{
    json_t *r = call_json(http, "POST", CLIENT "/keys/upload", token, "{}", 2, err);
    if (r == NULL)
        return -1;
    long n = (long)json_integer_value(json_object_get(json_object_get(r, "one_time_key_counts"), "signed_curve25519"));
    json_decref(r);
    return n;
}

/* A device-list stream token: mxkeys' own position, else (another homeserver) a /sync next_batch. */
static char *stream_token(bench_ctx_t *ctx, char *err, size_t errlen)
{
    bench_sync_t http;
    bench_sync_init(&http, ctx->target);
    const char *token = ctx->pop->devices[0].token;
    char e[ERRLEN];
    char *out = NULL;
    json_t *r = call_json(&http, "GET", "/_mxkeys/v1/stream_position", token, NULL, 0, e);
    if (r != NULL) {
        out = bench_strdup(json_string_value(json_object_get(r, "device_list")));
    } else {
        static const char sync[] =
            CLIENT "/sync?timeout=0&filter=%7B%22room%22%3A%7B%22rooms%22%3A%5B%5D%7D%2C%22presence%22%3A%7B%22types"
                   "%22%3A%5B%5D%7D%2C%22account_data%22%3A%7B%22types%22%3A%5B%5D%7D%7D";
        r = call_json(&http, "GET", sync, token, NULL, 0, e);
        if (r != NULL)
            out = bench_strdup(json_string_value(json_object_get(r, "next_batch")));
    }
    if (out == NULL)
        snprintf(err, errlen, "no device-list stream token (stream_position and /sync both failed: %s)", e);
    json_decref(r);
    bench_sync_close(&http);
    return out;
}

/* ---- population ----------------------------------------------------------------------------------------------- */

static char key_prefix[8]; /* one-time key ids of this run: unique even on devices a tokens file reuses */

static int job_mint(bench_ctx_t *ctx, size_t i, bench_sync_t *http, char *err)
{
    (void)http;
    bench_device_t *d = &ctx->pop->devices[i];
    return (d->token = bench_mint(ctx->opts->mint_command, d->user_id, d->device_id, err)) != NULL ? 0 : -1;
}

static int job_mint_upload(bench_ctx_t *ctx, size_t i, bench_sync_t *http, char *err)
{
    (void)http;
    bench_device_t *d = &ctx->pop->upload[i];
    return (d->token = bench_mint(ctx->opts->mint_command, d->user_id, d->device_id, err)) != NULL ? 0 : -1;
}

static bool is_first_device(const bench_ctx_t *ctx, size_t i, size_t *user)
{
    for (size_t u = 0; u < ctx->pop->nusers; u++) {
        if (ctx->pop->users[u].first_device == i) {
            *user = u;
            return true;
        }
        if (ctx->pop->users[u].first_device > i)
            break;
    }
    return false;
}

static int make_blobs(bench_ctx_t *ctx, size_t u, char *err)
{
    bench_user_t *user = &ctx->pop->users[u];
    const bench_device_t *sender = &ctx->pop->devices[user->first_device];
    if (sender->ed25519 == NULL || sender->curve25519 == NULL || user->backup_pub == NULL) {
        snprintf(err, ERRLEN, "%s: the state lacks its device or backup keys", user->user_id);
        return -1;
    }
    user->blobs = calloc(ctx->opts->blob_pool, sizeof(char *));
    if (user->blobs == NULL) {
        snprintf(err, ERRLEN, "out of memory");
        return -1;
    }
    for (unsigned b = 0; b < ctx->opts->blob_pool; b++) {
        mx_buf_t out = MX_BUF_INIT;
        if (bench_backup_session_data(user->backup_pub, sender->curve25519, sender->ed25519, &out, err) != 0) {
            mx_buf_free(&out);
            return -1;
        }
        user->blobs[user->nblobs++] = out.data;
    }
    return 0;
}

/* The user's cross-signing keys: master, and self-signing and user-signing keys signed by it, uploaded together
 * (a first upload needs no interactive auth). A server that asks for it anyway (401) is fatal only when cross-sign
 * was asked for; set-up alone then goes on without cross-signing. */
static int create_cross_signing(bench_ctx_t *ctx, size_t u, bench_sync_t *http, char *err)
{
    bench_user_t *user = &ctx->pop->users[u];
    char mseed[64], sseed[64], useed[64];
    if (bench_pk_seed(mseed, err) != 0 || bench_pk_seed(sseed, err) != 0 || bench_pk_seed(useed, err) != 0)
        return -1;
    json_t *master = bench_pk_key_object(mseed, user->user_id, "master", err);
    json_t *ssk = bench_pk_key_object(sseed, user->user_id, "self_signing", err);
    json_t *usk = bench_pk_key_object(useed, user->user_id, "user_signing", err);
    json_t *body = NULL;
    int rc = -1;
    if (master == NULL || ssk == NULL || usk == NULL || bench_pk_sign(mseed, user->user_id, ssk, NULL, err) != 0 ||
        bench_pk_sign(mseed, user->user_id, usk, NULL, err) != 0)
        goto done;
    body = json_pack("{s:O, s:O, s:O}", "master_key", master, "self_signing_key", ssk, "user_signing_key", usk);
    char *text = json_dumps(body, JSON_COMPACT);
    int sent = text != NULL ? bench_sync_call(http, "POST", CLIENT "/keys/device_signing/upload",
                                              ctx->pop->devices[user->first_device].token, text, strlen(text), err)
                            : -1;
    free(text);
    if (sent != 0)
        goto done;
    if (http->resp.status != 200) {
        snprintf(err, ERRLEN, "POST /keys/device_signing/upload for %s answered %d: %.200s", user->user_id,
                 http->resp.status, http->resp.body.data ? http->resp.body.data : "");
        if (ctx->opts->implicit_mix) {
            static _Atomic int warned;
            if (!atomic_exchange(&warned, 1))
                fprintf(stderr, "mxkeys-bench: set-up goes on without cross-signing keys: %s\n", err);
            rc = 0;
        }
        goto done;
    }
    user->master_json = json_dumps(master, JSON_COMPACT);
    user->ssk_seed = bench_strdup(sseed);
    user->usk_seed = bench_strdup(useed);
    rc = 0;
done:
    sodium_memzero(mseed, sizeof(mseed));
    json_decref(master);
    json_decref(ssk);
    json_decref(usk);
    json_decref(body);
    return rc;
}

/* The user's backup: a version whose auth_data the device signs, then B sessions written --sessions at a time. */
static int create_backup(bench_ctx_t *ctx, size_t u, bench_olm_device_t *olm, bench_sync_t *http, char *err)
{
    bench_user_t *user = &ctx->pop->users[u];
    const char *token = ctx->pop->devices[user->first_device].token;
    char pub[64];
    if (bench_backup_keypair(pub, err) != 0)
        return -1;
    json_t *auth = json_pack("{s:s}", "public_key", pub);
    if (bench_olm_sign(olm, auth, err) != 0) {
        json_decref(auth);
        return -1;
    }
    json_t *body = json_pack("{s:s, s:o}", "algorithm", BACKUP_ALGORITHM, "auth_data", auth);
    json_t *r = call_json_obj(http, "POST", CLIENT "/room_keys/version", token, body, err);
    json_decref(body);
    const char *version = json_string_value(json_object_get(r, "version"));
    if (version == NULL) {
        if (r != NULL)
            snprintf(err, ERRLEN, "POST /room_keys/version gave no version");
        json_decref(r);
        return -1;
    }
    user->backup_version = bench_strdup(version);
    user->backup_pub = bench_strdup(pub);
    json_decref(r);
    if (make_blobs(ctx, u, err) != 0)
        return -1;
    unsigned total = ctx->pop->backup_sessions, per = ctx->opts->sessions;
    char path[512];
    snprintf(path, sizeof(path), CLIENT "/room_keys/keys?version=%s", user->backup_version);
    mx_buf_t b = MX_BUF_INIT;
    int rc = 0;
    for (unsigned from = 0; rc == 0 && from < total; from += per) {
        unsigned to = from + per < total ? from + per : total;
        mx_buf_reset(&b);
        bench_backup_body(ctx, u, from, to, atomic_fetch_sub(&ctx->next_index, 1), &b);
        json_t *put = call_json(http, "PUT", path, token, b.data, b.len, err);
        long count = (long)json_integer_value(json_object_get(put, "count"));
        if (put != NULL && count != (long)to) {
            snprintf(err, ERRLEN, "backup of %s holds %ld sessions after writing %u", user->user_id, count, to);
            rc = -1;
        }
        if (put == NULL)
            rc = -1;
        json_decref(put);
    }
    mx_buf_free(&b);
    return rc;
}

static int job_device(bench_ctx_t *ctx, size_t i, bench_sync_t *http, char *err)
{
    bench_device_t *d = &ctx->pop->devices[i];
    const bench_options_t *o = ctx->opts;
    unsigned otks = o->otks;
    if (o->tokens_file != NULL) {
        /* A device of another run may still hold keys: never push it past the server's cap. */
        long have = otk_count(http, d->token, err);
        if (have < 0)
            return -1;
        long room = have >= (long)o->otk_cap ? 0 : (long)o->otk_cap - have;
        if (room < (long)otks)
            otks = (unsigned)room;
    }
    bench_olm_device_t *olm = bench_olm_device_new(d->user_id, d->device_id, err);
    if (olm == NULL)
        return -1;
    int rc = -1;
    json_t *otk_map = json_object(), *fallback = json_object(), *body = NULL, *r = NULL;
    json_t *keys = bench_olm_device_keys(olm, err);
    if (keys == NULL || bench_olm_one_time_keys(olm, otks, key_prefix, otk_map, err) != 0 ||
        bench_olm_fallback_key(olm, key_prefix, fallback, err) != 0)
        goto done;
    body = json_pack("{s:O, s:O, s:O}", "device_keys", keys, "one_time_keys", otk_map, "fallback_keys", fallback);
    if ((r = call_json_obj(http, "POST", CLIENT "/keys/upload", d->token, body, err)) == NULL)
        goto done;
    d->ed25519 = bench_strdup(bench_olm_device_ed25519(olm));
    d->curve25519 = bench_strdup(bench_olm_device_curve25519(olm));
    d->keys_json = json_dumps(keys, JSON_COMPACT);
    size_t u;
    if (o->weights[SC_CROSS_SIGN] > 0 && is_first_device(ctx, i, &u) && create_cross_signing(ctx, u, http, err) != 0)
        goto done;
    if (bench_options_wants_backup(o) && is_first_device(ctx, i, &u) && create_backup(ctx, u, olm, http, err) != 0) {
        if (o->tokens_file == NULL)
            goto done;
        /* Another server that refuses backups (or these bodies) still runs every other scenario: the user keeps no
         * backup, and the backup scenarios then say that no user has one. */
        bench_user_t *user = &ctx->pop->users[u];
        free(user->backup_version);
        free(user->backup_pub);
        user->backup_version = user->backup_pub = NULL;
        static _Atomic int warned;
        if (atomic_exchange(&warned, 1) == 0)
            fprintf(stderr, "mxkeys-bench: backups unavailable on this server (%s): no backup scenario will run\n",
                    err);
    }
    rc = 0;
done:
    json_decref(keys);
    json_decref(otk_map);
    json_decref(fallback);
    json_decref(body);
    json_decref(r);
    bench_olm_device_free(olm);
    return rc;
}

int bench_setup_population(bench_ctx_t *ctx, bool progress, char *err, size_t errlen)
{
    random_nonce(key_prefix);
    bench_population_t *pop = ctx->pop;
    if (ctx->opts->mint_command != NULL &&
        run_jobs(ctx, "minting tokens", pop->ndevices, job_mint, progress, err, errlen) != 0)
        return -1;
    if ((pop->changes_from = stream_token(ctx, err, errlen)) == NULL)
        return -1;
    if (run_jobs(ctx, "uploading keys and filling backups", pop->ndevices, job_device, progress, err, errlen) != 0)
        return -1;
    if ((pop->changes_to = stream_token(ctx, err, errlen)) == NULL)
        return -1;
    return 0;
}

static int job_blobs(bench_ctx_t *ctx, size_t u, bench_sync_t *http, char *err)
{
    (void)http;
    bench_user_t *user = &ctx->pop->users[u];
    return user->backup_version == NULL || user->nblobs > 0 ? 0 : make_blobs(ctx, u, err);
}

int bench_setup_blobs(bench_ctx_t *ctx, bool progress, char *err, size_t errlen)
{
    size_t with_backup = 0;
    for (size_t u = 0; u < ctx->pop->nusers; u++)
        with_backup += ctx->pop->users[u].backup_version != NULL;
    if (with_backup == 0) {
        snprintf(err, errlen,
                 "a backup scenario was asked for, but no user has a backup (set up with one; a server "
                 "that refused backups at set-up has none)");
        return -1;
    }
    return run_jobs(ctx, "encrypting backup sessions", ctx->pop->nusers, job_blobs, progress, err, errlen);
}

/* ---- upload pool ---------------------------------------------------------------------------------------------- */

static size_t per_device(const bench_options_t *o)
{
    size_t n = o->otk_cap / o->upload_otks;
    return n > 0 ? n : 1;
}

size_t bench_setup_upload_devices(const bench_options_t *o)
{
    return (o->upload_pool + per_device(o) - 1) / per_device(o);
}

/* Upload device k: its device keys now (not measured), then its share of bodies, each the same device keys plus
 * --upload-otks fresh signed keys. Body b of device k lands at index b * ndevices + k, so consecutive uploads go to
 * different devices. */
static int job_upload_device(bench_ctx_t *ctx, size_t k, bench_sync_t *http, char *err)
{
    const bench_options_t *o = ctx->opts;
    bench_device_t *d = &ctx->pop->upload[k];
    size_t nbodies = per_device(o);
    if (o->tokens_file != NULL) {
        long have = otk_count(http, d->token, err);
        if (have < 0)
            return -1;
        size_t room = have >= (long)o->otk_cap ? 0 : (size_t)((long)o->otk_cap - have);
        if (room / o->upload_otks < nbodies)
            nbodies = room / o->upload_otks;
    }
    bench_olm_device_t *olm = bench_olm_device_new(d->user_id, d->device_id, err);
    if (olm == NULL)
        return -1;
    int rc = -1;
    json_t *keys = bench_olm_device_keys(olm, err), *body = NULL, *r = NULL;
    if (keys == NULL)
        goto done;
    body = json_pack("{s:O}", "device_keys", keys);
    if ((r = call_json_obj(http, "POST", CLIENT "/keys/upload", d->token, body, err)) == NULL)
        goto done;
    for (size_t b = 0; b < nbodies; b++) {
        size_t idx = b * ctx->pop->nupload + k;
        if (idx >= ctx->nupload_bodies)
            break;
        json_t *otk_map = json_object();
        if (bench_olm_one_time_keys(olm, o->upload_otks, key_prefix, otk_map, err) != 0) {
            json_decref(otk_map);
            goto done;
        }
        json_t *one = json_pack("{s:O, s:o}", "device_keys", keys, "one_time_keys", otk_map);
        char *text = json_dumps(one, JSON_COMPACT);
        json_decref(one);
        if (text == NULL) {
            snprintf(err, ERRLEN, "out of memory");
            goto done;
        }
        ctx->upload_bodies[idx] = text;
        ctx->upload_lens[idx] = strlen(text);
        ctx->upload_device[idx] = k;
    }
    rc = 0;
done:
    json_decref(keys);
    json_decref(body);
    json_decref(r);
    bench_olm_device_free(olm);
    return rc;
}

int bench_setup_upload(bench_ctx_t *ctx, bool progress, char *err, size_t errlen)
{
    const bench_options_t *o = ctx->opts;
    bench_population_t *pop = ctx->pop;
    size_t ndev = bench_setup_upload_devices(o);
    if (key_prefix[0] == '\0')
        random_nonce(key_prefix);
    if (o->tokens_file == NULL) {
        if (o->mint_command == NULL) {
            snprintf(err, errlen, "the upload scenario needs --mint-command (or --tokens) to get fresh devices");
            return -1;
        }
        char nonce[8];
        random_nonce(nonce);
        if (bench_population_add_upload(pop, ndev, nonce, err, errlen) != 0 ||
            run_jobs(ctx, "minting upload devices", ndev, job_mint_upload, progress, err, errlen) != 0)
            return -1;
    }
    ndev = pop->nupload;
    size_t n = ndev * per_device(o);
    if (n > o->upload_pool)
        n = o->upload_pool;
    ctx->upload_bodies = calloc(n, sizeof(char *));
    ctx->upload_lens = calloc(n, sizeof(size_t));
    ctx->upload_device = calloc(n, sizeof(size_t));
    ctx->nupload_bodies = n;
    if (ctx->upload_bodies == NULL || ctx->upload_lens == NULL || ctx->upload_device == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (run_jobs(ctx, "making upload bodies", ndev, job_upload_device, progress, err, errlen) != 0)
        return -1;
    /* A tokens-file device near the cap takes fewer bodies: close the gaps. */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (ctx->upload_bodies[i] == NULL)
            continue;
        ctx->upload_bodies[w] = ctx->upload_bodies[i];
        ctx->upload_lens[w] = ctx->upload_lens[i];
        ctx->upload_device[w] = ctx->upload_device[i];
        w++;
    }
    ctx->nupload_bodies = w;
    if (w == 0) {
        snprintf(err, errlen, "no upload body could be made: every upload device is at the one-time key cap");
        return -1;
    }
    return 0;
}

/* ---- after the run ------------------------------------------------------------------------------------------- */

int bench_setup_claim_stock(bench_ctx_t *ctx, char *err, size_t errlen)
{
    bench_sync_t http;
    bench_sync_init(&http, ctx->target);
    ctx->claim_dry = ctx->claim_held = 0;
    ctx->claim_keys_held = 0;
    int rc = 0;
    for (size_t i = 0; i < ctx->claim_targets; i++) {
        char e[ERRLEN];
        long n = otk_count(&http, ctx->pop->devices[i].token, e);
        if (n < 0) {
            snprintf(err, errlen, "counting the one-time keys of %s: %s", ctx->pop->devices[i].device_id, e);
            rc = -1;
            break;
        }
        if (n == 0)
            ctx->claim_dry++;
        else
            ctx->claim_held++;
        ctx->claim_keys_held += (uint64_t)n;
    }
    bench_sync_close(&http);
    ctx->claim_stock_known = rc == 0;
    return rc;
}

/* ---- cross-signing bodies ------------------------------------------------------------------------------------ */

/* Appends one body {target user: {key id: object signed with seed}} and who sends it. */
static int add_xsign(bench_ctx_t *ctx, size_t signer, const char *seed, const char *target_user, const char *key_id,
                     const char *object, int kind, char *err, size_t errlen)
{
    const bench_user_t *user = &ctx->pop->users[signer];
    char why[256];
    json_t *obj = json_loads(object, 0, NULL);
    if (obj == NULL || bench_pk_sign(seed, user->user_id, obj, NULL, why) != 0) {
        snprintf(err, errlen, "cross-sign body for %s: %s", user->user_id, obj == NULL ? "bad stored object" : why);
        json_decref(obj);
        return -1;
    }
    json_t *body = json_pack("{s:{s:o}}", target_user, key_id, obj);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t n = ctx->nxsign++;
    ctx->xsign_bodies[n] = text;
    ctx->xsign_lens[n] = strlen(text);
    ctx->xsign_device[n] = user->first_device;
    ctx->xsign_kind[n] = kind;
    return 0;
}

static const char *master_public_key(const char *master_json, char *out, size_t outlen)
{
    json_t *m = json_loads(master_json, 0, NULL);
    const char *id;
    json_t *v;
    out[0] = '\0';
    json_object_foreach(json_object_get(m, "keys"), id, v) snprintf(out, outlen, "%s", json_string_value(v));
    json_decref(m);
    return out[0] != '\0' ? out : NULL;
}

int bench_setup_xsign(bench_ctx_t *ctx, char *err, size_t errlen)
{
    bench_population_t *pop = ctx->pop;
    size_t with = 0, max = 0;
    for (size_t u = 0; u < pop->nusers; u++) {
        if (pop->users[u].master_json != NULL) {
            with++;
            max += 2 * pop->users[u].ndevices;
        }
    }
    if (with == 0) {
        snprintf(err, errlen,
                 "cross-sign needs users with cross-signing keys (set up with --scenario including "
                 "cross-sign, or --setup-only)");
        return -1;
    }
    ctx->xsign_bodies = calloc(max, sizeof(char *));
    ctx->xsign_lens = calloc(max, sizeof(size_t));
    ctx->xsign_device = calloc(max, sizeof(size_t));
    ctx->xsign_kind = calloc(max, sizeof(int));
    if (ctx->xsign_bodies == NULL || ctx->xsign_lens == NULL || ctx->xsign_device == NULL || ctx->xsign_kind == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t u = 0; u < pop->nusers; u++) {
        const bench_user_t *user = &pop->users[u];
        if (user->master_json == NULL)
            continue;
        /* Its self-signing key on each of its own devices (a new login being verified)... */
        for (size_t d = 0; d < user->ndevices; d++) {
            const bench_device_t *dev = &pop->devices[user->first_device + d];
            if (dev->keys_json != NULL && add_xsign(ctx, u, user->ssk_seed, user->user_id, dev->device_id,
                                                    dev->keys_json, BENCH_NOTE_XSIGN_DEVICE, err, errlen) != 0)
                return -1;
        }
        /* ...and its user-signing key on as many other users' master keys (verifying other people). */
        size_t peers = 0;
        for (size_t k = 1; k < pop->nusers && peers < user->ndevices; k++) {
            const bench_user_t *other = &pop->users[(u + k) % pop->nusers];
            char pub[64];
            if (other->master_json == NULL || master_public_key(other->master_json, pub, sizeof(pub)) == NULL)
                continue;
            if (add_xsign(ctx, u, user->usk_seed, other->user_id, pub, other->master_json, BENCH_NOTE_XSIGN_USER, err,
                          errlen) != 0)
                return -1;
            peers++;
        }
    }
    if (ctx->nxsign == 0) {
        snprintf(err, errlen, "no cross-sign body could be made (the state has no device keys)");
        return -1;
    }
    return 0;
}

/* ---- pgbench -------------------------------------------------------------------------------------------------- */

int bench_setup_pgbench_vars(const bench_ctx_t *ctx, const char *dir, char *err, size_t errlen)
{
    const bench_population_t *pop = ctx->pop;
    if (pop->prefix == NULL) {
        snprintf(err, errlen, "--pgbench-out needs a minted population (the scripts derive user ids from it)");
        return -1;
    }
    const char *version = pop->users[0].backup_version;
    for (size_t u = 0; u < pop->nusers; u++) {
        const char *v = pop->users[u].backup_version;
        if (version == NULL || v == NULL || strcmp(v, version) != 0) {
            snprintf(err, errlen, "--pgbench-out needs every user to have the same backup version");
            return -1;
        }
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/vars", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        snprintf(err, errlen, "cannot write %s", path);
        return -1;
    }
    fprintf(f, "prefix=%s\nserver=%s\nusers=%zu\ndevices=%zu\nqusers=%u\nversion=%s\nbackup_epoch=%lld\n", pop->prefix,
            pop->server, pop->nusers, pop->users[0].ndevices, ctx->opts->query_users, version,
            (long long)pop->backup_epoch);
    /* The backup-put body for sessions [0, S) with first_message_index 0, which the script replaces textually. */
    mx_buf_t b = MX_BUF_INIT;
    size_t per = ctx->opts->sessions < ctx->session_space ? ctx->opts->sessions : ctx->session_space;
    bench_backup_body(ctx, 0, 0, per, 0, &b);
    /* pgbench's -D wants the JSON of the rooms map alone: strip {"rooms": ... }. */
    fprintf(f, "rooms=%.*s\n", (int)(b.len - 10), b.data + 9);
    mx_buf_free(&b);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s", path);
        return -1;
    }
    return 0;
}
