/* X-Matrix credentials (server-server API, "Request Authentication") per RFC 7235 section 2.1:
 *     credentials = auth-scheme 1*SP #auth-param
 *     auth-param  = token BWS "=" BWS ( token / quoted-string )
 * where #list allows empty elements and optional whitespace around the commas. Older servers send colons unquoted
 * (origin=example.org:8448), so an unquoted value may hold ':' besides token characters. */
#include "mxkeys/xmatrix.h"
#include <sodium.h>
#include <string.h>
#include <strings.h>
#include "mxkeys/base64.h"
#include "mxkeys/canonical_json.h"

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

typedef struct st_field_t {
    const char *name;
    char *dest;
    size_t cap;
    bool seen;
} field_t;

/* Reads a parameter value at *p into `dest` (cap bytes with the NUL; NULL: an unknown parameter, read and dropped).
 * Returns NULL, or a reason. */
static const char *read_value(const char **p, const char *end, char *dest, size_t cap)
{
    const char *s = *p;
    size_t n = 0;
    if (s < end && *s == '"') {
        s++;
        for (;;) {
            if (s == end)
                return "a quoted value has no closing quote";
            unsigned char c = (unsigned char)*s;
            if (c == '"')
                break;
            if (c == '\\') {
                if (++s == end)
                    return "a quoted value has no closing quote";
                c = (unsigned char)*s;
            }
            /* quoted-pair and qdtext allow HTAB, SP and visible characters; server names, key ids and base64 are
             * ASCII, so obs-text (bytes from 0x80) is refused rather than carried into JSON */
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return "a control character in a quoted value";
            if (c >= 0x80)
                return "a non-ASCII byte in a value";
            if (dest != NULL) {
                if (n + 1 >= cap)
                    return "a value is too long";
                dest[n] = (char)c;
            }
            n++;
            s++;
        }
        s++; /* the closing quote */
    } else {
        while (s < end && (is_tchar((unsigned char)*s) || *s == ':')) {
            if (dest != NULL) {
                if (n + 1 >= cap)
                    return "a value is too long";
                dest[n] = *s;
            }
            n++;
            s++;
        }
        if (n == 0)
            return "a parameter has no value";
    }
    if (dest != NULL)
        dest[n] = '\0';
    *p = s;
    return NULL;
}

static const char *parse_params(const char *s, const char *end, mx_xmatrix_t *out)
{
    field_t fields[] = {{"origin", out->origin, sizeof(out->origin), false},
                        {"destination", out->destination, sizeof(out->destination), false},
                        {"key", out->key, sizeof(out->key), false},
                        {"sig", out->sig, sizeof(out->sig), false}};
    for (;;) {
        while (s < end && (is_ows(*s) || *s == ','))
            s++;
        if (s == end)
            break;
        const char *name = s;
        while (s < end && is_tchar((unsigned char)*s))
            s++;
        size_t name_len = (size_t)(s - name);
        if (name_len == 0)
            return "expected a parameter name";
        while (s < end && is_ows(*s))
            s++;
        if (s == end || *s != '=')
            return "a parameter has no '='";
        s++;
        while (s < end && is_ows(*s))
            s++;
        field_t *f = NULL;
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
            if (strlen(fields[i].name) == name_len && strncasecmp(fields[i].name, name, name_len) == 0)
                f = &fields[i];
        if (f != NULL && f->seen)
            return "a parameter is given twice";
        const char *why = read_value(&s, end, f ? f->dest : NULL, f ? f->cap : 0);
        if (why != NULL)
            return why;
        if (f != NULL)
            f->seen = true;
        while (s < end && is_ows(*s))
            s++;
        if (s < end && *s != ',')
            return "parameters must be separated by commas";
    }
    out->has_destination = fields[1].seen;
    if (!fields[0].seen || out->origin[0] == '\0')
        return "no origin";
    if (!fields[2].seen || out->key[0] == '\0')
        return "no key";
    if (!fields[3].seen || out->sig[0] == '\0')
        return "no sig";
    if (strncmp(out->key, "ed25519:", 8) != 0 || out->key[8] == '\0')
        return "the key is not an ed25519 key id (\"ed25519:<version>\")";
    return NULL;
}

mx_xmatrix_parse_t mx_xmatrix_parse(const char *value, size_t len, mx_xmatrix_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    *why = NULL;
    const char *s = value, *end = value + len;
    while (s < end && is_ows(*s))
        s++;
    const char *scheme = s;
    while (s < end && is_tchar((unsigned char)*s))
        s++;
    if ((size_t)(s - scheme) != 8 || strncasecmp(scheme, "X-Matrix", 8) != 0)
        return MX_XMATRIX_OTHER_SCHEME;
    if (s == end || *s != ' ') {
        *why = s == end ? "no parameters" : "expected a space after X-Matrix";
        goto malformed;
    }
    while (s < end && *s == ' ')
        s++;
    if ((*why = parse_params(s, end, out)) != NULL)
        goto malformed;
    return MX_XMATRIX_OK;
malformed:
    memset(out, 0, sizeof(*out));
    return MX_XMATRIX_MALFORMED;
}

int mx_xmatrix_payload(const char *method, const char *uri, size_t uri_len, const char *origin, const char *destination,
                       const json_t *content, mx_buf_t *out, const char **why)
{
    json_t *req = json_object();
    json_object_set_new(req, "method", json_string(method));
    json_object_set_new(req, "uri", json_stringn(uri, uri_len));
    json_object_set_new(req, "origin", json_string(origin));
    if (destination != NULL)
        json_object_set_new(req, "destination", json_string(destination));
    if (content != NULL)
        json_object_set(req, "content", (json_t *)content);
    int rc = -1;
    /* json_string refuses invalid UTF-8 (a raw target may hold any byte): the member is then missing */
    if (json_object_size(req) != 3u + (destination != NULL) + (content != NULL))
        *why = "the request target or a header value is not valid UTF-8";
    else
        rc = mx_canonical_json(req, out, why);
    json_decref(req);
    return rc;
}

mx_sig_result_t mx_xmatrix_verify(const mx_buf_t *payload, const char *sig_b64,
                                  const uint8_t public_key[MX_ED25519_PUBLIC_KEY_BYTES])
{
    uint8_t sig[MX_ED25519_SIGNATURE_BYTES];
    if (mx_base64_decode(sig_b64, strlen(sig_b64), sig, sizeof(sig)) != MX_ED25519_SIGNATURE_BYTES)
        return MX_SIG_MALFORMED;
    const unsigned char *m = payload->data ? (const unsigned char *)payload->data : (const unsigned char *)"";
    return crypto_sign_verify_detached(sig, m, payload->len, public_key) == 0 ? MX_SIG_OK : MX_SIG_MISMATCH;
}
