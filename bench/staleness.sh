#!/usr/bin/env bash
# Cross-instance staleness of /keys/query (issue 15, items 1 and 4): two mxkeysd instances, A and B, on one
# throwaway PostgreSQL cluster (default durability). For each sample bench/staleness.py warms B's query cache for a
# user, uploads new device keys for that user through A, and polls B until the new key shows, from the moment A's
# 200 arrived; it also checks read-your-writes on A in the same loop. Prints p50/p99/max of the staleness in ms and
# the violations (exit status 1 on any read-your-writes violation, or a write B did not show within --max-wait-ms,
# which should exceed --query-cache-max-lag-ms). Results in bench/results/staleness-<time>/.
#
#   bench/staleness.sh [--samples N] [--max-seconds S] [--max-wait-ms MS] [--users U] [--workers N]
#                      [--query-cache-bytes B] [--query-cache-max-lag-ms MS] [--mxkeysd-args "..."]
#                      [--out DIR] [--keep]
#
# Defaults: 200 samples over 20 users, at most 120 s, B polled for at most 2000 ms per sample; both instances with
# 2 workers and the cache flags at their defaults. An mxkeysd without the query cache (no --query-cache-bytes in
# its --help) is measured all the same, as the database-bound baseline, and the table says so. Environment: MXKEYSD,
# MXKEYS_BENCH or MXKEYS_BUILD_DIR (default ./build).
set -euo pipefail
# shellcheck source=harness.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"

SAMPLES=200
MAX_SECONDS=120
MAX_WAIT_MS=2000
USERS=20
WORKERS=2
CACHE_BYTES=67108864
CACHE_LAG=
MXARGS=
KEEP=0
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
    --samples) SAMPLES=$2; shift 2 ;;
    --max-seconds) MAX_SECONDS=$2; shift 2 ;;
    --max-wait-ms) MAX_WAIT_MS=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --query-cache-bytes) CACHE_BYTES=$2; shift 2 ;;
    --query-cache-max-lag-ms) CACHE_LAG=$2; shift 2 ;;
    --mxkeysd-args) MXARGS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "staleness.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

harness_tools
RESULTS=${OUT:-$HARNESS_HERE/results/staleness-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
harness_init staleness
harness_pg_start durable
CACHE=$(harness_cache_flags "$CACHE_BYTES" "$CACHE_LAG")
[ -n "$CACHE" ] || say "this mxkeysd has no --query-cache-bytes: measuring the database-bound baseline"
# shellcheck disable=SC2086
harness_mxkeysd a --workers "$WORKERS" $CACHE $MXARGS
URL_A=$MX_URL
# shellcheck disable=SC2086
harness_mxkeysd b --workers "$WORKERS" $CACHE $MXARGS
URL_B=$MX_URL

say "minting tokens: $USERS writers and a querier"
TOKENS=$HARNESS_TMP/tokens.json # tokens stay in the temp dir, removed on exit
{
    printf '{"querier": {"user_id": "@querier:localhost", "device_id": "Q", "access_token": "%s"},\n "writers": [' \
        "$(harness_mint @querier:localhost Q)"
    for i in $(seq 1 "$USERS"); do
        [ "$i" = 1 ] || printf ','
        printf '{"user_id": "@stale%d:localhost", "device_id": "W%d", "access_token": "%s"}' "$i" "$i" \
            "$(harness_mint "@stale$i:localhost" "W$i")"
    done
    printf ']}\n'
} >"$TOKENS"
chmod 600 "$TOKENS"

say "staleness: $SAMPLES samples, A=$URL_A B=$URL_B ${CACHE:-(no cache)}"
# set -e and pipefail: a violation (staleness.py exits 1) is this script's exit status 1.
{
    echo "Cross-instance staleness, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; two mxkeysd on one PostgreSQL 15"
    echo "(flags: --workers $WORKERS ${CACHE:-(no query cache)} $MXARGS); staleness = B shows the new device"
    echo "key - A's 200 arrived."
    echo
    $PY "$HARNESS_HERE/staleness.py" --url-a "$URL_A" --url-b "$URL_B" --tokens "$TOKENS" --samples "$SAMPLES" \
        --max-seconds "$MAX_SECONDS" --max-wait-ms "$MAX_WAIT_MS" --json "$RESULTS/staleness.json"
} | tee "$RESULTS/staleness.md"
