"""Refusals and robustness: the runtime directory, bad clients, the wrong
interpreter, a project that does not even import."""

import glob
import os
import re
import socket
import stat
import subprocess
import sys

import pytest

import pz_util
from pz_util import READY_RE, TIMEOUT, normalise


# --- runtime directory ------------------------------------------------------


@pytest.mark.parametrize("command", [["start"], ["status"], ["run", "--", "-q"], ["stop"]])
def test_runtime_dir_with_group_or_other_access_is_refused(pz, command):
    root = pz.project("basic")
    os.chmod(pz.runtime_dir, 0o755)
    try:
        r = pz.cli(*command[:1], "--root", root, *command[1:], cwd=root)
    finally:
        os.chmod(pz.runtime_dir, 0o700)
    assert r.rc != 0, r
    assert "chmod 700" in r.err, r
    assert pz.runtime_dir in r.err, r
    assert not glob.glob(os.path.join(pz.runtime_dir, "*.sock"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_runtime_dir_owned_by_someone_else_is_refused(pz):
    root = pz.project("basic")
    os.chown(pz.runtime_dir, 65534, 65534)
    try:
        r = pz.cli("start", "--root", root)
    finally:
        os.chown(pz.runtime_dir, 0, 0)
    assert r.rc != 0, r
    assert pz.runtime_dir in r.err, r
    assert not glob.glob(os.path.join(pz.runtime_dir, "*.sock"))


def test_missing_runtime_dir_is_created_private(pz):
    root = pz.project("basic")
    new_dir = os.path.join(pz.runtime_dir, "sub", "rt")
    env = {"PYTEST_ZYGOTE_RUNTIME_DIR": new_dir}
    r = pz.cli("start", "--root", root, env=env)
    try:
        assert r.rc == 0, r
        st = os.stat(new_dir)
        assert stat.S_IMODE(st.st_mode) == 0o700
        m = READY_RE.match(r.out.strip())
        assert m and os.path.dirname(m["socket"]) == new_dir, r
        assert pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root, env=env).rc == 0
    finally:
        s = pz.cli("stop", "--root", root, env=env)
    assert s.rc == 0, s


def test_socket_path_too_long_is_a_clear_error(pz):
    root = pz.project("basic")
    long_dir = os.path.join(pz.runtime_dir, "d" * 100)
    r = pz.cli("start", "--root", root, env={"PYTEST_ZYGOTE_RUNTIME_DIR": long_dir})
    assert r.rc not in (0, 70) and r.rc > 0, r
    assert r.err.strip() and "Traceback" not in r.err, r
    assert pz.cli("status", "--root", root, env={"PYTEST_ZYGOTE_RUNTIME_DIR": long_dir}).rc != 0


# --- bad clients ------------------------------------------------------------


def _connect(path):
    """Connect, retrying while the listen backlog is full (EAGAIN)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    ok = pz_util.wait_until(lambda: _try_connect(s, path), timeout=TIMEOUT, interval=0.01)
    assert ok, "could not connect to %s" % path
    s.settimeout(TIMEOUT)
    return s


def _try_connect(s, path):
    try:
        s.connect(path)
        return True
    except BlockingIOError:
        return False


def _closed_by_server(s, timeout=TIMEOUT):
    """Read until EOF; True if the server closed the connection in time."""
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


GARBAGE = [
    pytest.param(os.urandom(4096), id="random-bytes"),
    pytest.param(pz_util.hello(magic=0xDEADBEEF), id="wrong-magic"),
    pytest.param(pz_util.hello(version=999), id="wrong-version"),
    pytest.param(pz_util.header(1, 0xFFFFFFFF), id="huge-length"),
    pytest.param(pz_util.header(2, 8) + b"-q\0-v\0\0\0", id="argv-before-hello"),
    pytest.param(pz_util.header(0xFFFF, 0), id="unknown-type"),
    pytest.param(pz_util.hello(kind=77), id="unknown-kind"),
    pytest.param(pz_util.hello(kind=1) + pz_util.header(6, 0), id="run-without-body"),
]


@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_client_is_disconnected_and_server_keeps_serving(pz, payload):
    root = pz.project("basic")
    srv = pz.start(root)
    s = _connect(srv.socket)
    try:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed even before we finished: fine
        assert _closed_by_server(s), "the server kept a bad connection open"
    finally:
        s.close()
    assert pz_util.is_alive(srv.pid, srv.starttime)
    assert srv.status()["pid"] == srv.pid
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0, r


def test_idle_and_partial_clients_do_not_block_others(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    idle = _connect(srv.socket)
    partial = _connect(srv.socket)
    partial.sendall(pz_util.hello(kind=1)[:11])
    try:
        r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
        assert r.rc == 0, r
        assert srv.status()["pid"] == srv.pid
    finally:
        idle.close()
        partial.close()
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0, r


def test_many_connections_at_once(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    conns = []
    try:
        for _ in range(100):
            conns.append(_connect(srv.socket))
        for c in conns[::2]:
            c.sendall(os.urandom(64))
    finally:
        for c in conns:
            c.close()
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0, r
    assert pz_util.is_alive(srv.pid, srv.starttime)


# --- the interpreter ----------------------------------------------------------


def _other_minor_python():
    mine = sys.version_info[:2]
    candidates = sorted(glob.glob("/root/.pyenv/versions/*/bin/python3")
                        + glob.glob("/usr/bin/python3.*") + glob.glob("/usr/local/bin/python3.*"))
    for path in candidates:
        if not os.access(path, os.X_OK) or path.endswith("-config"):
            continue
        try:
            out = subprocess.run([path, "-c", "import sys; print(*sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if len(out) == 2 and tuple(map(int, out)) != mine:
            return path
    return None


def test_python_of_another_version_is_refused(pz):
    other = _other_minor_python()
    if other is None:
        pytest.skip("no interpreter of another major.minor version on this machine")
    root = pz.project("basic")
    r = pz.cli("start", "--root", root, "--python", other)
    assert r.rc == 71, r
    # says how to rebuild for that interpreter
    assert re.search(r"meson setup \S+ -Dpython=%s" % re.escape(other), r.err), r
    assert pz.cli("status", "--root", root).rc == 69


def _script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_an_interpreter_is_asked_its_version_unless_named_for_it(pz, tmp_path):
    # `start` asks the interpreter for its version (an exec) unless its
    # file, links followed, is named pythonX.Y for the Python this build
    # embeds: CPython installs itself so. The answer decides.
    mine = "%d.%d" % sys.version_info[:2]
    real = "/usr/bin/python" + mine
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ran = tmp_path / "ran"
    # Named for our Python: not executed by start, and it works.
    named = _script(bindir / ("python" + mine), 'echo x >> %s\nexec %s "$@"\n' % (ran, real))
    root = pz.project("basic")
    srv = pz.start(root, "--python", str(named))
    assert srv.status()["python"] == str(named)
    pz_util.assert_same_outcomes(pz.run_plain(["-q"], cwd=root), pz.run_zygote(["-q"], cwd=root))
    assert not ran.exists(), "start executed an interpreter named python%s" % mine
    assert pz.cli("stop", "--root", root).rc == 0
    # Named otherwise: asked, and what it says is what counts.
    other = _script(bindir / "py-other", 'echo x >> %s\necho 3.99\n' % ran)
    r = pz.cli("start", "--root", root, "--python", str(other))
    assert r.rc == 71, r
    assert ran.exists(), "start did not ask the interpreter"
    assert "is Python 3.99 but this pytest-zygote embeds Python %s" % mine in r.err, r
    assert re.search(r"meson setup \S+ -Dpython=%s" % re.escape(str(other)), r.err), r
    assert pz.cli("status", "--root", root).rc == 69


def test_missing_python_is_refused(pz):
    root = pz.project("basic")
    r = pz.cli("start", "--root", root, "--python", str(pz.tmp_path / "no-such-python"))
    assert r.rc != 0, r
    assert r.err.strip(), r
    assert pz.cli("status", "--root", root).rc == 69


def test_virtualenv_python_works(pz, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=TIMEOUT, capture_output=True)
    vpy = venv / "bin" / "python"
    root = pz.project("isolation")
    srv = pz.start(root, "--python", str(vpy))
    assert srv.status()["python"] == str(vpy)
    node = "tests/test_facts.py::test_print_facts"
    plain = pz.call([str(vpy), "-m", "pytest", "-q", "-s", node], cwd=root)
    zyg = pz.run_zygote(["-q", "-s", node], cwd=root)
    assert plain.rc == 0 and zyg.rc == 0, (plain, zyg)

    def fact(out, key):
        for line in out.splitlines():
            if line.startswith("FACT %s=" % key):
                return line
        return None

    assert fact(plain.out, "prefix") == "FACT prefix=%r" % str(venv)  # the baseline
    assert fact(zyg.out, "prefix") == fact(plain.out, "prefix")
    assert fact(zyg.out, "executable") == fact(plain.out, "executable")


# --- broken projects ----------------------------------------------------------


def test_syntax_error_at_warm_up(pz):
    root = pz.project("broken")
    srv = pz.start(root)  # a failed warm-up still gives a working server
    for args in (["-q"], [], ["tests/test_good.py"]):
        plain = pz.run_plain(args, cwd=root)
        zyg = pz.run_zygote(args, cwd=root)
        assert zyg.rc == plain.rc, (args, zyg)
        assert normalise(zyg.out) == normalise(plain.out), args
    assert plain.rc == 0
    # fixing the file: the next run sees the fixed module
    (root / "tests" / "test_syntax.py").write_text(
        "def test_syntax_error():\n    x = (1,)\n    assert x\n\n\ndef test_other():\n    pass\n")
    zyg = pz.run_zygote(["-q"], cwd=root)
    assert zyg.rc == 0, zyg
    assert "3 passed" in zyg.out
    assert pz_util.is_alive(srv.pid, srv.starttime)


def test_import_error_in_conftest_at_warm_up(pz):
    root = pz.project("broken")
    (root / "tests" / "test_syntax.py").unlink()
    (root / "tests" / "conftest.py").write_text("import pz_no_such_module_in_conftest\n")
    pz.start(root)
    plain = pz.run_plain(["-q"], cwd=root)
    zyg = pz.run_zygote(["-q"], cwd=root)
    assert plain.rc != 0
    assert zyg.rc == plain.rc, zyg
    assert normalise(zyg.out) == normalise(plain.out)
    assert normalise(zyg.err) == normalise(plain.err)
    (root / "tests" / "conftest.py").write_text("")
    zyg = pz.run_zygote(["-q"], cwd=root)
    assert zyg.rc == 0, zyg
