/* The pure key checks of src/api/keys_validate.c: identifier grammars, and the device-key and one-time-key checks in
 * both modes, starting from objects a real libolm account signed (tests/vectors/signed.jsonl, made by
 * tests/vectors/generate.py) and changing one thing at a time. Runs with the working directory tests/. */
#include <stdlib.h>
#include "check.h"
#include "mxkeys/keys_validate.h"

#define USER "@olm:example.org"
#define DEVICE "OLMDEVICE"
#define ED25519 "ETea51Gi9ohPkAg5mHzdUJ+he2HFn5DBy5JjbePa3Ew"

/* The object of the vector named `name` in vectors/signed.jsonl (a new reference), or NULL. */
static json_t *vector_object(const char *name)
{
    FILE *f = fopen("vectors/signed.jsonl", "rb");
    CHECK(f != NULL);
    if (f == NULL)
        return NULL;
    json_t *found = NULL;
    char *line = NULL;
    size_t cap = 0;
    while (found == NULL && getline(&line, &cap, f) > 1) {
        json_t *row = json_loads(line, 0, NULL);
        const char *rname = json_string_value(json_object_get(row, "name"));
        if (rname != NULL && strcmp(rname, name) == 0)
            found = json_loads(json_string_value(json_object_get(row, "object")), 0, NULL);
        json_decref(row);
    }
    free(line);
    fclose(f);
    CHECK(found != NULL);
    if (found == NULL)
        fprintf(stderr, "  vector '%s' not found\n", name);
    return found;
}

/* --- identifiers ------------------------------------------------------------------------------------------------- */

static void test_user_ids(void)
{
    CHECK(mx_user_id_valid("@a:b"));
    CHECK(mx_user_id_valid("@alice:example.org:8448"));
    CHECK(mx_user_id_valid("@=~!:[::1]"));
    CHECK(!mx_user_id_valid("a:b"));         /* no sigil */
    CHECK(!mx_user_id_valid("@:b"));         /* empty localpart */
    CHECK(!mx_user_id_valid("@ab:"));        /* empty server */
    CHECK(!mx_user_id_valid("@abc"));        /* no server at all */
    CHECK(!mx_user_id_valid("@a"));          /* shorter than the shortest "@a:b" */
    CHECK(!mx_user_id_valid("@a b:c"));      /* space */
    CHECK(!mx_user_id_valid("@a\x7f:c"));    /* DEL */
    CHECK(!mx_user_id_valid("@\xc3\xa9:c")); /* non-ASCII */
    char longest[257];
    memset(longest, 'a', sizeof(longest));
    memcpy(longest, "@a:", 3);
    longest[255] = '\0';
    CHECK(mx_user_id_valid(longest)); /* 255 bytes */
    longest[255] = 'a';
    longest[256] = '\0';
    CHECK(!mx_user_id_valid(longest)); /* 256 */

    /* the server part is a server name (one grammar with --server-name: src/core/matrix_ids.c) */
    CHECK(!mx_user_id_valid("@a:exa_mple.org"));  /* '_' is no DNS character */
    CHECK(!mx_user_id_valid("@a:example.org:0")); /* port 0 */
    CHECK(!mx_user_id_valid("@a:example.org:65536"));
    CHECK(!mx_user_id_valid("@a:example.org:84x")); /* port with a letter */
    CHECK(!mx_user_id_valid("@a:[]"));              /* empty IPv6 literal */
    CHECK(!mx_user_id_valid("@a:[::1"));            /* unterminated */
    CHECK(!mx_user_id_valid("@a:b:c:d"));           /* a second ':' is not a port */
    CHECK(mx_user_id_valid("@a:127.0.0.1:65535"));
    CHECK(mx_server_name_valid("[2001:db8::1]:8448"));
    CHECK(!mx_server_name_valid(""));

    CHECK_STREQ(mx_user_id_server("@a:example.org"), "example.org");
    CHECK_STREQ(mx_user_id_server("@a:example.org:8448"), "example.org:8448"); /* the first ':' ends the localpart */
}

static void test_key_ids(void)
{
    CHECK(mx_key_id_valid("ed25519:DEVICE"));
    CHECK(mx_key_id_valid("signed_curve25519:AAAAAQ"));
    CHECK(!mx_key_id_valid("ed25519"));
    CHECK(!mx_key_id_valid(":DEVICE"));
    CHECK(!mx_key_id_valid("ed25519:"));
    CHECK(!mx_key_id_valid("a:b:c"));
    CHECK(!mx_key_id_valid(""));
}

/* --- device keys ------------------------------------------------------------------------------------------------- */

/* Runs the device-key check on `obj`; returns the error (or -1 for success) and, on success, checks *ed25519. */
static int device_keys(const json_t *obj, const char *user, const char *device, bool strict)
{
    mx_err_t err = MX_ERR__COUNT;
    char why[MX_WHY_LEN];
    const char *ed = (const char *)1;
    const char *r = mx_check_device_keys(obj, user, device, strict, &ed, &err, why);
    if (r == NULL) {
        CHECK(err == MX_ERR__COUNT); /* untouched on success */
        return -1;
    }
    CHECK(r == why && why[0] != '\0');
    return (int)err;
}

