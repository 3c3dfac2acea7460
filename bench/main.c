/* mxkeys-bench: a load generator for the Matrix key APIs of mxkeys or any homeserver. Order of a run: options, the
 * population (loaded from --state, or set up: tokens, keys, backups), payload pools, the measured load, the report.
 * Exit status: 0, 1 when --check saw an unexpected error, 2 when the run could not be made. */
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "engine.h"
#include "ledger.h"
#include "plot.h"
#include "report.h"
#include "setup.h"

static void on_signal(int sig)
{
    (void)sig;
    bench_engine_interrupt();
}

static int fail(const char *what, const char *err)
{
    fprintf(stderr, "mxkeys-bench: %s%s%s\n", what, what[0] && err[0] ? ": " : "", err);
    return 2;
}

/* Builds or loads the population; `loaded` tells whether set-up can be skipped. */
static int population(const bench_options_t *o, bench_population_t *pop, bool *loaded, char *err, size_t errlen)
{
    *loaded = false;
    if (o->state_file != NULL && !o->setup_only && access(o->state_file, F_OK) == 0) {
        if (bench_population_load(pop, o->state_file, err, errlen) != 0)
            return -1;
        *loaded = true;
        if (o->tokens_file != NULL && o->weights[SC_UPLOAD] > 0) {
            /* The tokens file still supplies the upload devices: its last entries. */
            bench_population_t t;
            if (bench_population_tokens(&t, o->tokens_file, bench_setup_upload_devices(o), err, errlen) != 0)
                return -1;
            pop->upload = t.upload;
            pop->nupload = t.nupload;
            t.upload = NULL;
            t.nupload = 0;
            bench_population_free(&t);
        }
        return 0;
    }
    if (o->tokens_file != NULL)
        /* Upload devices are never part of a saved state: set-up alone keeps every entry for the population. */
        return bench_population_tokens(pop, o->tokens_file,
                                       o->weights[SC_UPLOAD] > 0 && !o->setup_only ? bench_setup_upload_devices(o) : 0,
                                       err, errlen);
    if (o->mint_command == NULL) {
        snprintf(err, errlen, "%s does not exist: set up first (with --mint-command or --tokens)", o->state_file);
        return -1;
    }
    char prefix[64];
    if (o->user_prefix != NULL) {
        snprintf(prefix, sizeof(prefix), "%s", o->user_prefix);
    } else {
        /* A fresh prefix per set-up: runs against a long-lived server never collide with earlier users. */
        uint8_t r[4];
        randombytes_buf(r, sizeof(r));
        snprintf(prefix, sizeof(prefix), "mxb%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
    }
    return bench_population_minted(pop, prefix, o->server_name, o->users, o->devices, err, errlen);
}

int main(int argc, char **argv)
{
    bench_options_t o;
    char err[1024] = "";
    int rc = bench_options_parse(&o, argc, argv, err, sizeof(err));
    if (rc != 0)
        return rc > 0 ? 0 : fail("", err);
    if (sodium_init() < 0)
        return fail("libsodium did not initialise", "");
    bench_target_t target;
    if (bench_target_parse(&target, o.url, err, sizeof(err)) != 0)
        return fail("", err);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    bool progress = o.progress && isatty(STDERR_FILENO);

    bench_population_t pop;
    bench_ctx_t ctx = {.opts = &o, .target = &target, .pop = &pop};
    bench_results_t res;
    memset(&res, 0, sizeof(res));
    bool loaded;
    int status = 2;
    if (population(&o, &pop, &loaded, err, sizeof(err)) != 0)
        return fail("population", err);
    if (!loaded) {
        pop.backup_sessions = bench_options_wants_backup(&o) ? o.backup_sessions : 0;
        pop.backup_epoch = (int64_t)time(NULL); /* set-up creates new backup versions: indexes start from the top */
    }
    if (bench_ctx_init(&ctx, err, sizeof(err)) != 0) {
        fail("", err);
        goto done;
    }
    if (!loaded) {
        if (bench_setup_population(&ctx, progress, err, sizeof(err)) != 0) {
            fail("", err);
            goto done;
        }
        if (o.state_file != NULL && bench_population_save(&pop, o.state_file, err, sizeof(err)) != 0) {
            fail("", err);
            goto done;
        }
    } else if (bench_options_wants_backup(&o) && bench_setup_blobs(&ctx, progress, err, sizeof(err)) != 0) {
        fail("", err);
        goto done;
    }
    if (o.pgbench_out != NULL && bench_setup_pgbench_vars(&ctx, o.pgbench_out, err, sizeof(err)) != 0) {
        fail("", err);
        goto done;
    }
    if (o.setup_only) {
        if (progress)
            fprintf(stderr, "[set-up] done: %zu users, %zu devices%s%s\n", pop.nusers, pop.ndevices,
                    o.state_file ? ", state in " : "", o.state_file ? o.state_file : "");
        status = 0;
        goto done;
    }
    if (o.weights[SC_CHANGES] > 0 && (pop.changes_from == NULL || pop.changes_to == NULL)) {
        fail("the changes scenario needs stream tokens, and the state has none", "");
        goto done;
    }
    if (o.weights[SC_CROSS_SIGN] > 0 && bench_setup_xsign(&ctx, err, sizeof(err)) != 0) {
        fail("", err);
        goto done;
    }
    if (o.weights[SC_UPLOAD] > 0 && bench_setup_upload(&ctx, progress, err, sizeof(err)) != 0) {
        fail("", err);
        goto done;
    }
    if (o.ledger_out != NULL && (ctx.ledger = bench_ledger_open(o.ledger_out, err, sizeof(err))) == NULL) {
        fail("", err);
        goto done;
    }
    int ran = bench_engine_run(&ctx, progress, &res, err, sizeof(err));
    int ledger_bad = bench_ledger_close(ctx.ledger) != 0;
    if (ledger_bad)
        fprintf(stderr, "mxkeys-bench: the ledger %s is incomplete\n", o.ledger_out);
    ctx.ledger = NULL;
    if (ran != 0) {
        fail("load", err);
        goto done;
    }
    /* Only when some claim got a fallback key: the count tells why (a few hundred small requests, after the run). */
    if (o.weights[SC_CLAIM] > 0 && res.sc[SC_CLAIM].notes[1] > 0 /* fallback answers */ &&
        bench_setup_claim_stock(&ctx, err, sizeof(err)) != 0)
        fprintf(stderr, "mxkeys-bench: %s\n", err);
    bench_report_print(stdout, &ctx, &res);
    fflush(stdout);
    status = ledger_bad ? 2 : o.check && res.unexpected > 0 ? 1 : 0;
    if (o.json_out != NULL && bench_report_json(o.json_out, &ctx, &res) != 0) {
        fprintf(stderr, "mxkeys-bench: cannot write %s\n", o.json_out);
        status = 2;
    }
    if (o.csv_out != NULL && bench_report_csv(o.csv_out, &ctx, &res) != 0) {
        fprintf(stderr, "mxkeys-bench: cannot write %s\n", o.csv_out);
        status = 2;
    }
    if (o.plot_prefix != NULL && bench_plot(o.plot_prefix, &ctx, &res) != 0)
        status = 2;
    if (o.check && res.unexpected > 0)
        fprintf(stderr, "mxkeys-bench: --check: %llu unexpected errors\n", (unsigned long long)res.unexpected);
done:
    bench_results_free(&res);
    bench_ctx_free(&ctx);
    bench_population_free(&pop);
    return status;
}
