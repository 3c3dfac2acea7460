#!/usr/bin/env bash
# The one documented bench command. Starts a throwaway mxkeysd (embedded database, or --database-url), sets up a
# population once, then for query, claim and backup-put runs mxkeys-bench and pgbench with the same SQL on the same
# database back to back, runs the standard mix with plots, and prints the ratio table. Results go to
# bench/results/<UTC timestamp>/ (git-ignored). Every server it starts listens on 127.0.0.1 or a unix socket only.
#
#   bench/run.sh [--duration S] [--rounds N] [--mix-duration S] [--concurrency N] [--users U] [--devices D] [--otks N]
#                [--backup-sessions B] [--scenarios "query claim backup-put"] [--mix SPEC] [--database-url URL]
#                [--other-url URL --other-tokens FILE] [--query-cache-bytes B] [--churn-per-s F] [--keep]
#
# --scenarios picks the paired mxkeys/pgbench comparisons from query, claim, backup-put, upload (device keys + 50 fresh
# signed one-time keys) and backup-get (a user's whole backup of --backup-sessions sessions; default 1000).
#
# The query scenario, when mxkeysd has the /keys/query cache (--query-cache-bytes in its --help), is measured three
# ways in the same run: on the instance with the cache (its size --query-cache-bytes, default mxkeysd's own), every
# population user queried once before each timed slice (warm); on a second instance on the same database with
# --query-cache-bytes 0 (every query goes to the database); and warm while bench/churn.py re-uploads new device keys
# for a fraction --churn-per-s of the users per second (default 0.1; 0 skips it) through the cached instance. The
# extra table gives each figure, its ratio to the database-bound one, the cache's hit ratio and p99.
#
# --other-url/--other-tokens run the same single-scenario loads against another homeserver (a tokens file of
# {user_id, device_id, access_token}) and add its figures to the table. Environment: MXKEYS_BUILD_DIR (default
# ./build), MXKEYSD and MXKEYS_BENCH (binaries, instead of building).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=/usr/bin/python3
PG_BIN=/usr/lib/postgresql/15/bin

DURATION=12
ROUNDS=3
MIX_DURATION=30
CONCURRENCY=16
USERS=50
DEVICES=5
OTKS=150
BACKUP_SESSIONS=1000
SCENARIOS="query claim backup-put"
MIX=mix:upload=1,query=4,claim=2,changes=1,backup-put=1,backup-get=1,cross-sign=1
DATABASE_URL=
OTHER_URL=
OTHER_TOKENS=
OTHER_READY=
KEEP=0
QUERY_CACHE_BYTES=
CHURN_PER_S=0.1
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --mix-duration) MIX_DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --otks) OTKS=$2; shift 2 ;;
    --mix) MIX=$2; shift 2 ;;
    --backup-sessions) BACKUP_SESSIONS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --database-url) DATABASE_URL=$2; shift 2 ;;
    --other-url) OTHER_URL=$2; shift 2 ;;
    --other-tokens) OTHER_TOKENS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --query-cache-bytes) QUERY_CACHE_BYTES=$2; shift 2 ;;
    --churn-per-s) CHURN_PER_S=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for sc in $SCENARIOS; do
    case "$sc" in
    query | claim | backup-put | upload | backup-get) ;;
    *) echo "run.sh: --scenarios: unknown scenario $sc (query claim backup-put upload backup-get)" >&2; exit 2 ;;
    esac
done
if [ -n "$OTHER_URL" ] && [ -z "$OTHER_TOKENS" ]; then
    echo "run.sh: --other-url needs --other-tokens" >&2
    exit 2
fi

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

# ---- tools ------------------------------------------------------------------------------------------------------
if [ -z "${MXKEYSD:-}" ] || [ -z "${MXKEYS_BENCH:-}" ]; then
    BUILD=${MXKEYS_BUILD_DIR:-$REPO/build}
    if [ ! -f "$BUILD/build.ninja" ]; then
        say "configuring $BUILD"
        meson setup "$BUILD" "$REPO" >/dev/null
    fi
    say "building mxkeysd and mxkeys-bench in $BUILD"
    ninja -C "$BUILD" mxkeysd bench/mxkeys-bench >/dev/null
    MXKEYSD=${MXKEYSD:-$BUILD/mxkeysd}
    MXKEYS_BENCH=${MXKEYS_BENCH:-$BUILD/bench/mxkeys-bench}
