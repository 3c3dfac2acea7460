/* POST /keys/upload: device keys, one-time keys and fallback keys of the caller's device, in one transaction.
 * Validate everything (and in strict mode verify every signature) before a single write; a conflict found by the
 * database rolls the whole upload back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/api.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/json_writer.h"
#include "mxkeys/keys_validate.h"

typedef struct st_upload_t {
    const json_t *device_keys, *otks, *fallbacks;
    char *device_keys_text, *otks_text, *fallbacks_text;
    const char *write_id; /* beside a homeserver: the device-keys write in flight to it */
} upload_t;

/* Canonical text of a validated value, in request memory (NULL in, NULL out). */
static char *to_text(mx_call_t *call, const json_t *v)
{
    if (v == NULL)
        return NULL;
    mx_buf_t *buf = mx_call_buf(call);
    const char *why;
    if (mx_canonical_json(v, buf, &why) != 0)
        return NULL; /* cannot happen: every value passed mx_canonical_json_check */
    return buf->data;
}

static const json_t *optional_object(mx_call_t *call, const char *name, const json_t *v, bool *bad)
{
    if (v != NULL && !json_is_object(v)) {
        mx_call_error(call, MX_ERR_BAD_JSON, "`%s` must be an object", name);
        *bad = true;
    }
    return v;
}

/* Checks every key of a one_time_keys / fallback_keys map. False, with the first problem in (err, why), on failure.
 * Reads only its arguments: it also runs off the loop (below). */
static bool key_map_ok(const json_t *map, bool is_fallback, const char *user_id, const char *device_id, bool strict,
                       const char *ed25519, mx_err_t *err, char *why)
{
    json_t *algorithms = is_fallback ? json_object() : NULL; /* one fallback key per algorithm */
    bool ok = false;
    const char *id;
    json_t *value;
    json_object_foreach((json_t *)map, id, value)
    {
        if (mx_check_one_time_key(id, value, user_id, device_id, strict, ed25519, err, why) != NULL)
            goto done;
        if (is_fallback) {
            size_t alen = (size_t)(strchr(id, ':') - id);
            if (json_object_getn(algorithms, id, alen) != NULL) {
                *err = MX_ERR_INVALID_PARAM;
                snprintf(why, MX_WHY_LEN, "fallback_keys: more than one key for algorithm %.*s", (int)alen, id);
                goto done;
            }
            json_object_setn_new(algorithms, id, alen, json_true());
        }
    }
    ok = true;
done:
    json_decref(algorithms);
    return ok;
}

/* Both maps of an upload (either may be NULL), one-time keys first. */
static bool key_maps_ok(const json_t *otks, const json_t *fallbacks, const char *user_id, const char *device_id,
                        bool strict, const char *ed25519, mx_err_t *err, char *why)
{
    return (otks == NULL || key_map_ok(otks, false, user_id, device_id, strict, ed25519, err, why)) &&
           (fallbacks == NULL || key_map_ok(fallbacks, true, user_id, device_id, strict, ed25519, err, why));
}

static bool needs_device_key(const json_t *otks, const json_t *fallbacks)
{
    const json_t *maps[2] = {otks, fallbacks};
    for (int m = 0; m < 2; m++) {
        const char *id;
        json_t *value;
        if (maps[m] == NULL)
            continue;
        json_object_foreach((json_t *)maps[m], id, value)
        {
            if (mx_one_time_key_is_signed(value))
                return true;
        }
    }
    return false;
}

