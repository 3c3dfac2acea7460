/* What an import run did: counts per table and outcome (skips per reason), findings about stored objects, verify
 * differences, the progress line on a terminal and the summary table at the end. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define MAX_REASONS 12

static const char *const table_names[IMP_NTABLES] = {
    "device_keys",      "one_time_keys",   "fallback_keys",  "cross_signing_keys", "cross_signing_keys_history",
    "cross_signatures", "backup_versions", "backup_sessions"};

typedef struct st_reason_t {
    char text[96];
    long long n;
} reason_t;

struct st_imp_report_t {
    bool progress;
    const char *title;
    long long counts[IMP_NTABLES][IMP_NOUTCOMES];
    reason_t reasons[IMP_NTABLES][MAX_REASONS];
    long long users_done, users_total, rows_total, failures, differences, findings;
    double started, last_draw;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

imp_report_t *imp_report_new(bool progress, const char *title)
{
    imp_report_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->progress = progress && isatty(STDERR_FILENO);
    r->title = title;
    r->started = now_s();
    return r;
}

void imp_report_free(imp_report_t *r)
{
    free(r);
}

int imp_table_by_name(const char *name)
{
    for (int i = 0; i < IMP_NTABLES; i++)
        if (strcmp(table_names[i], name) == 0)
            return i;
    return -1;
}

void imp_count(imp_report_t *r, imp_table_t t, imp_outcome_t o, const char *reason, long long n)
{
    if (n == 0)
        return;
    r->counts[t][o] += n;
    if (o != IMP_SKIPPED)
        return;
    reason_t *slot = NULL;
    for (int i = 0; i < MAX_REASONS; i++) {
        if (r->reasons[t][i].n == 0 && r->reasons[t][i].text[0] == '\0') {
            slot = &r->reasons[t][i];
            snprintf(slot->text, sizeof(slot->text), "%s", reason != NULL ? reason : "");
            break;
        }
        if (strcmp(r->reasons[t][i].text, reason != NULL ? reason : "") == 0) {
            slot = &r->reasons[t][i];
            break;
        }
    }
    if (slot == NULL)
        slot = &r->reasons[t][MAX_REASONS - 1]; /* more reasons than slots: the last one collects them */
    slot->n += n;
}

static void clear_line(imp_report_t *r)
{
    if (r->progress)
        fputs("\r\033[K", stderr);
}

void imp_finding(imp_report_t *r, const char *user, const char *what, const char *why, const char *action)
{
    clear_line(r);
    r->findings++;
    printf("invalid: %s %s: %s (%s)\n", user, what, why, action);
}

void imp_difference(imp_report_t *r, const char *user, const char *fmt, ...)
{
    clear_line(r);
    r->differences++;
    printf("differs: %s: ", user);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

void imp_user_failed(imp_report_t *r, const char *user, const char *why)
{
    clear_line(r);
    r->failures++;
    printf("failed: %s: %s (nothing of this user was written; run again)\n", user, why);
}

void imp_set_totals(imp_report_t *r, long long users, long long rows)
{
    r->users_total = users;
    r->rows_total = rows;
}

void imp_user_done(imp_report_t *r)
{
    r->users_done++;
    imp_progress(r, false);
}

static long long rows_read(const imp_report_t *r)
{
    long long n = 0;
    for (int t = 0; t < IMP_NTABLES; t++)
        n += r->counts[t][IMP_READ];
    return n;
}

void imp_progress(imp_report_t *r, bool force)
{
    if (!r->progress)
        return;
    double t = now_s();
    if (!force && t - r->last_draw < 0.2)
        return;
    r->last_draw = t;
    double elapsed = t - r->started;
    long long rows = rows_read(r);
    double rate = elapsed > 0 ? (double)rows / elapsed : 0;
    int width = 30, filled = r->users_total > 0 ? (int)(width * r->users_done / r->users_total) : 0;
    if (filled > width)
        filled = width;
    char bar[64];
    memset(bar, '#', (size_t)filled);
    memset(bar + filled, '.', (size_t)(width - filled));
    bar[width] = '\0';
    char eta[32] = "?";
    if (rate > 0 && r->rows_total > rows)
        snprintf(eta, sizeof(eta), "%.0fs", (double)(r->rows_total - rows) / rate);
    else if (r->rows_total > 0)
        snprintf(eta, sizeof(eta), "0s");
    fprintf(stderr, "\r\033[K%s [%s] users %lld/%lld  rows %lld/~%lld  otk %lld  sessions %lld  %.0f rows/s  left %s",
            r->title, bar, r->users_done, r->users_total, rows, r->rows_total, r->counts[IMP_ONE_TIME_KEYS][IMP_READ],
            r->counts[IMP_BACKUP_SESSIONS][IMP_READ], rate, eta);
    fflush(stderr);
}

void imp_report_print(imp_report_t *r)
{
    if (r->progress) {
        imp_progress(r, true);
        fputc('\n', stderr);
    }
    double elapsed = now_s() - r->started;
    long long rows = rows_read(r);
    printf("\n%-28s %10s %10s %10s %10s %10s\n", "table", "read", "written", "unchanged", "removed", "skipped");
    for (int t = 0; t < IMP_NTABLES; t++) {
        const long long *c = r->counts[t];
        printf("%-28s %10lld %10lld %10lld %10lld %10lld\n", table_names[t], c[IMP_READ], c[IMP_WRITTEN],
               c[IMP_UNCHANGED], c[IMP_REMOVED], c[IMP_SKIPPED]);
        for (int i = 0; i < MAX_REASONS; i++)
            if (r->reasons[t][i].n > 0)
                printf("  %-26s %10s skipped %lld: %s\n", "", "", r->reasons[t][i].n, r->reasons[t][i].text);
    }
    printf("\n%s: %lld users, %lld rows read in %.1f s (%.0f rows/s); %lld invalid objects reported, %lld users failed",
           r->title, r->users_done, rows, elapsed, elapsed > 0 ? (double)rows / elapsed : 0.0, r->findings,
           r->failures);
    if (r->differences > 0 || strstr(r->title, "verify") != NULL)
        printf(", %lld differences", r->differences);
    printf("\n");
    fflush(stdout);
}

long long imp_report_failures(const imp_report_t *r)
{
    return r->failures;
}

long long imp_report_differences(const imp_report_t *r)
{
    return r->differences;
}
