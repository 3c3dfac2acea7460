/* Strict UTF-8 (RFC 3629, Unicode table 3-7 "well-formed byte sequences"). One decoder serves both the check and the
 * repair, so they can never disagree about what is well-formed. */
#include "mxkeys/utf8.h"

/* Length of the well-formed sequence starting at s[0] (1-4), or 0 when it is ill-formed or a NUL. */
static size_t seq_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates U+D800..DFFF */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* 0x80..0xc1 (continuation, overlong 2-byte), 0xf5..0xff */
    }
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

bool mx_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (p[i] >= 0x01 && p[i] < 0x80) { /* the common case: ASCII */
            i++;
            continue;
        }
        size_t n = seq_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

void mx_utf8_sanitize(mx_buf_t *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0, i = 0;
    while (i < len) {
        size_t n = seq_len(p + i, len - i);
        if (n != 0) {
            i += n;
            continue;
        }
        mx_buf_append(out, s + run, i - run);
        mx_buf_append(out, "\xef\xbf\xbd", 3);
        i++; /* one replacement per ill-formed byte: simple and never swallows a following good character */
        run = i;
    }
    mx_buf_append(out, s + run, len - run);
}
