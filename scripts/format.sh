#!/usr/bin/env bash
# Format every C file of the project with .clang-format (clang-format from
# Debian: scripts/install-deps.sh installs it). --check changes nothing and
# fails, listing the places, when a file is not formatted; tests/e2e/test_style.py
# runs that in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=(-i)
case ${1:-} in
--check) mode=(--dry-run --Werror) ;;
"") ;;
*) echo "usage: $0 [--check]" >&2; exit 64 ;;
esac
mapfile -t files < <(git ls-files '*.c' '*.h' | grep -v '^tests/projects/')
exec clang-format "${mode[@]}" "${files[@]}"
