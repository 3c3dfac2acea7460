/* The non-serving subcommands: migrate, token create, token revoke. Blocking; they run in place of the server. */
#ifndef MXKEYS_CLI_H
#define MXKEYS_CLI_H

#include "mxkeys/config.h"
#include "mxkeys/import.h"

/**
 * Resolves the database for a subcommand: --database-url as given, or the embedded cluster under --state-dir (the
 * running server's socket when it holds the state-dir lock, else started briefly). Each returns a process exit status.
 */
int mx_cli_migrate(const mx_config_t *cfg);
/** Prints a fresh access token for (user, device) on stdout and nothing else. */
int mx_cli_token_create(const mx_config_t *cfg, const char *user_id, const char *device_id);
/** Deletes the token; exit status 1 when no such token exists. */
int mx_cli_token_revoke(const mx_config_t *cfg, const char *token);
/** `import synapse`: the import (or --verify) into the resolved mxkeys database. */
int mx_cli_import_synapse(const mx_config_t *cfg, const mx_import_opts_t *opts);

#endif
