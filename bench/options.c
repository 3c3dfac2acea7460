#include "options.h"
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

static const char *const names[SC_COUNT] = {"upload",     "query",      "claim",     "changes",
                                            "backup-put", "backup-get", "cross-sign"};

const char *bench_scenario_name(bench_scenario_t sc)
{
    return sc < SC_COUNT ? names[sc] : "?";
}

static int scenario_of(const char *s, size_t len)
{
    for (int i = 0; i < SC_COUNT; i++)
        if (strlen(names[i]) == len && strncmp(names[i], s, len) == 0)
            return i;
    return -1;
}

static const char usage[] =
    "usage: mxkeys-bench --url URL (--mint-command TEMPLATE | --tokens FILE | --state FILE) --scenario S [options]\n"
    "\n"
    "target and identities\n"
    "  --url URL              http://host:port of mxkeys or any Matrix homeserver\n"
    "  --mint-command TPL     shell command printing an access token; {user} and {device} are substituted,\n"
    "                         e.g. \"mxkeysd token create --user {user} --device {device} --state-dir DIR\"\n"
    "  --tokens FILE          JSON list of {user_id, device_id, access_token} (any homeserver)\n"
    "  --state FILE           load the population written by an earlier run (skips set-up); with --setup-only\n"
    "                         or when FILE does not exist yet, set up and write it\n"
    "  --server-name NAME     server part of minted user ids (default localhost)\n"
    "  --user-prefix P        local part prefix of minted user ids (default: random per run)\n"
    "\n"
    "load\n"
    "  --scenario S           upload|query|claim|changes|backup-put|backup-get|cross-sign, or\n"
    "                         mix:upload=1,query=4,claim=2,... (weights)\n"
    "  --concurrency N        closed loop: N requests in flight (default 16)\n"
    "  --rate R               open loop: R requests/s, latency from the scheduled send time\n"
    "  --connections N        open loop: connections (default 64)\n"
    "  --duration S           measured seconds (default 10)\n"
    "  --warmup S             seconds before measuring (default 2)\n"
    "  --timeout S            per-request timeout (default 30)\n"
    "  --max-requests N       stop after N requests even if time is left (default 100000000)\n"
    "  --threads N            load threads (default: number of cores)\n"
    "\n"
    "population (set-up phase, not measured)\n"
    "  --users U              users (default 50)\n"
    "  --devices D            devices per user (default 5)\n"
    "  --otks N               signed one-time keys uploaded per device (default 100)\n"
    "  --query-users N        users per /keys/query (default 10, all their devices)\n"
    "  --claim-devices N      claim only from the first N devices: contention (default 0: all)\n"
    "  --upload-otks N        one-time keys per measured upload (default 50)\n"
    "  --upload-pool N        distinct upload bodies made in set-up; later uploads repeat them (default: enough\n"
    "                         for the whole run at --rate, or at 800 uploads/s; 200 with --tokens)\n"
    "  --otk-cap N            the server's cap on unclaimed one-time keys per device (default 500)\n"
    "  --sessions S           sessions per backup-put (default 100)\n"
    "  --backup-sessions B    sessions stored per user's backup, read by backup-get (default 1000)\n"
    "  --blob-pool N          distinct encrypted session_data blobs per user (default 8)\n"
    "  --setup-threads N      parallel set-up workers (default 8)\n"
    "  --setup-only           set up (and write --state), run no load\n"
    "\n"
    "output\n"
    "  --json FILE  --csv FILE  --plot PREFIX (PREFIX-timeline.png, PREFIX-cdf.png via gnuplot)\n"
    "  --ledger FILE  one line per acknowledged upload key, backup session and claimed key (bench/soak_check.py)\n"
    "  --pgbench-out DIR      write DIR/vars for bench/pgbench/*.sql (-D name=value per line)\n"
    "  --check                exit 1 when any unexpected error happened\n"
    "  --no-progress          no live progress line even on a terminal\n"
    "  --seed N               random seed (default: time)\n";

