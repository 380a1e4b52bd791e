"""The test-child sandbox (docs/security.md): test code and whatever it
starts cannot signal, trace or write the memory of the supervisor or the
zygote, everything else a test suite does still works, the no-network policy
refuses internet sockets, and a filter that cannot be installed fails the run
with a clear message and exit code 77 while the server keeps serving.

The attacks are in tests/projects/sandbox/tests/test_forbidden.py; they use
signal 0, a ptrace attach that detaches at once and addresses that fault, so
that the same tests run without the sandbox (they must then succeed, which
shows they can fail) harm nothing but a disposable server."""

import json
import os
import re
import shutil
import sys

import pytest

import pz_util
from conftest import Result
from pz_util import READY_RE
from test_trust import other_user  # noqa: F401 (a fixture: the second account)

SANDBOX_EXIT = 77
# test_forbidden.py: 15 operations on the zygote and on the supervisor, 8 on a
# zygote thread, kill(-1), the parent check, two grandchildren, a thread.
FORBIDDEN = 2 * 15 + 8 + 5


def _run(pz, root, st, *args, expect="denied", network="on"):
    env = {"PZ_EXPECT": expect, "PZ_NETWORK": network,
           "PZ_ZYGOTE_PID": str(st["zygote_pid"]), "PZ_SUPERVISOR_PID": str(st["pid"])}
    return pz.run_zygote(["-q", "-p", "no:cacheprovider", *args], cwd=root, env=env)


def _passed(r):
    """The counts of pytest's summary line, e.g. {"passed": 43}."""
    last = r.out.strip().splitlines()[-1] if r.out.strip() else ""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}


def _status(pz, root):
    r = pz.cli("status", "--root", root, "--json")
    assert r.rc == 0, r
    return json.loads(r.out)


def _same_server(pz, root, st):
    """The supervisor and the zygote generation that served st still serve."""
    now = _status(pz, root)
    assert (now["pid"], now["zygote_pid"], now["generation"]) == \
        (st["pid"], st["zygote_pid"], st["generation"]), now
    assert pz_util.is_alive(now["pid"]) and pz_util.is_alive(now["zygote_pid"])


def test_attacks_are_refused_and_the_rest_works(pz):
    root = pz.project("sandbox")
    pz.start(root)
    st = _status(pz, root)
    assert st["sandbox"] == "seccomp"

    r = _run(pz, root, st, "tests/test_forbidden.py")
    assert r.rc == 0 and _passed(r) == {"passed": FORBIDDEN}, r
    r = _run(pz, root, st, "tests/test_allowed.py")
    assert r.rc == 0 and _passed(r) == {"passed": 11}, r
    # Without the no-network policy, sockets of every family work.
    r = _run(pz, root, st, "tests/test_network.py", network="on")
    assert r.rc == 0 and _passed(r) == {"passed": 7}, r
    _same_server(pz, root, st)


def test_a_generation_started_after_the_spare_prepared_is_protected(pz):
    # A spare builds its filter before its request comes; a generation that
    # starts warming after that must be in the filter the run gets.
    root = pz.project("sandboxgen")
    marker, gate = pz.tmp_path / "gen.marker", pz.tmp_path / "gen.open"
    gate.touch()
    pz.start(root, env={"GATE_MARKER": str(marker), "GATE_OPEN": str(gate)})
    st = _status(pz, root)
    args = ["-q", "-p", "no:cacheprovider"]
    try:
        r = pz.run_zygote(args, cwd=root, env={"PZ_TARGET": str(st["zygote_pid"])})
        assert r.rc == 0 and _passed(r) == {"passed": 1}, r
        # the next spare is forked and has built its filter
        assert pz_util.wait_until(lambda: pz_util.spare_ready(st["zygote_pid"]), timeout=30)
        gate.unlink()
        with open(root / "conftest.py", "a") as f:
            f.write("# an edit: generation 2 starts warming\n")
        assert pz_util.wait_until(lambda: len(marker.read_text().split()) == 2, timeout=60)
        warming = int(marker.read_text().split()[1])
        now = _status(pz, root)
        assert (now["generation"], now["warming"]) == (1, 2), now
        assert pz_util.is_alive(warming)
        r = pz.run_zygote(args, cwd=root, env={"PZ_TARGET": str(warming)})
        assert r.rc == 0 and _passed(r) == {"passed": 1}, r
        assert pz_util.is_alive(warming)
    finally:
        gate.touch()


def test_without_the_sandbox_the_attacks_succeed(pz):
    # The environment beats the section; "off" also leaves the supervisor
    # and the zygote dumpable, so even /proc/PID/mem opens.
    root = pz.project("sandbox")
    (root / ".pytest-zygote.ini").write_text("[pytest-zygote]\nsandbox = no-network\n")
    pz.start(root, env={"PYTEST_ZYGOTE_SANDBOX": "off"})
    st = _status(pz, root)
    assert st["sandbox"] == "off"
    r = _run(pz, root, st, "tests/test_forbidden.py", expect="allowed")
    assert r.rc == 0 and _passed(r) == {"passed": FORBIDDEN - 1, "skipped": 1}, r
    _same_server(pz, root, st)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a second user")
