/* The response parser is a small state machine fed with whatever read() returned: it never needs the whole response
 * in one buffer, so a streamed multi-megabyte backup is counted without being kept (see keep_max). */
#include "http.h"
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEAD 65536
#define MAX_CHUNK_LINE 1024

int bench_target_parse(bench_target_t *t, const char *url, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "--url must start with http:// (got %s)", url);
        return -1;
    }
    const char *host = url + 7, *slash = strchr(host, '/');
    size_t hostlen = slash != NULL ? (size_t)(slash - host) : strlen(host);
    if (hostlen == 0 || hostlen >= sizeof(t->host)) {
        snprintf(err, errlen, "--url has no usable host: %s", url);
        return -1;
    }
    memcpy(t->host, host, hostlen);
    if (slash != NULL) {
        size_t blen = strlen(slash);
        while (blen > 0 && slash[blen - 1] == '/')
            blen--;
        if (blen >= sizeof(t->base)) {
            snprintf(err, errlen, "--url path too long");
            return -1;
        }
        memcpy(t->base, slash, blen);
    }
    char name[256], port[16] = "80";
    if (t->host[0] == '[') {
        const char *close = strchr(t->host, ']');
        if (close == NULL) {
            snprintf(err, errlen, "--url: unterminated [ in %s", t->host);
            return -1;
        }
        snprintf(name, sizeof(name), "%.*s", (int)(close - t->host - 1), t->host + 1);
        if (close[1] == ':')
            snprintf(port, sizeof(port), "%s", close + 2);
    } else {
        const char *colon = strrchr(t->host, ':');
        snprintf(name, sizeof(name), "%.*s", colon != NULL ? (int)(colon - t->host) : (int)hostlen, t->host);
        if (colon != NULL)
            snprintf(port, sizeof(port), "%s", colon + 1);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(name, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s port %s: %s", name, port, gai_strerror(rc));
        return -1;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

void bench_http_format(mx_buf_t *out, const bench_target_t *t, const char *method, const char *path, const char *token,
                       const char *body, size_t bodylen)
{
    mx_buf_printf(out, "%s %s%s HTTP/1.1\r\nHost: %s\r\n", method, t->base, path, t->host);
    if (token != NULL)
        mx_buf_printf(out, "Authorization: Bearer %s\r\n", token);
    if (body != NULL)
        mx_buf_printf(out, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", bodylen);
    else
        mx_buf_puts(out, "\r\n");
    if (body != NULL)
        mx_buf_append(out, body, bodylen);
}

void bench_resp_reset(bench_resp_t *r, size_t keep_max)
{
    r->state = RESP_HEAD;
    r->status = 0;
    r->keep_alive = true;
    r->remaining = 0;
    r->body_bytes = 0;
    r->keep_max = keep_max;
    mx_buf_reset(&r->head);
    mx_buf_reset(&r->body);
}

void bench_resp_free(bench_resp_t *r)
{
    mx_buf_free(&r->head);
    mx_buf_free(&r->body);
}

static bool token_in(const char *value, size_t len, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= len; i++)
        if (strncasecmp(value + i, token, tl) == 0)
            return true;
    return false;
}

/* Parses the status line and the headers in r->head (which ends with CRLF CRLF) and picks the body framing. */
static int parse_head(bench_resp_t *r, char *err)
{
    const char *p = r->head.data, *end = r->head.data + r->head.len;
    int minor;
    if (sscanf(p, "HTTP/1.%d %3d", &minor, &r->status) != 2 || r->status < 100 || r->status > 999) {
        snprintf(err, 128, "bad status line: %.60s", p);
        return -1;
    }
    r->keep_alive = minor >= 1;
    bool chunked = false, have_length = false;
    size_t length = 0;
    p = strstr(p, "\r\n") + 2;
    while (p < end && !(p[0] == '\r' && p[1] == '\n')) {
        const char *eol = strstr(p, "\r\n"), *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL) {
            snprintf(err, 128, "bad header line: %.60s", p);
            return -1;
        }
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        size_t vlen = (size_t)(eol - v);
        if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
            char *num_end;
            unsigned long long n = strtoull(v, &num_end, 10);
            if (num_end == v) {
                snprintf(err, 128, "bad Content-Length");
                return -1;
            }
            length = (size_t)n;
            have_length = true;
        } else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
            chunked = token_in(v, vlen, "chunked");
        } else if (nlen == 10 && strncasecmp(p, "connection", 10) == 0) {
            if (token_in(v, vlen, "close"))
                r->keep_alive = false;
            else if (token_in(v, vlen, "keep-alive"))
                r->keep_alive = true;
        }
        p = eol + 2;
    }
    if (r->status == 204 || r->status == 304 || r->status < 200) {
        r->state = RESP_DONE;
    } else if (chunked) {
        r->state = RESP_CHUNK_SIZE;
    } else if (have_length) {
        r->remaining = length;
        r->state = length == 0 ? RESP_DONE : RESP_BODY_LENGTH;
    } else {
        r->keep_alive = false;
        r->state = RESP_BODY_CLOSE;
    }
    mx_buf_reset(&r->head);
    return 0;
}

