/* X-Matrix request authentication: parse every header, agree on one origin and destination, then look each key up
 * in turn and check its signature over the same signed request JSON (method, raw target, origin, destination,
 * content). One look-up at a time: a request carries one header in practice, and the cache answers repeats. */
#include "mxkeys/server_auth.h"
#include <stdio.h>
#include <string.h>
#include "mxkeys/base64.h"

static void finish(mx_server_auth_t *a, mx_server_key_status_t status, const char *origin)
{
    mx_buf_free(&a->_payload);
    mx_server_keys_count_auth(a->_sk, status);
    a->cb(a, status, origin, a->_why);
}

static void refuse(mx_server_auth_t *a, const char *fmt, const char *x, const char *y)
{
    snprintf(a->_why, sizeof(a->_why), fmt, x, y);
    finish(a, MX_SERVER_KEY_REFUSED, NULL);
}

static void next_header(mx_server_auth_t *a);

static void on_key(mx_server_key_waiter_t *w, mx_server_key_status_t status, const uint8_t *key, const char *why)
{
    mx_server_auth_t *a = H2O_STRUCT_FROM_MEMBER(mx_server_auth_t, _waiter, w);
    const mx_xmatrix_t *h = &a->_h[a->_next++];
    if (status == MX_SERVER_KEY_OK) {
        mx_sig_result_t r = mx_xmatrix_verify(&a->_payload, h->sig, key);
        if (r != MX_SIG_OK) {
            snprintf(a->_why, sizeof(a->_why), "the request's signature by %s with %s: %s", h->origin, h->key,
                     mx_sig_result_str(r));
            finish(a, MX_SERVER_KEY_REFUSED, NULL);
            return;
        }
        a->_verified = true;
    } else {
        /* kept for the answer in case no other header authenticates */
        snprintf(a->_why, sizeof(a->_why), "%s", why);
        a->_unavailable |= status == MX_SERVER_KEY_UNAVAILABLE;
    }
    next_header(a);
}

static void next_header(mx_server_auth_t *a)
{
    if (a->_next == a->_n) {
        if (a->_verified)
            finish(a, MX_SERVER_KEY_OK, a->_h[0].origin);
        else
            finish(a, a->_unavailable ? MX_SERVER_KEY_UNAVAILABLE : MX_SERVER_KEY_REFUSED, NULL);
        return;
    }
    const mx_xmatrix_t *h = &a->_h[a->_next];
    a->_waiter.cb = on_key;
    mx_server_keys_get(a->_sk, h->origin, h->key, &a->_waiter);
}

void mx_server_auth_start(mx_server_auth_t *a, mx_server_keys_t *sk, const mx_server_auth_request_t *r)
{
    a->_sk = sk;
    a->_n = a->_next = 0;
    a->_payload = (mx_buf_t)MX_BUF_INIT;
    a->_verified = a->_unavailable = false;
    a->_why[0] = '\0';
    memset(&a->_waiter, 0, sizeof(a->_waiter));
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *why;
        mx_xmatrix_t h;
        switch (mx_xmatrix_parse(r->headers[i].base, r->headers[i].len, &h, &why)) {
        case MX_XMATRIX_OTHER_SCHEME:
            continue;
        case MX_XMATRIX_MALFORMED:
            refuse(a, "malformed X-Matrix Authorization header: %s%s", why, "");
            return;
        case MX_XMATRIX_OK:
            break;
        }
        /* A sig that cannot be an ed25519 signature fails whatever the key: refuse it before asking the notary. */
        if (!mx_base64_is_key(h.sig, MX_ED25519_SIGNATURE_BYTES)) {
            refuse(a, "the X-Matrix sig by %s is not an ed25519 signature (64 bytes of unpadded base64)%s", h.origin,
                   "");
            return;
        }
        if (a->_n == MX_SERVER_AUTH_MAX_HEADERS) {
            refuse(a, "more than %s X-Matrix Authorization headers%s", "four", "");
            return;
        }
        if (a->_n > 0 && (strcmp(h.origin, a->_h[0].origin) != 0 || strcmp(h.destination, a->_h[0].destination) != 0 ||
                          h.has_destination != a->_h[0].has_destination)) {
            refuse(a, "the X-Matrix headers disagree on the origin or destination (%s, %s)", a->_h[0].origin, h.origin);
            return;
        }
        a->_h[a->_n++] = h;
    }
    if (a->_n == 0) {
        refuse(a, "missing X-Matrix Authorization header: federation requests must be signed by their origin%s%s", "",
               "");
        return;
    }
    const mx_xmatrix_t *h = &a->_h[0];
    if (h->has_destination && strcmp(h->destination, r->server_name) != 0) {
        refuse(a, "the request is for destination %s, but this is %s", h->destination, r->server_name);
        return;
    }
    const char *why;
    if (mx_xmatrix_payload(r->method, r->uri, r->uri_len, h->origin, h->has_destination ? h->destination : NULL,
                           r->content, &a->_payload, &why) != 0) {
        refuse(a, "the request cannot be put in signed JSON: %s%s", why, "");
        return;
    }
    next_header(a);
}

void mx_server_auth_cancel(mx_server_auth_t *a)
{
    mx_server_keys_cancel(&a->_waiter);
    mx_buf_free(&a->_payload);
}
