/* Request bodies through each endpoint's real parse-and-validate path, without h2o or a database: the handlers of
 * src/api/ run on a loopback call (call_loopback.c) until they answer an error or hand the validated request over
 * (to the database, the homeserver, an offloaded check that then comes back). The route comes from the server's own
 * table (src/api/routes.c).
 *
 * Input: byte 0 picks the endpoint, byte 1 the circumstances (validation mode, a token without a device, the
 * version and path captures, a low --max-keys-per-request), the rest is the body as a client sends it.
 * Invariants: no crash or leak; every request is answered or handed over exactly once; an error is one strict JSON
 * object of valid UTF-8 with an errcode of the table and a 4xx status (the loopback checks this); every database
 * parameter is valid UTF-8; a body that was accepted is accepted again, identically, once re-encoded (what the
 * handler hands on depends on the JSON value alone, not on how the client spelled it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "call_loopback.h"
#include "mxkeys/json_parse.h"
#include "mxkeys/routes.h"
#include "mxkeys/api.h"
#include "mxkeys/canonical_json.h"
#include "mxkeys/config.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "fuzz_bodies: %s failed (%s:%d)\n", #c, __FILE__, __LINE__);                               \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

typedef struct st_endpoint_t {
    const char *route;  /* its name in mx_routes */
    const char *path;   /* the request path the sidecar handlers forward */
    unsigned ncaptures; /* path captures, picked by the flags */
    bool version_query; /* ?version= , picked by the flags */
    bool beside_hs;     /* a sidecar route: only served beside a homeserver */
    const char *origin; /* a federation route: the authenticated server */
} endpoint_t;

static const endpoint_t endpoints[] = {
    {"POST /keys/upload", NULL, 0, false, false, NULL},
    {"POST /keys/query", NULL, 0, false, false, NULL},
    {"POST /keys/claim", NULL, 0, false, false, NULL},
    {"POST /keys/device_signing/upload", NULL, 0, false, false, NULL},
    {"POST /keys/signatures/upload", NULL, 0, false, false, NULL},
    {"POST /room_keys/version", NULL, 0, false, false, NULL},
    {"PUT /room_keys/version/{version}", NULL, 1, false, false, NULL},
    {"PUT /room_keys/keys", NULL, 0, true, false, NULL},
    {"PUT /room_keys/keys/{roomId}", NULL, 1, true, false, NULL},
    {"PUT /room_keys/keys/{roomId}/{sessionId}", NULL, 2, true, false, NULL},
    {"POST /_matrix/federation/v1/user/keys/claim", NULL, 0, false, false, "other.example"},
    {"POST /delete_devices", "/_matrix/client/v3/delete_devices", 0, false, true, NULL},
    {"POST /login", "/_matrix/client/v3/login", 0, false, true, NULL},
    {"PUT /devices/{deviceId}", "/_matrix/client/v3/devices/DEV", 1, false, true, NULL},
    {"POST /_mxkeys/admin/v1/users/{userId}/allow_cross_signing_replacement", NULL, 1, false, false, NULL},
};
#define NENDPOINTS (sizeof(endpoints) / sizeof(endpoints[0]))

static const mx_route_t *route_named(const char *name)
{
    for (size_t i = 0; i < mx_nroutes; i++)
        if (strcmp(mx_routes[i].name, name) == 0)
            return &mx_routes[i];
    return NULL;
}

/* The homeserver's answer to a forwarded login or device update. */
static const char hs_answer[] = "{\"user_id\":\"@fuzz:localhost\",\"device_id\":\"FUZZDEV\",\"access_token\":\"t\"}";

