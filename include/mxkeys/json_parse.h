/* Strict JSON parsing for what clients send: the one entry point, so every body is held to the same rules. */
#ifndef MXKEYS_JSON_PARSE_H
#define MXKEYS_JSON_PARSE_H

#include <jansson.h>
#include <stddef.h>

/**
 * Parses request text strictly: duplicate keys, invalid UTF-8, NUL in strings and trailing garbage are refused.
 * Returns a new reference or NULL with a one-line reason in `why` (at least 160 bytes).
 */
json_t *mx_json_parse(const char *text, size_t len, char *why, size_t whylen);

#endif
