#!/usr/bin/python3
"""Benchmark plain pytest against pytest-zygote, side by side, in one run.

    /usr/bin/python3 bench/run.py [--quick] [--projects tiny,heavy,...,monorepo10k]
                                  [--rounds N] [--out DIR]
    /usr/bin/python3 bench/run.py --root DIR [--rounds N] [--out DIR]

For each project (generated into a scratch directory, see bench/projects.py)
the harness runs ROUNDS rounds. Every round starts a fresh zygote in a private
runtime directory and takes one or more samples of every scenario, always
alternating the two sides (A, B, A, B, ...) so that load from other processes
falls on both alike:

    start     cold `pytest --collect-only -q`         vs `pytest-zygote start` (returns when warm)
    first     a warm run                              vs the first run after start
    b2b       a warm run                              vs runs started back to back
    run       cold `python3 -m pytest -q`             vs `pytest-zygote run -q`
    floor     pytest.main() again in a warm process   vs `pytest-zygote run -q`
    handover  `pytest-zygote run -q`                  vs `python3 -m pytest -p pytest_zygote.plugin -q`
              (the plugin's hand-over: Python, pytest and the ini file, then exec of the client;
              with the start hook off, PYTEST_ZYGOTE_HOOK=0)
    hook      `pytest-zygote run -q`                  vs the same pytest command with the
              interpreter-start hook (Python's start, the hook's checks, exec of the client)
    xdist     cold `pytest -n N -q`                   vs `pytest-zygote run -n N -q` (workers forked
              from the zygote), and a single warm run vs the same, for N from 1 to the
              CPUs (tiny and large, when pytest-xdist is installed)
    noop      spawning /bin/true                      vs `pytest-zygote status` (round trip)
              spawning /bin/true                      vs `pytest-zygote --version` (no socket)
    per-test  test time / tests, cold                 vs the same in a zygote child
    dirty     a cold process's private dirty memory   vs a zygote child's
    gc        a child's private dirty memory          vs one whose test calls gc.collect()
    edits     a warm run                              vs the first and the second run after
              editing a leaf module, then the module everything imports
    watch     the settle time + a warm run after an   vs `pytest-zygote watch`: from saving the
              edit of the leaf module                 leaf module to its status line
    rss       cold pytest's RSS                       vs the zygote's
    monorepos (monorepo100, monorepo, monorepo10k: every run is of one 10-test file)
              a warm run's child CPU on monorepo100   vs the same here (PYTEST_ZYGOTE_TIMING)
              cold pytest -q FILE                     vs the first run after editing core

Every command runs with a private user site directory (PYTHONUSERBASE) that
makes the package importable, as pip would, and holds the start hook of
`python3 -m pytest_zygote.hook install`: the hook's cost to the cold runs
(it looks at their ini file and returns) is counted in their times.

A warm run is taken once the zygote is idle, as between two runs a person
starts: no run going and the spare child prepared (Servers.settle, at most 5 s);
runs a script starts back to back are their own scenario (b2b).

Every warm run must end with the same exit code and pytest summary line as the
cold run of the same round (the fidelity check); a mismatch is reported and
makes the exit code 1. Every server is stopped at the end, also on Ctrl-C.

Output: a table on stdout, DIR/bench.json (every raw sample) and
DIR/bench.png. docs/benchmarks.md explains the scenarios and targets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import projects  # noqa: E402
import report  # noqa: E402
from harness import BenchError, timed, with_env  # noqa: E402

PROBE_DIR = HERE / "probe"
FLOOR = HERE / "floor.py"
ARGS = ["-q"]  # what every timed run passes to pytest

# Per project: timed cold/warm pairs per round, pytest.main() calls for the
# floor per round (0: not measured), whether to measure the gc.collect() child.
# xdist: pairs of parallel runs per N (from 1 to the CPUs) per round.
PLAN = {
    "tiny": {"pairs": 5, "floor": 20, "gc": True, "xdist": 2},
    "heavy": {"pairs": 2, "floor": 5, "gc": True},
    "django": {"pairs": 2, "floor": 3, "gc": True},
    "large": {"pairs": 1, "floor": 0, "gc": False, "max_rounds": 3, "xdist": 1},
    "cpu": {"pairs": 1, "floor": 0, "gc": False, "xdist": 2},
    "monorepo100": {"pairs": 2, "floor": 0, "gc": False, "max_rounds": 3},
    "monorepo": {"pairs": 2, "floor": 0, "gc": False, "max_rounds": 3},
    "monorepo10k": {"pairs": 1, "floor": 0, "gc": False, "max_rounds": 1},
}
QUICK_PLAN = {
    "tiny": {"pairs": 3, "floor": 10, "gc": True, "xdist": 1},
    "heavy": {"pairs": 1, "floor": 3, "gc": True},
    "django": {"pairs": 1, "floor": 0, "gc": True},
    "large": {"pairs": 1, "floor": 0, "gc": False, "xdist": 1},
    "cpu": {"pairs": 1, "floor": 0, "gc": False, "xdist": 1},
    "monorepo100": {"pairs": 1, "floor": 0, "gc": False, "max_rounds": 1},
    "monorepo": {"pairs": 1, "floor": 0, "gc": False, "max_rounds": 1},
    "monorepo10k": {"pairs": 1, "floor": 0, "gc": False, "max_rounds": 1},
}
CHILD_CPU_RUNS = 3  # monorepo projects: warm runs with PYTEST_ZYGOTE_TIMING per round
NOOP_PAIRS = 20  # /bin/true vs status (and --version) per round
WATCH_PAIRS = 3  # per round, on projects with a leaf module: watch vs settle + run
SETTLE_S = 0.3  # the server's default settle time (PYTEST_ZYGOTE_SETTLE_MS)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="2 rounds, fewer samples, a 1,000-test 'large' (about 3 minutes)")
    p.add_argument("--projects", default=",".join(projects.NAMES),
                   help="comma-separated subset of %s (default: all but %s)"
                        % (",".join(projects.NAMES + projects.EXTRA), ",".join(projects.EXTRA)))
    p.add_argument("--root", metavar="DIR",
                   help="measure this existing project instead, in place (everything but "
                        "the edit scenarios, which would change its files)")
    p.add_argument("--rounds", type=int, help="rounds per project (default 5, --quick 2)")
    p.add_argument("--out", help="directory for bench.json and bench.png "
                                 "(default: a new bench-results-* directory under /tmp)")
    p.add_argument("--bin", default=os.environ.get("PYTEST_ZYGOTE_BIN",
                                                   str(REPO / "build" / "pytest-zygote")),
                   help="pytest-zygote binary (default: $PYTEST_ZYGOTE_BIN or build/pytest-zygote)")
    p.add_argument("--python", default=os.environ.get("PYTHON", "/usr/bin/python3"),
                   help="interpreter for cold runs and the zygote (default: /usr/bin/python3)")
    p.add_argument("--report", metavar="JSON",
                   help="measure nothing: print the table and draw the chart again from a "
                        "bench.json (with this version's targets), into --out or beside it")
    p.add_argument("--keep", action="store_true",
                   help="keep the generated projects (their path is printed)")
    ns = p.parse_args(argv)
    if ns.report:
        return ns
    ns.projects = [x.strip() for x in ns.projects.split(",") if x.strip()]
    if ns.root:
        if not Path(ns.root).is_dir():
            p.error("--root %s is not a directory" % ns.root)
        ns.projects = []
    bad = [x for x in ns.projects if x not in projects.NAMES + projects.EXTRA]
    if bad or not (ns.projects or ns.root):
        p.error("unknown project %s; choose from %s" % (",".join(bad) or "''",
                                                          ",".join(projects.NAMES
                                                                   + projects.EXTRA)))
    if ns.rounds is None:
        ns.rounds = 2 if ns.quick else 5
    if ns.rounds < 1:
        p.error("--rounds must be at least 1")
    if not os.access(ns.bin, os.X_OK):
        p.error("%s is not an executable; build it (scripts/build.sh) or pass --bin" % ns.bin)
    return ns


def _tail(text, lines=40):
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


class Project:
    """The measurements of one project: raw samples per key, fidelity checks."""

    def __init__(self, spec: projects.Project, servers: harness.Servers, ns, plan: dict):
        self.spec = spec
        self.root = spec.root
        self.servers = servers
        self.ns = ns
        self.plan = plan
        self.env = with_env(servers.env, spec.env)
        self.args = ARGS + list(spec.args or [])
        self.samples: dict[str, list] = {}
        self.probes: list[dict] = []
        self.statuses: list[dict] = []
        self.checked = 0
        self.mismatches: list[dict] = []
        self.warning_diffs: list[dict] = []
        self.tests = None
        self.edits = 0
        self.rounds = min(ns.rounds, plan.get("max_rounds") or ns.rounds)

    def add(self, key, value):
        self.samples.setdefault(key, []).append(value)

    def cold(self, args=None, env=None):
        return timed([self.ns.python, "-m", "pytest", *(args or self.args)], self.root,
                     env or self.env)

    def warm(self, args=None, env=None, settle=True):
        """A warm run. By default first wait until the zygote is idle, as it
        is between two runs a person starts (Servers.settle); settle=False
        measures what a script that starts runs back to back sees."""
        if settle:
            self.add("settle_s", self.servers.settle(self.root))
        return timed([self.ns.bin, "run", "--", *(args or self.args)], self.root,
                     env or self.env)

    def handover(self, args=None, hook=False):
        """A plain pytest command line that the plugin hands over (or, with
        hook, the interpreter-start hook before pytest is imported)."""
        env = with_env(self.env, {"PYTEST_ZYGOTE_BIN": self.ns.bin,
                                  "PYTEST_ZYGOTE_HOOK": None if hook else "0"})
        return timed([self.ns.python, "-m", "pytest", "-p", "pytest_zygote.plugin",
                      *(args or self.args)],
                     self.root, env)

    def check(self, what, ref, run):
        """Fidelity: RUN must end as the cold REF did: the same exit code and
        summary line. A different number of warnings alone is recorded apart."""
        self.checked += 1
        if run.rc == ref.rc and run.summary != ref.summary and \
                harness.without_warnings(run.summary) == harness.without_warnings(ref.summary):
            self.warning_diffs.append({"what": what, "cold_summary": ref.summary,
                                       "summary": run.summary})
        elif run.rc != ref.rc or run.summary != ref.summary:
            self.mismatches.append({"what": what, "cold_rc": ref.rc, "rc": run.rc,
                                    "cold_summary": ref.summary, "summary": run.summary})
            if len(self.mismatches) == 1:
                sys.stderr.write("bench: %s: %s ends differently from the cold run\n"
                                 "--- cold (end) ---\n%s\n--- %s (end) ---\n%s\n"
                                 % (self.spec.name, what, _tail(ref.output), what,
                                    _tail(run.output)))

    def probe(self, warm, gc=False):
        """A run with the probe plugin: returns (Run, probe dict)."""
        fd, path = tempfile.mkstemp(prefix="pzb-probe-", suffix=".json")
        os.close(fd)
        os.unlink(path)
        env = with_env(self.env, {"PYTHONPATH": str(PROBE_DIR), "PZ_BENCH_PROBE_OUT": path,
                                  "PZ_BENCH_GC_COLLECT": "1" if gc else None})
        args = self.args + ["-p", "pz_bench_probe"]
        run = self.warm(args, env) if warm else self.cold(args, env)
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise BenchError("%s: the probe wrote no result (%s); output:\n%s"
                             % (self.spec.name, e, run.output))
        finally:
            Path(path).unlink(missing_ok=True)
        data.update(kind="warm" if warm else "cold", gc=gc)
        self.probes.append(data)
        return run, data

    def edit(self, path: Path):
        self.edits += 1
        with open(path, "a") as f:
            f.write("# bench edit %d\n" % self.edits)

    def round(self, r: int):
        name, srv = self.spec.name, self.servers
        # start-to-ready against a cold collection
        collect = self.cold(["--collect-only", "-q"])
        self.add("collect_cold", collect.seconds)
        self.add("start", srv.start(self.root, self.env))
        try:
            self._served_round(r)
        finally:
            srv.stop(self.root)
        print("  %-7s round %d/%d done" % (name, r + 1, self.rounds), flush=True)

    def _served_round(self, r: int):
        srv = self.servers
        # The first and second run after start (a spare child learns which
        # pages a run writes from the run before it), then cold/warm pairs.
        ref = self.cold()
        if ref.rc not in (0, 1):
            raise BenchError("%s: cold pytest exited %d:\n%s" % (self.spec.name, ref.rc,
                                                                ref.output))
        self.tests = harness.test_count(ref.summary)
        first = self.warm(settle=False)
        self.check("first run after start", ref, first)
        second = self.warm(settle=False)
        self.check("second run after start", ref, second)
        self.add("cold", ref.seconds)
        self.add("first", first.seconds)
        self.add("second", second.seconds)
        for i in range(self.plan["pairs"]):
            if i:
                ref = self.cold()
                self.add("cold", ref.seconds)
            w = self.warm()
            self.check("warm run", ref, w)
            self.add("warm", w.seconds)
            h = self.handover()
            self.check("hand-over", ref, h)
            self.add("handover", h.seconds)
            h = self.handover(hook=True)
            self.check("hand-over by the start hook", ref, h)
            self.add("hook", h.seconds)

        # runs started back to back, as a loop in a script does: the spare
        # of each run is still being prepared when the next request comes
        self.warm()
        for _ in range(3):
            b = self.warm(settle=False)
            self.check("back-to-back run", ref, b)
            self.add("back_to_back", b.seconds)

        # parallel runs: xdist's workers are new interpreters cold, forks of
        # the zygote warm; N from 1 to the CPUs, alternating
        if self.plan.get("xdist") and self.ns.xdist:
            for _ in range(self.plan["xdist"]):
                for n in range(1, (os.cpu_count() or 1) + 1):
                    args = self.args + ["-n", str(n)]
                    c = self.cold(args)
                    self.check("cold -n %d" % n, ref, c)
                    self.add("xdist_cold_n%d" % n, c.seconds)
                    w = self.warm(args)
                    self.check("run -n %d" % n, ref, w)
                    self.add("xdist_warm_n%d" % n, w.seconds)

        # pytest.main() repeated in one process, alternating with warm runs
        if self.spec.floor and self.plan["floor"]:
            self._floor(ref)
            w = self.warm()
            self.check("warm run", ref, w)
            self.add("warm", w.seconds)

        # no-op round trips against spawning /bin/true
        for _ in range(NOOP_PAIRS):
            self.add("true", timed(["/bin/true"], "/", self.env, capture=False).seconds)
            self.add("status", timed([self.ns.bin, "status", "--root", self.root], "/",
                                     self.env, capture=False).seconds)
            self.add("version", timed([self.ns.bin, "--version"], "/", self.env,
                                      capture=False).seconds)

        # test time and memory (probe runs are never timed)
        cold_run, cold_probe = self.probe(warm=False)
        warm_run, warm_probe = self.probe(warm=True)
        self.check("probe run", cold_run, warm_run)
        self.add("runtest_cold", cold_probe["runtest_s"])
        self.add("runtest_warm", warm_probe["runtest_s"])
        self.add("cpu_cold", cold_probe["cpu_s"])
        self.add("cpu_warm", warm_probe["cpu_s"])
        self.add("dirty_cold_kb", cold_probe["smaps"].get("Private_Dirty"))
        self.add("dirty_warm_kb", warm_probe["smaps"].get("Private_Dirty"))
        self.add("rss_cold_kb", cold_probe["smaps"].get("Rss"))
        if self.plan["gc"]:
            gc_run, gc_probe = self.probe(warm=True, gc=True)
            self.check("probe run with gc.collect()", cold_run, gc_run)
            self.add("dirty_gc_kb", gc_probe["smaps"].get("Private_Dirty"))
        st = srv.status(self.root)
        self.statuses.append(st)
        self.add("zygote_rss_kb", st.get("rss_kb"))

        # monorepos: the child's own CPU time of a warm run (PYTEST_ZYGOTE_TIMING)
        if self.spec.name in projects.MONOREPO:
            env = with_env(self.env, {"PYTEST_ZYGOTE_TIMING": "1"})
            for _ in range(CHILD_CPU_RUNS):
                w = self.warm(env=env)
                m = re.search(r"^pytest-zygote: child ([\d.]+) ms CPU.*\n?", w.output, re.M)
                if not m:
                    raise BenchError("%s: PYTEST_ZYGOTE_TIMING printed no child line:\n%s"
                                     % (self.spec.name, w.output))
                w.output = w.output.replace(m.group(0), "")
                self.check("warm run (timing)", ref, w)
                self.add("child_cpu_ms", float(m.group(1)))

        # edits: a warm run, then first and second run after each edit
        for kind, path in (("leaf", self.spec.leaf), ("core", self.spec.core)):
            if path is None:
                continue
            gen = srv.status(self.root)["generation"]
            w = self.warm()
            self.check("warm run", ref, w)
            self.add("warm_edit", w.seconds)
            self.servers.settle(self.root)  # a person edits after the run
            self.edit(path)
            first = self.warm(settle=False)
            self.check("first run after a %s edit" % kind, ref, first)
            self.add("%s_first" % kind, first.seconds)
            st = srv.wait_generation(self.root, gen)
            self.add("%s_refresh_s" % kind, st.get("last_refresh_s"))
            second = self.warm()
            self.check("second run after a %s edit" % kind, ref, second)
            self.add("%s_second" % kind, second.seconds)

        # watch: a save to its result, against the settle time + a warm run
        if self.spec.leaf is not None:
            self._watch(ref)

    def _watch(self, ref):
        """`pytest-zygote watch`: from a save of the leaf module to the
        status line after its run (B), against the settle time plus a warm
        run started after the same edit (A), alternating. Both runs get
        PYTEST_ZYGOTE_AFFECTED=1, as watch's runs do, so they select the same
        tests; the watch is started before each save and ended after it."""
        env = with_env(self.env, {"PYTEST_ZYGOTE_AFFECTED": "1"})
        for _ in range(WATCH_PAIRS):
            self.servers.settle(self.root)
            self.edit(self.spec.leaf)
            time.sleep(SETTLE_S)
            a = timed([self.ns.bin, "run", "--", *ARGS], self.root, env)
            self.add("watch_ref", SETTLE_S + a.seconds)
            self.servers.settle(self.root)
            proc = subprocess.Popen([self.ns.bin, "watch", "--", *ARGS], cwd=self.root,
                                    env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                out = self._read_until(proc, rb"watching \d+ files?")
                t0 = time.perf_counter()
                self.edit(self.spec.leaf)
                out += self._read_until(proc, rb"last run [0-9.]+ s")
                self.add("watch_save", time.perf_counter() - t0)
                proc.send_signal(signal.SIGINT)
                rc = proc.wait(timeout=harness.TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            self.checked += 1
            if rc != ref.rc or a.rc != ref.rc:
                self.mismatches.append({"what": "watch run", "cold_rc": ref.rc, "rc": rc,
                                        "cold_summary": ref.summary,
                                        "summary": out.decode(errors="replace")[-400:]})

    def _read_until(self, proc, pattern) -> bytes:
        """The watch's output until pattern appears in it."""
        buf, deadline = b"", time.monotonic() + harness.TIMEOUT
        while not re.search(pattern, buf):
            left = deadline - time.monotonic()
            r, _, _ = select.select([proc.stdout], [], [], max(left, 0))
            chunk = os.read(proc.stdout.fileno(), 65536) if r else b""
            if not chunk:
                raise BenchError("%s: watch ended or hung before %r (rc %r):\n%s"
                                 % (self.spec.name, pattern, proc.poll(),
                                    buf.decode(errors="replace")))
            buf += chunk
        return buf

    def _floor(self, ref):
        fd, path = tempfile.mkstemp(prefix="pzb-floor-", suffix=".json")
        os.close(fd)
        try:
            run = timed([self.ns.python, str(FLOOR), "--calls", str(self.plan["floor"]),
                         "--warmup", "2", "--out", path, "--", *self.args], self.root, self.env,
                        capture=True)
            try:
                data = json.loads(Path(path).read_text())
            except ValueError:
                raise BenchError("%s: floor.py wrote no result (rc %d):\n%s"
                                 % (self.spec.name, run.rc, run.output)) from None
        finally:
            Path(path).unlink(missing_ok=True)
        self.checked += 1
        if any(rc != ref.rc for rc in data["rcs"]):
            self.mismatches.append({"what": "in-process floor", "cold_rc": ref.rc,
                                    "rc": data["rcs"], "cold_summary": ref.summary,
                                    "summary": "pytest.main() exit codes %s" % data["rcs"]})
        for s in data["seconds"]:
            self.add("floor", s)

    def result(self) -> dict:
        return {
            "root": str(self.root),
            "tests": self.tests,
            "core": str(self.spec.core.relative_to(self.root)) if self.spec.core else None,
            "leaf": str(self.spec.leaf.relative_to(self.root)) if self.spec.leaf else None,
            "plan": self.plan,
            "rounds": self.rounds,
            "samples": self.samples,
            "probes": self.probes,
            "statuses": self.statuses,
            "fidelity": {"checked": self.checked, "mismatches": self.mismatches,
                         "warning_diffs": self.warning_diffs},
        }


