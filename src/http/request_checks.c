/* Framing and query checks before routing (see mxkeys/request_checks.h). */
#include "mxkeys/request_checks.h"
#include <string.h>
#include <strings.h>
#include "mxkeys/utf8.h"

/* h2o 2.2.5 refuses heads longer than this (H2O_MAX_REQLEN) before any handler runs. */
#define MAX_HEAD 8192

static bool name_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

bool mx_http_framing_ok(h2o_req_t *req, const char **why)
{
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return true; /* HTTP/2 frames bodies itself */
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL || sock->input == NULL)
        return true;
    const char *p = sock->input->bytes, *end = p + (sock->input->size < MAX_HEAD ? sock->input->size : MAX_HEAD);
    while (p < end && (*p == '\r' || *p == '\n')) /* picohttpparser skips empty lines before the request line */
        p++;
    /* The buffer must still hold this request's head; if it does not, there is nothing reliable to check. */
    if ((size_t)(end - p) < req->input.method.len || memcmp(p, req->input.method.base, req->input.method.len) != 0)
        return true;
    unsigned content_length = 0, transfer_encoding = 0;
    bool first = true;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        const char *line_end = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        const char *line = p;
        p = nl + 1;
        if (first) { /* the request line */
            first = false;
            continue;
        }
        if (line == line_end)
            break; /* end of the head */
        const char *colon = memchr(line, ':', (size_t)(line_end - line));
        if (colon == NULL || *line == ' ' || *line == '\t')
            continue;
        size_t nlen = (size_t)(colon - line);
        if (name_is(line, nlen, "content-length"))
            content_length++;
        else if (name_is(line, nlen, "transfer-encoding"))
            transfer_encoding++;
    }
    if (content_length > 1) {
        *why = "Content-Length is given more than once";
        return false;
    }
    if (transfer_encoding > 1) {
        *why = "Transfer-Encoding is given more than once";
        return false;
    }
    if (content_length && transfer_encoding) {
        *why = "Content-Length and Transfer-Encoding are both given";
        return false;
    }
    return true;
}

long mx_http_percent_decode(const char *s, size_t len, char *out, bool plus_is_space)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi, lo;
            if (i + 2 >= len || (hi = mx_hex_digit(s[i + 1])) < 0 || (lo = mx_hex_digit(s[i + 2])) < 0)
                return -1;
            out[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[n++] = plus_is_space && s[i] == '+' ? ' ' : s[i];
        }
    }
    return (long)n;
}

bool mx_http_query_ok(h2o_req_t *req, const char **why)
{
    if (req->query_at == SIZE_MAX)
        return true;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    char *tmp = h2o_mem_alloc_pool(&req->pool, (size_t)(end - p) + 1);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pend = amp ? amp : end;
        long n = mx_http_percent_decode(p, (size_t)(pend - p), tmp, true);
        if (n < 0) {
            *why = "malformed percent-encoding in the query string";
            return false;
        }
        if (!mx_utf8_valid(tmp, (size_t)n)) {
            *why = "a query parameter is not valid UTF-8 (or holds a NUL)";
            return false;
        }
        p = pend + 1;
    }
    return true;
}
