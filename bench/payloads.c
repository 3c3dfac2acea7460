#include "payloads.h"
#include <olm/inbound_group_session.h>
#include <olm/olm.h>
#include <olm/outbound_group_session.h>
#include <olm/pk.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/canonical_json.h"

struct st_bench_olm_device_t {
    OlmAccount *account;
    char *user_id, *device_id;
    char ed25519[64], curve25519[64];
};

static void *random_bytes(size_t n)
{
    void *r = malloc(n ? n : 1);
    if (r != NULL)
        randombytes_buf(r, n);
    return r;
}

bench_olm_device_t *bench_olm_device_new(const char *user_id, const char *device_id, char *err)
{
    bench_olm_device_t *d = calloc(1, sizeof(*d));
    void *mem = malloc(olm_account_size()), *rnd = NULL;
    char *ids = NULL;
    json_t *parsed = NULL;
    if (d == NULL || mem == NULL) {
        snprintf(err, 256, "out of memory");
        goto failed;
    }
    d->account = olm_account(mem);
    mem = NULL;
    size_t rl = olm_create_account_random_length(d->account);
    if ((rnd = random_bytes(rl)) == NULL || olm_create_account(d->account, rnd, rl) == olm_error()) {
        snprintf(err, 256, "olm_create_account: %s", olm_account_last_error(d->account));
        goto failed;
    }
    size_t il = olm_account_identity_keys_length(d->account);
    ids = malloc(il + 1);
    if (ids == NULL || (il = olm_account_identity_keys(d->account, ids, il)) == olm_error()) {
        snprintf(err, 256, "olm_account_identity_keys failed");
        goto failed;
    }
    ids[il] = '\0';
    parsed = json_loads(ids, 0, NULL);
    const char *ed = json_string_value(json_object_get(parsed, "ed25519"));
    const char *cu = json_string_value(json_object_get(parsed, "curve25519"));
    if (ed == NULL || cu == NULL) {
        snprintf(err, 256, "unexpected identity keys from libolm: %s", ids);
        goto failed;
    }
    snprintf(d->ed25519, sizeof(d->ed25519), "%s", ed);
    snprintf(d->curve25519, sizeof(d->curve25519), "%s", cu);
    d->user_id = strdup(user_id);
    d->device_id = strdup(device_id);
    if (d->user_id == NULL || d->device_id == NULL) {
        snprintf(err, 256, "out of memory");
        goto failed;
    }
    free(rnd);
    free(ids);
    json_decref(parsed);
    return d;

failed:
    free(mem);
    free(rnd);
    free(ids);
    json_decref(parsed);
    bench_olm_device_free(d);
    return NULL;
}

void bench_olm_device_free(bench_olm_device_t *d)
{
    if (d == NULL)
        return;
    if (d->account != NULL) {
        olm_clear_account(d->account);
        free(d->account);
    }
    free(d->user_id);
    free(d->device_id);
    free(d);
}

const char *bench_olm_device_ed25519(const bench_olm_device_t *d)
{
    return d->ed25519;
}

const char *bench_olm_device_curve25519(const bench_olm_device_t *d)
{
    return d->curve25519;
}

int bench_olm_sign(bench_olm_device_t *d, json_t *obj, char *err)
{
    static const char *const skip[] = {"signatures", "unsigned", NULL};
    mx_buf_t canon = MX_BUF_INIT;
    const char *why;
    int rc = -1;
    if (mx_canonical_json_except(obj, skip, &canon, &why) != 0) {
        snprintf(err, 256, "canonical JSON: %s", why);
        goto done;
    }
    size_t sl = olm_account_signature_length(d->account);
    char sig[128];
    if (sl >= sizeof(sig) || olm_account_sign(d->account, canon.data, canon.len, sig, sl) == olm_error()) {
        snprintf(err, 256, "olm_account_sign: %s", olm_account_last_error(d->account));
        goto done;
    }
    sig[sl] = '\0';
    json_t *sigs = json_object_get(obj, "signatures");
    if (sigs == NULL) {
        sigs = json_object();
        json_object_set_new(obj, "signatures", sigs);
    }
    json_t *mine = json_object_get(sigs, d->user_id);
    if (mine == NULL) {
        mine = json_object();
        json_object_set_new(sigs, d->user_id, mine);
    }
    char key_id[300];
    snprintf(key_id, sizeof(key_id), "ed25519:%s", d->device_id);
    json_object_set_new(mine, key_id, json_string(sig));
    rc = 0;
done:
    mx_buf_free(&canon);
    return rc;
}

