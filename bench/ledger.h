/* The write ledger (--ledger FILE): one line per acknowledged write and per key handed out, so that a checker
 * (bench/soak_check.py) can prove afterwards that nothing acknowledged was lost and no one-time key went out twice.
 * Tab-separated lines, written whole under a lock:
 *   U <user> <device> <algorithm:key_id>        a one-time key of an upload that answered 200
 *   C <user> <device> <algorithm:key_id> <0|1>  a key a claim that answered 200 handed out (1: the fallback key)
 *   B <user> <version> <room> <session> <first_message_index>   a backup session of a PUT that answered 200 */
#ifndef MXKEYS_BENCH_LEDGER_H
#define MXKEYS_BENCH_LEDGER_H

#include <stddef.h>
#include "options.h"

typedef struct st_bench_ledger_t bench_ledger_t;

/** Opens (truncates) `path`. NULL with a reason in `err` on failure. */
bench_ledger_t *bench_ledger_open(const char *path, char *err, size_t errlen);
/**
 * Records an answer that passed the scenario's check. `request` is the whole HTTP request sent (headers and body),
 * `user_id` the user whose token sent it (a backup PUT's body does not name it).
 */
void bench_ledger_record(bench_ledger_t *l, bench_scenario_t sc, const char *user_id, const char *request,
                         size_t request_len, const char *response, size_t response_len);
/** Flushes and closes; returns -1 when a write failed at any point. */
int bench_ledger_close(bench_ledger_t *l);

#endif
