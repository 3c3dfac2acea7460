#!/usr/bin/env bash
# Static analysis of src/ with Debian's cppcheck: zero findings of the classes that point at bugs (warning,
# portability, performance; errors are always on). A finding that is not a bug is suppressed in the source, on the
# line before it, with the reason written beside the suppression (/* cppcheck-suppress <id> */).
# The system headers are left out on purpose (they multiply the time and report on code that is not ours);
# tools/cppcheck/libraries.cfg teaches cppcheck jansson's iteration macros instead.
# One job: cppcheck skips its whole-program checks (a NULL passed down to a callee that uses it) under -j.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
exec cppcheck --quiet --error-exitcode=1 --std=c11 \
    --enable=warning,portability,performance --inline-suppr \
    --library=posix --library=gnu --library=tools/cppcheck/libraries.cfg \
    -I include -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -DMXKEYS_VERSION='"check"' \
    src
