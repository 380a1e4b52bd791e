#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (gcc):
# build $SAN_BUILD_DIR (default build-asan) with -Db_sanitize=address,undefined,
# run the unit and fuzz suites, then the end-to-end tests on that binary.
#
#   scripts/sanitize.sh                  # everything (e2e: ~1 hour on 2 busy cores)
#   scripts/sanitize.sh --no-e2e         # build + unit + fuzz suites only
#   scripts/sanitize.sh tests/e2e/test_signals.py -k segv   # other pytest arguments
#
# Every process (client, supervisor, zygote, test child) writes its sanitizer
# reports to $SAN_LOG_DIR (default: a fresh /tmp/pz-sanitize.XXXXXX) instead of
# stderr; tests/e2e/conftest.py fails the test during which a report appears,
# and this script fails if any report is there at the end. What is suppressed
# and why: tests/sanitizers/README.md. Exit code: pytest's (or 1).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
BUILD=${SAN_BUILD_DIR:-build-asan}
SUPP=$PWD/tests/sanitizers

e2e=1
if [[ ${1:-} == --no-e2e ]]; then
	e2e=0
	shift
fi
args=("$@")
((${#args[@]})) || args=(tests/e2e)

opts=(-Dpython="$PYTHON" "-Db_sanitize=address,undefined" -Dwerror=true)
if [[ -f $BUILD/meson-private/coredata.dat ]]; then
	meson setup --reconfigure "$BUILD" "${opts[@]}" >/dev/null
else
	meson setup "$BUILD" "${opts[@]}" >/dev/null
fi
meson compile -C "$BUILD"

# Shared by the unit tests and the e2e run. halt + abort: a report kills the
# process with SIGABRT, so nothing carries on after one.
common=halt_on_error=1:abort_on_error=1:print_summary=1
asan=$common:detect_leaks=1
# The e2e tests kill test processes with SIGSEGV, SIGBUS and SIGFPE on purpose
# and check they die of that signal, as under plain pytest; ASan's handlers
# would turn each into a report and an abort. Memory errors are found by the
# instrumentation, not by these handlers.
asan_e2e=$asan:handle_segv=0:handle_sigbus=0:handle_sigfpe=0
export LSAN_OPTIONS=suppressions=$SUPP/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=$common:print_stacktrace=1:suppressions=$SUPP/ubsan.supp

ASAN_OPTIONS=$asan meson test -C "$BUILD" --suite unit --suite fuzz --print-errorlogs
((e2e)) || exit 0

logs=${SAN_LOG_DIR:-$(mktemp -d /tmp/pz-sanitize.XXXXXX)}
mkdir -p "$logs"
export ASAN_OPTIONS=$asan_e2e:log_path=$logs/asan
export UBSAN_OPTIONS=$UBSAN_OPTIONS:log_path=$logs/ubsan
echo "sanitize.sh: reports go to $logs"
rc=0
PYTEST_ZYGOTE_BIN=$(cd "$BUILD" && pwd)/pytest-zygote "$PYTHON" -m pytest -q "${args[@]}" || rc=$?
((rc == 5)) && rc=1
shopt -s nullglob
reports=("$logs"/*)
if ((${#reports[@]})); then
	echo "sanitize.sh: ${#reports[@]} sanitizer report(s) in $logs:" >&2
	for r in "${reports[@]}"; do
		echo "== $r" >&2
		grep -E 'ERROR|SUMMARY' "$r" >&2 || head -5 "$r" >&2
	done
	((rc)) || rc=1
fi
exit "$rc"
