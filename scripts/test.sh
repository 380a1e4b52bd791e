#!/usr/bin/env bash
# The whole test suite, as CI runs it: install the Debian packages, build with
# --werror, run the C unit tests and the fuzz corpus replay, the same under
# valgrind, each fuzz target for FUZZ_SECONDS (default 30), then the end-to-end
# tests with pytest (after fetching the real suites they compare against,
# scripts/fetch-real-suites.py). pytest runs last so its summary line ends the
# output; the script exits with pytest's exit code (5, "no tests collected", is
# a failure).
# --sanitize: then also scripts/sanitize.sh (ASan + UBSan build, unit and e2e
# again; ~30 minutes more), and fail if either run fails.
# Environment: PYTHON (default /usr/bin/python3), BUILD_DIR (default build),
# FUZZ_SECONDS (default 30; 0 skips fuzzing).
set -euo pipefail

sanitize=0
case ${1:-} in
--sanitize) sanitize=1 ;;
"") ;;
*) echo "usage: $0 [--sanitize]" >&2; exit 64 ;;
esac

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
BUILD_DIR=${BUILD_DIR:-build}

bash scripts/install-deps.sh

if [[ -f "$BUILD_DIR/meson-private/coredata.dat" ]]; then
	meson setup --reconfigure "$BUILD_DIR" "-Dpython=$PYTHON" -Dwerror=true
else
	meson setup "$BUILD_DIR" "-Dpython=$PYTHON" -Dwerror=true
fi
meson compile -C "$BUILD_DIR"
meson test -C "$BUILD_DIR" --suite unit --suite fuzz --print-errorlogs
meson test -C "$BUILD_DIR" --setup valgrind --print-errorlogs
# Fuzz each parser of untrusted bytes for a bounded time (the corpus replay
# above stays): FUZZ_SECONDS per target, 0 to skip. A crash fails the run.
fuzz_seconds=${FUZZ_SECONDS:-30}
if ((fuzz_seconds > 0)); then
	fuzz_log=$(mktemp)
	if bash scripts/fuzz.sh -max_total_time="$fuzz_seconds" >"$fuzz_log" 2>&1; then
		grep -E '^(==|stat::number_of_executed_units)' "$fuzz_log" || true
		rm -f "$fuzz_log"
	else
		tail -n 60 "$fuzz_log"
		echo "test.sh: fuzzing failed (a crash is in build-fuzz/artifacts; the log is $fuzz_log)" >&2
		exit 1
	fi
fi

# Real suites from Debian's archive for tests/e2e/test_real_suites.py; without
# them (no archive reachable) those tests are skipped, and the reason printed.
suites=${XDG_CACHE_HOME:-$HOME/.cache}/pytest-zygote/real-suites
if "$PYTHON" scripts/fetch-real-suites.py "$suites"; then
	export PYTEST_ZYGOTE_REAL_SUITES=$suites
else
	echo "test.sh: could not fetch the real suites; test_real_suites.py is skipped" >&2
fi

bin=$(cd "$BUILD_DIR" && pwd)/pytest-zygote
rc=0
PYTEST_ZYGOTE_BIN=$bin "$PYTHON" -m pytest -q tests/e2e || rc=$?
if ((rc == 5)); then
	rc=1
fi
if ((sanitize)); then
	bash scripts/sanitize.sh || { src=$?; ((rc)) || rc=$src; }
fi
exit "$rc"
