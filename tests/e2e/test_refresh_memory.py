"""A refresh's memory (issue #18; docs/design.md, "Warm-up: the learning
run" and "Spare child"): while a new generation warms, the server never holds
two zygotes next to a learning run that duplicates the new zygote's pages,
nor two zygotes next to a practice run. Measured on a real server with the
sum of PSS over its processes, sampled from an edit until the new
generation has forked its first spare."""

import time
from pathlib import Path

import pz_util

ARGS = ["-q", "-p", "no:cacheprovider"]


def _pss_kb(pid):
    data = pz_util._read("/proc/%d/smaps_rollup" % pid)
    for line in (data or b"").decode().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _project(root, modules=20, per=50, slow_collection=0.0):
    """The bench's `large --quick` shape: 20 test modules of 50 tests, each
    importing a module of the project (1,000 tests)."""
    (root / "app").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\npythonpath = .\n")
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "core.py").write_text(
        "import json\n\n\ndef roundtrip(obj):\n    return json.loads(json.dumps(obj))\n")
    for i in range(modules):
        (root / "app" / ("m%03d.py" % i)).write_text("K = %d\n" % i)
        body = ["from app import core, m%03d\n" % i]
        for j in range(per):
            body.append("\ndef test_%d():\n    assert core.roundtrip([m%03d.K, %d]) == [%d, %d]\n"
                        % (j, i, j, i, j))
        (root / "tests" / ("test_m%03d.py" % i)).write_text("".join(body))
    if slow_collection:
        (root / "tests" / "conftest.py").write_text(
            "import time\n\n\ndef pytest_collection_finish(session):\n"
            "    time.sleep(%r)\n" % slow_collection)
    return root


