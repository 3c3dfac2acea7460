/* What strict validation would say about an object Synapse stored: the same rules an upload to mxkeys meets (ids,
 * self-signatures, signed keys, cross-signing keys signed by the master key), applied to stored JSON. */
#include <stdio.h>
#include <string.h>
#include "internal.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/json_parse.h"
#include "mxkeys/signed_json.h"

json_t *imp_parse(const char *text, char *why, size_t whylen)
{
    return mx_json_parse(text, strlen(text), why, whylen);
}

static int fail(char *why, size_t whylen, const char *fmt, const char *a)
{
    snprintf(why, whylen, fmt, a != NULL ? a : "");
    return -1;
}

int imp_check_device_keys(const char *user, const char *device, const json_t *keys, char *why, size_t whylen)
{
    if (!json_is_object(keys))
        return fail(why, whylen, "device keys are not a JSON object%s", NULL);
    if (!json_is_string(json_object_get(keys, "user_id")) ||
        strcmp(json_string_value(json_object_get(keys, "user_id")), user) != 0)
        return fail(why, whylen, "user_id is not %s", user);
    if (!json_is_string(json_object_get(keys, "device_id")) ||
        strcmp(json_string_value(json_object_get(keys, "device_id")), device) != 0)
        return fail(why, whylen, "device_id is not %s", device);
    char key_id[300];
    snprintf(key_id, sizeof(key_id), "ed25519:%s", device);
    const char *ed = json_string_value(json_object_get(json_object_get(keys, "keys"), key_id));
    if (ed == NULL)
        return fail(why, whylen, "no %s key", key_id);
    mx_sig_result_t r = mx_signed_json_verify(keys, user, key_id, ed);
    if (r != MX_SIG_OK)
        return fail(why, whylen, "self-signature: %s", mx_sig_result_str(r));
    return 0;
}

int imp_check_signed_key(const char *user, const char *device, const char *algorithm, const json_t *key,
                         const char *ed25519, char *why, size_t whylen)
{
    if (strcmp(algorithm, "signed_curve25519") != 0)
        return 0; /* unsigned algorithms carry a bare key string: nothing to verify */
    if (!json_is_object(key) || !json_is_string(json_object_get(key, "key")))
        return fail(why, whylen, "not an object with a \"key\" string%s", NULL);
    if (ed25519 == NULL)
        return fail(why, whylen, "device %s has no device keys to verify it against", device);
    char key_id[300];
    snprintf(key_id, sizeof(key_id), "ed25519:%s", device);
    mx_sig_result_t r = mx_signed_json_verify(key, user, key_id, ed25519);
    if (r != MX_SIG_OK)
        return fail(why, whylen, "signature by the device key: %s", mx_sig_result_str(r));
    return 0;
}

const char *imp_cross_signing_public_key(const json_t *key)
{
    json_t *keys = json_object_get(key, "keys");
    if (!json_is_object(keys) || json_object_size(keys) != 1)
        return NULL;
    const char *id;
    json_t *v;
    json_object_foreach(keys, id, v)
    {
        const char *pk = json_string_value(v);
        if (pk == NULL || strncmp(id, "ed25519:", 8) != 0 || strcmp(id + 8, pk) != 0)
            return NULL;
        return pk;
    }
    return NULL;
}

int imp_check_cross_signing_key(const char *user, const char *usage, const json_t *key, const char *master_pk,
                                char *why, size_t whylen)
{
    if (!json_is_object(key))
        return fail(why, whylen, "not a JSON object%s", NULL);
    if (!json_is_string(json_object_get(key, "user_id")) ||
        strcmp(json_string_value(json_object_get(key, "user_id")), user) != 0)
        return fail(why, whylen, "user_id is not %s", user);
    json_t *usages = json_object_get(key, "usage");
    int has_usage = 0;
    size_t i;
    json_t *u;
    json_array_foreach(usages, i, u) if (json_is_string(u) && strcmp(json_string_value(u), usage) == 0) has_usage = 1;
    if (!has_usage)
        return fail(why, whylen, "usage does not include %s", usage);
    if (imp_cross_signing_public_key(key) == NULL)
        return fail(why, whylen, "keys must hold exactly one ed25519 key named after itself%s", NULL);
    if (strcmp(usage, "master") == 0)
        return 0;
    if (master_pk == NULL)
        return fail(why, whylen, "no master key to verify it against%s", NULL);
    char key_id[80];
    snprintf(key_id, sizeof(key_id), "ed25519:%s", master_pk);
    mx_sig_result_t r = mx_signed_json_verify(key, user, key_id, master_pk);
    if (r != MX_SIG_OK)
        return fail(why, whylen, "signature by the master key: %s", mx_sig_result_str(r));
    return 0;
}

int imp_check_signature(const json_t *signed_obj, const char *signer, const char *key_id, const char *signature,
                        const char *public_key, char *why, size_t whylen)
{
    if (public_key == NULL)
        return fail(why, whylen, "signing key %s is not a current key of its owner", key_id);
    mx_buf_t payload = MX_BUF_INIT;
    const char *reason;
    if (mx_signed_json_payload(signed_obj, &payload, &reason) != 0) {
        mx_buf_free(&payload);
        return fail(why, whylen, "signed object is not canonical JSON: %s", reason);
    }
    json_t *holder = json_pack("{s:{s:{s:s}}}", "signatures", signer, key_id, signature);
    mx_sig_result_t r =
        holder != NULL ? mx_signed_json_verify_payload(&payload, holder, signer, key_id, public_key) : MX_SIG_MALFORMED;
    json_decref(holder);
    mx_buf_free(&payload);
    if (r != MX_SIG_OK)
        return fail(why, whylen, "%s", mx_sig_result_str(r));
    return 0;
}
