/* Endpoint handlers, one file per endpoint family in src/api/. Each reads like its spec section: parse -> validate
 * -> authorise -> one database round trip -> respond. The route table is src/api/routes.c. */
#ifndef MXKEYS_API_H
#define MXKEYS_API_H

#include "mxkeys/call.h"

/* ops.c: process and database health, Prometheus metrics */
void mx_api_health(mx_call_t *call);
void mx_api_ready(mx_call_t *call);
void mx_api_metrics(mx_call_t *call);
/* account.c: GET /account/whoami answered from the access token */
void mx_api_whoami(mx_call_t *call);

/* keys_*.c: device, one-time and fallback keys */
void mx_api_keys_upload(mx_call_t *call);
void mx_api_keys_query(mx_call_t *call);
void mx_api_keys_claim(mx_call_t *call);
void mx_api_keys_changes(mx_call_t *call);
void mx_api_stream_position(mx_call_t *call);
/** One user's device id -> algorithm map of a claim, checked; returns the number of devices or -1 after answering. */
long mx_keys_claim_check_devices(mx_call_t *call, const char *user, const json_t *devices);

/* federation_claim.c: other servers claiming our users' one-time keys (X-Matrix authenticated) */
void mx_api_federation_claim(mx_call_t *call);
void mx_api_federation_claim_unstable(mx_call_t *call);
/** Appends the federation figures to /metrics (nothing when federation is off). */
void mx_api_federation_metrics(const mx_server_t *server, mx_buf_t *out);

/* xsign.c: cross-signing */
void mx_api_device_signing_upload(mx_call_t *call);
void mx_api_signatures_upload(mx_call_t *call);

/* backup_versions.c */
void mx_api_backup_version_create(mx_call_t *call);
void mx_api_backup_version_get_current(mx_call_t *call);
void mx_api_backup_version_get(mx_call_t *call);
void mx_api_backup_version_update(mx_call_t *call);
void mx_api_backup_version_delete(mx_call_t *call);
/* backup_sessions.c: the three levels (all rooms, one room, one session) of PUT/GET/DELETE */
void mx_api_backup_keys_put(mx_call_t *call);
void mx_api_backup_keys_get(mx_call_t *call);
void mx_api_backup_keys_delete(mx_call_t *call);

/* sync.c: /sync and simplified sliding sync forwarded to the homeserver (--auth homeserver) */
void mx_api_sync(mx_call_t *call);
void mx_api_sliding_sync(mx_call_t *call);

/* devices.c: login, logout, device deletion and renames, deactivation, forwarded (--auth homeserver) */
void mx_api_login_flows(mx_call_t *call);
void mx_api_login(mx_call_t *call);
void mx_api_logout(mx_call_t *call);
void mx_api_logout_all(mx_call_t *call);
void mx_api_devices_list(mx_call_t *call);
void mx_api_device_get(mx_call_t *call);
void mx_api_device_update(mx_call_t *call);
void mx_api_device_delete(mx_call_t *call);
void mx_api_delete_devices(mx_call_t *call);
void mx_api_account_deactivate(mx_call_t *call);

/* admin.c: homeserver integration, admin token */
void mx_api_admin_delete_device(mx_call_t *call);
void mx_api_admin_delete_user(mx_call_t *call);
void mx_api_admin_allow_xsign_replacement(mx_call_t *call);

#endif
