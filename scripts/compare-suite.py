#!/usr/bin/python3
"""Run a project's test suite with plain pytest and through pytest-zygote, and
compare the outcome of every test.

    compare-suite.py --zygote BIN --root DIR [--runs N] [-- PYTEST_ARGS...]

Steps, all with DIR as the working directory:

1. plain: ``/usr/bin/python3 -m pytest -p no:cacheprovider --junitxml=X ARGS``
   (``--plain-runs`` times, default once), before any server runs in the
   private runtime directory, so an installed pytest_zygote plugin has none to
   hand over to (if the plain run starts one, the comparison stops);
2. ``BIN start --root DIR``, with ``PYTEST_ZYGOTE_RUNTIME_DIR`` pointing at a
   private temporary directory, so no other server is touched;
3. zygote: ``BIN run --root DIR -- -p no:cacheprovider --junitxml=X ARGS``,
   ``--runs`` times (default 2);
4. ``BIN stop --root DIR`` (always, even after an error or Ctrl-C), and the
   temporary directory is removed (``--keep`` keeps it: pytest's output of
   every run, the junit files and the server's log).

Per-test outcomes come from the junit XML files: passed, failed, error,
skipped, xfail, and xpass (an XPASS(strict) is a failure, as pytest counts
it). junit writes a non-strict XPASS like a pass, so a
tiny plugin (``-p _compare_outcome``, importable through ``PYTHONPATH``, in
both the plain and the zygote runs) records it as a testcase property;
``--no-outcome-plugin`` leaves it out (an XPASS then counts as passed). A test
id is junit's ``classname::name``; a test with both a failure and a teardown
error appears twice in junit and gets both outcomes (``failed+error``).

It prints the count of each outcome and the exit code of every run, every test
id whose outcome differs from the plain run (the first 30, then how many more,
then the differences counted by test function with the parameters dropped, so
a parametrized test that lost its cases shows as one line), the wall time of
``start`` and the median wall time of a run, plain and zygote.
Exit status: 0 when every run has the same outcomes and exit code as the plain
run, 1 when not, 2 when a step could not be carried out (``start`` failed, a run
timed out, a junit file is missing).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

PYTHON = "/usr/bin/python3"
SHOW = 30  # differing ids printed per run
OUTCOMES = ("passed", "failed", "error", "skipped", "xfail", "xpass")
PROPERTY = "compare_suite_outcome"
SUMMARY = re.compile(r"\b(passed|failed|errors?|skipped|xfailed|xpassed|deselected|"
                     r"no tests ran)\b.* in [\d.]+s")

# Loaded with -p in every run: marks a non-strict XPASS in the junit file, which
# junit otherwise writes exactly like a pass.
OUTCOME_PLUGIN = f'''\
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and hasattr(report, "wasxfail"):
        # the teardown report copies item.user_properties; junit writes them
        item.user_properties.append(("{PROPERTY}", "xpass"))
'''


class StepError(Exception):
    """A step could not be carried out; the message says which and why."""


@dataclass
class Run:
    label: str
    code: int
    seconds: float
    summary: str                     # pytest's closing line
    outcomes: dict = field(default_factory=dict)  # test id -> outcome


def junit_outcomes(path: str) -> dict:
    """{test id: outcome} from one junit XML file."""
    if not os.path.exists(path):
        raise StepError(f"no junit file {path}")
    found = collections.defaultdict(list)
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        found[test_id].append(testcase_outcome(case, props))
    return {test_id: "+".join(sorted(set(o))) for test_id, o in found.items()}


def testcase_outcome(case, props: dict) -> str:
    children = {child.tag: child for child in case}
    if "failure" in children:
        return "failed"
    if "error" in children:
        return "error"
    skipped = children.get("skipped")
    if skipped is not None:
        if skipped.get("type") == "pytest.xfail":
            return "xfail"
        if "passes unexpectedly" in (skipped.get("message") or ""):
            return "xpass"  # junit's words for a failed report with wasxfail
        return "skipped"
    if props.get(PROPERTY) == "xpass":
        return "xpass"
    return "passed"


def summary_line(path: str) -> str:
    """pytest's closing line ('3 passed, 1 failed in 0.52s'), else the last line
    (a plugin may print after pytest's summary)."""
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    for line in reversed(lines):
        if SUMMARY.search(line):
            return line.strip("= ")
    return lines[-1].strip("= ") if lines else ""


def run_pytest(label, command, junit, root, env, work, timeout) -> Run:
    """Run one pytest session (its output to a file) and read its junit file."""
    log = os.path.join(work, f"{label}.log")
    print(f"  {label}: {' '.join(command)}", flush=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        try:
            code = subprocess.run(command, cwd=root, env=env, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise StepError(f"{label} did not end within {timeout} s (output: {log})")
    seconds = time.monotonic() - started
    run = Run(label, code, seconds, summary_line(log))
    try:
        run.outcomes = junit_outcomes(junit)
    except (StepError, ET.ParseError) as e:
        raise StepError(f"{label} (exit {code}): {e}; its last line: {run.summary!r}")
    print(f"    exit {code} in {seconds:.2f} s: {run.summary}", flush=True)
    return run


def counts(run: Run) -> str:
    c = collections.Counter(run.outcomes.values())
    parts = [f"{c.pop(name)} {name}" for name in OUTCOMES if name in c]
    parts += [f"{n} {name}" for name, n in sorted(c.items())]  # e.g. failed+error
    return ", ".join(parts) or "no tests"


def differences(plain: Run, other: Run) -> list:
    ids = sorted(set(plain.outcomes) | set(other.outcomes))
    return [(i, plain.outcomes.get(i, "absent"), other.outcomes.get(i, "absent"))
            for i in ids if plain.outcomes.get(i) != other.outcomes.get(i)]


def grouped(diff: list) -> list:
    """[((test function, was, now), ids)], most ids first: a whole parametrized
    test that went missing shows as one line."""
    c = collections.Counter((test_id.split("[", 1)[0], was, now) for test_id, was, now in diff)
    return sorted(c.items(), key=lambda item: (-item[1], item[0]))


def zygote(bin_, verb, root, env, timeout, *extra):
    """Run `BIN VERB --root ROOT`; return (exit code, seconds, output)."""
    started = time.monotonic()
    try:
        p = subprocess.run([bin_, verb, "--root", root, *extra], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StepError(f"`{verb}` did not end within {timeout} s")
    return p.returncode, time.monotonic() - started, (p.stdout + p.stderr).strip()


def compare(args, work: str) -> int:
    root = os.path.abspath(args.root)
    bin_ = os.path.abspath(args.zygote)
    runtime = os.path.join(work, "runtime")
    os.mkdir(runtime, 0o700)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_ZYGOTE_")}
    env["PYTEST_ZYGOTE_RUNTIME_DIR"] = runtime
    pytest_args = ["-p", "no:cacheprovider"]
    if not args.no_outcome_plugin:
        plugin_dir = os.path.join(work, "plugin")
        os.mkdir(plugin_dir)
        with open(os.path.join(plugin_dir, "_compare_outcome.py"), "w") as f:
            f.write(OUTCOME_PLUGIN)
        env["PYTHONPATH"] = os.pathsep.join(
            [plugin_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        pytest_args += ["-p", "_compare_outcome"]

    def junit(label):
        return os.path.join(work, f"{label}.xml")

    print(f"root {root}")
    plain_runs = []
    for i in range(1, args.plain_runs + 1):
        label = f"plain-{i}"
        command = [PYTHON, "-m", "pytest", *pytest_args, f"--junitxml={junit(label)}",
                   *args.pytest_args]
        plain_runs.append(run_pytest(label, command, junit(label), root, env, work,
                                     args.timeout))
    if os.listdir(runtime):
        # an installed pytest_zygote plugin started a server (start_if_needed)
        zygote(bin_, "stop", root, env, args.timeout)
        raise StepError("the plain run started a zygote in the private runtime directory "
                        "(a pytest_zygote plugin with start_if_needed?): it was not plain")

    started = False
    try:
        code, start_s, out = zygote(bin_, "start", root, env, args.timeout)
        print(f"  start: exit {code} in {start_s:.2f} s: {out.splitlines()[-1] if out else ''}",
              flush=True)
        if code != 0:
            raise StepError(f"`start` failed (exit {code}):\n{out}")
        started = True
        zygote_runs, failed_step = [], None
        for i in range(1, args.runs + 1):
            label = f"zygote-{i}"
            command = [bin_, "run", "--root", root, "--", *pytest_args,
                       f"--junitxml={junit(label)}", *args.pytest_args]
            try:
                zygote_runs.append(run_pytest(label, command, junit(label), root, env, work,
                                              args.timeout))
            except StepError as e:  # still compare the runs that completed
                failed_step = e
                break
    finally:
        if started or os.listdir(runtime):
            code, _, out = zygote(bin_, "stop", root, env, args.timeout)
            if code != 0:
                print(f"  stop: exit {code}: {out}", file=sys.stderr)
        if args.keep:
            print(f"kept {work}")

    if not zygote_runs:
        raise failed_step
    plain = plain_runs[0]
    print()
    for run in plain_runs + zygote_runs:
        print(f"{run.label:>10}: exit {run.code}, {len(run.outcomes)} tests: {counts(run)}")
    print()
    print(f"start (warm-up):  {start_s:.2f} s")
    plain_median = statistics.median(r.seconds for r in plain_runs)
    zygote_median = statistics.median(r.seconds for r in zygote_runs)
    ratio = zygote_median / plain_median if plain_median else float("nan")
    print(f"run, median:      plain {plain_median:.2f} s, zygote {zygote_median:.2f} s"
          f" (zygote/plain {ratio:.2f})")
    print(f"  plain runs:     {', '.join(f'{r.seconds:.2f}' for r in plain_runs)} s")
    print(f"  zygote runs:    {', '.join(f'{r.seconds:.2f}' for r in zygote_runs)} s")

    identical = True
    for run in plain_runs[1:] + zygote_runs:
        diff = differences(plain, run)
        if run.code != plain.code:
            identical = False
            print(f"\n{run.label}: exit code {run.code}, plain {plain.code}")
        if not diff:
            continue
        identical = False
        print(f"\n{run.label}: {len(diff)} test ids differ (plain -> {run.label}):")
        for test_id, was, now in diff[:SHOW]:
            print(f"  {was} -> {now}  {test_id}")
        if len(diff) > SHOW:
            print(f"  ... and {len(diff) - SHOW} more")
        groups = grouped(diff)
        print(f"  by test function (parameters dropped), {len(groups)} groups:")
        for (function, was, now), n in groups[:SHOW]:
            print(f"  {n:6d}  {was} -> {now}  {function}")
        if len(groups) > SHOW:
            print(f"  ... and {len(groups) - SHOW} more groups")
    if failed_step:
        print(f"\ncompare-suite: {failed_step}", file=sys.stderr)
        return 2
    print("\nidentical" if identical else "\nDIFFERENT")
    return 0 if identical else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s --zygote BIN --root DIR [--runs N] [-- PYTEST_ARGS...]",
        epilog="Everything after -- goes to pytest unchanged.")
    parser.add_argument("--zygote", required=True, help="the pytest-zygote binary")
    parser.add_argument("--root", required=True, help="the project root (working directory)")
    parser.add_argument("--runs", type=int, default=2, help="zygote runs (default 2)")
    parser.add_argument("--plain-runs", type=int, default=1, help="plain runs (default 1)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds for any one command (default 3600)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, junit files, server log)")
    parser.add_argument("--no-outcome-plugin", action="store_true",
                        help="no -p _compare_outcome: an XPASS counts as passed")
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, pytest_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) \
        if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    args.pytest_args = pytest_args
    if args.runs < 1 or args.plain_runs < 1:
        parser.error("--runs and --plain-runs must be at least 1")

    work = tempfile.mkdtemp(prefix="compare-suite-")
    try:
        return compare(args, work)
    except StepError as e:
        print(f"compare-suite: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
