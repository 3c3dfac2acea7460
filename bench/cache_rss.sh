#!/usr/bin/env bash
# Memory of the /keys/query cache at its bound (issue 15 target: "RSS measured at the bound with 100,000 cached
# users"). Starts one mxkeysd with --query-cache-bytes B on a throwaway PostgreSQL cluster (fsync off: durability is
# not what is measured here, and the population is 100,000 commits), creates U users with one device each (device
# keys uploaded through mxkeysd, signed), queries every user twice in batches, and prints after each phase the
# cache's bytes, users, hits, misses and evictions from /metrics and mxkeysd's VmRSS and VmHWM from /proc.
# Exit status 1 when the cache reports more bytes than its bound. Results in bench/results/cache-rss-<time>/.
#
#   bench/cache_rss.sh [--users U] [--query-cache-bytes B] [--batch N] [--threads N] [--max-seconds S]
#                      [--workers N] [--mxkeysd-args "..."] [--out DIR] [--keep]
#
# Defaults: 100,000 users, the cache's default bound (67108864), 100 users per query, 8 client threads, each phase
# bounded by 300 s (a few minutes in all on two cores). With --query-cache-bytes 0, or an mxkeysd without the cache,
# it measures the baseline. Environment: MXKEYSD, MXKEYS_BENCH or MXKEYS_BUILD_DIR (default ./build).
set -euo pipefail
# shellcheck source=harness.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"

USERS=100000
CACHE_BYTES=67108864
BATCH=100
THREADS=8
MAX_SECONDS=300
WORKERS=2
MXARGS=
KEEP=0
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
    --users) USERS=$2; shift 2 ;;
    --query-cache-bytes) CACHE_BYTES=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --max-seconds) MAX_SECONDS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --mxkeysd-args) MXARGS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cache_rss.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

harness_tools
RESULTS=${OUT:-$HARNESS_HERE/results/cache-rss-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
harness_init cache-rss
harness_pg_start fast
CACHE=$(harness_cache_flags "$CACHE_BYTES")
BOUND=()
if [ -n "$CACHE" ]; then
    BOUND=(--cache-bytes "$CACHE_BYTES")
else
    say "this mxkeysd has no --query-cache-bytes: measuring the baseline without a cache"
fi
# shellcheck disable=SC2086
harness_mxkeysd main --workers "$WORKERS" $CACHE $MXARGS
say "mxkeysd pid $MX_PID on $MX_URL ${CACHE:-(no query cache)}; $USERS users, $BATCH per query"
{
    echo "Query cache memory, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; mxkeysd --workers $WORKERS"
    echo "${CACHE:-(no query cache)} ${MXARGS:+$MXARGS }on PostgreSQL 15; $USERS users x 1 device, $BATCH users per"
    echo "/keys/query, $THREADS client threads."
    echo
    $PY "$HARNESS_HERE/cache_population.py" --url "$MX_URL" --pid "$MX_PID" --db "$DB" --users "$USERS" \
        --batch "$BATCH" --threads "$THREADS" --max-seconds "$MAX_SECONDS" "${BOUND[@]}"
} | tee "$RESULTS/cache_rss.md"
