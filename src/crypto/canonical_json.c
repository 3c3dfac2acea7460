/* Canonical JSON (Matrix appendix "Canonical JSON"): encoding, checking, and the escaper signed bytes use.
 *
 * The encoder is one recursive pass straight into the output buffer. Strings are copied in runs between the few
 * bytes that need an escape; object members are sorted by their UTF-8 bytes, which is the same order as sorting by
 * code point (UTF-8 preserves code point order under bytewise comparison; UTF-16 order would not). */
#include "mxkeys/canonical_json.h"
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Objects with at most this many members are sorted in a stack array; typical signed objects have 3 to 8. */
#define SMALL_OBJECT 16

static const char *const why_real = "floating-point numbers are not allowed in canonical JSON";
static const char *const why_range = "integer outside the canonical JSON range -(2^53-1)..(2^53-1)";
static const char *const why_type = "value of unknown JSON type";

/* For each byte: 0 when it is copied verbatim, otherwise the letter after the backslash ('u' for \u00XX). */
static const char escape_letter[256] = {
    ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't', ['"'] = '"',  ['\\'] = '\\',
    [0x00] = 'u', [0x01] = 'u', [0x02] = 'u', [0x03] = 'u', [0x04] = 'u', [0x05] = 'u', [0x06] = 'u',
    [0x07] = 'u', [0x0b] = 'u', [0x0e] = 'u', [0x0f] = 'u', [0x10] = 'u', [0x11] = 'u', [0x12] = 'u',
    [0x13] = 'u', [0x14] = 'u', [0x15] = 'u', [0x16] = 'u', [0x17] = 'u', [0x18] = 'u', [0x19] = 'u',
    [0x1a] = 'u', [0x1b] = 'u', [0x1c] = 'u', [0x1d] = 'u', [0x1e] = 'u', [0x1f] = 'u',
};

void mx_json_escape(mx_buf_t *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    /* Most strings need no escape at all: reserve once for the verbatim case. */
    mx_buf_reserve(out, len);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char letter = escape_letter[c];
        if (letter == 0)
            continue;
        mx_buf_append(out, s + run, i - run);
        run = i + 1;
        if (letter == 'u') {
            /* Lowercase hex, as Python's json and JavaScript's JSON.stringify write it. */
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            mx_buf_append(out, u, sizeof(u));
        } else {
            char e[2] = {'\\', letter};
            mx_buf_append(out, e, sizeof(e));
        }
    }
    mx_buf_append(out, s + run, len - run);
}

static bool int_in_range(json_int_t v)
{
    return v >= -MX_JSON_MAX_SAFE_INT && v <= MX_JSON_MAX_SAFE_INT;
}

static void put_int(mx_buf_t *out, json_int_t v)
{
    /* In range (checked by the caller), so negation cannot overflow. */
    char digits[24], *p = digits + sizeof(digits);
    unsigned long long u = v < 0 ? (unsigned long long)-v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    mx_buf_append(out, p, (size_t)(digits + sizeof(digits) - p));
}

typedef struct st_member_t {
    const char *key;
    size_t len;
    json_t *value;
} member_t;

static int member_cmp(const member_t *a, const member_t *b)
{
    int c = memcmp(a->key, b->key, a->len < b->len ? a->len : b->len);
    if (c != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static int member_qsort_cmp(const void *a, const void *b)
{
    return member_cmp(a, b);
}

static void sort_members(member_t *m, size_t n)
{
    if (n > SMALL_OBJECT) {
        qsort(m, n, sizeof(*m), member_qsort_cmp);
        return;
    }
    /* Insertion sort: fewer comparisons and no call overhead for the handful of members signed objects have. */
    for (size_t i = 1; i < n; i++) {
        member_t t = m[i];
        size_t j = i;
        for (; j > 0 && member_cmp(&m[j - 1], &t) > 0; j--)
            m[j] = m[j - 1];
        m[j] = t;
    }
}

static bool skipped(const char *key, size_t len, const char *const *skip)
{
    for (; skip != NULL && *skip != NULL; skip++)
        if (strlen(*skip) == len && memcmp(*skip, key, len) == 0)
            return true;
    return false;
}

static int encode(const json_t *v, mx_buf_t *out, const char **why);

static int encode_object(const json_t *obj, const char *const *skip, mx_buf_t *out, const char **why)
{
    member_t small[SMALL_OBJECT], *m = small;
    size_t cap = json_object_size(obj), n = 0;
    if (cap > SMALL_OBJECT) {
        m = malloc(cap * sizeof(*m));
        if (m == NULL) {
            *why = "out of memory";
            return -1;
        }
    }
    /* jansson takes non-const objects for iteration; nothing here writes through them. */
    json_t *o = (json_t *)obj;
    for (void *it = json_object_iter(o); it != NULL && n < cap; it = json_object_iter_next(o, it)) {
        const char *key = json_object_iter_key(it);
        size_t len = json_object_iter_key_len(it);
        if (skipped(key, len, skip))
            continue;
        m[n++] = (member_t){key, len, json_object_iter_value(it)};
    }
    sort_members(m, n);

    int rc = 0;
    mx_buf_putc(out, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            mx_buf_putc(out, ',');
        mx_buf_putc(out, '"');
        mx_json_escape(out, m[i].key, m[i].len);
        mx_buf_append(out, "\":", 2);
        if ((rc = encode(m[i].value, out, why)) != 0)
            break;
    }
    if (rc == 0)
        mx_buf_putc(out, '}');
    if (m != small)
        free(m);
    return rc;
}

static int encode(const json_t *v, mx_buf_t *out, const char **why)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return encode_object(v, NULL, out, why);
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        mx_buf_putc(out, '[');
        for (size_t i = 0; i < n; i++) {
            if (i)
                mx_buf_putc(out, ',');
            if (encode(json_array_get(v, i), out, why) != 0)
                return -1;
        }
        mx_buf_putc(out, ']');
        return 0;
    }
    case JSON_STRING:
        mx_buf_putc(out, '"');
        mx_json_escape(out, json_string_value(v), json_string_length(v));
        mx_buf_putc(out, '"');
        return 0;
    case JSON_INTEGER:
        if (!int_in_range(json_integer_value(v))) {
            *why = why_range;
            return -1;
        }
        put_int(out, json_integer_value(v));
        return 0;
    case JSON_REAL:
        *why = why_real;
        return -1;
    case JSON_TRUE:
        mx_buf_append(out, "true", 4);
        return 0;
    case JSON_FALSE:
        mx_buf_append(out, "false", 5);
        return 0;
    case JSON_NULL:
        mx_buf_append(out, "null", 4);
        return 0;
    }
    *why = why_type;
    return -1;
}