static int parse_mix(bench_options_t *o, const char *s, char *err, size_t errlen)
{
    memset(o->weights, 0, sizeof(o->weights));
    snprintf(o->scenario_text, sizeof(o->scenario_text), "%s", s);
    if (strncmp(s, "mix:", 4) != 0) {
        int sc = scenario_of(s, strlen(s));
        if (sc < 0) {
            snprintf(err, errlen, "unknown scenario %s", s);
            return -1;
        }
        o->weights[sc] = 1;
        return 0;
    }
    const char *p = s + 4;
    while (*p != '\0') {
        const char *comma = strchr(p, ','), *end = comma != NULL ? comma : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        int sc = scenario_of(p, eq != NULL ? (size_t)(eq - p) : (size_t)(end - p));
        if (sc < 0) {
            snprintf(err, errlen, "unknown scenario in mix: %.*s", (int)(end - p), p);
            return -1;
        }
        unsigned long w = 1;
        if (eq != NULL) {
            char *num_end;
            w = strtoul(eq + 1, &num_end, 10);
            if (num_end != end || w > 1000) {
                snprintf(err, errlen, "bad weight in mix: %.*s", (int)(end - p), p);
                return -1;
            }
        }
        o->weights[sc] = (unsigned)w;
        p = comma != NULL ? comma + 1 : end;
    }
    if (bench_options_weight(o) == 0) {
        snprintf(err, errlen, "the mix %s has no weight", s);
        return -1;
    }
    return 0;
}

static int num(const char *flag, const char *v, double min, double max, double *out, char *err, size_t errlen)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || d < min || d > max) {
        snprintf(err, errlen, "%s wants a number in [%g, %g], got %s", flag, min, max, v);
        return -1;
    }
    *out = d;
    return 0;
}

enum {
    O_URL = 256,
    O_MINT,
    O_TOKENS,
    O_STATE,
    O_SERVER,
    O_PREFIX,
    O_SCENARIO,
    O_CONC,
    O_RATE,
    O_CONNS,
    O_DURATION,
    O_WARMUP,
    O_TIMEOUT,
    O_MAXREQ,
    O_THREADS,
    O_USERS,
    O_DEVICES,
    O_OTKS,
    O_QUSERS,
    O_CLAIMDEV,
    O_UPOTKS,
    O_UPPOOL,
    O_OTKCAP,
    O_SESSIONS,
    O_BSESSIONS,
    O_BLOBS,
    O_SETUPTHREADS,
    O_SETUPONLY,
    O_JSON,
    O_LEDGER,
    O_CSV,
    O_PLOT,
    O_PGBENCH,
    O_CHECK,
    O_NOPROGRESS,
    O_SEED,
    O_HELP,
};

static const struct option longopts[] = {
    {"url", required_argument, NULL, O_URL},
    {"mint-command", required_argument, NULL, O_MINT},
    {"tokens", required_argument, NULL, O_TOKENS},
    {"state", required_argument, NULL, O_STATE},
    {"server-name", required_argument, NULL, O_SERVER},
    {"user-prefix", required_argument, NULL, O_PREFIX},
    {"scenario", required_argument, NULL, O_SCENARIO},
    {"concurrency", required_argument, NULL, O_CONC},
    {"rate", required_argument, NULL, O_RATE},
    {"connections", required_argument, NULL, O_CONNS},
    {"duration", required_argument, NULL, O_DURATION},
    {"warmup", required_argument, NULL, O_WARMUP},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"max-requests", required_argument, NULL, O_MAXREQ},
    {"threads", required_argument, NULL, O_THREADS},
    {"users", required_argument, NULL, O_USERS},
    {"devices", required_argument, NULL, O_DEVICES},
    {"otks", required_argument, NULL, O_OTKS},
    {"query-users", required_argument, NULL, O_QUSERS},
    {"claim-devices", required_argument, NULL, O_CLAIMDEV},
    {"upload-otks", required_argument, NULL, O_UPOTKS},
    {"upload-pool", required_argument, NULL, O_UPPOOL},
    {"otk-cap", required_argument, NULL, O_OTKCAP},
    {"sessions", required_argument, NULL, O_SESSIONS},
    {"backup-sessions", required_argument, NULL, O_BSESSIONS},
    {"blob-pool", required_argument, NULL, O_BLOBS},
    {"setup-threads", required_argument, NULL, O_SETUPTHREADS},
    {"setup-only", no_argument, NULL, O_SETUPONLY},
    {"json", required_argument, NULL, O_JSON},
    {"ledger", required_argument, NULL, O_LEDGER},
    {"csv", required_argument, NULL, O_CSV},
    {"plot", required_argument, NULL, O_PLOT},
    {"pgbench-out", required_argument, NULL, O_PGBENCH},
    {"check", no_argument, NULL, O_CHECK},
    {"no-progress", no_argument, NULL, O_NOPROGRESS},
    {"seed", required_argument, NULL, O_SEED},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static void defaults(bench_options_t *o)
{
    memset(o, 0, sizeof(*o));
    o->server_name = "localhost";
    o->concurrency = 16;
    o->connections = 64;
    o->duration_s = 10;
    o->warmup_s = 2;
    o->timeout_s = 30;
    o->max_requests = 100000000;
    int cores = get_nprocs();
    o->threads = cores > 0 ? (unsigned)cores : 1;
    o->setup_threads = 8;
    o->users = 50;
    o->devices = 5;
    o->otks = 100;
    o->query_users = 10;
    o->upload_otks = 50;
    o->upload_pool = 0; /* sized for the run once every option is read */
    o->otk_cap = 500;
    o->sessions = 100;
    o->backup_sessions = 1000;
    o->blob_pool = 8;
    o->progress = true;
}