def meta(ns) -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    version = harness.subprocess.run([ns.bin, "--version"], capture_output=True,
                                     text=True).stdout.strip()
    return {
        "schema": 1,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "loadavg_start": load,
        "kernel": platform.release(), "bin": ns.bin, "bin_version": version,
        "python": ns.python, "pytest_args": ARGS, "quick": ns.quick, "rounds": ns.rounds,
        "projects": ns.projects or ["root:" + str(Path(ns.root).resolve())],
        "large_shape": projects.large_shape(ns.quick),
        "git": _git_head(),
    }


def _git_head():
    try:
        return harness.subprocess.run(["git", "-C", str(REPO), "describe", "--always",
                                       "--dirty"], capture_output=True, text=True,
                                      timeout=30).stdout.strip() or None
    except OSError:
        return None


def rereport(ns) -> int:
    src = Path(ns.report)
    try:
        result = json.loads(src.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit("bench: cannot read %s: %s" % (src, e))
    out = Path(ns.out) if ns.out else src.parent
    out.mkdir(parents=True, exist_ok=True)
    result["scenarios"] = report.scenarios(result)
    if out.resolve() != src.parent.resolve():
        (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    print(report.table(result))
    png = report.chart(result, out / "bench.png")
    if png:
        print("\nbench: wrote %s" % png)
    return 0


def save(result: dict, out: Path, complete: bool) -> None:
    """Write OUT/bench.json (through a temporary file: never half a file)."""
    result["meta"]["complete"] = complete
    result["scenarios"] = report.scenarios(result)
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out / "bench.json")


def _partial(result, out):
    if not result["projects"]:
        return ""
    return "; the finished projects (%s) are in %s" % (", ".join(result["projects"]),
                                                       out / "bench.json")


def main(argv) -> int:
    ns = parse_args(argv)
    if ns.report:
        return rereport(ns)
    for name in ns.projects:
        miss = projects.missing_modules(name)
        if miss:
            raise SystemExit("bench: project %s needs %s; run scripts/install-deps.sh --bench"
                             % (name, ", ".join(miss)))
    out = Path(ns.out) if ns.out else Path(tempfile.mkdtemp(prefix="bench-results-"))
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="pzb-proj-"))
    plans = QUICK_PLAN if ns.quick else PLAN
    ns.xdist = harness.timed([ns.python, "-c", "import xdist"], "/", None).rc == 0
    result = {"meta": meta(ns), "projects": {}}
    rc = 0
    t0 = time.monotonic()
    try:
        with harness.Servers(ns.bin, ns.python) as servers:
            print("bench: %s, %d round(s) per project, in %s"
                  % (result["meta"]["bin_version"], ns.rounds, ns.root or scratch), flush=True)
            specs = ([projects.existing(Path(ns.root))] if ns.root else
                     (projects.make(name, scratch, quick=ns.quick) for name in ns.projects))
            for spec in specs:
                name = spec.name
                proj = Project(spec, servers, ns, plans.get(name, plans["heavy"]))
                for r in range(proj.rounds):
                    proj.round(r)
                result["projects"][name] = proj.result()
                save(result, out, complete=False)  # what is done survives an interrupt
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped%s" % _partial(result, out), file=sys.stderr)
        return 130
    except BenchError as e:
        print("bench: %s%s" % (e, _partial(result, out)), file=sys.stderr)
        return 1
    finally:
        if ns.keep:
            print("bench: projects kept in %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    result["meta"]["elapsed_s"] = time.monotonic() - t0
    try:
        result["meta"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    save(result, out, complete=True)
    print()
    print(report.table(result))
    png = report.chart(result, out / "bench.png")
    print("\nbench: wrote %s%s" % (out / "bench.json", ", %s" % png if png else ""))
    for name, p in result["projects"].items():
        mm = p["fidelity"]["mismatches"]
        if mm:
            rc = 1
            print("bench: %s: %d of %d warm runs ended differently from the cold run: %s"
                  % (name, len(mm), p["fidelity"]["checked"],
                     "; ".join("%s (%r vs %r)" % (m["what"], m["summary"], m["cold_summary"])
                               for m in mm[:3])), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
