"""Changes the server cannot follow in a running generation, in bulk or for
good, and what runs that wait for a fresh generation are told: a storm of
changes outside the project (a package manager installing for a minute)
starts few generations, not one per file; a fresh generation that cannot
start (a package uninstalled under the server) is reported to the runs that
wait, which never wait without bound; and the client tells a server that
went away from a zygote being restarted, and bytes that are no request from
a request that is too large.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pz_util
from pz_util import wait_until

Q = ["-q", "-p", "no:cacheprovider"]
WAIT = 60  # bound on waiting for a state (not a timing assertion)
BOUND = 40  # a run that must not hang: the harness kills it after this


def _project(pz, name, test):
    """A project with one test file, registered for teardown."""
    root = pz.tmp_path / name
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (root / "tests" / "test_it.py").write_text(test)
    root = root.resolve()
    pz.roots.append(str(root))
    return root


# --- 1. a storm of changes outside the project ----------------------------------


def test_a_storm_outside_the_project_starts_few_generations(pz):
    """A writer rewrites a module outside the project (on PYTHONPATH) every
    100 ms for 10 s. The server waits for the changes to stop, and then
    warms one generation; a run that came during the storm says why it
    waits and sees the last version. (Before: a generation per change,
    about 100 here, each killing the one before.)"""
    ext = pz.tmp_path / "ext"
    (ext / "extpkg").mkdir(parents=True)
    mod = ext / "extpkg" / "__init__.py"
    mod.write_text("VALUE = 1\n")
    root = _project(pz, "proj", "import extpkg\n\n\ndef test_value():\n"
                    "    assert extpkg.VALUE == 2\n")
    env = {"PYTHONPATH": str(ext)}
    srv = pz.start(root, env=env)
    first = srv.status()["generation"]
    r = pz.run_zygote(Q, cwd=root, env=env)
    assert r.rc == 1 and "assert 1 == 2" in r.out, r

    stop = threading.Event()
    ended = {}

    def writer():
        # In place and by rename, as installers do; the last version is 2.
        for i in range(100):
            if i % 2:
                mod.write_text("VALUE = %d  # %d\n" % (1, i))
            else:
                tmp = ext / "extpkg" / "__init__.py.tmp"
                tmp.write_text("VALUE = %d  # %d\n" % (1, i))
                os.rename(tmp, mod)
            time.sleep(0.1)
        mod.write_text("VALUE = 2\n")
        ended["at"] = time.monotonic()
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    run = None
    try:
        time.sleep(2)
        run = pz_util.BgRun(pz, root, Q, env=env)
        assert run.wait_stderr("waiting for a fresh zygote"), run.err
        t.join(timeout=WAIT)
        assert stop.is_set()
        rc, out, err = run.finish(timeout=BOUND)
        done = time.monotonic()
    finally:
        stop.wait(timeout=WAIT)
        t.join(timeout=WAIT)
        if run:
            run.kill()
    # It waited out the storm and ran the last version, never a stale one.
    assert rc == 0 and "1 passed" in out, (rc, out, err)
    assert done > ended["at"], "the run finished before the storm ended"
    pz_util.wait_until(lambda: srv.status()["warming"] == 0, timeout=WAIT)
    st = srv.status()
    assert st["state"] == "ready" and st["fresh_reason"] == "", st
    made = st["generation"] - first
    assert 1 <= made <= 3, "%d generations for one storm: %r" % (made, st)
    # ...and it said what it waited for, and how long.
    assert "extpkg/__init__.py" in err, err
    assert "it starts once nothing changed for 1.0 s" in err and "then warms up" in err, err
    assert "is warming up" in err, err  # told again once the changes stopped
    r = pz.run_zygote(Q, cwd=root, env=env)
    assert r.rc == 0 and "waiting" not in r.err, r


def test_a_never_ending_storm_still_refreshes(pz):
    """A writer that never stops (every 100 ms, for up to 90 s): a fresh
    generation starts anyway, at the latest 30 s after the first change,
    and serves the run that waited, with a version at least as new as the
    one on disk when it came. (Before: each change killed the warming
    generation, and the run waited as long as the writer wrote.)"""
    ext = pz.tmp_path / "ext"
    (ext / "extpkg").mkdir(parents=True)
    mod = ext / "extpkg" / "__init__.py"
    mod.write_text("VALUE = 0\n")
    least = pz.tmp_path / "least"
    root = _project(pz, "proj", "import extpkg\n\n\ndef test_value():\n"
                    "    assert extpkg.VALUE >= int(open(%r).read())\n" % str(least))
    env = {"PYTHONPATH": str(ext)}
    pz.start(root, env=env)
    stop = threading.Event()
    written = {"n": 0}

    def writer():
        while not stop.is_set() and written["n"] < 900:
            written["n"] += 1
            mod.write_text("VALUE = %d\n" % written["n"])
            time.sleep(0.1)

    t = threading.Thread(target=writer)
    t.start()
    run = None
    try:
        time.sleep(1)
        least.write_text("%d\n" % written["n"])
        run = pz_util.BgRun(pz, root, Q, env=env)
        assert run.wait_stderr("waiting for a fresh zygote"), run.err
        rc, out, err = run.finish(timeout=80)
        still_writing = t.is_alive()
    finally:
        stop.set()
        t.join(timeout=WAIT)
        if run:
            run.kill()
    assert rc == 0 and "1 passed" in out, (rc, out, err)
    assert still_writing, "the run was served only once the writer stopped"
    assert "(at the latest in " in err, err


# --- 2. a fresh generation that cannot start -------------------------------------


def _venv_with_pytest(pz):
    """A virtualenv without system site-packages whose site-packages holds a
    copy of pytest and what it imports (so that removing it is an uninstall)."""
    venv = pz.tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=WAIT, capture_output=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    probe = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import sys, sysconfig, pytest\n"
         "std = sysconfig.get_paths()['stdlib']\n"
         "for m in list(sys.modules.values()):\n"
         "    f = getattr(m, '__file__', None) or ''\n"
         "    if ('-packages/' in f) and not f.startswith(std + '/'):\n"
         "        print(m.__name__.split('.')[0], f)\n"],
        check=True, timeout=WAIT, capture_output=True, text=True)
    for line in sorted(set(probe.stdout.splitlines())):
        top, path = line.split(" ", 1)
        base = path[:path.index("-packages/") + len("-packages/")]
        src = os.path.join(base, top)
        if os.path.isdir(src) and not (site / top).exists():
            shutil.copytree(src, site / top, ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.isfile(src + ".py") and not (site / (top + ".py")).exists():
            shutil.copy(src + ".py", site / (top + ".py"))
    assert (site / "_pytest").is_dir(), list(site.iterdir())
    return venv / "bin" / "python", site


def test_an_uninstalled_package_is_reported_to_runs_and_a_reinstall_is_picked_up(pz):
    """Removing _pytest from the server's virtualenv: the fresh generation
    cannot start. Every run after that says why and exits 71 at once (before:
    the first said so with exit 70, and every later run waited forever); the
    server keeps answering status; putting it back lets the next run's fresh
    generation start."""
    vpy, site = _venv_with_pytest(pz)
    root = _project(pz, "proj", "def test_ok():\n    pass\n")
    srv = pz.start(root, "--python", str(vpy))
    r = pz.run_zygote(Q, cwd=root)
    assert r.rc == 0 and "1 passed" in r.out, r

    away = pz.tmp_path / "away"
    away.mkdir()
    shutil.move(str(site / "_pytest"), str(away / "_pytest"))
    try:
        runs = [pz.run_zygote(Q, cwd=root, timeout=BOUND) for attempt in range(2)]
        for attempt, r in enumerate(runs):
            assert r.rc == 71, (attempt, r)
            assert "the fresh zygote cannot start" in r.err, (attempt, r)
            assert "No module named '_pytest'" in r.err, (attempt, r)
            assert "_pytest' changed outside the project" in r.err, (attempt, r)
            assert "run again" in r.err, (attempt, r)
        st = srv.status()
        assert st["pid"] == srv.pid and st["state"] == "refreshing", st
        assert "_pytest" in st["fresh_reason"], st
        assert "could not start: warm-up failed" in st["fresh_reason"], st
    finally:
        if not (site / "_pytest").exists():
            shutil.move(str(away / "_pytest"), str(site / "_pytest"))
    r = pz.run_zygote(Q, cwd=root, timeout=BOUND)
    assert r.rc == 0 and "1 passed" in r.out, r
    st = srv.status()
    assert st["state"] == "ready" and st["fresh_reason"] == "", st


def test_a_fresh_generation_killed_during_warm_up_is_reported_to_the_waiting_run(pz):
    """A run waits for a fresh generation (pytest.ini changed); the warming
    zygote is killed. The run hears so and exits 71 (before: it waited until
    another change), and the next run starts another."""
    root = pz.project("warmgate")
    marker = pz.tmp_path / "warm.marker"
    gate = pz.tmp_path / "warm.gate"
    gate.touch()
    env = {"WARMGATE_MARKER": str(marker), "WARMGATE_GATE": str(gate)}
    srv = pz.start(root, env=env)
    run = None
    try:
        gate.unlink()
        (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = -v\n")
        assert wait_until(lambda: len(marker.read_text().splitlines()) == 2, timeout=WAIT)
        st = srv.status()
        warming = [p for p in srv.zygote_pids() if p != st["zygote_pid"]]
        assert st["warming"] and len(warming) == 1, (st, warming)
        run = pz_util.BgRun(pz, root, ["-p", "no:cacheprovider"])
        assert run.wait_stderr("waiting for a fresh zygote"), run.err
        os.kill(warming[0], signal.SIGKILL)
        rc, out, err = run.finish(timeout=BOUND)
        assert rc == 71, (rc, out, err)
        assert "generation %d is warming up" % st["warming"] in err, err
        assert "the zygote was killed during warm-up (signal 9)" in err, err
    finally:
        gate.touch()
        if run:
            run.kill()
    r = pz.run_zygote(["-p", "no:cacheprovider"], cwd=root, timeout=BOUND)
    assert r.rc == 0 and "PASSED" in r.out, r


# --- 3. what the client says ------------------------------------------------------


def test_a_killed_server_is_not_a_zygote_being_restarted(pz):
    """kill -9 of the supervisor during a run: the client says the server is
    gone and how to start one, and exits 69 (before: 'the zygote went away
    (it is being restarted); run again', exit 75, and nothing restarted)."""
    flag = pz.tmp_path / "started"
    root = _project(pz, "proj", "import pathlib, time\n\n\ndef test_slow():\n"
                    "    pathlib.Path(%r).touch()\n    time.sleep(60)\n" % str(flag))
    srv = pz.start(root)
    run = pz_util.BgRun(pz, root, Q)
    try:
        assert wait_until(flag.exists, timeout=WAIT), "the test never started"
        os.kill(srv.pid, signal.SIGKILL)
        rc, out, err = run.finish(timeout=BOUND)
    finally:
        run.kill()
    assert rc == 69, (rc, out, err)
    assert "being restarted" not in err, err
    assert "the server went away during the run" in err, err
    assert "pytest-zygote start --root %s" % root in err, err
    r = pz.run_zygote(Q, cwd=root)
    assert r.rc == 69 and "no zygote is running" in r.err, r


def test_random_bytes_are_not_a_request_not_a_large_message(pz):
    """Bytes of something else (an HTTP request, random bytes) on the socket:
    the reply and the log say they are no pytest-zygote request, not that a
    message was larger than 1 MiB."""
    root = _project(pz, "proj", "def test_ok():\n    pass\n")
    srv = pz.start(root)
    import random
    junk = random.Random(9).randbytes(4096)
    assert int.from_bytes(junk[4:8], sys.byteorder) > 1 << 20  # what it announces
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", junk):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(WAIT)
        try:
            s.connect(srv.socket)
            s.sendall(payload)
            msgs = pz_util.read_all(s)
        finally:
            s.close()
        assert len(msgs) == 1 and msgs[0][0] == pz_util.MSG_ERROR, msgs
        text = msgs[0][1].decode()
        assert "not a pytest-zygote request" in text, text
        assert "1 MiB" not in text, text
    log = open(srv.status()["log"]).read()
    assert log.count("closing a connection: not a pytest-zygote request") == 2, log
    r = pz.run_zygote(Q, cwd=root)
    assert r.rc == 0, r


# --- a warm-up that never ends ----------------------------------------------


def test_a_warm_up_that_never_ends_bounds_the_wait(pz):
    """A fresh generation whose warm-up hangs (a conftest that blocks at
    import once a flag file exists): the run that waits for it is told,
    after wait_timeout, what it waited for and where the log is, and exits
    71 (before: it waited for good). The server keeps serving: once the
    cause is gone, the next fresh generation serves runs."""
    flag = pz.tmp_path / "hang"
    root = _project(pz, "proj", "def test_ok():\n    pass\n")
    (root / "tests" / "conftest.py").write_text(
        "import os, time\n\nwhile os.path.exists(%r):\n    time.sleep(0.2)\n" % str(flag))
    srv = pz.start(root, env={"PYTEST_ZYGOTE_WAIT_TIMEOUT": "3"})
    assert srv.status()["state"] == "ready"
    flag.touch()
    # a configuration change: runs must wait for a fresh generation
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = -p no:randomly\n")
    t0 = time.monotonic()
    r = pz.run_zygote(Q, cwd=root, timeout=BOUND)
    assert r.rc == 71, r
    assert "no zygote became ready within 3 s (wait_timeout)" in r.err, r
    assert "warming up" in r.err and ".log" in r.err, r
    assert time.monotonic() - t0 < BOUND
    assert srv.status()["pid"] == srv.pid
    flag.unlink()
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    r = pz.run_zygote(Q, cwd=root, timeout=WAIT)
    assert r.rc == 0 and "1 passed" in r.out, r
