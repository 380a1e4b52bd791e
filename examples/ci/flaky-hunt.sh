#!/usr/bin/env bash
# Run a test suite many times from one warm pytest-zygote and report which
# tests failed in which runs.
#
# usage: flaky-hunt.sh [-n RUNS] [--until-failure] [--same-hash-seed] [--root DIR]
#                      [-- PYTEST-ARGS...]
#
#   -n RUNS          how many runs (default 10; with --until-failure, the most)
#   --until-failure  stop after the first run that fails
#   --same-hash-seed let runs share a zygote's hash seed: faster, but a test
#                    that depends on set or dict order of strings is not found
#                    (by default each run gets a zygote with a new hash seed,
#                    PYTEST_ZYGOTE_HASH_SEED=per-run, as each cold run does;
#                    with PYTHONHASHSEED set, every run uses that seed)
#   --root DIR       project root; the runs start in DIR, so PYTEST-ARGS paths
#                    are relative to it (default: the root pytest-zygote finds
#                    from the current directory, and runs start here)
#   -- PYTEST-ARGS   passed to every run (e.g. -- -x tests/unit -k "not slow")
#
# If a server already runs for the root, the runs use it and leave it running.
# Otherwise the script starts one in a private runtime directory (mktemp -d,
# mode 0700) and stops it and removes the directory on exit, including on
# Ctrl-C and SIGTERM.
#
# Exit code: 0 if every run passed, 1 if any run failed, 64 for a usage
# error, 69 if pytest-zygote or PYTHON is missing, 71 if the server could not
# be started, 130/143 when interrupted.
#
# Environment: PYTEST_ZYGOTE_BIN (default: pytest-zygote on PATH),
# PYTHON (default /usr/bin/python3: the interpreter for the server and for
# reading the JUnit XML reports), PYTEST_ZYGOTE_RUNTIME_DIR (where to look for
# a running server), TMPDIR.
set -euo pipefail

