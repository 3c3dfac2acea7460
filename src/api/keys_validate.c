/* Validation of uploaded device keys and one-time/fallback keys (Matrix spec, "Key management API"). */
#include "mxkeys/keys_validate.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "mxkeys/base64.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/signed_json.h"

#define CURVE25519_KEY_BYTES 32

static const char *fail(mx_err_t *err, mx_err_t e, char *why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, MX_WHY_LEN, fmt, ap);
    va_end(ap);
    *err = e;
    return why;
}

bool mx_key_id_valid(const char *id)
{
    const char *colon = strchr(id, ':');
    return colon != NULL && colon != id && colon[1] != '\0' && strchr(colon + 1, ':') == NULL;
}

/* signatures: {user: {key id: string}} */
static const char *check_signatures_shape(const json_t *sigs, const char *what, mx_err_t *err, char *why)
{
    if (!json_is_object(sigs))
        return fail(err, MX_ERR_BAD_JSON, why, "%s: `signatures` must be an object of objects of strings", what);
    const char *signer;
    json_t *by_key;
    json_object_foreach((json_t *)sigs, signer, by_key)
    {
        if (!json_is_object(by_key))
            return fail(err, MX_ERR_BAD_JSON, why, "%s: signatures[%s] must be an object", what, signer);
        const char *key_id;
        json_t *sig;
        json_object_foreach(by_key, key_id, sig)
        {
            if (!json_is_string(sig))
                return fail(err, MX_ERR_BAD_JSON, why, "%s: signatures[%s][%s] must be a string", what, signer, key_id);
        }
    }
    return NULL;
}

static const char *check_canonical(const json_t *obj, const char *what, mx_err_t *err, char *why)
{
    char path[256];
    const char *reason;
    if (mx_canonical_json_check(obj, path, sizeof(path), &reason) != 0)
        return fail(err, MX_ERR_BAD_JSON, why, "%s cannot be signed JSON: %s at %s", what, reason, path);
    return NULL;
}

static const char *check_signature(const json_t *obj, const char *what, const char *signer, const char *key_id,
                                   const char *public_key, mx_err_t *err, char *why)
{
    mx_sig_result_t r = mx_signed_json_verify(obj, signer, key_id, public_key);
    if (r == MX_SIG_OK)
        return NULL;
    return fail(err, MX_ERR_INVALID_SIGNATURE, why, "%s: signature by %s with key %s (%s): %s", what, signer, key_id,
                public_key, mx_sig_result_str(r));
}

const char *mx_check_device_keys(const json_t *obj, const char *user_id, const char *device_id, bool strict,
                                 const char **ed25519, mx_err_t *err, char *why)
{
    static const char *const required[] = {"user_id", "device_id", "algorithms", "keys", "signatures"};
    *ed25519 = NULL;
    if (!json_is_object(obj))
        return fail(err, MX_ERR_BAD_JSON, why, "device_keys must be an object");
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (json_object_get(obj, required[i]) == NULL)
            return fail(err, MX_ERR_MISSING_PARAM, why, "device_keys: missing `%s`", required[i]);
    const json_t *uid = json_object_get(obj, "user_id"), *did = json_object_get(obj, "device_id");
    const json_t *algorithms = json_object_get(obj, "algorithms"), *keys = json_object_get(obj, "keys");
    if (!json_is_string(uid) || !json_is_string(did))
        return fail(err, MX_ERR_BAD_JSON, why, "device_keys: `user_id` and `device_id` must be strings");
    if (strcmp(json_string_value(uid), user_id) != 0 || strcmp(json_string_value(did), device_id) != 0)
        return fail(err, MX_ERR_BAD_JSON, why,
                    "device_keys are for %s device %s, but the access token belongs to %s device %s",
                    json_string_value(uid), json_string_value(did), user_id, device_id);
    if (!json_is_array(algorithms))
        return fail(err, MX_ERR_BAD_JSON, why, "device_keys: `algorithms` must be a list of strings");
    size_t i;
    json_t *alg;
    json_array_foreach(algorithms, i, alg)
    {
        if (!json_is_string(alg))
            return fail(err, MX_ERR_BAD_JSON, why, "device_keys: `algorithms` must be a list of strings");
    }
    if (!json_is_object(keys))
        return fail(err, MX_ERR_BAD_JSON, why, "device_keys: `keys` must be an object of strings");
    const char *kid;
    json_t *kv;
    json_object_foreach((json_t *)keys, kid, kv)
    {
        if (!json_is_string(kv))
            return fail(err, MX_ERR_BAD_JSON, why, "device_keys: keys[%s] must be a string", kid);
        if (!mx_key_id_valid(kid))
            return fail(err, MX_ERR_BAD_JSON, why, "device_keys: key id `%s` is not <algorithm>:<id>", kid);
    }
    const char *r = check_signatures_shape(json_object_get(obj, "signatures"), "device_keys", err, why);
    if (r != NULL)
        return r;
    if ((r = check_canonical(obj, "device_keys", err, why)) != NULL)
        return r;

    char ed_id[300], curve_id[300];
    snprintf(ed_id, sizeof(ed_id), "ed25519:%s", device_id);
    snprintf(curve_id, sizeof(curve_id), "curve25519:%s", device_id);
    const json_t *ed = json_object_get(keys, ed_id);
    *ed25519 = json_string_value(ed);
    if (!strict)
        return NULL;
    const json_t *curve = json_object_get(keys, curve_id);
    if (ed == NULL || curve == NULL)
        return fail(err, MX_ERR_INVALID_PARAM, why, "device_keys: `keys` must contain %s and %s", ed_id, curve_id);
    if (!mx_base64_is_key(json_string_value(ed), MX_ED25519_PUBLIC_KEY_BYTES))
        return fail(err, MX_ERR_INVALID_PARAM, why, "device_keys: %s is not an unpadded-base64 ed25519 key", ed_id);
    if (!mx_base64_is_key(json_string_value(curve), CURVE25519_KEY_BYTES))
        return fail(err, MX_ERR_INVALID_PARAM, why, "device_keys: %s is not an unpadded-base64 curve25519 key",
                    curve_id);
    return check_signature(obj, "device_keys self-signature", user_id, ed_id, *ed25519, err, why);
}

