/* Command-line options of mxkeys-bench and the scenario names they refer to. */
#ifndef MXKEYS_BENCH_OPTIONS_H
#define MXKEYS_BENCH_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum en_bench_scenario_t {
    SC_UPLOAD,
    SC_QUERY,
    SC_CLAIM,
    SC_CHANGES,
    SC_BACKUP_PUT,
    SC_BACKUP_GET,
    SC_CROSS_SIGN,
    SC_COUNT,
} bench_scenario_t;

/** The scenario's name as the command line and the reports spell it. */
const char *bench_scenario_name(bench_scenario_t sc);

typedef struct st_bench_options_t {
    const char *url;
    const char *mint_command; /* template with {user} and {device} */
    const char *tokens_file;  /* JSON list of {user_id, device_id, access_token} */
    const char *state_file;   /* population saved by an earlier run: set-up is skipped */
    const char *server_name;  /* user ids are @<prefix>-<n>:<server_name> when minting */
    const char *user_prefix;
    unsigned weights[SC_COUNT]; /* scenario mix; a single scenario has weight 1 */
    char scenario_text[256];

    unsigned concurrency; /* closed loop: requests in flight */
    double rate;          /* open loop: requests per second (0: closed loop) */
    unsigned connections; /* open loop: connections to spread the arrivals over */
    double duration_s, warmup_s, timeout_s;
    uint64_t max_requests;
    unsigned threads, setup_threads;

    unsigned users, devices, otks, query_users, claim_devices;
    unsigned upload_otks, upload_pool, otk_cap;
    unsigned sessions, backup_sessions, blob_pool;

    const char *json_out, *csv_out, *plot_prefix, *pgbench_out, *ledger_out;
    bool check, setup_only, progress;
    bool implicit_mix; /* --setup-only without --scenario: prepare what can be prepared, skip what the server refuses */
    uint64_t seed;
} bench_options_t;

/**
 * Parses argv into `o` (defaults first). Returns 0 to run, 1 when --help was printed, -1 on a bad option with a
 * one-line reason in `err`.
 */
int bench_options_parse(bench_options_t *o, int argc, char **argv, char *err, size_t errlen);
/** Total weight of the mix. */
unsigned bench_options_weight(const bench_options_t *o);
/** Whether any backup scenario is in the mix. */
bool bench_options_wants_backup(const bench_options_t *o);

#endif
