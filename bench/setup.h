/* The set-up phase, outside the measured window: tokens, real device keys and one-time keys, backup versions filled
 * with encrypted sessions, the pool of upload bodies, and the device-list stream tokens for /keys/changes. Work is
 * spread over --setup-threads blocking connections. */
#ifndef MXKEYS_BENCH_SETUP_H
#define MXKEYS_BENCH_SETUP_H

#include <stdbool.h>
#include "scenarios.h"

/** Mints or checks tokens, uploads keys, creates and fills backups (when wanted), takes stream tokens. */
int bench_setup_population(bench_ctx_t *ctx, bool progress, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/** Makes the per-user encrypted session_data blobs backup-put sends (users with a backup and no blobs yet). */
int bench_setup_blobs(bench_ctx_t *ctx, bool progress, char *err, size_t errlen) __attribute__((warn_unused_result));
/** Prepares the upload devices (minted per run, or the tokens file's last entries) and the upload bodies. */
int bench_setup_upload(bench_ctx_t *ctx, bool progress, char *err, size_t errlen) __attribute__((warn_unused_result));
/** Makes the cross-sign bodies: every user's self-signing key on each own device, and its user-signing key on a few
 * other users' master keys. */
int bench_setup_xsign(bench_ctx_t *ctx, char *err, size_t errlen) __attribute__((warn_unused_result));
/** Writes DIR/vars for the scripts in bench/pgbench: one name=value per line, for pgbench -D. */
int bench_setup_pgbench_vars(const bench_ctx_t *ctx, const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/** How many upload devices the options call for. */
size_t bench_setup_upload_devices(const bench_options_t *o);
/**
 * After a run with claims: asks every claimable device for its count of unclaimed one-time keys (an empty
 * /keys/upload) and fills ctx->claim_dry/claim_held/claim_keys_held, so the report can tell fallback answers given
 * because devices ran out from fallback answers given while keys were still there.
 */
int bench_setup_claim_stock(bench_ctx_t *ctx, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
