/* The strict JSON parser every request body and stored JSON goes through (see mxkeys/json_parse.h). */
#include "mxkeys/json_parse.h"
#include <stdio.h>
#include <string.h>

/* Copies jansson's message for a client to read: one line, printable ASCII only (it may quote input bytes). */
static void copy_reason(char *why, size_t whylen, const char *text, int position)
{
    char clean[JSON_ERROR_TEXT_LENGTH];
    size_t i = 0;
    for (; text[i] != '\0' && i + 1 < sizeof(clean); i++)
        clean[i] = (unsigned char)text[i] >= 0x20 && (unsigned char)text[i] < 0x7f ? text[i] : '?';
    clean[i] = '\0';
    snprintf(why, whylen, "%s (at byte %d)", clean, position);
}

json_t *mx_json_parse(const char *text, size_t len, char *why, size_t whylen)
{
    /* A raw NUL byte is never JSON (in a string it is written \u0000), but jansson 2.14 skips one that follows a
     * number or a literal: {"a":1<NUL>} parses as {"a":1}. fuzz_bodies found it through the whole-backup PUT, which
     * hands the text as sent to PostgreSQL, where a C string ends at the NUL. */
    const char *nul = len > 0 ? memchr(text, '\0', len) : NULL;
    if (nul != NULL) {
        if (why != NULL && whylen > 0)
            copy_reason(why, whylen, "a NUL byte is not JSON", (int)(nul - text));
        return NULL;
    }
    json_error_t err;
    /* Any top-level value parses, so callers can say "must be an object" rather than "invalid JSON". Without
     * JSON_ALLOW_NUL jansson refuses \u0000 in strings; it always validates UTF-8 and refuses trailing data. */
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (v != NULL)
        return v;
    if (why == NULL || whylen == 0)
        return NULL;
    switch (json_error_code(&err)) {
    case json_error_null_byte_in_key:
        copy_reason(why, whylen, "object keys must not contain \\u0000", err.position);
        break;
    case json_error_null_character:
        copy_reason(why, whylen, "strings must not contain \\u0000", err.position);
        break;
    case json_error_invalid_utf8:
        copy_reason(why, whylen, "invalid UTF-8", err.position);
        break;
    case json_error_end_of_input_expected:
        copy_reason(why, whylen, "unexpected data after the JSON value", err.position);
        break;
    case json_error_premature_end_of_input:
        copy_reason(why, whylen, "truncated JSON", err.position);
        break;
    case json_error_numeric_overflow:
        copy_reason(why, whylen, "number too large", err.position);
        break;
    case json_error_stack_overflow:
        copy_reason(why, whylen, "nested too deeply", err.position);
        break;
    default:
        copy_reason(why, whylen, err.text, err.position);
        break;
    }
    return NULL;
}
