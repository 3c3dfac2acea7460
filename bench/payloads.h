/* Realistic request payloads made with libolm, as a real client makes them: a device's Olm account gives its
 * identity keys and signs (over the project's canonical JSON) its device keys, one-time keys and fallback key; a
 * backup key pair comes from OlmPkDecryption, and backup session data is a real megolm session export encrypted to
 * the backup's public key with OlmPkEncryption. */
#ifndef MXKEYS_BENCH_PAYLOADS_H
#define MXKEYS_BENCH_PAYLOADS_H

#include <jansson.h>
#include <stddef.h>
#include "mxkeys/buf.h"

typedef struct st_bench_olm_device_t bench_olm_device_t;

/** A new Olm account for the device. NULL (with `err`, 256 bytes) on failure. */
bench_olm_device_t *bench_olm_device_new(const char *user_id, const char *device_id, char *err);
void bench_olm_device_free(bench_olm_device_t *d);
/** The device's unpadded-base64 identity keys. */
const char *bench_olm_device_ed25519(const bench_olm_device_t *d);
const char *bench_olm_device_curve25519(const bench_olm_device_t *d);

/** Signs `obj` in place as Matrix signs JSON (canonical form without `signatures` and `unsigned`). 0 or -1. */
int bench_olm_sign(bench_olm_device_t *d, json_t *obj, char *err) __attribute__((warn_unused_result));
/** The self-signed device-keys object. NULL on failure. */
json_t *bench_olm_device_keys(bench_olm_device_t *d, char *err);
/**
 * Generates `n` new one-time keys and adds them to `into` as "signed_curve25519:<id_prefix><olm id>": {key,
 * signatures}. The prefix keeps ids unique when a device is given keys by several runs. 0 or -1.
 */
int bench_olm_one_time_keys(bench_olm_device_t *d, size_t n, const char *id_prefix, json_t *into, char *err)
    __attribute__((warn_unused_result));
/** Generates a fallback key and adds it to `into` as "signed_curve25519:<id>": {key, fallback: true, signatures}. */
int bench_olm_fallback_key(bench_olm_device_t *d, const char *id_prefix, json_t *into, char *err)
    __attribute__((warn_unused_result));

/** A fresh cross-signing seed (unpadded base64, for the state file). 0 or -1. */
int bench_pk_seed(char seed_b64[64], char *err) __attribute__((warn_unused_result));
/**
 * Signs `obj` in place with the ed25519 key grown from `seed_b64` (libolm's OlmPkSigning, as clients hold their
 * cross-signing keys), as `user_id`'s "ed25519:<public key>". When `pub` is given the public key is written there
 * (64 bytes). 0 or -1.
 */
int bench_pk_sign(const char *seed_b64, const char *user_id, json_t *obj, char *pub, char *err)
    __attribute__((warn_unused_result));
/** The cross-signing key object {user_id, usage: [usage], keys: {ed25519:P: P}} of `seed_b64`; NULL on failure. */
json_t *bench_pk_key_object(const char *seed_b64, const char *user_id, const char *usage, char *err);

/** A fresh backup key pair: writes the public key (unpadded base64, 44 bytes with NUL) into `pub`. 0 or -1. */
int bench_backup_keypair(char pub[64], char *err) __attribute__((warn_unused_result));
/**
 * Appends one encrypted session_data object {"ciphertext","ephemeral","mac"} (canonical JSON) to `out`: a fresh
 * megolm session exported at index 0, encrypted to `backup_pub`. `sender_key`/`sender_ed25519` name the device that
 * "created" the session. 0 or -1.
 */
int bench_backup_session_data(const char *backup_pub, const char *sender_key, const char *sender_ed25519, mx_buf_t *out,
                              char *err) __attribute__((warn_unused_result));

#endif