fi
install_pkg() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing $1"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null 2>&1; } ||
            echo "run.sh: could not install $1" >&2
    fi
}
command -v gnuplot >/dev/null || install_pkg gnuplot-nox
PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench || true)
if [ -z "$PGBENCH" ]; then
    install_pkg postgresql-15
    PGBENCH=$PG_BIN/pgbench
fi
[ -x "$PGBENCH" ] || { echo "run.sh: pgbench not found (Debian package postgresql-15)" >&2; exit 2; }

RESULTS=$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/summary.txt") 2> >(tee -a "$RESULTS/summary.txt" >&2)

# ---- a throwaway mxkeysd ----------------------------------------------------------------------------------------
STATE=$(mktemp -d /tmp/mxkeys-bench-run.XXXXXX)
chmod 755 "$STATE" # the embedded cluster's unprivileged user must reach it (otherwise it moves under /var/lib)
SERVER_PID=
NOCACHE_PID=
CHURN_PID=
cleanup() {
    local pid
    for pid in $CHURN_PID $NOCACHE_PID $SERVER_PID; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then
        echo "run.sh: kept $STATE" >&2
    else
        rm -rf "$STATE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
SERVE=(serve --listen "127.0.0.1:$PORT" --log-level warn)
if [ -n "$DATABASE_URL" ]; then
    SERVE+=(--database-url "$DATABASE_URL")
    MINT_DB="--database-url '$DATABASE_URL'"
else
    SERVE+=(--state-dir "$STATE")
    MINT_DB="--state-dir '$STATE'"
fi
# The /keys/query cache (issue 15): an mxkeysd built before it rejects its flags, and the cache rows are skipped.
QUERY_CACHE=
case " $SCENARIOS " in
*" query "*)
    if grep -q -- --query-cache-bytes <<<"$("$MXKEYSD" --help 2>&1)"; then
        QUERY_CACHE=1
        [ -z "$QUERY_CACHE_BYTES" ] || SERVE+=(--query-cache-bytes "$QUERY_CACHE_BYTES")
    else
        echo "run.sh: this mxkeysd has no --query-cache-bytes: query is measured without the cache rows" >&2
    fi
    ;;
esac
say "starting mxkeysd on $URL ($([ -n "$DATABASE_URL" ] && echo "given database" || echo "embedded database in $STATE"))"
"$MXKEYSD" "${SERVE[@]}" >"$RESULTS/mxkeysd.log" 2>&1 </dev/null &
SERVER_PID=$!
for _ in $(seq 1 600); do
    curl -fs "$URL/_mxkeys/ready" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$RESULTS/mxkeysd.log" >&2; exit 1; }
    sleep 0.1
done
curl -fs "$URL/_mxkeys/ready" >/dev/null || { echo "run.sh: mxkeysd did not become ready" >&2; exit 1; }

if [ -n "$DATABASE_URL" ]; then
    PGCONN=$DATABASE_URL
else
    SOCK=$(sed -n 's/^socket=//p' "$STATE/pg.location")
    PGCONN="host=$SOCK port=5432 user=mxkeys dbname=mxkeys"
fi

MINT="'$MXKEYSD' token create --user {user} --device {device} $MINT_DB 2>/dev/null"
BENCH=("$MXKEYS_BENCH" --url "$URL" --mint-command "$MINT" --state "$RESULTS/state.json")

# ---- set-up, once -------------------------------------------------------------------------------------------------
say "set-up: $USERS users x $DEVICES devices, $OTKS one-time keys each, backups of $BACKUP_SESSIONS sessions"
"${BENCH[@]}" --setup-only --users "$USERS" --devices "$DEVICES" --otks "$OTKS" --backup-sessions "$BACKUP_SESSIONS" \
    --sessions 100 --query-users 10 --pgbench-out "$RESULTS"
# Fresh planner statistics after the bulk writes of set-up, for both sides alike.
psql "$PGCONN" -q -At -v ON_ERROR_STOP=1 -c ANALYZE
PGVARS=()
while IFS= read -r line; do PGVARS+=(-D "$line"); done <"$RESULTS/vars"
PREFIX=$(sed -n 's/^prefix=//p' "$RESULTS/vars")

