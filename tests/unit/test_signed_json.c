/* Signed JSON verification and base64: vectors signed by python3-signedjson (nacl keys) and by a real libolm account
 * (tests/vectors/generate.py), plus round trips signed here with libsodium. Runs with the working directory tests/;
 * an optional argument names another vectors directory. */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include "check.h"
#include "mxkeys/base64.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/json_parse.h"
#include "mxkeys/signed_json.h"

static const char *vectors = "vectors";

/* Calls `fn` with each line of a JSON Lines file parsed as an object; returns the number of lines. */
static int each_vector(const char *name, void (*fn)(json_t *row))
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", vectors, name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL)
        return 0;
    int count = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (n == 1)
            continue;
        json_error_t err;
        json_t *row = json_loadb(line, (size_t)n, 0, &err);
        CHECK(row != NULL);
        if (row != NULL) {
            fn(row);
            json_decref(row);
            count++;
        }
    }
    free(line);
    fclose(f);
    return count;
}

/* --- base64 ------------------------------------------------------------------------------------------------------ */

static void on_base64(json_t *row)
{
    const char *hex = json_string_value(json_object_get(row, "hex"));
    const char *b64 = json_string_value(json_object_get(row, "b64"));
    uint8_t raw[128], back[128];
    size_t n;
    CHECK(sodium_hex2bin(raw, sizeof(raw), hex, strlen(hex), NULL, &n, NULL) == 0);
    char enc[200];
    CHECK(mx_base64_encoded_len(n) == strlen(b64));
    mx_base64_encode(raw, n, enc);
    CHECK_STREQ(enc, b64);
    CHECK(mx_base64_decode(b64, strlen(b64), back, sizeof(back)) == (long)n);
    CHECK(memcmp(back, raw, n) == 0);
    CHECK(mx_base64_is_key(b64, n));
    /* The padded spelling decodes to the same bytes. */
    char padded[204];
    snprintf(padded, sizeof(padded), "%s%s", b64, strlen(b64) % 4 == 2 ? "==" : strlen(b64) % 4 == 3 ? "=" : "");
    memset(back, 0, sizeof(back));
    CHECK(mx_base64_decode(padded, strlen(padded), back, sizeof(back)) == (long)n);
    CHECK(memcmp(back, raw, n) == 0);
}

static void expect_b64_refused(const char *s)
{
    uint8_t out[16];
    memset(out, 0xa5, sizeof(out));
    long n = mx_base64_decode(s, strlen(s), out, sizeof(out));
    CHECK(n == -1);
    if (n != -1)
        fprintf(stderr, "  base64 '%s' accepted\n", s);
    static const uint8_t zero[16];
    CHECK(memcmp(out, zero, sizeof(out)) == 0);
}

static void test_base64(void)
{
    /* RFC 4648 section 10, unpadded. */
    static const char *const rfc[][2] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof(rfc) / sizeof(rfc[0]); i++) {
        char enc[16];
        mx_base64_encode((const uint8_t *)rfc[i][0], strlen(rfc[i][0]), enc);
        CHECK_STREQ(enc, rfc[i][1]);
        uint8_t dec[16] = {0};
        CHECK(mx_base64_decode(rfc[i][1], strlen(rfc[i][1]), dec, sizeof(dec)) == (long)strlen(rfc[i][0]));
        CHECK(memcmp(dec, rfc[i][0], strlen(rfc[i][0])) == 0);
    }
    uint8_t all[3] = {0xfb, 0xff, 0xbf};
    char enc[8];
    mx_base64_encode(all, 3, enc);
    CHECK_STREQ(enc, "+/+/");

    /* Padded input with exactly the right padding is accepted. */
    uint8_t out[16];
    CHECK(mx_base64_decode("Zg==", 4, out, sizeof(out)) == 1 && out[0] == 'f');
    CHECK(mx_base64_decode("Zm8=", 4, out, sizeof(out)) == 2);

    /* Documented refusals: bad alphabet, whitespace, misplaced or wrong padding, impossible lengths, set trailing
     * bits, output too small. */
    const char *bad[] = {"Z", "Zm9vY", "Zg=", "Zg===", "Zm8==", "Z===", "====", "=", "Zm9v=", "Zm-v", "Zm_v", "Zm9 v",
                         " Zm9v", "Zm9v\n", "Zm=v", "Zh", "Zm9", "Zm8+Zh==", "Zh==", "Zm9vYh", "Zm!v", "Zm9v\xc3\xa9",
                         /* bytes above 0x7f that libsodium 1.0.18 alone would read as `+` or `/` */
                         "\xa6\x98\xc2\xc2", "Zm9v\xff\xff\xff\xff", "Zm\xab=", "Zg\xab\xab"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_b64_refused(bad[i]);
    /* A NUL inside the given length is not a terminator. */
    uint8_t two[2];
    CHECK(mx_base64_decode("Zg\0A", 4, two, sizeof(two)) == -1);
    /* Too little room: refused and zeroed, though the input is fine. */
    CHECK(mx_base64_decode("Zm9vYmFy", 8, two, sizeof(two)) == -1 && two[0] == 0 && two[1] == 0);
    CHECK(mx_base64_decode("", 0, NULL, 0) == 0);
    CHECK(mx_base64_decode("Zg", 2, NULL, 0) == -1);

    CHECK(mx_base64_is_key("iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w", 32));
    CHECK(!mx_base64_is_key("iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w", 31));
    CHECK(!mx_base64_is_key("iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1", 32));
    CHECK(!mx_base64_is_key(NULL, 32));
    CHECK(mx_base64_encoded_len(32) == 43 && mx_base64_encoded_len(64) == 86);

    CHECK(each_vector("base64.jsonl", on_base64) >= 10);
}

