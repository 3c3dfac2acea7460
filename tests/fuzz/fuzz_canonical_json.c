/* Canonical JSON: the strict parser, the check and the encoder, with round-trip invariants.
 *   - parse never crashes; what it accepts, check and encode agree on (both succeed or both fail);
 *   - an encoding is valid UTF-8, parses again, and encodes to the same bytes (a fixed point);
 *   - encoding without members ("signatures", "unsigned") equals encoding a copy with them deleted. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/canonical_json.h"
#include "mxkeys/json_parse.h"
#include "mxkeys/utf8.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            abort();                                                                                                   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[256];
    json_t *v = mx_json_parse((const char *)data, size, why, sizeof(why));
    if (v == NULL)
        return 0;
    const char *reason;
    char path[256];
    int checked = mx_canonical_json_check(v, path, sizeof(path), &reason);
    mx_buf_t out = MX_BUF_INIT;
    int encoded = mx_canonical_json(v, &out, &reason);
    REQUIRE((checked == 0) == (encoded == 0));
    if (encoded == 0) {
        REQUIRE(mx_utf8_valid(out.data, out.len));
        json_t *again = mx_json_parse(out.data, out.len, why, sizeof(why));
        REQUIRE(again != NULL);
        REQUIRE(json_equal(v, again));
        mx_buf_t out2 = MX_BUF_INIT;
        REQUIRE(mx_canonical_json(again, &out2, &reason) == 0);
        REQUIRE(out2.len == out.len && memcmp(out.data, out2.data, out.len) == 0);
        mx_buf_free(&out2);
        json_decref(again);
        if (json_is_object(v)) {
            static const char *const skip[] = {"signatures", "unsigned", NULL};
            mx_buf_t except = MX_BUF_INIT, copied = MX_BUF_INIT;
            json_t *copy = json_deep_copy(v);
            json_object_del(copy, "signatures");
            json_object_del(copy, "unsigned");
            REQUIRE(mx_canonical_json_except(v, skip, &except, &reason) == 0);
            REQUIRE(mx_canonical_json(copy, &copied, &reason) == 0);
            REQUIRE(except.len == copied.len && memcmp(except.data, copied.data, except.len) == 0);
            mx_buf_free(&except);
            mx_buf_free(&copied);
            json_decref(copy);
        }
    }
    mx_buf_free(&out);
    json_decref(v);
    return 0;
}
