#!/usr/bin/env bash
# Open-loop latency at half the peak (issue 15, item 3): per scenario, a short closed-loop run measures the peak
# req/s, then mxkeys-bench sends --rate (peak x --fraction) requests/s on a fixed schedule, latency counted from each
# request's scheduled time (no coordinated omission), and the table gives p50/p99/p99.9. A throwaway mxkeysd on a
# throwaway PostgreSQL cluster (default durability); results in bench/results/openloop-<time>/.
#
#   bench/openloop.sh [--scenarios "query claim upload backup-put"] [--peak-duration S] [--duration S]
#                     [--concurrency N] [--connections N] [--fraction F] [--users U] [--devices D] [--workers N]
#                     [--mxkeysd-args "..."] [--out DIR] [--keep]
#
# Defaults: peak from 5 s at concurrency 16, then 15 s open loop at 0.5 of it over 32 connections: about 2.5 minutes
# with set-up. --mxkeysd-args passes flags to mxkeysd (e.g. "--db-connections 4"). Environment: MXKEYSD,
# MXKEYS_BENCH or MXKEYS_BUILD_DIR (default ./build).
set -euo pipefail
# shellcheck source=harness.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"

SCENARIOS="query claim upload backup-put"
PEAK_DURATION=5
DURATION=15
CONCURRENCY=16
CONNECTIONS=32
FRACTION=0.5
USERS=50
DEVICES=5
WORKERS=2
MXARGS=
KEEP=0
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --peak-duration) PEAK_DURATION=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --fraction) FRACTION=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --mxkeysd-args) MXARGS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "openloop.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for sc in $SCENARIOS; do
    case "$sc" in claim | upload | backup-put | query | backup-get | changes) ;; *) die "unknown scenario $sc" ;; esac
done

harness_tools
RESULTS=${OUT:-$HARNESS_HERE/results/openloop-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
harness_init openloop
harness_pg_start durable
STATE=$RESULTS/state.json
# shellcheck disable=SC2086
harness_mxkeysd main --workers "$WORKERS" $MXARGS
MINT=$(harness_mint_command)
say "set-up: $USERS users x $DEVICES devices"
"$MXKEYS_BENCH" --url "$MX_URL" --mint-command "$MINT" --state "$STATE" --setup-only --users "$USERS" \
    --devices "$DEVICES" --otks 50 --backup-sessions 100 --sessions 100 --query-users 10 --no-progress \
    >"$RESULTS/setup.txt" 2>&1 || { cat "$RESULTS/setup.txt"; die "set-up failed"; }
psql "$DB" -q -At -c ANALYZE

# One mxkeys-bench run; $1 output prefix, the rest its load options.
run() {
    local out=$1 sc=$2
    shift 2

    case "$sc" in
    claim) harness_claim_topup "$STATE" "$($PY -c "print(int(8000 * max($PEAK_DURATION, $DURATION) / ($USERS * $DEVICES)) + 50)")" ;;
    esac
    "$MXKEYS_BENCH" --url "$MX_URL" --mint-command "$MINT" --state "$STATE" --scenario "$sc" --no-progress --check \
        --json "$out.json" "$@" >"$out.txt" 2>&1 ||
        echo "openloop.sh: $sc: unexpected answers, see $out.txt" >&2
    [ -s "$out.json" ] || { cat "$out.txt" >&2; die "$sc: no result"; }
}

ROWS=()
for sc in $SCENARIOS; do
    pool=()
    # upload: fresh bodies for the peak run at up to 250/s, and for the whole open-loop run at its rate
    [ "$sc" = upload ] && pool=(--upload-pool "$($PY -c "print(int(250 * ($PEAK_DURATION + 1)) + 10)")")
    if [ "$sc" = query ]; then
        # every user queried once first, as run.sh does: the load starts on a warm /keys/query cache (if any)
        $PY "$HARNESS_HERE/query_warm.py" --url "$MX_URL" --state "$STATE" || die "the query warm-up failed"
    fi
    say "$sc: closed-loop peak, ${PEAK_DURATION}s at concurrency $CONCURRENCY"
    run "$RESULTS/$sc-peak" "$sc" --concurrency "$CONCURRENCY" --duration "$PEAK_DURATION" --warmup 1 "${pool[@]}"
    peak=$(harness_json "$RESULTS/$sc-peak.json" "d['scenarios']['$sc']['throughput']")
    rate=$($PY -c "print('%.1f' % max(1.0, $peak * $FRACTION))")
    say "$sc: open loop at $rate req/s (${FRACTION} x $peak), ${DURATION}s over $CONNECTIONS connections"
    # the open-loop upload pool is sized by mxkeys-bench itself from --rate and --duration
    run "$RESULTS/$sc-open" "$sc" --rate "$rate" --connections "$CONNECTIONS" --duration "$DURATION" --warmup 2
    o=$RESULTS/$sc-open.json
    ROWS+=("$(harness_json "$o" "'| $sc | %.0f | %s | %.1f | %.2f | %.2f | %.2f | %.2f | %d | %d |' % ($peak, '$rate',
        d['scenarios']['$sc']['throughput'], d['scenarios']['$sc']['latency_ms']['p50'],
        d['scenarios']['$sc']['latency_ms']['p99'], d['scenarios']['$sc']['latency_ms']['p99.9'],
        d['scenarios']['$sc']['latency_ms']['max'], d['unsent'], d['scenarios']['$sc']['errors'])")")
done

{
    echo "Open loop at $FRACTION of the closed-loop peak, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, mxkeysd"
    echo "--workers $WORKERS ${MXARGS:+$MXARGS }on PostgreSQL 15 (default durability), $USERS users x $DEVICES devices."
    echo "Peak: ${PEAK_DURATION}s closed loop at concurrency $CONCURRENCY. Open loop: ${DURATION}s over $CONNECTIONS"
    echo "connections, latency from the scheduled send time."
    echo
    echo "| scenario | peak req/s | rate sent /s | answered req/s | p50 ms | p99 ms | p99.9 ms | max ms | unsent |" \
        "errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULTS/openloop.md"
