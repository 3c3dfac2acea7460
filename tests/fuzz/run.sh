#!/usr/bin/env bash
# libFuzzer targets over mxkeys' pure modules (Debian's clang; ASan+UBSan on).
#   tests/fuzz/run.sh ci [seconds]      build, replay the regression inputs, run each target for `seconds` (default 5)
#                                       on a scratch copy of its seed corpus; exit 1 on any crash
#   tests/fuzz/run.sh long [seconds]    run each target for `seconds` (default 3600) into build-fuzz/corpus/<target>,
#                                       printing executions and coverage; crashes land in build-fuzz/crashes/
#   FUZZ_TARGETS="router utf8" tests/fuzz/run.sh long 600   only those targets (e.g. two long runs side by side)
#   FUZZ_TIMEOUT=60 ...                 seconds one input may take before it counts as a hang (default 10; more for a
#                                       long run on a busy machine, where a starved process trips 10 s)
# A crash found by a long run becomes a regression input: copy it into tests/fuzz/regressions/<target>/.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
MODE=${1:-ci}
SECONDS_EACH=${2:-$([ "$MODE" = long ] && echo 3600 || echo 5)}
OUT=build-fuzz
TARGETS=(${FUZZ_TARGETS:-canonical_json signed_json base64 router config utf8 bodies})
SOURCES=(src/core/buf.c src/core/errors.c src/core/reason.c src/core/log.c src/core/config.c src/core/utf8.c
         src/core/matrix_ids.c
         src/crypto/base64.c src/crypto/canonical_json.c src/crypto/json_parse.c src/crypto/signed_json.c src/http/router.c
         src/api/keys_validate.c src/core/json_splice.c src/http/json_writer.c src/http/error_body.c)
# The router runs over the server's route table; fuzz_bodies over the handlers themselves (tests/fuzz/call_loopback.c
# stands in for h2o and the database). Handlers a target does not link get weak stand-ins generated from routes.c.
ROUTER_SOURCES=(src/api/routes.c "$OUT/route_stubs.c")
BODIES_SOURCES=(tests/fuzz/call_loopback.c src/api/routes.c "$OUT/route_stubs.c" src/api/keys_upload.c src/api/keys_query.c
                src/api/keys_query_cache.c src/core/query_cache.c
                src/api/keys_claim.c src/api/keys_remote.c src/api/xsign.c src/api/backup_versions.c
                src/api/backup_sessions.c src/api/backup_common.c src/api/devices.c src/api/federation_claim.c
                src/api/admin.c)
CC=${CC_FUZZ:-clang}
FLAGS=(-g -O1 -std=c11 -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -Iinclude -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -Werror=implicit-function-declaration -Werror=int-conversion
       $(pkg-config --cflags jansson libsodium libpq libh2o-evloop))
LIBS=($(pkg-config --libs jansson libsodium libpq) -pthread)
mkdir -p "$OUT"
stubs=$(mktemp "$OUT/route_stubs.XXXXXX")
{
    echo '#include <stdlib.h>'
    echo '#include "mxkeys/call.h"'
    grep -o 'mx_api_[a-z0-9_]*' src/api/routes.c | sort -u |
        sed 's/.*/__attribute__((weak)) void &(mx_call_t *call) { (void)call; abort(); }/'
} >"$stubs"
if cmp -s "$stubs" "$OUT/route_stubs.c"; then rm -f "$stubs"; else mv "$stubs" "$OUT/route_stubs.c"; fi
for t in "${TARGETS[@]}"; do
    exe="$OUT/fuzz_$t"
    extra=()
    [ "$t" = router ] && extra=("${ROUTER_SOURCES[@]}")
    [ "$t" = bodies ] && extra=("${BODIES_SOURCES[@]}")
    if [ ! -x "$exe" ] || [ -n "$(find tests/fuzz/fuzz_$t.c tests/fuzz/*.h "${SOURCES[@]}" "${extra[@]}" include -newer "$exe" | head -1)" ]; then
        "$CC" "${FLAGS[@]}" -o "$exe" "tests/fuzz/fuzz_$t.c" "${SOURCES[@]}" "${extra[@]}" "${LIBS[@]}"
    fi
done
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
failed=0
for t in "${TARGETS[@]}"; do
    exe="$OUT/fuzz_$t"
    seeds=tests/fuzz/corpus/$t
    regress=tests/fuzz/regressions/$t
    if [ -d "$regress" ] && [ -n "$(ls "$regress")" ]; then # a .gitkeep alone: none yet
        "$exe" "$regress"/* >"$OUT/$t.regress.log" 2>&1 || { echo "fuzz_$t: a regression input fails (see $OUT/$t.regress.log)"; failed=1; }
    fi
    if [ "$MODE" = long ]; then
        work=$OUT/corpus/$t
        mkdir -p "$work" "$OUT/crashes"
    else
        work=$(mktemp -d "$OUT/ci-$t.XXXXXX")
    fi
    log="$OUT/$t.$MODE.log"
    if "$exe" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=1024 \
        -artifact_prefix="$OUT/crashes-$t-" "$work" "$seeds" >"$log" 2>&1; then
        stats=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true)
        echo "fuzz_$t: ok in ${SECONDS_EACH}s: ${stats}"
    else
        echo "fuzz_$t: CRASH (see $log; input saved as $OUT/crashes-$t-*)"
        tail -30 "$log"
        failed=1
    fi
    [ "$MODE" = long ] || rm -rf "$work"
done
exit $failed
