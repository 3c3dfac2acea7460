/* Command line and environment parsing: defaults, flag over env, both flag forms, subcommands, and a one-line reason
 * for every bad value. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "mxkeys/config.h"

static mx_cli_t cli;
static char err[512];

/* Parses a NULL-terminated argument list (argv[0] is added) over a NULL-terminated environment. */
static int parse_env(char **env, ...)
{
    char *argv[64] = {"mxkeysd"};
    int argc = 1;
    va_list ap;
    va_start(ap, env);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 63;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return mx_cli_parse(&cli, argc, argv, env, err, sizeof(err));
}

#define PARSE(...) parse_env(NULL, __VA_ARGS__, (char *)NULL)
#define PARSE_ENV(env, ...) parse_env(env, __VA_ARGS__, (char *)NULL)

/* A failure must come with a one-line reason that names the offending flag or variable. */
static void check_bad(const char *expect_in_reason, int rc)
{
    CHECK(rc == -1);
    CHECK(err[0] != '\0');
    CHECK(strchr(err, '\n') == NULL);
    if (strstr(err, expect_in_reason) == NULL) {
        fprintf(stderr, "  reason \"%s\" lacks \"%s\"\n", err, expect_in_reason);
        CHECK(0);
    }
    /* On failure nothing stays allocated: the config is already freed. */
    CHECK(cli.config.server_name == NULL && cli.config.state_dir == NULL);
}

static void test_defaults(void)
{
    char *argv[] = {"mxkeysd", NULL};
    CHECK(mx_cli_parse(&cli, 1, argv, NULL, err, sizeof(err)) == 0);
    const mx_config_t *c = &cli.config;
    CHECK(cli.command == MX_CMD_SERVE);
    CHECK_STREQ(c->listen_host, "127.0.0.1");
    CHECK(c->listen_port == 8088);
    CHECK_STREQ(c->server_name, "localhost");
    CHECK(c->database_url == NULL);
    CHECK_STREQ(c->state_dir, "./var");
    CHECK(c->workers >= 1);
    CHECK(c->db_connections == (c->workers <= 16 ? 4 : c->workers <= 64 ? 64 / c->workers : 1));
    CHECK(c->db_queue_depth == 1024);
    CHECK(c->max_body_bytes == 1048576);
    CHECK(c->max_keys_per_request == 10000);
    CHECK(c->max_otks_per_device == 500);
    CHECK(c->auth_mode == MX_AUTH_LOCAL);
    CHECK(c->homeserver_url == NULL);
    CHECK(c->token_cache_ms == 60000);
    CHECK(c->token_negative_ms == 2000);
    CHECK(c->admin_token == NULL);
    CHECK(c->validation == MX_VALIDATION_STRICT);
    CHECK(c->xsign_replacement == MX_XSIGN_REPLACEMENT_UIA);
    CHECK(c->xsign_replacement_window_ms == 600000);
    CHECK(c->log_level == MX_LOG_INFO);
    mx_config_free(&cli.config);
    mx_config_free(&cli.config); /* idempotent */
}

static void test_every_flag(void)
{
    CHECK(PARSE("serve", "--listen", "0.0.0.0:9000", "--server-name", "example.org:8448", "--database-url",
                "postgresql:///mx", "--state-dir", "/tmp/x", "--workers", "3", "--db-connections", "2",
                "--db-queue-depth", "17", "--max-body-bytes", "2048", "--max-keys-per-request", "5",
                "--max-otks-per-device", "6", "--auth", "homeserver", "--homeserver-url", "http://hs:8008/prefix/",
                "--token-cache-ms", "0", "--token-negative-ms", "7", "--admin-token", "secret", "--validation",
                "lenient", "--cross-signing-replacement", "allow", "--cross-signing-replacement-window-ms", "8",
                "--log-level", "debug") == 0);
    const mx_config_t *c = &cli.config;
    CHECK(cli.command == MX_CMD_SERVE);
    CHECK_STREQ(c->listen_host, "0.0.0.0");
    CHECK(c->listen_port == 9000);
    CHECK_STREQ(c->server_name, "example.org:8448");
    CHECK_STREQ(c->database_url, "postgresql:///mx");
    CHECK_STREQ(c->state_dir, "/tmp/x");
    CHECK(c->workers == 3);
    CHECK(c->db_connections == 2);
    CHECK(c->db_queue_depth == 17);
    CHECK(c->max_body_bytes == 2048);
    CHECK(c->max_keys_per_request == 5);
    CHECK(c->max_otks_per_device == 6);
    CHECK(c->auth_mode == MX_AUTH_HOMESERVER);
    CHECK_STREQ(c->homeserver_url, "http://hs:8008/prefix"); /* trailing slash dropped */
    CHECK(c->token_cache_ms == 0);
    CHECK(c->token_negative_ms == 7);
    CHECK_STREQ(c->admin_token, "secret");
    CHECK(c->validation == MX_VALIDATION_LENIENT);
    CHECK(c->xsign_replacement == MX_XSIGN_REPLACEMENT_ALLOW);
    CHECK(c->xsign_replacement_window_ms == 8);
    CHECK(c->log_level == MX_LOG_DEBUG);
    mx_config_free(&cli.config);
}

