#include "mxkeys/buf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mx_buf_reserve(mx_buf_t *buf, size_t extra)
{
    if (buf->len + extra + 1 <= buf->cap)
        return;
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap < buf->len + extra + 1)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (data == NULL) {
        /* Out of memory on a 2-digit-KiB buffer: nothing sensible to degrade to. */
        fputs("mxkeysd: out of memory\n", stderr);
        abort();
    }
    buf->data = data;
    buf->cap = cap;
}

void mx_buf_append(mx_buf_t *buf, const void *data, size_t len)
{
    mx_buf_reserve(buf, len);
    if (len)
        memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
}

void mx_buf_puts(mx_buf_t *buf, const char *s)
{
    mx_buf_append(buf, s, strlen(s));
}

void mx_buf_putc(mx_buf_t *buf, char c)
{
    mx_buf_reserve(buf, 1);
    buf->data[buf->len++] = c;
    buf->data[buf->len] = '\0';
}

void mx_buf_printf(mx_buf_t *buf, const char *fmt, ...)
{
    /* Format straight into the free space; grow and format again only when it did not fit. */
    mx_buf_reserve(buf, 64);
    size_t room = buf->cap - buf->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf->data + buf->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf->data[buf->len] = '\0';
        return;
    }
    if ((size_t)n >= room) {
        mx_buf_reserve(buf, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    buf->len += (size_t)n;
}

void mx_buf_reset(mx_buf_t *buf)
{
    buf->len = 0;
    if (buf->data)
        buf->data[0] = '\0';
}

void mx_buf_free(mx_buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}
