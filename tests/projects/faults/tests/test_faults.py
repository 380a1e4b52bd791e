"""Tests that misbehave on purpose; the e2e suite selects them by node id.
PZ_PID_FILE, when set, receives the pids a test wants its caller to watch."""
import hashlib
import os
import signal
import subprocess
import sys
import time


def _write_pids(*pids):
    path = os.environ.get("PZ_PID_FILE")
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(" ".join(str(p) for p in pids) + "\n")
        os.rename(tmp, path)


def _double_fork_daemon():
    """A classic daemon: fork, setsid, fork again; returns the daemon's pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        pid2 = os.fork()
        if pid2 == 0:
            os.close(w)
            os.execvp("sleep", ["sleep", "300"])
        os.write(w, str(pid2).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 32)
    os.close(r)
    os.waitpid(pid, 0)
    return int(data)


def test_leaves_processes_behind():
    in_group = subprocess.Popen(["sleep", "300"])
    new_session = subprocess.Popen(["sleep", "300"], start_new_session=True)
    daemon = _double_fork_daemon()
    _write_pids(os.getpid(), in_group.pid, new_session.pid, daemon)


def test_leaves_processes_behind_and_waits():
    """As above, then waits to be killed (for the kill-the-client case)."""
    in_group = subprocess.Popen(["sleep", "300"])
    new_session = subprocess.Popen(["sleep", "300"], start_new_session=True)
    daemon = _double_fork_daemon()
    _write_pids(os.getpid(), in_group.pid, new_session.pid, daemon)
    time.sleep(120)


def test_os_exit():
    sys.stdout.flush()
    os._exit(7)


def test_closes_stdio():
    for fd in (0, 1, 2):
        os.close(fd)


def test_segv_after_output():
    print("about to crash", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def _ignore(*signums):
    """Ignore the signals, but note each one in PZ_PID_FILE.signals."""
    log = os.environ["PZ_PID_FILE"] + ".signals"

    def note(signum, frame):
        with open(log, "a") as f:
            f.write("%d\n" % signum)

    for s in signums:
        signal.signal(s, note)


def test_ignores_sigint():
    _ignore(signal.SIGINT)
    _write_pids(os.getpid())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1)


def test_ignores_sigint_and_sigterm():
    _ignore(signal.SIGINT, signal.SIGTERM)
    _write_pids(os.getpid())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1)


def _big_lines():
    n = int(os.environ.get("PZ_BIG_LINES", "100000"))
    for i in range(n):
        yield "line %07d %s\n" % (i, "x" * (i % 97))


def test_big_output():
    """Writes PZ_BIG_LINES lines straight to fd 1 (run with -s) and their
    SHA-256 to PZ_DIGEST_FILE, so the reader can check it got every byte."""
    h = hashlib.sha256()
    _write_pids(os.getpid())
    out = os.fdopen(os.dup(1), "w", buffering=1 << 16)
    for line in _big_lines():
        h.update(line.encode())
        out.write(line)
    out.flush()
    out.close()
    with open(os.environ["PZ_DIGEST_FILE"], "w") as f:
        f.write(h.hexdigest())


def test_ok():
    pass