static void test_equals_form_and_listen(void)
{
    CHECK(PARSE("--listen=[::1]:8448", "--workers=4", "--admin-token=a=b") == 0);
    CHECK(cli.command == MX_CMD_SERVE);
    CHECK_STREQ(cli.config.listen_host, "::1");
    CHECK(cli.config.listen_port == 8448);
    CHECK(cli.config.workers == 4);
    CHECK_STREQ(cli.config.admin_token, "a=b"); /* only the first '=' splits */
    mx_config_free(&cli.config);

    CHECK(PARSE("--listen", "localhost:1") == 0);
    CHECK_STREQ(cli.config.listen_host, "localhost");
    CHECK(cli.config.listen_port == 1);
    mx_config_free(&cli.config);

    /* A repeated flag: the last one wins, and the earlier string is not leaked. */
    CHECK(PARSE("--state-dir", "a", "--state-dir=b") == 0);
    CHECK_STREQ(cli.config.state_dir, "b");
    mx_config_free(&cli.config);
}

static void test_env_and_precedence(void)
{
    char *env[] = {"PATH=/bin",
                   "MXKEYS_WORKERS=5",
                   "MXKEYS_LISTEN=127.0.0.1:7000",
                   "MXKEYS_DATABASE_URL=host=/tmp dbname=x",
                   "MXKEYS_ADMIN_TOKEN=envtoken",
                   "MXKEYS_CROSS_SIGNING_REPLACEMENT_WINDOW_MS=42",
                   "MXKEYS_LOG_LEVEL=warn",
                   "MXKEYS_UNKNOWN_THING=whatever", /* ignored */
                   "MXKEYS_STATE_DIR=",             /* empty counts as unset */
                   NULL};
    CHECK(PARSE_ENV(env, "--workers", "2") == 0);
    CHECK(cli.config.workers == 2); /* flag wins */
    CHECK(cli.config.listen_port == 7000);
    CHECK_STREQ(cli.config.database_url, "host=/tmp dbname=x");
    CHECK_STREQ(cli.config.admin_token, "envtoken");
    CHECK(cli.config.xsign_replacement_window_ms == 42);
    CHECK(cli.config.log_level == MX_LOG_WARN);
    CHECK_STREQ(cli.config.state_dir, "./var");
    mx_config_free(&cli.config);

    char *env_hs[] = {"MXKEYS_AUTH=homeserver", "MXKEYS_HOMESERVER_URL=http://[::1]:8008", NULL};
    CHECK(PARSE_ENV(env_hs, "migrate") == 0);
    CHECK(cli.command == MX_CMD_MIGRATE);
    CHECK(cli.config.auth_mode == MX_AUTH_HOMESERVER);
    CHECK_STREQ(cli.config.homeserver_url, "http://[::1]:8008");
    mx_config_free(&cli.config);

    /* A bad environment value is reported under its variable name, even if a flag would override it: the operator
     * should learn about a broken deployment file. */
    char *env_bad[] = {"MXKEYS_WORKERS=many", NULL};
    check_bad("MXKEYS_WORKERS: expected a positive integer, got \"many\"", PARSE_ENV(env_bad, "serve"));
}

static void test_subcommands(void)
{
    CHECK(PARSE("migrate", "--database-url", "x") == 0);
    CHECK(cli.command == MX_CMD_MIGRATE);
    mx_config_free(&cli.config);

    CHECK(PARSE("--help") == 0);
    CHECK(cli.command == MX_CMD_HELP);
    mx_config_free(&cli.config);
    CHECK(PARSE("serve", "--workers", "2", "-h") == 0);
    CHECK(cli.command == MX_CMD_HELP);
    mx_config_free(&cli.config);
    CHECK(PARSE("--version") == 0);
    CHECK(cli.command == MX_CMD_VERSION);
    mx_config_free(&cli.config);

    CHECK(PARSE("token", "create", "--user", "@alice:example.org", "--device", "ALICEDEV", "--state-dir", "/s") == 0);
    CHECK(cli.command == MX_CMD_TOKEN_CREATE);
    CHECK_STREQ(cli.token_user, "@alice:example.org");
    CHECK_STREQ(cli.token_device, "ALICEDEV");
    CHECK_STREQ(cli.config.state_dir, "/s");
    mx_config_free(&cli.config);

    CHECK(PARSE("token", "create", "--user=@bob:localhost:8448", "--device=D") == 0);
    CHECK_STREQ(cli.token_user, "@bob:localhost:8448");
    CHECK_STREQ(cli.token_device, "D");
    mx_config_free(&cli.config);

    CHECK(PARSE("token", "create", "@carol:[::1]", "CAROLDEV") == 0); /* positional form */
    CHECK_STREQ(cli.token_user, "@carol:[::1]");
    CHECK_STREQ(cli.token_device, "CAROLDEV");
    mx_config_free(&cli.config);

    CHECK(PARSE("token", "revoke", "mxk_abc", "--database-url=x") == 0);
    CHECK(cli.command == MX_CMD_TOKEN_REVOKE);
    CHECK_STREQ(cli.token_value, "mxk_abc");
    mx_config_free(&cli.config);

    CHECK(PARSE("token", "revoke", "--", "-starts-with-dash") == 0);
    CHECK_STREQ(cli.token_value, "-starts-with-dash");
    mx_config_free(&cli.config);
}

