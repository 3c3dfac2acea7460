/* The JSON body of a Matrix error answer, apart from the request that carries it (so the fuzz targets check the
 * very bytes a client gets). */
#ifndef MXKEYS_ERROR_BODY_H
#define MXKEYS_ERROR_BODY_H

#include "mxkeys/buf.h"

/**
 * Appends {"errcode": errcode, "error": msg} to `out`, then `extra` (JSON object members without braces, already
 * escaped; NULL or "" for none) before the closing brace. `msg` may quote client bytes: it is made valid UTF-8.
 */
void mx_error_body(mx_buf_t *out, const char *errcode, const char *extra, const char *msg);

#endif
