#!/usr/bin/env bash
# Database connections by measurement (issue 15, item 0): for each --db-connections value a fresh mxkeysd on one
# throwaway PostgreSQL cluster (default durability: commits wait for the WAL flush, as in a deployment), and for each
# closed-loop concurrency the scenarios claim, upload, backup-put and query for a short bounded run each with
# mxkeys-bench. Prints req/s and p99 per cell as markdown tables; results in bench/results/connections-<time>/.
#
#   bench/connections.sh [--db-connections "1 2 4 8"] [--concurrency "1 4 16 64"] [--scenarios "claim upload
#                        backup-put query"] [--duration S] [--warmup S] [--workers N] [--users U] [--devices D]
#                        [--mxkeysd-args "..."] [--quick] [--out DIR] [--keep]
#
# Defaults: 3 s measured + 1 s warm-up per cell, 64 cells: about 10 minutes with set-up, a third of it making fresh
# signed upload bodies (1,000 per upload cell; uploads beyond them repeat a body, and the cell says how many).
# --quick: --db-connections "1 4", --concurrency "1 16", 2 s per cell, 260 upload bodies per upload cell (a smoke
# check, a minute or two). Every mxkeysd listens on 127.0.0.1; everything started is stopped by pid on exit. --keep
# keeps the temp dir (cluster). Environment: MXKEYSD, MXKEYS_BENCH or MXKEYS_BUILD_DIR (default ./build).
set -euo pipefail
# shellcheck source=harness.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"

CONNS="1 2 4 8"
CONCS="1 4 16 64"
SCENARIOS="claim upload backup-put query"
DURATION=3
WARMUP=1
WORKERS=2
USERS=50
DEVICES=5
MXARGS=
UPLOAD_CEILING=250
KEEP=0
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
    --db-connections) CONNS=$2; shift 2 ;;
    --concurrency) CONCS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --mxkeysd-args) MXARGS=$2; shift 2 ;;
    --quick) CONNS="1 4"; CONCS="1 16"; DURATION=2; WARMUP=0.5; UPLOAD_CEILING=100; shift ;;
    --keep) KEEP=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "connections.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for sc in $SCENARIOS; do
    case "$sc" in claim | upload | backup-put | query | backup-get) ;; *) die "unknown scenario $sc" ;; esac
done

harness_tools
RESULTS=${OUT:-$HARNESS_HERE/results/connections-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
harness_init connections
harness_pg_start durable
STATE=$RESULTS/state.json

# One population for the whole grid; mxkeysd restarts between connection counts, the database keeps it.
first=${CONNS%% *}
# shellcheck disable=SC2086
harness_mxkeysd conn$first --workers "$WORKERS" --db-connections "$first" $MXARGS
say "set-up: $USERS users x $DEVICES devices"
"$MXKEYS_BENCH" --url "$MX_URL" --mint-command "$(harness_mint_command)" --state "$STATE" --setup-only \
    --users "$USERS" --devices "$DEVICES" --otks 50 --backup-sessions 100 --sessions 100 --query-users 10 \
    --no-progress >"$RESULTS/setup.txt" 2>&1 || { cat "$RESULTS/setup.txt"; die "set-up failed"; }
psql "$DB" -q -At -c ANALYZE

declare -A RATE P99
unexpected=0
for nc in $CONNS; do
    if [ "$nc" != "$first" ] || [ -z "${MX_PID:-}" ]; then
        harness_stop "$MX_PID"
        # shellcheck disable=SC2086
        harness_mxkeysd conn$nc --workers "$WORKERS" --db-connections "$nc" $MXARGS
    fi
    first=
    for conc in $CONCS; do
        for sc in $SCENARIOS; do
            extra=()
            case "$sc" in
            # enough one-time keys that no claim of the cell falls back to the (cheaper) fallback key
            claim) harness_claim_topup "$STATE" "$($PY -c "print(int(8000 * ($DURATION + $WARMUP) / ($USERS * $DEVICES)) + 20)")" ;;
            # fresh bodies for up to 250 uploads/s (100 with --quick): each costs ~18 ms of the bench's CPU to make
            upload) extra=(--upload-pool "$($PY -c "print(int($UPLOAD_CEILING * ($DURATION + $WARMUP)) + 10)")") ;;
            esac
            out=$RESULTS/$sc-c$nc-n$conc
            say "db-connections $nc x $WORKERS workers, concurrency $conc: $sc ${DURATION}s"
            "$MXKEYS_BENCH" --url "$MX_URL" --mint-command "$(harness_mint_command)" --state "$STATE" --scenario "$sc" \
                --concurrency "$conc" --duration "$DURATION" --warmup "$WARMUP" --no-progress --check --json "$out.json" "${extra[@]}" \
                >"$out.txt" 2>&1 || { unexpected=$((unexpected + 1)); tail -n 5 "$out.txt" >&2; }
            if [ -s "$out.json" ]; then
                RATE[$sc,$nc,$conc]=$(harness_json "$out.json" "'%.0f' % d['scenarios']['$sc']['throughput']")
                P99[$sc,$nc,$conc]=$(harness_json "$out.json" "'%.1f' % d['scenarios']['$sc']['latency_ms']['p99']")
                if [ "$sc" = claim ]; then
                    fb=$(harness_json "$out.json" "d['scenarios']['claim']['answers'].get('fallback', 0)")
                    [ "$fb" = 0 ] || RATE[$sc,$nc,$conc]="${RATE[$sc,$nc,$conc]} ($fb fallback)"
                elif [ "$sc" = upload ]; then
                    rep=$(harness_json "$out.json" "d['scenarios']['upload']['answers'].get('repeated', 0)")
                    [ "$rep" = 0 ] || RATE[$sc,$nc,$conc]="${RATE[$sc,$nc,$conc]} ($rep repeated)"
                fi
            else
                RATE[$sc,$nc,$conc]=failed
                P99[$sc,$nc,$conc]=-
            fi
        done
    done
done

{
    echo "Database connections by measurement, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, mxkeysd --workers $WORKERS"
    echo "(connections to PostgreSQL = workers x --db-connections), PostgreSQL 15 with default durability, $USERS"
    echo "users x $DEVICES devices, closed loop, ${DURATION}s per cell after ${WARMUP}s of warm-up."
    if harness_has_query_cache; then
        echo "The /keys/query cache at its default size unless --mxkeysd-args says otherwise (${MXARGS:-none given})."
    fi
    echo "Cell: req/s (p99 ms)."
    for sc in $SCENARIOS; do
        echo
        echo "**$sc**"
        echo
        header="| --db-connections |"
        rule="| ---: |"
        for conc in $CONCS; do header="$header concurrency $conc |"; rule="$rule ---: |"; done
        echo "$header"
        echo "$rule"
        for nc in $CONNS; do
            row="| $nc |"
            for conc in $CONCS; do row="$row ${RATE[$sc,$nc,$conc]} (${P99[$sc,$nc,$conc]}) |"; done
            echo "$row"
        done
    done
    [ "$unexpected" = 0 ] || echo -e "\n$unexpected cells had unexpected answers: see $RESULTS/*.txt"
} | tee "$RESULTS/connections.md"
