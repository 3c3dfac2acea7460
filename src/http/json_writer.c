#include "mxkeys/json_writer.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void mx_jw_init(mx_jw_t *jw, mx_buf_t *out)
{
    jw->out = out;
    jw->depth = 0;
    jw->need_comma[0] = false;
}

/* Separates values inside arrays; after a key the value follows the ':' directly. */
static void before_value(mx_jw_t *jw)
{
    if (jw->need_comma[jw->depth])
        mx_buf_putc(jw->out, ',');
    jw->need_comma[jw->depth] = true;
}

static void jw_open(mx_jw_t *jw, char c)
{
    before_value(jw);
    mx_buf_putc(jw->out, c);
    if (jw->depth < MX_JW_MAX_DEPTH)
        jw->depth++;
    jw->need_comma[jw->depth] = false;
}

static void jw_close(mx_jw_t *jw, char c)
{
    mx_buf_putc(jw->out, c);
    if (jw->depth > 0)
        jw->depth--;
}

void mx_jw_object_begin(mx_jw_t *jw)
{
    jw_open(jw, '{');
}

void mx_jw_object_end(mx_jw_t *jw)
{
    jw_close(jw, '}');
}

void mx_jw_array_begin(mx_jw_t *jw)
{
    jw_open(jw, '[');
}

void mx_jw_array_end(mx_jw_t *jw)
{
    jw_close(jw, ']');
}

void mx_jw_keyn(mx_jw_t *jw, const char *key, size_t len)
{
    before_value(jw);
    mx_buf_putc(jw->out, '"');
    mx_json_escape(jw->out, key, len);
    mx_buf_append(jw->out, "\":", 2);
    /* The member's value must not be preceded by a comma. */
    jw->need_comma[jw->depth] = false;
}

void mx_jw_key(mx_jw_t *jw, const char *key)
{
    mx_jw_keyn(jw, key, strlen(key));
}

void mx_jw_stringn(mx_jw_t *jw, const char *s, size_t len)
{
    before_value(jw);
    mx_buf_putc(jw->out, '"');
    mx_json_escape(jw->out, s, len);
    mx_buf_putc(jw->out, '"');
}

void mx_jw_string(mx_jw_t *jw, const char *s)
{
    mx_jw_stringn(jw, s, strlen(s));
}

void mx_jw_int(mx_jw_t *jw, int64_t v)
{
    before_value(jw);
    mx_buf_printf(jw->out, "%" PRId64, v);
}

void mx_jw_bool(mx_jw_t *jw, bool v)
{
    before_value(jw);
    mx_buf_puts(jw->out, v ? "true" : "false");
}

void mx_jw_null(mx_jw_t *jw)
{
    before_value(jw);
    mx_buf_puts(jw->out, "null");
}

void mx_jw_raw(mx_jw_t *jw, const char *json, size_t len)
{
    before_value(jw);
    mx_buf_append(jw->out, json, len);
}
