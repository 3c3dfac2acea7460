/* Base64: decoding any text never overflows and zeroes its output on failure; what decodes re-encodes to the same
 * text, up to padding that must be exactly what the last group needs; encoding any bytes decodes back to them, padded
 * or not; mx_base64_is_key agrees with decoding. Together: the accepted texts are exactly the unpadded encodings and
 * their correctly padded forms. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/base64.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            abort();                                                                                                   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* decode the input as text, into a buffer of every size around the right one */
    size_t caps[] = {size * 3 / 4, size * 3 / 4 + 1, size * 3 / 4 > 0 ? size * 3 / 4 - 1 : 0, 32, 64};
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        uint8_t *out = malloc(caps[c] + 1);
        long n = mx_base64_decode((const char *)data, size, out, caps[c]);
        if (n < 0) {
            for (size_t i = 0; i < caps[c]; i++)
                REQUIRE(out[i] == 0);
        } else {
            REQUIRE((size_t)n <= caps[c]);
            char *text = malloc(mx_base64_encoded_len((size_t)n) + 1);
            mx_base64_encode(out, (size_t)n, text);
            size_t unpadded = size;
            while (unpadded > 0 && data[unpadded - 1] == '=')
                unpadded--;
            REQUIRE(strlen(text) == unpadded && memcmp(text, data, unpadded) == 0);
            /* padding, if any, is the whole last group's: 1 or 2 `=` making a multiple of 4 */
            size_t pad = size - unpadded;
            REQUIRE(pad == 0 || (size % 4 == 0 && pad == (4 - unpadded % 4) % 4));
            free(text);
        }
        free(out);
    }
    /* encode the input as bytes */
    char *text = malloc(mx_base64_encoded_len(size) + 1);
    mx_base64_encode(data, size, text);
    REQUIRE(strlen(text) == mx_base64_encoded_len(size));
    uint8_t *back = malloc(size + 1);
    REQUIRE(mx_base64_decode(text, strlen(text), back, size) == (long)size);
    REQUIRE(size == 0 || memcmp(back, data, size) == 0);
    REQUIRE(mx_base64_is_key(text, size));
    /* the padded spelling decodes to the same bytes */
    size_t len = strlen(text), padded_len = (len + 3) / 4 * 4;
    char *padded = malloc(padded_len + 1);
    memcpy(padded, text, len);
    memset(padded + len, '=', padded_len - len);
    padded[padded_len] = '\0';
    REQUIRE(mx_base64_decode(padded, padded_len, back, size) == (long)size);
    REQUIRE(size == 0 || memcmp(back, data, size) == 0);
    REQUIRE(mx_base64_is_key(padded, size));
    free(padded);
    free(back);
    free(text);
    /* as a NUL-terminated key: accepted for n bytes exactly when it decodes to n bytes */
    if (memchr(data, '\0', size) == NULL) {
        char *s = malloc(size + 1);
        memcpy(s, data, size);
        s[size] = '\0';
        uint8_t *out = malloc(size + 1);
        long n = mx_base64_decode(s, size, out, size);
        for (size_t k = n > 0 ? (size_t)n - 1 : 0; k <= (n >= 0 ? (size_t)n + 1 : 2); k++)
            REQUIRE(mx_base64_is_key(s, k) == (n >= 0 && (size_t)n == k));
        free(out);
        free(s);
    }
    return 0;
}