if [ -n "$QUERY_CACHE" ]; then
    # The database-bound figure: a second instance on the same database with the cache off.
    NC_PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    NC_URL=http://127.0.0.1:$NC_PORT
    mkdir -p "$STATE/nocache"
    say "starting a second mxkeysd on $NC_URL with --query-cache-bytes 0 (same database)"
    "$MXKEYSD" serve --listen "127.0.0.1:$NC_PORT" --log-level warn --database-url "$PGCONN" \
        --state-dir "$STATE/nocache" --query-cache-bytes 0 >"$RESULTS/mxkeysd-nocache.log" 2>&1 </dev/null &
    NOCACHE_PID=$!
    for _ in $(seq 1 300); do
        curl -fs "$NC_URL/_mxkeys/ready" >/dev/null 2>&1 && break
        kill -0 "$NOCACHE_PID" 2>/dev/null || { tail -n 30 "$RESULTS/mxkeysd-nocache.log" >&2; exit 1; }
        sleep 0.1
    done
    curl -fs "$NC_URL/_mxkeys/ready" >/dev/null || { echo "run.sh: the second mxkeysd did not become ready" >&2; exit 1; }
    BENCH_NC=("$MXKEYS_BENCH" --url "$NC_URL" --mint-command "$MINT" --state "$RESULTS/state.json")
fi
# metric NAME: one Prometheus metric of the cached instance (summed over label sets; 0 when absent or unreadable,
# never a failure that would end the run).
metric() {
    { curl -fs "$URL/metrics" 2>/dev/null || true; } |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}
# Fills of the cache thrown away because the user changed (or another fill took over) while they were read.
VOIDED='mxkeys_query_cache_fills_total{outcome="voided"}'
# hit_ratio HITS0 MISSES0: the cache's hit ratio since those counter readings.
hit_ratio() {
    local h m
    h=$(( $(metric mxkeys_query_cache_hits_total) - $1 ))
    m=$(( $(metric mxkeys_query_cache_misses_total) - $2 ))
    $PY -c "print('%.3f' % ($h / ($h + $m)) if $h + $m > 0 else 'n/a')"
}

if [ -n "$OTHER_URL" ]; then
    say "set-up on the other server $OTHER_URL (tokens from $OTHER_TOKENS)"
    OTHER_BENCH=("$MXKEYS_BENCH" --url "$OTHER_URL" --tokens "$OTHER_TOKENS" --state "$RESULTS/other-state.json")
    OTHER_READY=1
    "${OTHER_BENCH[@]}" --setup-only --otks "$OTKS" --backup-sessions "$BACKUP_SESSIONS" --sessions 100 --query-users 10 ||
        { OTHER_READY=; echo "run.sh: set-up on $OTHER_URL failed: its scenarios are skipped" >&2; }
fi

