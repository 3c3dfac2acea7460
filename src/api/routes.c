/* The route table: every endpoint mxkeys serves. Client routes answer under /_matrix/client/{r0,v3,unstable}. */
#include "mxkeys/routes.h"
#include "mxkeys/api.h"

#define CLIENT(m, p, auth, body, fn)                                                                                   \
    {                                                                                                                  \
        MX_METHOD_##m, MX_SCOPE_CLIENT, p, auth, body, fn, #m " " p                                                    \
    }
#define ROOT(m, p, auth, body, fn)                                                                                     \
    {                                                                                                                  \
        MX_METHOD_##m, MX_SCOPE_ROOT, p, auth, body, fn, #m " " p                                                      \
    }

const mx_route_t mx_routes[] = {
    /* operations */
    ROOT(GET, "/_mxkeys/health", MX_ROUTE_PUBLIC, MX_BODY_NONE, mx_api_health),
    ROOT(GET, "/_mxkeys/ready", MX_ROUTE_PUBLIC, MX_BODY_NONE, mx_api_ready),
    ROOT(GET, "/metrics", MX_ROUTE_PUBLIC, MX_BODY_NONE, mx_api_metrics),
    ROOT(GET, "/_mxkeys/v1/stream_position", MX_ROUTE_USER, MX_BODY_NONE, mx_api_stream_position),
    CLIENT(GET, "/account/whoami", MX_ROUTE_USER, MX_BODY_NONE, mx_api_whoami),

    /* device, one-time and fallback keys */
    CLIENT(POST, "/keys/upload", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_keys_upload),
    CLIENT(POST, "/keys/query", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_keys_query),
    CLIENT(POST, "/keys/claim", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_keys_claim),
    CLIENT(GET, "/keys/changes", MX_ROUTE_USER, MX_BODY_NONE, mx_api_keys_changes),

    /* cross-signing */
    CLIENT(POST, "/keys/device_signing/upload", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_device_signing_upload),
    CLIENT(POST, "/keys/signatures/upload", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_signatures_upload),

    /* server-side key backup */
    CLIENT(POST, "/room_keys/version", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_backup_version_create),
    CLIENT(GET, "/room_keys/version", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_version_get_current),
    CLIENT(GET, "/room_keys/version/{version}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_version_get),
    CLIENT(PUT, "/room_keys/version/{version}", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_backup_version_update),
    CLIENT(DELETE, "/room_keys/version/{version}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_version_delete),
    CLIENT(PUT, "/room_keys/keys", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_backup_keys_put),
    CLIENT(PUT, "/room_keys/keys/{roomId}", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_backup_keys_put),
    CLIENT(PUT, "/room_keys/keys/{roomId}/{sessionId}", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_backup_keys_put),
    CLIENT(GET, "/room_keys/keys", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_keys_get),
    CLIENT(GET, "/room_keys/keys/{roomId}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_keys_get),
    CLIENT(GET, "/room_keys/keys/{roomId}/{sessionId}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_keys_get),
    CLIENT(DELETE, "/room_keys/keys", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_keys_delete),
    CLIENT(DELETE, "/room_keys/keys/{roomId}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_keys_delete),
    CLIENT(DELETE, "/room_keys/keys/{roomId}/{sessionId}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_backup_keys_delete),

    /* beside a homeserver: passed through it, with mxkeys' one-time key counts */
    CLIENT(GET, "/sync", MX_ROUTE_USER, MX_BODY_NONE, mx_api_sync),
    ROOT(POST, "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", MX_ROUTE_USER, MX_BODY_NONE,
         mx_api_sliding_sync),

    /* beside a homeserver: the device lifecycle, forwarded, with mxkeys' part done before the answer */
    CLIENT(GET, "/login", MX_ROUTE_PUBLIC, MX_BODY_NONE, mx_api_login_flows),
    CLIENT(POST, "/login", MX_ROUTE_PUBLIC, MX_BODY_OBJECT, mx_api_login),
    CLIENT(POST, "/logout", MX_ROUTE_USER, MX_BODY_NONE, mx_api_logout),
    CLIENT(POST, "/logout/all", MX_ROUTE_USER, MX_BODY_NONE, mx_api_logout_all),
    CLIENT(GET, "/devices", MX_ROUTE_USER, MX_BODY_NONE, mx_api_devices_list),
    CLIENT(GET, "/devices/{deviceId}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_device_get),
    CLIENT(PUT, "/devices/{deviceId}", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_device_update),
    CLIENT(DELETE, "/devices/{deviceId}", MX_ROUTE_USER, MX_BODY_NONE, mx_api_device_delete),
    CLIENT(POST, "/delete_devices", MX_ROUTE_USER, MX_BODY_OBJECT, mx_api_delete_devices),
    CLIENT(POST, "/account/deactivate", MX_ROUTE_USER, MX_BODY_NONE, mx_api_account_deactivate),

    /* federation: other servers claiming our users' one-time keys */
    ROOT(POST, "/_matrix/federation/v1/user/keys/claim", MX_ROUTE_SERVER, MX_BODY_OBJECT, mx_api_federation_claim),
    ROOT(POST, "/_matrix/federation/unstable/user/keys/claim", MX_ROUTE_PUBLIC, MX_BODY_NONE,
         mx_api_federation_claim_unstable),

    /* homeserver integration */
    ROOT(DELETE, "/_mxkeys/admin/v1/users/{userId}/devices/{deviceId}", MX_ROUTE_ADMIN, MX_BODY_NONE,
         mx_api_admin_delete_device),
    ROOT(DELETE, "/_mxkeys/admin/v1/users/{userId}", MX_ROUTE_ADMIN, MX_BODY_NONE, mx_api_admin_delete_user),
    ROOT(POST, "/_mxkeys/admin/v1/users/{userId}/allow_cross_signing_replacement", MX_ROUTE_ADMIN, MX_BODY_OPTIONAL,
         mx_api_admin_allow_xsign_replacement),
};
const size_t mx_nroutes = sizeof(mx_routes) / sizeof(mx_routes[0]);
