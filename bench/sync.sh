#!/usr/bin/env bash
# mxkeys beside a homeserver, measured: starts bench/bench_homeserver.py and a throwaway mxkeysd in --auth homeserver
# mode against it (embedded database, or --database-url), both on free ports of 127.0.0.1, runs mxkeys-sync-bench
# (incremental /sync through mxkeys and straight to the homeserver, device-key uploads the same way, then N held
# long-polls with mxkeysd's memory), prints the tables, and stops what it started by pid. Results go to
# bench/results/sync-<UTC timestamp>/ (git-ignored). About three minutes with the defaults.
#
#   bench/sync.sh [--polls N] [--rounds R] [--slice S] [--concurrency 1,4,16,64] [--upload-concurrency 1,4]
#                 [--phases sync,upload,hold] [--workers W] [--mxkeysd-args "--db-queue-depth 16384"]
#                 [--database-url URL] [--keep]
#
# --polls (default 10000) is capped by the descriptors mxkeysd may open (two per held sync); the script raises the
# soft limit to the hard one (`ulimit -n`) for every process it starts. Environment: MXKEYS_BUILD_DIR (default
# ./build), MXKEYSD and MXKEYS_SYNC_BENCH (binaries, instead of building).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=/usr/bin/python3

POLLS=10000
ROUNDS=3
SLICE=3
CONCURRENCY=1,4,16,64
UPLOAD_CONCURRENCY=1,4
PHASES=sync,upload,hold
WORKERS=
MXKEYSD_ARGS=
DATABASE_URL=
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
    --polls) POLLS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --slice) SLICE=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --upload-concurrency) UPLOAD_CONCURRENCY=$2; shift 2 ;;
    --phases) PHASES=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --mxkeysd-args) MXKEYSD_ARGS=$2; shift 2 ;;
    --database-url) DATABASE_URL=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sync.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$POLLS" in '' | *[!0-9]*) echo "sync.sh: --polls wants a number" >&2; exit 2 ;; esac
[ "$POLLS" -le 20000 ] || { echo "sync.sh: --polls is at most 20000" >&2; exit 2; }

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

if [ -z "${MXKEYSD:-}" ] || [ -z "${MXKEYS_SYNC_BENCH:-}" ]; then
    BUILD=${MXKEYS_BUILD_DIR:-$REPO/build}
    if [ ! -f "$BUILD/build.ninja" ]; then
        say "configuring $BUILD"
        meson setup "$BUILD" "$REPO" >/dev/null
    fi
    say "building mxkeysd and mxkeys-sync-bench in $BUILD"
    ninja -C "$BUILD" mxkeysd bench/mxkeys-sync-bench >/dev/null
    MXKEYSD=${MXKEYSD:-$BUILD/mxkeysd}
    MXKEYS_SYNC_BENCH=${MXKEYS_SYNC_BENCH:-$BUILD/bench/mxkeys-sync-bench}
fi

# Every process started here may open as many descriptors as the hard limit allows.
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)

RESULTS=$HERE/results/sync-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/summary.md") 2> >(tee -a "$RESULTS/progress.log" >&2)

