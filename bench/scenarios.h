/* What each scenario sends and what it accepts as an answer. Building a request is cheap on purpose (payloads are
 * made in set-up), so the load threads spend their time on I/O, not on crypto the server is being measured on. */
#ifndef MXKEYS_BENCH_SCENARIOS_H
#define MXKEYS_BENCH_SCENARIOS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "http.h"
#include "options.h"
#include "population.h"

#define BENCH_NOTES 3 /* answer kinds counted per scenario (e.g. claim: one-time / fallback / nothing) */
#define BENCH_NOTE_XSIGN_DEVICE 0
#define BENCH_NOTE_XSIGN_USER 1

typedef struct st_bench_ctx_t {
    const bench_options_t *opts;
    const bench_target_t *target;
    bench_population_t *pop;
    /* upload: bodies made in set-up, handed out in order; past the end they repeat (identical re-uploads) */
    char **upload_bodies;
    size_t *upload_lens, *upload_device, nupload_bodies;
    _Atomic uint64_t upload_next;
    /* backup: session ids 0..space-1 in rooms of ROOM_SESSIONS; a per-user cursor walks windows of --sessions */
    char **session_ids;
    size_t session_space;
    _Atomic uint64_t *backup_window; /* per user */
    _Atomic int64_t next_index;      /* first_message_index, decreasing: every write beats what is stored */
    size_t claim_targets;
    /* claim: one-time keys the claimed devices still hold after the run (bench_setup_claim_stock) */
    bool claim_stock_known;
    size_t claim_dry;         /* devices with none left */
    size_t claim_held;        /* devices that still hold some */
    uint64_t claim_keys_held; /* how many, over those devices */
    /* cross-sign: /keys/signatures/upload bodies made in set-up (signatures are deterministic, so each is reusable) */
    char **xsign_bodies;
    size_t *xsign_lens, *xsign_device, nxsign; /* xsign_device: the signer's device whose token sends it */
    int *xsign_kind;                           /* a note: a self-signed own device, or another user's master key */
    struct st_bench_ledger_t *ledger;          /* --ledger: acknowledged writes and handed-out keys, or NULL */
} bench_ctx_t;

/** Fills the parts of `ctx` the scenarios share (session ids, cursors). The caller sets opts/target/pop first. */
int bench_ctx_init(bench_ctx_t *ctx, char *err, size_t errlen) __attribute__((warn_unused_result));
void bench_ctx_free(bench_ctx_t *ctx);
/** Room id of backup session `i` (same for every user). */
void bench_room_id(size_t i, char *out, size_t outlen);
/** Appends {"rooms": ...} for sessions [from, to) of user `u`, each with first_message_index `index`. */
void bench_backup_body(const bench_ctx_t *ctx, size_t u, size_t from, size_t to, int64_t index, mx_buf_t *out);
/* first_message_index values: a 32-bit range, falling with the clock from the backups' creation (bench_index_start). */
#define BENCH_INDEX_TOP 2147483647LL
#define BENCH_INDEX_PER_SECOND 5000LL
/* Below this the backups are too old to go on lowering indexes (about 4.9 days after their creation). */
#define BENCH_INDEX_FLOOR 10000000LL
/**
 * A starting first_message_index lower than any an earlier process wrote to backups created at `backup_epoch` (unix
 * seconds; 0: created now). Below BENCH_INDEX_FLOOR when the backups are too old for that.
 */
int64_t bench_index_start(int64_t backup_epoch);

/** xorshift64*: one generator per thread. */
uint64_t bench_rand(uint64_t *state);

/** Picks a scenario from the mix. */
bench_scenario_t bench_pick(const bench_options_t *o, uint64_t *rng);
/**
 * Appends one complete HTTP request for `sc` to `req` (using `scratch` for the body). `*note` may be set at build
 * time (upload: fresh or repeated body); -1 otherwise. `*user_id` is set to the sending user where the ledger needs
 * it (a backup PUT), NULL otherwise.
 */
void bench_scenario_build(bench_ctx_t *ctx, bench_scenario_t sc, uint64_t *rng, mx_buf_t *req, mx_buf_t *scratch,
                          int *note, const char **user_id);
/**
 * Judges an answer. Returns 0 when it is what the scenario expects (and may set `*note`), or -1 with a short key
 * for the error table ("500 M_UNKNOWN", "200 without one_time_keys") in `key` and the start of the body in `detail`.
 */
int bench_scenario_check(bench_scenario_t sc, int status, const char *body, size_t len, int *note, char *key,
                         size_t keylen, char *detail, size_t detaillen);
/** Name of answer kind `note` of `sc`, or NULL when the scenario has no such kind. */
const char *bench_note_name(bench_scenario_t sc, int note);

#endif
