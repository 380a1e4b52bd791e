#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) and fuzz them.
#
#   scripts/fuzz.sh [TARGET] [LIBFUZZER-OPTION...]
#   scripts/fuzz.sh --merge [TARGET]
#
# TARGET is proto (the request decoder), conf (the config reader) or all
# (default: each in turn). Options go to libFuzzer as they are; without
# -runs=N or -max_total_time=S each target runs for 60 seconds. One process
# per target (no -jobs/-workers unless you pass them).
#
# The build is meson in $FUZZ_BUILD_DIR (default build-fuzz) with CC=clang and
# -Dfuzzing=true. New inputs go to $FUZZ_BUILD_DIR/corpus/TARGET (the seeds in
# tests/fuzz/corpus/TARGET are only read); a crash is written to
# $FUZZ_BUILD_DIR/artifacts/TARGET/crash-<sha1> and the script exits non-zero.
# --merge adds to tests/fuzz/corpus/TARGET only the found inputs that reach
# code the seeds do not (libFuzzer -merge=1 -use_counters=0). See
# tests/fuzz/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
PYTHON=${PYTHON:-/usr/bin/python3}
ALL=(proto conf)

usage() {
	sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 64
}

merge=0
if [[ ${1:-} == --merge ]]; then
	merge=1
	shift
fi
case ${1:-all} in
all) targets=("${ALL[@]}") ;;
proto | conf) targets=("$1") ;;
-h | --help) usage ;;
-*) targets=("${ALL[@]}"); set -- all "$@" ;;
*) echo "fuzz.sh: unknown target '$1' (proto, conf or all)" >&2; exit 64 ;;
esac
shift || true
opts=("$@")
if ((merge)) && ((${#opts[@]})); then
	echo "fuzz.sh: --merge takes only a target" >&2
	exit 64
fi
timed=0
for o in "${opts[@]}"; do
	[[ $o == -runs=* || $o == -max_total_time=* ]] && timed=1
done
((timed)) || opts+=(-max_total_time=60)

if ! command -v clang >/dev/null; then
	echo "fuzz.sh: clang not found: bash scripts/install-deps.sh installs it" >&2
	exit 69
fi
if [[ -f $BUILD/meson-private/coredata.dat ]]; then
	meson setup --reconfigure "$BUILD" -Dpython="$PYTHON" -Dfuzzing=true >/dev/null
else
	CC=clang meson setup "$BUILD" -Dpython="$PYTHON" -Dfuzzing=true >/dev/null
fi
meson compile -C "$BUILD" "${targets[@]/#/tests/fuzz-}"

# Largest useful input: a request is at most a few KiB, a config section too.
declare -A max_len=([proto]=4096 [conf]=2048)
for t in "${targets[@]}"; do
	bin=$BUILD/tests/fuzz-$t
	seeds=tests/fuzz/corpus/$t
	work=$BUILD/corpus/$t
	mkdir -p "$work" "$BUILD/artifacts/$t"
	if ((merge)); then
		echo "== fuzz-$t: merging $work into $seeds"
		before=$(find "$seeds" -type f | wc -l)
		# Edges only (no hit counters): a file is kept for code no seed reaches.
		"$bin" -merge=1 -use_counters=0 "$seeds" "$work"
		echo "== fuzz-$t: $seeds had $before files, has $(find "$seeds" -type f | wc -l)"
		continue
	fi
	echo "== fuzz-$t ${opts[*]}"
	"$bin" -max_len="${max_len[$t]}" -artifact_prefix="$BUILD/artifacts/$t/" \
		-print_final_stats=1 "${opts[@]}" "$work" "$seeds"
done