/* A copy of the olm device keys with one change applied by `edit`. */
static json_t *edited(const json_t *good, void (*edit)(json_t *))
{
    json_t *copy = json_deep_copy(good);
    edit(copy);
    return copy;
}

static void drop_curve(json_t *o)
{
    json_object_del(json_object_get(o, "keys"), "curve25519:" DEVICE);
}
static void tamper_algorithms(json_t *o)
{
    json_array_append_new(json_object_get(o, "algorithms"), json_string("m.extra"));
}
static void change_unsigned(json_t *o)
{
    json_object_set_new(o, "unsigned", json_pack("{s:s}", "device_display_name", "renamed"));
}
static void number_algorithm(json_t *o)
{
    json_array_append_new(json_object_get(o, "algorithms"), json_integer(1));
}
static void number_key(json_t *o)
{
    json_object_set_new(json_object_get(o, "keys"), "ed25519:OTHER", json_integer(1));
}
static void bad_key_id(json_t *o)
{
    json_object_set_new(json_object_get(o, "keys"), "noalgorithm", json_string("x"));
}
static void signatures_list(json_t *o)
{
    json_object_set_new(o, "signatures", json_array());
}
static void signature_number(json_t *o)
{
    json_object_set_new(json_object_get(json_object_get(o, "signatures"), USER), "ed25519:" DEVICE, json_integer(1));
}
static void float_member(json_t *o)
{
    json_object_set_new(o, "extra", json_real(1.5));
}
static void short_curve(json_t *o)
{
    json_object_set_new(json_object_get(o, "keys"), "curve25519:" DEVICE, json_string("AAAA"));
}
static void padded_ed(json_t *o)
{
    json_object_set_new(json_object_get(o, "keys"), "ed25519:" DEVICE, json_string(ED25519 "="));
}
static void url_safe_ed(json_t *o)
{
    json_object_set_new(json_object_get(o, "keys"), "ed25519:" DEVICE,
                        json_string("ETea51Gi9ohPkAg5mHzdUJ-he2HFn5DBy5JjbePa3Ew"));
}

