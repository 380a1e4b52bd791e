"""pytest-xdist through the zygote: `run -- -n N` starts its workers as forks
of the warm zygote (pytest-zygote worker as the python of xdist's popen
gateways), and every outcome is plain `python3 -m pytest -n N`'s, test id by
test id. Workers are cleaned up like runs: the client's death, Ctrl-C and
max_runs."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import pz_util

pytest.importorskip("xdist")

_OUTCOME = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+::\S+)")
_FINAL = re.compile(r"^=+ (.+?) in [\d.]+s(?: \([^)]*\))? =+$", re.M)


def outcomes(r):
    """{test id: outcome} from -v output under xdist ("[gw0] [ 50%] PASSED id")."""
    found = {}
    for outcome, test in _OUTCOME.findall(r.out):
        found.setdefault(test, outcome)
    return found


def final(r):
    m = _FINAL.findall(pz_util.strip_ansi(r.out))
    return m[-1] if m else None


def assert_same(plain, zyg, what):
    __tracebackhide__ = True
    p, z = outcomes(plain), outcomes(zyg)
    assert p, "plain pytest reported no test: %r" % (plain,)
    problems = []
    for k in sorted(set(p) | set(z)):
        if p.get(k) != z.get(k):
            problems.append("%s: plain %s, zygote %s" % (k, p.get(k), z.get(k)))
    if plain.rc != zyg.rc:
        problems.append("exit code: plain %d, zygote %d" % (plain.rc, zyg.rc))
    if final(plain) != final(zyg):
        problems.append("summary: plain %r, zygote %r" % (final(plain), final(zyg)))
    if problems:
        pytest.fail("%s differs from plain pytest:\n%s\n--- plain:\n%s\n--- zygote:\n%s\n%s" % (
            what, "\n".join(problems), plain.out[-3000:], zyg.out[-3000:], zyg.err[-2000:]))


def where(report):
    return [json.loads(line) for line in report.read_text().splitlines()]


def test_workers_are_forks_of_the_warm_zygote(pz, tmp_path):
    root = pz.project("xdist_warm")
    server = pz.start(root)
    report = tmp_path / "where.jsonl"
    env = {"PYTEST_XDIST_REPORT": str(report)}
    r = pz.run_zygote(["-n", "2", "-q", "-p", "no:cacheprovider", "tests/test_a.py"],
                      cwd=root, env=env)
    assert r.rc == 1, r
    seen = where(report)
    zygotes = set(server.zygote_pids())
    assert {w["worker"] for w in seen} == {"gw0", "gw1"}, seen
    for w in seen:
        # forked from a zygote generation, which had imported the project
        assert w["ppid"] in zygotes, (w, zygotes)
        assert w["calc_imported_by"] != w["pid"], w
        assert pz_util.cmdline(w["ppid"]).startswith("pytest-zygote: zygote"), w
    # Plain pytest -n 2: the workers are its children and import the project themselves.
    report.unlink()
    plain = pz.run_plain(["-n", "2", "-q", "-p", "no:cacheprovider", "tests/test_a.py"],
                         cwd=root, env=env)
    for w in where(report):
        assert w["calc_imported_by"] == w["pid"], w
    assert plain.rc == r.rc


@pytest.mark.parametrize("extra", [
    ["-n", "2"],
    ["-n", "2", "--dist", "loadscope"],
    ["-n", "2", "--dist", "loadfile"],
    ["-n", "auto"],
    ["-n", "3", "--maxprocesses", "2"],
    ["--numprocesses=2", "-k", "add or letters"],
], ids=lambda a: " ".join(a))
def test_outcomes_are_plain_xdists(pz, extra):
    root = pz.project("xdist_warm")
    pz.start(root)
    args = extra + ["-v", "-rA", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=root)
    for i in range(2):
        assert_same(plain, pz.run_zygote(args, cwd=root), "run %d of %s" % (i + 1, extra))


def test_outcomes_after_an_edit(pz):
    # The workers are forks too: they run the edited code, as the controller does.
    root = pz.project("xdist_warm")
    pz.start(root)
    args = ["-n", "2", "-v", "-p", "no:cacheprovider"]
    (root / "calc" / "__init__.py").write_text(
        "import os\nIMPORTED_BY = os.getpid()\n\n\ndef add(a, b):\n    return a + b + (a == 1)\n")
    plain = pz.run_plain(args, cwd=root)
    assert outcomes(plain)["tests/test_a.py::test_add[1]"] == "FAILED", plain
    assert outcomes(plain)["tests/test_a.py::test_fails"] == "PASSED", plain
    assert_same(plain, pz.run_zygote(args, cwd=root), "after an edit")


def test_last_failed_exitfirst_and_junitxml_stay_xdists(pz, tmp_path):
    root = pz.project("xdist_warm")
    pz.start(root)
    # --lf: the cache (cacheprovider on) written by a parallel run selects the next.
    for runner in ("plain", "zygote"):
        run = pz.run_plain if runner == "plain" else pz.run_zygote
        cache = tmp_path / ("cache-" + runner)
        common = ["-n", "2", "-v", "-o", "cache_dir=%s" % cache]
        first = run(common, cwd=root)
        assert first.rc == 1, first
        again = run(common + ["--lf"], cwd=root)
        assert set(outcomes(again)) == {"tests/test_a.py::test_fails",
                                        "tests/test_b.py::test_errors_in_setup"}, (runner, again)
    # -x: stops after the first failure, as xdist does (which tests ran
    # before it depends on timing; the exit code and the message do not).
    plain = pz.run_plain(["-n", "2", "-x", "-p", "no:cacheprovider"], cwd=root)
    zyg = pz.run_zygote(["-n", "2", "-x", "-p", "no:cacheprovider"], cwd=root)
    # (2, "Interrupted", when xdist stopped workers that still had tests.)
    assert plain.rc == zyg.rc and plain.rc in (1, 2), (plain, zyg)
    assert "stopping after 1 failures" in plain.out + plain.err
    assert "stopping after 1 failures" in zyg.out + zyg.err, zyg
    # --junitxml: the same test cases and results.
    cases = {}
    for runner, run in (("plain", pz.run_plain), ("zygote", pz.run_zygote)):
        xml = tmp_path / ("%s.xml" % runner)
        r = run(["-n", "2", "-p", "no:cacheprovider", "--junitxml", str(xml)], cwd=root)
        assert r.rc == 1, r
        text = xml.read_text()
        cases[runner] = sorted(
            (m[0], m[1], "failure" if "<failure" in m[2] else "error" if "<error" in m[2]
             else "skipped" if "<skipped" in m[2] else "ok")
            for m in re.findall(r'<testcase classname="([^"]*)" name="([^"]*)"[^>]*?(/>|>.*?</testcase>)',
                                text, re.S))
    assert cases["plain"] and cases["plain"] == cases["zygote"], cases


def test_workers_do_not_wait_for_run_slots(pz):
    # max_runs 1: the run holds the slot; its workers must not queue behind it.
    root = pz.project("xdist_warm")
    pz.start(root, "--max-runs", "1")
    args = ["-n", "2", "-v", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=root)
    assert_same(plain, pz.run_zygote(args, cwd=root, timeout=60), "with max_runs 1")


def _wait_for_workers(report, n=2, timeout=30):
    """The pids of the n workers, once each has started a test (the
    project's conftest writes where each test runs to report)."""
    def found():
        try:
            pids = {w["worker"]: w["pid"] for w in where(report)}
        except (OSError, ValueError):
            return None
        return sorted(pids.values()) if len(pids) >= n else None
    return pz_util.wait_until(found, timeout=timeout)


def test_client_death_ends_every_worker(pz, tmp_path):
    root = pz.project("xdist_warm")
    server = pz.start(root)
    report = tmp_path / "where.jsonl"
    proc = subprocess.Popen(
        [pz.zbin, "run", "--", "-n", "2", "-p", "no:cacheprovider", "-k", "slow_if_asked or add"],
        cwd=root, env=pz.env({"PYTEST_XDIST_SLOW": "1", "PYTEST_XDIST_REPORT": str(report)}),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = _wait_for_workers(report)
        assert workers, "no worker forked from the zygote"
        proc.kill()
        proc.wait(timeout=10)
        assert pz_util.wait_until(lambda: all(pz_util.is_gone(p) for p in workers), timeout=15), \
            "workers left after the client died: %r" % workers
        pz_util.assert_no_strays([str(root)], server.pid)
        assert server.wait_idle()["pid"] == server.pid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_ends_the_run_and_its_workers_as_plain_xdist(pz, tmp_path):
    root = pz.project("xdist_warm")
    server = pz.start(root)
    args = ["-n", "2", "-p", "no:cacheprovider", "-k", "slow_if_asked or add"]
    codes = {}
    for runner in ("plain", "zygote"):
        argv = ([sys.executable, "-m", "pytest", *args] if runner == "plain"
                else [pz.zbin, "run", "--", *args])
        report = tmp_path / ("where-%s.jsonl" % runner)
        run = pz_util.PtyRun(argv, cwd=root, env=pz.env({"PYTEST_XDIST_SLOW": "1",
                                                         "PYTEST_XDIST_REPORT": str(report)}))
        try:
            workers = _wait_for_workers(report)
            assert workers, run.text
            time.sleep(1)  # a worker is in the sleeping test
            run.send(b"\x03")
            codes[runner], text = run.wait(timeout=30)
        finally:
            run.close()
        assert "KeyboardInterrupt" in text, (runner, text)
        assert pz_util.wait_until(lambda: all(pz_util.is_gone(p) for p in workers),
                                  timeout=15), workers
    assert codes["zygote"] == codes["plain"] == 2, codes
    pz_util.assert_no_strays([str(root)], server.pid)


@pytest.mark.parametrize("name", ["basic", "plugin_xdist", "graph", "many", "warm_classstate",
                                  "warm_gentests", "plugin_mock", "importwarn"])
def test_outcomes_on_the_test_projects(pz, name):
    # --dist loadfile: which worker runs a test is then fixed by its file, so
    # tests that share module-scoped state end the same in every run (with
    # "load" they do not even under plain xdist: basic's
    # test_module_fixture_shared passes or fails by timing).
    root = pz.project(name)
    pz.start(root)
    args = ["-n", "2", "--dist", "loadfile", "-v", "-rA", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=root)
    assert_same(plain, pz.run_zygote(args, cwd=root), "%s with -n 2" % name)


def test_workers_are_sandboxed_and_cleaned_up_like_runs(pz, tmp_path):
    root = pz.project("xdist_warm")
    server = pz.start(root)
    (root / "tests" / "test_c.py").write_text(
        "import os, signal, subprocess, sys\n\n\n"
        "def test_cannot_signal_the_zygote():\n"
        "    # a worker's parent is the zygote: the sandbox refuses\n"
        "    try:\n"
        "        os.kill(os.getppid(), signal.SIGTERM)\n"
        "    except PermissionError:\n"
        "        return\n"
        "    assert os.environ.get('PYTEST_XDIST_WORKER') is None or 0, 'signalled'\n\n\n"
        "def test_leaves_a_daemon():\n"
        "    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', %r],\n"
        "                         start_new_session=True)\n"
        "    with open(%r, 'a') as f:\n"
        "        f.write('%%d\\n' %% p.pid)\n" % (str(root), str(tmp_path / "daemons")))
    r = pz.run_zygote(["-n", "2", "-v", "-p", "no:cacheprovider", "tests/test_c.py"], cwd=root)
    assert r.rc == 0, r
    assert server.wait_idle()["pid"] == server.pid
    daemons = [int(x) for x in (tmp_path / "daemons").read_text().split()]
    assert daemons
    assert pz_util.wait_until(lambda: all(pz_util.is_gone(p) for p in daemons), timeout=15), \
        "a worker's daemon outlived its run: %r" % daemons


def test_pytest_n_handed_over_by_the_plugin_has_warm_workers(pz, tmp_path):
    root = pz.project("xdist_warm")
    server = pz.start(root)
    report = tmp_path / "where.jsonl"
    env = {"PYTEST_XDIST_REPORT": str(report), "PYTEST_ZYGOTE_BIN": pz.zbin,
           "PYTHONPATH": str(pz_util.REPO / "plugin" / "src")}
    args = ["-n", "2", "-v", "-p", "no:cacheprovider", "tests/test_a.py"]
    plain = pz.run_plain(args, cwd=root)
    r = pz.call([sys.executable, "-m", "pytest", "-p", "pytest_zygote.plugin", *args], cwd=root,
                env=env)
    assert_same(plain, r, "pytest -n 2 handed over")
    zygotes = set(server.zygote_pids())
    seen = where(report)
    assert {w["worker"] for w in seen} == {"gw0", "gw1"}, seen
    assert all(w["ppid"] in zygotes and w["calc_imported_by"] != w["pid"] for w in seen), seen
