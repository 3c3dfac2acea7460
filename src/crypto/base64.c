/* Base64 with the standard alphabet, unpadded on output as Matrix wants it: libsodium's codec (constant time, and
 * strict in the ways a signature check needs), with the choice of variant made here.
 *
 * Every byte string has exactly one accepted text form apart from optional padding:
 * - unpadded input, or input padded to a multiple of 4 with exactly the `=` the last group needs (input that ends in
 *   `=` is decoded as the padded variant, everything else as the unpadded one, so a stray `=` is refused by either);
 * - no whitespace (no characters to ignore are passed), no url-safe alphabet (`-` `_`), no byte above 0x7f (checked
 *   here: see ascii_only);
 * - a length of 1 mod 4 (unpadded) is refused: it cannot come from any encoder;
 * - the unused low bits of the last character must be zero (every real encoder writes zeros; accepting others would
 *   give one key several spellings). libsodium refuses the rest itself. */
#include "mxkeys/base64.h"
#include <sodium.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

size_t mx_base64_encoded_len(size_t n)
{
    return sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL_NO_PADDING) - 1; /* without the NUL */
}

void mx_base64_encode(const uint8_t *in, size_t n, char *out)
{
    sodium_bin2base64(out, mx_base64_encoded_len(n) + 1, in, n, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
}

/* libsodium 1.0.18 (Debian 12) compares characters as 8-bit values, but a byte above 0x7f arrives sign-extended and
 * then matches `+` or `/`: "\xa6\x98\xc2\xc2" decodes to three bytes. No base64 character is above 0x7f, so such a
 * text is refused before libsodium sees it (found by the old-against-new differential fuzz run, issue 14). */
static bool ascii_only(const char *in, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)in[i] > 0x7f)
            return false;
    return true;
}

long mx_base64_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
{
    int variant =
        len > 0 && in[len - 1] == '=' ? sodium_base64_VARIANT_ORIGINAL : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
    size_t n = 0;
    /* libsodium declares its output non-null even for no room: (NULL, 0), which only empty text fits, gets a byte */
    uint8_t none = 0;
    uint8_t *dst = out != NULL ? out : &none;
    /* b64_end NULL: anything left over after the text (or its padding) is an error, not a place to stop */
    if (ascii_only(in, len) &&
        sodium_base642bin(dst, out != NULL ? outcap : 0, in, len, NULL, &n, NULL, variant) == 0 &&
        n <= (size_t)LONG_MAX)
        return (long)n;
    if (out != NULL && outcap)
        memset(out, 0, outcap); /* libsodium may have written part of it */
    return -1;
}

bool mx_base64_is_key(const char *s, size_t n)
{
    if (s == NULL)
        return false;
    size_t len = strlen(s);
    /* Only the two spellings of n bytes can decode to n bytes: skip the decode (and any allocation) for the rest. */
    size_t unpadded = mx_base64_encoded_len(n),
           padded = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL) - 1;
    if (len != unpadded && len != padded)
        return false;
    uint8_t stack[128], *buf = n + 1 <= sizeof(stack) ? stack : malloc(n + 1);
    if (buf == NULL)
        return false;
    /* one byte of room past n: the decoded length is then checked, not the buffer's end */
    bool ok = mx_base64_decode(s, len, buf, n + 1) == (long)n;
    if (buf != stack)
        free(buf);
    return ok;
}
