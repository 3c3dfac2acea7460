# shellcheck shell=bash
# Sourced by the bench scripts (connections.sh, openloop.sh, staleness.sh, cache_rss.sh): a throwaway PostgreSQL 15
# cluster (unix socket only, under /tmp, as `postgres` when run as root), mxkeysd instances on free ports of
# 127.0.0.1, a population set up once by mxkeys-bench, and cleanup of exactly what was started, by pid.
#
# Environment: MXKEYSD and MXKEYS_BENCH (binaries), or MXKEYS_BUILD_DIR (default ./build, built when missing).

HARNESS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_REPO=$(dirname "$HARNESS_HERE")
PY=/usr/bin/python3
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "$(basename "$0"): $*" >&2; exit 1; }

harness_tools() {
    if [ -z "${MXKEYSD:-}" ] || [ -z "${MXKEYS_BENCH:-}" ]; then
        local build=${MXKEYS_BUILD_DIR:-$HARNESS_REPO/build}
        [ -f "$build/build.ninja" ] || { say "configuring $build"; meson setup "$build" "$HARNESS_REPO" >/dev/null; }
        say "building mxkeysd and mxkeys-bench in $build"
        ninja -C "$build" mxkeysd bench/mxkeys-bench >/dev/null
        MXKEYSD=${MXKEYSD:-$build/mxkeysd}
        MXKEYS_BENCH=${MXKEYS_BENCH:-$build/bench/mxkeys-bench}
    fi
    [ -x "$MXKEYSD" ] || die "no mxkeysd at $MXKEYSD"
    [ -x "$MXKEYS_BENCH" ] || die "no mxkeys-bench at $MXKEYS_BENCH"
}

# True when this mxkeysd has the /keys/query cache (item 1 of issue 15): older builds reject its flags.
harness_has_query_cache() {
    # (not a pipe into grep -q: under pipefail, mxkeysd's SIGPIPE would read as "no")
    grep -q -- --query-cache-bytes <<<"$("$MXKEYSD" --help 2>&1)"
}

HARNESS_TMP=
HARNESS_PIDS=()
HARNESS_AS=()
HARNESS_PG_UP=
harness_cleanup() {
    local pid
    for pid in "${HARNESS_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${HARNESS_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    HARNESS_PIDS=()
    if [ -n "$HARNESS_PG_UP" ]; then
        "${HARNESS_AS[@]}" "$PG_BIN/pg_ctl" -D "$HARNESS_TMP/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$HARNESS_TMP" ]; then
        if [ "${KEEP:-0}" = 1 ]; then echo "kept $HARNESS_TMP" >&2; else rm -rf "$HARNESS_TMP"; fi
    fi
}

# harness_init NAME: the temp dir and the trap. Everything the script starts is stopped on exit, by pid.
harness_init() {
    HARNESS_TMP=$(mktemp -d "/tmp/mxkeys-$1.XXXXXX")
    chmod 755 "$HARNESS_TMP"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$HARNESS_TMP" # PostgreSQL refuses to run as root
        HARNESS_AS=(runuser -u postgres --)
    fi
    trap harness_cleanup EXIT
    trap 'exit 130' INT TERM
}

# harness_pg_start [durable|fast]: durable keeps PostgreSQL's default fsync/synchronous_commit (what a deployment
# has; commits wait for the WAL flush), fast turns both off (for bulk population where durability is not measured).
harness_pg_start() {
    local mode=${1:-durable}
    "${HARNESS_AS[@]}" "$PG_BIN/initdb" -D "$HARNESS_TMP/data" -A trust -U mxkeys -E UTF8 --no-sync \
        >"$HARNESS_TMP/initdb.log" 2>&1 || { cat "$HARNESS_TMP/initdb.log" >&2; exit 1; }
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$HARNESS_TMP'"
        echo "max_connections = 300"
        if [ "$mode" = fast ]; then
            echo "fsync = off"
            echo "synchronous_commit = off"
        fi
    } >>"$HARNESS_TMP/data/postgresql.conf"
    "${HARNESS_AS[@]}" "$PG_BIN/pg_ctl" -D "$HARNESS_TMP/data" -l "$HARNESS_TMP/pg.log" -w start >/dev/null
    HARNESS_PG_UP=1
    "${HARNESS_AS[@]}" "$PG_BIN/createdb" -h "$HARNESS_TMP" -U mxkeys mxkeys
    DB="host=$HARNESS_TMP port=5432 user=mxkeys dbname=mxkeys"
}

harness_free_port() {
    $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# harness_mxkeysd NAME [flags...]: starts mxkeysd on the cluster, waits until ready; sets MX_URL, MX_PID (and
# records the pid for cleanup). The log is $HARNESS_TMP/NAME.log.
harness_mxkeysd() {
    local name=$1
    shift
    local port
    port=$(harness_free_port)
    mkdir -p "$HARNESS_TMP/state-$name"
    "$MXKEYSD" serve --listen "127.0.0.1:$port" --database-url "$DB" --state-dir "$HARNESS_TMP/state-$name" \
        --log-level warn "$@" >"$HARNESS_TMP/$name.log" 2>&1 </dev/null &
    MX_PID=$!
    HARNESS_PIDS+=("$MX_PID")
    MX_URL=http://127.0.0.1:$port
    for _ in $(seq 1 300); do
        curl -fs "$MX_URL/_mxkeys/ready" >/dev/null 2>&1 && return 0
        kill -0 "$MX_PID" 2>/dev/null || { tail -n 20 "$HARNESS_TMP/$name.log" >&2; die "mxkeysd $name exited"; }
        sleep 0.1
    done
    die "mxkeysd $name did not become ready"
}

# harness_stop PID: stops one mxkeysd this script started.
harness_stop() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${HARNESS_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    HARNESS_PIDS=("${keep[@]}")
}

harness_mint_command() {
    echo "'$MXKEYSD' token create --user {user} --device {device} --database-url '$DB' 2>/dev/null"
}

# harness_metric URL NAME: the value of one Prometheus metric (summed over its label sets), or "n/a".
harness_metric() {
    { curl -fs "$1/metrics" 2>/dev/null || true; } |
        awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2; f = 1 }
                       END { if (f) printf "%.0f\n", s; else print "n/a" }'
}

# harness_rss_kib PID: VmRSS of a process in KiB.
harness_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# harness_claim_topup STATE PER: PER more one-time keys for every device of the population in STATE, so claim runs
# claim one-time keys (the path measured), not the cheaper fallback key, however fast they go.
harness_claim_topup() {
    local prefix
    prefix=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["prefix"])' "$1")
    psql "$DB" -q -At -v ON_ERROR_STOP=1 -v pattern="@$prefix-%" -v tag="$(date +%s%N)_" -v per_device="$2" \
        -f "$HARNESS_HERE/pgbench/claim_topup.sql" >/dev/null
}

# harness_json FILE EXPR: evaluates EXPR with d = the JSON document.
harness_json() { $PY -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

# harness_mint USER DEVICE: a local access token for the device (printed; never logged).
harness_mint() {
    "$MXKEYSD" token create --user "$1" --device "$2" --database-url "$DB" 2>/dev/null
}

# harness_cache_flags BYTES [MAX_LAG_MS]: the query-cache flags when this mxkeysd has the cache, else nothing.
harness_cache_flags() {
    if harness_has_query_cache; then
        echo "--query-cache-bytes $1${2:+ --query-cache-max-lag-ms $2}"
    fi
}