def _until_prepared(srv, gen, sample, timeout=90):
    """Call sample() every few ms until a generation after gen serves and has
    forked its first spare."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sample()
        st = srv.status()
        if st["generation"] > gen and not st["warming"] and not st["preparing"]:
            return st
        time.sleep(0.005)
    raise AssertionError("no prepared new generation after %ss: %r" % (timeout, srv.status()))


def test_the_replaced_zygote_is_gone_before_the_practice_run(pz, tmp_path):
    # A new generation takes over as soon as it has imported; the one it
    # replaces (idle) exits then, and the new one's practice run waits for
    # the supervisor to have reaped it (Z_GO). Before, the new one said
    # ready only after its practice run, which ran next to both zygotes: the
    # highest point of a refresh. Without the wait, the practice run started
    # while the old zygote was still exiting (the log's order below; once,
    # in CI, the sampling too).
    root = _project(tmp_path / "p", modules=4, per=5, slow_collection=0.3)
    srv = pz.start(root, env={"PYTEST_ZYGOTE_DEBUG": "1"})
    old = srv.status()["zygote_pid"]
    assert pz_util.wait_until(lambda: pz_util.spare_ready(old), timeout=30)
    (root / "app" / "m000.py").write_text("K = 0  # an edit\n")
    seen = []

    def sample():
        procs = {p: pz_util.cmdline(p) or "" for p in pz_util.descendants(srv.pid)}
        practice = [p for p, t in procs.items() if "run --collect-only" in t]
        if practice:
            seen.append((pz_util.is_alive(old), practice, sorted(procs.values())))

    st = _until_prepared(srv, 1, sample)
    assert st["zygote_pid"] != old
    assert seen, "never saw the new generation's practice run"
    assert not [s for s in seen if s[0]], seen
    log = Path(st["log"]).read_text().splitlines()
    drained = [i for i, t in enumerate(log) if "generation 1 drained" in t]
    go = [i for i, t in enumerate(log) if "generation 2: the practice run may start" in t]
    assert drained and go and drained[0] < go[0], log[-30:]
    r = pz.run_zygote(ARGS, cwd=root)
    assert r.rc == 0 and "20 passed" in r.out, r


def test_a_refresh_peaks_under_twice_the_zygote(pz, tmp_path):
    # Issue #18: a refresh's peak, all of the server's processes (PSS),
    # stays under twice the zygote's RSS. On this 1,000-test project it was
    # 2.11x while the new zygote forked its learning run after importing
    # pytest (each then held its own copy of pytest's pages) and said ready
    # only after its practice run.
    root = _project(tmp_path / "p")
    srv = pz.start(root)
    for _ in range(2):
        r = pz.run_zygote(ARGS, cwd=root)
        assert r.rc == 0 and "1000 passed" in r.out, r
    zpid = srv.status()["zygote_pid"]
    assert pz_util.wait_until(lambda: pz_util.spare_ready(zpid), timeout=30)
    rss = srv.status()["rss_kb"]
    peaks = []
    for edit in range(2):
        gen = srv.status()["generation"]
        with open(root / "app" / "m003.py", "a") as f:
            f.write("# edit %d\n" % edit)
        peak = [0, ""]

        def sample():
            procs = [srv.pid] + pz_util.descendants(srv.pid)
            parts = [(_pss_kb(p), pz_util.cmdline(p)) for p in procs]
            total = sum(k for k, _ in parts)
            if total > peak[0]:
                peak[:] = [total, parts]

        _until_prepared(srv, gen, sample)
        peaks.append(peak)
        new = srv.status()["zygote_pid"]
        assert pz_util.wait_until(lambda: pz_util.spare_ready(new), timeout=30)
    for total, parts in peaks:
        assert total < 2 * rss, ("peak %.2fx the zygote's RSS (%d kB): %s"
                                 % (total / rss, rss, parts))
    r = pz.run_zygote(ARGS, cwd=root)
    assert r.rc == 0 and "1000 passed" in r.out, r


def test_status_says_when_a_generation_is_preparing(pz, tmp_path):
    # The new generation serves before its practice run ends; status says
    # so (preparing 1, then 0), and a run in that window is served by it.
    root = _project(tmp_path / "p", modules=2, per=3, slow_collection=1.5)
    srv = pz.start(root)
    gen = srv.status()["generation"]
    (root / "app" / "m000.py").write_text("K = 0  # an edit\n")
    assert pz_util.wait_until(lambda: (lambda s: s["generation"] > gen and not s["warming"])(
        srv.status()), timeout=60, interval=0.01)
    st = srv.status()
    assert st["preparing"] == 1, st
    text = pz.cli("status", "--root", root).out
    assert "preparing" in text, text
    r = pz.run_zygote(ARGS, cwd=root)
    assert r.rc == 0 and "6 passed" in r.out, r
    assert pz_util.wait_until(lambda: srv.status()["preparing"] == 0, timeout=30)
    assert "preparing" not in pz.cli("status", "--root", root).out


def test_runs_across_the_takeover_report_as_plain_pytest(pz, tmp_path):
    # An edit that changes what tests see; runs while the new generation
    # practises (it already serves) and after it is prepared, twice each,
    # end as plain pytest's do, test by test.
    args = ["-v", "-rA", "-p", "no:cacheprovider"]
    root = _project(tmp_path / "p", modules=3, per=4, slow_collection=1.0)
    (root / "tests" / "test_value.py").write_text(
        "from app import m000\n\n\ndef test_value():\n    assert m000.K == 0\n")
    srv = pz.start(root)
    pz_util.assert_same_outcomes(pz.run_plain(args, cwd=root), pz.run_zygote(args, cwd=root))
    gen = srv.status()["generation"]
    (root / "app" / "m000.py").write_text("K = 7  # an edit\n")
    plain = pz.run_plain(args, cwd=root)
    assert plain.rc == 1 and "test_value FAILED" in plain.out, plain
    assert pz_util.wait_until(lambda: (lambda s: s["generation"] > gen and not s["warming"])(
        srv.status()), timeout=60, interval=0.01)
    assert srv.status()["preparing"] == 1
    for _ in range(2):
        pz_util.assert_same_outcomes(plain, pz.run_zygote(args, cwd=root), "while preparing")
    assert pz_util.wait_until(lambda: srv.status()["preparing"] == 0, timeout=30)
    for _ in range(2):
        pz_util.assert_same_outcomes(plain, pz.run_zygote(args, cwd=root), "prepared")
