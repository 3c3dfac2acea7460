/* Streaming JSON member splicer. One byte-level state machine validates the structure; input is copied to the output
 * in runs (one append per chunk in the common case) and the runs are cut only where text is inserted or a replaced
 * value is dropped. Rule matching costs nothing below MX_SPLICE_MAX_DEPTH or where no rule's path leads, so the bulk
 * of a /sync body (room timelines) goes through the string and scalar loops alone. */
#include "mxkeys/json_splice.h"
#include <string.h>
#include "mxkeys/canonical_json.h" /* mx_json_escape */
#include "mxkeys/utf8.h"           /* mx_hex_digit */

_Static_assert(MX_SPLICE_MAX_RULES <= 8, "rule sets are uint8_t masks");
_Static_assert(MX_SPLICE_MAX_NESTING % 64 == 0, "kinds is a bit stack of uint64_t");

enum {
    ST_VALUE,        /* a value starts here: after ':', after ',' in an array, at the very beginning */
    ST_ARRAY_FIRST,  /* just after '[': a value or ']' */
    ST_OBJECT_FIRST, /* just after '{': a name or '}' */
    ST_NAME_NEXT,    /* after ',' in an object: a name */
    ST_COLON,        /* after a name */
    ST_AFTER,        /* after a value in a container: ',' or the closing bracket */
    ST_STRING,       /* inside a string nobody looks at: a value, or a name no rule can match any more */
    ST_STRING_ESC,   /* ... just after its backslash */
    ST_NAME,         /* inside a name some rule may match: decoded and compared byte by byte */
    ST_NAME_ESC,
    ST_NAME_HEX, /* inside \uXXXX of such a name, hex_n digits read */
    ST_SCALAR,   /* inside a number or literal */
    ST_DONE,     /* after the top-level value */
    ST_ERROR,
};

enum { C_WS = 1, C_SCALAR = 2, C_VALUE = 4 };

/* C_SCALAR is loose on purpose: any run of these is one number or literal, checked by whoever parses it later. */
static const uint8_t cls[256] = {
    ['\t'] = C_WS,
    ['\n'] = C_WS,
    ['\r'] = C_WS,
    [' '] = C_WS,
    ['+'] = C_SCALAR,
    ['-'] = C_SCALAR | C_VALUE,
    ['.'] = C_SCALAR,
    ['0'] = C_SCALAR | C_VALUE,
    ['1'] = C_SCALAR | C_VALUE,
    ['2'] = C_SCALAR | C_VALUE,
    ['3'] = C_SCALAR | C_VALUE,
    ['4'] = C_SCALAR | C_VALUE,
    ['5'] = C_SCALAR | C_VALUE,
    ['6'] = C_SCALAR | C_VALUE,
    ['7'] = C_SCALAR | C_VALUE,
    ['8'] = C_SCALAR | C_VALUE,
    ['9'] = C_SCALAR | C_VALUE,
    ['E'] = C_SCALAR,
    ['a'] = C_SCALAR,
    ['e'] = C_SCALAR,
    ['f'] = C_SCALAR | C_VALUE,
    ['l'] = C_SCALAR,
    ['n'] = C_SCALAR | C_VALUE,
    ['r'] = C_SCALAR,
    ['s'] = C_SCALAR,
    ['t'] = C_SCALAR | C_VALUE,
    ['u'] = C_SCALAR,
    ['{'] = C_VALUE,
    ['['] = C_VALUE,
    ['"'] = C_VALUE,
};

typedef struct {
    mx_buf_t *out;
    const char *run; /* first input byte of this chunk not yet copied (or, while skipping, not yet dropped) */
} feed_t;

#define LOW8 0x0101010101010101ULL
#define HIGH8 0x8080808080808080ULL

/* Returns the first '"' or '\\' in [p, end), or end. Eight bytes at a time: string contents are most of the bytes. */
static const char *scan_string(const char *p, const char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t v, q, b;
        memcpy(&v, p, 8);
        q = v ^ (LOW8 * '"');
        b = v ^ (LOW8 * '\\');
        /* The lowest flagged byte is exact; bytes above it may be false positives, which ctz never reaches. */
        uint64_t hit = ((q - LOW8) & ~q & HIGH8) | ((b - LOW8) & ~b & HIGH8);
        if (hit)
            return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != '"' && *p != '\\')
        p++;
    return p;
}

static inline const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (cls[(uint8_t)*p] & C_WS))
        p++;
    return p;
}

static inline bool top_is_object(const mx_splice_t *s)
{
    uint32_t i = s->nest - 1;
    return (s->kinds[i >> 6] >> (i & 63)) & 1;
}

static inline void flush(mx_splice_t *s, feed_t *f, const char *upto)
{
    if (!s->skipping)
        mx_buf_append(f->out, f->run, (size_t)(upto - f->run));
    f->run = upto;
}

