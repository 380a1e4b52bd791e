"""Faults with real processes: clients, zygotes and supervisors killed mid-run,
tests that crash, exit early, close their stdio, leave processes behind, ignore
Ctrl-C, or write more than their reader takes. After each: nothing hangs, the
server still serves, and no process of the test's server family is left over
(pz_util.assert_no_strays), zombies included.

Test signals, the client killed during a plain waiting run, and the zygote
crash without a run are in test_signals.py and test_lifecycle.py; these extend
them with processes that escape the run's process group and with the cases
those files do not cover."""

import collections
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

import pz_util
from pz_util import TIMEOUT

NODE = "tests/test_faults.py::%s"


@pytest.fixture
def faults(pz):
    root = pz.project("faults")
    srv = pz.start(root)
    return root, srv


def _markers(pz):
    return [pz.runtime_dir] + pz.roots


def _launch(pz, root, node, env=None, args=("-q",), **popen):
    kw = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kw.update(popen)
    return subprocess.Popen([pz.zbin, "run", "--", *args, NODE % node], cwd=root,
                            env=pz.env(env), **kw)


def _wait_pids(client, pid_file):
    """The pids the test wrote, with their start times (so a reused pid is
    not mistaken for the original)."""
    if not pz_util.wait_until(pid_file.exists, timeout=TIMEOUT):
        client.kill()
        out, err = client.communicate(timeout=TIMEOUT)
        raise AssertionError("the run never started: %r %r" % (out, err))
    procs = []
    for p in pid_file.read_text().split():
        st = pz_util.proc_stat(int(p))
        procs.append((int(p), st[3] if st else None))
    return procs


def _all_gone(procs):
    return pz_util.wait_until(lambda: not any(pz_util.is_alive(*p) for p in procs),
                              timeout=10)


def _still_serves(pz, root, srv):
    assert pz_util.is_alive(srv.pid, srv.starttime), "the supervisor died"
    r = pz.run_zygote(["-q", NODE % "test_ok"], cwd=root)
    assert r.rc == 0, r
    assert "1 passed" in r.out, r


def _finish(client):
    try:
        return client.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        client.kill()
        out, err = client.communicate()
        raise AssertionError("the client hung: %r %r" % (out, err)) from None


# -- processes left behind ----------------------------------------------------


def test_processes_a_run_leaves_behind_are_killed_when_it_ends(pz, faults):
    """A sleep in the run's process group, one in its own session
    (start_new_session) and a double-forked setsid daemon: all die when the
    run ends, though the test passed and never waited for them."""
    root, srv = faults
    pid_file = pz.tmp_path / "pids"
    client = _launch(pz, root, "test_leaves_processes_behind", {"PZ_PID_FILE": str(pid_file)})
    out, err = _finish(client)
    assert client.returncode == 0, (out, err)
    procs = _wait_pids(client, pid_file)
    assert len(procs) == 4
    assert _all_gone(procs), [(p, pz_util.cmdline(p)) for p, s in procs
                              if pz_util.is_alive(p, s)]
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


def test_client_killed_mid_run_kills_everything_the_run_started(pz, faults):
    root, srv = faults
    pid_file = pz.tmp_path / "pids"
    client = _launch(pz, root, "test_leaves_processes_behind_and_waits",
                     {"PZ_PID_FILE": str(pid_file)})
    procs = _wait_pids(client, pid_file)
    client.kill()
    client.communicate(timeout=TIMEOUT)
    assert _all_gone(procs), [(p, pz_util.cmdline(p)) for p, s in procs
                              if pz_util.is_alive(p, s)]
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)
    assert srv.wait_idle()["running"] == 0


