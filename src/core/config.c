/* Command line and environment: one table of settings drives parsing, the environment fallback and --help, so the
 * three can never disagree. Values are checked here, at start-up, so a bad one stops mxkeysd with a one-line reason
 * instead of surfacing later as an odd failure. */
#include "mxkeys/config.h"
#include "mxkeys/matrix_ids.h"
#include "mxkeys/reason.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_LISTEN_HOST "127.0.0.1"
#define DEFAULT_LISTEN_PORT 8088
#define DEFAULT_SERVER_NAME "localhost"
#define DEFAULT_STATE_DIR "./var"

typedef enum en_setting_kind_t {
    KIND_LISTEN,
    KIND_SERVER_NAME,
    KIND_STRING,
    KIND_POSITIVE,    /* unsigned >= 1 */
    KIND_NONNEGATIVE, /* unsigned >= 0 */
    KIND_SIZE,        /* size_t >= 1 */
    KIND_SIZE_OR_OFF, /* size_t >= 0 (0: the feature is off) */
    KIND_AUTH,
    KIND_URL,
    KIND_LOG_LEVEL,
    KIND_VALIDATION,
    KIND_XSIGN,
} setting_kind_t;

typedef struct st_setting_t {
    const char *flag; /* without the leading "--" */
    setting_kind_t kind;
    size_t offset; /* of the field in mx_config_t */
    const char *default_text;
    const char *help;
} setting_t;

#define FIELD(f) offsetof(mx_config_t, f)
#define TOKEN_CACHE_UNSET UINT_MAX
#define DB_CONNECTIONS_UNSET 0
/* Measured (bench/README.md, "Database connections"): 4 per worker doubles claims at 16-64 clients over 1 and
 * leaves uploads, backup writes and queries where they were; more gained nothing. The cap keeps a many-core host
 * within PostgreSQL's default max_connections of 100 (and the embedded cluster's 200). */
#define DB_CONNECTIONS_PER_WORKER 4
#define DB_CONNECTIONS_TOTAL_CAP 64

