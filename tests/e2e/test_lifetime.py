"""How long a server lives and what it owns: its runtime directory deleted
under it, the idle timeout, status --all and stop --all, Ctrl-C during start,
and a full runtime directory."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import pz_util
from pz_util import READY_RE, TIMEOUT


def _server_family(srv):
    """The supervisor and everything under it (zygotes, spares)."""
    return [srv.pid] + pz_util.descendants(srv.pid)


def _assert_all_gone(pids, timeout=30, what=""):
    assert pz_util.wait_until(lambda: not any(pz_util.is_alive(p) for p in pids),
                              timeout=timeout), \
        "%s still alive: %r" % (what or "processes", [p for p in pids if pz_util.is_alive(p)])


# -- the runtime directory deleted under a running server --

def test_deleted_runtime_dir_stops_the_server(pz):
    """rm -rf of the runtime directory (a logout, a /tmp cleaner): the server
    notices, stops and leaves no process behind (before: it ran on forever,
    unreachable)."""
    root = pz.project("basic")
    srv = pz.start(root)
    family = _server_family(srv)
    assert len(family) >= 2, family
    shutil.rmtree(pz.runtime_dir)
    _assert_all_gone(family, timeout=30, what="the server after its directory was deleted")
    pz_util.assert_no_strays([pz.runtime_dir, str(root)])
    assert not os.path.exists(pz.runtime_dir), "the server re-created its deleted directory"
    os.mkdir(pz.runtime_dir, 0o700)  # for the fixture's teardown


def test_orphan_never_unlinks_the_next_servers_files(pz):
    """Server A's directory is deleted and server B starts in a new directory
    at the same path: when A ends, B's socket and pid file survive and B serves
    runs (before: A, stopped, unlinked B's socket and pid file by path)."""
    root = pz.project("basic")
    a = pz.start(root)
    a_family = _server_family(a)
    shutil.rmtree(pz.runtime_dir)
    b = pz.start(root)  # the client makes the directory again
    assert b.pid != a.pid
    b_sock, b_pid = Path(b.socket), pz.pid_file(b.socket)
    sock_ino, pid_ino = b_sock.stat().st_ino, b_pid.stat().st_ino
    if pz_util.is_alive(a.pid):
        os.kill(a.pid, signal.SIGTERM)  # A's own stop: it must not touch B's files
    _assert_all_gone(a_family, timeout=30, what="server A")
    assert b_sock.exists() and b_sock.stat().st_ino == sock_ino, "B's socket was removed"
    assert b_pid.exists() and b_pid.stat().st_ino == pid_ino, "B's pid file was removed"
    assert int(b_pid.read_text().split()[0]) == b.pid
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0, r
    st = b.status()
    assert st["pid"] == b.pid and st["runs"] >= 1, st


def test_deleted_socket_is_made_again(pz):
    """A cleaner deletes only the socket: the server still holds its pid file,
    so it binds a new socket and stays reachable (before: it ran on, unreachable,
    and blocked every new start with its pid lock)."""
    root = pz.project("basic")
    srv = pz.start(root)
    sock = Path(srv.socket)
    old_ino = sock.stat().st_ino
    sock.unlink()
    assert pz_util.wait_until(lambda: sock.exists() and sock.stat().st_ino != old_ino,
                              timeout=30), "the socket was not made again"
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0, r
    assert srv.status()["pid"] == srv.pid


def test_deleted_pid_file_stops_the_server(pz):
    """Its pid file deleted, a server no longer holds its name (a next start
    would make a second server): it stops, and removes its own socket."""
    root = pz.project("basic")
    srv = pz.start(root)
    family = _server_family(srv)
    pz.pid_file(srv.socket).unlink()
    _assert_all_gone(family, timeout=30, what="the server without its pid file")
    assert not os.path.exists(srv.socket)
    new = pz.start(root)
    assert new.pid != srv.pid
    assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root).rc == 0


# -- idle timeout --

def test_idle_timeout_stops_the_server(pz):
    """PYTEST_ZYGOTE_IDLE_TIMEOUT=2: a run longer than that is not cut short
    (a run in progress is not idle); 2 s after it, the server stops itself
    with a line in its log and leaves nothing behind (before: it lived on)."""
    root = pz.project("basic")
    (root / "tests" / "test_slow_idle.py").write_text(
        "import time\n\ndef test_slow():\n    time.sleep(4)\n")
    srv = pz.start(root, env={"PYTEST_ZYGOTE_IDLE_TIMEOUT": "2"})
    family = _server_family(srv)
    log = pz.pid_file(srv.socket).with_suffix(".log")
    r = pz.run_zygote(["-q", "tests/test_slow_idle.py"], cwd=root)
    assert r.rc == 0, r
    assert "1 passed" in r.out, r
    _assert_all_gone(family, timeout=40, what="the idle server")
    assert "idle for 2 s" in log.read_text(), log.read_text()[-3000:]
    assert not os.path.exists(srv.socket)
    assert not pz.pid_file(srv.socket).exists()
    pz_util.assert_no_strays([pz.runtime_dir, str(root)])