/* --db-connections left out: 4 per worker, at most 64 in all (and never 0). */
static void test_db_connections_default(void)
{
    static const struct {
        const char *workers;
        unsigned per_worker;
    } cases[] = {{"1", 4}, {"2", 4}, {"16", 4}, {"17", 3}, {"32", 2}, {"64", 1}, {"100", 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(PARSE("--workers", cases[i].workers) == 0);
        CHECK(cli.config.db_connections == cases[i].per_worker);
        mx_config_free(&cli.config);
    }
    CHECK(PARSE("--workers", "32", "--db-connections", "9") == 0);
    CHECK(cli.config.db_connections == 9); /* given: as given */
    mx_config_free(&cli.config);
}

static void test_bad_values(void)
{
    check_bad("--workers: expected a positive integer, got \"x\"", PARSE("--workers", "x"));
    check_bad("--workers: expected a positive integer, got \"0\"", PARSE("--workers=0"));
    check_bad("--workers: expected a positive integer, got \"-1\"", PARSE("--workers", "-1"));
    check_bad("--workers: expected a positive integer", PARSE("--workers", "99999999999"));
    check_bad("--workers: expected a positive integer", PARSE("--workers", " 3"));
    check_bad("--workers: expected a value", PARSE("--workers"));
    check_bad("--db-connections: expected a positive integer", PARSE("--db-connections", "0"));
    check_bad("--db-queue-depth: expected a positive integer", PARSE("--db-queue-depth", "1.5"));
    check_bad("--max-body-bytes: expected a positive integer", PARSE("--max-body-bytes", "1M"));
    check_bad("--max-keys-per-request: expected a positive integer", PARSE("--max-keys-per-request", "0"));
    check_bad("--max-otks-per-device: expected a positive integer", PARSE("--max-otks-per-device", ""));
    check_bad("--token-cache-ms: expected a non-negative integer", PARSE("--token-cache-ms", "-5"));
    check_bad("--token-negative-ms: expected a non-negative integer", PARSE("--token-negative-ms", "abc"));
    check_bad("--cross-signing-replacement-window-ms: expected a non-negative integer",
              PARSE("--cross-signing-replacement-window-ms=1e3"));
    check_bad("--listen: expected host:port", PARSE("--listen", "8088"));
    check_bad("--listen: expected host:port", PARSE("--listen", "127.0.0.1:0"));
    check_bad("--listen: expected host:port", PARSE("--listen", "127.0.0.1:65536"));
    check_bad("--listen: expected host:port", PARSE("--listen", "::1:8088"));
    check_bad("--listen: expected host:port", PARSE("--listen", "[::1]8088"));
    check_bad("--listen: expected host:port", PARSE("--listen", ":8088"));
    check_bad("--server-name: expected a server name", PARSE("--server-name", "bad name"));
    check_bad("--server-name: expected a server name", PARSE("--server-name", "example.org:x"));
    check_bad("--database-url: expected a non-empty value", PARSE("--database-url="));
    check_bad("--state-dir: expected a non-empty value", PARSE("--state-dir", ""));
    check_bad("--auth: expected local or homeserver, got \"ldap\"", PARSE("--auth", "ldap"));
    check_bad("--auth homeserver requires --homeserver-url", PARSE("--auth", "homeserver"));
    check_bad("--homeserver-url: https is not supported", PARSE("--homeserver-url", "https://hs"));
    check_bad("--homeserver-url: expected http://host[:port][/prefix]", PARSE("--homeserver-url", "ftp://hs"));
    check_bad("--homeserver-url: expected http://host[:port][/prefix]", PARSE("--homeserver-url", "http://"));
    check_bad("--homeserver-url: expected http://host[:port][/prefix]", PARSE("--homeserver-url", "http://hs:0"));
    check_bad("--homeserver-url: expected http://host[:port][/prefix]", PARSE("--homeserver-url", "http://hs?x=1"));
    check_bad("--log-level: expected debug, info, warn or error", PARSE("--log-level", "verbose"));
    check_bad("--validation: expected strict or lenient", PARSE("--validation", "loose"));
    check_bad("--cross-signing-replacement: expected uia or allow", PARSE("--cross-signing-replacement", "yes"));
    check_bad("unknown flag --nope", PARSE("--nope", "1"));
    check_bad("unknown flag --nope", PARSE("--nope=1"));
    check_bad("unknown flag -x", PARSE("-x"));
    check_bad("unknown command \"frobnicate\"", PARSE("frobnicate"));
    check_bad("unexpected argument \"extra\"", PARSE("serve", "extra"));
    check_bad("unknown flag --user", PARSE("serve", "--user", "@a:b"));
}

static void test_bad_token_commands(void)
{
    check_bad("token: expected create or revoke", PARSE("token"));
    check_bad("token: expected create or revoke, got \"list\"", PARSE("token", "list"));
    check_bad("token create: --user is required", PARSE("token", "create", "--device", "D"));
    check_bad("token create: --device is required", PARSE("token", "create", "--user", "@a:b"));
    check_bad("--user: expected a Matrix user id", PARSE("token", "create", "--user", "alice", "--device", "D"));
    check_bad("--user: expected a Matrix user id", PARSE("token", "create", "--user", "@alice", "--device", "D"));
    check_bad("--user: expected a Matrix user id",
              PARSE("token", "create", "--user", "@:example.org", "--device", "D"));
    check_bad("--user: expected a Matrix user id",
              PARSE("token", "create", "--user", "@al ice:example.org", "--device", "D"));
    check_bad("--user: expected a Matrix user id",
              PARSE("token", "create", "--user", "@alice:exa mple", "--device", "D"));
    check_bad("--user: expected a non-empty value", PARSE("token", "create", "--user=", "--device", "D"));
    check_bad("--device: expected", PARSE("token", "create", "--user", "@a:b", "--device", "has space"));
    check_bad("--device: expected", PARSE("token", "create", "--user", "@a:b", "--device", "tab\there"));
    char longdev[300];
    memset(longdev, 'D', sizeof(longdev) - 1);
    longdev[sizeof(longdev) - 1] = '\0';
    check_bad("--device: expected", PARSE("token", "create", "--user", "@a:b", "--device", longdev));
    check_bad("token revoke: expected the token", PARSE("token", "revoke"));
    check_bad("unexpected argument \"two\"", PARSE("token", "revoke", "one", "two"));
}

static void test_usage_lists_everything(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    mx_cli_usage(f);
    fclose(f);
    static const char *const expected[] = {
        "--listen (MXKEYS_LISTEN)",
        "127.0.0.1:8088",
        "--server-name (MXKEYS_SERVER_NAME)",
        "--database-url (MXKEYS_DATABASE_URL)",
        "--state-dir (MXKEYS_STATE_DIR)",
        "--workers (MXKEYS_WORKERS)",
        "--db-connections (MXKEYS_DB_CONNECTIONS)",
        "--db-queue-depth (MXKEYS_DB_QUEUE_DEPTH)",
        "--max-body-bytes (MXKEYS_MAX_BODY_BYTES)",
        "1048576",
        "--max-keys-per-request (MXKEYS_MAX_KEYS_PER_REQUEST)",
        "--max-otks-per-device (MXKEYS_MAX_OTKS_PER_DEVICE)",
        "--auth (MXKEYS_AUTH)",
        "--homeserver-url (MXKEYS_HOMESERVER_URL)",
        "--token-cache-ms (MXKEYS_TOKEN_CACHE_MS)",
        "--token-negative-ms (MXKEYS_TOKEN_NEGATIVE_MS)",
        "--admin-token (MXKEYS_ADMIN_TOKEN)",
        "--validation (MXKEYS_VALIDATION)",
        "--cross-signing-replacement (MXKEYS_CROSS_SIGNING_REPLACEMENT)",
        "--cross-signing-replacement-window-ms (MXKEYS_CROSS_SIGNING_REPLACEMENT_WINDOW_MS)",
        "--log-level (MXKEYS_LOG_LEVEL)",
        "token create",
        "token revoke",
        "migrate"};
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        if (strstr(text, expected[i]) == NULL) {
            fprintf(stderr, "  usage lacks \"%s\"\n", expected[i]);
            CHECK(0);
        }
    }
    free(text);
}

int main(void)
{
    test_defaults();
    test_every_flag();
    test_equals_form_and_listen();
    test_env_and_precedence();
    test_subcommands();
    test_db_connections_default();
    test_bad_values();
    test_bad_token_commands();
    test_usage_lists_everything();
    return check_finish("config");
}
