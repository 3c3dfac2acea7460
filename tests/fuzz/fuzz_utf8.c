/* UTF-8: sanitizing always yields valid UTF-8, leaves valid text unchanged, and the validator agrees with an
 * independent reference (iconv-free: a direct decoder of RFC 3629 written differently, by code point ranges). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/utf8.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            abort();                                                                                                   \
    } while (0)

static int reference_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len;
        if (s[i] < 0x80) {
            cp = s[i], len = 1;
        } else if ((s[i] & 0xe0) == 0xc0) {
            cp = s[i] & 0x1f, len = 2;
        } else if ((s[i] & 0xf0) == 0xe0) {
            cp = s[i] & 0x0f, len = 3;
        } else if ((s[i] & 0xf8) == 0xf0) {
            cp = s[i] & 0x07, len = 4;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp == 0 || cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int valid = mx_utf8_valid((const char *)data, size);
    REQUIRE(valid == reference_valid(data, size));
    mx_buf_t out = MX_BUF_INIT;
    mx_utf8_sanitize(&out, (const char *)data, size);
    REQUIRE(mx_utf8_valid(out.data ? out.data : "", out.len));
    if (valid)
        REQUIRE(out.len == size && (size == 0 || memcmp(out.data, data, size) == 0));
    mx_buf_free(&out);
    return 0;
}
