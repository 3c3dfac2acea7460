/* mxkeysd: parse the command line, then either run a CLI subcommand or serve: database (embedded or given),
 * migrations, workers, and a graceful stop on SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "mxkeys/cli.h"
#include "mxkeys/db_sync.h"
#include "mxkeys/embedded_pg.h"
#include "mxkeys/log.h"
#include "mxkeys/migrate.h"
#include "mxkeys/routes.h"
#include "mxkeys/server.h"

static mx_server_t server;

static void on_stop_signal(int sig)
{
    (void)sig;
    mx_server_stop(&server);
}

static int install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    /* Writes to a vanished client must fail with EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int migrate_database(const char *conninfo)
{
    char err[512];
    PGconn *conn = mx_db_connect_blocking(conninfo, MX_DB_WRITABLE, 15000, err, sizeof(err));
    if (conn == NULL) {
        mx_error("database: %s", err);
        return -1;
    }
    int applied = mx_migrate(conn, MX_MIGRATE_ALL, err, sizeof(err));
    PQfinish(conn);
    if (applied < 0) {
        mx_error("migrations: %s", err);
        return -1;
    }
    return 0;
}

static int serve(const mx_config_t *cfg)
{
    /* The embedded cluster's conninfo is built here; --database-url is used as given (a multi-host conninfo can be
     * long: never truncate it). */
    char err[512], embedded_conninfo[1024];
    const char *conninfo = cfg->database_url;
    if (mx_server_listen(&server, cfg, err, sizeof(err)) != 0) {
        mx_error("%s", err);
        return 1;
    }
    mx_embedded_pg_t *pg = NULL;
    if (cfg->database_url == NULL) {
        pg = mx_embedded_pg_start(cfg->state_dir, MX_EMBEDDED_OWNER, embedded_conninfo, sizeof(embedded_conninfo), err,
                                  sizeof(err));
        if (pg == NULL) {
            mx_error("embedded database: %s", err);
            return 1;
        }
        conninfo = embedded_conninfo;
    }
    int status = 1;
    if (migrate_database(conninfo) == 0 && install_signals() == 0) {
        char ready[1024];
        if (cfg->auth_mode == MX_AUTH_LOCAL)
            snprintf(ready, sizeof(ready),
                     "ready: http://%s:%u (mint a token: mxkeysd token create --user @alice:%s --device DEV%s%s)",
                     cfg->listen_host, cfg->listen_port, cfg->server_name, cfg->database_url ? "" : " --state-dir ",
                     cfg->database_url ? "" : cfg->state_dir);
        else
            snprintf(ready, sizeof(ready), "ready: http://%s:%u (tokens are checked with %s)", cfg->listen_host,
                     cfg->listen_port, cfg->homeserver_url);
        server.ready_line = ready;
        server.routes = mx_routes;
        server.nroutes = mx_nroutes;
        status = mx_server_run(&server, conninfo) == 0 ? 0 : 1;
        mx_info("stopped");
    }
    if (pg != NULL)
        mx_embedded_pg_stop(pg);
    return status;
}

int main(int argc, char **argv, char **envp)
{
    static mx_cli_t cli;
    char err[512];
    if (mx_cli_parse(&cli, argc, argv, envp, err, sizeof(err)) != 0) {
        fprintf(stderr, "mxkeysd: %s\n", err);
        return 2;
    }
    mx_log_set_level(cli.config.log_level);
    if (sodium_init() < 0) {
        fprintf(stderr, "mxkeysd: libsodium failed to initialise\n");
        return 1;
    }
    int status;
    switch (cli.command) {
    case MX_CMD_HELP:
        mx_cli_usage(stdout);
        status = 0;
        break;
    case MX_CMD_VERSION:
        printf("mxkeysd %s\n", MXKEYS_VERSION);
        status = 0;
        break;
    case MX_CMD_MIGRATE:
        status = mx_cli_migrate(&cli.config);
        break;
    case MX_CMD_TOKEN_CREATE:
        status = mx_cli_token_create(&cli.config, cli.token_user, cli.token_device);
        break;
    case MX_CMD_TOKEN_REVOKE:
        status = mx_cli_token_revoke(&cli.config, cli.token_value);
        break;
    case MX_CMD_IMPORT_SYNAPSE: {
        mx_import_opts_t opts = {cli.import_from, cli.import_users, cli.import_dry_run, cli.import_verify,
                                 cli.import_invalid != NULL && strcmp(cli.import_invalid, "skip") == 0
                                     ? MX_IMPORT_INVALID_SKIP
                                     : MX_IMPORT_INVALID_IMPORT};
        status = mx_cli_import_synapse(&cli.config, &opts);
        break;
    }
    case MX_CMD_SERVE:
    default:
        status = serve(&cli.config);
        break;
    }
    mx_config_free(&cli.config);
    return status;
}
