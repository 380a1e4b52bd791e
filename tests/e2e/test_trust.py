"""Trust boundaries with a real second user account: a zygote answers only
its owner (SO_PEERCRED on every connection), and a client refuses a runtime
directory that is not its own. Needs root (to create the account)."""

import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys

import pytest

import pz_util

USER = "pzother"
MSG_DONE = 6
MSG_ERROR = 41
MSG_STATUS = 43

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a second user")


@pytest.fixture(scope="module")
def other_user():
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", USER],
                       check=True, timeout=60)
        pw = pwd.getpwnam(USER)
    return pw


@pytest.fixture
def foreign_server(other_user, zbin, tmp_path_factory):
    """A zygote started by the second user, with its own runtime directory."""
    base = tmp_path_factory.mktemp("foreign")
    # tmp dirs are root-only; give the other user a tree of its own outside them.
    top = "/tmp/pz-trust-%d" % os.getpid()
    shutil.rmtree(top, ignore_errors=True)
    os.makedirs(top)
    os.chmod(top, 0o755)
    proj = os.path.join(top, "proj")
    shutil.copytree(pz_util.PROJECTS / "basic", proj,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    rt = os.path.join(top, "rt")
    os.makedirs(rt, mode=0o700)
    for dirpath, dirnames, filenames in os.walk(top):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            os.chown(n, other_user.pw_uid, other_user.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "PYTEST_ZYGOTE_RUNTIME_DIR": rt, "HOME": top}

    def as_other(*args):
        return subprocess.run(["runuser", "-u", USER, "--", "env", "-i"]
                              + ["%s=%s" % kv for kv in env.items()] + [zbin, *args],
                              capture_output=True, text=True, timeout=pz_util.TIMEOUT,
                              stdin=subprocess.DEVNULL, cwd=top)

    r = as_other("start", "--root", proj)
    assert r.returncode == 0, r
    sock = r.stdout.split("socket ")[1].split(",")[0]
    yield as_other, proj, rt, sock
    as_other("stop", "--root", proj, "--grace", "1")
    pidfile = sock[:-len(".sock")] + ".pid"
    assert not os.path.exists(pidfile)
    shutil.rmtree(top, ignore_errors=True)
    del base


def _read_msg(conn):
    hdr = b""
    while len(hdr) < 8:
        chunk = conn.recv(8 - len(hdr))
        if not chunk:
            return None, None
        hdr += chunk
    typ, length = struct.unpack("=II", hdr)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return typ, body


def test_other_uid_is_refused_by_peer_credentials(foreign_server):
    as_other, proj, rt, sock = foreign_server
    # Root can traverse the other user's 0700 directory, so the socket itself
    # is reachable: the server must refuse us by our uid.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(pz_util.TIMEOUT)
        conn.connect(sock)
        try:
            conn.sendall(pz_util.hello(kind=2) + pz_util.header(MSG_DONE, 0))
        except BrokenPipeError:
            pass  # refused before our request arrived; the reply is still queued
        typ, body = _read_msg(conn)
        assert typ == MSG_ERROR, (typ, body)
        text = body.rstrip(b"\0").decode()
        assert "refused" in text and str(pwd.getpwnam(USER).pw_uid) in text
        assert "pytest-zygote start" in text
        assert conn.recv(1) == b""  # and the connection is closed
    # The owner is still served.
    r = as_other("status", "--root", proj, "--json")
    assert r.returncode == 0, r
    assert '"state": "ready"' in r.stdout


def test_owner_is_served(foreign_server):
    as_other, proj, rt, sock = foreign_server
    r = as_other("run", "--root", proj, "--", "-q", "-p", "no:cacheprovider", proj + "/tests/test_scopes.py")
    assert r.returncode == 0, r
    assert "passed" in r.stdout


def test_client_refuses_a_runtime_dir_of_another_user(foreign_server, zbin):
    as_other, proj, rt, sock = foreign_server
    r = subprocess.run([zbin, "run", "--root", proj, "--", "-q"], capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "PYTEST_ZYGOTE_RUNTIME_DIR": rt},
                       timeout=pz_util.TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 64, r
    assert "owned by uid %d" % pwd.getpwnam(USER).pw_uid in r.stderr
    assert "PYTEST_ZYGOTE_RUNTIME_DIR" in r.stderr