static const setting_t settings[] = {
    {"listen", KIND_LISTEN, 0, "127.0.0.1:8088", "address to listen on: host:port or [v6]:port"},
    {"server-name", KIND_SERVER_NAME, FIELD(server_name), DEFAULT_SERVER_NAME,
     "Matrix server name the user ids belong to"},
    {"database-url", KIND_STRING, FIELD(database_url), "none: embedded cluster under --state-dir",
     "libpq conninfo or postgresql:// URI"},
    {"state-dir", KIND_STRING, FIELD(state_dir), DEFAULT_STATE_DIR, "directory for the embedded cluster and the lock"},
    {"workers", KIND_POSITIVE, FIELD(workers), "number of cores", "worker threads"},
    {"db-connections", KIND_POSITIVE, FIELD(db_connections), "4, at most 64 in all workers together",
     "database connections per worker (commits on one connection wait for each other's WAL flush)"},
    {"db-queue-depth", KIND_POSITIVE, FIELD(db_queue_depth), "1024", "queries queued per worker before answering 503"},
    {"db-timeout-ms", KIND_POSITIVE, FIELD(db_timeout_ms), "5000",
     "deadline of every database query and connect attempt; past it the request gets 503 and the connection is "
     "re-established (/_mxkeys/ready: at most 1000)"},
    {"query-cache-bytes", KIND_SIZE_OR_OFF, FIELD(query_cache_bytes), "67108864",
     "memory for /keys/query answers kept per process (device and cross-signing keys by user, least recently used "
     "dropped first); 0: every query reads the database"},
    {"query-cache-max-lag-ms", KIND_POSITIVE, FIELD(query_cache_max_lag_ms), "1000",
     "the cache answers only while its change feed (LISTEN) has proven live within this bound: the most a write "
     "made through another instance can stay unseen"},
    {"max-body-bytes", KIND_SIZE, FIELD(max_body_bytes), "1048576", "largest accepted request body"},
    {"max-keys-per-request", KIND_POSITIVE, FIELD(max_keys_per_request), "10000",
     "most map entries accepted in one request body"},
    {"max-otks-per-device", KIND_POSITIVE, FIELD(max_otks_per_device), "500",
     "most unclaimed one-time keys stored per device"},
    {"auth", KIND_AUTH, FIELD(auth_mode), "local", "local (tokens minted by `mxkeysd token create`) or homeserver"},
    {"homeserver-url", KIND_URL, FIELD(homeserver_url), "none",
     "http://host[:port][/prefix], required by --auth homeserver"},
    {"homeserver-federation-url", KIND_URL, FIELD(homeserver_federation_url), "--homeserver-url",
     "http://host[:port] of the homeserver's federation listener: the notary for other servers' keys when they "
     "claim one-time keys over federation"},
    {"federation-claims-per-minute", KIND_NONNEGATIVE, FIELD(federation_claims_per_minute), "600",
     "one-time keys one other server may claim per minute (0: no limit)"},
    {"homeserver-timeout-ms", KIND_POSITIVE, FIELD(homeserver_timeout_ms), "10000",
     "bound on one request forwarded to the homeserver (beyond a /sync long-poll's own timeout)"},
    {"token-cache-ms", KIND_NONNEGATIVE, FIELD(token_cache_ms), "60000 (local), 10000 (homeserver)",
     "how long a resolved token is cached: also how long a token revoked at the homeserver keeps working"},
    {"token-negative-ms", KIND_NONNEGATIVE, FIELD(token_negative_ms), "2000", "how long a failed look-up is cached"},
    {"admin-token", KIND_STRING, FIELD(admin_token), "none: admin API disabled", "bearer token for the admin API"},
    {"validation", KIND_VALIDATION, FIELD(validation), "strict", "strict or lenient checking of uploaded keys"},
    {"cross-signing-replacement", KIND_XSIGN, FIELD(xsign_replacement), "uia",
     "uia (replacing a master key needs auth) or allow"},
    {"cross-signing-replacement-window-ms", KIND_NONNEGATIVE, FIELD(xsign_replacement_window_ms), "600000",
     "how long a replacement granted through the admin API stays open"},
    {"log-level", KIND_LOG_LEVEL, FIELD(log_level), "info", "debug, info, warn or error"},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

void mx_config_defaults(mx_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen_host, sizeof(cfg->listen_host), "%s", DEFAULT_LISTEN_HOST);
    cfg->listen_port = DEFAULT_LISTEN_PORT;
    cfg->server_name = strdup(DEFAULT_SERVER_NAME);
    cfg->database_url = NULL;
    cfg->state_dir = strdup(DEFAULT_STATE_DIR);
    if (cfg->server_name == NULL || cfg->state_dir == NULL)
        abort();                                /* out of memory before anything started: nothing sensible to do */
    cfg->db_connections = DB_CONNECTIONS_UNSET; /* set after parsing, from the worker count */
    cfg->db_queue_depth = 1024;
    cfg->db_timeout_ms = 5000;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cores > 0 ? (unsigned)cores : 1;
    cfg->max_body_bytes = 1048576;
    cfg->query_cache_bytes = 64 << 20;
    cfg->query_cache_max_lag_ms = 1000;
    cfg->max_keys_per_request = 10000;
    cfg->max_otks_per_device = 500;
    cfg->auth_mode = MX_AUTH_LOCAL;
    cfg->homeserver_url = NULL;
    cfg->homeserver_timeout_ms = 10000;
    cfg->token_cache_ms = TOKEN_CACHE_UNSET; /* set after parsing, by auth mode */
    cfg->homeserver_federation_url = NULL;
    cfg->federation_claims_per_minute = 600;
    cfg->token_negative_ms = 2000;
    cfg->admin_token = NULL;
    cfg->validation = MX_VALIDATION_STRICT;
    cfg->xsign_replacement = MX_XSIGN_REPLACEMENT_UIA;
    cfg->xsign_replacement_window_ms = 600000;
    cfg->log_level = MX_LOG_INFO;
}

void mx_config_free(mx_config_t *cfg)
{
    free(cfg->server_name);
    free(cfg->database_url);
    free(cfg->state_dir);
    free(cfg->homeserver_url);
    free(cfg->homeserver_federation_url);
    free(cfg->admin_token);
    cfg->server_name = cfg->database_url = cfg->state_dir = cfg->homeserver_url = cfg->admin_token = NULL;
    cfg->homeserver_federation_url = NULL;
}

