/* Base64 with the standard alphabet, unpadded on output as Matrix wants it.
 *
 * Decoding is strict so that every byte string has exactly one accepted text form apart from optional padding:
 * - unpadded input, or input padded to a multiple of 4 with exactly the `=` the last group needs;
 * - no whitespace, no url-safe alphabet (`-` `_`), no `=` anywhere but at the end;
 * - a length of 1 mod 4 (unpadded) is refused: it cannot come from any encoder;
 * - the unused low bits of the last character must be zero (every real encoder writes zeros; accepting others would
 *   give one key several spellings). */
#include "mxkeys/base64.h"
#include <string.h>

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value + 1 for alphabet characters; 0 for everything else (including '=' and NUL), so one lookup validates. */
static const uint8_t reverse[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64};

size_t mx_base64_encoded_len(size_t n)
{
    static const size_t tail[3] = {0, 2, 3};
    return n / 3 * 4 + tail[n % 3];
}

void mx_base64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
        *out++ = alphabet[(v >> 6) & 63];
        *out++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
        *out++ = alphabet[(v >> 6) & 63];
    }
    *out = '\0';
}

/* Strips valid padding from `*len` and returns the length the remaining characters decode to, or -1 when the length
 * or the padding is impossible. */
static long decoded_len(const char *in, size_t *len)
{
    size_t n = *len;
    if (n % 4 == 0 && n > 0 && in[n - 1] == '=') {
        n -= in[n - 2] == '=' ? 2 : 1;
        if (n % 4 == 1)
            return -1;
    } else if (n % 4 == 1) {
        return -1;
    }
    *len = n;
    return (long)(n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0));
}

/* Decodes `len` unpadded characters into `out` (NULL: validate only). Returns 0 or -1 on a character outside the
 * alphabet or non-zero trailing bits. */
static int decode(const char *in, size_t len, uint8_t *out)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t full = len / 4 * 4, i = 0;
    for (; i < full; i += 4) {
        uint32_t a = reverse[p[i]], b = reverse[p[i + 1]], c = reverse[p[i + 2]], d = reverse[p[i + 3]];
        if (!a || !b || !c || !d)
            return -1;
        uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        if (out) {
            *out++ = (uint8_t)(v >> 16);
            *out++ = (uint8_t)(v >> 8);
            *out++ = (uint8_t)v;
        }
    }
    size_t rest = len - full;
    if (rest == 0)
        return 0;
    uint32_t a = reverse[p[i]], b = reverse[p[i + 1]], c = rest == 3 ? reverse[p[i + 2]] : 1;
    if (!a || !b || !c)
        return -1;
    uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6;
    /* The bits below the last whole output byte must be zero. */
    if (v & (rest == 2 ? 0xffffu : 0xffu))
        return -1;
    if (out) {
        *out++ = (uint8_t)(v >> 16);
        if (rest == 3)
            *out = (uint8_t)(v >> 8);
    }
    return 0;
}

long mx_base64_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
{
    long n = decoded_len(in, &len);
    if (n >= 0 && (size_t)n <= outcap && decode(in, len, out) == 0)
        return n;
    if (outcap)
        memset(out, 0, outcap);
    return -1;
}

bool mx_base64_is_key(const char *s, size_t n)
{
    if (s == NULL)
        return false;
    size_t len = strlen(s);
    long got = decoded_len(s, &len);
    return got >= 0 && (size_t)got == n && decode(s, len, NULL) == 0;
}
