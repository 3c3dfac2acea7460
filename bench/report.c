#include "report.h"
#include <jansson.h>
#include <string.h>
#include <time.h>

static const double quantiles[] = {0.5, 0.9, 0.99, 0.999};
static const char *const qnames[] = {"p50", "p90", "p99", "p99.9"};
#define NQ 4

double bench_report_rate(const bench_results_t *res, int sc)
{
    uint64_t ok = 0;
    if (sc >= 0) {
        ok = res->sc[sc].ok;
    } else {
        for (int k = 0; k < SC_COUNT; k++)
            ok += res->sc[k].ok;
    }
    return res->window_s > 0 ? (double)ok / res->window_s : 0;
}

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static void describe_load(FILE *f, const bench_options_t *o)
{
    if (o->rate > 0)
        fprintf(f, "open loop at %.0f requests/s over %u connections", o->rate, o->connections);
    else
        fprintf(f, "closed loop, %u requests in flight", o->concurrency);
}

static void notes_text(const bench_sc_stats_t *st, int sc, char *out, size_t outlen)
{
    out[0] = '\0';
    size_t n = 0;
    for (int k = 0; k < BENCH_NOTES; k++) {
        const char *name = bench_note_name((bench_scenario_t)sc, k);
        if (name != NULL && n < outlen)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s %llu", n ? ", " : "", name,
                                  (unsigned long long)st->notes[k]);
    }
}

/* What the fallback answers mean, from the devices' one-time key counts after the run (bench_setup_claim_stock). */
static void claim_note(FILE *f, const bench_ctx_t *ctx, uint64_t fallbacks)
{
    fprintf(f, "\nnote: %llu claims got the fallback key. ", (unsigned long long)fallbacks);
    if (!ctx->claim_stock_known) {
        fprintf(f, "The devices' one-time key counts could not be read after the run, so whether they had run out "
                   "is not known\n");
    } else if (ctx->claim_dry == 0) {
        fprintf(f,
                "After the run all %zu claimable devices still held one-time keys (%llu in all): the server answered "
                "with fallback keys while one-time keys were there (for instance concurrent claims of one device "
                "losing a race); the devices did not run out\n",
                ctx->claim_held, (unsigned long long)ctx->claim_keys_held);
    } else if (ctx->claim_held == 0) {
        fprintf(f,
                "After the run none of the %zu claimable devices held a one-time key: they ran out (raise --otks "
                "or --users)\n",
                ctx->claim_dry);
    } else {
        fprintf(f,
                "After the run %zu of the %zu claimable devices held no one-time key (they ran out: raise --otks or "
                "--users) and %zu still held %llu in all (a fallback answer for one of those came while it still had "
                "one-time keys)\n",
                ctx->claim_dry, ctx->claim_dry + ctx->claim_held, ctx->claim_held,
                (unsigned long long)ctx->claim_keys_held);
    }
}

