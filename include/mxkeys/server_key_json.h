/* Server signing keys as the key APIs carry them (GET /_matrix/key/v2/server, and each entry of a notary's
 * POST /_matrix/key/v2/query answer): checking one such object and reading its keys. Pure: no I/O. */
#ifndef MXKEYS_SERVER_KEY_JSON_H
#define MXKEYS_SERVER_KEY_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "mxkeys/signed_json.h"
#include "mxkeys/xmatrix.h"

/** The longest a fetched key is trusted, whatever its valid_until_ts says (the spec's 7 days). */
#define MX_SERVER_KEY_MAX_VALIDITY_MS (7LL * 24 * 3600 * 1000)

typedef struct st_mx_server_key_t {
    char key_id[MX_XMATRIX_KEY_ID_MAX + 1];
    uint8_t public_key[MX_ED25519_PUBLIC_KEY_BYTES];
} mx_server_key_t;

/**
 * Checks a server-keys object said to be `server_name`'s: its shape, that valid_until_ts lies after `now_ms`, that it
 * carries the server's own signature by at least one key of its verify_keys (and every such signature verifies), and,
 * when `notary` is not NULL, a valid signature by `notary` with one of `notary_keys` (signatures by other keys of the
 * notary are ignored). Returns NULL and sets `*valid_until_ms` (valid_until_ts, at most now + 7 days), or a reason
 * written into `why`, which it returns.
 */
const char *mx_server_keys_check(const json_t *obj, const char *server_name, const char *notary,
                                 const mx_server_key_t *notary_keys, size_t nnotary, int64_t now_ms,
                                 int64_t *valid_until_ms, char *why, size_t whylen);

typedef enum en_mx_server_key_find_t {
    MX_SERVER_KEY_CURRENT, /* in verify_keys: may sign requests */
    MX_SERVER_KEY_OLD,     /* only in old_verify_keys: valid for old events, never for requests */
    MX_SERVER_KEY_ABSENT,
} mx_server_key_find_t;

/** Looks `key_id` up in a checked object; the public key is written for MX_SERVER_KEY_CURRENT only. */
mx_server_key_find_t mx_server_keys_find(const json_t *obj, const char *key_id,
                                         uint8_t public_key[MX_ED25519_PUBLIC_KEY_BYTES]);

/** Copies up to `cap` usable ed25519 verify_keys of a checked object into `out`; returns how many. */
size_t mx_server_keys_list(const json_t *obj, mx_server_key_t *out, size_t cap);

#endif
