"""The supervisor's client connections, over the real socket: a Ctrl-C sent
together with the end of a request cancels the run wherever the run is
(handed over at once, queued under max_runs, waiting for a generation), and
connections that never send a request cannot lock out `status`, `stop` or
`run`: they are dropped after a deadline, and at the connection limit the
oldest of them makes room; waiting runs never take the last slots."""

import os
import re
import resource
import signal
import socket
import struct
import subprocess
from pathlib import Path

import pz_util
from pz_util import (MSG_ERROR, MSG_EXIT, MSG_NOTICE, MSG_SIGNAL, TIMEOUT, message, read_msg,
                     run_request)
from test_errors import _connect

# A real client's environment has HOME, which the standard library reads at
# import; without it the run would be sent to another zygote (a REDIRECT).
RAW_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}

# What src/supervisor/internal.h calls MAX_CONNS and CONN_REQUEST_MS.
MAX_CONNS = 512
REQUEST_DEADLINE_S = 10


def _send_run_and_ctrl_c(sock_path, root, node, env=None):
    """A raw client: the whole run request and a SIGINT frame, the end of the
    request and the SIGINT in one write (so in one read of the server's).
    Returns (socket, read end of the run's stdout pipe)."""
    head, tail = run_request(["-q", "-p", "no:cacheprovider", node], str(root),
                             dict(RAW_ENV, **(env or {})))
    r, w = os.pipe()
    fds = [os.open("/dev/null", os.O_RDONLY), w, os.dup(w)]
    s = _connect(sock_path)
    try:
        s.sendall(head)
        socket.send_fds(s, [tail + message(MSG_SIGNAL, struct.pack("=i", signal.SIGINT))], fds)
    finally:
        for fd in fds:
            os.close(fd)
    return s, r


def _messages(s, timeout):
    """Every message until the first EXIT or ERROR (or EOF, or timeout)."""
    s.settimeout(timeout)
    out = []
    try:
        while True:
            typ, payload = read_msg(s)
            if typ is None:
                break
            out.append((typ, payload))
            if typ in (MSG_EXIT, MSG_ERROR):
                break
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def _assert_cancelled(msgs, out_fd):
    assert [t for t, _ in msgs] == [MSG_NOTICE, MSG_EXIT], msgs
    assert msgs[0][1].rstrip(b"\0") == b"interrupted before the run started", msgs
    assert struct.unpack("=i", msgs[1][1]) == (128 + signal.SIGINT,), msgs
    os.set_blocking(out_fd, False)
    try:
        ran = os.read(out_fd, 65536)
    except BlockingIOError:
        ran = b""
    assert b"passed" not in ran, "the cancelled run ran: %r" % ran


def test_ctrl_c_with_the_request_cancels_a_run_handed_over_at_once(pz):
    root = pz.project("signals")
    srv = pz.start(root)
    s, out = _send_run_and_ctrl_c(srv.socket, root, "tests/test_signals.py::test_ok")
    try:
        _assert_cancelled(_messages(s, TIMEOUT), out)
    finally:
        s.close()
        os.close(out)
    st = srv.wait_idle()
    assert st["runs"] == 0, st
    r = pz.run_zygote(["-q", "tests/test_signals.py::test_ok"], cwd=root)
    assert r.rc == 0 and "1 passed" in r.out, r


def test_ctrl_c_with_the_request_cancels_a_queued_run(pz, tmp_path):
    root = pz.project("signals")
    srv = pz.start(root, "--max-runs", "1")
    pid_file, release = tmp_path / "pids", tmp_path / "release"
    holder = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", "tests/test_signals.py::test_wait_then_pass"], cwd=root,
        env=pz.env({"PZ_PID_FILE": str(pid_file), "PZ_RELEASE_FILE": str(release)}),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT), "the holder never ran"
        s, out = _send_run_and_ctrl_c(srv.socket, root, "tests/test_signals.py::test_ok")
        try:
            # Answered while the holder still runs: the queued run never started.
            _assert_cancelled(_messages(s, 20), out)
        finally:
            s.close()
            os.close(out)
        assert holder.poll() is None
    finally:
        release.touch()
        out_text, err_text = holder.communicate(timeout=TIMEOUT)
    assert holder.returncode == 0, (out_text, err_text)
    st = srv.wait_idle()
    assert st["queued"] == 0 and st["runs"] == 1, st


def test_ctrl_c_with_the_request_cancels_a_run_that_waits_for_a_generation(pz):
    # PYTEST_ZYGOTE_HASH_SEED=per-run after a run: it waits for a new generation.
    root = pz.project("signals")
    srv = pz.start(root)
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", "tests/test_signals.py::test_ok"],
                      cwd=root)
    assert r.rc == 0, r
    s, out = _send_run_and_ctrl_c(srv.socket, root, "tests/test_signals.py::test_ok",
                                  env={"PYTEST_ZYGOTE_HASH_SEED": "per-run"})
    try:
        msgs = _messages(s, TIMEOUT)
        if msgs and msgs[0][0] == MSG_NOTICE and b"new hash seed" in msgs[0][1]:
            msgs = msgs[1:]  # told why it waits, then cancelled
        _assert_cancelled(msgs, out)
    finally:
        s.close()
        os.close(out)
    assert srv.wait_idle()["runs"] == 1