/* One run of the endpoint on `text`: parses it as the HTTP layer does (src/http/call.c), then the handler. */
static void run(const endpoint_t *ep, const mx_route_t *route, const mx_config_t *cfg, uint8_t flags, const char *text,
                size_t len, mx_buf_t *out)
{
    static const char *const versions[] = {"1", "0", "x1", "123456789012345678901"};
    static const char *const captures[][2] = {
        {"!room:localhost", "session1"}, {"1", "s"}, {"@fuzz:localhost", "DEV"}, {"", ""}};
    mx_server_t server;
    mx_worker_t worker;
    h2o_req_t req;
    mx_call_t call;
    memset(&server, 0, sizeof(server));
    memset(&worker, 0, sizeof(worker));
    memset(&req, 0, sizeof(req));
    memset(&call, 0, sizeof(call));
    server.config = cfg;
    worker.server = &server;
    if (ep->beside_hs)
        worker.homeserver = (struct st_mx_upstream_t *)&server; /* only ever compared with NULL on these routes */
    req.path = h2o_iovec_init(ep->path ? ep->path : "/", ep->path ? strlen(ep->path) : 1);
    req.entity = h2o_iovec_init(text, len);
    call.req = &req;
    call.worker = &worker;
    call.config = cfg;
    call.route = route;
    call.route_index = (size_t)(route - mx_routes);
    const char *const *cap = captures[(flags >> 2) & 3];
    if (strstr(ep->route, "{version}") != NULL)
        call.params[0] = versions[(flags >> 2) & 3];
    else
        for (unsigned i = 0; i < ep->ncaptures; i++)
            call.params[i] = cap[i];
    call.nparams = ep->ncaptures;
    call.user_id = "@fuzz:localhost";
    call.device_id = flags & 2 ? "" : "FUZZDEV";
    call.origin = ep->origin;
    const char *query[] = {"version", versions[(flags >> 2) & 3], NULL};
    lb_begin(out, ep->version_query ? query : NULL, hs_answer);
    json_t *body = NULL;
    if (len == 0) { /* an optional body left out (the caller skips empty required ones) */
        lb_run(&call, route->handler);
    } else {
        char why[200];
        body = mx_json_parse(text, len, why, sizeof(why));
        if (body == NULL || !json_is_object(body)) {
            /* answered by the HTTP layer before any handler: nothing of the endpoint's to check */
            mx_buf_puts(out, "not an object");
        } else {
            call.body = body;
            lb_run(&call, route->handler);
        }
    }
    json_decref(body);
    lb_end();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const endpoint_t *ep = &endpoints[data[0] % NENDPOINTS];
    const mx_route_t *route = route_named(ep->route);
    REQUIRE(route != NULL && route->handler != NULL); /* the table still has the endpoint */
    uint8_t flags = data[1];
    const char *text = (const char *)data + 2;
    size_t len = size - 2;
    if (len == 0 && route->body != MX_BODY_OPTIONAL)
        return 0; /* the HTTP layer answers an empty required body itself */

    static mx_config_t cfg;
    static bool have_cfg;
    if (!have_cfg) {
        mx_config_defaults(&cfg);
        have_cfg = true;
    }
    cfg.validation = flags & 1 ? MX_VALIDATION_LENIENT : MX_VALIDATION_STRICT;
    cfg.max_keys_per_request = flags & 16 ? 8 : 10000;
    cfg.xsign_replacement = flags & 32 ? MX_XSIGN_REPLACEMENT_ALLOW : MX_XSIGN_REPLACEMENT_UIA;
    cfg.federation_claims_per_minute = 0; /* a rate limit remembers earlier runs: not a function of the body */
    cfg.auth_mode = MX_AUTH_LOCAL;

    mx_buf_t first = MX_BUF_INIT;
    run(ep, route, &cfg, flags, text, len, &first);
    REQUIRE(first.len > 0);
    if (getenv("FUZZ_BODIES_TRACE") != NULL) /* what each input came to, to check a corpus by eye */
        fprintf(stderr, "%s [flags %02x]: %.300s\n", ep->route, flags, first.data);
    bool accepted = strncmp(first.data, "error ", 6) != 0 && strncmp(first.data, "not an object", 13) != 0;
    if (accepted && len > 0) {
        /* The same value spelled anew (jansson's compact form: other spacing, escapes and number forms). */
        char why[200];
        json_t *v = mx_json_parse(text, len, why, sizeof(why));
        char *again = json_dumps(v, JSON_COMPACT);
        json_decref(v);
        REQUIRE(again != NULL);
        mx_buf_t second = MX_BUF_INIT;
        run(ep, route, &cfg, flags, again, strlen(again), &second);
        if (second.len != first.len || memcmp(second.data, first.data, first.len) != 0) {
            fprintf(stderr, "fuzz_bodies: %s accepted, then re-validated differently:\n  %.*s\n  %.*s\n", ep->route,
                    (int)first.len, first.data, (int)second.len, second.data);
            abort();
        }
        mx_buf_free(&second);
        free(again);
    }
    mx_buf_free(&first);
    return 0;
}