/* Decimal digits only: strtoul would accept " 7", "+7", "-1" (wrapping) and "0x10". */
static int parse_unsigned(const char *s, unsigned long long max, unsigned long long *out)
{
    if (*s == '\0')
        return -1;
    unsigned long long v = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
    unsigned long long v;
    if (parse_unsigned(s, 65535, &v) != 0 || v == 0)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

static int parse_listen(mx_config_t *cfg, const char *v)
{
    const char *host, *host_end, *colon;
    if (v[0] == '[') {
        host = v + 1;
        if ((host_end = strchr(host, ']')) == NULL || host_end[1] != ':')
            return -1;
        colon = host_end + 1;
    } else {
        host = v;
        if ((colon = strrchr(v, ':')) == NULL || memchr(v, ':', (size_t)(colon - v)) != NULL)
            return -1; /* a bare IPv6 address is ambiguous: it needs brackets */
        host_end = colon;
    }
    size_t hostlen = (size_t)(host_end - host);
    if (hostlen == 0 || hostlen >= sizeof(cfg->listen_host) || parse_port(colon + 1, &cfg->listen_port) != 0)
        return -1;
    memcpy(cfg->listen_host, host, hostlen);
    cfg->listen_host[hostlen] = '\0';
    return 0;
}

/* http://host[:port][/prefix]: whoami is called on the same event loop without TLS, so https is refused here. */
static int check_homeserver_url(const char *v)
{
    if (strncmp(v, "http://", 7) != 0)
        return -1;
    const char *host = v + 7, *p = host;
    if (*p == '[') {
        if ((p = strchr(p, ']')) == NULL || p == host + 1)
            return -1;
        p++;
    } else {
        while (*p != '\0' && *p != ':' && *p != '/') {
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
                return -1;
            p++;
        }
        if (p == host)
            return -1;
    }
    if (*p == ':') {
        const char *port = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        char buf[8];
        size_t n = (size_t)(p - port);
        uint16_t out;
        if (n == 0 || n >= sizeof(buf))
            return -1;
        memcpy(buf, port, n);
        buf[n] = '\0';
        if (parse_port(buf, &out) != 0)
            return -1;
    }
    if (*p != '\0' && *p != '/')
        return -1;
    for (; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || *p == '?' || *p == '#' || (unsigned char)*p >= 0x7f)
            return -1;
    return 0;
}

static int set_string(char **field, const char *v)
{
    char *copy = strdup(v);
    if (copy == NULL)
        return -1;
    free(*field);
    *field = copy;
    return 0;
}

/* Applies one value; `source` names it in the error ("--workers" or "MXKEYS_WORKERS"). */
static int apply(mx_config_t *cfg, const setting_t *s, const char *source, const char *v, char *err, size_t errlen)
{
    void *field = (char *)cfg + s->offset;
    unsigned long long n;
    switch (s->kind) {
    case KIND_LISTEN:
        if (parse_listen(cfg, v) != 0)
            return mx_fail(err, errlen, "%s: expected host:port or [v6]:port with a port in 1-65535, got \"%s\"",
                           source, v);
        return 0;
    case KIND_SERVER_NAME:
        if (!mx_server_name_valid(v))
            return mx_fail(err, errlen, "%s: expected a server name (host, IPv4 or [IPv6], optional :port), got \"%s\"",
                           source, v);
        return set_string(field, v) == 0 ? 0 : mx_fail(err, errlen, "%s: out of memory", source);
    case KIND_STRING:
        if (*v == '\0')
            return mx_fail(err, errlen, "%s: expected a non-empty value", source);
        return set_string(field, v) == 0 ? 0 : mx_fail(err, errlen, "%s: out of memory", source);
    case KIND_POSITIVE:
        if (parse_unsigned(v, UINT_MAX, &n) != 0 || n == 0)
            return mx_fail(err, errlen, "%s: expected a positive integer, got \"%s\"", source, v);
        *(unsigned *)field = (unsigned)n;
        return 0;
    case KIND_NONNEGATIVE:
        if (parse_unsigned(v, UINT_MAX, &n) != 0)
            return mx_fail(err, errlen, "%s: expected a non-negative integer, got \"%s\"", source, v);
        *(unsigned *)field = (unsigned)n;
        return 0;
    case KIND_SIZE:
        if (parse_unsigned(v, SIZE_MAX, &n) != 0 || n == 0)
            return mx_fail(err, errlen, "%s: expected a positive integer (bytes), got \"%s\"", source, v);
        *(size_t *)field = (size_t)n;
        return 0;
    case KIND_SIZE_OR_OFF:
        if (parse_unsigned(v, SIZE_MAX, &n) != 0)
            return mx_fail(err, errlen, "%s: expected a number of bytes (0: off), got \"%s\"", source, v);
        *(size_t *)field = (size_t)n;
        return 0;
    case KIND_AUTH:
        if (strcmp(v, "local") == 0)
            cfg->auth_mode = MX_AUTH_LOCAL;
        else if (strcmp(v, "homeserver") == 0)
            cfg->auth_mode = MX_AUTH_HOMESERVER;
        else
            return mx_fail(err, errlen, "%s: expected local or homeserver, got \"%s\"", source, v);
        return 0;
    case KIND_URL: {
        if (strncmp(v, "https://", 8) == 0)
            return mx_fail(err, errlen,
                           "%s: https is not supported (\"%s\"); give an http:// URL: the homeserver's plain-HTTP "
                           "listener or a local TLS-terminating proxy",
                           source, v);
        if (check_homeserver_url(v) != 0)
            return mx_fail(err, errlen, "%s: expected http://host[:port][/prefix], got \"%s\"", source, v);
        if (set_string(field, v) != 0)
            return mx_fail(err, errlen, "%s: out of memory", source);
        /* Paths are appended to it: "http://hs/" and "http://hs" must mean the same. */
        char *url = *(char **)field;
        size_t len = strlen(url);
        while (len > 7 && url[len - 1] == '/')
            url[--len] = '\0';
        return 0;
    }
    case KIND_LOG_LEVEL:
        if (mx_log_parse_level(v, &cfg->log_level) != 0)
            return mx_fail(err, errlen, "%s: expected debug, info, warn or error, got \"%s\"", source, v);
        return 0;
    case KIND_VALIDATION:
        if (strcmp(v, "strict") == 0)
            cfg->validation = MX_VALIDATION_STRICT;
        else if (strcmp(v, "lenient") == 0)
            cfg->validation = MX_VALIDATION_LENIENT;
        else
            return mx_fail(err, errlen, "%s: expected strict or lenient, got \"%s\"", source, v);
        return 0;
    case KIND_XSIGN:
        if (strcmp(v, "uia") == 0)
            cfg->xsign_replacement = MX_XSIGN_REPLACEMENT_UIA;
        else if (strcmp(v, "allow") == 0)
            cfg->xsign_replacement = MX_XSIGN_REPLACEMENT_ALLOW;
        else
            return mx_fail(err, errlen, "%s: expected uia or allow, got \"%s\"", source, v);
        return 0;
    }
    return mx_fail(err, errlen, "%s: unhandled setting", source);
}

static void env_name(const setting_t *s, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "MXKEYS_");
    for (const char *c = s->flag; *c != '\0' && n + 1 < outlen; c++)
        out[n++] = *c == '-' ? '_' : (char)toupper((unsigned char)*c);
    out[n] = '\0';
}