json_t *bench_olm_device_keys(bench_olm_device_t *d, char *err)
{
    char ed_id[300], cu_id[300];
    snprintf(ed_id, sizeof(ed_id), "ed25519:%s", d->device_id);
    snprintf(cu_id, sizeof(cu_id), "curve25519:%s", d->device_id);
    json_t *obj = json_pack("{s:s, s:s, s:[s,s], s:{s:s, s:s}}", "user_id", d->user_id, "device_id", d->device_id,
                            "algorithms", "m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2", "keys", ed_id,
                            d->ed25519, cu_id, d->curve25519);
    if (obj == NULL || bench_olm_sign(d, obj, err) != 0) {
        if (obj == NULL)
            snprintf(err, 256, "out of memory");
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* Signs {"key": K[, "fallback": true]} and stores it under "signed_curve25519:<prefix><id>". */
static int add_signed_key(bench_olm_device_t *d, const char *prefix, const char *id, const char *key, int fallback,
                          json_t *into, char *err)
{
    json_t *obj = json_pack("{s:s}", "key", key);
    if (fallback)
        json_object_set_new(obj, "fallback", json_true());
    if (bench_olm_sign(d, obj, err) != 0) {
        json_decref(obj);
        return -1;
    }
    char name[256];
    snprintf(name, sizeof(name), "signed_curve25519:%s%s", prefix, id);
    json_object_set_new(into, name, obj);
    return 0;
}

/* Signs every key of libolm's {"curve25519": {id: key}} text. */
static int add_signed_keys(bench_olm_device_t *d, const char *prefix, const char *text, size_t len, int fallback,
                           json_t *into, char *err)
{
    json_t *parsed = json_loadb(text, len, 0, NULL);
    json_t *keys = json_object_get(parsed, "curve25519");
    int rc = keys != NULL ? 0 : -1;
    if (keys == NULL)
        snprintf(err, 256, "unexpected key list from libolm: %.80s", text);
    const char *id;
    json_t *key;
    json_object_foreach(keys, id, key)
    {
        if (rc == 0 && add_signed_key(d, prefix, id, json_string_value(key), fallback, into, err) != 0)
            rc = -1;
    }
    json_decref(parsed);
    return rc;
}

int bench_olm_one_time_keys(bench_olm_device_t *d, size_t n, const char *id_prefix, json_t *into, char *err)
{
    size_t max = olm_account_max_number_of_one_time_keys(d->account);
    while (n > 0) {
        /* An account holds at most `max` unpublished keys: generate, read, mark published, repeat. */
        size_t batch = n < max ? n : max;
        size_t rl = olm_account_generate_one_time_keys_random_length(d->account, batch);
        void *rnd = random_bytes(rl);
        size_t rc = rnd != NULL ? olm_account_generate_one_time_keys(d->account, batch, rnd, rl) : olm_error();
        free(rnd);
        if (rc == olm_error()) {
            snprintf(err, 256, "olm_account_generate_one_time_keys: %s", olm_account_last_error(d->account));
            return -1;
        }
        size_t kl = olm_account_one_time_keys_length(d->account);
        char *text = malloc(kl + 1);
        if (text == NULL || (kl = olm_account_one_time_keys(d->account, text, kl)) == olm_error()) {
            free(text);
            snprintf(err, 256, "olm_account_one_time_keys failed");
            return -1;
        }
        int ok = add_signed_keys(d, id_prefix, text, kl, 0, into, err);
        free(text);
        if (ok != 0)
            return -1;
        olm_account_mark_keys_as_published(d->account);
        n -= batch;
    }
    return 0;
}

int bench_olm_fallback_key(bench_olm_device_t *d, const char *id_prefix, json_t *into, char *err)
{
    size_t rl = olm_account_generate_fallback_key_random_length(d->account);
    void *rnd = random_bytes(rl);
    size_t rc = rnd != NULL ? olm_account_generate_fallback_key(d->account, rnd, rl) : olm_error();
    free(rnd);
    if (rc == olm_error()) {
        snprintf(err, 256, "olm_account_generate_fallback_key: %s", olm_account_last_error(d->account));
        return -1;
    }
    size_t kl = olm_account_unpublished_fallback_key_length(d->account);
    char *text = malloc(kl + 1);
    if (text == NULL || (kl = olm_account_unpublished_fallback_key(d->account, text, kl)) == olm_error()) {
        free(text);
        snprintf(err, 256, "olm_account_unpublished_fallback_key failed");
        return -1;
    }
    int ok = add_signed_keys(d, id_prefix, text, kl, 1, into, err);
    free(text);
    if (ok == 0)
        olm_account_mark_keys_as_published(d->account);
    return ok;
}

int bench_pk_seed(char seed_b64[64], char *err)
{
    uint8_t seed[32];
    if (olm_pk_signing_seed_length() != sizeof(seed)) {
        snprintf(err, 256, "unexpected libolm signing seed length");
        return -1;
    }
    randombytes_buf(seed, sizeof(seed));
    sodium_bin2base64(seed_b64, 64, seed, sizeof(seed), sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    sodium_memzero(seed, sizeof(seed));
    return 0;
}

/* An OlmPkSigning for the seed, with its public key in `pub`; NULL on failure. */
static OlmPkSigning *pk_signing(const char *seed_b64, char pub[64], char *err)
{
    uint8_t seed[32];
    size_t len;
    if (sodium_base642bin(seed, sizeof(seed), seed_b64, strlen(seed_b64), NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0 ||
        len != sizeof(seed)) {
        snprintf(err, 256, "bad cross-signing seed");
        return NULL;
    }
    OlmPkSigning *s = olm_pk_signing(malloc(olm_pk_signing_size()));
    size_t pl = olm_pk_signing_public_key_length();
    if (pl >= 64 || olm_pk_signing_key_from_seed(s, pub, pl, seed, sizeof(seed)) == olm_error()) {
        snprintf(err, 256, "olm_pk_signing_key_from_seed: %s", olm_pk_signing_last_error(s));
        olm_clear_pk_signing(s);
        free(s);
        s = NULL;
    } else {
        pub[pl] = '\0';
    }
    sodium_memzero(seed, sizeof(seed));
    return s;
}

json_t *bench_pk_key_object(const char *seed_b64, const char *user_id, const char *usage, char *err)
{
    char pub[64], id[80];
    OlmPkSigning *s = pk_signing(seed_b64, pub, err);
    if (s == NULL)
        return NULL;
    olm_clear_pk_signing(s);
    free(s);
    snprintf(id, sizeof(id), "ed25519:%s", pub);
    return json_pack("{s:s, s:[s], s:{s:s}}", "user_id", user_id, "usage", usage, "keys", id, pub);
}

int bench_pk_sign(const char *seed_b64, const char *user_id, json_t *obj, char *pub_out, char *err)
{
    static const char *const skip[] = {"signatures", "unsigned", NULL};
    char pub[64];
    OlmPkSigning *s = pk_signing(seed_b64, pub, err);
    if (s == NULL)
        return -1;
    mx_buf_t canon = MX_BUF_INIT;
    const char *why;
    int rc = -1;
    char sig[128], id[80];
    size_t sl = olm_pk_signature_length();
    if (mx_canonical_json_except(obj, skip, &canon, &why) != 0) {
        snprintf(err, 256, "canonical JSON: %s", why);
        goto done;
    }
    if (sl >= sizeof(sig) ||
        olm_pk_sign(s, (const uint8_t *)canon.data, canon.len, (uint8_t *)sig, sl) == olm_error()) {
        snprintf(err, 256, "olm_pk_sign: %s", olm_pk_signing_last_error(s));
        goto done;
    }
    sig[sl] = '\0';
    json_t *sigs = json_object_get(obj, "signatures");
    if (sigs == NULL)
        json_object_set_new(obj, "signatures", sigs = json_object());
    json_t *mine = json_object_get(sigs, user_id);
    if (mine == NULL)
        json_object_set_new(sigs, user_id, mine = json_object());
    snprintf(id, sizeof(id), "ed25519:%s", pub);
    json_object_set_new(mine, id, json_string(sig));
    if (pub_out != NULL)
        memcpy(pub_out, pub, sizeof(pub));
    rc = 0;
done:
    mx_buf_free(&canon);
    olm_clear_pk_signing(s);
    free(s);
    return rc;
}

int bench_backup_keypair(char pub[64], char *err)
{
    OlmPkDecryption *dec = olm_pk_decryption(malloc(olm_pk_decryption_size()));
    uint8_t priv[32];
    randombytes_buf(priv, sizeof(priv));
    size_t pl = olm_pk_key_length();
    int rc = 0;
    if (pl >= 64 || olm_pk_key_from_private(dec, pub, pl, priv, sizeof(priv)) == olm_error()) {
        snprintf(err, 256, "olm_pk_key_from_private: %s", olm_pk_decryption_last_error(dec));
        rc = -1;
    } else {
        pub[pl] = '\0';
    }
    /* The private key is not kept: the bench only writes and reads ciphertext. */
    sodium_memzero(priv, sizeof(priv));
    olm_clear_pk_decryption(dec);
    free(dec);
    return rc;
}

/* A real megolm session key as exported for backup: an outbound session's key imported and exported at index 0. */
static char *megolm_export(char *err)
{
    OlmOutboundGroupSession *out = olm_outbound_group_session(malloc(olm_outbound_group_session_size()));
    OlmInboundGroupSession *in = olm_inbound_group_session(malloc(olm_inbound_group_session_size()));
    char *key = NULL, *exported = NULL;
    size_t rl = olm_init_outbound_group_session_random_length(out);
    void *rnd = random_bytes(rl);
    if (rnd == NULL || olm_init_outbound_group_session(out, rnd, rl) == olm_error()) {
        snprintf(err, 256, "olm_init_outbound_group_session: %s", olm_outbound_group_session_last_error(out));
        goto done;
    }
    size_t kl = olm_outbound_group_session_key_length(out);
    key = malloc(kl + 1);
    if (key == NULL || (kl = olm_outbound_group_session_key(out, (uint8_t *)key, kl)) == olm_error() ||
        olm_init_inbound_group_session(in, (const uint8_t *)key, kl) == olm_error()) {
        snprintf(err, 256, "megolm session key: %s", olm_inbound_group_session_last_error(in));
        goto done;
    }
    size_t el = olm_export_inbound_group_session_length(in);
    exported = malloc(el + 1);
    if (exported == NULL || (el = olm_export_inbound_group_session(in, (uint8_t *)exported, el, 0)) == olm_error()) {
        snprintf(err, 256, "olm_export_inbound_group_session: %s", olm_inbound_group_session_last_error(in));
        free(exported);
        exported = NULL;
        goto done;
    }
    exported[el] = '\0';
done:
    free(rnd);
    free(key);
    olm_clear_outbound_group_session(out);
    olm_clear_inbound_group_session(in);
    free(out);
    free(in);
    return exported;
}

int bench_backup_session_data(const char *backup_pub, const char *sender_key, const char *sender_ed25519, mx_buf_t *out,
                              char *err)
{
    int rc = -1;
    char *session_key = megolm_export(err);
    OlmPkEncryption *enc = olm_pk_encryption(malloc(olm_pk_encryption_size()));
    mx_buf_t plain = MX_BUF_INIT;
    char *ct = NULL, *rnd = NULL;
    json_t *data = NULL;
    if (session_key == NULL)
        goto done;
    /* The plaintext a client backs up: the session export and who sent it (spec: SessionData). */
    json_t *p = json_pack("{s:s, s:[], s:{s:s}, s:s, s:s}", "algorithm", "m.megolm.v1.aes-sha2",
                          "forwarding_curve25519_key_chain", "sender_claimed_keys", "ed25519", sender_ed25519,
                          "sender_key", sender_key, "session_key", session_key);
    const char *why;
    int crc = p != NULL ? mx_canonical_json(p, &plain, &why) : -1;
    json_decref(p);
    if (crc != 0) {
        snprintf(err, 256, "session plaintext did not encode");
        goto done;
    }
    if (olm_pk_encryption_set_recipient_key(enc, backup_pub, strlen(backup_pub)) == olm_error()) {
        snprintf(err, 256, "olm_pk_encryption_set_recipient_key: %s", olm_pk_encryption_last_error(enc));
        goto done;
    }
    size_t cl = olm_pk_ciphertext_length(enc, plain.len), ml = olm_pk_mac_length(enc), kl = olm_pk_key_length();
    size_t rl = olm_pk_encrypt_random_length(enc);
    char mac[128], eph[128];
    ct = malloc(cl + 1);
    rnd = random_bytes(rl);
    if (ct == NULL || rnd == NULL || ml >= sizeof(mac) || kl >= sizeof(eph) ||
        olm_pk_encrypt(enc, plain.data, plain.len, ct, cl, mac, ml, eph, kl, rnd, rl) == olm_error()) {
        snprintf(err, 256, "olm_pk_encrypt: %s", olm_pk_encryption_last_error(enc));
        goto done;
    }
    ct[cl] = mac[ml] = eph[kl] = '\0';
    data = json_pack("{s:s, s:s, s:s}", "ciphertext", ct, "ephemeral", eph, "mac", mac);
    if (data == NULL || mx_canonical_json(data, out, &why) != 0) {
        snprintf(err, 256, "session_data did not encode");
        goto done;
    }
    rc = 0;
done:
    if (session_key != NULL)
        sodium_memzero(session_key, strlen(session_key));
    free(session_key);
    free(ct);
    free(rnd);
    json_decref(data);
    mx_buf_free(&plain);
    olm_clear_pk_encryption(enc);
    free(enc);
    return rc;
}
