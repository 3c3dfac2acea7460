#include "mxkeys/router.h"
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    unsigned bit;
} methods[] = {{"GET", MX_METHOD_GET},
               {"POST", MX_METHOD_POST},
               {"PUT", MX_METHOD_PUT},
               {"DELETE", MX_METHOD_DELETE},
               {"OPTIONS", MX_METHOD_OPTIONS}};

/* The client-server API versions every MX_SCOPE_CLIENT route answers under. */
static const char *const client_prefixes[] = {"/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable"};

unsigned mx_method_parse(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i].name) == len && memcmp(methods[i].name, s, len) == 0)
            return methods[i].bit;
    return 0;
}

void mx_method_allow_str(unsigned mask, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (!(mask & methods[i].bit))
            continue;
        int w = snprintf(out + n, outlen - n, "%s%s", n ? ", " : "", methods[i].name);
        if (w < 0 || (size_t)w >= outlen - n)
            return;
        n += (size_t)w;
    }
}

/* Matches one pattern against a path; `{name}` captures one non-empty segment. */
static int match_pattern(const char *pattern, const char *path, size_t pathlen, mx_slice_t *params, size_t *nparams)
{
    const char *p = pattern, *s = path, *end = path + pathlen;
    size_t n = 0;
    while (*p != '\0') {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (close == NULL || n == MX_ROUTE_MAX_PARAMS)
                return 0;
            const char *seg = s;
            while (s < end && *s != '/')
                s++;
            if (s == seg)
                return 0;
            params[n].base = seg;
            params[n].len = (size_t)(s - seg);
            n++;
            p = close + 1;
        } else {
            if (s == end || *s != *p)
                return 0;
            s++;
            p++;
        }
    }
    if (s != end)
        return 0;
    *nparams = n;
    return 1;
}

/* Strips a client-server API prefix; returns the remainder length or -1 when the path has none. */
static long strip_client_prefix(const char *path, size_t pathlen, const char **rest)
{
    for (size_t i = 0; i < sizeof(client_prefixes) / sizeof(client_prefixes[0]); i++) {
        size_t plen = strlen(client_prefixes[i]);
        if (pathlen > plen && memcmp(path, client_prefixes[i], plen) == 0 && path[plen] == '/') {
            *rest = path + plen;
            return (long)(pathlen - plen);
        }
    }
    return -1;
}

mx_route_result_t mx_router_match(const mx_route_t *routes, size_t nroutes, unsigned method, const char *path,
                                  size_t pathlen, mx_route_match_t *match, unsigned *allowed)
{
    const char *client_rest = NULL;
    long client_len = strip_client_prefix(path, pathlen, &client_rest);
    unsigned path_methods = 0;
    for (size_t i = 0; i < nroutes; i++) {
        const mx_route_t *r = &routes[i];
        const char *subject = path;
        size_t subject_len = pathlen;
        if (r->scope == MX_SCOPE_CLIENT) {
            if (client_len < 0)
                continue;
            subject = client_rest;
            subject_len = (size_t)client_len;
        }
        mx_slice_t params[MX_ROUTE_MAX_PARAMS];
        size_t nparams = 0;
        if (!match_pattern(r->path, subject, subject_len, params, &nparams))
            continue;
        path_methods |= r->method;
        if (r->method != method)
            continue;
        match->route = r;
        match->index = i;
        match->nparams = nparams;
        memcpy(match->params, params, sizeof(params[0]) * nparams);
        return MX_ROUTE_FOUND;
    }
    if (path_methods == 0)
        return MX_ROUTE_NO_PATH;
    if (allowed != NULL)
        *allowed = path_methods | MX_METHOD_OPTIONS;
    return MX_ROUTE_WRONG_METHOD;
}