def test_zygote_killed_mid_run(pz, faults):
    """The client says so and exits 75 (run again); the run and everything it
    started die; a new generation serves the next run."""
    root, srv = faults
    gen = srv.status()["generation"]
    pid_file = pz.tmp_path / "pids"
    client = _launch(pz, root, "test_leaves_processes_behind_and_waits",
                     {"PZ_PID_FILE": str(pid_file)})
    procs = _wait_pids(client, pid_file)
    zygotes = srv.zygote_pids()
    assert len(zygotes) == 1, zygotes
    pz_util.kill_quietly(zygotes[0], signal.SIGKILL)
    out, err = _finish(client)
    assert client.returncode == 75, (client.returncode, out, err)
    assert b"the zygote went away during the run" in err, err
    assert b"run again" in err
    assert _all_gone(procs), [(p, pz_util.cmdline(p)) for p, s in procs
                              if pz_util.is_alive(p, s)]
    _still_serves(pz, root, srv)
    assert srv.status()["generation"] > gen
    pz_util.assert_no_strays(_markers(pz), srv.pid)


def test_supervisor_killed_with_sigkill(pz, faults):
    """The zygote notices (its parent-death signal), kills the run and what it
    started, and exits; the next start replaces the stale socket and pid file
    and works."""
    root, srv = faults
    zygotes = srv.zygote_pids()
    pid_file = pz.tmp_path / "pids"
    client = _launch(pz, root, "test_leaves_processes_behind_and_waits",
                     {"PZ_PID_FILE": str(pid_file)})
    procs = _wait_pids(client, pid_file)
    pz_util.kill_quietly(srv.pid, signal.SIGKILL)
    out, err = _finish(client)
    # The server is gone, not restarting: the client says so and how to start one.
    assert client.returncode == 69, (client.returncode, out, err)
    assert b"the server went away during the run" in err and b"being restarted" not in err, err
    assert _all_gone(procs + [(z, None) for z in zygotes]), \
        [(p, pz_util.cmdline(p)) for p, s in procs if pz_util.is_alive(p, s)]
    pz_util.assert_no_strays(_markers(pz))
    # nothing cleaned up after the SIGKILL: the files are stale
    assert os.path.exists(srv.socket)
    assert pz.pid_file(srv.socket).exists()
    new = pz.start(root)
    assert new.pid != srv.pid
    assert new.socket == srv.socket
    _still_serves(pz, root, new)
    pz_util.assert_no_strays(_markers(pz), new.pid)


# -- tests that crash or misbehave --------------------------------------------


def test_segfault_is_signal_11(pz, faults):
    root, srv = faults
    r = pz.run_zygote(["-q", "-s", NODE % "test_segv_after_output"], cwd=root)
    assert r.rc == 139, r
    assert "about to crash" in r.out
    assert "Fatal Python error: Segmentation fault" in r.err, r.err
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


def test_os_exit_in_a_test(pz, faults):
    root, srv = faults
    plain = pz.run_plain(["-q", NODE % "test_os_exit"], cwd=root)
    zyg = pz.run_zygote(["-q", NODE % "test_os_exit"], cwd=root)
    assert plain.rc == 7
    assert zyg.rc == 7, zyg
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


@pytest.mark.parametrize("capture", [[], ["-s"]], ids=["capture", "no-capture"])
def test_a_test_that_closes_fds_0_1_2(pz, faults, capture):
    """Whatever plain pytest makes of it, the run ends with the same code (the
    exit report does not travel over stdio) and the server is unharmed."""
    root, srv = faults
    args = ["-q", *capture, NODE % "test_closes_stdio"]
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    assert zyg.rc == plain.rc, (plain, zyg)
    assert pz_util.normalise(zyg.out) == pz_util.normalise(plain.out)
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


# -- Ctrl-C and its escalation ------------------------------------------------


def _sigint_seen(pid_file, count):
    path = pid_file.with_name(pid_file.name + ".signals")
    return lambda: path.exists() and path.read_text().count("\n") >= count


def _hung_run(pz, root, node, env=None):
    pid_file = pz.tmp_path / "pids"
    e = {"PZ_PID_FILE": str(pid_file)}
    e.update(env or {})
    client = _launch(pz, root, node, e)
    procs = _wait_pids(client, pid_file)
    return client, procs, pid_file


