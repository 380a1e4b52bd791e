"""Tests that kill themselves or wait to be killed; selected by node id."""
import os
import signal
import subprocess
import time


def _write_pids(*pids):
    path = os.environ.get("PZ_PID_FILE")
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(" ".join(str(p) for p in pids) + "\n")
        os.rename(tmp, path)


def test_segv():
    os.kill(os.getpid(), signal.SIGSEGV)


def test_sigkill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def test_abort():
    os.abort()


def test_wait_to_be_killed():
    # A grandchild in the run's process group: it must die with the run.
    grandchild = subprocess.Popen(["sleep", "300"])
    _write_pids(os.getpid(), grandchild.pid)
    time.sleep(60)


def test_wait_then_pass():
    _write_pids(os.getpid())
    path = os.environ["PZ_RELEASE_FILE"]
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.exists(path)


def test_ok():
    assert True
