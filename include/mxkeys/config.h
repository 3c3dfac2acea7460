/* Configuration: every setting is a command-line flag and an MXKEYS_* environment variable (flag wins). */
#ifndef MXKEYS_CONFIG_H
#define MXKEYS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mxkeys/log.h"

typedef enum en_mx_auth_mode_t { MX_AUTH_LOCAL, MX_AUTH_HOMESERVER } mx_auth_mode_t;
typedef enum en_mx_validation_t { MX_VALIDATION_STRICT, MX_VALIDATION_LENIENT } mx_validation_t;
typedef enum en_mx_xsign_replacement_t { MX_XSIGN_REPLACEMENT_UIA, MX_XSIGN_REPLACEMENT_ALLOW } mx_xsign_replacement_t;

typedef struct st_mx_config_t {
    /* network */
    char listen_host[256];
    uint16_t listen_port;
    char *server_name;
    /* database */
    char *database_url; /* NULL: embedded cluster under state_dir */
    char *state_dir;
    unsigned db_connections; /* per worker */
    unsigned db_queue_depth; /* in-flight queries per worker before 503 */
    unsigned db_timeout_ms;  /* deadline of every database job and connect attempt */
    /* /keys/query cache (include/mxkeys/query_cache.h) */
    size_t query_cache_bytes;        /* 0: off */
    unsigned query_cache_max_lag_ms; /* answers from memory only while the change feed is this fresh */
    /* workers and limits */
    unsigned workers;
    size_t max_body_bytes;
    unsigned max_keys_per_request; /* cap on map entries in one request body */
    unsigned max_otks_per_device;  /* unclaimed one-time keys stored per device */
    /* auth */
    mx_auth_mode_t auth_mode;
    char *homeserver_url;
    char *homeserver_federation_url;       /* the notary for federation requests; NULL: homeserver_url */
    unsigned federation_claims_per_minute; /* one-time keys per origin per minute (0: no limit) */
    unsigned homeserver_timeout_ms;        /* bound on a forwarded request, beyond a long-poll's own timeout */
    unsigned token_cache_ms;               /* positive cache TTL (local and homeserver modes) */
    unsigned token_negative_ms;            /* failure cache TTL */
    char *admin_token;                     /* NULL: admin API disabled */
    /* behaviour */
    mx_validation_t validation;
    mx_xsign_replacement_t xsign_replacement;
    unsigned xsign_replacement_window_ms;
    /* ops */
    mx_log_level_t log_level;
} mx_config_t;

typedef enum en_mx_command_t {
    MX_CMD_SERVE,
    MX_CMD_MIGRATE,
    MX_CMD_TOKEN_CREATE,
    MX_CMD_TOKEN_REVOKE,
    MX_CMD_IMPORT_SYNAPSE,
    MX_CMD_HELP,
    MX_CMD_VERSION
} mx_command_t;

typedef struct st_mx_cli_t {
    mx_command_t command;
    mx_config_t config;
    const char *token_user;   /* token create --user */
    const char *token_device; /* token create --device */
    const char *token_value;  /* token revoke TOKEN */
    /* import synapse */
    const char *import_from;    /* --from: the Synapse database */
    const char *import_users;   /* --users REGEX */
    const char *import_invalid; /* --invalid-keys import|skip */
    bool import_dry_run;        /* --dry-run */
    bool import_verify;         /* --verify */
} mx_cli_t;

/** Fills `cfg` with defaults. */
void mx_config_defaults(mx_config_t *cfg);
/**
 * Parses argv (subcommand, flags) over the environment (`envp`, may be NULL for none). On failure returns -1 and writes
 * a one-line reason into `err`; the caller exits with status 2.
 */
int mx_cli_parse(mx_cli_t *cli, int argc, char **argv, char **envp, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/** Writes the --help text. */
void mx_cli_usage(void *stream);
/** Frees strings owned by the config. */
void mx_config_free(mx_config_t *cfg);

#endif
