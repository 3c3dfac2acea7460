/* The subcommands that run instead of the server: migrate, token create, token revoke. Each resolves the database
 * the way serve does (--database-url, else the embedded cluster, shared with a running server), applies migrations
 * so a token can be minted before the first serve, does its one statement and exits. The token commands use one
 * table: they rewrite the function files only along with a migration (MX_MIGRATE_SCHEMA). Failures are one line on
 * stderr prefixed "mxkeysd: "; stdout carries only the token of `token create`. */
#include "mxkeys/cli.h"
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include "mxkeys/auth.h"
#include "mxkeys/db_sync.h"
#include "mxkeys/embedded_pg.h"
#include "mxkeys/import.h"
#include "mxkeys/log.h"
#include "mxkeys/migrate.h"

#define EMBEDDED_WAIT_MS 60000 /* a server that holds the lock may still be creating its cluster */
#define EXTERNAL_WAIT_MS 10000 /* a given database that is down: say so soon */
#define TOKEN_PREFIX "mxk_"
#define TOKEN_RANDOM_BYTES 32

typedef struct st_cli_db_t {
    mx_embedded_pg_t *pg;
    PGconn *conn;
} cli_db_t;

static int db_open(const mx_config_t *cfg, mx_migrate_scope_t scope, cli_db_t *db)
{
    char err[512], embedded_conninfo[4608];
    const char *conninfo = cfg->database_url; /* as given: never truncated */
    db->pg = NULL;
    db->conn = NULL;
    if (conninfo == NULL) {
        if ((db->pg = mx_embedded_pg_start(cfg->state_dir, MX_EMBEDDED_CLIENT, embedded_conninfo,
                                           sizeof(embedded_conninfo), err, sizeof(err))) == NULL) {
            fprintf(stderr, "mxkeysd: embedded database: %s\n", err);
            return -1;
        }
        conninfo = embedded_conninfo;
    }
    unsigned wait_ms = cfg->database_url != NULL ? EXTERNAL_WAIT_MS : EMBEDDED_WAIT_MS;
    if ((db->conn = mx_db_connect_blocking(conninfo, MX_DB_WRITABLE, wait_ms, err, sizeof(err))) == NULL) {
        fprintf(stderr, "mxkeysd: database: %s\n", err);
        goto failed;
    }
    if (mx_migrate(db->conn, scope, err, sizeof(err)) < 0) {
        fprintf(stderr, "mxkeysd: migrations: %s\n", err);
        goto failed;
    }
    return 0;

failed:
    PQfinish(db->conn);
    mx_embedded_pg_stop(db->pg);
    return -1;
}

static void db_close(cli_db_t *db)
{
    PQfinish(db->conn);
    mx_embedded_pg_stop(db->pg);
}

int mx_cli_migrate(const mx_config_t *cfg)
{
    cli_db_t db;
    if (db_open(cfg, MX_MIGRATE_ALL, &db) != 0)
        return 1;
    db_close(&db);
    return 0;
}

/* The parser has checked these already; repeated here because the functions are public and the check is cheap. */
static int valid_user_id(const char *s)
{
    const char *colon = s != NULL ? strchr(s, ':') : NULL;
    if (s == NULL || s[0] != '@' || colon == NULL || colon == s + 1 || colon[1] == '\0' || strlen(s) > 255)
        return 0;
    for (const char *c = s; *c != '\0'; c++)
        if (*c < 0x21 || *c > 0x7e)
            return 0;
    return 1;
}

static int valid_device_id(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 255)
        return 0;
    for (const char *c = s; *c != '\0'; c++)
        if (*c < 0x21 || *c > 0x7e)
            return 0;
    return 1;
}

int mx_cli_token_create(const mx_config_t *cfg, const char *user_id, const char *device_id)
{
    if (!valid_user_id(user_id)) {
        fprintf(stderr, "mxkeysd: --user: expected a Matrix user id like @alice:example.org\n");
        return 2;
    }
    if (!valid_device_id(device_id)) {
        fprintf(stderr, "mxkeysd: --device: expected 1-255 printable ASCII characters without spaces\n");
        return 2;
    }
    if (cfg->auth_mode != MX_AUTH_LOCAL)
        mx_warn("token create: --auth is homeserver; local tokens are only accepted with --auth local");

    /* 256 random bits, base64url without padding: nothing in it needs escaping in a header or a query string. */
    unsigned char raw[TOKEN_RANDOM_BYTES];
    char token[sizeof(TOKEN_PREFIX) +
               sodium_base64_ENCODED_LEN(TOKEN_RANDOM_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    char hash[65], err[512];
    randombytes_buf(raw, sizeof(raw));
    memcpy(token, TOKEN_PREFIX, sizeof(TOKEN_PREFIX) - 1);
    sodium_bin2base64(token + sizeof(TOKEN_PREFIX) - 1, sizeof(token) - (sizeof(TOKEN_PREFIX) - 1), raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
    mx_token_hash_hex(token, strlen(token), hash);

    cli_db_t db;
    if (db_open(cfg, MX_MIGRATE_SCHEMA, &db) != 0)
        return 1;
    const char *params[] = {user_id, device_id, hash};
    PGresult *res = mx_db_exec(db.conn,
                               "INSERT INTO access_tokens (user_id, device_id, token_hash) VALUES ($1, $2, "
                               "decode($3, 'hex'))",
                               3, params, err, sizeof(err));
    PQclear(res);
    db_close(&db);
    if (res == NULL) {
        fprintf(stderr, "mxkeysd: token create: %s\n", err);
        return 1;
    }
    mx_info("token create: minted a token for %s device %s", user_id, device_id);
    /* Printed only once it is stored: a token on stdout always works. */
    int ok = printf("%s\n", token) > 0 && fflush(stdout) == 0;
    sodium_memzero(token, sizeof(token));
    return ok ? 0 : 1;
}

int mx_cli_token_revoke(const mx_config_t *cfg, const char *token)
{
    if (token == NULL || token[0] == '\0') {
        fprintf(stderr, "mxkeysd: token revoke: expected the token to revoke\n");
        return 2;
    }
    char hash[65], err[512];
    mx_token_hash_hex(token, strlen(token), hash);
    cli_db_t db;
    if (db_open(cfg, MX_MIGRATE_SCHEMA, &db) != 0)
        return 1;
    const char *params[] = {hash};
    PGresult *res = mx_db_exec(db.conn, "DELETE FROM access_tokens WHERE token_hash = decode($1, 'hex')", 1, params,
                               err, sizeof(err));
    int status;
    if (res == NULL) {
        fprintf(stderr, "mxkeysd: token revoke: %s\n", err);
        status = 1;
    } else if (strcmp(PQcmdTuples(res), "0") == 0) {
        fprintf(stderr, "mxkeysd: token revoke: no such token\n");
        status = 1;
    } else {
        mx_info("token revoke: revoked");
        status = 0;
    }
    PQclear(res);
    db_close(&db);
    return status;
}

int mx_cli_import_synapse(const mx_config_t *cfg, const mx_import_opts_t *opts)
{
    cli_db_t db;
    if (db_open(cfg, MX_MIGRATE_ALL, &db) != 0)
        return 1;
    int status = mx_import_synapse(db.conn, cfg, opts);
    db_close(&db);
    return status;
}
