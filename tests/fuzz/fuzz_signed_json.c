/* Signed-JSON verification and the key checks of the key endpoints, over any JSON object: device keys (strict and
 * lenient), one-time and fallback keys, and signature verification against the object's own claimed keys and a
 * fixed key. None may crash; a result other than the enum's values, or an error without a reason, aborts. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/canonical_json.h"
#include "mxkeys/json_parse.h"
#include "mxkeys/keys_validate.h"
#include "mxkeys/signed_json.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            abort();                                                                                                   \
    } while (0)

static const char fixed_key[] = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ";

static void check_reason(const char *r, const char *why)
{
    REQUIRE(r == NULL || (r == why && why[0] != '\0'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[MX_WHY_LEN];
    json_t *v = mx_json_parse((const char *)data, size, why, sizeof(why));
    if (v == NULL)
        return 0;
    if (json_is_object(v)) {
        const char *user = json_string_value(json_object_get(v, "user_id"));
        const char *device = json_string_value(json_object_get(v, "device_id"));
        if (user == NULL)
            user = "@alice:localhost";
        if (device == NULL)
            device = "DEV";
        for (int strict = 0; strict < 2; strict++) {
            const char *ed = NULL;
            mx_err_t err;
            why[0] = '\0';
            check_reason(mx_check_device_keys(v, user, device, strict, &ed, &err, why), why);
            const char *key;
            json_t *value;
            json_t *otks = json_object_get(v, "one_time_keys");
            json_object_foreach(otks, key, value)
            {
                why[0] = '\0';
                check_reason(mx_check_one_time_key(key, value, user, device, strict, ed, &err, why), why);
                (void)mx_one_time_key_is_signed(value);
            }
        }
        /* verify every signature the object carries, with its claimed keys and with a fixed one */
        const char *signer;
        json_t *sigs;
        json_object_foreach(json_object_get(v, "signatures"), signer, sigs)
        {
            const char *key_id;
            json_t *sig;
            json_object_foreach(sigs, key_id, sig)
            {
                const char *pub = json_string_value(json_object_get(json_object_get(v, "keys"), key_id));
                mx_sig_result_t r = mx_signed_json_verify(v, signer, key_id, pub ? pub : fixed_key);
                REQUIRE(r >= MX_SIG_OK && r <= MX_SIG_MISMATCH);
                REQUIRE(mx_sig_result_str(r) != NULL);
            }
        }
        (void)mx_user_id_valid(user);
        if (mx_user_id_valid(user))
            REQUIRE(mx_user_id_server(user) != NULL);
        (void)mx_key_id_valid(device);
    }
    json_decref(v);
    return 0;
}