def test_attacks_are_refused_for_a_user_without_privileges(pz, other_user):
    # Most users are not root: no_new_privs is set for the filter, and the
    # kernel alone refuses /proc/PID/mem of the non-dumpable processes.
    top = "/tmp/pz-sandbox-%d" % os.getpid()
    proj, rt = pz_util.user_tree(other_user, "sandbox", top)
    env = {"PATH": "/usr/bin:/bin", "HOME": top, "PYTEST_ZYGOTE_RUNTIME_DIR": rt}
    try:
        r = pz_util.run_as(other_user, env, [pz.zbin, "start", "--root", proj], top)
        assert r.returncode == 0, r
        r = pz_util.run_as(other_user, env, [pz.zbin, "status", "--root", proj, "--json"], top)
        st = json.loads(r.stdout)
        assert st["sandbox"] == "seccomp", st
        run_env = dict(env, PZ_EXPECT="denied", PZ_NETWORK="on",
                       PZ_ZYGOTE_PID=str(st["zygote_pid"]), PZ_SUPERVISOR_PID=str(st["pid"]))
        r = pz_util.run_as(other_user, run_env,
                           [pz.zbin, "run", "--", "-q", "-p", "no:cacheprovider"], proj)
        assert r.returncode == 0, r
        assert _passed(Result(r.returncode, r.stdout, r.stderr)) == \
            {"passed": FORBIDDEN + 11 + 7}, r
        r = pz_util.run_as(other_user, env, [pz.zbin, "status", "--root", proj, "--json"], top)
        now = json.loads(r.stdout)
        assert (now["pid"], now["zygote_pid"]) == (st["pid"], st["zygote_pid"]), now
    finally:
        pz_util.run_as(other_user, env, [pz.zbin, "stop", "--root", proj, "--grace", "1"], top)
        shutil.rmtree(top, ignore_errors=True)


def test_no_network_policy_from_the_config_section(pz):
    root = pz.project("sandbox")
    (root / ".pytest-zygote.ini").write_text("[pytest-zygote]\nsandbox = no-network\n")
    pz.start(root)
    st = _status(pz, root)
    assert st["sandbox"] == "seccomp no-network"
    r = _run(pz, root, st, "tests/test_network.py", network="off")
    assert r.rc == 0 and _passed(r) == {"passed": 7}, r
    # The supervisor and the zygote are as protected as with "on".
    r = _run(pz, root, st, "tests/test_forbidden.py")
    assert r.rc == 0 and _passed(r) == {"passed": FORBIDDEN}, r
    _same_server(pz, root, st)


def test_bad_sandbox_values_stop_start(pz):
    root = pz.project("sandbox")
    r = pz.cli("start", "--root", root, env={"PYTEST_ZYGOTE_SANDBOX": "strict"})
    assert r.rc == 64, r
    assert ("bad value for PYTEST_ZYGOTE_SANDBOX in the environment: 'strict' is not on, off "
            "or no-network") in r.err, r
    (root / ".pytest-zygote.ini").write_text("[pytest-zygote]\n\nsandbox = maybe\n")
    r = pz.cli("start", "--root", root)
    assert r.rc == 64, r
    assert ("%s/.pytest-zygote.ini:3: bad value for sandbox: 'maybe' is not on, off or "
            "no-network" % root) in r.err, r
    assert pz.cli("status", "--root", root).rc == 69


# Started under this filter, the server and everything it forks inherit it:
# seccomp(2) and prctl(PR_SET_SECCOMP) fail as on a kernel built without
# seccomp, so no test child can load its filter.
NO_SECCOMP = r"""
import errno, os, sys, seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.ENOSYS), "seccomp")
f.add_rule(seccomp.ERRNO(errno.EINVAL), "prctl", seccomp.Arg(0, seccomp.EQ, 22))
if os.geteuid() == 0:
    f.set_attr(seccomp.Attr.CTL_NNP, 0)
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


def _start_without_seccomp(pz, root, *extra, env=None):
    r = pz.call([sys.executable, "-c", NO_SECCOMP, pz.zbin, "start", "--root", root, *extra],
                env=env)
    assert r.rc == 0 and READY_RE.match(r.out.strip()), r


def test_a_filter_that_cannot_be_installed_is_a_clear_error(pz):
    pytest.importorskip("seccomp", reason="needs python3-seccomp")
    root = pz.project("sandbox")
    _start_without_seccomp(pz, root)
    st = _status(pz, root)
    assert st["sandbox"].startswith("failed: cannot load the seccomp filter"), st
    for _ in range(2):
        r = pz.run_zygote(["-q", "tests/test_allowed.py"], cwd=root)
        assert r.rc == SANDBOX_EXIT, r
        assert "cannot load the seccomp filter for the test process" in r.err, r
        assert "sandbox = off" in r.err and "PYTEST_ZYGOTE_SANDBOX=off" in r.err, r
        assert r.out == "", r  # no test ran
    _same_server(pz, root, st)

    # The same environment with the sandbox off: runs work, so it was the filter.
    off = {"PYTEST_ZYGOTE_SANDBOX": "off"}
    _start_without_seccomp(pz, root, "--instance", "off", env=off)
    try:
        r = pz.call([pz.zbin, "run", "--root", root, "--instance", "off", "--",
                     "-q", "tests/test_allowed.py"], cwd=root)
        assert r.rc == 0 and _passed(r) == {"passed": 11}, r
    finally:
        assert pz.cli("stop", "--root", root, "--instance", "off").rc == 0
