/* Shared between the import modules: the report, the per-user document the reader assembles, and the sink it feeds
 * (the writer, or the verifier). */
#ifndef MXKEYS_IMPORT_INTERNAL_H
#define MXKEYS_IMPORT_INTERNAL_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include "mxkeys/buf.h"
#include "mxkeys/import.h"

/* ---- report (report.c) ---- */

typedef enum en_imp_table_t {
    IMP_DEVICE_KEYS,
    IMP_ONE_TIME_KEYS,
    IMP_FALLBACK_KEYS,
    IMP_CROSS_SIGNING_KEYS,
    IMP_CROSS_SIGNING_HISTORY,
    IMP_CROSS_SIGNATURES,
    IMP_BACKUP_VERSIONS,
    IMP_BACKUP_SESSIONS,
    IMP_NTABLES
} imp_table_t;

typedef enum en_imp_outcome_t {
    IMP_READ,
    IMP_WRITTEN,
    IMP_UNCHANGED,
    IMP_REMOVED,
    IMP_SKIPPED,
    IMP_NOUTCOMES
} imp_outcome_t;

typedef struct st_imp_report_t imp_report_t;

imp_report_t *imp_report_new(bool progress, const char *title);
void imp_report_free(imp_report_t *r);
/** Adds n to a table's outcome; skips carry a reason (counted per reason). */
void imp_count(imp_report_t *r, imp_table_t t, imp_outcome_t o, const char *reason, long long n);
/** Looks a table up by its mxkeys name (as mx_import_finish reports it); -1 when unknown. */
int imp_table_by_name(const char *name);
/** One line about one stored object: which user, which key, what is wrong and what was done. */
void imp_finding(imp_report_t *r, const char *user, const char *what, const char *why, const char *action);
/** A difference found by --verify. */
void imp_difference(imp_report_t *r, const char *user, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** A user whose transaction failed (reported, counted; the run goes on). */
void imp_user_failed(imp_report_t *r, const char *user, const char *why);
void imp_set_totals(imp_report_t *r, long long users, long long rows);
void imp_user_done(imp_report_t *r);
/** Redraws the progress line when due (terminal only). */
void imp_progress(imp_report_t *r, bool force);
/** Prints the summary table to stdout. */
void imp_report_print(imp_report_t *r);
long long imp_report_failures(const imp_report_t *r);
long long imp_report_differences(const imp_report_t *r);

/* ---- checks (checks.c) ---- */

/** Parses stored JSON text strictly (what jsonb and mxkeys' uploads accept); NULL with a reason. */
json_t *imp_parse(const char *text, char *why, size_t whylen);
/** Device keys as uploaded: ids match, an ed25519 key, its self-signature. 0 or -1 with a reason. */
int imp_check_device_keys(const char *user, const char *device, const json_t *keys, char *why, size_t whylen);
/** A signed one-time or fallback key: signed by the device's ed25519 key (`ed25519`, NULL when unknown). */
int imp_check_signed_key(const char *user, const char *device, const char *algorithm, const json_t *key,
                         const char *ed25519, char *why, size_t whylen);
/** A cross-signing key of `usage`; self- and user-signing keys must be signed by `master_pk`. */
int imp_check_cross_signing_key(const char *user, const char *usage, const json_t *key, const char *master_pk,
                                char *why, size_t whylen);
/** The public key of a cross-signing key object ("keys" has one entry), or NULL. */
const char *imp_cross_signing_public_key(const json_t *key);
/** A detached signature of `signed_obj` by (signer, key_id) with `public_key`. */
int imp_check_signature(const json_t *signed_obj, const char *signer, const char *key_id, const char *signature,
                        const char *public_key, char *why, size_t whylen);

/* ---- the sink the reader feeds, user by user ---- */

typedef struct st_imp_sink_t imp_sink_t;
struct st_imp_sink_t {
    /** doc: see mx_import_begin in sql/functions/import.sql. Returns 0, or -1 (user failed, reason in err). */
    int (*begin)(imp_sink_t *s, const char *user, const json_t *doc, char *err, size_t errlen);
    /** rows: JSON array text, see mx_import_otks / mx_import_sessions. */
    int (*otks)(imp_sink_t *s, const char *user, const mx_buf_t *rows, char *err, size_t errlen);
    int (*sessions)(imp_sink_t *s, const char *user, const mx_buf_t *rows, char *err, size_t errlen);
    /** ok: false after a failure in this user's calls (the sink rolls back). */
    int (*finish)(imp_sink_t *s, const char *user, bool ok, char *err, size_t errlen);
};

/* ---- reader (synapse_read.c) ---- */

typedef struct st_imp_reader_t imp_reader_t;
/** Opens Synapse in one REPEATABLE READ, READ ONLY snapshot. */
imp_reader_t *imp_reader_open(const char *conninfo, const mx_import_opts_t *opts, bool strict, imp_report_t *report,
                              char *err, size_t errlen);
/** Synapse's device-list stream position in the snapshot. */
long long imp_reader_stream_position(const imp_reader_t *rd);
/** Feeds every user to the sink; returns 0, or -1 when reading Synapse itself failed. */
int imp_reader_run(imp_reader_t *rd, imp_sink_t *sink, char *err, size_t errlen);
void imp_reader_close(imp_reader_t *rd);

/* ---- writer (synapse_write.c) and verifier (verify.c) ---- */

imp_sink_t *imp_writer_new(PGconn *mx, bool dry_run, imp_report_t *report, char *err, size_t errlen);
void imp_writer_free(imp_sink_t *s);
imp_sink_t *imp_verifier_new(PGconn *mx, imp_report_t *report, char *err, size_t errlen);
void imp_verifier_free(imp_sink_t *s);

#endif