def test_second_ctrl_c_terminates_a_run_that_ignores_sigint(pz, faults):
    root, srv = faults
    client, procs, pid_file = _hung_run(pz, root, "test_ignores_sigint",
                                        {"PYTEST_ZYGOTE_INTERRUPT_TIMEOUT": "0"})
    client.send_signal(signal.SIGINT)
    # the test records each SIGINT it ignores: the first one got through
    assert pz_util.wait_until(_sigint_seen(pid_file, 1), timeout=TIMEOUT)
    client.send_signal(signal.SIGINT)
    out, err = _finish(client)
    assert client.returncode == 128 + signal.SIGTERM, (client.returncode, out, err)
    notices = [ln for ln in err.decode().splitlines() if "SIGTERM" in ln]
    assert notices == ["pytest-zygote: Ctrl-C again: sending the run SIGTERM "
                       "(SIGKILL in 2 s)"], err
    assert _all_gone(procs)
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


def test_third_ctrl_c_kills_a_run_that_ignores_sigint_and_sigterm(pz, faults):
    root, srv = faults
    client, procs, pid_file = _hung_run(pz, root, "test_ignores_sigint_and_sigterm",
                                        {"PYTEST_ZYGOTE_INTERRUPT_TIMEOUT": "0"})
    client.send_signal(signal.SIGINT)
    assert pz_util.wait_until(_sigint_seen(pid_file, 1), timeout=TIMEOUT)
    client.send_signal(signal.SIGINT)
    assert pz_util.wait_until(_sigint_seen(pid_file, 2), timeout=TIMEOUT)  # SIGTERM, ignored
    client.send_signal(signal.SIGINT)
    out, err = _finish(client)
    assert client.returncode == 128 + signal.SIGKILL, (client.returncode, out, err)
    assert b"Ctrl-C again: killing the run (SIGKILL)" in err, err
    assert _all_gone(procs)
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


def test_ctrl_c_escalates_on_its_own_after_the_interrupt_timeout(pz, faults):
    """One Ctrl-C only (as an IDE's stop button sends): SIGTERM after
    PYTEST_ZYGOTE_INTERRUPT_TIMEOUT seconds, SIGKILL 2 s later."""
    root, srv = faults
    client, procs, pid_file = _hung_run(pz, root, "test_ignores_sigint_and_sigterm",
                                        {"PYTEST_ZYGOTE_INTERRUPT_TIMEOUT": "0.3"})
    client.send_signal(signal.SIGINT)
    out, err = _finish(client)
    assert client.returncode == 128 + signal.SIGKILL, (client.returncode, out, err)
    lines = [ln for ln in err.decode().splitlines() if ln.startswith("pytest-zygote:")]
    assert lines == [
        "pytest-zygote: the run did not stop within 0.3 s of Ctrl-C; sending it SIGTERM "
        "(SIGKILL in 2 s)",
        "pytest-zygote: the run did not stop after SIGTERM: killing the run (SIGKILL)",
    ], err
    assert _sigint_seen(pid_file, 2)(), "the test saw SIGINT and SIGTERM before SIGKILL"
    assert _all_gone(procs)
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


# -- output the client does not take at once ----------------------------------


def _expected_big(lines):
    return b"".join(b"line %07d %s\n" % (i, b"x" * (i % 97)) for i in range(lines))


def test_slow_reader_gets_all_output_intact(pz, faults):
    """The child blocks on the full pipe while the reader dawdles; every byte
    arrives, in order (checked by SHA-256 against the test's own digest)."""
    root, srv = faults
    lines = 60000  # about 3.6 MB: some 55 pipe-fulls
    digest_file = pz.tmp_path / "digest"
    client = _launch(pz, root, "test_big_output",
                     {"PZ_BIG_LINES": str(lines), "PZ_DIGEST_FILE": str(digest_file)},
                     args=("-q", "-s", "-p", "no:cacheprovider"))
    chunks = []
    while True:
        data = client.stdout.read1(4096)
        if not data:
            break
        chunks.append(data)
        if len(chunks) % 8 == 0:
            time.sleep(0.002)
    err = client.stderr.read()
    client.wait(timeout=TIMEOUT)
    out = b"".join(chunks)
    assert client.returncode == 0, (out[-2000:], err)
    expected = _expected_big(lines)
    start = out.find(b"line 0000000 \n")
    assert start >= 0, out[:500]
    got = out[start:start + len(expected)]
    assert hashlib.sha256(got).hexdigest() == digest_file.read_text()
    assert got == expected
    assert b"1 passed" in out[start + len(expected):]
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)


