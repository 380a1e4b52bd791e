"""Many clients at once: each run gets its own process, output and result."""

import re
import subprocess


import pz_util
from pz_util import TIMEOUT

N = 10


def _launch(pz, root, mark, args, extra_env=None):
    env = {"PZ_MARK": mark}
    env.update(extra_env or {})
    return subprocess.Popen(
        [pz.zbin, "run", "--", "-s", "-p", "no:cacheprovider", *args], cwd=root,
        env=pz.env(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _collect(procs):
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a concurrent run hung") from None
        results.append((p.returncode, out, err))
    return results


def test_simultaneous_runs_are_correct_and_unmixed(pz):
    root = pz.project("concurrency")
    srv = pz.start(root)
    marks = ["m%02d" % i for i in range(N)]
    procs = [_launch(pz, root, m, ["-q", "tests/test_marker.py::test_marker"]) for m in marks]
    results = _collect(procs)
    pids = []
    for mark, (rc, out, err) in zip(marks, results):
        assert rc == 0, (mark, rc, out, err)
        lines = [ln for ln in out.splitlines() if ln.startswith("MARK ")]
        assert lines == ["MARK %s line %d" % (mark, i) for i in range(20)], (mark, out)
        others = set(re.findall(r"\bm\d\d\b", out)) - {mark}
        assert not others, "output of %s contains %s" % (mark, others)
        assert "1 passed" in out
        m = re.search(r"^PID %s (\d+)$" % mark, out, re.M)
        assert m, out
        pids.append(int(m.group(1)))
    assert len(set(pids)) == N, "each run has its own process: %r" % pids
    assert not set(pids) & set([srv.pid] + srv.zygote_pids())
    st = srv.wait_idle()
    assert st["running"] == 0
    assert st["runs"] == N


def test_runs_overlap(pz, tmp_path):
    """All runs wait for each other inside the test: they finish only if the
    server runs them at the same time rather than one after another."""
    root = pz.project("concurrency")
    pz.start(root)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {"PZ_BARRIER_DIR": str(barrier), "PZ_BARRIER_COUNT": str(N)}
    marks = ["m%02d" % i for i in range(N)]
    procs = [_launch(pz, root, m, ["-q", "tests/test_marker.py::test_barrier"], env)
             for m in marks]
    results = _collect(procs)
    for mark, (rc, out, err) in zip(marks, results):
        assert rc == 0, (mark, rc, out, err)
        assert "1 passed" in out


def test_different_arguments_at_once(pz):
    root = pz.project("basic")
    pz.start(root)
    variants = [["-q"], ["-q", "-k", "param"], ["-q", "-m", "slow"], ["--co", "-q"],
                ["-q", "tests/test_scopes.py"], ["-q", "-x"], ["-rA", "-q"], ["-v"]]
    expected = [pz.run_plain(v, cwd=root) for v in variants]
    procs = []
    for v in variants:
        procs.append(subprocess.Popen(
            [pz.zbin, "run", "--", *v], cwd=root, env=pz.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = _collect(procs)
    for v, exp, (rc, out, err) in zip(variants, expected, results):
        assert rc == exp.rc, (v, rc, out, err)
        assert pz_util.normalise(out) == pz_util.normalise(exp.out), v