/* Fresh upload bodies for the whole run (warm-up included): at --rate, or at a rate above what mxkeys answers on a
 * two-core machine (uploads verify every signature), times the upload share of the mix. A tokens file brings its
 * own upload devices, each good for --otk-cap / --upload-otks bodies: there the default stays small (the report
 * says when uploads repeated). */
#define UPLOAD_RATE_CEILING 800.0
#define UPLOAD_POOL_MIN 200u
static unsigned default_upload_pool(const bench_options_t *o)
{
    unsigned total = bench_options_weight(o);
    if (o->tokens_file != NULL || o->weights[SC_UPLOAD] == 0 || total == 0)
        return UPLOAD_POOL_MIN;
    double rate = o->rate > 0 ? o->rate : UPLOAD_RATE_CEILING;
    double n = rate * (o->duration_s + o->warmup_s) * o->weights[SC_UPLOAD] / total;
    if (n > 1e6)
        n = 1e6;
    return n > UPLOAD_POOL_MIN ? (unsigned)n + 1 : UPLOAD_POOL_MIN;
}

int bench_options_parse(bench_options_t *o, int argc, char **argv, char *err, size_t errlen)
{
    defaults(o);
    bool have_scenario = false;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        double d = 0;
        const char *flag = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (c) {
        case O_URL:
            o->url = optarg;
            break;
        case O_MINT:
            o->mint_command = optarg;
            break;
        case O_TOKENS:
            o->tokens_file = optarg;
            break;
        case O_STATE:
            o->state_file = optarg;
            break;
        case O_SERVER:
            o->server_name = optarg;
            break;
        case O_PREFIX:
            o->user_prefix = optarg;
            break;
        case O_SCENARIO:
            if (parse_mix(o, optarg, err, errlen) != 0)
                return -1;
            have_scenario = true;
            break;
        case O_JSON:
            o->json_out = optarg;
            break;
        case O_LEDGER:
            o->ledger_out = optarg;
            break;
        case O_CSV:
            o->csv_out = optarg;
            break;
        case O_PLOT:
            o->plot_prefix = optarg;
            break;
        case O_PGBENCH:
            o->pgbench_out = optarg;
            break;
        case O_CHECK:
            o->check = true;
            break;
        case O_SETUPONLY:
            o->setup_only = true;
            break;
        case O_NOPROGRESS:
            o->progress = false;
            break;
        case O_HELP:
            fputs(usage, stdout);
            return 1;
        case '?':
        case ':':
            snprintf(err, errlen, "unknown or incomplete option %s (see --help)", flag);
            return -1;
        default: {
            /* Every remaining option is a number with its own range. */
            static const struct {
                int id;
                double min, max;
            } ranges[] = {
                {O_CONC, 1, 100000},     {O_RATE, 0.1, 10000000},    {O_CONNS, 1, 100000},   {O_DURATION, 0.1, 86400},
                {O_WARMUP, 0, 3600},     {O_TIMEOUT, 0.1, 3600},     {O_MAXREQ, 1, 1e15},    {O_THREADS, 1, 1024},
                {O_USERS, 1, 1000000},   {O_DEVICES, 1, 1000},       {O_OTKS, 0, 100000},    {O_QUSERS, 1, 100000},
                {O_CLAIMDEV, 0, 1e9},    {O_UPOTKS, 1, 10000},       {O_UPPOOL, 1, 1000000}, {O_OTKCAP, 1, 10000000},
                {O_SESSIONS, 1, 100000}, {O_BSESSIONS, 0, 10000000}, {O_BLOBS, 1, 100000},   {O_SETUPTHREADS, 1, 256},
                {O_SEED, 0, 1e18},
            };
            size_t i = 0;
            while (i < sizeof(ranges) / sizeof(ranges[0]) && ranges[i].id != c)
                i++;
            if (i == sizeof(ranges) / sizeof(ranges[0]) ||
                num(flag, optarg, ranges[i].min, ranges[i].max, &d, err, errlen) != 0)
                return -1;
            switch (c) {
            case O_CONC:
                o->concurrency = (unsigned)d;
                break;
            case O_RATE:
                o->rate = d;
                break;
            case O_CONNS:
                o->connections = (unsigned)d;
                break;
            case O_DURATION:
                o->duration_s = d;
                break;
            case O_WARMUP:
                o->warmup_s = d;
                break;
            case O_TIMEOUT:
                o->timeout_s = d;
                break;
            case O_MAXREQ:
                o->max_requests = (uint64_t)d;
                break;
            case O_THREADS:
                o->threads = (unsigned)d;
                break;
            case O_USERS:
                o->users = (unsigned)d;
                break;
            case O_DEVICES:
                o->devices = (unsigned)d;
                break;
            case O_OTKS:
                o->otks = (unsigned)d;
                break;
            case O_QUSERS:
                o->query_users = (unsigned)d;
                break;
            case O_CLAIMDEV:
                o->claim_devices = (unsigned)d;
                break;
            case O_UPOTKS:
                o->upload_otks = (unsigned)d;
                break;
            case O_UPPOOL:
                o->upload_pool = (unsigned)d;
                break;
            case O_OTKCAP:
                o->otk_cap = (unsigned)d;
                break;
            case O_SESSIONS:
                o->sessions = (unsigned)d;
                break;
            case O_BSESSIONS:
                o->backup_sessions = (unsigned)d;
                break;
            case O_BLOBS:
                o->blob_pool = (unsigned)d;
                break;
            case O_SETUPTHREADS:
                o->setup_threads = (unsigned)d;
                break;
            case O_SEED:
                o->seed = (uint64_t)d;
                break;
            }
        }
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument %s (see --help)", argv[optind]);
        return -1;
    }
    if (o->url == NULL) {
        snprintf(err, errlen, "--url is required (see --help)");
        return -1;
    }
    int sources = (o->mint_command != NULL) + (o->tokens_file != NULL);
    if (sources > 1 || (sources == 0 && o->state_file == NULL)) {
        snprintf(err, errlen, "give exactly one of --mint-command and --tokens (or --state from an earlier run)");
        return -1;
    }
    if (!have_scenario) {
        if (!o->setup_only) {
            snprintf(err, errlen, "--scenario is required (see --help)");
            return -1;
        }
        /* Set-up alone prepares for every scenario. */
        for (int i = 0; i < SC_COUNT; i++)
            o->weights[i] = 1;
        snprintf(o->scenario_text, sizeof(o->scenario_text), "setup");
        o->implicit_mix = true;
    }
    if (o->weights[SC_UPLOAD] > 0 && o->upload_otks > o->otk_cap) {
        snprintf(err, errlen, "--upload-otks %u exceeds --otk-cap %u", o->upload_otks, o->otk_cap);
        return -1;
    }
    if (o->otks > o->otk_cap) {
        snprintf(err, errlen, "--otks %u exceeds --otk-cap %u", o->otks, o->otk_cap);
        return -1;
    }
    if (o->query_users > o->users)
        o->query_users = o->users;
    if (o->upload_pool == 0)
        o->upload_pool = default_upload_pool(o);
    if (o->setup_only && o->state_file == NULL && o->pgbench_out == NULL) {
        snprintf(err, errlen, "--setup-only needs --state (or --pgbench-out) to keep what it set up");
        return -1;
    }
    return 0;
}

unsigned bench_options_weight(const bench_options_t *o)
{
    unsigned w = 0;
    for (int i = 0; i < SC_COUNT; i++)
        w += o->weights[i];
    return w;
}

bool bench_options_wants_backup(const bench_options_t *o)
{
    return o->weights[SC_BACKUP_PUT] > 0 || o->weights[SC_BACKUP_GET] > 0;
}
