#!/usr/bin/env bash
# Show what pytest-zygote is for: time plain pytest against runs forked from a
# warm zygote on examples/demo. Builds first if needed; the server runs in a
# private runtime directory and is stopped (and the directory removed) on exit.
# Environment: PYTHON (default /usr/bin/python3), PYTEST_ZYGOTE_BIN
# (default build/pytest-zygote), DEMO_ROOT (default examples/demo), RUNS (default 5).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
BIN=${PYTEST_ZYGOTE_BIN:-$REPO/build/pytest-zygote}
PROJECT=$(cd "${DEMO_ROOT:-$REPO/examples/demo}" && pwd)
RUNS=${RUNS:-5}
TIMEOUT=300

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
	B=$'\e[1m' DIM=$'\e[2m' GREEN=$'\e[32m' RED=$'\e[31m' R=$'\e[0m'
else
	B='' DIM='' GREEN='' RED='' R=''
fi

say() { printf '%s==>%s %s\n' "$B" "$R" "$*"; }
die() {
	printf '%sdemo: %s%s\n' "$RED" "$*" "$R" >&2
	exit 1
}

# 1. Build if needed (meson compile is a quick no-op when up to date).
if [[ -z "${PYTEST_ZYGOTE_BIN:-}" ]]; then
	buildlog=$(mktemp)
	if [[ -f "$REPO/build/meson-private/coredata.dat" ]]; then
		say "building (meson compile -C build)"
		build=(meson compile -C "$REPO/build")
	else
		say "configuring and building (scripts/build.sh)"
		build=(bash "$REPO/scripts/build.sh")
	fi
	if ! PYTHON=$PYTHON "${build[@]}" >"$buildlog" 2>&1; then
		cat "$buildlog" >&2
		rm -f "$buildlog"
		die "build failed"
	fi
	rm -f "$buildlog"
fi
[[ -x "$BIN" ]] || die "$BIN not found; run scripts/build.sh"
"$PYTHON" -c 'import pytest' 2>/dev/null || die "$PYTHON cannot import pytest; run scripts/install-deps.sh"

# 2. A private runtime directory, cleaned up whatever happens.
RUNTIME=$(mktemp -d "${TMPDIR:-/tmp}/pytest-zygote-demo.XXXXXX")
chmod 700 "$RUNTIME"
export PYTEST_ZYGOTE_RUNTIME_DIR=$RUNTIME
LOG=$RUNTIME/demo-output.txt
started=0

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((started)); then
		timeout 30 "$BIN" stop --root "$PROJECT" >/dev/null 2>&1 || true
		# If stop failed, end the supervisor we started (pid file in our private dir).
		local pidfile pid
		for pidfile in "$RUNTIME"/*.pid; do
			[[ -f "$pidfile" ]] || continue
			pid=$(tr -dc '0-9' 2>/dev/null <"$pidfile") || continue
			if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
				kill -TERM "$pid" 2>/dev/null || true
			fi
		done
	fi
	rm -rf "$RUNTIME"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
elapsed() { "$PYTHON" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"; }

# timed LABEL CMD...: run CMD in the project with its output in $LOG, print
# one line with the wall time and pytest's summary, append the time to TIMES.
TIMES=()
timed() {
	local label=$1 t0 t1 secs rc=0
	shift
	t0=$(now)
	(cd "$PROJECT" && timeout "$TIMEOUT" "$@") </dev/null >"$LOG" 2>&1 || rc=$?
	t1=$(now)
	secs=$(elapsed "$t0" "$t1")
	if ((rc != 0)); then
		cat "$LOG" >&2
		die "$label: '$*' exited with $rc"
	fi
	TIMES+=("$secs")
	printf '   %-7s %6s s   %s%s%s\n' "$label" "$secs" "$DIM" "$(tail -n 1 "$LOG")" "$R"
}

say "plain pytest, $RUNS cold runs a second apart: $PYTHON -m pytest -q (in ${PROJECT#"$REPO"/})"
for ((i = 1; i <= RUNS; i++)); do
	sleep 1
	timed "cold $i" "$PYTHON" -m pytest -q
done
cold=("${TIMES[@]}")

say "starting the zygote: pytest-zygote start --root ${PROJECT#"$REPO"/}"
t0=$(now)
started=1
if ! timeout "$TIMEOUT" "$BIN" start --root "$PROJECT" --python "$PYTHON" </dev/null >"$LOG" 2>&1; then
	cat "$LOG" >&2
	die "pytest-zygote start failed"
fi
t1=$(now)
printf '   %s%s%s\n' "$DIM" "$(tail -n 1 "$LOG")" "$R"
start_s=$(elapsed "$t0" "$t1")

TIMES=()
say "warm runs: pytest-zygote run -q (a second apart, as a person runs them again)"
for ((i = 1; i <= RUNS; i++)); do
	# The zygote prepares the next test child between runs; a script's
	# back-to-back loop is slower (bench/run.py measures both).
	sleep 1
	timed "warm $i" "$BIN" run -q
done
warm=("${TIMES[@]}")

"$PYTHON" - "$start_s" "${#cold[@]}" "${cold[@]}" "${warm[@]}" "$B" "$GREEN" "$R" <<'PY'
import statistics
import sys

start = float(sys.argv[1])
n = int(sys.argv[2])
cold = [float(x) for x in sys.argv[3:3 + n]]
warm = [float(x) for x in sys.argv[3 + n:3 + 2 * n]]
bold, green, reset = sys.argv[3 + 2 * n:]
mc, mw = statistics.median(cold), statistics.median(warm)
print()
print(f"   {'':<22}{'median':>9}")
print(f"   {'plain pytest (cold)':<22}{mc:>8.3f}s")
print(f"   {'pytest-zygote run':<22}{mw:>8.3f}s")
print(f"   {bold}{'speed-up':<22}{green}{mc / mw:>8.1f}x{reset}   (zygote start took {start:.2f} s once)")
PY