int mx_canonical_json(const json_t *value, mx_buf_t *out, const char **why)
{
    const char *ignored;
    return encode(value, out, why ? why : &ignored);
}

int mx_canonical_json_except(const json_t *object, const char *const *skip, mx_buf_t *out, const char **why)
{
    const char *ignored;
    if (!json_is_object(object)) {
        *(why ? why : &ignored) = "not a JSON object";
        return -1;
    }
    return encode_object(object, skip, out, why ? why : &ignored);
}

/* --- checking without encoding, naming the offender ------------------------------------------------------------ */

typedef struct st_path_t {
    char *buf; /* NULL when the caller does not want the path */
    size_t cap;
    size_t len; /* the length the path would have: beyond cap - 1 it was cut short */
} path_t;

/* Appends a path segment (cut short when it does not fit) and returns the length to restore afterwards. Bytes before
 * the current length are never rewritten, so popping back always leaves a correct prefix. */
static size_t path_push(path_t *p, const char *fmt, const char *s, size_t n)
{
    size_t saved = p->len;
    if (p->buf == NULL)
        return saved;
    char scratch[1];
    bool room = p->len < p->cap;
    /* With no room left, format into a scratch byte only to learn the length. */
    int w = snprintf(room ? p->buf + p->len : scratch, room ? p->cap - p->len : 1, fmt, (int)n, s);
    if (w > 0)
        p->len += (size_t)w;
    return saved;
}

static void path_pop(path_t *p, size_t saved)
{
    p->len = saved;
    if (p->buf != NULL && saved < p->cap)
        p->buf[saved] = '\0';
}

/* Marks a path that did not fit with a trailing "..." so nobody mistakes it for the whole path. */
static void path_finish(path_t *p)
{
    if (p->buf != NULL && p->len >= p->cap && p->cap >= 4)
        memcpy(p->buf + p->cap - 4, "...", 4);
}

/* Walks members in document order (jansson keeps insertion order), so "first" means first in the request body. */
static int check(const json_t *v, path_t *path, const char **why)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        json_t *o = (json_t *)v;
        for (void *it = json_object_iter(o); it != NULL; it = json_object_iter_next(o, it)) {
            size_t saved =
                path_push(path, path->len ? ".%.*s" : "%.*s", json_object_iter_key(it), json_object_iter_key_len(it));
            if (check(json_object_iter_value(it), path, why) != 0)
                return -1;
            path_pop(path, saved);
        }
        return 0;
    }
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(v); i++) {
            char index[24];
            int n = snprintf(index, sizeof(index), "[%zu]", i);
            size_t saved = path_push(path, "%.*s", index, (size_t)n);
            if (check(json_array_get(v, i), path, why) != 0)
                return -1;
            path_pop(path, saved);
        }
        return 0;
    case JSON_INTEGER:
        if (int_in_range(json_integer_value(v)))
            return 0;
        *why = why_range;
        return -1;
    case JSON_REAL:
        *why = why_real;
        return -1;
    case JSON_STRING:
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL:
        return 0;
    }
    *why = why_type;
    return -1;
}

int mx_canonical_json_check(const json_t *value, char *path, size_t pathlen, const char **why)
{
    const char *ignored;
    path_t p = {path != NULL && pathlen > 0 ? path : NULL, pathlen, 0};
    if (p.buf)
        p.buf[0] = '\0';
    int rc = check(value, &p, why ? why : &ignored);
    if (rc != 0)
        path_finish(&p);
    return rc;
}