static void take_body(bench_resp_t *r, const char *data, size_t n)
{
    r->body_bytes += n;
    if (r->body.len < r->keep_max) {
        size_t room = r->keep_max - r->body.len;
        mx_buf_append(&r->body, data, n < room ? n : room);
    }
}

/* Accumulates one CRLF-terminated line into r->head; returns 1 with the line complete (CRLF stripped), 0 when more
 * is needed, -1 when too long. */
static int take_line(bench_resp_t *r, const char **data, size_t *len)
{
    const char *nl = memchr(*data, '\n', *len);
    size_t n = nl != NULL ? (size_t)(nl - *data) + 1 : *len;
    if (r->head.len + n > MAX_CHUNK_LINE)
        return -1;
    mx_buf_append(&r->head, *data, n);
    *data += n;
    *len -= n;
    if (nl == NULL)
        return 0;
    r->head.len -= 1;
    if (r->head.len > 0 && r->head.data[r->head.len - 1] == '\r')
        r->head.len--;
    r->head.data[r->head.len] = '\0';
    return 1;
}

int bench_resp_feed(bench_resp_t *r, const char *data, size_t len, size_t *used, char *err)
{
    const char *start = data;
    while (len > 0 && r->state != RESP_DONE) {
        switch (r->state) {
        case RESP_HEAD: {
            /* Look for the blank line across the old and the new bytes. */
            size_t old = r->head.len, scan_from = old >= 3 ? old - 3 : 0;
            size_t n = len;
            if (old + n > MAX_HEAD)
                n = MAX_HEAD - old;
            mx_buf_append(&r->head, data, n);
            char *blank = strstr(r->head.data + scan_from, "\r\n\r\n");
            if (blank == NULL) {
                if (r->head.len >= MAX_HEAD) {
                    snprintf(err, 128, "response head larger than %d bytes", MAX_HEAD);
                    return -1;
                }
                data += n;
                len -= n;
                break;
            }
            size_t head_len = (size_t)(blank - r->head.data) + 4;
            size_t consumed = head_len - old;
            r->head.len = head_len;
            r->head.data[head_len] = '\0';
            data += consumed;
            len -= consumed;
            if (parse_head(r, err) != 0)
                return -1;
            break;
        }
        case RESP_BODY_LENGTH:
        case RESP_CHUNK_DATA: { /* a counted run of body bytes: the whole body, or one chunk */
            size_t n = len < r->remaining ? len : r->remaining;
            take_body(r, data, n);
            data += n;
            len -= n;
            r->remaining -= n;
            if (r->remaining == 0)
                r->state = r->state == RESP_BODY_LENGTH ? RESP_DONE : RESP_CHUNK_CRLF;
            break;
        }
        case RESP_BODY_CLOSE:
            take_body(r, data, len);
            data += len;
            len = 0;
            break;
        case RESP_CHUNK_SIZE: {
            int rc = take_line(r, &data, &len);
            if (rc < 0) {
                snprintf(err, 128, "chunk size line too long");
                return -1;
            }
            if (rc == 0)
                break;
            char *num_end;
            unsigned long long n = strtoull(r->head.data, &num_end, 16);
            if (num_end == r->head.data) {
                snprintf(err, 128, "bad chunk size: %.40s", r->head.data);
                return -1;
            }
            mx_buf_reset(&r->head);
            r->remaining = (size_t)n;
            r->state = n == 0 ? RESP_TRAILERS : RESP_CHUNK_DATA;
            break;
        }
        case RESP_CHUNK_CRLF: {
            int rc = take_line(r, &data, &len);
            if (rc < 0 || (rc == 1 && r->head.len != 0)) {
                snprintf(err, 128, "chunk not followed by CRLF");
                return -1;
            }
            if (rc == 1) {
                mx_buf_reset(&r->head);
                r->state = RESP_CHUNK_SIZE;
            }
            break;
        }
        case RESP_TRAILERS: {
            int rc = take_line(r, &data, &len);
            if (rc < 0) {
                snprintf(err, 128, "trailer line too long");
                return -1;
            }
            if (rc == 1) {
                bool blank = r->head.len == 0;
                mx_buf_reset(&r->head);
                if (blank)
                    r->state = RESP_DONE;
            }
            break;
        }
        case RESP_DONE:
            break;
        }
    }
    *used = (size_t)(data - start);
    return r->state == RESP_DONE ? 1 : 0;
}

int bench_resp_eof(bench_resp_t *r)
{
    if (r->state == RESP_BODY_CLOSE) {
        r->state = RESP_DONE;
        return 1;
    }
    return 0;
}
