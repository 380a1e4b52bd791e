"""start, status, stop, restart and run's handling of a missing or dead server."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import pz_util
from pz_util import ALREADY_RE, READY_RE, STOPPED_RE, TIMEOUT, normalise


def supervisors_for(root):
    title = "pytest-zygote: supervisor %s" % root
    return [p for p in pz_util.all_pids()
            if (pz_util.cmdline(p) or "") == title and pz_util.is_alive(p)]


def test_start_prints_one_ready_line(pz):
    root = pz.project("basic")
    srv = pz.start(root)  # asserts rc 0 and exactly one line matching READY_RE
    m = READY_RE.match(srv.line)
    assert int(m["modules"]) > 0
    assert pz_util.is_alive(srv.pid)
    sock = Path(srv.socket)
    assert sock.parent == Path(pz.runtime_dir)
    assert re.fullmatch(r"basic-[0-9A-Za-z]+\.sock", sock.name), sock.name
    assert stat.S_ISSOCK(sock.stat().st_mode)
    pid_file = pz.pid_file(sock)
    assert int(pid_file.read_text().split()[0]) == srv.pid
    assert pid_file.with_suffix(".log").is_file(), "no log file beside the socket"


def test_start_twice_reports_the_running_server(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    r = pz.cli("start", "--root", root)
    assert r.rc == 0, r
    lines = (r.out + r.err).strip().splitlines()
    assert len(lines) == 1, r
    m = ALREADY_RE.match(lines[0])
    assert m, r
    assert m["root"] == str(root)
    assert int(m["pid"]) == srv.pid
    assert m["socket"] == srv.socket
    assert supervisors_for(root) == [srv.pid]


def test_start_twice_keeps_the_running_servers_log(pz):
    """A second `start` finds the server running and leaves its log alone
    (it used to truncate it before learning that); a restart's new server
    starts the log afresh."""
    root = pz.project("basic")
    srv = pz.start(root)
    pz.run_zygote(["-q"], cwd=root)  # the basic project has failing tests
    log = Path(srv.status()["log"])
    before = log.read_text()
    assert "pytest-zygote start: the server for %s" % root in before, before
    assert len(before.splitlines()) > 1, before
    r = pz.cli("start", "--root", root)
    assert r.rc == 0 and ALREADY_RE.match(r.out.strip()), r
    after = log.read_text()
    assert after.startswith(before), (before, after)
    r = pz.cli("restart", "--root", root)
    assert r.rc == 0, r
    fresh = log.read_text()
    assert fresh.startswith("pytest-zygote start: the server for %s\n" % root), fresh
    assert before not in fresh, fresh


def test_start_from_the_project_directory_finds_the_root(pz):
    root = pz.project("basic")
    r = pz.cli("start", cwd=root / "tests" / "pkg")
    assert r.rc == 0, r
    assert READY_RE.match(r.out.strip()), r
    st = pz.cli("status", "--root", root, "--json")
    assert st.rc == 0, st
    assert json.loads(st.out)["root"] == str(root)


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    assert not dups, "duplicate keys in status --json: %s" % dups
    return dict(pairs)


STATUS_KEYS = {
    "pid": int, "root": str, "python": str, "socket": str, "uptime_s": (int, float),
    "generation": int, "modules": int, "runs": int, "running": int, "rss_kb": int,
    "warmup_s": (int, float), "state": str,
}


def test_status_json(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    for _ in range(2):
        assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root).rc == 0
    srv.wait_idle()
    r = pz.cli("status", "--root", root, "--json")
    assert r.rc == 0, r
    assert len(r.out.strip().splitlines()) == 1, "one JSON object on one line: %r" % r.out
    data = json.loads(r.out, object_pairs_hook=_no_duplicate_keys)
    for key, typ in STATUS_KEYS.items():
        assert key in data, "missing key %r in %r" % (key, data)
        assert isinstance(data[key], typ) and not isinstance(data[key], bool), (key, data[key])
    assert data["pid"] == srv.pid
    assert data["root"] == str(root)
    assert data["socket"] == srv.socket
    assert os.path.samefile(data["python"], "/usr/bin/python3")
    assert data["modules"] == int(READY_RE.match(srv.line)["modules"])
    assert data["runs"] == 2
    assert data["running"] == 0
    assert data["rss_kb"] > 0
    assert data["uptime_s"] >= 0 and data["warmup_s"] >= 0
    assert data["generation"] >= 1


def test_status_text(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    r = pz.cli("status", "--root", root)
    assert r.rc == 0, r
    assert str(srv.pid) in r.out
    assert str(root) in r.out
    assert "/usr/bin/python3" in r.out
    # the fields the contract lists, in some wording
    for word in ("uptime", "generation", "modules", "runs", "running"):
        assert word in r.out.lower(), (word, r.out)


def test_status_counts_running_runs(pz):
    root = pz.project("signals")
    srv = pz.start(root)
    pid_file = pz.tmp_path / "pids"
    release = pz.tmp_path / "release"
    client = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", "tests/test_signals.py::test_wait_then_pass"],
        cwd=root, env=pz.env({"PZ_PID_FILE": str(pid_file), "PZ_RELEASE_FILE": str(release)}),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT), "the run never started"
        r = pz.cli("status", "--root", root, "--json")
        assert r.rc == 0, r
        assert json.loads(r.out)["running"] == 1
    finally:
        release.touch()
        out, err = client.communicate(timeout=TIMEOUT)
    assert client.returncode == 0, (out, err)
    data = srv.wait_idle()
    assert data["running"] == 0
    assert data["runs"] == 1


def test_status_without_server(pz):
    root = pz.project("basic")
    r = pz.cli("status", "--root", root)
    assert r.rc == 69, r
    assert str(root) in r.out + r.err


def test_stop(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    zygotes = srv.zygote_pids()
    assert zygotes, "no zygote process under the supervisor"
    watched = [(p, pz_util.proc_stat(p)[3]) for p in [srv.pid] + zygotes]
    r = pz.cli("stop", "--root", root)
    assert r.rc == 0, r
    m = STOPPED_RE.match((r.out + r.err).strip())
    assert m, r
    assert int(m["pid"]) == srv.pid
    # When stop has returned, the socket and the pid file are gone ...
    assert not os.path.exists(srv.socket)
    assert not pz.pid_file(srv.socket).exists()
    # ... and so are the processes (they may take a moment to be reaped).
    assert pz_util.wait_until(
        lambda: all(not pz_util.is_alive(p, t) for p, t in watched), timeout=10), \
        [(p, pz_util.cmdline(p)) for p, t in watched if pz_util.is_alive(p, t)]
    again = pz.cli("stop", "--root", root)
    assert again.rc == 69, again
    assert str(root) in again.out + again.err


def test_stop_without_server(pz):
    root = pz.project("basic")
    r = pz.cli("stop", "--root", root)
    assert r.rc == 69, r
    assert (r.out + r.err).strip(), "a message is expected"


def test_stop_lets_a_running_test_finish(pz):
    root = pz.project("signals")
    pz.start(root)
    pid_file = pz.tmp_path / "pids"
    release = pz.tmp_path / "release"
    env = pz.env({"PZ_PID_FILE": str(pid_file), "PZ_RELEASE_FILE": str(release)})
    client = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", "tests/test_signals.py::test_wait_then_pass"],
        cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    stopper = None
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT), "the run never started"
        stopper = subprocess.Popen([pz.zbin, "stop", "--root", str(root), "--grace", "30"],
                                   env=pz.env(), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # stop waits for the run (grace 30 s): give it the chance to return early
        # wrongly, then let the test finish.
        pz_util.wait_until(lambda: stopper.poll() is not None, timeout=1.0)
        release.touch()
        out, err = client.communicate(timeout=TIMEOUT)
        s_out, s_err = stopper.communicate(timeout=TIMEOUT)
    finally:
        release.touch()
        if client.poll() is None:
            client.kill()
        if stopper and stopper.poll() is None:
            stopper.kill()
    assert client.returncode == 0, (out, err)
    assert "1 passed" in out
    assert stopper.returncode == 0, (s_out, s_err)


def test_stop_grace_kills_running_tests(pz):
    root = pz.project("signals")
    pz.start(root)
    pid_file = pz.tmp_path / "pids"
    client = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", "tests/test_signals.py::test_wait_to_be_killed"],
        cwd=root, env=pz.env({"PZ_PID_FILE": str(pid_file)}), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT), "the run never started"
        pids = [int(x) for x in pid_file.read_text().split()]
        starts = [pz_util.proc_stat(p)[3] for p in pids]
        r = pz.cli("stop", "--root", root, "--grace", "1")
        assert r.rc == 0, r
        out, err = client.communicate(timeout=TIMEOUT)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode != 0, (out, err)
    # the test child is reaped; its grandchild (sleep) at least killed
    assert pz_util.wait_until(lambda: pz_util.is_gone(pids[0], starts[0]), timeout=10)
    assert pz_util.wait_until(lambda: not pz_util.is_alive(pids[1], starts[1]), timeout=10)


def test_restart(pz):
    root = pz.project("basic")
    old = pz.start(root)
    r = pz.cli("restart", "--root", root)
    assert r.rc == 0, r
    ready = [ln for ln in r.out.splitlines() if READY_RE.match(ln)]
    assert len(ready) == 1, r
    new_pid = int(READY_RE.match(ready[0])["pid"])
    assert new_pid != old.pid
    assert pz_util.wait_until(lambda: not pz_util.is_alive(old.pid, old.starttime), timeout=10)
    assert supervisors_for(root) == [new_pid]
    st = pz.cli("status", "--root", root, "--json")
    assert json.loads(st.out)["pid"] == new_pid
    plain = pz.run_plain(["-q"], cwd=root)
    zyg = pz.run_zygote(["-q"], cwd=root)
    assert zyg.rc == plain.rc and normalise(zyg.out) == normalise(plain.out)


def test_restart_without_server_starts_one(pz):
    root = pz.project("basic")
    r = pz.cli("restart", "--root", root)
    assert r.rc == 0, r
    assert any(READY_RE.match(ln) for ln in r.out.splitlines()), r
    assert pz.cli("status", "--root", root).rc == 0


def test_run_without_server(pz):
    root = pz.project("basic")
    r = pz.run_zygote(["-q"], cwd=root)
    assert r.rc == 69, r
    assert str(root) in r.err
    assert "pytest-zygote start" in r.err
    assert r.out == ""


def test_run_start_if_needed(pz):
    root = pz.project("basic")
    plain = pz.run_plain(["-q"], cwd=root)
    zyg = pz.run_zygote(["-q"], cwd=root, start_if_needed=True)
    assert zyg.rc == plain.rc, zyg
    assert normalise(plain.out) in normalise(zyg.out)
    st = pz.cli("status", "--root", root, "--json")
    assert st.rc == 0, st
    data = json.loads(st.out)
    assert data["runs"] == 1
    # a second run uses the same server
    again = pz.run_zygote(["-q"], cwd=root, start_if_needed=True)
    assert again.rc == plain.rc
    assert normalise(again.out) == normalise(plain.out)
    assert json.loads(pz.cli("status", "--root", root, "--json").out)["pid"] == data["pid"]


def _kill_server_hard(srv):
    pids = [srv.pid] + pz_util.descendants(srv.pid)
    for p in pids:
        pz_util.kill_quietly(p, signal.SIGKILL)
    assert pz_util.wait_until(lambda: not any(pz_util.is_alive(p) for p in pids), timeout=10)


def test_stale_pid_file_and_socket_are_replaced(pz):
    root = pz.project("basic")
    old = pz.start(root)
    _kill_server_hard(old)
    # SIGKILL gives no chance to clean up: the socket and pid file remain.
    assert os.path.exists(old.socket)
    r = pz.run_zygote(["-q"], cwd=root)
    assert r.rc == 69, r
    new = pz.start(root)
    assert new.pid != old.pid
    assert new.socket == old.socket
    assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root).rc == 0


def test_pid_file_naming_a_live_unrelated_process_is_not_trusted(pz):
    root = pz.project("basic")
    first = pz.start(root)
    sock, pid_file = first.socket, pz.pid_file(first.socket)
    assert first.stop().rc == 0
    # A stale socket file and a pid file that names a live process (this one).
    Path(pid_file).write_text("%d\n" % os.getpid())
    import socket as socketmod
    s = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
    s.bind(sock)
    s.close()
    new = pz.start(root)
    assert new.pid != os.getpid()
    assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root).rc == 0


def test_concurrent_starts_make_one_server(pz):
    root = pz.project("basic")
    procs = [subprocess.Popen([pz.zbin, "start", "--root", str(root)], env=pz.env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        results.append((p.returncode, out, err))
    pids = set()
    for rc, out, err in results:
        assert rc == 0, (rc, out, err)
        text = (out + err).strip()
        m = READY_RE.match(text) or ALREADY_RE.match(text)
        assert m, (rc, out, err)
        pids.add(int(m["pid"]))
    assert len(pids) == 1, results
    assert sum(bool(READY_RE.match(out.strip())) for _, out, _ in results) >= 1
    assert supervisors_for(root) == list(pids)


def test_a_start_that_finds_the_lock_taken_waits_for_the_socket(pz):
    """A server holds the pid lock a moment before it listens: a `start` that
    finds the lock taken and no socket yet waits for one (it used to exit 71,
    "starting or stopping", when several starts raced). Here a process that
    only holds the lock stands for the server in that moment."""
    root = pz.project("basic")
    probe = pz.cli("probe", "--root", root)
    sock = [ln.split("=", 1)[1] for ln in probe.out.splitlines()
            if ln.startswith("probe.socket=")][0]
    pid_file = sock[:-len(".sock")] + ".pid"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "f = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
         "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
         "os.write(f, b'%d' % os.getpid())  # as libbsd writes it\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"
         "os.unlink(sys.argv[1])\n", pid_file],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waiting = subprocess.Popen([pz.zbin, "start", "--root", str(root)], env=pz.env(),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        # Its server found the lock taken (and said so in the log); it waits.
        log = Path(sock[:-len(".sock")] + ".log")
        assert pz_util.wait_until(
            lambda: log.exists() and "already running" in log.read_text(), timeout=TIMEOUT)
        assert waiting.poll() is None, waiting.communicate()
    finally:
        holder.stdin.close()  # the lock holder goes away
        holder.wait(timeout=TIMEOUT)
    srv = pz.start(root)  # the real server, which listens
    out, err = waiting.communicate(timeout=TIMEOUT)
    assert waiting.returncode == 0, (out, err)
    m = ALREADY_RE.match((out + err).strip())
    assert m and int(m["pid"]) == srv.pid, (out, err)


def test_supervisor_survives_a_zygote_crash(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    zygotes = srv.zygote_pids()
    assert len(zygotes) == 1, zygotes
    gen_before = srv.status()["generation"]
    os.kill(zygotes[0], signal.SIGKILL)
    assert pz_util.wait_until(lambda: not pz_util.is_alive(zygotes[0]), timeout=10)
    assert pz_util.is_alive(srv.pid, srv.starttime)
    # the very next run works (it may wait for the new generation)
    plain = pz.run_plain(["-q"], cwd=root)
    zyg = pz.run_zygote(["-q"], cwd=root)
    assert zyg.rc == plain.rc, zyg
    assert normalise(zyg.out) == normalise(plain.out)
    assert pz_util.is_alive(srv.pid, srv.starttime)
    new = srv.zygote_pids()
    assert new and zygotes[0] not in new
    assert srv.status()["generation"] > gen_before


def test_foreground_with_ready_fd(pz):
    root = pz.project("basic")
    srv = pz.start_foreground(root)
    assert srv.proc.poll() is None
    st = srv.status()
    assert st["pid"] == srv.pid
    assert st["root"] == str(root)
    assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root).rc == 0
    r = srv.stop()
    assert r.rc == 0, r
    assert srv.proc.wait(timeout=TIMEOUT) == 0


def test_foreground_server_keeps_inherited_descriptors_from_runs(pz):
    """A descriptor the caller of `start --foreground` left open (a service
    manager's, a CI step's pipe) reaches neither the zygote nor a test (it
    used to reach both, on its own number)."""
    root = pz.project("basic")
    rfd, wfd = os.pipe()
    os.set_inheritable(wfd, True)
    try:
        pipe = os.readlink("/proc/self/fd/%d" % wfd)
        srv = pz.start_foreground(root, pass_fds=(wfd,))
        (root / "tests" / "test_fd.py").write_text(
            "import os\n\n\ndef test_fd():\n"
            "    assert not any(os.readlink('/proc/self/fd/' + f) == %r\n"
            "                   for f in os.listdir('/proc/self/fd')\n"
            "                   if os.path.exists('/proc/self/fd/' + f))\n" % pipe)
        r = pz.run_zygote(["-q", "tests/test_fd.py"], cwd=root)
        assert r.rc == 0, r
        zpid = srv.status()["zygote_pid"]
        held = [os.readlink(p) for p in Path("/proc/%d/fd" % zpid).iterdir()]
        assert pipe not in held, held
    finally:
        os.close(rfd)
        os.close(wfd)


def test_process_titles(pz):
    root = pz.project("signals")
    srv = pz.start(root)
    assert pz_util.cmdline(srv.pid) == "pytest-zygote: supervisor %s" % root
    zygotes = srv.zygote_pids()
    assert len(zygotes) == 1
    assert re.fullmatch(r"pytest-zygote: zygote gen \d+ %s" % re.escape(str(root)),
                        pz_util.cmdline(zygotes[0])), pz_util.cmdline(zygotes[0])
    pid_file = pz.tmp_path / "pids"
    release = pz.tmp_path / "release"
    node = "tests/test_signals.py::test_wait_then_pass"
    client = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", node], cwd=root,
        env=pz.env({"PZ_PID_FILE": str(pid_file), "PZ_RELEASE_FILE": str(release)}),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT), "the run never started"
        child = int(pid_file.read_text().split()[0])
        title = pz_util.cmdline(child)
    finally:
        release.touch()
        out, err = client.communicate(timeout=TIMEOUT)
    assert client.returncode == 0, (out, err)
    assert title.startswith("pytest-zygote: run"), title
    assert node in title, title


def test_help_and_version(pz):
    r = pz.cli("--version")
    assert r.rc == 0, r
    assert re.search(r"\d+\.\d+", r.out), r
    r = pz.cli("--help")
    assert r.rc == 0, r
    for sub in ("start", "run", "stop", "restart", "status"):
        assert sub in r.out, (sub, r.out)
    for sub in ("start", "run", "stop", "restart", "status"):
        h = pz.cli(sub, "--help")
        assert h.rc == 0, (sub, h)
        assert sub in h.out, (sub, h)
        assert "--root" in h.out, (sub, h)


@pytest.mark.parametrize("args", [
    pytest.param([], id="no-command"),
    pytest.param(["frobnicate"], id="unknown-command"),
    pytest.param(["start", "--bogus"], id="start-bad-option"),
    pytest.param(["stop", "--grace", "soon"], id="stop-bad-grace"),
    pytest.param(["status", "--root"], id="root-without-value"),
])
def test_usage_errors(pz, args):
    r = pz.cli(*args, cwd=pz.tmp_path)
    assert r.rc == 64, r
    assert r.err.strip(), "a usage error says what is wrong on stderr"


def test_projects_have_separate_servers(pz):
    basic = pz.project("basic")
    iso = pz.project("isolation")
    # same basename, another directory: a different server too
    (pz.tmp_path / "other").mkdir()
    basic2 = pz.project("basic", dest_name="other/basic")
    servers = [pz.start(r) for r in (basic, iso, basic2)]
    assert len({s.pid for s in servers}) == 3
    assert len({s.socket for s in servers}) == 3
    for root, srv in zip((basic, iso, basic2), servers):
        assert srv.status()["root"] == str(root)
        plain = pz.run_plain(["-q", "-p", "no:cacheprovider"], cwd=root)
        zyg = pz.run_zygote(["-q", "-p", "no:cacheprovider"], cwd=root)
        assert zyg.rc == plain.rc and normalise(zyg.out) == normalise(plain.out), root
    assert servers[0].stop().rc == 0
    assert pz.run_zygote(["-q"], cwd=basic).rc == 69
    assert pz.run_zygote(["-q", "-p", "no:cacheprovider"], cwd=basic2).rc == 1


def test_concurrent_runs_with_start_if_needed(pz):
    root = pz.project("basic")
    args = ["-q", "-p", "no:cacheprovider", "tests/test_scopes.py"]
    procs = [subprocess.Popen([pz.zbin, "run", "--start-if-needed", "--", *args], cwd=root,
                              env=pz.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, (out, err)
        assert "4 passed" in out
    assert len(supervisors_for(root)) == 1


LAYOUTS = {
    "pytest.ini": {"top/pytest.ini": "[pytest]\n"},
    ".pytest.ini": {"top/.pytest.ini": "[pytest]\n"},
    "pyproject": {"top/pyproject.toml": "[tool.pytest.ini_options]\nminversion = \"6\"\n"},
    "pyproject-without-section": {"top/sub/pyproject.toml": "[tool.black]\n",
                                  "top/tox.ini": "[pytest]\n"},
    "setup.cfg": {"top/setup.cfg": "[tool:pytest]\n"},
    "setup.py": {"top/sub/tox.ini": "[tox]\n", "top/setup.py": ""},
    "nothing": {},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_root_is_found_like_pytest_finds_its_rootdir(pz, layout):
    base = pz.tmp_path / "proj"
    deeper = base / "top" / "sub" / "deeper"
    deeper.mkdir(parents=True)
    (deeper / "test_x.py").write_text("def test_x():\n    pass\n")
    for rel, text in LAYOUTS[layout].items():
        (base / rel).write_text(text)
    plain = pz.run_plain(["-p", "no:cacheprovider"], cwd=deeper)
    m = re.search(r"^rootdir: ([^,\n]+)", plain.out, re.M)
    assert m, plain
    rootdir = m.group(1)
    pz.roots.append(rootdir)  # stopped at teardown
    r = pz.cli("start", cwd=deeper)
    assert r.rc == 0, r
    st = pz.cli("status", "--json", cwd=deeper)
    assert st.rc == 0, st
    assert json.loads(st.out)["root"] == rootdir
    zyg = pz.run_zygote(["-p", "no:cacheprovider"], cwd=deeper)
    assert zyg.rc == plain.rc == 0
    assert normalise(zyg.out) == normalise(plain.out)


def test_default_runtime_dir_is_under_xdg_runtime_dir(pz, tmp_path):
    root = pz.project("basic")
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {"PYTEST_ZYGOTE_RUNTIME_DIR": None, "XDG_RUNTIME_DIR": str(xdg)}
    r = pz.cli("start", "--root", root, env=env)
    try:
        assert r.rc == 0, r
        m = READY_RE.match(r.out.strip())
        assert m, r
        assert os.path.dirname(m["socket"]) == str(xdg / "pytest-zygote")
        assert stat.S_IMODE(os.stat(xdg / "pytest-zygote").st_mode) == 0o700
        assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root, env=env).rc == 0
        # another runtime directory means another (here: no) server
        assert pz.run_zygote(["-q"], cwd=root).rc == 69
    finally:
        s = pz.cli("stop", "--root", root, env=env)
    assert s.rc == 0, s


def test_restart_with_another_python(pz, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=TIMEOUT, capture_output=True)
    root = pz.project("basic")
    srv = pz.start(root)
    assert os.path.samefile(srv.status()["python"], "/usr/bin/python3")
    r = pz.cli("restart", "--root", root, "--python", venv / "bin" / "python")
    assert r.rc == 0, r
    st = json.loads(pz.cli("status", "--root", root, "--json").out)
    assert st["python"] == str(venv / "bin" / "python")
    assert st["pid"] != srv.pid
    assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root).rc == 0