def test_idle_timeout_from_the_config_section(pz):
    root = pz.project("basic")
    (root / ".pytest-zygote.ini").write_text("[pytest-zygote]\nidle_timeout = 1.5\n")
    srv = pz.start(root)
    _assert_all_gone(_server_family(srv), timeout=40, what="the idle server")
    log = pz.pid_file(srv.socket).with_suffix(".log").read_text()
    assert "idle for 2 s" in log or "idle for 1 s" in log, log[-3000:]


def test_bad_idle_timeout_is_refused(pz):
    root = pz.project("basic")
    r = pz.cli("start", "--root", root, env={"PYTEST_ZYGOTE_IDLE_TIMEOUT": "soon"})
    assert r.rc == 64, r
    assert "PYTEST_ZYGOTE_IDLE_TIMEOUT" in r.err, r


# -- status --all, stop --all --

def test_status_all_and_stop_all(pz):
    one = pz.project("basic", "one")
    two = pz.project("basic", "two")
    a = pz.start(one)
    b = pz.start(two)
    r = pz.cli("status", "--all")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["PID", "STATE", "GEN", "UPTIME", "IDLE", "ROOT"], r
    rows = {line.split()[-1]: line.split() for line in lines[1:]}
    assert set(rows) == {str(one), str(two)}, r
    assert int(rows[str(one)][0]) == a.pid and int(rows[str(two)][0]) == b.pid, r
    assert rows[str(one)][1] == "ready", r
    r = pz.cli("status", "--all", "--json")
    assert r.rc == 0, r
    data = {d["root"]: d for d in json.loads(r.out)}
    assert set(data) == {str(one), str(two)}
    assert data[str(one)]["pid"] == a.pid and data[str(two)]["pid"] == b.pid
    assert data[str(one)]["generation"] == 1 and data[str(one)]["state"] == "ready"
    assert data[str(one)]["socket"] == a.socket
    assert data[str(one)]["idle_s"] >= 0 and data[str(one)]["uptime_s"] > 0

    families = _server_family(a) + _server_family(b)
    r = pz.cli("stop", "--all")
    assert r.rc == 0, r
    assert "stopped 2 servers" in r.out, r
    # stop answers once each server has stopped; its processes follow at once.
    _assert_all_gone(families, timeout=15, what="servers after stop --all")
    assert not list(Path(pz.runtime_dir).glob("*.sock"))
    assert not list(Path(pz.runtime_dir).glob("*.pid"))
    r = pz.cli("status", "--all")
    assert r.rc == 69, r
    assert "no servers are running" in r.err, r
    r = pz.cli("stop", "--all")
    assert r.rc == 0 and "stopped 0 servers" in r.out, r


def test_stop_all_stops_variants(pz):
    """A zygote for another environment (a variant) is a server of its own in
    the runtime directory: status --all lists it, stop --all stops it too."""
    root = pz.project("basic")
    srv = pz.start(root)
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root,
                      env={"PYTHONHASHSEED": "123"})
    assert r.rc == 0, r
    data = json.loads(pz.cli("status", "--all", "--json").out)
    assert len(data) == 2, data
    variant = [d for d in data if "~" in d["instance"]]
    assert len(variant) == 1 and variant[0]["root"] == str(root), data
    pids = _server_family(srv) + [variant[0]["pid"]]
    r = pz.cli("stop", "--all")
    assert r.rc == 0, r
    assert "stopped 2 servers" in r.out, r
    _assert_all_gone(pids, timeout=15, what="servers after stop --all")


# -- Ctrl-C during start --

