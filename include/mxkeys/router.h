/* Route table and matcher: method + path -> handler, with `{name}` path captures. Pure: no h2o, no I/O. */
#ifndef MXKEYS_ROUTER_H
#define MXKEYS_ROUTER_H

#include <stddef.h>

enum {
    MX_METHOD_GET = 1 << 0,
    MX_METHOD_POST = 1 << 1,
    MX_METHOD_PUT = 1 << 2,
    MX_METHOD_DELETE = 1 << 3,
    MX_METHOD_OPTIONS = 1 << 4,
};

/** Where a route's path lives: under every client-server API prefix, or at the server root exactly as written. */
typedef enum en_mx_route_scope_t {
    MX_SCOPE_CLIENT, /* /_matrix/client/{r0,v3,unstable}<path> */
    MX_SCOPE_ROOT,   /* <path> */
} mx_route_scope_t;

typedef enum en_mx_route_auth_t {
    MX_ROUTE_PUBLIC,
    MX_ROUTE_USER,
    MX_ROUTE_ADMIN,
    MX_ROUTE_SERVER, /* server-server API: X-Matrix request signatures */
} mx_route_auth_t;
typedef enum en_mx_route_body_t {
    MX_BODY_NONE,     /* any body is ignored */
    MX_BODY_OBJECT,   /* a JSON object is required */
    MX_BODY_OPTIONAL, /* empty, or a JSON object */
} mx_route_body_t;

struct st_mx_call_t;
typedef void (*mx_handler_fn)(struct st_mx_call_t *call);

typedef struct st_mx_route_t {
    unsigned method; /* one MX_METHOD_* */
    mx_route_scope_t scope;
    const char *path; /* e.g. "/room_keys/keys/{roomId}/{sessionId}" */
    mx_route_auth_t auth;
    mx_route_body_t body;
    mx_handler_fn handler;
    const char *name; /* route template for logs and metrics, e.g. "POST /keys/upload" */
} mx_route_t;

#define MX_ROUTE_MAX_PARAMS 4

typedef struct st_mx_slice_t {
    const char *base;
    size_t len;
} mx_slice_t;

typedef struct st_mx_route_match_t {
    const mx_route_t *route;
    size_t index;                           /* position of route in the table (metrics slot) */
    mx_slice_t params[MX_ROUTE_MAX_PARAMS]; /* raw (still percent-encoded) captures */
    size_t nparams;
} mx_route_match_t;

typedef enum en_mx_route_result_t {
    MX_ROUTE_FOUND,
    MX_ROUTE_NO_PATH,      /* 404 M_UNRECOGNIZED */
    MX_ROUTE_WRONG_METHOD, /* 405 M_UNRECOGNIZED; *allowed holds the methods the path accepts */
} mx_route_result_t;

/** Parses "GET", "POST", ... into an MX_METHOD_* bit; 0 for anything else. */
unsigned mx_method_parse(const char *s, size_t len);
/** Matches `path` (no query string) against `routes`. A capture never spans a '/' and is never empty. */
mx_route_result_t mx_router_match(const mx_route_t *routes, size_t nroutes, unsigned method, const char *path,
                                  size_t pathlen, mx_route_match_t *match, unsigned *allowed);
/** Writes the Allow header value for a method mask ("GET, PUT, OPTIONS"). */
void mx_method_allow_str(unsigned methods, char *out, size_t outlen);

#endif
