/* POST /keys/device_signing/upload and POST /keys/signatures/upload (spec: "Cross-signing").
 * Each is two round trips: fetch what the checks need, verify every signature here, then write in one transaction. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "mxkeys/api.h"
#include "mxkeys/base64.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/identity_mirror.h"
#include "mxkeys/json_writer.h"
#include "mxkeys/keys_validate.h"
#include "mxkeys/signed_json.h"

static const struct {
    const char *member; /* request member */
    const char *usage;  /* usage value and storage key */
} kinds[] = {{"master_key", "master"}, {"self_signing_key", "self_signing"}, {"user_signing_key", "user_signing"}};
#define NKINDS 3

/* The single "ed25519:<key>" entry of a cross-signing key's `keys` (NULL when malformed). */
static const char *public_key_of(const json_t *key)
{
    const json_t *keys = json_object_get(key, "keys");
    if (!json_is_object(keys) || json_object_size(keys) != 1)
        return NULL;
    const char *id = json_object_iter_key(json_object_iter((json_t *)keys));
    const char *value = json_string_value(json_object_iter_value(json_object_iter((json_t *)keys)));
    if (value == NULL || strncmp(id, "ed25519:", 8) != 0 || strcmp(id + 8, value) != 0)
        return NULL;
    return value;
}

/* Text of a JSON value in request memory (values here passed the canonical check). */
static char *json_text(mx_call_t *call, const json_t *v)
{
    mx_buf_t *buf = mx_call_buf(call);
    const char *why;
    if (mx_canonical_json(v, buf, &why) != 0)
        return NULL;
    return buf->data;
}

/* ---- POST /keys/device_signing/upload ------------------------------------------------------------------------ */

typedef struct st_xsign_upload_t {
    const json_t *keys[NKINDS];
    const char *public_keys[NKINDS];
    const char *expect_master; /* stored master public key when checked */
    const char *keys_text;     /* what mx_xsign_upload stores, or NULL: no change */
    const char *write_id;      /* beside a homeserver: the write in flight to it */
} xsign_upload_t;

