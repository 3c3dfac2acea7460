#!/usr/bin/env bash
# Soak: a bounded mixed load (uploads with one-time keys, claims, queries, backup writes and reads, from several
# clients) against mxkeysd on its own throwaway PostgreSQL cluster, while the database is hurt on a schedule: a fast
# restart, then a kill -9 of one of mxkeysd's backends, and so on. At the end every acknowledged write is looked
# up in the database (bench/soak_check.py): lost writes and one-time keys handed out twice must both be 0.
# Reports mxkeysd's RSS over time and the error counts by kind (status and errcode). Bench, not CI.
#
#   bench/soak.sh [--duration S] [--rate R] [--connections N] [--fault-every S] [--users U] [--devices D]
#                 [--otks N] [--upload-pool N] [--out DIR] [--keep]
#
# Defaults: an hour at 30 requests/s over 8 connections, a fault every 60 s. Environment: MXKEYSD and MXKEYS_BENCH
# (binaries; else built in MXKEYS_BUILD_DIR, default ./build), PG_BIN (PostgreSQL 15's bin directory).
# Results go to --out (default bench/results/soak-<UTC time>/): summary.md, rss.tsv, faults.tsv, bench.txt,
# bench.json, check.json. Exit status 1 when a write was lost or a key handed out twice.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=/usr/bin/python3
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

DURATION=3600
RATE=30
CONNECTIONS=8
FAULT_EVERY=60
USERS=25
DEVICES=2
OTKS=400
UPLOAD_POOL=2000
OUT=
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --fault-every) FAULT_EVERY=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --otks) OTKS=$2; shift 2 ;;
    --upload-pool) UPLOAD_POOL=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