static void on_uploaded(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_buf_t *buf = mx_call_buf(call);
    mx_jw_t jw;
    mx_jw_init(&jw, buf);
    mx_jw_object_begin(&jw);
    mx_jw_key(&jw, "one_time_key_counts");
    mx_jw_raw(&jw, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    mx_jw_object_end(&jw);
    mx_call_respond_buf(call, 200, buf);
}

/* The upload statement; `params` holds its values. */
static mx_db_stmt_t upload_stmt(mx_call_t *call, const char *params[6])
{
    upload_t *u = call->data;
    char *cap = mx_call_alloc(call, 16);
    snprintf(cap, 16, "%u", call->config->max_otks_per_device);
    params[0] = call->user_id, params[1] = call->device_id, params[2] = u->device_keys_text;
    params[3] = u->otks_text, params[4] = u->fallbacks_text, params[5] = cap;
    return (mx_db_stmt_t){.id = MX_STMT_KEYS_UPLOAD, .nparams = 6, .values = params};
}

/* Beside a homeserver, new device keys reach it first (mxkeys/identity_mirror.h): it announces them, and other
 * users' clients learn of the device from it. One-time and fallback keys stay here alone. */
static void on_device_keys_accepted(mx_call_t *call, const mx_hs_answer_t *answer)
{
    (void)answer; /* its one_time_key_counts are the homeserver's (none): the client gets mxkeys' */
    upload_t *u = call->data;
    const char *params[6];
    mx_db_stmt_t stmt = upload_stmt(call, params);
    (void)mx_mirror_commit(call, u->write_id, &stmt, 1, on_uploaded);
}

static void on_device_keys_begun(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    upload_t *u = call->data;
    if (PQgetisnull(results[0], 0, 0)) { /* the stored device keys: nothing for the homeserver */
        const char *params[6];
        mx_db_stmt_t stmt = upload_stmt(call, params);
        (void)mx_call_db(call, &stmt, 1, on_uploaded);
        return;
    }
    u->write_id = mx_call_strdup(call, PQgetvalue(results[0], 0, 0), (size_t)PQgetlength(results[0], 0, 0));
    mx_buf_t *body = mx_call_buf(call);
    mx_buf_puts(body, "{\"device_keys\":");
    mx_buf_puts(body, u->device_keys_text);
    mx_buf_putc(body, '}');
    mx_mirror_forward(call, u->write_id, body->data, body->len, on_device_keys_accepted);
}

static void store(mx_call_t *call)
{
    upload_t *u = call->data;
    if (u->device_keys_text != NULL && mx_mirror_enabled(call)) {
        const char *params[4] = {call->user_id, call->device_id, u->device_keys_text, mx_mirror_ttl_text(call)};
        mx_db_stmt_t stmt = {.id = MX_STMT_IDENTITY_BEGIN_DEVICE_KEYS, .nparams = 4, .values = params};
        (void)mx_call_db(call, &stmt, 1, on_device_keys_begun);
        return;
    }
    const char *params[6];
    mx_db_stmt_t stmt = upload_stmt(call, params);
    (void)mx_call_db(call, &stmt, 1, on_uploaded);
}

/* The maps are valid: store them with the device keys. */
static void store_checked(mx_call_t *call)
{
    upload_t *u = call->data;
    u->otks_text = to_text(call, u->otks);
    u->fallbacks_text = to_text(call, u->fallbacks);
    store(call);
}

/* The signature checks of the one-time and fallback keys, off the loop: 50 keys are 50 ed25519 verifications, a few
 * milliseconds. The job owns copies of the ids and a reference to the body, so a client that goes away meanwhile
 * frees nothing the check reads. */
typedef struct st_key_check_t {
    mx_offload_job_t job; /* first member: the callbacks get this pointer back */
    mx_call_t *call;      /* NULL once the client is gone */
    json_t *body;         /* a reference that keeps the maps below alive */
    const json_t *otks, *fallbacks;
    char *user_id, *device_id, *ed25519;
    bool ok;
    mx_err_t err;
    char why[MX_WHY_LEN];
} key_check_t;

static void check_off_loop(mx_offload_job_t *job)
{
    key_check_t *kc = (key_check_t *)job;
    kc->ok = key_maps_ok(kc->otks, kc->fallbacks, kc->user_id, kc->device_id, true, kc->ed25519, &kc->err, kc->why);
}

static void free_key_check(key_check_t *kc)
{
    json_decref(kc->body);
    free(kc->user_id);
    free(kc->device_id);
    free(kc->ed25519);
    free(kc);
}

static void on_checked(mx_offload_job_t *job)
{
    key_check_t *kc = (key_check_t *)job;
    mx_call_t *call = mx_call_offload_return(&kc->call);
    if (call != NULL) {
        if (kc->ok)
            store_checked(call);
        else
            mx_call_error(call, kc->err, "%s", kc->why);
    }
    free_key_check(kc);
}

/* Queues the strict checks of the key maps. False when they could not be queued (no memory, queue full): nothing
 * was answered, and the caller checks on the loop. */
static bool offload_check(mx_call_t *call, const char *ed25519)
{
    upload_t *u = call->data;
    key_check_t *kc = calloc(1, sizeof(*kc));
    if (kc == NULL)
        return false;
    kc->job.work = check_off_loop;
    kc->job.done = on_checked;
    kc->body = json_incref(call->body);
    kc->otks = u->otks;
    kc->fallbacks = u->fallbacks;
    kc->user_id = strdup(call->user_id);
    kc->device_id = strdup(call->device_id);
    kc->ed25519 = ed25519 != NULL ? strdup(ed25519) : NULL;
    if (kc->user_id == NULL || kc->device_id == NULL || (ed25519 != NULL && kc->ed25519 == NULL) ||
        !mx_call_offload(call, &kc->job, &kc->call)) {
        free_key_check(kc);
        return false;
    }
    return true;
}

/* Validates the key maps against `ed25519`, then stores. Strict mode checks signatures on an offload thread. */
static void check_keys_and_store(mx_call_t *call, const char *ed25519)
{
    upload_t *u = call->data;
    const bool strict = call->config->validation == MX_VALIDATION_STRICT;
    if (u->otks == NULL && u->fallbacks == NULL) {
        store_checked(call);
        return;
    }
    if (strict && offload_check(call, ed25519))
        return;
    /* lenient mode (no signatures to check), or no room to offload: check here */
    mx_err_t err;
    char why[MX_WHY_LEN];
    if (!key_maps_ok(u->otks, u->fallbacks, call->user_id, call->device_id, strict, ed25519, &err, why)) {
        mx_call_error(call, err, "%s", why);
        return;
    }
    store_checked(call);
}

static void on_stored_device_key(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    const char *ed25519 = PQgetisnull(results[0], 0, 0) ? NULL : PQgetvalue(results[0], 0, 0);
    check_keys_and_store(call, ed25519 ? mx_call_strdup(call, ed25519, strlen(ed25519)) : NULL);
}

void mx_api_keys_upload(mx_call_t *call)
{
    /* A token without a device (homeserver auth for an appservice or a device-less login) has nowhere to keep keys;
     * an empty upload still answers its counts (none). */
    if (call->device_id[0] == '\0' && json_object_size(call->body) != 0) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "this access token has no device: keys cannot be uploaded with it");
        return;
    }
    upload_t *u = mx_call_alloc(call, sizeof(*u));
    memset(u, 0, sizeof(*u));
    call->data = u;
    bool bad = false;
    const json_t *fallbacks = json_object_get(call->body, "fallback_keys");
    if (fallbacks == NULL)
        fallbacks = json_object_get(call->body, "org.matrix.msc2732.fallback_keys");
    u->device_keys = json_object_get(call->body, "device_keys");
    u->otks = optional_object(call, "one_time_keys", json_object_get(call->body, "one_time_keys"), &bad);
    if (!bad)
        u->fallbacks = optional_object(call, "fallback_keys", fallbacks, &bad);
    if (bad)
        return;
    size_t entries = (u->otks ? json_object_size(u->otks) : 0) + (u->fallbacks ? json_object_size(u->fallbacks) : 0);
    if (entries > call->config->max_keys_per_request) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "too many keys in one upload: %zu (the limit is %u)", entries,
                      call->config->max_keys_per_request);
        return;
    }

    const char *ed25519 = NULL;
    if (u->device_keys != NULL) {
        mx_err_t err;
        char why[MX_WHY_LEN];
        if (mx_check_device_keys(u->device_keys, call->user_id, call->device_id,
                                 call->config->validation == MX_VALIDATION_STRICT, &ed25519, &err, why) != NULL) {
            mx_call_error(call, err, "%s", why);
            return;
        }
        u->device_keys_text = to_text(call, u->device_keys);
    }
    /* Signed keys uploaded without device keys are checked against the device's stored key: one extra round trip,
     * only in strict mode and only when needed. */
    if (ed25519 == NULL && call->config->validation == MX_VALIDATION_STRICT &&
        needs_device_key(u->otks, u->fallbacks)) {
        const char *params[2] = {call->user_id, call->device_id};
        mx_db_stmt_t stmt = {.id = MX_STMT_KEYS_DEVICE_ED25519, .nparams = 2, .values = params};
        (void)mx_call_db(call, &stmt, 1, on_stored_device_key);
        return;
    }
    check_keys_and_store(call, ed25519);
}