PROG=${0##*/}
PYTHON=${PYTHON:-/usr/bin/python3}

usage() {
	echo "usage: $PROG [-n RUNS] [--until-failure] [--same-hash-seed] [--root DIR] [-- PYTEST-ARGS...]"
}
die() {
	local code=$1
	shift
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit "$code"
}

ZBIN=""
root_args=()
work=""
private_runtime=""
started=0

# shellcheck disable=SC2317 # (shellcheck 0.9 does not see that the EXIT trap calls it)
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((started)); then
		if ! timeout 30 "$ZBIN" stop "${root_args[@]}" --grace 5 >/dev/null 2>&1; then
			# stop failed: end the supervisor we started (its pid file is in our
			# private runtime directory, so it cannot be anyone else's).
			local pidfile pid
			for pidfile in "$private_runtime"/*.pid; do
				[[ -f "$pidfile" ]] || continue
				pid=$(head -n 1 "$pidfile" | tr -dc '0-9') || continue
				if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
					kill -TERM "$pid" 2>/dev/null || true
				fi
			done
		fi
	fi
	if [[ -n "$private_runtime" ]]; then
		rm -rf -- "$private_runtime"
	fi
	if [[ -n "$work" ]]; then
		rm -rf -- "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

runs=10
until_failure=0
same_hash_seed=0
root=""
pytest_args=()
while (($#)); do
	case "$1" in
	-n | --runs)
		(($# >= 2)) || die 64 "$1 needs a number"
		runs=$2
		shift 2
		;;
	-n*)
		runs=${1#-n}
		shift
		;;
	--runs=*)
		runs=${1#--runs=}
		shift
		;;
	--until-failure)
		until_failure=1
		shift
		;;
	--same-hash-seed)
		same_hash_seed=1
		shift
		;;
	--root)
		(($# >= 2)) || die 64 "--root needs a directory"
		root=$2
		shift 2
		;;
	--root=*)
		root=${1#--root=}
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	--)
		shift
		pytest_args=("$@")
		break
		;;
	*)
		usage >&2
		die 64 "unknown argument '$1' (pytest arguments go after --)"
		;;
	esac
done

[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die 64 "-n wants a positive number, not '$runs'"
for a in "${pytest_args[@]}"; do
	case "$a" in
	--junitxml* | --junit-xml* | --junit-prefix*)
		die 64 "do not pass $a: $PROG writes its own JUnit XML per run"
		;;
	esac
done

if [[ -n "${PYTEST_ZYGOTE_BIN:-}" ]]; then
	ZBIN=$PYTEST_ZYGOTE_BIN
else
	ZBIN=$(command -v pytest-zygote) ||
		die 69 "pytest-zygote not found: put it on PATH or set PYTEST_ZYGOTE_BIN"
fi
[[ -x "$ZBIN" ]] || die 69 "$ZBIN is not an executable file"
[[ -x "$PYTHON" ]] || die 69 "$PYTHON not found (set PYTHON)"

if [[ -n "$root" ]]; then
	[[ -d "$root" ]] || die 64 "--root $root: not a directory"
	root=$(cd "$root" && pwd -P)
	root_args=(--root "$root")
	# run the suite as pytest would from the root (testpaths, relative paths)
	cd "$root"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/flaky-hunt.XXXXXX")

# A server for the root already? Use it and leave it alone.
if "$ZBIN" status "${root_args[@]}" >/dev/null 2>&1; then
	echo "$PROG: using the running server for ${root:-this project}" >&2
else
	private_runtime=$(mktemp -d "${TMPDIR:-/tmp}/flaky-hunt-rt.XXXXXX")
	chmod 700 "$private_runtime"
	export PYTEST_ZYGOTE_RUNTIME_DIR=$private_runtime
	started=1
	rc=0
	"$ZBIN" start "${root_args[@]}" --python "$PYTHON" >"$work/start.log" 2>&1 || rc=$?
	if ((rc != 0)); then
		cat "$work/start.log" >&2
		die 71 "could not start a server (pytest-zygote start exited $rc)"
	fi
	sed "s/^/$PROG: /" "$work/start.log" >&2
fi

# A cold run draws a new hash seed each time; so does each run here, from a
# zygote warmed (while the previous run goes on) for it alone.
if ((!same_hash_seed)); then
	export PYTEST_ZYGOTE_HASH_SEED=per-run
fi

failed_runs=()
done_runs=0
for ((i = 1; i <= runs; i++)); do
	xml="$work/run-$i.xml"
	log="$work/run-$i.log"
	rc=0
	"$ZBIN" run "${root_args[@]}" -- "${pytest_args[@]}" \
		"--junitxml=$xml" -o junit_family=xunit1 >"$log" 2>&1 || rc=$?
	done_runs=$i
	# pytest's last line, "= 1 failed, 5 passed in 0.12s =" (no '=' with -q)
	words='passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?|no tests ran'
	summary=$(grep -E "($words) in [0-9.]+s" "$log" |
		tail -n 1 | sed -E 's/^=+ //; s/ =+$//') || true
	if ((rc == 0)); then
		echo "run $i/$runs: passed${summary:+ ($summary)}"
		continue
	fi
	failed_runs+=("$i")
	echo "run $i/$runs: FAILED with exit code $rc${summary:+ ($summary)}"
	echo "----- output of run $i -----"
	cat "$log"
	echo "----- end of run $i -----"
	case "$rc" in
	4 | 5 | 64 | 69 | 71)
		# usage error, nothing collected, no server: every further run would
		# end the same way
		echo "$PROG: exit code $rc is not a test failure; stopping" >&2
		break
		;;
	esac
	if ((until_failure)); then
		break
	fi
done

# Per-test summary from the JUnit XML reports (a run without a report, e.g. a
# crash, shows up as "no report").
"$PYTHON" - "$work" "$done_runs" "${failed_runs[@]}" <<'EOF'
import os
import sys
import xml.etree.ElementTree as ET

work, total = sys.argv[1], int(sys.argv[2])
failed_runs = [int(x) for x in sys.argv[3:]]


def node_id(case):
    """pytest's node id from an xunit1 testcase (file, classname, name)."""
    name = case.get("name", "")
    classname = case.get("classname", "")
    path = case.get("file")
    if not path:
        return "%s::%s" % (classname, name) if classname else name
    module = path[:-3].replace("/", ".") if path.endswith(".py") else path
    parts = [path]
    if classname.startswith(module + "."):
        parts += classname[len(module) + 1:].split(".")
    return "::".join(parts + [name])


failures = {}  # node id -> runs in which it failed or errored
seen = set()
missing = []
for run in range(1, total + 1):
    path = os.path.join(work, "run-%d.xml" % run)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        missing.append(run)
        continue
    for case in root.iter("testcase"):
        nid = node_id(case)
        seen.add(nid)
        if case.find("failure") is not None or case.find("error") is not None:
            runs = failures.setdefault(nid, [])
            if run not in runs:
                runs.append(run)


def runs_text(runs):
    return ",".join(str(r) for r in runs)


print()
print("flaky-hunt summary: %d run%s, %d failed%s" % (
    total, "" if total == 1 else "s", len(failed_runs),
    " (runs %s)" % runs_text(failed_runs) if failed_runs else ""))
for nid in sorted(failures, key=lambda n: (-len(failures[n]), n)):
    runs = failures[nid]
    kind = "always" if len(runs) == total else "flaky"
    print("  %-6s %s: failed in run%s %s of %d" % (
        kind, nid, "" if len(runs) == 1 else "s", runs_text(runs), total))
for run in missing:
    print("  no report from run %d (see its output above)" % run)
stable = len(seen - set(failures))
print("  %d test%s passed (or skipped) in every run" % (stable, "" if stable == 1 else "s"))
EOF

if ((${#failed_runs[@]})); then
	exit 1
fi
exit 0
