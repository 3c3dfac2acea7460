/* Shape and signature checks shared by the key endpoints. Each check answers NULL when the input is fine, or a
 * one-line reason (written into `why`, which it returns) with the Matrix error to use in `*err`. */
#ifndef MXKEYS_KEYS_VALIDATE_H
#define MXKEYS_KEYS_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include "mxkeys/errors.h"
#include "mxkeys/matrix_ids.h" /* the user id grammar the key checks use */

#define MX_WHY_LEN 512

/** True for "<algorithm>:<key id>" with exactly one ':' and both parts non-empty. */
bool mx_key_id_valid(const char *id);

/**
 * Checks a device-keys object uploaded by (user_id, device_id): required members and their types, ownership, and in
 * strict mode the ed25519/curve25519 keys and the self-signature. On success `*ed25519` points into `obj`.
 */
const char *mx_check_device_keys(const json_t *obj, const char *user_id, const char *device_id, bool strict,
                                 const char **ed25519, mx_err_t *err, char *why);

/**
 * Checks one one-time or fallback key value (a string or {key, signatures[, fallback]}). In strict mode string keys
 * must be base64 curve25519 keys and signed keys must carry a valid signature by (user_id, ed25519:device_id) using
 * `ed25519` (NULL: no device key known, which is an error for a signed key).
 */
const char *mx_check_one_time_key(const char *id, const json_t *value, const char *user_id, const char *device_id,
                                  bool strict, const char *ed25519, mx_err_t *err, char *why);

/** True when a key value is a signed key object (and so needs the device's ed25519 key to verify in strict mode). */
bool mx_one_time_key_is_signed(const json_t *value);

#endif
