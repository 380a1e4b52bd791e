"""bench/run.py, the benchmark harness, in its smallest mode: the JSON it
writes holds every scenario with the raw samples its statistics and ratios
come from, the table names them, and the servers it starts are gone when it
ends, also when interrupted. Timings are not checked (see docs/benchmarks.md).
"""

import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import pz_util
from pz_util import REPO

HARNESS = REPO / "bench" / "run.py"
TINY_SCENARIOS = {"start", "run", "first", "second", "cpu", "floor", "leaf_first", "leaf_second", "core_first",
                  "core_second", "per_test", "noop", "noop_exec", "dirty", "gc", "rss", "handover", "hook",
                  "back_to_back", "watch", "moonshot"}


def _xdist_scenarios():
    """The parallel rows: -n 1 up to the CPUs, when pytest-xdist is installed."""
    if subprocess.run([sys.executable, "-c", "import xdist"], capture_output=True).returncode:
        return set()
    return {"xdist_n%d%s" % (n, w) for n in range(1, (os.cpu_count() or 1) + 1)
            for w in ("", "_warm")}


@pytest.fixture
def bench_env(zbin):
    """The harness's environment, with a private TMPDIR (its runtime directory
    and generated projects go there, so what it leaves behind is visible)."""
    tmpdir = tempfile.mkdtemp(prefix="pzb-t-")  # short: socket paths go under it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env.update(PYTEST_ZYGOTE_BIN=zbin, TMPDIR=tmpdir)
    yield env
    left = pz_util.processes_matching([tmpdir])
    for pid in left:
        pz_util.kill_quietly(pid)
    # pytest's own base temporary directory, which pytest-xdist's controller
    # creates for its workers under plain pytest -n as well
    entries = [e for e in os.listdir(tmpdir) if not e.startswith("pytest-of-")]
    subprocess.run(["rm", "-rf", "--", tmpdir], check=False)
    assert not left, "processes left behind: %r" % (left,)
    assert not entries, "left in TMPDIR: %r" % (entries,)


