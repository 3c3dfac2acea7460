/* Server-server request authentication, the pure parts: X-Matrix header parsing, the signed request JSON and server
 * key objects, against vectors made by python3-signedjson / python3-nacl (tests/vectors/generate_federation.py).
 * Runs with the working directory tests/. */
#include <sodium.h>
#include <stdlib.h>
#include "check.h"
#include "mxkeys/base64.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/server_key_json.h"
#include "mxkeys/xmatrix.h"

static int each_vector(const char *name, void (*fn)(json_t *row))
{
    char path[512];
    snprintf(path, sizeof(path), "vectors/%s", name);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL)
        return 0;
    int count = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 1) {
        json_t *row = json_loads(line, 0, NULL);
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

static const char *str(const json_t *row, const char *member)
{
    return json_string_value(json_object_get(row, member));
}

static void on_header(json_t *row)
{
    const char *name = str(row, "name"), *header = str(row, "header"), *expect = str(row, "expect");
    mx_xmatrix_t x;
    const char *why = NULL;
    mx_xmatrix_parse_t r = mx_xmatrix_parse(header, strlen(header), &x, &why);
    mx_xmatrix_parse_t want = strcmp(expect, "ok") == 0      ? MX_XMATRIX_OK
                              : strcmp(expect, "other") == 0 ? MX_XMATRIX_OTHER_SCHEME
                                                             : MX_XMATRIX_MALFORMED;
    CHECK(r == want);
    if (r != want) {
        fprintf(stderr, "  header vector \"%s\": got %d (%s)\n", name, (int)r, why ? why : "");
        return;
    }
    if (r == MX_XMATRIX_MALFORMED)
        CHECK(why != NULL && *why != '\0');
    if (r != MX_XMATRIX_OK) {
        CHECK(x.origin[0] == '\0' && x.sig[0] == '\0');
        return;
    }
    CHECK_STREQ(x.origin, str(row, "origin"));
    CHECK_STREQ(x.key, str(row, "key"));
    CHECK_STREQ(x.sig, str(row, "sig"));
    const char *dest = str(row, "destination");
    CHECK(x.has_destination == (dest != NULL));
    if (dest != NULL)
        CHECK_STREQ(x.destination, dest);
}

static void on_request(json_t *row)
{
    const char *name = str(row, "name"), *content_text = str(row, "content"), *dest = str(row, "destination");
    json_t *content = content_text ? json_loads(content_text, 0, NULL) : NULL;
    const char *uri = str(row, "uri");
    mx_buf_t payload = MX_BUF_INIT;
    const char *why;
    CHECK(mx_xmatrix_payload(str(row, "method"), uri, strlen(uri), str(row, "origin"), dest, content, &payload, &why) ==
          0);
    bool ok = strcmp(str(row, "expect"), "ok") == 0;
    if (ok) /* the bytes the origin signed, byte for byte */
        CHECK_STREQ(payload.data, str(row, "payload"));
    uint8_t key[32];
    const char *pk = str(row, "public_key");
    CHECK(mx_base64_decode(pk, strlen(pk), key, sizeof(key)) == 32);
    mx_sig_result_t r = mx_xmatrix_verify(&payload, str(row, "sig"), key);
    CHECK(r == (ok ? MX_SIG_OK : MX_SIG_MISMATCH));
    if (r != (ok ? MX_SIG_OK : MX_SIG_MISMATCH))
        fprintf(stderr, "  request vector \"%s\": %s\n", name, mx_sig_result_str(r));
    mx_buf_free(&payload);
    json_decref(content);
}

static void on_server_keys(json_t *row)
{
    const char *name = str(row, "name"), *expect = str(row, "expect");
    json_t *obj = json_loads(str(row, "object"), 0, NULL);
    mx_server_key_t notary_keys[4];
    size_t nnotary = 0;
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(row, "notary_keys"), i, k)
    {
        snprintf(notary_keys[nnotary].key_id, sizeof(notary_keys[nnotary].key_id), "%s", str(k, "key_id"));
        const char *pk = str(k, "public_key");
        CHECK(mx_base64_decode(pk, strlen(pk), notary_keys[nnotary].public_key, 32) == 32);
        nnotary++;
    }
    int64_t until = 0;
    char why[512];
    const char *r = mx_server_keys_check(obj, str(row, "server_name"), str(row, "notary"), notary_keys, nnotary,
                                         json_integer_value(json_object_get(row, "now_ms")), &until, why, sizeof(why));
    if (strcmp(expect, "ok") == 0) {
        CHECK(r == NULL);
        if (r != NULL)
            fprintf(stderr, "  server keys vector \"%s\": %s\n", name, r);
        CHECK(until == json_integer_value(json_object_get(row, "valid_until_ms")));
    } else {
        CHECK(r != NULL && strstr(r, expect) != NULL);
        if (r == NULL || strstr(r, expect) == NULL)
            fprintf(stderr, "  server keys vector \"%s\": expected \"%s\", got %s\n", name, expect, r ? r : "ok");
    }
    const char *key_id;
    json_t *want;
    json_object_foreach(json_object_get(row, "find"), key_id, want)
    {
        uint8_t pk[32];
        mx_server_key_find_t f = mx_server_keys_find(obj, key_id, pk);
        const char *w = json_string_value(want);
        CHECK(f == (strcmp(w, "current") == 0 ? MX_SERVER_KEY_CURRENT
                    : strcmp(w, "old") == 0   ? MX_SERVER_KEY_OLD
                                              : MX_SERVER_KEY_ABSENT));
    }
    json_decref(obj);
}

/* Signed here with libsodium: a request signature over the payload verifies, one flipped bit anywhere does not. */
static void test_round_trip(void)
{
    uint8_t pk[32], sk[64], sig[64];
    crypto_sign_keypair(pk, sk);
    json_t *content = json_pack("{s:{s:{s:s}}}", "one_time_keys", "@a:localhost", "D", "signed_curve25519");
    mx_buf_t payload = MX_BUF_INIT;
    const char *why;
    CHECK(mx_xmatrix_payload("POST", "/x?y=%20", 9, "o.test", "localhost", content, &payload, &why) == 0);
    crypto_sign_detached(sig, NULL, (const unsigned char *)payload.data, payload.len, sk);
    char b64[100];
    mx_base64_encode(sig, sizeof(sig), b64);
    CHECK(mx_xmatrix_verify(&payload, b64, pk) == MX_SIG_OK);
    payload.data[3] ^= 1;
    CHECK(mx_xmatrix_verify(&payload, b64, pk) == MX_SIG_MISMATCH);
    CHECK(mx_xmatrix_verify(&payload, "AAAA", pk) == MX_SIG_MALFORMED);
    mx_buf_free(&payload);
    /* a raw target that is not UTF-8 cannot be put in JSON: refused, not mangled */
    CHECK(mx_xmatrix_payload("POST", "/\xff", 2, "o.test", NULL, NULL, &payload, &why) == -1);
    mx_buf_free(&payload);
    json_decref(content);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    CHECK(each_vector("xmatrix.jsonl", on_header) > 20);
    CHECK(each_vector("fed_requests.jsonl", on_request) > 8);
    CHECK(each_vector("server_keys.jsonl", on_server_keys) > 8);
    test_round_trip();
    return check_finish("xmatrix");
}
