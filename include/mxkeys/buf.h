/* Growable byte buffer: the one place that owns append-and-grow logic. */
#ifndef MXKEYS_BUF_H
#define MXKEYS_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct st_mx_buf_t {
    char *data; /* NUL-terminated whenever len < cap; NULL until the first append */
    size_t len;
    size_t cap;
} mx_buf_t;

#define MX_BUF_INIT                                                                                                    \
    {                                                                                                                  \
        NULL, 0, 0                                                                                                     \
    }

/** Makes room for `extra` more bytes (plus a trailing NUL). Aborts the process on out-of-memory. */
void mx_buf_reserve(mx_buf_t *buf, size_t extra);
/** Appends `len` bytes. */
void mx_buf_append(mx_buf_t *buf, const void *data, size_t len);
/** Appends a NUL-terminated string. */
void mx_buf_puts(mx_buf_t *buf, const char *s);
/** Appends one byte. */
void mx_buf_putc(mx_buf_t *buf, char c);
/** Appends printf-formatted text. */
void mx_buf_printf(mx_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Forgets the contents but keeps the allocation. */
void mx_buf_reset(mx_buf_t *buf);
/** Frees the allocation; the buffer is empty and reusable afterwards. */
void mx_buf_free(mx_buf_t *buf);

#endif
