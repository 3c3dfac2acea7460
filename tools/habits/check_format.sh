#!/usr/bin/env bash
# Every C source and header of the project must already be in the committed .clang-format style: prints the drift
# and fails when clang-format would change anything. Run from anywhere; the file list is the tree, not git (the
# check also runs from an unpacked source tarball).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
mapfile -d '' files < <(find src include bench tests tools -name node_modules -prune -o \
                             -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
[ ${#files[@]} -gt 0 ] || { echo "check_format: no C files found under $(pwd)" >&2; exit 1; }
clang-format --style=file --dry-run -Werror "${files[@]}"
echo "check_format: ${#files[@]} files in .clang-format style"