void bench_report_print(FILE *f, const bench_ctx_t *ctx, const bench_results_t *res)
{
    const bench_options_t *o = ctx->opts;
    fprintf(f, "\nmxkeys-bench: %s, scenario %s, ", o->url, o->scenario_text);
    describe_load(f, o);
    fprintf(f, ", %u threads\n", o->threads);
    fprintf(f, "population: %zu users, %zu devices; measured %.1f s after %.1f s warm-up%s\n\n", ctx->pop->nusers,
            ctx->pop->ndevices, res->window_s, res->warmup_s, res->interrupted ? " (STOPPED EARLY)" : "");
    fprintf(f, "%-11s %9s %9s %8s %8s %8s %8s %8s %7s  %s\n", "scenario", "ok", "req/s", "p50 ms", "p90 ms", "p99 ms",
            "p99.9 ms", "max ms", "errors", "answers");
    uint64_t ok = 0, errors = 0;
    for (int k = 0; k < SC_COUNT; k++) {
        const bench_sc_stats_t *st = &res->sc[k];
        if (o->weights[k] == 0)
            continue;
        char notes[160];
        notes_text(st, k, notes, sizeof(notes));
        fprintf(f, "%-11s %9llu %9.1f", bench_scenario_name((bench_scenario_t)k), (unsigned long long)st->ok,
                bench_report_rate(res, k));
        for (int q = 0; q < NQ; q++)
            fprintf(f, " %8.2f", ms(bench_hist_quantile(st->hist, quantiles[q])));
        fprintf(f, " %8.2f %7llu  %s\n", ms(st->hist->max_us), (unsigned long long)st->errors, notes);
        ok += st->ok;
        errors += st->errors;
    }
    fprintf(f, "%-11s %9llu %9.1f", "total", (unsigned long long)ok, bench_report_rate(res, -1));
    for (int q = 0; q < NQ; q++)
        fprintf(f, " %8.2f", ms(bench_hist_quantile(res->total, quantiles[q])));
    fprintf(f, " %8.2f %7llu\n", ms(res->total->max_us), (unsigned long long)errors);
    if (o->weights[SC_UPLOAD] > 0 && res->sc[SC_UPLOAD].notes[1] > 0)
        fprintf(f,
                "\nnote: upload used its %zu fresh bodies, then repeated them (identical re-uploads: the server "
                "still checks every signature but stores nothing); raise --upload-pool for fresh keys only\n",
                ctx->nupload_bodies);
    if (o->weights[SC_CLAIM] > 0 && res->sc[SC_CLAIM].notes[1] > 0)
        claim_note(f, ctx, res->sc[SC_CLAIM].notes[1]);
    if (res->unsent > 0)
        fprintf(f,
                "\nWARNING: %llu requests due at %.0f/s were never sent: the server (or this client) could not "
                "keep up; latency above counts their wait only up to the end of the run\n",
                (unsigned long long)res->unsent, o->rate);
    if (res->unexpected == 0) {
        fprintf(f, "\nunexpected errors: none\n");
        return;
    }
    fprintf(f, "\nUNEXPECTED ERRORS: %llu (warm-up included)\n", (unsigned long long)res->unexpected);
    for (size_t i = 0; i < res->nerrors; i++) {
        const bench_error_t *e = &res->errors[i];
        fprintf(f, "  %-11s %-32s %8llu  first at %.1f s  %.100s\n",
                e->sc >= 0 ? bench_scenario_name((bench_scenario_t)e->sc) : "connection", e->key,
                (unsigned long long)e->count, e->first_s, e->detail);
    }
}

static json_t *latency_json(const bench_hist_t *h)
{
    json_t *l = json_object();
    for (int q = 0; q < NQ; q++)
        json_object_set_new(l, qnames[q], json_real(ms(bench_hist_quantile(h, quantiles[q]))));
    json_object_set_new(l, "max", json_real(ms(h != NULL ? h->max_us : 0)));
    json_object_set_new(l, "mean", json_real(bench_hist_mean(h) / 1000.0));
    return l;
}

