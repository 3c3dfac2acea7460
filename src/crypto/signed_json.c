/* Signed JSON (Matrix appendix "Signing JSON"): the signature covers the canonical JSON of the object without its
 * `signatures` and `unsigned` members, and is stored as unpadded base64 at signatures[signer][key_id].
 *
 * The checks run cheapest first (look-ups and base64 before encoding and ed25519), so a malformed upload costs little.
 * The caller's object is never modified or copied: the encoder skips the two members at the top level. libsodium must
 * have been initialised (sodium_init) by the program; verification itself needs no randomness. */
#include "mxkeys/signed_json.h"
#include <sodium.h>
#include <string.h>
#include "mxkeys/base64.h"
#include "mxkeys/canonical_json.h"

static const char *const unsigned_members[] = {"signatures", "unsigned", NULL};

int mx_signed_json_payload(const json_t *object, mx_buf_t *out, const char **why)
{
    return mx_canonical_json_except(object, unsigned_members, out, why);
}

/* Finds and decodes the signature and the key; MX_SIG_OK means both are ready in `sig` and `key`. */
static mx_sig_result_t load(const json_t *object, const char *signer, const char *key_id, const char *public_key_b64,
                            uint8_t sig[MX_ED25519_SIGNATURE_BYTES], uint8_t key[MX_ED25519_PUBLIC_KEY_BYTES])
{
    const json_t *s = json_object_get(json_object_get(json_object_get(object, "signatures"), signer), key_id);
    if (!json_is_string(s))
        return MX_SIG_MISSING;
    if (mx_base64_decode(json_string_value(s), json_string_length(s), sig, MX_ED25519_SIGNATURE_BYTES) !=
        MX_ED25519_SIGNATURE_BYTES)
        return MX_SIG_MALFORMED;
    if (public_key_b64 == NULL || mx_base64_decode(public_key_b64, strlen(public_key_b64), key,
                                                   MX_ED25519_PUBLIC_KEY_BYTES) != MX_ED25519_PUBLIC_KEY_BYTES)
        return MX_SIG_BAD_KEY;
    return MX_SIG_OK;
}

static mx_sig_result_t verify(const mx_buf_t *payload, const uint8_t *sig, const uint8_t *key)
{
    /* An empty buffer has data == NULL; libsodium needs a valid pointer even for zero bytes. */
    const unsigned char *m = payload->data ? (const unsigned char *)payload->data : (const unsigned char *)"";
    return crypto_sign_verify_detached(sig, m, payload->len, key) == 0 ? MX_SIG_OK : MX_SIG_MISMATCH;
}

mx_sig_result_t mx_signed_json_verify(const json_t *object, const char *signer, const char *key_id,
                                      const char *public_key_b64)
{
    uint8_t sig[MX_ED25519_SIGNATURE_BYTES], key[MX_ED25519_PUBLIC_KEY_BYTES];
    mx_sig_result_t r = load(object, signer, key_id, public_key_b64, sig, key);
    if (r != MX_SIG_OK)
        return r;
    mx_buf_t payload = MX_BUF_INIT;
    const char *why;
    if (mx_signed_json_payload(object, &payload, &why) != 0)
        r = MX_SIG_NOT_CANONICAL;
    else
        r = verify(&payload, sig, key);
    mx_buf_free(&payload);
    return r;
}

mx_sig_result_t mx_signed_json_verify_payload(const mx_buf_t *payload, const json_t *object, const char *signer,
                                              const char *key_id, const char *public_key_b64)
{
    uint8_t sig[MX_ED25519_SIGNATURE_BYTES], key[MX_ED25519_PUBLIC_KEY_BYTES];
    mx_sig_result_t r = load(object, signer, key_id, public_key_b64, sig, key);
    return r != MX_SIG_OK ? r : verify(payload, sig, key);
}

const char *mx_sig_result_str(mx_sig_result_t r)
{
    switch (r) {
    case MX_SIG_OK:
        return "signature is valid";
    case MX_SIG_MISSING:
        return "signature is missing";
    case MX_SIG_MALFORMED:
        return "signature is not unpadded base64 of 64 bytes";
    case MX_SIG_BAD_KEY:
        return "public key is not unpadded base64 of 32 bytes";
    case MX_SIG_NOT_CANONICAL:
        return "object cannot be encoded as canonical JSON (a float or an integer out of range)";
    case MX_SIG_MISMATCH:
        return "signature does not match";
    }
    return "unknown signature result";
}