/* `next` is the first byte after the value. A replaced value ends here: copying resumes at `next`. */
static inline void value_done(mx_splice_t *s, feed_t *f, const char *next)
{
    s->state = s->nest ? ST_AFTER : ST_DONE;
    if (s->skipping && s->nest == s->skip_nest) {
        s->skipping = false;
        f->run = next;
    }
}

/* `cands` and `append` are 0 for an array: paths go through objects only. */
static int push(mx_splice_t *s, bool object, uint8_t cands, uint8_t append)
{
    if (s->nest == MX_SPLICE_MAX_NESTING)
        return -1;
    uint32_t i = s->nest++;
    if (object)
        s->kinds[i >> 6] |= 1ULL << (i & 63);
    else
        s->kinds[i >> 6] &= ~(1ULL << (i & 63));
    if (i <= MX_SPLICE_MAX_DEPTH) {
        s->cands[i] = cands;
        s->append[i] = append;
        s->pending[i] = cands & s->mask_depth[i + 1] & s->mask_add;
    }
    return 0;
}

/* `*p` is a byte where a value must start. Returns 0 or -1. */
static int value_start(mx_splice_t *s, feed_t *f, const char *p)
{
    uint8_t c = (uint8_t)*p, cands = s->next_cands, append = s->next_append;
    int replace = s->next_replace;
    s->next_cands = s->next_append = 0;
    s->next_replace = -1;
    if (!(cls[c] & C_VALUE))
        return -1;
    if (replace >= 0) {
        const mx_splice_rule_t *r = &s->rules[replace];
        flush(s, f, p);
        mx_buf_append(f->out, r->text, r->len);
        s->applied[replace]++;
        s->skipping = true;
        s->skip_nest = s->nest;
    }
    switch (c) {
    case '{':
        s->state = ST_OBJECT_FIRST;
        return push(s, true, cands, append);
    case '[':
        s->state = ST_ARRAY_FIRST;
        return push(s, false, 0, 0);
    case '"':
        s->state = ST_STRING;
        s->str_is_key = false;
        return 0;
    default:
        s->state = ST_SCALAR;
        return 0;
    }
}

static void name_start(mx_splice_t *s)
{
    uint32_t i = s->nest - 1;
    s->str_is_key = true;
    if (i < MX_SPLICE_MAX_DEPTH && s->cands[i]) {
        s->state = ST_NAME;
        s->key_cands = s->cands[i];
        s->key_pos = 0;
        s->pending_hi = 0;
    } else {
        s->state = ST_STRING;
    }
}

static void name_byte(mx_splice_t *s, uint8_t c)
{
    uint8_t m = s->key_cands;
    uint32_t i = s->nest - 1;
    /* A rule's name ends at its NUL, so a decoded U+0000 must not look like its end. */
    if (c == 0)
        m = 0;
    for (uint8_t left = m; left; left &= (uint8_t)(left - 1)) {
        int r = __builtin_ctz(left);
        if ((uint8_t)s->rules[r].path[i][s->key_pos] != c)
            m &= (uint8_t) ~(1u << r);
    }
    s->key_cands = m;
    s->key_pos++;
}

