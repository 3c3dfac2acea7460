/* One server-keys object, checked the way the spec's key exchange asks: the server vouches for its keys with its own
 * signature, a notary vouches that it saw them with its signature, and the object says until when it may be used. */
#include "mxkeys/server_key_json.h"
#include <stdio.h>
#include <string.h>
#include "mxkeys/base64.h"

static const char *fail(char *why, size_t whylen, const char *fmt, const char *a, const char *b)
{
    snprintf(why, whylen, fmt, a, b);
    return why;
}

/* The public key of an entry of verify_keys, decoded; false when the entry is unusable. */
static bool entry_key(const json_t *entry, uint8_t out[MX_ED25519_PUBLIC_KEY_BYTES])
{
    const json_t *k = json_object_get(entry, "key");
    return json_is_string(k) && mx_base64_decode(json_string_value(k), json_string_length(k), out,
                                                 MX_ED25519_PUBLIC_KEY_BYTES) == MX_ED25519_PUBLIC_KEY_BYTES;
}

static mx_sig_result_t verify_with(const mx_buf_t *payload, const json_t *obj, const char *signer, const char *key_id,
                                   const uint8_t key[MX_ED25519_PUBLIC_KEY_BYTES])
{
    char b64[64];
    mx_base64_encode(key, MX_ED25519_PUBLIC_KEY_BYTES, b64);
    return mx_signed_json_verify_payload(payload, obj, signer, key_id, b64);
}

const char *mx_server_keys_check(const json_t *obj, const char *server_name, const char *notary,
                                 const mx_server_key_t *notary_keys, size_t nnotary, int64_t now_ms,
                                 int64_t *valid_until_ms, char *why, size_t whylen)
{
    const json_t *name = json_object_get(obj, "server_name");
    const json_t *verify_keys = json_object_get(obj, "verify_keys");
    const json_t *until = json_object_get(obj, "valid_until_ts");
    if (!json_is_object(obj) || !json_is_string(name) || strcmp(json_string_value(name), server_name) != 0)
        return fail(why, whylen, "the keys are not %s's%s", server_name, "");
    if (!json_is_object(verify_keys) || !json_is_integer(until))
        return fail(why, whylen, "%s's keys have no verify_keys or valid_until_ts%s", server_name, "");
    json_int_t valid_until = json_integer_value(until);
    if (valid_until <= now_ms)
        return fail(why, whylen, "%s's keys expired (valid_until_ts is in the past)%s", server_name, "");
    mx_buf_t payload = MX_BUF_INIT;
    const char *enc_why;
    if (mx_signed_json_payload(obj, &payload, &enc_why) != 0) {
        mx_buf_free(&payload);
        return fail(why, whylen, "%s's keys cannot be encoded canonically: %s", server_name, enc_why);
    }
    const char *result = NULL;
    /* the server's own signatures: each one made with a listed key must hold, and there must be one */
    const json_t *own = json_object_get(json_object_get(obj, "signatures"), server_name);
    size_t own_ok = 0;
    const char *key_id;
    json_t *unused;
    json_object_foreach((json_t *)own, key_id, unused)
    {
        uint8_t key[MX_ED25519_PUBLIC_KEY_BYTES];
        const json_t *entry = json_object_get(verify_keys, key_id);
        if (entry == NULL || strncmp(key_id, "ed25519:", 8) != 0)
            continue;
        if (!entry_key(entry, key)) {
            result = fail(why, whylen, "%s's verify key %s is not base64 of 32 bytes", server_name, key_id);
            goto done;
        }
        mx_sig_result_t r = verify_with(&payload, obj, server_name, key_id, key);
        if (r != MX_SIG_OK) {
            snprintf(why, whylen, "%s's own signature on its keys with %s: %s", server_name, key_id,
                     mx_sig_result_str(r));
            result = why;
            goto done;
        }
        own_ok++;
    }
    if (own_ok == 0) {
        result =
            fail(why, whylen, "%s's keys are not signed by %s with any of its verify_keys", server_name, server_name);
        goto done;
    }
    if (notary != NULL && strcmp(notary, server_name) != 0) {
        const json_t *by_notary = json_object_get(json_object_get(obj, "signatures"), notary);
        mx_sig_result_t last = MX_SIG_MISSING;
        bool ok = false;
        for (size_t i = 0; i < nnotary && !ok; i++) {
            if (json_object_get(by_notary, notary_keys[i].key_id) == NULL)
                continue;
            last = verify_with(&payload, obj, notary, notary_keys[i].key_id, notary_keys[i].public_key);
            ok = last == MX_SIG_OK;
        }
        if (!ok) {
            snprintf(why, whylen, "the notary %s's signature on %s's keys: %s", notary, server_name,
                     last == MX_SIG_MISSING ? "missing (no signature by a key of the notary)"
                                            : mx_sig_result_str(last));
            result = why;
            goto done;
        }
    }
    *valid_until_ms =
        valid_until < now_ms + MX_SERVER_KEY_MAX_VALIDITY_MS ? valid_until : now_ms + MX_SERVER_KEY_MAX_VALIDITY_MS;
done:
    mx_buf_free(&payload);
    return result;
}

mx_server_key_find_t mx_server_keys_find(const json_t *obj, const char *key_id,
                                         uint8_t public_key[MX_ED25519_PUBLIC_KEY_BYTES])
{
    const json_t *entry = json_object_get(json_object_get(obj, "verify_keys"), key_id);
    if (entry != NULL && strncmp(key_id, "ed25519:", 8) == 0 && entry_key(entry, public_key))
        return MX_SERVER_KEY_CURRENT;
    if (json_object_get(json_object_get(obj, "old_verify_keys"), key_id) != NULL)
        return MX_SERVER_KEY_OLD;
    return MX_SERVER_KEY_ABSENT;
}

size_t mx_server_keys_list(const json_t *obj, mx_server_key_t *out, size_t cap)
{
    size_t n = 0;
    const char *key_id;
    json_t *entry;
    json_object_foreach(json_object_get(obj, "verify_keys"), key_id, entry)
    {
        if (n == cap || strncmp(key_id, "ed25519:", 8) != 0 || strlen(key_id) > MX_XMATRIX_KEY_ID_MAX)
            continue;
        if (!entry_key(entry, out[n].public_key))
            continue;
        snprintf(out[n].key_id, sizeof(out[n].key_id), "%s", key_id);
        n++;
    }
    return n;
}
