/* The router over any method and path, against mxkeys' own route table (client and root scopes, literal segments,
 * captures, the same path under several methods). Invariants: a match names a
 * route of the table whose method is the one asked, with its captures inside the path; a wrong method names only
 * methods the path accepts. The first input byte picks the method, the rest is the path. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/call.h"
#include "mxkeys/router.h"
#include "mxkeys/routes.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            abort();                                                                                                   \
    } while (0)

/* The server's own table (src/api/routes.c); its handlers are never called here (weak stand-ins when not linked). */
#define routes mx_routes
#define NROUTES mx_nroutes

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", ""};
    const char *mname = methods[data[0] & 7];
    unsigned method = mx_method_parse(mname, strlen(mname));
    const char *path = (const char *)data + 1;
    size_t len = size - 1;
    mx_route_match_t m;
    unsigned allowed = 0;
    switch (mx_router_match(routes, NROUTES, method, path, len, &m, &allowed)) {
    case MX_ROUTE_FOUND:
        REQUIRE(m.route == &routes[m.index] && m.route->method == method);
        REQUIRE(m.nparams <= MX_ROUTE_MAX_PARAMS);
        for (size_t i = 0; i < m.nparams; i++)
            REQUIRE(m.params[i].base >= path && m.params[i].base + m.params[i].len <= path + len);
        break;
    case MX_ROUTE_WRONG_METHOD:
        /* OPTIONS is always allowed: every path answers CORS pre-flights */
        REQUIRE((allowed & MX_METHOD_OPTIONS) && (allowed & method & ~(unsigned)MX_METHOD_OPTIONS) == 0);
        char allow[64];
        mx_method_allow_str(allowed, allow, sizeof(allow));
        REQUIRE(strlen(allow) > 0);
        break;
    case MX_ROUTE_NO_PATH:
        break;
    }
    return 0;
}