/* A code point from \uXXXX: UTF-16 surrogates pair up; a lone one matches no rule (names are UTF-8). */
static void name_code_point(mx_splice_t *s, uint32_t cp)
{
    if (s->pending_hi) {
        if (cp < 0xDC00 || cp > 0xDFFF) {
            s->key_cands = 0;
            return;
        }
        cp = 0x10000 + ((s->pending_hi - 0xD800) << 10) + (cp - 0xDC00);
        s->pending_hi = 0;
    } else if (cp >= 0xD800 && cp <= 0xDBFF) {
        s->pending_hi = cp;
        return;
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        s->key_cands = 0;
        return;
    }
    if (cp < 0x80) {
        name_byte(s, (uint8_t)cp);
    } else if (cp < 0x800) {
        name_byte(s, (uint8_t)(0xC0 | cp >> 6));
        name_byte(s, (uint8_t)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        name_byte(s, (uint8_t)(0xE0 | cp >> 12));
        name_byte(s, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        name_byte(s, (uint8_t)(0x80 | (cp & 0x3F)));
    } else {
        name_byte(s, (uint8_t)(0xF0 | cp >> 18));
        name_byte(s, (uint8_t)(0x80 | ((cp >> 12) & 0x3F)));
        name_byte(s, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        name_byte(s, (uint8_t)(0x80 | (cp & 0x3F)));
    }
}

/* Any unit other than a \u low surrogate right after a high one leaves that one alone. */
static void name_unit(mx_splice_t *s, uint8_t c)
{
    if (s->pending_hi)
        s->key_cands = 0;
    else
        name_byte(s, c);
}

/* The closing quote of a name some rule may match: decide what happens to its value. */
static void name_done(mx_splice_t *s)
{
    uint32_t i = s->nest - 1;
    uint8_t matched = 0;
    if (!s->pending_hi) {
        for (uint8_t left = s->key_cands; left; left &= (uint8_t)(left - 1)) {
            int r = __builtin_ctz(left);
            if (s->rules[r].path[i][s->key_pos] == '\0')
                matched |= (uint8_t)(1u << r);
        }
    }
    uint8_t targets = matched & s->mask_depth[i + 1];
    s->pending[i] &= (uint8_t)~targets;
    uint8_t replace = targets & s->mask_replace;
    if (replace) {
        s->next_replace = (int8_t)__builtin_ctz(replace);
    } else {
        s->next_append = targets & s->mask_append;
        s->next_cands = matched & (uint8_t)~targets;
    }
    s->state = ST_COLON;
}

/* What rules add to the object at level `i` that is closing: appended members, then missing ones. */
static void add_members(mx_splice_t *s, mx_buf_t *out, uint32_t i, bool nonempty)
{
    for (uint8_t left = s->append[i]; left; left &= (uint8_t)(left - 1)) {
        int r = __builtin_ctz(left);
        if (nonempty)
            mx_buf_putc(out, ',');
        mx_buf_append(out, s->rules[r].text, s->rules[r].len);
        nonempty = true;
        s->applied[r]++;
    }
    uint8_t added = 0;
    for (uint8_t left = s->pending[i]; left; left &= (uint8_t)(left - 1)) {
        int r = __builtin_ctz(left);
        const mx_splice_rule_t *rule = &s->rules[r];
        const char *name = rule->path[rule->depth - 1];
        bool dup = false;
        for (uint8_t a = added; a && !dup; a &= (uint8_t)(a - 1))
            dup = strcmp(s->rules[__builtin_ctz(a)].path[rule->depth - 1], name) == 0;
        if (dup)
            continue;
        if (nonempty)
            mx_buf_putc(out, ',');
        mx_buf_putc(out, '"');
        mx_json_escape(out, name, strlen(name));
        mx_buf_append(out, "\":", 2);
        if (rule->action == MX_SPLICE_REPLACE) {
            mx_buf_append(out, rule->text, rule->len);
        } else {
            mx_buf_putc(out, '{');
            mx_buf_append(out, rule->text, rule->len);
            mx_buf_putc(out, '}');
        }
        nonempty = true;
        added |= (uint8_t)(1u << r);
        s->applied[r]++;
    }
}

/* `*p` is '}' or ']'. Returns 0 or -1 (it does not close what is open). */
static int close_container(mx_splice_t *s, feed_t *f, const char *p, bool nonempty)
{
    if (top_is_object(s) != (*p == '}'))
        return -1;
    uint32_t i = s->nest - 1;
    if (i <= MX_SPLICE_MAX_DEPTH && (s->append[i] | s->pending[i])) {
        flush(s, f, p);
        add_members(s, f->out, i, nonempty);
    }
    s->nest--;
    value_done(s, f, p + 1);
    return 0;
}

int mx_splice_init(mx_splice_t *s, const mx_splice_rule_t *rules, size_t nrules)
{
    memset(s, 0, sizeof(*s));
    s->rules = rules;
    s->next_replace = -1;
    s->state = ST_ERROR;
    if (nrules > MX_SPLICE_MAX_RULES || (nrules && rules == NULL))
        return -1;
    uint8_t all = 0;
    for (size_t i = 0; i < nrules; i++) {
        const mx_splice_rule_t *r = &rules[i];
        uint8_t bit = (uint8_t)(1u << i);
        if (r->depth < 1 || r->depth > MX_SPLICE_MAX_DEPTH || (r->text == NULL && r->len))
            return -1;
        for (size_t d = 0; d < r->depth; d++)
            if (r->path[d] == NULL)
                return -1;
        if (r->action == MX_SPLICE_REPLACE) {
            if (r->len == 0)
                return -1;
            s->mask_replace |= bit;
        } else if (r->action == MX_SPLICE_APPEND_MEMBERS) {
            if (r->len == 0)
                continue; /* inert: it never matches, so it is never counted either */
            s->mask_append |= bit;
        } else {
            return -1;
        }
        if (r->add_if_missing)
            s->mask_add |= bit;
        s->mask_depth[r->depth] |= bit;
        all |= bit;
    }
    /* The top-level value is the one object every path starts in. */
    s->next_cands = all;
    s->state = ST_VALUE;
    return 0;
}

int mx_splice_feed(mx_splice_t *s, const char *in, size_t len, mx_buf_t *out)
{
    if (s->state == ST_ERROR) {
        mx_buf_append(out, in, len);
        return -1;
    }
    if (len == 0)
        return 0;
    feed_t f = {out, in};
    const char *p = in, *end = in + len;
    while (p < end) {
        switch (s->state) {
        case ST_STRING:
            p = scan_string(p, end);
            if (p == end)
                break;
            if (*p++ == '\\')
                s->state = ST_STRING_ESC;
            else if (s->str_is_key)
                s->state = ST_COLON;
            else
                value_done(s, &f, p);
            break;
        case ST_STRING_ESC:
            /* Only the byte after the backslash can be a quote that does not end the string; \uXXXX digits are
             * plain bytes. */
            p++;
            s->state = ST_STRING;
            break;
        case ST_SCALAR:
            while (p < end && (cls[(uint8_t)*p] & C_SCALAR))
                p++;
            if (p < end)
                value_done(s, &f, p);
            break;
        case ST_AFTER:
            p = skip_ws(p, end);
            if (p == end)
                break;
            if (*p == ',') {
                s->state = top_is_object(s) ? ST_NAME_NEXT : ST_VALUE;
            } else if (*p == '}' || *p == ']') {
                if (close_container(s, &f, p, true) != 0)
                    goto failed;
            } else {
                goto failed;
            }
            p++;
            break;
        case ST_NAME_NEXT:
            p = skip_ws(p, end);
            if (p == end)
                break;
            if (*p != '"')
                goto failed;
            name_start(s);
            p++;
            break;
        case ST_COLON:
            p = skip_ws(p, end);
            if (p == end)
                break;
            if (*p != ':')
                goto failed;
            s->state = ST_VALUE;
            p++;
            break;
        case ST_VALUE:
            p = skip_ws(p, end);
            if (p == end)
                break;
            if (value_start(s, &f, p) != 0)
                goto failed;
            p++;
            break;
        case ST_OBJECT_FIRST:
            p = skip_ws(p, end);
            if (p == end)
                break;
            if (*p == '"')
                name_start(s);
            else if (*p != '}' || close_container(s, &f, p, false) != 0)
                goto failed;
            p++;
            break;
        case ST_ARRAY_FIRST:
            p = skip_ws(p, end);
            if (p == end)
                break;
            if (*p == ']') {
                if (close_container(s, &f, p, false) != 0)
                    goto failed;
            } else if (value_start(s, &f, p) != 0) {
                goto failed;
            }
            p++;
            break;
        case ST_NAME: {
            uint8_t c = (uint8_t)*p++;
            if (c == '"') {
                name_done(s);
            } else if (c == '\\') {
                s->state = ST_NAME_ESC;
            } else {
                name_unit(s, c);
                if (!s->key_cands)
                    s->state = ST_STRING;
            }
            break;
        }
        case ST_NAME_ESC: {
            static const char simple[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
            uint8_t c = (uint8_t)*p++;
            const char *e = NULL;
            for (size_t k = 0; k + 1 < sizeof(simple) && e == NULL; k += 2)
                if ((uint8_t)simple[k] == c)
                    e = &simple[k + 1];
            if (c == 'u') {
                s->state = ST_NAME_HEX;
                s->hex_n = 0;
                s->hex_acc = 0;
                break;
            }
            if (e)
                name_unit(s, (uint8_t)*e);
            else
                s->key_cands = 0; /* not an escape: no rule's name, and not ours to refuse */
            s->state = s->key_cands ? ST_NAME : ST_STRING;
            break;
        }
        case ST_NAME_HEX: {
            int v = mx_hex_digit((unsigned char)*p);
            if (v < 0) {
                /* Not ours to refuse either; the byte is looked at again as part of the string. */
                s->key_cands = 0;
                s->state = ST_STRING;
                break;
            }
            p++;
            s->hex_acc = s->hex_acc << 4 | (uint32_t)v;
            if (++s->hex_n == 4) {
                name_code_point(s, s->hex_acc);
                s->state = s->key_cands ? ST_NAME : ST_STRING;
            }
            break;
        }
        case ST_DONE:
            p = skip_ws(p, end);
            if (p != end)
                goto failed;
            break;
        default:
            goto failed;
        }
    }
    flush(s, &f, end);
    return 0;

failed:
    /* What was appended stays; from the offending byte on (or the last cut, if later) everything is copied. */
    s->state = ST_ERROR;
    if (s->skipping) {
        s->skipping = false;
        f.run = p;
    }
    mx_buf_append(out, f.run, (size_t)(end - f.run));
    return -1;
}

int mx_splice_finish(mx_splice_t *s, mx_buf_t *out)
{
    (void)out;
    if (s->state == ST_SCALAR && s->nest == 0)
        s->state = ST_DONE;
    if (s->state != ST_DONE) {
        s->state = ST_ERROR;
        return -1;
    }
    return 0;
}

unsigned mx_splice_applied(const mx_splice_t *s, size_t i)
{
    return i < MX_SPLICE_MAX_RULES ? s->applied[i] : 0;
}
