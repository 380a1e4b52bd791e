"""Exit codes for runs that die of a signal, signals sent to the client, and
what happens when the client or the zygote is killed during a run."""

import contextlib
import signal
import subprocess
import sys

import pytest

import pz_util
from pz_util import TIMEOUT

NODE = "tests/test_signals.py::%s"


@pytest.fixture
def sig(pz):
    root = pz.project("signals")
    srv = pz.start(root)
    return root, srv


def _spawn_waiting_run(pz, root, node="test_wait_to_be_killed", extra_env=None):
    """Start a run whose test writes '<child pid> [<grandchild pid>]' and waits.
    Returns (client Popen, [(pid, starttime), ...])."""
    pid_file = pz.tmp_path / ("pids-%s" % node)
    env = {"PZ_PID_FILE": str(pid_file), "PZ_RELEASE_FILE": str(pz.tmp_path / "release")}
    env.update(extra_env or {})
    client = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", NODE % node], cwd=root, env=pz.env(env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not pz_util.wait_until(pid_file.exists, timeout=TIMEOUT):
        client.kill()
        out, err = client.communicate(timeout=TIMEOUT)
        raise AssertionError("the run never started: %r %r" % (out, err))
    pids = [int(x) for x in pid_file.read_text().split()]
    return client, [(p, pz_util.proc_stat(p)[3]) for p in pids]


@contextlib.contextmanager
def _waiting_run(pz, root, **kw):
    """_spawn_waiting_run, and afterwards whatever is left of it killed."""
    client, procs = _spawn_waiting_run(pz, root, **kw)
    try:
        yield client, procs
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        _reap_leftovers(procs)


def _reap_leftovers(procs):
    for pid, start in procs:
        if pz_util.is_alive(pid, start):
            pz_util.kill_quietly(pid)


def _server_still_serves(pz, root, srv):
    assert pz_util.is_alive(srv.pid, srv.starttime), "the supervisor died"
    r = pz.run_zygote(["-q", NODE % "test_ok"], cwd=root)
    assert r.rc == 0, r
    assert "1 passed" in r.out


@pytest.mark.parametrize("node,signum", [
    ("test_segv", signal.SIGSEGV),
    ("test_sigkill_self", signal.SIGKILL),
    ("test_abort", signal.SIGABRT),
])
def test_exit_code_when_the_test_process_dies_of_a_signal(pz, sig, node, signum):
    root, srv = sig
    plain = pz.run_plain(["-q", NODE % node], cwd=root)
    assert plain.rc == -signum  # the baseline really dies of the signal
    zyg = pz.run_zygote(["-q", NODE % node], cwd=root)
    assert zyg.rc == 128 + signum, zyg
    if "Fatal Python error" in plain.err:  # faulthandler's report reaches the client too
        assert "Fatal Python error" in zyg.err, zyg
    _server_still_serves(pz, root, srv)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_terminating_signals_are_forwarded(pz, sig, signum):
    root, srv = sig
    with _waiting_run(pz, root) as (client, procs):
        client.send_signal(signum)
        out, err = client.communicate(timeout=TIMEOUT)
        # forwarded: the test process dies of it, and the client says so
        assert client.returncode == 128 + signum, (client.returncode, out, err)
        child, grandchild = procs
        assert pz_util.wait_until(lambda: pz_util.is_gone(*child), timeout=10), \
            "test process still there"
        # forwarded to the run's process group: the grandchild got it too
        assert pz_util.wait_until(lambda: not pz_util.is_alive(*grandchild), timeout=10), \
            "grandchild still running"
    _server_still_serves(pz, root, srv)


def test_sigint_to_the_client_is_a_keyboard_interrupt(pz, sig):
    root, srv = sig
    with _waiting_run(pz, root) as (client, procs):
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=TIMEOUT)
    assert client.returncode == 2, (client.returncode, out, err)
    assert "KeyboardInterrupt" in out
    _server_still_serves(pz, root, srv)


def test_sigint_to_plain_pytest_baseline(pz, sig):
    # The same scenario against plain pytest, to check the expectation above.
    root, _ = sig
    pid_file = pz.tmp_path / "plain-pids"
    p = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", NODE % "test_wait_to_be_killed"], cwd=root,
        env=pz.env({"PZ_PID_FILE": str(pid_file)}), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = []
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT)
        procs = [(int(x), None) for x in pid_file.read_text().split()]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _reap_leftovers(procs)
    assert p.returncode == 2
    assert "KeyboardInterrupt" in out


def test_sigkill_of_the_client_kills_the_run(pz, sig):
    root, srv = sig
    with _waiting_run(pz, root) as (client, procs):
        client.kill()
        client.wait(timeout=TIMEOUT)
        child, grandchild = procs
        assert pz_util.wait_until(lambda: pz_util.is_gone(*child), timeout=10), \
            "test process %d still there: %s" % (child[0], pz_util.cmdline(child[0]))
        assert pz_util.wait_until(lambda: not pz_util.is_alive(*grandchild), timeout=10), \
            "grandchild %d still running" % grandchild[0]
    _server_still_serves(pz, root, srv)
    assert srv.wait_idle()["running"] == 0


def test_zygote_killed_during_a_run(pz, sig):
    root, srv = sig
    with _waiting_run(pz, root) as (client, procs):
        zygotes = srv.zygote_pids()
        assert len(zygotes) == 1, zygotes
        pz_util.kill_quietly(zygotes[0], signal.SIGKILL)
        out, err = client.communicate(timeout=TIMEOUT)
        assert client.returncode == 75, (client.returncode, out, err)  # run again
        assert err.strip(), "the client says what happened"
        child, grandchild = procs
        assert pz_util.wait_until(lambda: not pz_util.is_alive(*child), timeout=10), \
            "test process outlived its zygote"
    _server_still_serves(pz, root, srv)
