"""Process plumbing for the benchmark: timed runs, the servers the harness
starts (each in a private runtime directory, always stopped), statistics.

Nothing here knows about scenarios; bench/run.py decides what to measure.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 900  # seconds for any one subprocess: a hang fails instead of blocking

# Variables from the caller's environment that would make plain pytest and the
# zygote differ for reasons that have nothing to do with the zygote (as in
# tests/e2e/conftest.py).
_DROP_PREFIXES = ("PYTEST_", "PYTHON", "PY_COLORS", "NO_COLOR", "FORCE_COLOR",
                  "COLUMNS", "LINES", "XDG_RUNTIME_DIR")
_DURATION = re.compile(r"\s+in\s+[\d.]+s(\s+\([^)]*\))?")
_WARNINGS = re.compile(r"(^|,\s*)\d+ warnings?\b")
_COUNTS = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed|deselected)")


class BenchError(Exception):
    """A measurement could not be taken; the message says why."""


def base_env(runtime_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
    env["PYTEST_ZYGOTE_RUNTIME_DIR"] = runtime_dir
    return env


def with_env(env: dict, extra: dict | None) -> dict:
    out = dict(env)
    for k, v in (extra or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def summary_line(output: str) -> str:
    """pytest's last non-empty line without the duration, e.g. '18 passed'."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return ""
    return _DURATION.sub("", lines[-1].strip("= ")).strip()


def without_warnings(summary: str) -> str:
    """'15 passed, 2 warnings' -> '15 passed': the outcome without the count of
    warnings (a known gap, see docs/plugin.md: Plugins and examples)."""
    return _WARNINGS.sub("", summary).strip(", ")


def test_count(summary: str) -> int:
    """Tests that ran according to a summary line ('3 failed, 5 passed' -> 8)."""
    return sum(int(n) for n, what in _COUNTS.findall(summary)
               if what not in ("deselected",))


@dataclass
class Run:
    seconds: float
    rc: int
    output: str

    @property
    def summary(self) -> str:
        return summary_line(self.output)


def timed(cmd: list, cwd: Path | str, env: dict, capture: bool = True) -> Run:
    """Run CMD (stdin /dev/null) and return its wall time, exit code and output."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    err = subprocess.STDOUT if capture else subprocess.DEVNULL
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err, text=True, errors="replace",
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError("timed out after %ss: %s (in %s)" % (TIMEOUT, " ".join(map(str, cmd)),
                                                              cwd)) from None
    return Run(time.perf_counter() - t0, proc.returncode, proc.stdout or "")


def _cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _state(pid: int) -> str:
    """The one-letter state of /proc/PID/stat (R running, S sleeping, ...)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