int bench_report_json(const char *path, const bench_ctx_t *ctx, const bench_results_t *res)
{
    const bench_options_t *o = ctx->opts;
    json_t *root = json_object();
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_object_set_new(root, "tool", json_string("mxkeys-bench"));
    json_object_set_new(root, "finished_at", json_string(when));
    json_object_set_new(root, "url", json_string(o->url));
    json_object_set_new(root, "scenario", json_string(o->scenario_text));
    json_object_set_new(root, "mode", json_string(o->rate > 0 ? "open" : "closed"));
    json_object_set_new(root, "concurrency", o->rate > 0 ? json_null() : json_integer(o->concurrency));
    json_object_set_new(root, "rate", o->rate > 0 ? json_real(o->rate) : json_null());
    json_object_set_new(root, "connections", json_integer(o->rate > 0 ? o->connections : o->concurrency));
    json_object_set_new(root, "threads", json_integer(o->threads));
    json_object_set_new(root, "warmup_s", json_real(res->warmup_s));
    json_object_set_new(root, "measured_s", json_real(res->window_s));
    json_object_set_new(root, "interrupted", json_boolean(res->interrupted));
    json_object_set_new(root, "population",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "users", (json_int_t)ctx->pop->nusers,
                                  "devices", (json_int_t)ctx->pop->ndevices, "otks_per_device", (json_int_t)o->otks,
                                  "query_users", (json_int_t)o->query_users, "sessions_per_put",
                                  (json_int_t)o->sessions, "backup_sessions", (json_int_t)ctx->pop->backup_sessions,
                                  "upload_bodies", (json_int_t)ctx->nupload_bodies));
    if (ctx->claim_stock_known)
        json_object_set_new(root, "claim_stock",
                            json_pack("{s:I, s:I, s:I}", "devices_dry", (json_int_t)ctx->claim_dry, "devices_holding",
                                      (json_int_t)ctx->claim_held, "keys_held", (json_int_t)ctx->claim_keys_held));
    json_t *scs = json_object();
    for (int k = 0; k < SC_COUNT; k++) {
        if (o->weights[k] == 0)
            continue;
        const bench_sc_stats_t *st = &res->sc[k];
        json_t *s = json_pack("{s:I, s:I, s:I, s:f, s:o}", "weight", (json_int_t)o->weights[k], "ok",
                              (json_int_t)st->ok, "errors", (json_int_t)st->errors, "throughput",
                              bench_report_rate(res, k), "latency_ms", latency_json(st->hist));
        json_object_set_new(s, "body_bytes", json_integer((json_int_t)st->body_bytes));
        json_t *notes = json_object();
        for (int n = 0; n < BENCH_NOTES; n++) {
            const char *name = bench_note_name((bench_scenario_t)k, n);
            if (name != NULL)
                json_object_set_new(notes, name, json_integer((json_int_t)st->notes[n]));
        }
        json_object_set_new(s, "answers", notes);
        json_object_set_new(scs, bench_scenario_name((bench_scenario_t)k), s);
    }
    json_object_set_new(root, "scenarios", scs);
    json_object_set_new(
        root, "total",
        json_pack("{s:f, s:o}", "throughput", bench_report_rate(res, -1), "latency_ms", latency_json(res->total)));
    json_t *errs = json_array();
    for (size_t i = 0; i < res->nerrors; i++) {
        const bench_error_t *e = &res->errors[i];
        json_array_append_new(errs, json_pack("{s:s, s:s, s:I, s:f, s:s}", "scenario",
                                              e->sc >= 0 ? bench_scenario_name((bench_scenario_t)e->sc) : "connection",
                                              "error", e->key, "count", (json_int_t)e->count, "first_s", e->first_s,
                                              "example", e->detail));
    }
    json_object_set_new(root, "unexpected_errors", json_integer((json_int_t)res->unexpected));
    json_object_set_new(root, "errors", errs);
    json_object_set_new(root, "unsent", json_integer((json_int_t)res->unsent));
    json_t *series = json_array();
    for (size_t i = 0; i < res->nseconds; i++) {
        const bench_second_t *s = &res->seconds[i];
        json_t *ok = json_object(), *p50 = json_object(), *p99 = json_object();
        for (int k = 0; k < SC_COUNT; k++) {
            if (o->weights[k] == 0)
                continue;
            const char *name = bench_scenario_name((bench_scenario_t)k);
            json_object_set_new(ok, name, json_integer((json_int_t)s->ok[k]));
            json_object_set_new(p50, name, json_real(ms(bench_hist_quantile(s->hist[k], 0.5))));
            json_object_set_new(p99, name, json_real(ms(bench_hist_quantile(s->hist[k], 0.99))));
        }
        json_array_append_new(series, json_pack("{s:I, s:o, s:I, s:o, s:o}", "second", (json_int_t)i + 1, "ok", ok,
                                                "errors", (json_int_t)s->errors, "p50_ms", p50, "p99_ms", p99));
    }
    json_object_set_new(root, "series", series);
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    json_decref(root);
    return rc == 0 ? 0 : -1;
}

int bench_report_csv(const char *path, const bench_ctx_t *ctx, const bench_results_t *res)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "scenario,ok,errors,throughput,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms\n");
    for (int k = -1; k < SC_COUNT; k++) {
        if (k >= 0 && ctx->opts->weights[k] == 0)
            continue;
        const bench_hist_t *h = k >= 0 ? res->sc[k].hist : res->total;
        uint64_t ok = 0, errors = 0;
        for (int j = 0; j < SC_COUNT; j++) {
            if (k < 0 || j == k) {
                ok += res->sc[j].ok;
                errors += res->sc[j].errors;
            }
        }
        fprintf(f, "%s,%llu,%llu,%.2f", k >= 0 ? bench_scenario_name((bench_scenario_t)k) : "total",
                (unsigned long long)ok, (unsigned long long)errors, bench_report_rate(res, k));
        for (int q = 0; q < NQ; q++)
            fprintf(f, ",%.3f", ms(bench_hist_quantile(h, quantiles[q])));
        fprintf(f, ",%.3f,%.3f\n", ms(h->max_us), bench_hist_mean(h) / 1000.0);
    }
    return fclose(f) == 0 ? 0 : -1;
}