def test_ctrl_c_during_start_leaves_the_server_warming(pz):
    """A real SIGINT to `start` while the server warms up: start says the
    server keeps warming in the background and exits 130; the server becomes
    ready and serves runs (before: start died of the signal without a word)."""
    root = pz.project("basic")
    # Warm-up's learning run collects the tests, so this conftest makes it slow.
    conftest = root / "tests" / "conftest.py"
    conftest.write_text("import time\ntime.sleep(6)\n" + conftest.read_text())
    proc = subprocess.Popen([pz.zbin, "start", "--root", str(root)], env=pz.env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid_files = lambda: list(Path(pz.runtime_dir).glob("basic-*.pid"))  # noqa: E731
    assert pz_util.wait_until(lambda: any(p.stat().st_size for p in pid_files()),
                              timeout=TIMEOUT), "the server did not start"
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "keeps warming up in the background" in err, err
    assert "pytest-zygote stop --root %s" % root in err, err
    pid = int(pid_files()[0].read_text().split()[0])
    assert pz_util.is_alive(pid)
    r = pz.cli("start", "--root", root)  # waits for the warm-up to end
    assert r.rc == 0, r
    assert "already running" in r.out and "pid %d" % pid in r.out, r
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0, r


# -- a full runtime directory --

@pytest.fixture
def small_tmpfs():
    """A 1 MiB tmpfs, mode 0700, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tempfile.mkdtemp(prefix="pzfull-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.strip())
    yield Path(mnt)
    for _ in range(50):
        if subprocess.run(["umount", mnt]).returncode == 0:
            break
        time.sleep(0.2)
    os.rmdir(mnt)


def _fill(path):
    """Write path until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC


def _assert_full_disk_refused(pz, root, mnt, r, path):
    assert r.rc == 71, r
    assert "No space left on device" in r.err, r
    assert str(path) in r.err, r
    assert "full" in r.err and "PYTEST_ZYGOTE_RUNTIME_DIR" in r.err, r
    assert "warm-up" not in r.err and "learning" not in r.err, r
    title = "pytest-zygote: supervisor %s" % root
    assert pz_util.wait_until(
        lambda: not [p for p in pz_util.all_pids() if pz_util.cmdline(p) == title],
        timeout=10), "a server runs without its pid lock"
    pz_util.assert_no_strays([str(mnt), str(root)])


def test_full_runtime_dir_log(pz, small_tmpfs):
    """No room even for the log: start says the runtime directory is full and
    names the log, exit 71, and no server runs (before: the server started,
    its log and pid writes failing unseen)."""
    root = pz.project("basic")
    _fill(small_tmpfs / "filler")
    r = pz.cli("start", "--root", root, env={"PYTEST_ZYGOTE_RUNTIME_DIR": str(small_tmpfs)})
    logs = list(small_tmpfs.glob("basic-*.log"))
    assert len(logs) == 1, (r, logs)
    _assert_full_disk_refused(pz, root, small_tmpfs, r, logs[0])


def test_full_runtime_dir_pid_file(pz, small_tmpfs):
    """Room for the log's first line but not for the pid: the pid write fails
    (libbsd then drops the lock); start says so, names the pid file, exits 71,
    and no server runs without its lock (before: one ran, unlocked, and a next
    start made a second one)."""
    root = pz.project("basic")
    env = {"PYTEST_ZYGOTE_RUNTIME_DIR": str(small_tmpfs)}
    # The log's name: from a start that fails on a full disk.
    _fill(small_tmpfs / "filler")
    pz.cli("start", "--root", root, env=env)
    log = list(small_tmpfs.glob("basic-*.log"))[0]
    # One page for the log, which start appends its first line to (a server
    # may run and write it) and the server truncates; then full.
    os.unlink(small_tmpfs / "filler")
    log.write_bytes(b"x" * 100)
    _fill(small_tmpfs / "filler")
    r = pz.cli("start", "--root", root, env=env)
    pid_file = log.with_suffix(".pid")
    _assert_full_disk_refused(pz, root, small_tmpfs, r, pid_file)
    assert "pid file" in r.err, r
    assert not pid_file.exists() or pid_file.stat().st_size == 0


def test_full_runtime_dir_after_the_pid_file(pz, small_tmpfs):
    """Room for the log's first line and the pid, none for what warm-up saves
    beside them (the learning run's copy, the pages): the server still warms up
    and serves runs; only the next generation's replay is lost (before: the
    warm-up failed with the project blamed for an OSError)."""
    root = pz.project("basic")
    env = {"PYTEST_ZYGOTE_RUNTIME_DIR": str(small_tmpfs)}
    _fill(small_tmpfs / "filler")
    pz.cli("start", "--root", root, env=env)
    log = list(small_tmpfs.glob("basic-*.log"))[0]
    os.unlink(small_tmpfs / "filler")
    # One page each for the log (start appends a line, the server truncates
    # it) and the pid file (truncated).
    log.write_bytes(b"x" * 100)
    log.with_suffix(".pid").write_bytes(b"x" * 4096)
    _fill(small_tmpfs / "filler")
    r = pz.cli("start", "--root", root, env=env)
    assert r.rc == 0, (r, log.read_text()[-3000:])
    assert READY_RE.match(r.out.strip()), r
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root, env=env)
    assert r.rc == 0, r
    r = pz.cli("stop", "--root", root, env=env)
    assert r.rc == 0, r
