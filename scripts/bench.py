#!/usr/bin/python3
"""Benchmark plain pytest against pytest-zygote on one project, side by side.

Runs N alternating pairs: a cold `PYTHON -m pytest ARGS` and a warm
`pytest-zygote run ARGS`, both from the project root. The server is started by
this script in a private runtime directory and stopped at the end, whatever
happens. Reports medians, the ratio, how long `start` took to return (start to
ready), and the zygote's RSS from `status --json`. Cold and warm runs must end
with the same exit code and the same pytest summary, or the comparison is void.

    /usr/bin/python3 scripts/bench.py [-n 10] [--json out.json] [ROOT] [-- PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 600
_DURATION = re.compile(r"\s+in\s+[\d.]+s(\s+\([^)]*\))?")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Time cold pytest against pytest-zygote run on a project.",
        epilog="Arguments after -- are passed to pytest (default: -q).",
    )
    p.add_argument("root", nargs="?", default=str(REPO / "examples" / "demo"),
                   help="project root (default: examples/demo)")
    p.add_argument("-n", "--runs", type=int, default=10,
                   help="number of cold/warm pairs (default: 10)")
    p.add_argument("--bin", default=os.environ.get("PYTEST_ZYGOTE_BIN",
                                                   str(REPO / "build" / "pytest-zygote")),
                   help="pytest-zygote binary (default: $PYTEST_ZYGOTE_BIN or build/pytest-zygote)")
    p.add_argument("--python", default=os.environ.get("PYTHON", "/usr/bin/python3"),
                   help="interpreter for cold runs and the zygote (default: /usr/bin/python3)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    pytest_args = ["-q"]
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    ns = p.parse_args(argv)
    ns.pytest_args = pytest_args
    if ns.runs < 1:
        p.error("--runs must be at least 1")
    return ns


def summary_line(output: str) -> str:
    """pytest's last non-empty line without the duration, e.g. '18 passed'."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return ""
    return _DURATION.sub("", lines[-1].strip("= ")).strip()


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", timeout=TIMEOUT)
    return time.perf_counter() - t0, proc.returncode, proc.stdout


def zygote(ns: argparse.Namespace, env: dict[str, str], *args: str,
           check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([ns.bin, *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    if check and proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench: pytest-zygote {args[0]} exited with {proc.returncode}")
    return proc


def status(ns: argparse.Namespace, env: dict[str, str], root: Path) -> dict:
    proc = zygote(ns, env, "status", "--root", str(root), "--json")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise SystemExit(f"bench: status --json printed invalid JSON ({e}): {proc.stdout!r}")


def stop(ns: argparse.Namespace, env: dict[str, str], root: Path, runtime: str) -> None:
    """Stop the server; if that fails, signal the supervisor this script started."""
    try:
        zygote(ns, env, "stop", "--root", str(root), check=False)
    except subprocess.TimeoutExpired:
        pass
    for pidfile in Path(runtime).glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            continue
        print(f"bench: server pid {pid} still running after stop; sending SIGTERM", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def fmt_stats(xs: list[float]) -> str:
    return f"{statistics.median(xs):8.3f}s {min(xs):8.3f}s {max(xs):8.3f}s"


def main(argv: list[str]) -> int:
    ns = parse_args(argv)
    root = Path(ns.root).resolve()
    if not root.is_dir():
        raise SystemExit(f"bench: {root} is not a directory")
    if not os.access(ns.bin, os.X_OK):
        raise SystemExit(f"bench: {ns.bin} not found; run scripts/build.sh")

    runtime = tempfile.mkdtemp(prefix="pytest-zygote-bench.")  # mode 0700
    env = dict(os.environ, PYTEST_ZYGOTE_RUNTIME_DIR=runtime)
    cold_cmd = [ns.python, "-m", "pytest", *ns.pytest_args]
    warm_cmd = [ns.bin, "run", "--", *ns.pytest_args]
    started = False
    try:
        print(f"bench: {root}, {ns.runs} pairs, pytest args {' '.join(ns.pytest_args)!r}")
        t0 = time.perf_counter()
        started = True
        proc = zygote(ns, env, "start", "--root", str(root), "--python", ns.python)
        start_s = time.perf_counter() - t0
        print(f"  start  {start_s:6.3f}s  {proc.stdout.strip()}")
        st_before = status(ns, env, root)

        cold: list[float] = []
        warm: list[float] = []
        mismatches = []
        for i in range(ns.runs):
            c_s, c_rc, c_out = timed(cold_cmd, root, env)
            w_s, w_rc, w_out = timed(warm_cmd, root, env)
            cold.append(c_s)
            warm.append(w_s)
            c_sum, w_sum = summary_line(c_out), summary_line(w_out)
            print(f"  pair {i + 1:2d}  cold {c_s:6.3f}s  warm {w_s:6.3f}s  "
                  f"rc {c_rc}/{w_rc}  {w_sum}")
            if c_rc != w_rc or c_sum != w_sum:
                mismatches.append({"pair": i + 1, "cold_rc": c_rc, "warm_rc": w_rc,
                                   "cold_summary": c_sum, "warm_summary": w_sum})
                if len(mismatches) == 1:
                    sys.stderr.write(f"--- cold output ---\n{c_out}--- warm output ---\n{w_out}")
        st_after = status(ns, env, root)
    finally:
        if started:
            stop(ns, env, root, runtime)
        shutil.rmtree(runtime, ignore_errors=True)

    mc, mw = statistics.median(cold), statistics.median(warm)
    ratio = mc / mw if mw > 0 else float("inf")
    print()
    print(f"  {'':<20}{'median':>9} {'min':>9} {'max':>9}")
    print(f"  {'cold pytest':<20}{fmt_stats(cold)}")
    print(f"  {'pytest-zygote run':<20}{fmt_stats(warm)}")
    print(f"  {'speed-up':<20}{ratio:8.1f}x")
    print(f"  {'start to ready':<20}{start_s:8.3f}s")
    rss = st_after.get("rss_kb")
    if isinstance(rss, (int, float)):
        print(f"  {'zygote RSS':<20}{rss / 1024:8.1f} MiB ({st_after.get('modules')} modules)")
    if mismatches:
        print(f"bench: {len(mismatches)} pair(s) where cold and warm runs disagree", file=sys.stderr)

    if ns.json:
        result = {
            "root": str(root),
            "python": ns.python,
            "bin": ns.bin,
            "pytest_args": ns.pytest_args,
            "runs": ns.runs,
            "cold_s": cold,
            "warm_s": warm,
            "cold_median_s": mc,
            "warm_median_s": mw,
            "ratio": ratio,
            "start_s": start_s,
            "rss_kb": rss,
            "status_before": st_before,
            "status_after": st_after,
            "mismatches": mismatches,
        }
        Path(ns.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"  wrote {ns.json}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
