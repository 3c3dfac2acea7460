/* Signed JSON (Matrix appendix): a signature covers the canonical encoding of the object without `signatures` and
 * `unsigned`. Verification uses libsodium's ed25519. */
#ifndef MXKEYS_SIGNED_JSON_H
#define MXKEYS_SIGNED_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "mxkeys/buf.h"

#define MX_ED25519_PUBLIC_KEY_BYTES 32
#define MX_ED25519_SIGNATURE_BYTES 64

typedef enum en_mx_sig_result_t {
    MX_SIG_OK = 0,
    MX_SIG_MISSING,       /* no signatures[signer][key_id] string */
    MX_SIG_MALFORMED,     /* signature not unpadded base64 of 64 bytes */
    MX_SIG_BAD_KEY,       /* public key not base64 of 32 bytes */
    MX_SIG_NOT_CANONICAL, /* the object has a float or out-of-range integer */
    MX_SIG_MISMATCH       /* ed25519 verification failed */
} mx_sig_result_t;

/**
 * Appends the bytes a signature covers: the canonical JSON of `object` without its `signatures` and `unsigned`
 * members. Returns 0 or -1 (not canonicalisable) with `*why` set.
 */
int mx_signed_json_payload(const json_t *object, mx_buf_t *out, const char **why) __attribute__((warn_unused_result));

/**
 * Verifies `object.signatures[signer][key_id]` (key_id like "ed25519:DEVICE") against the unpadded-base64 ed25519
 * public key `public_key_b64`. Never trusts anything cached: the check runs every time.
 */
mx_sig_result_t mx_signed_json_verify(const json_t *object, const char *signer, const char *key_id,
                                      const char *public_key_b64) __attribute__((warn_unused_result));

/** Same as mx_signed_json_verify with a precomputed payload (for checking several signatures on one object). */
mx_sig_result_t mx_signed_json_verify_payload(const mx_buf_t *payload, const json_t *object, const char *signer,
                                              const char *key_id, const char *public_key_b64)
    __attribute__((warn_unused_result));

/** A short human phrase for a result ("signature does not match", ...). */
const char *mx_sig_result_str(mx_sig_result_t r);

#endif