json() { $PY -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }
# median_of "a b c" "d e f" ...: the median of each list (n/a entries skipped), on one line.
median_of() {
    $PY - "$@" <<'MEDIAN'
import statistics, sys
out = []
for arg in sys.argv[1:]:
    raw = [x for x in arg.split() if x not in ("n/a", "nan")]
    v = [float(x) for x in raw]
    m = statistics.median(v) if v else None
    counts = all("." not in x for x in raw)  # counters stay whole numbers
    out.append("n/a" if m is None else "%.0f" % m if counts else "%.3f" % m if abs(m) < 10 else "%.1f" % m)
print(" ".join(out))
MEDIAN
}
ratio_of() { $PY -c "print('%.2f' % ($1 / $2))" 2>/dev/null || echo "n/a"; }
pgbench_tps() { sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$1"; }

# One scenario against the other server; prints its req/s for the table, or "skipped: <why>" when the server does not
# support it (set-up could not prepare it, or no request succeeded), so one missing feature never stops the run.
other_scenario() {
    local sc=$1 out=$RESULTS/other-$1
    say "$sc: the other server $OTHER_URL, ${DURATION}s"
    if [ -z "$OTHER_READY" ]; then
        echo "skipped: set-up on the other server failed"
        return
    fi
    rm -f "$out.json"
    "${OTHER_BENCH[@]}" --scenario "$sc" --duration "$DURATION" --warmup 2 --concurrency "$CONCURRENCY" \
        --json "$out.json" --no-progress >"$out.txt" 2>&1 || true
    local why
    if [ ! -s "$out.json" ]; then
        why=$(grep -m1 'mxkeys-bench:' "$out.txt" | sed 's/^mxkeys-bench: //' | cut -c1-160)
        echo "run.sh: $sc is not available on $OTHER_URL, skipped: ${why:-see $out.txt}" >&2
        echo "skipped: ${why:-no result}"
        return
    fi
    local ok rate
    ok=$(json "$out.json" "d['scenarios']['$sc']['ok']")
    rate=$(json "$out.json" "round(d['scenarios']['$sc']['throughput'], 1)")
    if [ "$ok" = 0 ]; then
        why=$(json "$out.json" "'; '.join('%s x%d' % (e['error'], e['count']) for e in d.get('errors', [])[:2]) or 'no successful answer'")
        echo "run.sh: $sc: no request succeeded on $OTHER_URL ($why), skipped" >&2
        echo "skipped: $why"
        return
    fi
    local unexpected
    unexpected=$(json "$out.json" "d.get('unexpected_errors', 0)")
    [ "$unexpected" = 0 ] || echo "run.sh: $sc against $OTHER_URL: $unexpected unexpected answers (see $out.txt)" >&2
    if [ "$sc" = claim ]; then
        # Fallback answers are cheaper than claims: say how many there were and why (mxkeys-bench's note).
        local fb
        fb=$(json "$out.json" "d['scenarios']['claim']['answers'].get('fallback', 0)")
        if [ "$fb" != 0 ]; then
            grep -A1 '^note: .* claims got the fallback key' "$out.txt" | tr '\n' ' ' >&2
            echo >&2
            rate="$rate ($fb of $ok answers were fallback keys: $(json "$out.json" \
                "'devices ran out' if d.get('claim_stock', {}).get('devices_dry') else 'devices still held one-time keys'"))"
        fi
    fi
    echo "$rate"
}

# ---- mxkeys vs the raw database, per scenario -----------------------------------------------------------------------
declare -A MX RAW RATIO ROUNDS_TEXT OTHER LABEL
LABEL[query]="query (10 users x $DEVICES devices)${QUERY_CACHE:+, cache warm}"
LABEL[claim]="claim (1 one-time key)"
LABEL[backup-put]="backup-put (100 sessions)"
LABEL[upload]="upload (device keys + 50 fresh signed one-time keys)"
LABEL[backup-get]="backup-get (whole backup, $BACKUP_SESSIONS sessions)"
# Paired rounds: mxkeys, then pgbench, ROUNDS times per scenario. Other workloads on a shared machine drift over
# minutes; a ratio of two figures taken seconds apart, and the median over rounds, is much steadier than one long
# run of each.
SLICE=$(( DURATION / ROUNDS > 2 ? DURATION / ROUNDS : 2 ))
# pgbench's upload: 50 one-time keys the size of real signed ones (the statement does not verify signatures).
OTK_TEMPLATE=$($PY - "@$PREFIX-0:$(sed -n 's/^server=//p' "$RESULTS/vars")" <<'PYEOF'
import base64, json, os, sys
b64 = lambda n: base64.b64encode(os.urandom(n)).decode().rstrip("=")
print(json.dumps({"signed_curve25519:KEYID_%d" % i: {"key": b64(32), "signatures": {sys.argv[1]: {"ed25519:PGB": b64(64)}}}
                  for i in range(50)}, separators=(",", ":")))
PYEOF
)
for sc in $SCENARIOS; do
    script=${sc//-/_}
    if [ "$sc" = claim ]; then
        # One-time keys for every claim slice of both sides, sized for up to 8000 claims/s: neither side may fall
        # back to the (much cheaper) fallback key. Copies of real signed keys; the claim path does not look inside.
        per=$(( 8000 * (2 * SLICE + 1) * ROUNDS / (USERS * DEVICES) + 50 ))
        say "claim: topping up $per one-time keys per device"
        psql "$PGCONN" -q -At -v ON_ERROR_STOP=1 -v pattern="@$PREFIX-%" -v tag="$(date +%s)_" \
            -v per_device="$per" -f "$HERE/pgbench/claim_topup.sql" >/dev/null
    fi
    mx_rates=()
    raw_rates=()
    nc_rates=()
    hit_ratios=()
    voided=()
    mx_p99=()
    nc_p99=()
    for round in $(seq 1 "$ROUNDS"); do
        say "$sc, round $round/$ROUNDS: mxkeys-bench ${SLICE}s, then pgbench ${SLICE}s (concurrency $CONCURRENCY)"
        out=$RESULTS/$sc-$round
        # upload: enough distinct bodies for up to 800 uploads/s, so every measured upload stores fresh keys
        pool=()
        [ "$sc" = upload ] && pool=(--upload-pool $(( 800 * (SLICE + 1) )))
        if [ "$sc" = query ] && [ -n "$QUERY_CACHE" ]; then
            # warm: every population user queried once before the timed slice
            $PY "$HERE/query_warm.py" --url "$URL" --state "$RESULTS/state.json" ||
                echo "run.sh: the query warm-up had failures" >&2
            h0=$(metric mxkeys_query_cache_hits_total)
            m0=$(metric mxkeys_query_cache_misses_total)
            v0=$(metric "$VOIDED")
        fi
        "${BENCH[@]}" --scenario "$sc" --duration "$SLICE" --warmup 1 --concurrency "$CONCURRENCY" "${pool[@]}" \
            --json "$out.json" --check --no-progress >"$out.txt" 2>&1 ||
            { cat "$out.txt"; echo "run.sh: $sc had unexpected errors (above)" >&2; }
        mx_rates+=("$(json "$out.json" "d['scenarios']['$sc']['throughput']")")
        if [ "$sc" = query ] && [ -n "$QUERY_CACHE" ]; then
            hit_ratios+=("$(hit_ratio "$h0" "$m0")")
            voided+=("$(( $(metric "$VOIDED") - v0 ))")
            mx_p99+=("$(json "$out.json" "d['scenarios']['query']['latency_ms']['p99']")")
            say "query, round $round/$ROUNDS: the same load on the instance with --query-cache-bytes 0, ${SLICE}s"
            "${BENCH_NC[@]}" --scenario query --duration "$SLICE" --warmup 1 --concurrency "$CONCURRENCY" \
                --json "$out-nocache.json" --check --no-progress >"$out-nocache.txt" 2>&1 ||
                { cat "$out-nocache.txt"; echo "run.sh: query (cache off) had unexpected errors (above)" >&2; }
            nc_rates+=("$(json "$out-nocache.json" "d['scenarios']['query']['throughput']")")
            nc_p99+=("$(json "$out-nocache.json" "d['scenarios']['query']['latency_ms']['p99']")")
        fi
        extra=()
        if [ "$sc" = backup-put ]; then
            # the same 32-bit index clock as mxkeys-bench (bench_index_start in bench/scenarios.c)
            epoch=$(sed -n 's/^backup_epoch=//p' "$RESULTS/vars")
            extra=(-D "start=$((2147483647 - ($(date +%s) - epoch) * 5000))" -D "clients=$CONCURRENCY" -D k=0)
        elif [ "$sc" = upload ]; then
            extra=(-D "otks=$OTK_TEMPLATE" -D "tag=$(date +%s%N)" -D k=0)
        fi
        "$PGBENCH" -n -M prepared -c "$CONCURRENCY" -j "$(nproc)" -T "$SLICE" -f "$HERE/pgbench/$script.sql" \
            "${PGVARS[@]}" "${extra[@]}" "$PGCONN" >"$RESULTS/pgbench-$sc-$round.log" 2>&1 ||
            { tail -n 20 "$RESULTS/pgbench-$sc-$round.log" >&2; exit 1; }
        raw_rates+=("$(pgbench_tps "$RESULTS/pgbench-$sc-$round.log")")
        if [ "$sc" = upload ]; then
            rep=$(json "$out.json" "d['scenarios']['upload']['answers']['repeated']")
            [ "$rep" = 0 ] || echo "run.sh: WARNING: $rep of mxkeys' uploads repeated a body (no fresh keys)" >&2
        fi
        if [ "$sc" = claim ]; then
            fb=$(json "$out.json" "d['scenarios']['claim']['answers']['fallback']")
            [ "$fb" = 0 ] || echo "run.sh: WARNING: $fb of mxkeys' claims got fallback keys" >&2
        fi
    done
    read -r MX[$sc] RAW[$sc] RATIO[$sc] ROUNDS_TEXT[$sc] < <($PY - "${mx_rates[*]}" "${raw_rates[*]}" <<'PYEOF'
import statistics, sys
mx = [float(x) for x in sys.argv[1].split()]
raw = [float(x) for x in sys.argv[2].split()]
ratios = [m / r for m, r in zip(mx, raw) if r > 0]
detail = ";".join("%.0f/%.0f" % p for p in zip(mx, raw))
print("%.1f %.1f %.2f %s" % (statistics.median(mx), statistics.median(raw),
                             statistics.median(ratios) if ratios else float("nan"), detail))
PYEOF
)
    echo "$sc: mxkeys ${MX[$sc]} req/s, raw ${RAW[$sc]} tx/s (medians), ratio ${RATIO[$sc]} (rounds mxkeys/raw: ${ROUNDS_TEXT[$sc]})"
    if [ "$sc" = query ] && [ -n "$QUERY_CACHE" ]; then
        QC_WARM=${MX[query]}
        read -r QC_OFF QC_WARM_P99 QC_OFF_P99 QC_HITS QC_VOIDED < <(median_of "${nc_rates[*]}" "${mx_p99[*]}" \
            "${nc_p99[*]}" "${hit_ratios[*]}" "${voided[*]}")
        echo "query: cache warm ${MX[query]} req/s, cache off $QC_OFF req/s (medians; rounds warm/off:" \
            "$(paste -d/ <(printf '%s\n' "${mx_rates[@]}") <(printf '%s\n' "${nc_rates[@]}") | tr '\n' ' '))"
    fi
    if [ "$sc" = claim ]; then
        dry=$(psql "$PGCONN" -At -c "SELECT count(*) FROM fallback_keys f WHERE f.user_id LIKE '@$PREFIX-%'
              AND NOT EXISTS (SELECT 1 FROM one_time_keys o WHERE o.user_id = f.user_id AND o.device_id = f.device_id)")
        [ "$dry" = 0 ] || echo "run.sh: WARNING: $dry devices ran out of one-time keys during the claim runs" >&2
    fi
    if [ -n "$OTHER_URL" ]; then
        OTHER[$sc]=$(other_scenario "$sc")
    fi
done

# ---- query under key churn --------------------------------------------------------------------------------------------
QC_CHURN=
if [ -n "$QUERY_CACHE" ] && [ "$($PY -c "print(1 if $CHURN_PER_S > 0 else 0)")" = 1 ]; then
    CHURN_RATE=$($PY -c "print('%.2f' % ($CHURN_PER_S * $USERS))")
    say "query under churn: minting a CHURN device for each of the $USERS users"
    CHURN_TOKENS=$STATE/churn-tokens.json # in the throwaway state dir, removed on exit
    $PY - "$RESULTS/state.json" "$CHURN_TOKENS" "$MXKEYSD" "$MINT_DB" <<'CHURN_MINT'
import json, shlex, subprocess, sys
users = [u["user_id"] for u in json.load(open(sys.argv[1]))["users"]]
out = []
for u in users:
    cmd = "%s token create --user %s --device CHURN %s" % (shlex.quote(sys.argv[3]), shlex.quote(u), sys.argv[4])
    tok = subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout.strip()
    out.append({"user_id": u, "device_id": "CHURN", "access_token": tok})
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
CHURN_MINT
    churn_rates=()
    churn_hits=()
    churn_p99=()
    churn_done=()
    churn_voided=()
    for round in $(seq 1 "$ROUNDS"); do
        say "query under churn, round $round/$ROUNDS: ${SLICE}s while $CHURN_RATE device-key uploads/s ($CHURN_PER_S of the users per s)"
        out=$RESULTS/query-churn-$round
        $PY "$HERE/query_warm.py" --url "$URL" --state "$RESULTS/state.json" || true
        h0=$(metric mxkeys_query_cache_hits_total)
        m0=$(metric mxkeys_query_cache_misses_total)
        v0=$(metric "$VOIDED")
        # the churn covers the bench's warm-up second and its measured slice
        $PY "$HERE/churn.py" --url "$URL" --tokens "$CHURN_TOKENS" --rate "$CHURN_RATE" --duration "$((SLICE + 1))" \
            >"$out-churn.json" 2>"$out-churn.err" &
        CHURN_PID=$!
        "${BENCH[@]}" --scenario query --duration "$SLICE" --warmup 1 --concurrency "$CONCURRENCY" \
            --json "$out.json" --check --no-progress >"$out.txt" 2>&1 ||
            { cat "$out.txt"; echo "run.sh: query under churn had unexpected errors (above)" >&2; }
        wait "$CHURN_PID" || echo "run.sh: some churn uploads failed: $(cat "$out-churn.json")" >&2
        CHURN_PID=
        churn_rates+=("$(json "$out.json" "d['scenarios']['query']['throughput']")")
        churn_p99+=("$(json "$out.json" "d['scenarios']['query']['latency_ms']['p99']")")
        churn_hits+=("$(hit_ratio "$h0" "$m0")")
        churn_voided+=("$(( $(metric "$VOIDED") - v0 ))")
        churn_done+=("$(json "$out-churn.json" "d['rate']")")
    done
    read -r QC_CHURN QC_CHURN_P99 QC_CHURN_HITS QC_CHURN_DONE QC_CHURN_VOIDED < <(median_of "${churn_rates[*]}" \
        "${churn_p99[*]}" "${churn_hits[*]}" "${churn_done[*]}" "${churn_voided[*]}")
    echo "query under churn: ${QC_CHURN} req/s (median; rounds: ${churn_rates[*]}), uploads/s done: ${churn_done[*]}"
fi

# ---- the standard mix, with plots -----------------------------------------------------------------------------------
say "mix: $MIX, ${MIX_DURATION}s at concurrency $CONCURRENCY"
"${BENCH[@]}" --scenario "$MIX" --duration "$MIX_DURATION" --warmup 3 --concurrency "$CONCURRENCY" \
    --json "$RESULTS/mix.json" --csv "$RESULTS/mix.csv" --plot "$RESULTS/mix" ||
    echo "run.sh: the mix had unexpected errors (see above)" >&2

# ---- the ratio table ------------------------------------------------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
{
    echo "mxkeys vs the raw database on $(date -u +%Y-%m-%d), $(nproc) cores (${CPU:-unknown CPU}), $(uname -sr)"
    echo "concurrency $CONCURRENCY; $ROUNDS paired rounds of ${SLICE}s per scenario (mxkeys, then pgbench); mxkeys:"
    echo "requests/s over HTTP; raw: pgbench tx/s running the same statements (-M prepared) on the same database."
    echo "Figures are medians over rounds; ratio = median of the paired mxkeys / raw ratios (the headline number)."
    echo
    if [ -n "$OTHER_URL" ]; then
        echo "| scenario | mxkeys req/s | raw SQL tx/s | mxkeys / raw | other req/s | mxkeys / other |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    else
        echo "| scenario | mxkeys req/s | raw SQL tx/s | mxkeys / raw |"
        echo "| --- | ---: | ---: | ---: |"
    fi
    for sc in $SCENARIOS; do
        row="| ${LABEL[$sc]} | ${MX[$sc]} | ${RAW[$sc]} | ${RATIO[$sc]} |"
        if [ -n "$OTHER_URL" ]; then
            case "${OTHER[$sc]}" in
            skipped*) row="$row ${OTHER[$sc]} | n/a |" ;;
            *" ("*)
                vs=$($PY -c "print('%.1f' % (${MX[$sc]} / ${OTHER[$sc]%% *}))" 2>/dev/null || echo "n/a")
                row="$row ${OTHER[$sc]} | $vs |"
                ;;
            *)
                vs=$($PY -c "print('%.1f' % (${MX[$sc]} / ${OTHER[$sc]}))" 2>/dev/null || echo "n/a")
                row="$row ${OTHER[$sc]} | $vs |"
                ;;
            esac
        fi
        echo "$row"
    done
    if [ -n "$QUERY_CACHE" ]; then
        echo
        echo "/keys/query cache: the same query load (10 users x $DEVICES devices, concurrency $CONCURRENCY), medians of"
        echo "$ROUNDS rounds of ${SLICE}s; \"cache off\" is a second mxkeysd with --query-cache-bytes 0 on the same database."
        echo
        echo "| query | req/s | / cache off | cache hit ratio | fills voided per slice | p99 ms |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
        echo "| cache warm (population queried once before) | $QC_WARM | $(ratio_of "$QC_WARM" "$QC_OFF") | $QC_HITS |" \
            "$QC_VOIDED | $QC_WARM_P99 |"
        echo "| --query-cache-bytes 0 (database-bound) | $QC_OFF | 1.00 | - | - | $QC_OFF_P99 |"
        if [ -n "$QC_CHURN" ]; then
            echo "| cache, $CHURN_PER_S of users re-upload device keys per s ($QC_CHURN_DONE uploads/s) | $QC_CHURN |" \
                "$(ratio_of "$QC_CHURN" "$QC_OFF") | $QC_CHURN_HITS | $QC_CHURN_VOIDED | $QC_CHURN_P99 |"
        fi
    fi
    echo
    echo "plots: $RESULTS/mix-timeline.png $RESULTS/mix-cdf.png"
} | tee "$RESULTS/ratios.md"
say "results in $RESULTS"