# --- idle connections -------------------------------------------------------


def _raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def _idle_connections(path, n):
    return [_connect(path) for _ in range(n)]


def _closed_with(s, timeout):
    """(closed by the server in time, the ERROR text it sent or None)."""
    s.settimeout(timeout)
    text = None
    try:
        while True:
            typ, payload = read_msg(s)
            if typ is None:
                return True, text
            if typ == MSG_ERROR:
                text = payload.rstrip(b"\0").decode()
    except ConnectionResetError:
        return True, text
    except socket.timeout:
        return False, text


def test_idle_connections_at_the_limit_do_not_lock_out_status_stop_and_run(pz):
    _raise_nofile(4 * MAX_CONNS)
    root = pz.project("basic")
    srv = pz.start(root)
    idle = _idle_connections(srv.socket, MAX_CONNS + 40)
    try:
        # The table is full of connections that sent nothing: each command
        # still gets a slot (the oldest idle connection makes room).
        st = srv.status()
        assert st["pid"] == srv.pid
        r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
        assert r.rc == 0 and "4 passed" in r.out, r
        # Every idle connection is closed, with a reason, by the deadline
        # (the limit only bounds a hang: they go REQUEST_DEADLINE_S after
        # they were accepted, or earlier when evicted).
        reasons = set()
        for s in idle:
            closed, text = _closed_with(s, REQUEST_DEADLINE_S + TIMEOUT)
            assert closed, "an idle connection was never closed"
            reasons.add(re.sub(r"\d+", "N", text or "(none)"))
        assert reasons <= {
            "no whole request within N s of connecting; closing the connection",
            "too many connections (N): closing this one, which sent no request, "
            "to serve a newer one",
        }, reasons
        log = Path(srv.status()["log"]).read_text()
        assert re.search(r"closed \d+ connections? that sent no whole request within %d s "
                         r"of connecting" % REQUEST_DEADLINE_S, log), log[-3000:]
        assert re.search(r"too many connections \(%d\): closed the oldest \d+ that had sent "
                         r"no request" % MAX_CONNS, log), log[-3000:]
    finally:
        for s in idle:
            s.close()
    # At the limit again: stop is served (no 'Broken pipe').
    idle = _idle_connections(srv.socket, MAX_CONNS + 40)
    try:
        r = srv.stop()
        assert r.rc == 0 and pz_util.STOPPED_RE.match(r.out.strip()), r
    finally:
        for s in idle:
            s.close()
    assert pz_util.wait_until(lambda: pz_util.is_gone(srv.pid, srv.starttime), timeout=TIMEOUT)


def test_waiting_runs_leave_room_for_status_and_stop(pz, tmp_path):
    # One run holds the only slot of max_runs=1 and MAX_CONNS + 8 more ask to
    # run: the queue stops short of the table's last slots, the runs beyond
    # it are told why, and status and stop are still served.
    _raise_nofile(8 * MAX_CONNS)
    root = pz.project("signals")
    srv = pz.start(root, "--max-runs", "1")
    pid_file, release = tmp_path / "pids", tmp_path / "release"
    holder = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", "tests/test_signals.py::test_wait_then_pass"], cwd=root,
        env=pz.env({"PZ_PID_FILE": str(pid_file), "PZ_RELEASE_FILE": str(release)}),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = []
    fds = [os.open("/dev/null", os.O_RDWR) for _ in range(3)]
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT), "the holder never ran"
        head, tail = run_request(["-q", "tests/test_signals.py::test_ok"], str(root), RAW_ENV)
        for _ in range(MAX_CONNS + 8):
            s = _connect(srv.socket)
            waiting.append(s)
            s.sendall(head)
            socket.send_fds(s, [tail], fds)
        st = srv.status()
        assert st["queued"] == MAX_CONNS - 16, st
        last = _messages(waiting[-1], TIMEOUT)
        assert [(t, p.rstrip(b"\0").decode()) for t, p in last] == [
            (MSG_ERROR, "too many runs waiting (%d); try again when some have finished"
             % (MAX_CONNS - 16))], last
        stopper = subprocess.Popen([pz.zbin, "stop", "--root", str(root)], env=pz.env(),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert pz_util.wait_until(lambda: not os.path.exists(srv.socket), timeout=TIMEOUT)
        release.touch()
        out, err = stopper.communicate(timeout=TIMEOUT)
        assert stopper.returncode == 0 and pz_util.STOPPED_RE.match(out.strip()), (out, err)
        # The queued runs never ran; they were told the server stopped.
        first = _messages(waiting[0], TIMEOUT)
        assert first and first[-1] == (MSG_ERROR, b"the server stopped\0"), first
    finally:
        release.touch()
        holder.communicate(timeout=TIMEOUT)
        for s in waiting:
            s.close()
        for fd in fds:
            os.close(fd)