def test_client_gone_while_output_is_pending(pz, faults):
    """Nobody reads the pipe, the child blocks writing, then the client is
    killed: the child dies (no hang in the zygote), the server serves on."""
    root, srv = faults
    pid_file = pz.tmp_path / "pids"
    rfd, wfd = os.pipe()
    try:
        client = _launch(pz, root, "test_big_output",
                         {"PZ_PID_FILE": str(pid_file), "PZ_BIG_LINES": "1000000",
                          "PZ_DIGEST_FILE": str(pz.tmp_path / "digest")},
                         args=("-q", "-s"), stdout=wfd)
        os.close(wfd)
        wfd = -1
        procs = _wait_pids(client, pid_file)
        # blocked in write(): the pipe is full and nobody reads
        assert pz_util.wait_until(
            lambda: (pz_util._read("/proc/%d/wchan" % procs[0][0]) or b"").endswith(b"pipe_write"),
            timeout=TIMEOUT), pz_util._read("/proc/%d/wchan" % procs[0][0])
        client.kill()
        client.communicate(timeout=TIMEOUT)
        assert _all_gone(procs)
        assert not (pz.tmp_path / "digest").exists()
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    pz_util.assert_no_strays(_markers(pz), srv.pid)
    _still_serves(pz, root, srv)
    assert srv.wait_idle()["running"] == 0


# -- a zygote that stops reading ----------------------------------------------


def test_a_stopped_zygote_costs_a_queue_not_the_server(pz, faults):
    """The zygote stops reading its control socket (SIGSTOP here; swapping
    or a debugger do the same) for 10 s while 20 runs, each with a 100 KB
    environment, are started. The supervisor keeps answering (status within
    2 s), queues the hand-overs whole, and once the zygote goes on every run
    ends as plain pytest does, served by the same zygote. The supervisor used
    to wait up to 5 s per hand-over, then leave half a message on the socket,
    and the zygote exited when it resumed: status timed out and the runs
    exited 70 and 75."""
    root, srv = faults
    st = srv.status()
    zygote, gen = st["zygote_pid"], st["generation"]
    env = {"PZ_BIG_ENV": "x" * 100_000}
    args = ["-q", "-p", "no:cacheprovider", NODE % "test_ok"]
    assert pz.run_plain(args, cwd=root, env=env).rc == 0
    problems, seen, clients = [], [], []
    os.kill(zygote, signal.SIGSTOP)
    try:
        start = time.monotonic()
        for _ in range(20):
            clients.append(_launch(pz, root, "test_ok", env, args=args[:-1]))
        while time.monotonic() - start < 10:
            t = time.monotonic()
            try:
                r = pz.cli("status", "--root", root, "--json", timeout=3)
            except AssertionError as e:  # timed out
                problems.append("status did not answer: %s" % str(e)[:200])
                continue
            took = time.monotonic() - t
            if r.rc != 0 or took > 2:
                problems.append("status took %.1f s (rc %d, %r)" % (took, r.rc, r.err))
            else:
                st = json.loads(r.out)
                seen.append((st["running"], st["queued"]))
            time.sleep(0.25)
    finally:
        os.kill(zygote, signal.SIGCONT)
    ends = []
    for c in clients:
        out, err = _finish(c)
        ends.append((c.returncode, out, err))
    codes = [e[0] for e in ends]
    bad = [e for e in ends if e[0] != 0]
    assert not bad, "exit codes %s; %d status checks failed (%s); first failed run: %r" % (
        dict(collections.Counter(codes)), len(problems), problems[:1], bad[0])
    assert all(b"1 passed" in out for _, out, _ in ends)
    assert not problems, problems
    # The runs were handed to the stopped zygote (running), the rest waited
    # for a slot (queued), and the zygote that served them is the same one.
    assert any(running > 0 and running + queued == 20 for running, queued in seen), seen
    st = srv.wait_idle()
    assert (st["zygote_pid"], st["generation"], st["running"]) == (zygote, gen, 0), st
    pz_util.assert_no_strays(_markers(pz), srv.pid)
