/* Router: client prefixes, captures, 404 vs 405, method parsing. */
#include <string.h>
#include "check.h"
#include "mxkeys/router.h"

static void h(struct st_mx_call_t *call)
{
    (void)call;
}

static const mx_route_t routes[] = {
    {MX_METHOD_POST, MX_SCOPE_CLIENT, "/keys/upload", MX_ROUTE_USER, MX_BODY_OBJECT, h, "POST /keys/upload"},
    {MX_METHOD_GET, MX_SCOPE_CLIENT, "/room_keys/keys/{roomId}/{sessionId}", MX_ROUTE_USER, MX_BODY_NONE, h, "g"},
    {MX_METHOD_PUT, MX_SCOPE_CLIENT, "/room_keys/keys/{roomId}/{sessionId}", MX_ROUTE_USER, MX_BODY_OBJECT, h, "p"},
    {MX_METHOD_GET, MX_SCOPE_CLIENT, "/room_keys/keys/{roomId}", MX_ROUTE_USER, MX_BODY_NONE, h, "r"},
    {MX_METHOD_GET, MX_SCOPE_ROOT, "/_mxkeys/health", MX_ROUTE_PUBLIC, MX_BODY_NONE, h, "health"},
};
#define N (sizeof(routes) / sizeof(routes[0]))

static mx_route_result_t match(unsigned method, const char *path, mx_route_match_t *m, unsigned *allowed)
{
    return mx_router_match(routes, N, method, path, strlen(path), m, allowed);
}

int main(void)
{
    mx_route_match_t m;
    unsigned allowed = 0;

    /* every client prefix */
    CHECK(match(MX_METHOD_POST, "/_matrix/client/v3/keys/upload", &m, NULL) == MX_ROUTE_FOUND && m.index == 0);
    CHECK(match(MX_METHOD_POST, "/_matrix/client/r0/keys/upload", &m, NULL) == MX_ROUTE_FOUND);
    CHECK(match(MX_METHOD_POST, "/_matrix/client/unstable/keys/upload", &m, NULL) == MX_ROUTE_FOUND);
    CHECK(match(MX_METHOD_POST, "/_matrix/client/v4/keys/upload", &m, NULL) == MX_ROUTE_NO_PATH);
    CHECK(match(MX_METHOD_POST, "/_matrix/client/v3keys/upload", &m, NULL) == MX_ROUTE_NO_PATH);
    CHECK(match(MX_METHOD_POST, "/keys/upload", &m, NULL) == MX_ROUTE_NO_PATH);
    CHECK(match(MX_METHOD_POST, "/_matrix/client/v3/keys/upload/", &m, NULL) == MX_ROUTE_NO_PATH);

    /* wrong method: 405 with the allowed set */
    CHECK(match(MX_METHOD_GET, "/_matrix/client/v3/keys/upload", &m, &allowed) == MX_ROUTE_WRONG_METHOD);
    CHECK(allowed == (MX_METHOD_POST | MX_METHOD_OPTIONS));
    CHECK(match(MX_METHOD_DELETE, "/_matrix/client/v3/room_keys/keys/!r:x/s1", &m, &allowed) == MX_ROUTE_WRONG_METHOD);
    CHECK(allowed == (MX_METHOD_GET | MX_METHOD_PUT | MX_METHOD_OPTIONS));

    /* captures: one non-empty segment each, still percent-encoded */
    CHECK(match(MX_METHOD_PUT, "/_matrix/client/v3/room_keys/keys/%21room%3Ax/sess", &m, NULL) == MX_ROUTE_FOUND);
    CHECK(m.nparams == 2 && m.params[0].len == 11 && memcmp(m.params[0].base, "%21room%3Ax", 11) == 0);
    CHECK(m.params[1].len == 4 && memcmp(m.params[1].base, "sess", 4) == 0);
    CHECK(match(MX_METHOD_GET, "/_matrix/client/v3/room_keys/keys/!r:x", &m, NULL) == MX_ROUTE_FOUND && m.index == 3 &&
          m.nparams == 1);
    CHECK(match(MX_METHOD_GET, "/_matrix/client/v3/room_keys/keys//s", &m, NULL) == MX_ROUTE_NO_PATH);
    CHECK(match(MX_METHOD_GET, "/_matrix/client/v3/room_keys/keys/a/b/c", &m, NULL) == MX_ROUTE_NO_PATH);

    /* root scope is exact and never under a client prefix */
    CHECK(match(MX_METHOD_GET, "/_mxkeys/health", &m, NULL) == MX_ROUTE_FOUND && m.index == 4);
    CHECK(match(MX_METHOD_GET, "/_matrix/client/v3/_mxkeys/health", &m, NULL) == MX_ROUTE_NO_PATH);

    /* methods */
    CHECK(mx_method_parse("GET", 3) == MX_METHOD_GET);
    CHECK(mx_method_parse("DELETE", 6) == MX_METHOD_DELETE);
    CHECK(mx_method_parse("get", 3) == 0);
    CHECK(mx_method_parse("PATCH", 5) == 0);
    char allow[64];
    mx_method_allow_str(MX_METHOD_GET | MX_METHOD_PUT | MX_METHOD_OPTIONS, allow, sizeof(allow));
    CHECK_STREQ(allow, "GET, PUT, OPTIONS");
    return check_finish("router");
}