static void test_device_keys(void)
{
    json_t *good = vector_object("olm device_keys");
    if (good == NULL)
        return;
    mx_err_t err;
    char why[MX_WHY_LEN];
    const char *ed = NULL;
    CHECK(mx_check_device_keys(good, USER, DEVICE, true, &ed, &err, why) == NULL);
    CHECK_STREQ(ed, ED25519);
    CHECK(device_keys(good, USER, DEVICE, false) == -1);

    /* who uploads must be whom the keys are for */
    CHECK(device_keys(good, "@other:example.org", DEVICE, true) == MX_ERR_BAD_JSON);
    CHECK(device_keys(good, USER, "OTHERDEVICE", false) == MX_ERR_BAD_JSON);
    /* every required member, in both modes */
    static const char *const required[] = {"user_id", "device_id", "algorithms", "keys", "signatures"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        json_t *o = json_deep_copy(good);
        json_object_del(o, required[i]);
        CHECK(device_keys(o, USER, DEVICE, true) == MX_ERR_MISSING_PARAM);
        CHECK(device_keys(o, USER, DEVICE, false) == MX_ERR_MISSING_PARAM);
        json_decref(o);
    }
    json_t *list = json_array();
    CHECK(device_keys(list, USER, DEVICE, false) == MX_ERR_BAD_JSON);
    json_decref(list);

    /* shapes are checked in both modes */
    static const struct {
        void (*edit)(json_t *);
        int strict, lenient;
    } cases[] = {
        {number_algorithm, MX_ERR_BAD_JSON, MX_ERR_BAD_JSON},
        {number_key, MX_ERR_BAD_JSON, MX_ERR_BAD_JSON},
        {bad_key_id, MX_ERR_BAD_JSON, MX_ERR_BAD_JSON},
        {signatures_list, MX_ERR_BAD_JSON, MX_ERR_BAD_JSON},
        {signature_number, MX_ERR_BAD_JSON, MX_ERR_BAD_JSON},
        {float_member, MX_ERR_BAD_JSON, MX_ERR_BAD_JSON}, /* cannot be canonical JSON, so cannot be signed */
        /* keys and signature only in strict mode */
        {drop_curve, MX_ERR_INVALID_PARAM, -1},
        {short_curve, MX_ERR_INVALID_PARAM, -1},
        {url_safe_ed, MX_ERR_INVALID_PARAM, -1}, /* the standard alphabet only */
        /* a padded key is a valid key, but not the text the device signed */
        {padded_ed, MX_ERR_INVALID_SIGNATURE, -1},
        {tamper_algorithms, MX_ERR_INVALID_SIGNATURE, -1},
        /* `unsigned` is outside the signature */
        {change_unsigned, -1, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = edited(good, cases[i].edit);
        int s = device_keys(o, USER, DEVICE, true), l = device_keys(o, USER, DEVICE, false);
        CHECK(s == cases[i].strict);
        CHECK(l == cases[i].lenient);
        if (s != cases[i].strict || l != cases[i].lenient)
            fprintf(stderr, "  device-keys case %zu: strict %d lenient %d\n", i, s, l);
        json_decref(o);
    }
    json_decref(good);
}

/* --- one-time and fallback keys ---------------------------------------------------------------------------------- */

static int one_time_key(const char *id, const json_t *value, bool strict, const char *ed)
{
    mx_err_t err = MX_ERR__COUNT;
    char why[MX_WHY_LEN];
    const char *r = mx_check_one_time_key(id, value, USER, DEVICE, strict, ed, &err, why);
    if (r == NULL)
        return -1;
    CHECK(r == why && why[0] != '\0');
    return (int)err;
}

static void test_one_time_keys(void)
{
    json_t *signed_key = vector_object("olm signed_curve25519:AAAAAQ");
    json_t *fallback = vector_object("olm fallback AAAABA");
    if (signed_key == NULL || fallback == NULL)
        return;
    const char *id = "signed_curve25519:AAAAAQ";
    CHECK(mx_one_time_key_is_signed(signed_key));
    CHECK(one_time_key(id, signed_key, true, ED25519) == -1);
    CHECK(one_time_key("signed_curve25519:AAAABA", fallback, true, ED25519) == -1);
    /* signed, but no device key to check it against: refused in strict mode only */
    CHECK(one_time_key(id, signed_key, true, NULL) == MX_ERR_INVALID_SIGNATURE);
    CHECK(one_time_key(id, signed_key, false, NULL) == -1);
    /* signed by another key */
    CHECK(one_time_key(id, signed_key, true, "FT2CwufWlRTzsjDqpEJFeC8AtsYBD/JJRECY5R0zhz0") ==
          MX_ERR_INVALID_SIGNATURE);

    /* the signed fallback flag is covered by the signature */
    json_t *o = json_deep_copy(fallback);
    json_object_del(o, "fallback");
    CHECK(one_time_key("signed_curve25519:AAAABA", o, true, ED25519) == MX_ERR_INVALID_SIGNATURE);
    json_object_set_new(o, "fallback", json_string("yes"));
    CHECK(one_time_key("signed_curve25519:AAAABA", o, false, ED25519) == MX_ERR_BAD_JSON);
    json_decref(o);

    o = json_deep_copy(signed_key);
    json_object_del(o, "key");
    CHECK(one_time_key(id, o, false, ED25519) == MX_ERR_MISSING_PARAM);
    json_object_set_new(o, "key", json_integer(1));
    CHECK(one_time_key(id, o, false, ED25519) == MX_ERR_BAD_JSON);
    json_object_set_new(o, "key", json_string("AAAA"));
    CHECK(one_time_key(id, o, true, ED25519) == MX_ERR_INVALID_PARAM);
    json_decref(o);
    o = json_deep_copy(signed_key);
    json_object_del(o, "signatures");
    CHECK(one_time_key(id, o, false, ED25519) == MX_ERR_MISSING_PARAM);
    json_decref(o);

    /* the id's algorithm fixes the value's form, in strict mode */
    json_t *str = json_string("FT2CwufWlRTzsjDqpEJFeC8AtsYBD/JJRECY5R0zhz0");
    CHECK(!mx_one_time_key_is_signed(str));
    CHECK(one_time_key("curve25519:AAAAAQ", str, true, NULL) == -1);
    CHECK(one_time_key(id, str, true, ED25519) == MX_ERR_BAD_JSON);
    CHECK(one_time_key(id, str, false, ED25519) == -1);
    CHECK(one_time_key("curve25519:AAAAAQ", signed_key, true, ED25519) == MX_ERR_BAD_JSON);
    CHECK(one_time_key("curve25519:AAAAAQ", signed_key, false, ED25519) == -1);
    json_decref(str);
    str = json_string("not base64!");
    CHECK(one_time_key("curve25519:AAAAAQ", str, true, NULL) == MX_ERR_INVALID_PARAM);
    CHECK(one_time_key("curve25519:AAAAAQ", str, false, NULL) == -1);
    json_decref(str);
    json_t *num = json_integer(7);
    CHECK(one_time_key("other_algorithm:AAAAAQ", num, false, NULL) == MX_ERR_BAD_JSON);
    json_decref(num);

    /* the id itself */
    CHECK(one_time_key("AAAAAQ", signed_key, false, ED25519) == MX_ERR_BAD_JSON);
    CHECK(one_time_key("signed_curve25519:AA:AQ", signed_key, false, ED25519) == MX_ERR_BAD_JSON);

    json_decref(signed_key);
    json_decref(fallback);
}

int main(void)
{
    test_user_ids();
    test_key_ids();
    test_device_keys();
    test_one_time_keys();
    return check_finish("keys_validate");
}
