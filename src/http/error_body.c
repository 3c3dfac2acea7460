#include "mxkeys/error_body.h"
#include <string.h>
#include "mxkeys/json_writer.h"
#include "mxkeys/utf8.h"

void mx_error_body(mx_buf_t *out, const char *errcode, const char *extra, const char *msg)
{
    mx_jw_t jw;
    mx_jw_init(&jw, out);
    mx_jw_object_begin(&jw);
    mx_jw_key(&jw, "errcode");
    mx_jw_string(&jw, errcode);
    mx_jw_key(&jw, "error");
    /* Messages can quote what a client sent, and vsnprintf can cut a character in two: always valid UTF-8. */
    mx_buf_t text = MX_BUF_INIT;
    mx_utf8_sanitize(&text, msg, strlen(msg));
    mx_jw_stringn(&jw, text.data ? text.data : "", text.len);
    mx_buf_free(&text);
    mx_jw_object_end(&jw);
    if (extra != NULL && *extra != '\0') {
        /* splice the extra members before the closing brace */
        out->len--;
        mx_buf_putc(out, ',');
        mx_buf_puts(out, extra);
        mx_buf_putc(out, '}');
    }
}
