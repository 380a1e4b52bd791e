"""Many clients at once: each run gets its own process, output and result."""

import json
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
    pz.start(root, "--max-runs", "0")  # no limit: the barrier needs all N at once
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


def test_fifty_clients_at_once_get_their_own_results(pz):
    """50 clients, each with its own arguments and environment, at once: all
    pass, and each output names only its own client (under the default
    max_runs, so most of them queue)."""
    root = pz.project("concurrency")
    srv = pz.start(root)
    n = 50
    marks = ["m%02d" % i for i in range(n)]
    procs = [_launch(pz, root, m, ["-q", "-k", "argv_and_env or %s" % m,
                                   "tests/test_marker.py"]) for m in marks]
    results = _collect(procs)
    pids = set()
    for mark, (rc, out, err) in zip(marks, results):
        assert rc == 0, (mark, rc, out, err)
        lines = re.findall(r"^RUN (\S+) argv=(.*) pid=(\d+)$", out, re.M)
        assert len(lines) == 1, (mark, out)
        got_mark, argv, pid = lines[0]
        assert got_mark == mark
        assert "argv_and_env or %s" % mark in argv, argv
        others = set(re.findall(r"\bm\d\d\b", out + err)) - {mark}
        assert not others, "output of %s contains %s" % (mark, others)
        assert "1 passed" in out
        pids.add(int(pid))
    assert len(pids) == n
    st = srv.wait_idle()
    assert st["runs"] == n
    assert st["queued"] == 0


def test_max_runs_is_honoured_and_the_rest_queue(pz, tmp_path):
    """With --max-runs 3, 12 runs that each stay alive for a while: never more
    than 3 alive at once (measured inside the tests), all succeed, status
    shows the queue, and queued clients are told why they wait."""
    root = pz.project("concurrency")
    srv = pz.start(root, "--max-runs", "3")
    live, seen = tmp_path / "live", tmp_path / "seen"
    live.mkdir()
    seen.mkdir()
    env = {"PZ_LIVE_DIR": str(live), "PZ_SEEN_DIR": str(seen)}
    marks = ["m%02d" % i for i in range(12)]
    procs = [_launch(pz, root, m, ["-q", "tests/test_marker.py::test_record_overlap"], env)
             for m in marks]
    statuses = []

    def queue_seen():
        statuses.append(srv.status())
        return statuses[-1]["queued"] > 0 or all(p.poll() is not None for p in procs)

    pz_util.wait_until(queue_seen, timeout=TIMEOUT)
    results = _collect(procs)
    for mark, (rc, out, err) in zip(marks, results):
        assert rc == 0, (mark, rc, out, err)
    counts = [int((seen / m).read_text()) for m in marks]
    assert max(counts) <= 3, counts
    # each test stays alive 0.5 s: some of them did overlap (not serialised)
    assert max(counts) >= 2, counts
    assert statuses[-1]["max_runs"] == 3
    assert any(s["queued"] > 0 and s["running"] <= 3 for s in statuses), statuses[-3:]
    assert all(s["running"] <= 3 for s in statuses), [s["running"] for s in statuses]
    # 12 runs of 0.5 s, 3 at a time: the last ones waited well over a second
    notices = [err for _, _, err in results if "waiting:" in err]
    assert notices, "no queued client was told it waits"
    for err in notices:
        line = [ln for ln in err.splitlines() if "waiting:" in ln]
        assert len(line) == 1, err
        assert re.fullmatch(r"pytest-zygote: waiting: \d+ runs in progress \(max_runs=3\)",
                            line[0]), line
    st = srv.wait_idle()
    assert st["runs"] == 12 and st["queued"] == 0


def test_max_runs_setting_precedence(pz):
    """--max-runs > PYTEST_ZYGOTE_MAX_RUNS > max_runs in the config section >
    the default (twice the CPUs, at least 8)."""
    import os

    root = pz.project("concurrency")
    ini = root / "pytest.ini"
    srv = pz.start(root)
    assert srv.status()["max_runs"] == max(8, 2 * os.cpu_count())
    pz.cli("stop", "--root", root)
    ini.write_text(ini.read_text() + "\n[pytest-zygote]\nmax_runs = 5\n")
    srv = pz.start(root)
    assert srv.status()["max_runs"] == 5
    pz.cli("stop", "--root", root)
    srv = pz.start(root, env={"PYTEST_ZYGOTE_MAX_RUNS": "4"})
    assert srv.status()["max_runs"] == 4
    pz.cli("stop", "--root", root)
    srv = pz.start(root, "--max-runs", "0", env={"PYTEST_ZYGOTE_MAX_RUNS": "4"})
    assert srv.status()["max_runs"] == 0
    r = pz.cli("start", "--root", root, "--max-runs", "-1")
    assert r.rc == 64 and "--max-runs needs a number" in r.err, r


def test_ctrl_c_cancels_a_queued_run(pz, tmp_path):
    import signal

    root = pz.project("concurrency")
    srv = pz.start(root, "--max-runs", "1")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {"PZ_BARRIER_DIR": str(barrier), "PZ_BARRIER_COUNT": "2"}
    holder = _launch(pz, root, "m00", ["-q", "tests/test_marker.py::test_barrier"], env)
    assert pz_util.wait_until(lambda: (barrier / "m00").exists(), timeout=TIMEOUT)
    queued = _launch(pz, root, "m01", ["-q", "tests/test_marker.py::test_barrier"], env)
    assert pz_util.wait_until(lambda: srv.status()["queued"] == 1, timeout=TIMEOUT)
    queued.send_signal(signal.SIGINT)
    (rc, out, err), = _collect([queued])
    assert rc == 130, (rc, out, err)
    assert "pytest-zygote: interrupted before the run started" in err, err
    assert not (barrier / "m01").exists(), "the cancelled run never started"
    (barrier / "other").touch()  # release the holder
    (rc, out, err), = _collect([holder])
    assert rc == 0, (rc, out, err)
    st = srv.wait_idle()
    assert st["queued"] == 0 and st["runs"] == 1