/* A refusal found after the checks began: beside a homeserver the begun write is dropped first. */
static void refuse(mx_call_t *call, const char *write_id, mx_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void refuse(mx_call_t *call, const char *write_id, mx_err_t err, const char *fmt, ...)
{
    char msg[MX_WHY_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (write_id != NULL)
        mx_mirror_abandon(call, write_id, err, msg);
    else
        mx_call_error(call, err, "%s", msg);
}

/* The users of a begun write as IDENTITY_BEGIN takes them. */
static const char *begin_users_text(mx_call_t *call, const json_t *targets)
{
    json_t *users = json_array();
    json_array_append_new(users, json_string(call->user_id));
    const char *user;
    json_t *unused;
    if (targets != NULL)
        json_object_foreach((json_t *)targets, user, unused) json_array_append_new(users, json_string(user));
    char *t = json_dumps(users, JSON_COMPACT);
    json_decref(users);
    const char *copy = t ? mx_call_strdup(call, t, strlen(t)) : "[]";
    free(t);
    return copy;
}

static const char *check_cross_signing_key(mx_call_t *call, int kind, const json_t *key, mx_err_t *err, char *why)
{
    const char *member = kinds[kind].member;
    if (!json_is_object(key)) {
        *err = MX_ERR_BAD_JSON;
        snprintf(why, MX_WHY_LEN, "`%s` must be an object", member);
        return why;
    }
    const json_t *uid = json_object_get(key, "user_id"), *usage = json_object_get(key, "usage");
    if (!json_is_string(uid) || strcmp(json_string_value(uid), call->user_id) != 0) {
        *err = MX_ERR_INVALID_PARAM;
        snprintf(why, MX_WHY_LEN, "%s: `user_id` must be your own user id %s", member, call->user_id);
        return why;
    }
    bool has_usage = false;
    size_t i;
    json_t *u;
    if (json_is_array(usage))
        json_array_foreach(usage, i, u) has_usage |=
            json_is_string(u) && !strcmp(json_string_value(u), kinds[kind].usage);
    if (!has_usage) {
        *err = MX_ERR_INVALID_PARAM;
        snprintf(why, MX_WHY_LEN, "%s: `usage` must be a list containing \"%s\"", member, kinds[kind].usage);
        return why;
    }
    const char *pk = public_key_of(key);
    if (pk == NULL || !mx_base64_is_key(pk, MX_ED25519_PUBLIC_KEY_BYTES)) {
        *err = MX_ERR_INVALID_PARAM;
        snprintf(why, MX_WHY_LEN,
                 "%s: `keys` must hold exactly one entry \"ed25519:<public key>\": <public key>, an unpadded-base64 "
                 "ed25519 key",
                 member);
        return why;
    }
    const json_t *sigs = json_object_get(key, "signatures");
    char path[256];
    const char *reason;
    if (sigs != NULL && !json_is_object(sigs)) {
        *err = MX_ERR_BAD_JSON;
        snprintf(why, MX_WHY_LEN, "%s: `signatures` must be an object", member);
        return why;
    }
    if (mx_canonical_json_check(key, path, sizeof(path), &reason) != 0) {
        *err = MX_ERR_BAD_JSON;
        snprintf(why, MX_WHY_LEN, "%s cannot be signed JSON: %s at %s", member, reason, path);
        return why;
    }
    return NULL;
}

static void on_xsign_stored(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    mx_call_respond(call, 200, "{}", 2);
}

/* 401 with a User-Interactive Authentication body: mxkeys cannot run UIA itself, so the body says how to get a
 * replacement allowed instead (MSC3967). */
static void respond_uia(mx_call_t *call)
{
    uint8_t raw[16];
    char session[32];
    randombytes_buf(raw, sizeof(raw));
    mx_base64_encode(raw, sizeof(raw), session);
    mx_buf_t *buf = mx_call_buf(call);
    mx_jw_t jw;
    mx_jw_init(&jw, buf);
    mx_jw_object_begin(&jw);
    mx_jw_key(&jw, "flows");
    static const char flows[] = "[{\"stages\":[\"org.matrix.cross_signing_reset\"]}]";
    static const char params[] = "{\"org.matrix.cross_signing_reset\":{}}";
    mx_jw_raw(&jw, flows, sizeof(flows) - 1);
    mx_jw_key(&jw, "params");
    mx_jw_raw(&jw, params, sizeof(params) - 1);
    mx_jw_key(&jw, "session");
    mx_jw_string(&jw, session);
    mx_jw_key(&jw, "error");
    mx_jw_string(&jw, "replacing existing cross-signing keys must be allowed first: the server administrator opens a "
                      "window with POST /_mxkeys/admin/v1/users/{userId}/allow_cross_signing_replacement");
    mx_jw_object_end(&jw);
    mx_call_respond_status(call, 401, buf->data, buf->len);
}

static void store_xsign(mx_call_t *call)
{
    xsign_upload_t *u = call->data;
    const char *params[3] = {call->user_id, u->keys_text, u->expect_master};
    mx_db_stmt_t stmt = {.id = MX_STMT_XSIGN_UPLOAD, .nparams = 3, .values = params};
    if (u->write_id != NULL)
        (void)mx_mirror_commit(call, u->write_id, &stmt, u->keys_text ? 1 : 0, on_xsign_stored);
    else
        (void)mx_call_db(call, &stmt, 1, on_xsign_stored);
}

static void on_xsign_accepted(mx_call_t *call, const mx_hs_answer_t *answer)
{
    (void)answer;
    store_xsign(call);
}

static void on_upload_context(mx_call_t *call, PGresult **results, size_t n)
{
    xsign_upload_t *u = call->data;
    if (!mx_call_results_ok(call, results, n))
        return;
    if (n > 1)
        u->write_id = mx_call_strdup(call, PQgetvalue(results[1], 0, 0), (size_t)PQgetlength(results[1], 0, 0));
    json_t *ctx = json_loads(PQgetvalue(results[0], 0, 0), 0, NULL);
    const json_t *stored = json_object_get(ctx, "keys");
    const json_t *clash = json_object_get(ctx, "device_ids");
    if (json_array_size(clash) > 0) {
        refuse(call, u->write_id, MX_ERR_FORBIDDEN, "public key %s is the id of one of your devices",
               json_string_value(json_array_get(clash, 0)));
        goto done;
    }
    const json_t *stored_master = json_object_get(stored, "master");
    u->expect_master =
        stored_master ? mx_call_strdup(call, public_key_of(stored_master), strlen(public_key_of(stored_master))) : NULL;
    /* The self-signing and user-signing keys must be signed by the master key: this request's, else the stored. */
    const char *master = u->keys[0] ? u->public_keys[0] : u->expect_master;
    for (int k = 1; k < NKINDS; k++) {
        if (u->keys[k] == NULL)
            continue;
        if (master == NULL) {
            refuse(call, u->write_id, MX_ERR_MISSING_PARAM,
                   "%s must be signed by a master key, and none is known: upload master_key in the same request",
                   kinds[k].member);
            goto done;
        }
        char key_id[64];
        snprintf(key_id, sizeof(key_id), "ed25519:%s", master);
        mx_sig_result_t r = mx_signed_json_verify(u->keys[k], call->user_id, key_id, master);
        if (r != MX_SIG_OK) {
            refuse(call, u->write_id, MX_ERR_INVALID_SIGNATURE, "%s %s: signature by %s with master key %s: %s",
                   kinds[k].member, u->public_keys[k], call->user_id, key_id, mx_sig_result_str(r));
            goto done;
        }
    }
    /* Replacement policy (MSC3967): the first master key is free; re-sending the stored keys is a no-op; any other
     * change needs the replacement allowed. */
    bool changes = false;
    for (int k = 0; k < NKINDS; k++)
        if (u->keys[k] != NULL && !json_equal((json_t *)u->keys[k], json_object_get(stored, kinds[k].usage)))
            changes = true;
    if (changes) {
        json_t *keys = json_object();
        for (int k = 0; k < NKINDS; k++)
            if (u->keys[k] != NULL)
                json_object_set(keys, kinds[k].usage, (json_t *)u->keys[k]);
        u->keys_text = json_text(call, keys);
        json_decref(keys);
    }
    if (u->write_id != NULL) {
        /* Beside a homeserver it decides (user-interactive auth included), and gets even an unchanged upload: that
         * is how its copy catches up with ours. Its 401 reaches the client as it came. */
        h2o_req_t *req = call->req;
        mx_mirror_forward(call, u->write_id, req->entity.base, req->entity.len, on_xsign_accepted);
        goto done;
    }
    if (!changes) {
        mx_call_respond(call, 200, "{}", 2);
        goto done;
    }
    if (stored_master != NULL && call->config->xsign_replacement != MX_XSIGN_REPLACEMENT_ALLOW &&
        !json_is_true(json_object_get(ctx, "replacement_allowed"))) {
        respond_uia(call);
        goto done;
    }
    store_xsign(call);
done:
    json_decref(ctx);
}

void mx_api_device_signing_upload(mx_call_t *call)
{
    xsign_upload_t *u = mx_call_alloc(call, sizeof(*u));
    memset(u, 0, sizeof(*u));
    call->data = u;
    json_t *pks = json_array();
    bool any = false;
    for (int k = 0; k < NKINDS; k++) {
        const json_t *key = json_object_get(call->body, kinds[k].member);
        if (key == NULL)
            continue;
        mx_err_t err;
        char why[MX_WHY_LEN];
        if (check_cross_signing_key(call, k, key, &err, why) != NULL) {
            mx_call_error(call, err, "%s", why);
            json_decref(pks);
            return;
        }
        u->keys[k] = key;
        u->public_keys[k] = public_key_of(key);
        json_array_append_new(pks, json_string(u->public_keys[k]));
        any = true;
    }
    if (!any) {
        json_decref(pks);
        mx_call_respond(call, 200, "{}", 2);
        return;
    }
    const char *params[2] = {call->user_id, json_text(call, pks)};
    json_decref(pks);
    const char *begin[2] = {begin_users_text(call, NULL), mx_mirror_ttl_text(call)};
    mx_db_stmt_t stmts[2] = {{.id = MX_STMT_XSIGN_UPLOAD_CONTEXT, .nparams = 2, .values = params},
                             {.id = MX_STMT_IDENTITY_BEGIN, .nparams = 2, .values = begin}};
    (void)mx_call_db(call, stmts, mx_mirror_enabled(call) ? 2 : 1, on_upload_context);
}

/* ---- POST /keys/signatures/upload ------------------------------------------------------------------------------ */

typedef struct st_sig_upload_t {
    json_t *failures;         /* user -> key id -> {errcode, error} */
    json_t *store;            /* beside a homeserver: the verified signatures, until it has said which it takes */
    const char *targets_text; /* the users and key ids asked about, JSON (for the marker) */
    const char *write_id;
} sig_upload_t;

static void add_failure(sig_upload_t *s, const char *user, const char *key_id, mx_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void add_failure(sig_upload_t *s, const char *user, const char *key_id, mx_err_t err, const char *fmt, ...)
{
    char msg[MX_WHY_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *by_user = json_object_get(s->failures, user);
    if (by_user == NULL)
        json_object_set_new(s->failures, user, by_user = json_object());
    json_object_set_new(by_user, key_id, json_pack("{s:s,s:s}", "errcode", mx_err_code(err), "error", msg));
}

/* The submitted object must be the stored one apart from signatures and unsigned. */
static bool same_object(const json_t *submitted, const json_t *stored)
{
    json_t *a = json_copy((json_t *)submitted), *b = json_copy((json_t *)stored);
    json_object_del(a, "signatures");
    json_object_del(a, "unsigned");
    json_object_del(b, "signatures");
    json_object_del(b, "unsigned");
    bool same = json_equal(a, b);
    json_decref(a);
    json_decref(b);
    return same;
}

/* Verifies signer_key_id's signature on obj and queues it for storing; records a failure otherwise. */
static bool take_signature(mx_call_t *call, sig_upload_t *s, json_t *store, const char *user, const char *key_id,
                           const json_t *obj, const char *signer_key_id, const char *public_key)
{
    mx_sig_result_t r = mx_signed_json_verify(obj, call->user_id, signer_key_id, public_key);
    if (r != MX_SIG_OK) {
        add_failure(s, user, key_id, MX_ERR_INVALID_SIGNATURE, "signature by %s with %s: %s", call->user_id,
                    signer_key_id, mx_sig_result_str(r));
        return false;
    }
    const char *sig = json_string_value(
        json_object_get(json_object_get(json_object_get(obj, "signatures"), call->user_id), signer_key_id));
    json_array_append_new(store, json_pack("{s:s,s:s,s:s,s:s}", "target_user", user, "target_key_id", key_id,
                                           "signer_key_id", signer_key_id, "signature", sig));
    return true;
}

/* One entry of the request: (user, key id) -> signed object. */
static void check_entry(mx_call_t *call, sig_upload_t *s, json_t *store, const json_t *ctx, const char *user,
                        const char *key_id, const json_t *obj)
{
    const char *caller = call->user_id;
    const json_t *caller_keys = json_object_get(ctx, "caller_keys");
    char dev_key[600];
    snprintf(dev_key, sizeof(dev_key), "%s|%s", user, key_id);
    if (strcmp(user, caller) == 0) {
        const json_t *device = json_object_get(json_object_get(ctx, "devices"), dev_key);
        const json_t *master = json_object_get(caller_keys, "master");
        if (device != NULL) { /* the caller's self-signing key on the caller's own device */
            const json_t *ssk = json_object_get(caller_keys, "self_signing");
            if (!same_object(obj, device)) {
                add_failure(s, user, key_id, MX_ERR_INVALID_PARAM, "the object differs from the stored device keys");
            } else if (ssk == NULL) {
                add_failure(s, user, key_id, MX_ERR_NOT_FOUND, "you have no self-signing key to sign devices with");
            } else {
                char signer[64];
                snprintf(signer, sizeof(signer), "ed25519:%s", public_key_of(ssk));
                take_signature(call, s, store, user, key_id, obj, signer, public_key_of(ssk));
            }
            return;
        }
        if (master != NULL && strcmp(key_id, public_key_of(master)) == 0) { /* the caller's devices on their master */
            if (!same_object(obj, master)) {
                add_failure(s, user, key_id, MX_ERR_INVALID_PARAM, "the object differs from the stored master key");
                return;
            }
            const json_t *mine = json_object_get(json_object_get(obj, "signatures"), caller);
            const char *signer;
            json_t *unused;
            int taken = 0;
            json_object_foreach((json_t *)mine, signer, unused)
            {
                if (strncmp(signer, "ed25519:", 8) != 0 || strcmp(signer + 8, key_id) == 0)
                    continue; /* the master key's own signature is part of the upload, not a cross-signature */
                const char *device_key =
                    json_string_value(json_object_get(json_object_get(ctx, "caller_devices"), signer + 8));
                if (device_key == NULL) {
                    add_failure(s, user, key_id, MX_ERR_NOT_FOUND, "%s is not one of your devices", signer + 8);
                    return;
                }
                if (!take_signature(call, s, store, user, key_id, obj, signer, device_key))
                    return;
                taken++;
            }
            if (taken == 0)
                add_failure(s, user, key_id, MX_ERR_INVALID_SIGNATURE, "no signature by one of your devices");
            return;
        }
        add_failure(s, user, key_id, MX_ERR_NOT_FOUND, "%s is neither one of your devices nor your master key", key_id);
        return;
    }
    /* another user's current master key, signed by the caller's user-signing key */
    const json_t *target_master = json_object_get(json_object_get(ctx, "masters"), user);
    if (target_master == NULL || strcmp(key_id, public_key_of(target_master)) != 0) {
        add_failure(s, user, key_id, MX_ERR_NOT_FOUND, "%s is not %s's current master key", key_id, user);
        return;
    }
    if (!same_object(obj, target_master)) {
        add_failure(s, user, key_id, MX_ERR_INVALID_PARAM, "the object differs from the stored master key");
        return;
    }
    const json_t *usk = json_object_get(caller_keys, "user_signing");
    if (usk == NULL) {
        add_failure(s, user, key_id, MX_ERR_NOT_FOUND, "you have no user-signing key to sign other users with");
        return;
    }
    char signer[64];
    snprintf(signer, sizeof(signer), "ed25519:%s", public_key_of(usk));
    take_signature(call, s, store, user, key_id, obj, signer, public_key_of(usk));
}

static void respond_failures(mx_call_t *call)
{
    sig_upload_t *s = call->data;
    json_t *body = json_pack("{s:O}", "failures", s->failures);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    size_t len = strlen(text);
    mx_call_respond(call, 200, mx_call_strdup(call, text, len), len);
    free(text);
}

static void on_signatures_stored(mx_call_t *call, PGresult **results, size_t n)
{
    if (!mx_call_results_ok(call, results, n))
        return;
    respond_failures(call);
}

/* The body for the homeserver: the objects whose signatures mxkeys verified, as the client sent them. */
static char *accepted_body(mx_call_t *call, const json_t *store, size_t *len)
{
    json_t *body = json_object();
    size_t i;
    json_t *sig;
    json_array_foreach(store, i, sig)
    {
        const char *user = json_string_value(json_object_get(sig, "target_user"));
        const char *key_id = json_string_value(json_object_get(sig, "target_key_id"));
        json_t *by_user = json_object_get(body, user);
        if (by_user == NULL)
            json_object_set_new(body, user, by_user = json_object());
        json_object_set(by_user, key_id, json_object_get(json_object_get(call->body, user), key_id));
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    *len = text ? strlen(text) : 0;
    char *copy = text ? mx_call_strdup(call, text, *len) : NULL;
    free(text);
    return copy;
}

/* The homeserver took the signatures except those in its `failures`: those are not stored, and its failures join
 * mxkeys' own. */
static void on_signatures_accepted(mx_call_t *call, const mx_hs_answer_t *answer)
{
    sig_upload_t *s = call->data;
    json_t *hs = json_loadb(answer->body, answer->len, 0, NULL);
    const json_t *refused = json_object_get(hs, "failures");
    json_t *kept = json_array();
    size_t i;
    json_t *sig;
    json_array_foreach(s->store, i, sig)
    {
        const char *user = json_string_value(json_object_get(sig, "target_user"));
        const char *key_id = json_string_value(json_object_get(sig, "target_key_id"));
        const json_t *why = json_object_get(json_object_get(refused, user), key_id);
        if (why == NULL) {
            json_array_append(kept, sig);
            continue;
        }
        json_t *by_user = json_object_get(s->failures, user);
        if (by_user == NULL)
            json_object_set_new(s->failures, user, by_user = json_object());
        json_object_set(by_user, key_id, (json_t *)why);
    }
    json_decref(hs);
    const char *params[2] = {call->user_id, json_text(call, kept)};
    mx_db_stmt_t stmt = {.id = MX_STMT_XSIGN_STORE_SIGNATURES, .nparams = 2, .values = params};
    (void)mx_mirror_commit(call, s->write_id, &stmt, json_array_size(kept) ? 1 : 0, on_signatures_stored);
    json_decref(kept);
}

static void on_signatures_context(mx_call_t *call, PGresult **results, size_t n)
{
    sig_upload_t *s = call->data;
    if (!mx_call_results_ok(call, results, n))
        return;
    if (n > 1)
        s->write_id = mx_call_strdup(call, PQgetvalue(results[1], 0, 0), (size_t)PQgetlength(results[1], 0, 0));
    json_t *ctx = json_loads(PQgetvalue(results[0], 0, 0), 0, NULL);
    json_t *store = json_array();
    const char *user;
    json_t *entries;
    json_object_foreach(call->body, user, entries)
    {
        const char *key_id;
        json_t *obj;
        json_object_foreach(entries, key_id, obj) check_entry(call, s, store, ctx, user, key_id, obj);
    }
    json_decref(ctx);
    if (s->write_id != NULL && json_array_size(store) > 0) {
        size_t len;
        const char *body = accepted_body(call, store, &len);
        s->store = store;
        mx_mirror_forward(call, s->write_id, body, len, on_signatures_accepted);
        return;
    }
    if (json_array_size(store) == 0) {
        json_decref(store);
        if (s->write_id != NULL) {
            json_t *b = json_pack("{s:O}", "failures", s->failures);
            char *text = json_dumps(b, JSON_COMPACT);
            json_decref(b);
            size_t len = strlen(text);
            mx_mirror_abandon_ok(call, s->write_id, mx_call_strdup(call, text, len), len);
            free(text);
            return;
        }
        respond_failures(call);
        return;
    }
    const char *params[2] = {call->user_id, json_text(call, store)};
    json_decref(store);
    mx_db_stmt_t stmt = {.id = MX_STMT_XSIGN_STORE_SIGNATURES, .nparams = 2, .values = params};
    (void)mx_call_db(call, &stmt, 1, on_signatures_stored);
}

static void on_sig_dispose(void *p)
{
    json_decref(((sig_upload_t *)p)->failures);
    json_decref(((sig_upload_t *)p)->store);
}

void mx_api_signatures_upload(mx_call_t *call)
{
    json_t *targets = json_object();
    size_t entries = 0;
    const char *user;
    json_t *by_key;
    json_object_foreach(call->body, user, by_key)
    {
        if (!mx_user_id_valid(user)) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "`%s` is not a valid user id", user);
            goto done;
        }
        if (!json_is_object(by_key)) {
            mx_call_error(call, MX_ERR_INVALID_PARAM, "signatures for %s must be an object of key id -> object", user);
            goto done;
        }
        json_t *ids = json_array();
        const char *key_id;
        json_t *obj;
        json_object_foreach(by_key, key_id, obj)
        {
            char path[256];
            const char *reason;
            if (!json_is_object(obj)) {
                json_decref(ids);
                mx_call_error(call, MX_ERR_INVALID_PARAM, "%s / %s must be the signed object", user, key_id);
                goto done;
            }
            if (mx_canonical_json_check(obj, path, sizeof(path), &reason) != 0) {
                json_decref(ids);
                mx_call_error(call, MX_ERR_BAD_JSON, "%s / %s cannot be signed JSON: %s at %s", user, key_id, reason,
                              path);
                goto done;
            }
            json_array_append_new(ids, json_string(key_id));
        }
        entries += json_array_size(ids);
        json_object_set_new(targets, user, ids);
    }
    if (entries > call->config->max_keys_per_request) {
        mx_call_error(call, MX_ERR_INVALID_PARAM, "too many signed objects in one request (the limit is %u)",
                      call->config->max_keys_per_request);
        goto done;
    }
    sig_upload_t *s = h2o_mem_alloc_shared(&call->req->pool, sizeof(*s), on_sig_dispose);
    memset(s, 0, sizeof(*s));
    s->failures = json_object();
    call->data = s;
    const char *params[2] = {call->user_id, json_text(call, targets)};
    /* beside a homeserver the write concerns the signer and every user whose keys it signs */
    const char *begin[2] = {begin_users_text(call, targets), mx_mirror_ttl_text(call)};
    mx_db_stmt_t stmts[2] = {{.id = MX_STMT_XSIGN_SIGNATURES_CONTEXT, .nparams = 2, .values = params},
                             {.id = MX_STMT_IDENTITY_BEGIN, .nparams = 2, .values = begin}};
    (void)mx_call_db(call, stmts, mx_mirror_enabled(call) ? 2 : 1, on_signatures_context);
done:
    json_decref(targets);
}
