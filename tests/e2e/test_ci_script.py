"""examples/ci/flaky-hunt.sh: N runs from one zygote, a per-test flakiness
summary, the server it started stopped and its runtime directory removed.

tests/projects/ci_flaky: test_flaky fails on even runs and
TestNetwork::test_sometimes on the third, counted in $PZ_FLAKY_COUNTER (a
file outside the project and outside any forked state); the rest pass.
tests/projects/ci_clean: everything passes.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

import pz_util
from pz_util import REPO, TIMEOUT

SCRIPT = REPO / "examples" / "ci" / "flaky-hunt.sh"
READY = re.compile(r"ready pid (?P<pid>\d+), socket (?P<socket>\S+?),")


class Hunt:
    """Runs the script with the test's private runtime dir, a private TMPDIR
    (so that what the script leaves behind is visible) and the counter file."""

    def __init__(self, pz):
        self.pz = pz
        # short: the script's private runtime dir goes here, and a socket
        # path must fit in 108 bytes
        self.tmpdir = Path(tempfile.mkdtemp(prefix="pzh-"))
        self.counter = pz.tmp_path / "counter"

    def env(self, extra=None):
        env = {"PYTEST_ZYGOTE_BIN": self.pz.zbin, "PYTHON": "/usr/bin/python3",
               "TMPDIR": str(self.tmpdir), "PZ_FLAKY_COUNTER": str(self.counter)}
        env.update(extra or {})
        return env

    def run(self, args, cwd, env=None):
        return self.pz.call(["bash", SCRIPT] + list(args), cwd=cwd, env=self.env(env),
                            timeout=4 * TIMEOUT)

    def runs_counted(self):
        return int(self.counter.read_text()) if self.counter.exists() else 0


@pytest.fixture
def hunt(pz):
    h = Hunt(pz)
    yield h
    shutil.rmtree(h.tmpdir, ignore_errors=True)


def summary(out):
    """The lines from 'flaky-hunt summary:' on."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("flaky-hunt summary:"):
            return lines[i:]
    raise AssertionError("no summary in:\n%s" % out)


def assert_nothing_left(pz, hunt, err):
    """The server the script started (named on its stderr) is gone, and so are
    its runtime dir and temporary files; the test's own runtime dir holds no
    server either."""
    m = READY.search(err)
    assert m, "the script did not say it started a server:\n%s" % err
    pid, runtime = int(m["pid"]), os.path.dirname(m["socket"])
    assert runtime.startswith(str(hunt.tmpdir) + "/"), runtime
    assert pz_util.wait_until(lambda: not pz_util.is_alive(pid), timeout=10), (
        "server %d still running after the script ended" % pid)
    assert not os.path.exists(runtime), "runtime dir %s left behind" % runtime
    assert list(hunt.tmpdir.iterdir()) == [], "left in TMPDIR: %r" % list(hunt.tmpdir.iterdir())
    assert not list(Path(pz.runtime_dir).glob("*.sock")), "a server in the test's runtime dir"
    assert pz_util.wait_until(
        lambda: not pz_util.processes_matching([runtime] + pz.roots), timeout=10), (
        "processes left: %r" % pz_util.processes_matching([runtime] + pz.roots))


def test_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck not installed (scripts/install-deps.sh installs it)",
                    pytrace=False)
    r = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_flaky_tests_are_named_with_their_runs(pz, hunt):
    root = pz.project("ci_flaky")
    r = hunt.run(["-n", "4"], cwd=root)
    assert r.rc == 1, r
    assert hunt.runs_counted() == 4, r
    for i in range(1, 5):
        assert re.search(r"^run %d/4: " % i, r.out, re.M), r.out
    assert re.search(r"^run 1/4: passed", r.out, re.M), r.out
    assert re.search(r"^run 2/4: FAILED with exit code 1", r.out, re.M), r.out
    assert "fails on even runs (this is run 2)" in r.out  # the failing run's output
    assert summary(r.out) == [
        "flaky-hunt summary: 4 runs, 3 failed (runs 2,3,4)",
        "  flaky  tests/test_flaky.py::test_flaky: failed in runs 2,4 of 4",
        "  flaky  tests/test_flaky.py::TestNetwork::test_sometimes: failed in run 3 of 4",
        "  4 tests passed (or skipped) in every run",
    ], r.out
    assert_nothing_left(pz, hunt, r.err)


