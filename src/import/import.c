/* `mxkeysd import synapse`: opens the Synapse snapshot, feeds it to the writer (or the verifier), moves mxkeys'
 * device-list stream past Synapse's position, prints the summary. */
#include <stdio.h>
#include "internal.h"
#include "mxkeys/log.h"

int mx_import_synapse(PGconn *mx, const mx_config_t *cfg, const mx_import_opts_t *opts)
{
    char err[1024];
    const char *title = opts->verify ? "verify" : opts->dry_run ? "import (dry run)" : "import";
    imp_report_t *report = imp_report_new(true, title);
    imp_reader_t *rd = NULL;
    imp_sink_t *sink = NULL;
    int status = 1;

    if ((rd = imp_reader_open(opts->from, opts, cfg->validation == MX_VALIDATION_STRICT, report, err, sizeof(err))) ==
        NULL) {
        fprintf(stderr, "mxkeysd: import: Synapse database: %s\n", err);
        goto done;
    }
    sink = opts->verify ? imp_verifier_new(mx, report, err, sizeof(err))
                        : imp_writer_new(mx, opts->dry_run, report, err, sizeof(err));
    if (sink == NULL) {
        fprintf(stderr, "mxkeysd: import: mxkeys database: %s\n", err);
        goto done;
    }
    if (imp_reader_run(rd, sink, err, sizeof(err)) != 0) {
        imp_report_print(report);
        fprintf(stderr, "mxkeysd: import: reading Synapse failed: %s (what was committed stays; run again)\n", err);
        goto done;
    }
    if (!opts->verify && !opts->dry_run) {
        char pos[32];
        snprintf(pos, sizeof(pos), "%lld", imp_reader_stream_position(rd));
        const char *params[] = {pos};
        PGresult *res =
            PQexecParams(mx, "SELECT mx_import_stream_position($1::bigint)", 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            fprintf(stderr, "mxkeysd: import: device-list stream position: %s", PQresultErrorMessage(res));
        PQclear(res);
    }
    imp_report_print(report);
    if (!opts->verify)
        printf("Synapse's device-list stream position in the snapshot: %lld (mxkeys' stream ids continue after it)\n",
               imp_reader_stream_position(rd));
    status = imp_report_failures(report) > 0 || imp_report_differences(report) > 0 ? 1 : 0;

done:
    if (sink != NULL)
        (opts->verify ? imp_verifier_free : imp_writer_free)(sink);
    imp_reader_close(rd);
    imp_report_free(report);
    fflush(stdout);
    return status;
}