/* Unknown MXKEYS_* variables are ignored (deployment files may carry more than this binary knows); an empty value
 * counts as unset, as in systemd environment files with a placeholder line. */
static int apply_env(mx_config_t *cfg, char **envp, char *err, size_t errlen)
{
    if (envp == NULL)
        return 0;
    for (size_t i = 0; i < NSETTINGS; i++) {
        char name[64];
        env_name(&settings[i], name, sizeof(name));
        size_t namelen = strlen(name);
        const char *value = NULL;
        for (char **e = envp; *e != NULL; e++)
            if (strncmp(*e, name, namelen) == 0 && (*e)[namelen] == '=')
                value = *e + namelen + 1;
        if (value != NULL && *value != '\0' && apply(cfg, &settings[i], name, value, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int check_device_id(const char *v)
{
    size_t len = strlen(v);
    if (len == 0 || len > 255)
        return -1;
    for (const char *c = v; *c != '\0'; c++)
        if (*c < 0x21 || *c > 0x7e)
            return -1;
    return 0;
}

static const setting_t *find_setting(const char *name, size_t len)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strlen(settings[i].flag) == len && memcmp(settings[i].flag, name, len) == 0)
            return &settings[i];
    return NULL;
}

static int parse_args(mx_cli_t *cli, int argc, char **argv, int first, char *err, size_t errlen)
{
    const char *positional[2] = {NULL, NULL};
    int npositional = 0, only_positional = 0;
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (npositional == 2)
                return mx_fail(err, errlen, "unexpected argument \"%s\"", arg);
            positional[npositional++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = 1; /* lets a token that starts with '-' through */
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli->command = MX_CMD_HELP;
            return 0;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            cli->command = MX_CMD_VERSION;
            return 0;
        }
        if (arg[1] != '-')
            return mx_fail(err, errlen, "unknown flag %s (see mxkeysd --help)", arg);
        if (cli->command == MX_CMD_IMPORT_SYNAPSE && (strcmp(arg, "--dry-run") == 0 || strcmp(arg, "--verify") == 0)) {
            *(arg[2] == 'd' ? &cli->import_dry_run : &cli->import_verify) = true;
            continue;
        }
        const char *name = arg + 2, *eq = strchr(name, '='), *value;
        size_t namelen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        int is_token_flag = (cli->command == MX_CMD_TOKEN_CREATE) && ((namelen == 4 && memcmp(name, "user", 4) == 0) ||
                                                                      (namelen == 6 && memcmp(name, "device", 6) == 0));
        const char **import_flag = NULL;
        if (cli->command == MX_CMD_IMPORT_SYNAPSE) {
            if (namelen == 4 && memcmp(name, "from", 4) == 0)
                import_flag = &cli->import_from;
            else if (namelen == 5 && memcmp(name, "users", 5) == 0)
                import_flag = &cli->import_users;
            else if (namelen == 12 && memcmp(name, "invalid-keys", 12) == 0)
                import_flag = &cli->import_invalid;
            is_token_flag = import_flag != NULL;
        }
        const setting_t *s = is_token_flag ? NULL : find_setting(name, namelen);
        if (s == NULL && !is_token_flag)
            return mx_fail(err, errlen, "unknown flag --%.*s (see mxkeysd --help)", (int)namelen, name);
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return mx_fail(err, errlen, "--%.*s: expected a value", (int)namelen, name);
        }
        char source[64];
        snprintf(source, sizeof(source), "--%.*s", (int)namelen, name);
        if (is_token_flag) {
            if (*value == '\0')
                return mx_fail(err, errlen, "%s: expected a non-empty value", source);
            if (import_flag != NULL)
                *import_flag = value;
            else if (name[0] == 'u')
                cli->token_user = value;
            else
                cli->token_device = value;
        } else if (apply(&cli->config, s, source, value, err, errlen) != 0) {
            return -1;
        }
    }

    switch (cli->command) {
    case MX_CMD_TOKEN_CREATE:
        /* `token create @alice:example.org DEVICE` (positional) works too; flags win. */
        if (cli->token_user == NULL)
            cli->token_user = positional[0];
        else if (positional[0] != NULL)
            return mx_fail(err, errlen, "token create: user given twice (--user and \"%s\")", positional[0]);
        if (cli->token_device == NULL)
            cli->token_device = positional[1];
        else if (positional[1] != NULL)
            return mx_fail(err, errlen, "token create: device given twice (--device and \"%s\")", positional[1]);
        if (cli->token_user == NULL)
            return mx_fail(err, errlen, "token create: --user is required");
        if (cli->token_device == NULL)
            return mx_fail(err, errlen, "token create: --device is required");
        if (!mx_user_id_valid(cli->token_user))
            return mx_fail(err, errlen, "--user: expected a Matrix user id like @alice:example.org, got \"%s\"",
                           cli->token_user);
        if (check_device_id(cli->token_device) != 0)
            return mx_fail(err, errlen,
                           "--device: expected 1-255 printable ASCII characters without spaces, got \"%s\"",
                           cli->token_device);
        break;
    case MX_CMD_TOKEN_REVOKE:
        if (positional[0] == NULL)
            return mx_fail(err, errlen, "token revoke: expected the token to revoke");
        if (positional[1] != NULL)
            return mx_fail(err, errlen, "unexpected argument \"%s\"", positional[1]);
        cli->token_value = positional[0];
        break;
    case MX_CMD_IMPORT_SYNAPSE:
        if (positional[0] != NULL)
            return mx_fail(err, errlen, "unexpected argument \"%s\"", positional[0]);
        if (cli->import_from == NULL)
            return mx_fail(err, errlen, "import synapse: --from is required (the Synapse database's libpq URL)");
        if (cli->import_invalid != NULL && strcmp(cli->import_invalid, "import") != 0 &&
            strcmp(cli->import_invalid, "skip") != 0)
            return mx_fail(err, errlen, "--invalid-keys: expected import or skip, got \"%s\"", cli->import_invalid);
        if (cli->import_dry_run && cli->import_verify)
            return mx_fail(err, errlen,
                           "import synapse: --dry-run and --verify exclude each other (--verify writes nothing)");
        break;
    default:
        if (positional[0] != NULL)
            return mx_fail(err, errlen, "unexpected argument \"%s\"", positional[0]);
        break;
    }
    return 0;
}