bool mx_one_time_key_is_signed(const json_t *value)
{
    return json_is_object(value);
}

const char *mx_check_one_time_key(const char *id, const json_t *value, const char *user_id, const char *device_id,
                                  bool strict, const char *ed25519, mx_err_t *err, char *why)
{
    if (!mx_key_id_valid(id))
        return fail(err, MX_ERR_BAD_JSON, why, "key id `%s` must be <algorithm>:<key id> with exactly one ':'", id);
    /* The algorithm fixes the value's form (spec: "The format of the key is determined by the key algorithm"). Only
     * strict mode holds clients to it: conformance suites upload string keys under any algorithm name. */
    if (strict && strncmp(id, "signed_curve25519:", 18) == 0 && !json_is_object(value))
        return fail(err, MX_ERR_BAD_JSON, why, "key %s: a signed_curve25519 key must be an object {key, signatures}",
                    id);
    if (strict && strncmp(id, "curve25519:", 11) == 0 && !json_is_string(value))
        return fail(err, MX_ERR_BAD_JSON, why, "key %s: a curve25519 key must be a string", id);
    if (json_is_string(value)) {
        if (strict && !mx_base64_is_key(json_string_value(value), CURVE25519_KEY_BYTES))
            return fail(err, MX_ERR_INVALID_PARAM, why, "key %s is not an unpadded-base64 curve25519 key", id);
        return NULL;
    }
    if (!json_is_object(value))
        return fail(err, MX_ERR_BAD_JSON, why, "key %s must be a string or an object {key, signatures}", id);
    const json_t *key = json_object_get(value, "key"), *sigs = json_object_get(value, "signatures");
    const json_t *fallback = json_object_get(value, "fallback");
    if (key == NULL || sigs == NULL)
        return fail(err, MX_ERR_MISSING_PARAM, why, "key %s: missing `%s`", id, key == NULL ? "key" : "signatures");
    if (!json_is_string(key))
        return fail(err, MX_ERR_BAD_JSON, why, "key %s: `key` must be a string", id);
    if (fallback != NULL && !json_is_boolean(fallback))
        return fail(err, MX_ERR_BAD_JSON, why, "key %s: `fallback` must be a boolean", id);
    char what[300];
    snprintf(what, sizeof(what), "key %s", id);
    const char *r = check_signatures_shape(sigs, what, err, why);
    if (r != NULL || (r = check_canonical(value, what, err, why)) != NULL)
        return r;
    if (!strict)
        return NULL;
    if (!mx_base64_is_key(json_string_value(key), CURVE25519_KEY_BYTES))
        return fail(err, MX_ERR_INVALID_PARAM, why, "key %s: `key` is not an unpadded-base64 curve25519 key", id);
    char signer_key[300];
    snprintf(signer_key, sizeof(signer_key), "ed25519:%s", device_id);
    if (ed25519 == NULL)
        return fail(err, MX_ERR_INVALID_SIGNATURE, why,
                    "key %s is signed, but no device keys are known for device %s to check %s against: upload "
                    "device_keys first or in the same request",
                    id, device_id, signer_key);
    return check_signature(value, what, user_id, signer_key, ed25519, err, why);
}