def test_until_failure_stops_at_the_first_failing_run(pz, hunt):
    root = pz.project("ci_flaky")
    r = hunt.run(["-n", "10", "--until-failure", "--root", str(root)], cwd=pz.tmp_path)
    assert r.rc == 1, r
    assert hunt.runs_counted() == 2, r
    assert re.search(r"^run 2/10: FAILED", r.out, re.M), r.out
    assert not re.search(r"^run 3/10", r.out, re.M), r.out
    assert summary(r.out)[:2] == [
        "flaky-hunt summary: 2 runs, 1 failed (runs 2)",
        "  flaky  tests/test_flaky.py::test_flaky: failed in run 2 of 2",
    ], r.out
    assert_nothing_left(pz, hunt, r.err)


def test_a_clean_project_exits_0(pz, hunt):
    root = pz.project("ci_clean")
    r = hunt.run(["-n", "3"], cwd=root)
    assert r.rc == 0, r
    run_lines = [l for l in r.out.splitlines() if l.startswith("run ")]
    assert len(run_lines) == 3, r.out
    for i, line in enumerate(run_lines, 1):
        assert re.match(r"run %d/3: passed \(4 passed, 1 skipped in [\d.]+s\)$" % i, line), r.out
    assert summary(r.out) == [
        "flaky-hunt summary: 3 runs, 0 failed",
        "  5 tests passed (or skipped) in every run",
    ], r.out
    assert_nothing_left(pz, hunt, r.err)


def test_pytest_args_are_passed_to_every_run(pz, hunt):
    root = pz.project("ci_flaky")
    r = hunt.run(["-n", "2", "--", "-k", "stable or always_fine", "-q"], cwd=root)
    assert r.rc == 0, r
    assert hunt.runs_counted() == 0, "the deselected tests ran: %r" % (r,)
    assert re.search(r"^run 2/2: passed \(4 passed, 2 deselected in ", r.out, re.M), r.out
    assert summary(r.out)[-1] == "  4 tests passed (or skipped) in every run", r.out
    assert_nothing_left(pz, hunt, r.err)


def test_a_running_server_is_used_and_left_running(pz, hunt):
    root = pz.project("ci_flaky")
    server = pz.start(root)
    runs_before = server.status()["runs"]
    r = hunt.run(["-n", "3"], cwd=root)
    assert r.rc == 1, r
    assert "using the running server" in r.err, r
    assert not READY.search(r.err), "started a second server: %r" % (r,)
    st = server.wait_idle()
    assert st["pid"] == server.pid, st
    assert st["runs"] >= runs_before + 3, st
    assert list(hunt.tmpdir.iterdir()) == [], list(hunt.tmpdir.iterdir())


def test_ctrl_c_stops_the_server_it_started(pz, hunt):
    root = pz.project("ci_flaky")
    marker = pz.tmp_path / "block-started"
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "-n", "5", "--", "-q", "slow/test_block.py"],
        cwd=root, env=pz.env(hunt.env({"PZ_BLOCK_MARKER": str(marker)})),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        assert pz_util.wait_until(marker.exists, timeout=TIMEOUT), "the blocking test never started"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "run 2/5" not in out, out
    assert_nothing_left(pz, hunt, err)


@pytest.mark.parametrize("args", [["-n", "0"], ["-n", "x"], ["--bogus"], ["--root"],
                                  ["--", "--junitxml=mine.xml"]])
def test_usage_errors(pz, hunt, args):
    root = pz.project("ci_clean")
    r = hunt.run(args, cwd=root)
    assert r.rc == 64, r
    assert "flaky-hunt.sh: " in r.err, r
    assert not READY.search(r.err), r
    assert list(hunt.tmpdir.iterdir()) == [], list(hunt.tmpdir.iterdir())


def test_missing_binary_is_reported(pz, hunt):
    root = pz.project("ci_clean")
    r = hunt.run(["-n", "1"], cwd=root,
                 env={"PYTEST_ZYGOTE_BIN": str(pz.tmp_path / "no-such-binary")})
    assert r.rc == 69, r
    assert "no-such-binary" in r.err, r
    assert list(hunt.tmpdir.iterdir()) == [], list(hunt.tmpdir.iterdir())
