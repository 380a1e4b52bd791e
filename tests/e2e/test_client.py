"""The two executables: pytest-zygote, the client every run and status starts,
must stay small (no libpython, libseccomp, libbsd, ... mapped), and `start`
finds pytest-zygote-server next to it or through PYTEST_ZYGOTE_SERVER, and
says clearly when there is none."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pz_util
from pz_util import TIMEOUT

PLUGIN_SRC = str(pz_util.REPO / "plugin" / "src")

# Libraries only the server needs (libpython3.X.so too, for a -Dstatic_python=disabled build).
SERVER_LIBS = re.compile(r"/lib(python3[.\d]*|seccomp|bsd|md|z|expat)\.so[.\d]*$")
# All a client may map besides itself (nothing when linked statically).
CLIENT_LIBS = re.compile(r"/(ld-linux[-\w.]*|libc|libinih)\.so[.\d]*$")


def _mapped_files(pid):
    """The files mapped into pid, from /proc/PID/maps."""
    files = set()
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                files.add(parts[5].strip())
    return files


def test_client_maps_no_server_libraries(pz):
    """A client blocked in a run has mapped only itself (and libc and inih when
    linked dynamically); the supervisor, read the same way, has libbsd."""
    root = pz.project("signals")
    srv = pz.start(root)
    pid_file, release = pz.tmp_path / "pids", pz.tmp_path / "release"
    client = subprocess.Popen(
        [pz.zbin, "run", "--", "-q", "tests/test_signals.py::test_wait_then_pass"], cwd=root,
        env=pz.env({"PZ_PID_FILE": str(pid_file), "PZ_RELEASE_FILE": str(release)}),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pz_util.wait_until(pid_file.exists, timeout=TIMEOUT), "the run never started"
        client_maps = _mapped_files(client.pid)
        server_maps = _mapped_files(srv.pid)
    finally:
        release.write_text("")
        out, err = client.communicate(timeout=TIMEOUT)
    assert client.returncode == 0, (out, err)
    assert os.path.realpath(pz.zbin) in client_maps, client_maps
    assert not [f for f in client_maps if SERVER_LIBS.search(f)], client_maps
    others = {f for f in client_maps if f != os.path.realpath(pz.zbin)}
    if not any(re.search(r"/lib(a|ub)san\.so", f) for f in others):  # scripts/sanitize.sh
        assert all(CLIENT_LIBS.search(f) for f in others), others
    # The same check finds what the server links.
    assert [f for f in server_maps if SERVER_LIBS.search(f)], server_maps
    assert os.path.basename(os.readlink("/proc/%d/exe" % srv.pid)) == "pytest-zygote-server"


def test_missing_server_is_a_clear_error(pz):
    root = pz.project("basic")
    for env in ({"PYTEST_ZYGOTE_SERVER": "/nonexistent"},
                {"PYTEST_ZYGOTE_SERVER": str(pz.tmp_path)}):
        r = pz.cli("start", "--root", root, env=env)
        assert r.rc == 71, r
        assert r.out == "", r
        assert ("PYTEST_ZYGOTE_SERVER='%s' is not an executable file" % env[
            "PYTEST_ZYGOTE_SERVER"]) in r.err, r
        assert "set it to the path of pytest-zygote-server" in r.err, r
    r = pz.run_zygote(["-q"], cwd=root, start_if_needed=True,
                      env={"PYTEST_ZYGOTE_SERVER": "/nonexistent"})
    assert r.rc == 71 and "PYTEST_ZYGOTE_SERVER='/nonexistent'" in r.err, r
    # Nothing started, nothing left: no server answers, no pid file or socket.
    assert pz.cli("status", "--root", root).rc == 69
    assert not list(Path(pz.runtime_dir).glob("*.sock")) + list(
        Path(pz.runtime_dir).glob("*.pid"))


def test_server_is_found_next_to_the_client(pz):
    """A copy of both binaries in another directory runs its own server; without
    a server beside it (or with one that is not executable) start says which path
    it expected. (An installed server in the build's configured bindir would be
    found instead: nothing is installed there on the test machines.)"""
    bindir = pz.tmp_path / "bin"
    bindir.mkdir()
    client = bindir / "pytest-zygote"
    server = bindir / "pytest-zygote-server"
    shutil.copy2(pz.zbin, client)
    shutil.copy2(Path(pz.zbin).parent / "pytest-zygote-server", server)
    pz.zbin = str(client)
    root = pz.project("basic")
    # Outside its build directory the server needs to be told where the package is.
    srv = pz.start(root, env={"PYTEST_ZYGOTE_PYDIR": PLUGIN_SRC})
    assert os.readlink("/proc/%d/exe" % srv.pid) == str(server)
    assert pz_util.cmdline(srv.pid) == "pytest-zygote: supervisor %s" % root
    assert srv.stop().rc == 0

    server.chmod(0o644)
    r = pz.cli("start", "--root", root)
    assert r.rc == 71, r
    assert "cannot run the server '%s': Permission denied" % server in r.err, r
    assert "set PYTEST_ZYGOTE_SERVER" in r.err, r
    server.unlink()
    r = pz.cli("start", "--root", root, "--foreground")
    assert r.rc == 71, r
    assert "cannot run the server '%s': No such file or directory" % server in r.err, r
    assert pz.cli("status", "--root", root).rc == 69


def test_server_refuses_another_version_and_bad_arguments(pz):
    """pytest-zygote-server is started by `start` only; run by hand, or by a
    client of another version, it says so."""
    server = Path(pz.zbin).parent / "pytest-zygote-server"
    r = pz.call([server])
    assert r.rc == 64 and "pytest-zygote start" in r.err, r
    r = pz.call([server, "--version"])
    assert r.rc == 0, r
    assert r.out.split()[1] == pz.cli("--version").out.split()[1], r
    root = pz.project("basic")
    r = pz.call([server, "supervise", "--root", root, "--python", "/usr/bin/python3",
                 "--client-version", "0.0.1"])
    assert r.rc == 71, r
    assert re.search(r"is version \S+ but pytest-zygote is version 0\.0\.1; install both",
                     r.err), r
    assert pz.cli("status", "--root", root).rc == 69
