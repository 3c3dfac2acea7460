/* A small streaming JSON writer. Response bodies are written straight into a buffer instead of building jansson trees
 * (a malloc per node). Strings are escaped exactly as canonical JSON escapes them. */
#ifndef MXKEYS_JSON_WRITER_H
#define MXKEYS_JSON_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mxkeys/buf.h"
#include "mxkeys/canonical_json.h" /* mx_json_escape */

#define MX_JW_MAX_DEPTH 32

typedef struct st_mx_jw_t {
    mx_buf_t *out;
    unsigned depth;
    bool need_comma[MX_JW_MAX_DEPTH + 1];
} mx_jw_t;

/** Starts writing into `out` (appending). */
void mx_jw_init(mx_jw_t *jw, mx_buf_t *out);
void mx_jw_object_begin(mx_jw_t *jw);
void mx_jw_object_end(mx_jw_t *jw);
void mx_jw_array_begin(mx_jw_t *jw);
void mx_jw_array_end(mx_jw_t *jw);
/** Writes an object member name; the value written next belongs to it. */
void mx_jw_key(mx_jw_t *jw, const char *key);
void mx_jw_keyn(mx_jw_t *jw, const char *key, size_t len);
void mx_jw_string(mx_jw_t *jw, const char *s);
void mx_jw_stringn(mx_jw_t *jw, const char *s, size_t len);
void mx_jw_int(mx_jw_t *jw, int64_t v);
void mx_jw_bool(mx_jw_t *jw, bool v);
void mx_jw_null(mx_jw_t *jw);
/** Splices an already-encoded JSON value (e.g. stored signed JSON text) as the next value. */
void mx_jw_raw(mx_jw_t *jw, const char *json, size_t len);

#endif