/* --- signed JSON ------------------------------------------------------------------------------------------------- */

static mx_sig_result_t expect_from_name(const char *s)
{
    static const struct {
        const char *name;
        mx_sig_result_t r;
    } map[] = {{"ok", MX_SIG_OK},
               {"missing", MX_SIG_MISSING},
               {"malformed", MX_SIG_MALFORMED},
               {"bad_key", MX_SIG_BAD_KEY},
               {"not_canonical", MX_SIG_NOT_CANONICAL},
               {"mismatch", MX_SIG_MISMATCH}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].name, s) == 0)
            return map[i].r;
    CHECK(!"unknown expectation in vector");
    return MX_SIG_OK;
}

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

static int signed_ok, signed_olm;

static void on_signed(json_t *row)
{
    const char *name = json_string_value(json_object_get(row, "name"));
    const json_t *text = json_object_get(row, "object"), *payload = json_object_get(row, "payload");
    const char *signer = json_string_value(json_object_get(row, "signer"));
    const char *key_id = json_string_value(json_object_get(row, "key_id"));
    const char *pk = json_string_value(json_object_get(row, "public_key"));
    mx_sig_result_t expected = expect_from_name(json_string_value(json_object_get(row, "expect")));

    char why[200];
    json_t *obj = mx_json_parse(json_string_value(text), json_string_length(text), why, sizeof(why));
    CHECK(obj != NULL);
    if (obj == NULL) {
        fprintf(stderr, "  vector '%s' did not parse: %s\n", name, why);
        return;
    }
    char *before = dump(obj);

    mx_sig_result_t got = mx_signed_json_verify(obj, signer, key_id, pk);
    CHECK(got == expected);
    if (got != expected)
        fprintf(stderr, "  vector '%s': got %s, expected %s\n", name, mx_sig_result_str(got),
                mx_sig_result_str(expected));

    /* The payload the signature covers matches the independent encoder's byte for byte. */
    mx_buf_t buf = MX_BUF_INIT;
    const char *reason = NULL;
    int rc = mx_signed_json_payload(obj, &buf, &reason);
    if (json_is_null(payload)) {
        CHECK(rc == -1 && reason != NULL);
    } else {
        CHECK(rc == 0);
        size_t len = json_string_length(payload);
        bool same = rc == 0 && buf.len == len && memcmp(buf.data, json_string_value(payload), len) == 0;
        CHECK(same);
        if (!same)
            fprintf(stderr, "  vector '%s' payload:\n  got:      %.*s\n  expected: %s\n", name, (int)buf.len,
                    buf.data ? buf.data : "", json_string_value(payload));
        /* The precomputed-payload path agrees with the all-in-one path. */
        CHECK(mx_signed_json_verify_payload(&buf, obj, signer, key_id, pk) == expected);
    }
    mx_buf_free(&buf);

    /* The caller's object is never changed (signatures and unsigned are still there, nothing added). */
    char *after = dump(obj);
    CHECK(before != NULL && after != NULL && strcmp(before, after) == 0);
    free(before);
    free(after);
    json_decref(obj);
    signed_ok += expected == MX_SIG_OK;
    signed_olm += expected == MX_SIG_OK && strncmp(name, "olm ", 4) == 0;
}