def run_bench(args, env, timeout=900):
    return subprocess.run([sys.executable, str(HARNESS), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def test_quick_tiny_run_writes_consistent_results(bench_env, tmp_path):
    out = tmp_path / "out"
    r = run_bench(["--quick", "--projects", "tiny", "--rounds", "2", "--out", str(out)],
                  bench_env)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((out / "bench.json").read_text())

    assert data["meta"]["schema"] == 1 and data["meta"]["complete"] is True
    assert data["meta"]["rounds"] == 2 and data["meta"]["projects"] == ["tiny"]
    tiny = data["projects"]["tiny"]
    assert list(data["projects"]) == ["tiny"]
    assert tiny["tests"] == 5
    assert tiny["fidelity"]["mismatches"] == []
    assert tiny["fidelity"]["checked"] >= 10
    s = tiny["samples"]
    # one start per round; the other scenarios several samples per round
    assert len(s["start"]) == len(s["collect_cold"]) == 2
    assert len(s["cold"]) >= 2 and len(s["warm"]) >= len(s["cold"])
    assert len(s["true"]) == len(s["status"]) == len(s["version"]) >= 2
    # every settled warm run waited for an idle zygote; 3 back-to-back runs per round
    assert len(s["settle_s"]) >= len(s["warm"]) and all(x >= 0 for x in s["settle_s"])
    assert len(s["back_to_back"]) == 3 * 2
    assert len(s["watch_save"]) == len(s["watch_ref"]) == 3 * 2  # watch vs settle + run
    assert all(x > 0 for k in ("start", "cold", "warm", "floor", "true", "status")
               for x in s[k])
    # the probe really ran in a zygote child and in a cold process
    kinds = sorted((p["kind"], p["gc"]) for p in tiny["probes"])
    assert kinds == sorted([("cold", False), ("warm", False), ("warm", True)] * 2)
    assert all(p["tests"] == 5 and p["smaps"]["Private_Dirty"] > 0 and p["cpu_s"] > 0
               for p in tiny["probes"])
    assert all(p["gc_collect"] == p["gc"] for p in tiny["probes"])
    assert len({p["pid"] for p in tiny["probes"]}) == len(tiny["probes"])

    scs = {sc["id"]: sc for sc in data["scenarios"]}
    assert set(scs) == TINY_SCENARIOS | _xdist_scenarios()
    assert scs["run"]["a"] == s["cold"] and scs["run"]["b"] == s["warm"]
    assert scs["start"]["a"] == s["collect_cold"] and scs["start"]["b"] == s["start"]
    for sc in data["scenarios"]:
        assert sc["project"] == "tiny"
        assert sc["b"], sc["id"]
        assert sc["b_stats"]["median"] == statistics.median(sc["b"])
        assert sc["b_stats"]["min"] == min(sc["b"]) and sc["b_stats"]["n"] == len(sc["b"])
        if sc["a"]:
            assert sc["ratio"] == pytest.approx(
                statistics.median(sc["b"]) / statistics.median(sc["a"]))
        else:
            assert sc["ratio"] is None
        t = sc["target"]
        if t is None:
            assert sc["result"] is None
            continue
        if t["kind"] == "ratio":
            ok = sc["ratio"] <= t["limit"]
        elif t["kind"] == "b_max":
            ok = sc["b_stats"]["median"] <= t["limit"]
        else:
            ok = sc["b_stats"]["median"] - sc["a_stats"]["median"] <= t["limit"]
        assert sc["result"] == ("pass" if ok else "miss"), sc
    # the targets for tiny are all there
    assert {k for k, sc in scs.items() if sc["target"]} == {
        "start", "run", "first", "back_to_back", "floor", "leaf_second", "core_second", "noop",
        "dirty", "gc", "hook"}

    for sc in data["scenarios"]:
        assert sc["title"] in r.stdout
    assert "fidelity: tiny: %d of %d" % ((tiny["fidelity"]["checked"],) * 2) in r.stdout
    if importlib.util.find_spec("matplotlib"):
        assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_child_reports_its_timing_and_writes_a_profile(pz, tmp_path):
    # The measuring aids of the environment table (docs/usage.md), in a real child.
    import pstats

    root = pz.project("basic")
    pz.start(root)
    args = ["-q", "-p", "no:cacheprovider"]
    plain = pz.run_zygote(args, cwd=root)
    assert plain.rc == 1, plain  # basic has failing tests on purpose
    prof = tmp_path / "child.prof"
    r = pz.run_zygote(args, cwd=root,
                      env={"PYTEST_ZYGOTE_TIMING": "1", "PYTEST_ZYGOTE_PROFILE": str(prof)})
    assert r.rc == plain.rc and pz_util.normalise(r.out) == pz_util.normalise(plain.out), r
    timing = [ln for ln in r.err.splitlines() if ln.startswith("pytest-zygote: child ")]
    assert len(timing) == 1 and " ms CPU, " in timing[0] and "page faults" in timing[0], r.err
    funcs = {f[2] for f in pstats.Stats(str(prof)).stats}
    assert "pytest_cmdline_main" in funcs and "runtestprotocol" in funcs, sorted(funcs)[:20]
    # unwritable: the run still ends as it would, with one line saying why
    bad = tmp_path / "no" / "such" / "dir" / "x.prof"
    r = pz.run_zygote(args, cwd=root, env={"PYTEST_ZYGOTE_PROFILE": str(bad)})
    assert r.rc == plain.rc and "cannot write the profile to %s" % bad in r.err, r


def test_unknown_project_is_a_usage_error(bench_env, tmp_path):
    r = run_bench(["--projects", "tiny,nosuch", "--out", str(tmp_path)], bench_env, timeout=60)
    assert r.returncode == 2
    assert "unknown project nosuch" in r.stderr
    assert not (tmp_path / "bench.json").exists()


def test_ctrl_c_stops_the_servers(bench_env, tmp_path):
    tmpdir = Path(bench_env["TMPDIR"])
    proc = subprocess.Popen([sys.executable, str(HARNESS), "--quick", "--projects", "tiny",
                             "--out", str(tmp_path)], env=bench_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait until a server of the harness is up (its pid file exists)
        pidfiles = pz_util.wait_until(lambda: list(tmpdir.glob("pzb-rt-*/*.pid")), timeout=120)
        assert pidfiles, "no server started"
        time.sleep(0.5)  # let it get into the middle of a measurement
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "interrupted; servers stopped" in err
    assert not (tmp_path / "bench.json").exists()
