"""Many sequential runs on one server: the supervisor's and the zygote's
memory and open descriptors must not grow, and nothing may be left behind.

PYTEST_ZYGOTE_SOAK_RUNS sets the number of measured runs (default 300, about
1.5 minutes on an idle 2-CPU machine; 1000 were measured when this was written);
PYTEST_ZYGOTE_SOAK_REPORT=PATH writes the figures there as JSON."""

import json
import os
import subprocess
import time

import pz_util

WARMUP_RUNS = 20  # the first runs legitimately grow caches
RSS_GROWTH_LIMIT_KB = 1024


def _rss_kb(pid):
    for line in pz_util._read("/proc/%d/status" % pid, "r").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def _fds(pid):
    # once settled: wait_idle's own status connection may still be closing
    return sorted(pz_util.settled_fds(pid))


def _snapshot(srv, zygote):
    srv.wait_idle()
    return {"supervisor_rss_kb": _rss_kb(srv.pid), "zygote_rss_kb": _rss_kb(zygote),
            "supervisor_fds": _fds(srv.pid), "zygote_fds": _fds(zygote)}


def test_sequential_runs_do_not_leak(pz):
    runs = int(os.environ.get("PYTEST_ZYGOTE_SOAK_RUNS", "300"))
    root = pz.project("soak")
    srv = pz.start(root)
    zygotes = srv.zygote_pids()
    assert len(zygotes) == 1, zygotes
    zygote = zygotes[0]
    argv = [pz.zbin, "run", "--", "-q", "-p", "no:cacheprovider"]
    env = pz.env()

    def run(i):
        env["PZ_SOAK_RUN"] = str(i)
        p = subprocess.run(argv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=pz_util.TIMEOUT)
        assert p.returncode == 0, (i, p.returncode, p.stdout, p.stderr)
        assert "1 passed" in p.stdout, (i, p.stdout)

    for i in range(WARMUP_RUNS):
        run(i)
    before = _snapshot(srv, zygote)
    t0 = time.monotonic()
    for i in range(runs):
        run(WARMUP_RUNS + i)
    seconds = time.monotonic() - t0
    after = _snapshot(srv, zygote)
    report = {"runs": runs, "seconds": round(seconds, 1), "before": before, "after": after}
    if os.environ.get("PYTEST_ZYGOTE_SOAK_REPORT"):
        with open(os.environ["PYTEST_ZYGOTE_SOAK_REPORT"], "w") as f:
            json.dump(report, f, indent=1)
    print("soak:", json.dumps(report))

    assert srv.zygote_pids() == [zygote], "the same generation served every run"
    st = srv.wait_idle()
    assert st["runs"] == WARMUP_RUNS + runs
    for who in ("supervisor", "zygote"):
        growth = after[who + "_rss_kb"] - before[who + "_rss_kb"]
        assert growth < RSS_GROWTH_LIMIT_KB, (who, report)
        assert after[who + "_fds"] == before[who + "_fds"], (who, report)
    pz_util.assert_no_strays([pz.runtime_dir] + pz.roots, srv.pid)