/* Signs with libsodium here and checks the verifier, and the ways a single changed byte is caught. */
static void test_round_trip(void)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES], seed[crypto_sign_SEEDBYTES];
    memset(seed, 7, sizeof(seed));
    CHECK(crypto_sign_seed_keypair(pk, sk, seed) == 0);
    char pk_b64[64];
    mx_base64_encode(pk, sizeof(pk), pk_b64);

    char why[200];
    const char *text = "{\"user_id\":\"@a:b\",\"n\":[1,2,3],\"unsigned\":{\"x\":0.5},\"signatures\":{\"@a:b\":{}}}";
    json_t *obj = mx_json_parse(text, strlen(text), why, sizeof(why));
    CHECK(obj != NULL);
    mx_buf_t payload = MX_BUF_INIT;
    const char *reason;
    CHECK(mx_signed_json_payload(obj, &payload, &reason) == 0);
    CHECK_STREQ(payload.data, "{\"n\":[1,2,3],\"user_id\":\"@a:b\"}");
    uint8_t sig[crypto_sign_BYTES];
    CHECK(crypto_sign_detached(sig, NULL, (const uint8_t *)payload.data, payload.len, sk) == 0);
    char sig_b64[100];
    mx_base64_encode(sig, sizeof(sig), sig_b64);
    json_object_set_new(json_object_get(json_object_get(obj, "signatures"), "@a:b"), "ed25519:DEV",
                        json_string(sig_b64));
    CHECK(mx_signed_json_verify(obj, "@a:b", "ed25519:DEV", pk_b64) == MX_SIG_OK);
    CHECK(mx_signed_json_verify(obj, "@a:b", "ed25519:DEV", NULL) == MX_SIG_BAD_KEY);
    CHECK(mx_signed_json_verify(obj, "@a:b", "ed25519:OTHER", pk_b64) == MX_SIG_MISSING);

    /* Flip each bit of the signature's first byte and of the key: always a mismatch, never a crash. */
    for (int bit = 0; bit < 8; bit++) {
        uint8_t bad[crypto_sign_BYTES];
        memcpy(bad, sig, sizeof(bad));
        bad[0] ^= (uint8_t)(1u << bit);
        char bad_b64[100];
        mx_base64_encode(bad, sizeof(bad), bad_b64);
        CHECK(mx_signed_json_verify_payload(&payload, obj, "@a:b", "ed25519:DEV", pk_b64) == MX_SIG_OK);
        json_object_set_new(json_object_get(json_object_get(obj, "signatures"), "@a:b"), "ed25519:BAD",
                            json_string(bad_b64));
        CHECK(mx_signed_json_verify(obj, "@a:b", "ed25519:BAD", pk_b64) == MX_SIG_MISMATCH);
    }
    /* A payload that is not what was signed does not verify. */
    mx_buf_t other = MX_BUF_INIT;
    mx_buf_puts(&other, "{\"n\":[1,2,3],\"user_id\":\"@a:c\"}");
    CHECK(mx_signed_json_verify_payload(&other, obj, "@a:b", "ed25519:DEV", pk_b64) == MX_SIG_MISMATCH);
    mx_buf_free(&other);
    /* An empty payload buffer (never appended to) is handled. */
    CHECK(mx_signed_json_verify_payload(&other, obj, "@a:b", "ed25519:DEV", pk_b64) == MX_SIG_MISMATCH);

    /* Not an object at all. */
    json_t *arr = json_array();
    CHECK(mx_signed_json_verify(arr, "@a:b", "ed25519:DEV", pk_b64) == MX_SIG_MISSING);
    CHECK(mx_signed_json_payload(arr, &payload, &reason) == -1);
    json_decref(arr);
    mx_buf_free(&payload);
    json_decref(obj);
}

static void test_result_strings(void)
{
    for (int r = MX_SIG_OK; r <= MX_SIG_MISMATCH; r++) {
        const char *s = mx_sig_result_str((mx_sig_result_t)r);
        CHECK(s != NULL && strlen(s) > 5);
        for (int q = MX_SIG_OK; q < r; q++)
            CHECK(strcmp(s, mx_sig_result_str((mx_sig_result_t)q)) != 0);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1)
        vectors = argv[1];
    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    test_base64();
    test_result_strings();
    test_round_trip();
    CHECK(each_vector("signed.jsonl", on_signed) >= 40);
    CHECK(signed_ok >= 15);
    CHECK(signed_olm >= 4);
    return check_finish("signed_json");
}
