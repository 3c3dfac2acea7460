#!/usr/bin/env bash
# CI smoke run of mxkeys-bench: a throwaway PostgreSQL (unix socket only, in a temp dir) and mxkeysd on 127.0.0.1,
# a small population, then a 10-second mix of every scenario with --check. Fails on any unexpected answer; asserts
# no timing. Usage: bench/smoke.sh MXKEYSD MXKEYS_BENCH
set -euo pipefail
MXKEYSD=${1:?usage: smoke.sh MXKEYSD MXKEYS_BENCH}
BENCH=${2:?usage: smoke.sh MXKEYSD MXKEYS_BENCH}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PY=/usr/bin/python3

TMP=$(mktemp -d /tmp/mxkeys-bench-smoke.XXXXXX)
chmod 755 "$TMP"
AS=()
if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
    chown postgres: "$TMP"
    AS=(runuser -u postgres --)
fi
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    "${AS[@]}" "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

"${AS[@]}" "$PG_BIN/initdb" -D "$TMP/data" -A trust -U mxkeys -E UTF8 --no-sync >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log"; exit 1; }
cat >>"$TMP/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$TMP'
fsync = off
synchronous_commit = off
max_connections = 50
CONF
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/pg.log" -w start >/dev/null
"${AS[@]}" "$PG_BIN/createdb" -h "$TMP" -U mxkeys mxkeys
DB="host=$TMP port=5432 user=mxkeys dbname=mxkeys"

PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$MXKEYSD" serve --listen "127.0.0.1:$PORT" --database-url "$DB" --workers 2 --log-level warn \
    >"$TMP/mxkeysd.log" 2>&1 </dev/null &
SERVER_PID=$!
for _ in $(seq 1 300); do
    if $PY -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$PORT/_mxkeys/ready', timeout=1)" \
        2>/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/mxkeysd.log"; exit 1; }
    sleep 0.1
done

status=0
"$BENCH" --url "http://127.0.0.1:$PORT" \
    --mint-command "'$MXKEYSD' token create --user {user} --device {device} --database-url '$DB' 2>/dev/null" \
    --scenario mix:upload=1,query=3,claim=2,changes=1,backup-put=1,backup-get=1,cross-sign=1 \
    --duration 10 --warmup 1 --concurrency 4 --threads 2 --setup-threads 4 \
    --users 8 --devices 2 --otks 20 --upload-pool 10 --sessions 20 --backup-sessions 100 --blob-pool 2 \
    --no-progress --check --json "$TMP/smoke.json" || status=$?
if [ "$status" != 0 ]; then
    echo "--- mxkeysd log (tail)"
    tail -n 40 "$TMP/mxkeysd.log"
fi
exit "$status"