STATE=$(mktemp -d /tmp/mxkeys-sync-bench.XXXXXX)
chmod 755 "$STATE" # the embedded cluster's unprivileged user must reach it
HS_PID=
MX_PID=
PG_PID=
cleanup() {
    for pid in $MX_PID $HS_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # mxkeysd drains for up to 30 s and then stops its embedded cluster
    for pid in $MX_PID $HS_PID; do
        for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # the embedded cluster of an mxkeysd that did not stop it (killed, crashed): its postmaster, by pid
    if [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; then
        kill -TERM "$PG_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ "$KEEP" = 1 ]; then
        echo "sync.sh: kept $STATE" >&2
    else
        rm -rf "$STATE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- the homeserver ---------------------------------------------------------------------------------------------------
# Tokens: one per long-poll, and enough for the sync and upload devices (the first 64 + 4).
TOKENS=$(( POLLS > 100 ? POLLS : 100 ))
say "starting bench_homeserver.py ($TOKENS tokens)"
$PY "$HERE/bench_homeserver.py" --port 0 --tokens "$TOKENS" --tokens-out "$STATE/tokens.json" \
    --ready-file "$STATE/hs.port" >"$RESULTS/homeserver.log" 2>&1 </dev/null &
HS_PID=$!
for _ in $(seq 1 100); do
    [ -s "$STATE/hs.port" ] && break
    kill -0 "$HS_PID" 2>/dev/null || { cat "$RESULTS/homeserver.log" >&2; exit 1; }
    sleep 0.1
done
[ -s "$STATE/hs.port" ] || { echo "sync.sh: the homeserver did not start" >&2; exit 1; }
HS_URL=http://127.0.0.1:$(cat "$STATE/hs.port")

# ---- mxkeysd -------------------------------------------------------------------------------------------------------
PORT=$(free_port)
MX_URL=http://127.0.0.1:$PORT
SERVE=(serve --listen "127.0.0.1:$PORT" --auth homeserver --homeserver-url "$HS_URL" --log-level warn)
[ -n "$WORKERS" ] && SERVE+=(--workers "$WORKERS")
# shellcheck disable=SC2206 # split on purpose: flags and values
[ -n "$MXKEYSD_ARGS" ] && SERVE+=($MXKEYSD_ARGS)
if [ -n "$DATABASE_URL" ]; then
    SERVE+=(--database-url "$DATABASE_URL")
else
    SERVE+=(--state-dir "$STATE/mxkeys")
    mkdir -p "$STATE/mxkeys"
    chmod 755 "$STATE/mxkeys"
fi
say "starting mxkeysd on $MX_URL beside $HS_URL (descriptors: $NOFILE)"
"$MXKEYSD" "${SERVE[@]}" >"$RESULTS/mxkeysd.log" 2>&1 </dev/null &
MX_PID=$!
for _ in $(seq 1 600); do
    curl -fs "$MX_URL/_mxkeys/ready" >/dev/null 2>&1 && break
    kill -0 "$MX_PID" 2>/dev/null || { tail -n 30 "$RESULTS/mxkeysd.log" >&2; exit 1; }
    sleep 0.1
done
curl -fs "$MX_URL/_mxkeys/ready" >/dev/null || { echo "sync.sh: mxkeysd did not become ready" >&2; exit 1; }

# CPU per request: the homeserver's and, with the embedded cluster, PostgreSQL's (its postmaster's children).
CPU_PIDS=(--hs-pid "$HS_PID")
if [ -z "$DATABASE_URL" ] && [ -f "$STATE/mxkeys/pg.location" ]; then
    PGDATA_DIR=$(sed -n 's/^data=//p' "$STATE/mxkeys/pg.location")
    PG_PID=$(head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
    [ -n "$PG_PID" ] && CPU_PIDS+=(--pg-pid "$PG_PID")
fi

# ---- the measurements ---------------------------------------------------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
WORKERS_SHOWN=${WORKERS:-$(nproc)}
echo "mxkeys beside a homeserver, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores (${CPU:-unknown CPU}),"
echo "$(uname -sr), mxkeysd --workers $WORKERS_SHOWN --auth homeserver $MXKEYSD_ARGS, $( [ -n "$DATABASE_URL" ] && echo "given database" || echo "embedded PostgreSQL"),"
echo "bench/bench_homeserver.py (one asyncio loop), mxkeys-sync-bench (one thread); all on the same cores."
echo
status=0
timeout --signal=TERM 900 "$MXKEYS_SYNC_BENCH" --mxkeys "$MX_URL" --homeserver "$HS_URL" --tokens "$STATE/tokens.json" \
    --pid "$MX_PID" "${CPU_PIDS[@]}" --phases "$PHASES" --concurrency "$CONCURRENCY" --upload-concurrency "$UPLOAD_CONCURRENCY" \
    --rounds "$ROUNDS" --slice "$SLICE" --polls "$POLLS" || status=$?
if ! kill -0 "$MX_PID" 2>/dev/null; then
    mx_status=0
    wait "$MX_PID" || mx_status=$?
    MX_PID=
    echo
    echo "**mxkeysd died during the run: exit status $mx_status$( [ "$mx_status" = 139 ] && echo " (SIGSEGV)")**"
    dmesg 2>/dev/null | grep 'mxkeysd.*segfault' | tail -n 1 | sed 's/^/    kernel: /' || true
    status=1
fi
echo
echo "targets: mxkeys adds < 1 ms per incremental sync at p50; < 16 KiB of mxkeysd memory per held sync;"
echo "10,000 held long-polls. mxkeysd warnings: $(grep -c . "$RESULTS/mxkeysd.log" || true) lines in $RESULTS/mxkeysd.log"
[ "$status" = 0 ] || echo "sync.sh: mxkeys-sync-bench exited with $status (unexpected answers above, or interrupted)" >&2
say "results in $RESULTS"
exit "$status"