int mx_cli_parse(mx_cli_t *cli, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    memset(cli, 0, sizeof(*cli));
    mx_config_defaults(&cli->config);
    cli->command = MX_CMD_SERVE;
    if (errlen > 0)
        err[0] = '\0';

    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        const char *cmd = argv[1];
        first = 2;
        if (strcmp(cmd, "serve") == 0) {
            cli->command = MX_CMD_SERVE;
        } else if (strcmp(cmd, "migrate") == 0) {
            cli->command = MX_CMD_MIGRATE;
        } else if (strcmp(cmd, "help") == 0) {
            cli->command = MX_CMD_HELP;
            return 0;
        } else if (strcmp(cmd, "version") == 0) {
            cli->command = MX_CMD_VERSION;
            return 0;
        } else if (strcmp(cmd, "token") == 0) {
            const char *sub = argc > 2 ? argv[2] : "";
            first = 3;
            if (strcmp(sub, "create") == 0)
                cli->command = MX_CMD_TOKEN_CREATE;
            else if (strcmp(sub, "revoke") == 0)
                cli->command = MX_CMD_TOKEN_REVOKE;
            else if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
                cli->command = MX_CMD_HELP;
                return 0;
            } else {
                mx_config_free(&cli->config);
                return mx_fail(err, errlen, "token: expected create or revoke, got \"%s\"", sub);
            }
        } else if (strcmp(cmd, "import") == 0) {
            const char *sub = argc > 2 ? argv[2] : "";
            first = 3;
            if (strcmp(sub, "synapse") != 0) {
                mx_config_free(&cli->config);
                return mx_fail(err, errlen, "import: expected synapse, got \"%s\"", sub);
            }
            cli->command = MX_CMD_IMPORT_SYNAPSE;
        } else {
            mx_config_free(&cli->config);
            return mx_fail(
                err, errlen,
                "unknown command \"%s\" (expected serve, migrate, token create, token revoke, import synapse)", cmd);
        }
    }

    /* Environment first, then flags over it. */
    if (apply_env(&cli->config, envp, err, errlen) != 0 || parse_args(cli, argc, argv, first, err, errlen) != 0)
        goto failed;
    if (cli->command == MX_CMD_HELP || cli->command == MX_CMD_VERSION)
        return 0;
    /* Beside a homeserver a token can also be revoked there, behind mxkeys' back: the cache is what bounds how long
     * such a token keeps working here, so it is shorter (each worker asks again every 10 s per active token). */
    if (cli->config.db_connections == DB_CONNECTIONS_UNSET) {
        unsigned share = DB_CONNECTIONS_TOTAL_CAP / cli->config.workers;
        cli->config.db_connections = share >= DB_CONNECTIONS_PER_WORKER ? DB_CONNECTIONS_PER_WORKER
                                     : share > 0                        ? share
                                                                        : 1;
    }
    if (cli->config.token_cache_ms == TOKEN_CACHE_UNSET)
        cli->config.token_cache_ms = cli->config.auth_mode == MX_AUTH_HOMESERVER ? 10000 : 60000;
    if (cli->config.auth_mode == MX_AUTH_HOMESERVER && cli->config.homeserver_url == NULL) {
        mx_fail(err, errlen, "--auth homeserver requires --homeserver-url (or MXKEYS_HOMESERVER_URL)");
        goto failed;
    }
    return 0;

