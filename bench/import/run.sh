#!/usr/bin/env bash
# Import benchmark: a generated Synapse-layout database (synapse_gen.sql) imported into an empty mxkeys database,
# then imported again (nothing changed), on one throwaway PostgreSQL 15 cluster under /tmp. Prints the rates and the
# importer's peak resident memory. Scale with USERS DEVICES OTKS SESSIONS (defaults: the issue's 10,000 users,
# 50,000 devices, 5 M one-time keys, 1 M backup sessions).
#   bench/import/run.sh [path/to/mxkeysd]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MXKEYSD=$(readlink -f "${1:-$HERE/../../build/mxkeysd}")
USERS=${USERS:-10000} DEVICES=${DEVICES:-5} OTKS=${OTKS:-100} SESSIONS=${SESSIONS:-100}
PG=/usr/lib/postgresql/15/bin
DIR=$(mktemp -d /tmp/mxkeys-import-bench.XXXXXX)
chmod 755 "$DIR"
AS=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$DIR"; AS=(runuser -u postgres --); fi
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { "${AS[@]}" "$PG/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
[ -n "${KEEP:-}" ] && echo "keeping $DIR (port $PORT)" || trap cleanup EXIT
"${AS[@]}" "$PG/initdb" -D "$DIR/data" -A trust -U bench -E UTF8 --locale=C --no-sync >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
shared_buffers = 512MB
max_wal_size = 4GB
synchronous_commit = off
CONF
"${AS[@]}" "$PG/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null
PSQL=("$PG/psql" -h 127.0.0.1 -p "$PORT" -U bench -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE synapse" -c "CREATE DATABASE mxkeys"
echo "generating: $USERS users x $DEVICES devices, $OTKS one-time keys per device, $SESSIONS sessions per user"
t0=$(date +%s.%N)
"${PSQL[@]}" -d synapse -v users="$USERS" -v devices="$DEVICES" -v otks="$OTKS" -v sessions="$SESSIONS" \
    -f "$HERE/synapse_gen.sql"
t1=$(date +%s.%N)
printf 'generated in %.0f s; Synapse database %s\n' "$(echo "$t1 - $t0" | bc)" \
    "$("${PSQL[@]}" -d synapse -Atc "SELECT pg_size_pretty(pg_database_size('synapse'))")"
FROM="host=127.0.0.1 port=$PORT user=bench dbname=synapse"
TO="host=127.0.0.1 port=$PORT user=bench dbname=mxkeys"
"$MXKEYSD" migrate --database-url "$TO" --log-level warn

# Runs one import and samples the importer's peak resident set (VmHWM) from /proc until it exits.
run() { # run <label> [import flags...]
    local label=$1; shift
    local start end peak=0 pid
    start=$(date +%s.%N)
    "$MXKEYSD" import synapse --from "$FROM" --database-url "$TO" --validation lenient --log-level warn "$@" \
        >"$DIR/$label.out" 2>"$DIR/$label.err" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
        sleep 0.2
    done
    wait "$pid" || { cat "$DIR/$label.err" "$DIR/$label.out" >&2; return 1; }
    end=$(date +%s.%N)
    rows=$(sed -n 's/.* \([0-9]*\) rows read in .*/\1/p' "$DIR/$label.out")
    printf '%-22s %10d rows in %7.1f s = %8.0f rows/s; importer peak RSS %d MiB\n' "$label" "$rows" \
        "$(echo "$end - $start" | bc)" "$(echo "$rows / ($end - $start)" | bc)" $((peak / 1024))
    grep -E '^(table|device_keys|one_time_keys|fallback_keys|cross_signing|cross_signatures|backup)' "$DIR/$label.out" |
        sed 's/^/    /'
}
[ -n "${GEN_ONLY:-}" ] && exit 0
run "first import"
run "second import"
run "verify (sample)" --verify --users '^@u1[0-9]?:'
printf 'mxkeys database after the import: %s\n' \
    "$("${PSQL[@]}" -d mxkeys -Atc "SELECT pg_size_pretty(pg_database_size('mxkeys'))")"
