/* Streaming JSON member splicer: rewrites a few members of a JSON document while it flows through (a proxied /sync or
 * keys/query body of tens of MB, chunk by chunk as it arrives), in fixed memory, leaving every other byte as it was.
 * A rule names one member by its path of member names from the top-level object down; arrays never match. */
#ifndef MXKEYS_JSON_SPLICE_H
#define MXKEYS_JSON_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mxkeys/buf.h"

#define MX_SPLICE_MAX_DEPTH 4      /* path components of a rule */
#define MX_SPLICE_MAX_RULES 8      /* rules of one splicer (they are bits of a byte) */
#define MX_SPLICE_MAX_NESTING 2048 /* deeper documents are refused (-1), as jansson refuses them */

typedef enum en_mx_splice_action_t {
    MX_SPLICE_REPLACE,        /* the member's value is replaced by `text` (one complete JSON value, len > 0) */
    MX_SPLICE_APPEND_MEMBERS, /* the member's value, if an object, gets `text` (members without braces,
                                 "\"a\":1,\"b\":2") appended at its end; a value of another type is left alone; len 0:
                                 the rule is inert */
} mx_splice_action_t;

typedef struct st_mx_splice_rule_t {
    /* UTF-8 member names from the top-level object down, e.g. {"extensions", "e2ee", "device_one_time_keys_count"};
     * compared with the document's names after their escapes are decoded */
    const char *path[MX_SPLICE_MAX_DEPTH];
    size_t depth; /* 1..MX_SPLICE_MAX_DEPTH */
    mx_splice_action_t action;
    const char *text; /* borrowed: must outlive the splicer; inserted as given (not checked) */
    size_t len;
    bool add_if_missing; /* when the parent object (the path minus its last name; the top-level object for depth 1)
                            closes without having had the member, add "name":text (REPLACE) or "name":{text} (APPEND)
                            before its closing brace */
} mx_splice_rule_t;

/* Several rules may share a parent. Rules naming the same member: the first REPLACE among them wins, otherwise every
 * APPEND_MEMBERS rule appends (in rule order); add_if_missing adds the member once, for the first of them. A REPLACE
 * hides the replaced value from rules that go deeper into it. Every occurrence of a duplicated member is rewritten. */

typedef struct st_mx_splice_t { /* private: a fixed ~350 bytes, no heap; embed it anywhere */
    const mx_splice_rule_t *rules;
    uint8_t state;
    bool str_is_key; /* the string being skipped is a member name (a colon follows) */
    bool skipping;   /* the input is being dropped: the value being replaced */
    uint8_t mask_depth[MX_SPLICE_MAX_DEPTH + 2], mask_replace, mask_append, mask_add;
    uint8_t cands[MX_SPLICE_MAX_DEPTH + 1];   /* per open object near the top: rules whose path may go on inside */
    uint8_t append[MX_SPLICE_MAX_DEPTH + 1];  /* ... rules that append to it when it closes */
    uint8_t pending[MX_SPLICE_MAX_DEPTH + 1]; /* ... rules to add to it when it closes (member not seen yet) */
    uint8_t next_cands, next_append;          /* what the name just read means for the value that follows */
    int8_t next_replace;
    uint8_t key_cands; /* rules whose name still matches the name being read */
    uint8_t hex_n;
    uint32_t key_pos, hex_acc, pending_hi, nest, skip_nest;
    uint64_t kinds[MX_SPLICE_MAX_NESTING / 64]; /* bit set: that open container is an object */
    unsigned applied[MX_SPLICE_MAX_RULES];
} mx_splice_t;

/** Prepares `s` for one document with `rules` (borrowed, must outlive `s`). Returns 0, or -1 for rules out of range
 * (too many, depth, NULL name or text, REPLACE with empty text): then the splicer only copies input through. */
int mx_splice_init(mx_splice_t *s, const mx_splice_rule_t *rules, size_t nrules) __attribute__((warn_unused_result));
/**
 * Appends the transformed bytes of the next `len` input bytes to `out`. Chunks may split anywhere (inside strings,
 * escapes, names, numbers, between a name and its colon). Returns 0, or -1 once the input is seen not to be JSON of
 * the expected structure (unbalanced or mismatched brackets, a name that is not a string, a missing colon or comma,
 * bytes after the top-level value, nesting deeper than MX_SPLICE_MAX_NESTING; scalars are only checked loosely): from
 * then on it copies the input through unchanged (the bytes already appended cannot be taken back) and keeps
 * returning -1.
 */
int mx_splice_feed(mx_splice_t *s, const char *in, size_t len, mx_buf_t *out) __attribute__((warn_unused_result));
/** Ends the input. Returns 0 when exactly one complete top-level value was seen (whitespace around it allowed), else
 * -1 (the document was cut short or malformed). Appends nothing to `out` (kept for symmetry with feed). */
int mx_splice_finish(mx_splice_t *s, mx_buf_t *out) __attribute__((warn_unused_result));
/** How many times rule `i` took effect so far (a value replaced, members appended, or the member added). */
unsigned mx_splice_applied(const mx_splice_t *s, size_t i);

#endif
