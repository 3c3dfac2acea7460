/* UTF-8 validity and repair (Unicode table 3-7), against sequences chosen at each boundary. */
#include <stdlib.h>
#include "check.h"
#include "mxkeys/utf8.h"

#define V(s) mx_utf8_valid(s, sizeof(s) - 1)

static void check_sanitized(const char *in, size_t len, const char *want)
{
    mx_buf_t out = MX_BUF_INIT;
    mx_utf8_sanitize(&out, in, len);
    CHECK(out.len == strlen(want) && memcmp(out.data ? out.data : "", want, out.len) == 0);
    CHECK(mx_utf8_valid(out.data ? out.data : "", out.len));
    mx_buf_free(&out);
}

int main(void)
{
    CHECK(V(""));
    CHECK(V("plain ascii"));
    CHECK(V("\xc2\x80"));         /* U+0080 */
    CHECK(V("\xdf\xbf"));         /* U+07FF */
    CHECK(V("\xe0\xa0\x80"));     /* U+0800 */
    CHECK(V("\xed\x9f\xbf"));     /* U+D7FF */
    CHECK(V("\xee\x80\x80"));     /* U+E000 */
    CHECK(V("\xef\xbf\xbf"));     /* U+FFFF */
    CHECK(V("\xf0\x90\x80\x80")); /* U+10000 */
    CHECK(V("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
    CHECK(!V("\x00"));            /* NUL */
    CHECK(!mx_utf8_valid("a\0b", 3));
    CHECK(!V("\x80"));             /* lone continuation */
    CHECK(!V("\xc0\xaf"));         /* overlong '/' */
    CHECK(!V("\xc1\xbf"));         /* overlong */
    CHECK(!V("\xe0\x9f\xbf"));     /* overlong 3-byte */
    CHECK(!V("\xed\xa0\x80"));     /* surrogate U+D800 */
    CHECK(!V("\xed\xbf\xbf"));     /* surrogate U+DFFF */
    CHECK(!V("\xf0\x8f\xbf\xbf")); /* overlong 4-byte */
    CHECK(!V("\xf4\x90\x80\x80")); /* U+110000 */
    CHECK(!V("\xf5\x80\x80\x80")); /* lead byte past U+10FFFF */
    CHECK(!V("\xff"));
    CHECK(!V("\xe2\x82"));  /* truncated */
    CHECK(!V("\xe2\x82x")); /* bad continuation */

    check_sanitized("ok", 2, "ok");
    check_sanitized("a\xff"
                    "b",
                    3,
                    "a\xef\xbf\xbd"
                    "b");
    check_sanitized("\xe2\x82", 2, "\xef\xbf\xbd\xef\xbf\xbd");
    check_sanitized("x\0y", 3, "x\xef\xbf\xbdy");
    check_sanitized("\xe2\x82\xac", 3, "\xe2\x82\xac");
    return check_finish("utf8");
}