say() { printf '== %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [ -z "${MXKEYSD:-}" ] || [ -z "${MXKEYS_BENCH:-}" ]; then
    BUILD=${MXKEYS_BUILD_DIR:-$REPO/build}
    [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" "$REPO" >/dev/null
    ninja -C "$BUILD" mxkeysd bench/mxkeys-bench >/dev/null
    MXKEYSD=${MXKEYSD:-$BUILD/mxkeysd}
    MXKEYS_BENCH=${MXKEYS_BENCH:-$BUILD/bench/mxkeys-bench}
fi
OUT=${OUT:-$HERE/results/soak-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# ---- the database: our own cluster, unix socket only ------------------------------------------------------------
TMP=$(mktemp -d /tmp/mxkeys-soak.XXXXXX)
chmod 755 "$TMP"
AS=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$TMP" # PostgreSQL refuses to run as root
    AS=(runuser -u postgres --)
fi
PIDS=()
SERVER_PID=
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    "${AS[@]}" "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    if [ "$KEEP" = 1 ]; then echo "soak.sh: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${AS[@]}" "$PG_BIN/initdb" -D "$TMP/data" -A trust -U mxkeys -E UTF8 --no-sync >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log"; exit 1; }
# fsync off: the faults here are process deaths, which keep the kernel's page cache (and so every WAL write) intact.
# synchronous_commit stays on: an acknowledged commit is in the WAL before mxkeys answers.
cat >>"$TMP/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$TMP'
fsync = off
max_connections = 50
CONF
pg() { "${AS[@]}" "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/pg.log" "$@"; }
pg -w start >/dev/null
"${AS[@]}" "$PG_BIN/createdb" -h "$TMP" -U mxkeys mxkeys
DB="host=$TMP port=5432 user=mxkeys dbname=mxkeys"

PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$MXKEYSD" serve --listen "127.0.0.1:$PORT" --database-url "$DB" --workers 2 --log-level warn \
    >"$OUT/mxkeysd.log" 2>&1 </dev/null &
SERVER_PID=$!
ready() { $PY -c "import urllib.request; urllib.request.urlopen('$URL/_mxkeys/ready', timeout=2)" 2>/dev/null; }
for _ in $(seq 1 300); do
    ready && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$OUT/mxkeysd.log" >&2; exit 1; }
    sleep 0.1
done
ready || { echo "soak.sh: mxkeysd did not become ready" >&2; exit 1; }

# ---- the load: mxkeys-bench in open loop at a fixed rate, with a ledger of every acknowledged write ------------
# One claim in 7 requests: --otks keys per device last the whole run at the default rate (a dry device answers its
# fallback key, which may repeat). Upload bodies carry 10 fresh keys each, 50 bodies per upload device (the server's
# cap of 500 stored keys), then repeat identically.
MIX=mix:upload=1,query=2,claim=1,backup-put=2,backup-get=1
LEDGER=$OUT/ledger.tsv
rm -f "$LEDGER"
say "set-up ($USERS users x $DEVICES devices, $OTKS one-time keys each), then ${DURATION}s at $RATE requests/s, a fault every ${FAULT_EVERY}s"
"$MXKEYS_BENCH" --url "$URL" \
    --mint-command "'$MXKEYSD' token create --user {user} --device {device} --database-url '$DB' 2>/dev/null" \
    --scenario "$MIX" --rate "$RATE" --connections "$CONNECTIONS" --threads 1 --setup-threads 2 \
    --duration "$DURATION" --warmup 0 --timeout 15 \
    --users "$USERS" --devices "$DEVICES" --otks "$OTKS" --query-users 10 \
    --upload-otks 10 --upload-pool "$UPLOAD_POOL" --sessions 20 --backup-sessions 200 --blob-pool 4 \
    --no-progress --ledger "$LEDGER" --json "$OUT/bench.json" >"$OUT/bench.txt" 2>"$OUT/bench.err" &
BENCH_PID=$!
PIDS+=("$BENCH_PID")
# The ledger is opened just before the load starts: no fault may hit the set-up (the bench gives up on an error there).
while [ ! -e "$LEDGER" ]; do
    kill -0 "$BENCH_PID" 2>/dev/null || { cat "$OUT/bench.err" >&2; exit 1; }
    sleep 0.5
done
T0=$(date +%s)
say "load running (mxkeysd pid $SERVER_PID)"

# RSS of mxkeysd every 10 s.
(
    printf 'elapsed_s\trss_kib\n'
    while kill -0 "$BENCH_PID" 2>/dev/null; do
        rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVER_PID/status" 2>/dev/null || true)
        [ -n "$rss" ] && printf '%s\t%s\n' "$(($(date +%s) - T0))" "$rss"
        sleep 10
    done
) >"$OUT/rss.tsv" &
PIDS+=($!)

# The faults, alternating: a fast restart of the cluster; a kill -9 of one backend serving mxkeysd (the postmaster
# then resets every backend and replays the WAL, so all of mxkeysd's connections break at once).
printf 'elapsed_s\tfault\tdetail\n' >"$OUT/faults.tsv"
n=0
while kill -0 "$BENCH_PID" 2>/dev/null; do
    for _ in $(seq 1 "$FAULT_EVERY"); do
        kill -0 "$BENCH_PID" 2>/dev/null || break 2
        sleep 1
    done
    [ $(($(date +%s) - T0)) -lt "$((DURATION - 2))" ] || break # none in the last seconds: the end check needs a live database
    n=$((n + 1))
    if [ $((n % 2)) = 1 ]; then
        start=$(date +%s.%N)
        pg -m fast -w restart >>"$TMP/pg-restart.log" 2>&1 || say "fast restart failed (see $TMP/pg.log)"
        printf '%s\tfast restart\t%.1f s\n' "$(($(date +%s) - T0))" "$(echo "$(date +%s.%N) - $start" | bc)" >>"$OUT/faults.tsv"
    else
        victim=$("${AS[@]}" "$PG_BIN/psql" -h "$TMP" -U mxkeys -d mxkeys -At -c \
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
             AND application_name <> 'psql' ORDER BY random() LIMIT 1" 2>/dev/null || true)
        if [ -n "$victim" ]; then
            kill -9 "$victim" 2>/dev/null || "${AS[@]}" kill -9 "$victim" || true
            printf '%s\tbackend kill -9\tpid %s\n' "$(($(date +%s) - T0))" "$victim" >>"$OUT/faults.tsv"
        else
            printf '%s\tbackend kill -9\tno backend found\n' "$(($(date +%s) - T0))" >>"$OUT/faults.tsv"
        fi
    fi
done
wait "$BENCH_PID" || { say "mxkeys-bench failed"; cat "$OUT/bench.err" >&2; exit 1; }
say "load done; checking every acknowledged write"
for _ in $(seq 1 100); do ready && break; sleep 0.2; done
status=0
"$PY" "$HERE/soak_check.py" "$LEDGER" "$DB" --json "$OUT/check.json" >/dev/null 2>"$OUT/check.err" || status=$?
cat "$OUT/check.err" >&2
[ -s "$OUT/check.json" ] || { echo "soak.sh: the check did not run" >&2; exit 1; }
# The check must be able to fail: one made-up acknowledged key that was never stored has to count as lost.
{ cat "$LEDGER"; printf 'U\t@soak-canary:localhost\tNODEV\tsigned_curve25519:CANARY\n'; } >"$TMP/canary.tsv"
if "$PY" "$HERE/soak_check.py" "$TMP/canary.tsv" "$DB" >/dev/null 2>&1; then
    echo "soak.sh: the end check missed a made-up lost write" >&2
    status=1
fi

# ---- summary --------------------------------------------------------------------------------------------------
"$PY" - "$OUT" "$DURATION" "$RATE" "$CONNECTIONS" "$FAULT_EVERY" >"$OUT/summary.md" <<'PYEOF'
import json, sys
out, duration, rate, conns, every = sys.argv[1:]
rss = [tuple(map(int, l.split("\t"))) for l in open(f"{out}/rss.tsv").read().splitlines()[1:] if l]
faults = [l.split("\t") for l in open(f"{out}/faults.tsv").read().splitlines()[1:] if l]
bench = json.load(open(f"{out}/bench.json"))
check = json.load(open(f"{out}/check.json"))
mib = lambda k: f"{k / 1024:.1f} MiB"
print(f"soak: {duration} s at {rate} requests/s over {conns} connections, a fault every {every} s\n")
print(f"faults: {len(faults)} ({sum(f[1] == 'fast restart' for f in faults)} fast restarts, "
      f"{sum(f[1] == 'backend kill -9' for f in faults)} backend kill -9)\n")
if rss:
    print(f"mxkeysd RSS: start {mib(rss[0][1])}, end {mib(rss[-1][1])}, max {mib(max(r for _, r in rss))}"
          f" ({len(rss)} samples)")
    step = max(1, len(rss) // 12)
    print("RSS over time: " + ", ".join(f"{t // 60}m {mib(r)}" for t, r in rss[::step]) + "\n")
print("| scenario | ok | errors | answers |\n| --- | ---: | ---: | --- |")
for name, sc in bench["scenarios"].items():
    answers = ", ".join(f"{k} {v}" for k, v in sc.get("answers", {}).items())
    print(f"| {name} | {sc['ok']} | {sc['errors']} | {answers} |")
print(f"\nrequests not sent on schedule (unsent): {bench.get('unsent', 0)}")
print("\nerrors by kind (scenario: status errcode, or connection: what failed):\n")
errs = bench.get("errors", [])
if not errs:
    print("- none")
for e in sorted(errs, key=lambda e: -e["count"]):
    print(f"- {e['scenario']}: {e['error']}: {e['count']}")
print("\nend check (bench/soak_check.py):\n")
for k, v in check.items():
    print(f"- {k}: {v}")
PYEOF
cat "$OUT/summary.md"
say "results in $OUT"
exit "$status"
