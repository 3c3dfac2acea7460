#include "plot.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void cdf_point(void *ctx, uint64_t us, double cumulative)
{
    fprintf(ctx, "%.3f %.6f\n", (double)us / 1000.0, cumulative * 100.0);
}

static int write_series(const char *path, const bench_ctx_t *ctx, const bench_results_t *res)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "# second");
    for (int k = 0; k < SC_COUNT; k++)
        if (ctx->opts->weights[k] > 0)
            fprintf(f, " %s_ok %s_p50_ms %s_p99_ms", bench_scenario_name(k), bench_scenario_name(k),
                    bench_scenario_name(k));
    fprintf(f, " total_ok errors\n");
    /* The last slot is the partial second at the end of the run: left out so the curve does not dive. */
    size_t n = res->nseconds > 1 ? res->nseconds - 1 : res->nseconds;
    for (size_t i = 0; i < n; i++) {
        const bench_second_t *s = &res->seconds[i];
        uint64_t total = 0;
        fprintf(f, "%zu", i + 1);
        for (int k = 0; k < SC_COUNT; k++) {
            if (ctx->opts->weights[k] == 0)
                continue;
            total += s->ok[k];
            /* No answer in that second: "NaN" leaves a gap in the latency line instead of a false zero. */
            if (s->hist[k] != NULL && s->hist[k]->count > 0)
                fprintf(f, " %llu %.3f %.3f", (unsigned long long)s->ok[k],
                        (double)bench_hist_quantile(s->hist[k], 0.5) / 1000.0,
                        (double)bench_hist_quantile(s->hist[k], 0.99) / 1000.0);
            else
                fprintf(f, " %llu NaN NaN", (unsigned long long)s->ok[k]);
        }
        fprintf(f, " %llu %llu\n", (unsigned long long)total, (unsigned long long)s->errors);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int write_cdf(const char *path, const bench_ctx_t *ctx, const bench_results_t *res)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    /* One gnuplot data block per scenario (separated by two blank lines), in mix order. */
    for (int k = 0; k < SC_COUNT; k++) {
        if (ctx->opts->weights[k] == 0)
            continue;
        fprintf(f, "# %s\n", bench_scenario_name(k));
        if (res->sc[k].hist->count == 0)
            fprintf(f, "NaN NaN\n");
        bench_hist_each(res->sc[k].hist, cdf_point, f);
        fprintf(f, "\n\n");
    }
    return fclose(f) == 0 ? 0 : -1;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

static int write_script(const char *path, const char *prefix, const bench_ctx_t *ctx, const bench_results_t *res)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    const char *b = base_name(prefix);
    fprintf(f, "# gnuplot script written by mxkeys-bench; run it from this directory: gnuplot %s.gp\n", b);
    fprintf(f, "set terminal pngcairo size 1100,800 noenhanced font ',10'\nset datafile missing 'NaN'\n");
    fprintf(f, "set output '%s-timeline.png'\nset multiplot layout 2,1 title '%s  %s'\n", b, ctx->opts->url,
            ctx->opts->scenario_text);
    fprintf(f, "set grid\nset key outside right\nset xlabel 'seconds since load start'\n");
    if (res->warmup_s > 0)
        fprintf(f,
                "set arrow 1 from %.2f, graph 0 to %.2f, graph 1 nohead dashtype 2\n"
                "set label 1 'warm-up end' at %.2f, graph 0.95 offset 0.5,0\n",
                res->warmup_s, res->warmup_s, res->warmup_s);
    fprintf(f, "set ylabel 'answers/s'\nset yrange [0:*]\nplot ");
    int col = 2, first = 1;
    for (int k = 0; k < SC_COUNT; k++) {
        if (ctx->opts->weights[k] == 0)
            continue;
        fprintf(f, "%s'%s-series.dat' using 1:%d with lines lw 2 lc %d title '%s'", first ? "" : ", ", b, col, k + 1,
                bench_scenario_name(k));
        first = 0;
        col += 3;
    }
    fprintf(f, ", '%s-series.dat' using 1:%d with lines lw 1 dashtype 3 lc black title 'total'\n", b, col);
    fprintf(f, "set ylabel 'latency ms (log)'\nset logscale y\nset yrange [*:*]\nplot ");
    col = 2;
    first = 1;
    for (int k = 0; k < SC_COUNT; k++) {
        if (ctx->opts->weights[k] == 0)
            continue;
        fprintf(f,
                "%s'%s-series.dat' using 1:%d with lines lw 2 lc %d title '%s p99', "
                "'%s-series.dat' using 1:%d with lines lw 1 dashtype 2 lc %d title '%s p50'",
                first ? "" : ", ", b, col + 2, k + 1, bench_scenario_name(k), b, col + 1, k + 1,
                bench_scenario_name(k));
        first = 0;
        col += 3;
    }
    fprintf(f, "\nunset multiplot\nunset arrow 1\nunset label 1\n");
    fprintf(f,
            "set output '%s-cdf.png'\nset title 'latency CDF (measured window)  %s'\nset logscale x\n"
            "unset logscale y\nset xlabel 'latency ms (log)'\nset ylabel 'percent of answers at or below'\n"
            "set yrange [0:100]\nset key bottom right\nplot ",
            b, ctx->opts->scenario_text);
    int block = 0;
    first = 1;
    for (int k = 0; k < SC_COUNT; k++) {
        if (ctx->opts->weights[k] == 0)
            continue;
        fprintf(f, "%s'%s-cdf.dat' index %d using 1:2 with steps lw 2 lc %d title '%s'", first ? "" : ", ", b, block++,
                k + 1, bench_scenario_name(k));
        first = 0;
    }
    fprintf(f, "\n");
    return fclose(f) == 0 ? 0 : -1;
}

static int have_gnuplot(void)
{
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

int bench_plot(const char *prefix, const bench_ctx_t *ctx, const bench_results_t *res)
{
    size_t n = strlen(prefix) + 32;
    char *series = malloc(n), *cdf = malloc(n), *gp = malloc(n), *cmd = malloc(2 * n + 64);
    int rc = -1;
    if (series == NULL || cdf == NULL || gp == NULL || cmd == NULL)
        goto done;
    snprintf(series, n, "%s-series.dat", prefix);
    snprintf(cdf, n, "%s-cdf.dat", prefix);
    snprintf(gp, n, "%s.gp", prefix);
    if (write_series(series, ctx, res) != 0 || write_cdf(cdf, ctx, res) != 0 ||
        write_script(gp, prefix, ctx, res) != 0) {
        fprintf(stderr, "mxkeys-bench: cannot write the plot files %s*\n", prefix);
        goto done;
    }
    if (!have_gnuplot()) {
        fprintf(stderr, "mxkeys-bench: gnuplot not found (apt-get install gnuplot-nox); the script is %s\n", gp);
        rc = 0;
        goto done;
    }
    /* The script names its files relative to its own directory. */
    const char *slash = strrchr(prefix, '/');
    if (slash != NULL)
        snprintf(cmd, 2 * n + 64, "cd '%.*s' && gnuplot '%s.gp'", slash == prefix ? 1 : (int)(slash - prefix), prefix,
                 slash + 1);
    else
        snprintf(cmd, 2 * n + 64, "gnuplot '%s.gp'", prefix);
    if (strchr(prefix, '\'') != NULL || system(cmd) != 0) {
        fprintf(stderr, "mxkeys-bench: gnuplot failed on %s\n", gp);
        goto done;
    }
    rc = 0;
done:
    free(series);
    free(cdf);
    free(gp);
    free(cmd);
    return rc;
}