class Servers:
    """The zygote servers this harness starts, all in one private runtime
    directory that is removed at the end. Use as a context manager: leaving it
    (normally, by an exception, Ctrl-C or SIGTERM) stops every server."""

    def __init__(self, zbin: str, python: str):
        self.zbin = zbin
        self.python = python
        # mkdtemp makes it 0700, as the runtime directory must be; short, so
        # that socket paths fit in 108 bytes.
        self.runtime_dir = tempfile.mkdtemp(prefix="pzb-rt-")
        self.env = base_env(self.runtime_dir)
        self.env["PYTHONUSERBASE"] = self._hook_userbase()
        self.roots: set[str] = set()
        self._old_term = None

    def _hook_userbase(self) -> str:
        """A user site directory (PYTHONUSERBASE, for every command of the
        bench) where the package is installed as pip would make it
        importable, with the interpreter-start hook of
        `python3 -m pytest_zygote.hook install`. Commands run with
        PYTEST_ZYGOTE_HOOK=0 where the hook must stay out of the way."""
        base = os.path.join(self.runtime_dir, "userbase")
        site_dir = subprocess.run(
            [self.python, "-c", "import site; print(site.getusersitepackages())"],
            env={"PYTHONUSERBASE": base, "PATH": os.environ.get("PATH", "/usr/bin")},
            capture_output=True, text=True, check=True).stdout.strip()
        os.makedirs(site_dir)
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "plugin", "src")
        with open(os.path.join(site_dir, "pytest_zygote_src.pth"), "w") as f:
            f.write(src + "\n")
        sys.path.insert(0, src)
        try:
            from pytest_zygote import hook
        finally:
            sys.path.remove(src)
        with open(os.path.join(site_dir, hook.NAME), "w") as f:
            f.write(hook.line())
        return base

    def __enter__(self):
        def on_term(signum, frame):
            raise KeyboardInterrupt("SIGTERM")

        self._old_term = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, *exc):
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGTERM, self._old_term or signal.SIG_DFL)
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return False

    def cli(self, *args, env=None, check=True) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run([self.zbin, *map(str, args)], env=env or self.env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError("pytest-zygote %s timed out after %ss" % (args[0], TIMEOUT)) from None
        if check and proc.returncode != 0:
            raise BenchError("pytest-zygote %s exited with %d:\n%s%s" % (
                " ".join(map(str, args)), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def start(self, root: Path, env: dict) -> float:
        """`start --root ROOT` (returns once the zygote is warm); its wall time."""
        self.roots.add(str(root))
        t0 = time.perf_counter()
        self.cli("start", "--root", root, "--python", self.python, env=env)
        return time.perf_counter() - t0

    def status(self, root: Path) -> dict:
        proc = self.cli("status", "--root", root, "--json")
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise BenchError("status --json printed invalid JSON (%s): %r" % (e, proc.stdout))

    def wait_generation(self, root: Path, after: int, timeout: float = 300) -> dict:
        """Wait until a generation newer than AFTER is current, nothing warms
        and it has forked its first spare (its practice run is over)."""
        end = time.monotonic() + timeout
        while True:
            st = self.status(root)
            if st.get("generation", 0) > after and not st.get("warming") \
                    and not st.get("preparing") and st.get("state") == "ready":
                return st
            if time.monotonic() > end:
                raise BenchError("no fresh generation after %ss (status %r)" % (timeout, st))
            time.sleep(0.05)

    def settle(self, root: Path, timeout: float = 5.0) -> float:
        """Wait until the zygote is idle the way it is between two runs a
        person starts: no run child, and its spare child forked and done
        preparing (asleep waiting for a request). Returns the seconds waited;
        gives up quietly after TIMEOUT (then the next run finds what it finds).
        Runs started back to back are measured apart ("back to back")."""
        t0 = time.monotonic()
        zpid = self.status(root).get("zygote_pid")
        quiet = 0
        while zpid and time.monotonic() - t0 < timeout:
            kids = _children(zpid)
            titles = [_cmdline(k) for k in kids]
            spare = [k for k, t in zip(kids, titles) if t.startswith("pytest-zygote: spare ")]
            running = [t for t in titles if t.startswith("pytest-zygote: run")]
            if spare and not running and _state(spare[0]) == "S":
                quiet += 1
                if quiet >= 2:
                    break
            else:
                quiet = 0
            time.sleep(0.01)
        return time.monotonic() - t0

    def stop(self, root: Path) -> None:
        self.cli("stop", "--root", root, "--grace", "5", check=False)
        self.roots.discard(str(root))

    def stop_all(self) -> None:
        """Stop every server started here; signal any supervisor that survives."""
        for root in list(self.roots):
            try:
                self.stop(Path(root))
            except BenchError as e:
                print("bench: %s" % e, file=sys.stderr)
        for pidfile in Path(self.runtime_dir).glob("*.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not _cmdline(pid).startswith("pytest-zygote"):
                continue  # a stale pid file naming someone else: never signal that
            print("bench: server pid %d still running after stop; sending SIGTERM" % pid,
                  file=sys.stderr)
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def describe(xs: list) -> dict | None:
    """median, min, max, quartiles and IQR of a sample list (None if empty)."""
    if not xs:
        return None
    xs = sorted(xs)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return {"n": len(xs), "median": statistics.median(xs), "min": xs[0], "max": xs[-1],
            "q1": q1, "q3": q3, "iqr": q3 - q1}