failed:
    mx_config_free(&cli->config);
    return -1;
}

void mx_cli_usage(void *stream)
{
    FILE *out = stream;
    fprintf(out, "usage: mxkeysd [serve] [flags]           run the key server (the default)\n"
                 "       mxkeysd migrate [flags]           apply database migrations and exit\n"
                 "       mxkeysd token create --user @alice:example.org --device DEVICEID [flags]\n"
                 "                                         mint a local access token, printed on stdout\n"
                 "       mxkeysd token revoke TOKEN [flags] delete a local access token (exit 1 if unknown)\n"
                 "       mxkeysd import synapse --from SYNAPSE_DB_URL [--users REGEX] [--dry-run | --verify]\n"
                 "                              [--invalid-keys import|skip] [flags]\n"
                 "                                         copy a Synapse database's keys and backups (README)\n"
                 "       mxkeysd --help | --version\n"
                 "\n"
                 "Flags take --flag value or --flag=value; each also reads MXKEYS_<FLAG> from the environment\n"
                 "(upper case, '-' as '_'); a flag wins over its variable.\n\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        char env[64];
        env_name(&settings[i], env, sizeof(env));
        fprintf(out, "  --%s (%s)\n      %s [default: %s]\n", settings[i].flag, env, settings[i].help,
                settings[i].default_text);
    }
}
