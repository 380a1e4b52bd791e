"""Trust boundaries with a real second user account: a zygote answers only
its owner (SO_PEERCRED on every connection), and a client refuses a runtime
directory that is not its own. Needs root (to create the account)."""

import os
import re
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


# --- the client trusts only a server of its own uid, in its own directory ----

def _socket_name(as_victim, proj):
    """The file name of the socket the victim's client uses for proj, as the
    program says (`pytest-zygote probe`)."""
    zbin = os.environ.get("PYTEST_ZYGOTE_BIN") or str(pz_util.REPO / "build" / "pytest-zygote")
    r = as_victim([zbin, "probe", "--root", proj])
    assert r.returncode == 0, r
    return os.path.basename(re.search(r"^probe\.socket=(.*)$", r.stdout, re.M)[1])


class FakeServer:
    """A socket listening at path in this (root's) process, recording what
    every connection sends until it falls silent."""

    def __init__(self, path):
        import threading

        self.path = path
        self.received = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)  # as an attacker's would be: connectable by anyone
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            data = b""
            with conn:
                conn.settimeout(0.5)
                try:
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
            self.received.append(data)

    def close(self):
        self.stopping = True
        self.thread.join(timeout=10)
        self.sock.close()
        os.unlink(self.path)


@pytest.fixture
def victim(other_user):
    """The second user's project and private runtime directory, and a way to
    run commands as that user with a secret in the environment."""
    top = "/tmp/pz-victim-%d" % os.getpid()
    proj, rt = pz_util.user_tree(other_user, "basic", top)
    secret = "s3cret-%d" % os.getpid()
    env = {"PATH": "/usr/bin:/bin", "PYTEST_ZYGOTE_RUNTIME_DIR": rt, "HOME": top,
           "SECRET_TOKEN": secret}

    def as_victim(argv):
        return pz_util.run_as(other_user, env, argv, top)

    yield top, proj, rt, secret, as_victim
    shutil.rmtree(top, ignore_errors=True)


def test_client_refuses_a_server_of_another_uid_before_sending(victim, zbin):
    """A process of another uid listening at the very path the client
    connects to (in the client's own 0700 directory: root can put it there)
    gets nothing: not the environment, not the terminal."""
    top, proj, rt, secret, as_victim = victim
    fake = FakeServer(os.path.join(rt, _socket_name(as_victim, proj)))
    try:
        r = as_victim([zbin, "run", "--root", proj, "--", "-q"])
        assert pz_util.wait_until(lambda: fake.received, timeout=10), \
            "the client never reached the fake server: %r" % (r,)
    finally:
        fake.close()
    assert r.returncode == 78, r
    assert "runs as uid 0, not as you (uid %d)" % pwd.getpwnam(USER).pw_uid in r.stderr, r
    assert "refusing to send it anything" in r.stderr, r
    assert fake.received == [b""], fake.received  # connected, then closed: nothing sent
    # status and stop refuse it the same way.
    for cmd in ("status", "stop"):
        fake = FakeServer(os.path.join(rt, _socket_name(as_victim, proj)))
        try:
            r = as_victim([zbin, cmd, "--root", proj])
        finally:
            fake.close()
        assert r.returncode == 78, (cmd, r)
        assert all(d == b"" for d in fake.received), (cmd, fake.received)


def test_plugin_status_refuses_a_server_of_another_uid(victim):
    """The plugin's own round trip (which decides a hand-over) checks the
    server's uid too, before sending anything."""
    top, proj, rt, secret, as_victim = victim
    fake = FakeServer(os.path.join(rt, _socket_name(as_victim, proj)))
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('h', sys.argv[1])\n"
            "h = importlib.util.module_from_spec(spec); spec.loader.exec_module(h)\n"
            "print('status', h._running(h._probe(sys.argv[2])))\n")
    try:
        r = as_victim([sys.executable, "-c", code,
                       pz_util.REPO / "plugin" / "src" / "pytest_zygote" / "_handover.py",
                       proj])
        assert pz_util.wait_until(lambda: fake.received, timeout=10), r
    finally:
        fake.close()
    assert r.returncode == 0 and "status None" in r.stdout, r
    assert fake.received == [b""], fake.received


_SWAPPER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
print("swapping", flush=True)
while True:
    libc.renameat2(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE
"""

_VICTIM_FAKE = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(64)
print("listening", flush=True)
secret = sys.argv[3].encode()
while True:
    conn, _ = s.accept()
    conn.settimeout(0.3)
    data = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    conn.close()
    with open(sys.argv[2], "a") as f:
        f.write("%d %s\\n" % (len(data), secret in data))
"""


def test_swapped_runtime_directory_never_reaches_another_socket(victim, zbin, other_user):
    """Issue #16's race: whoever can write the runtime directory's parent
    swaps it, in a loop, with a directory of theirs whose socket name leads
    to another socket of the victim's own uid (so SO_PEERCRED alone would
    pass it). The directory the client checks must be the one it connects
    in: in 100 runs, not one reaches that socket."""
    top, proj, rt, secret, as_victim = victim
    name = _socket_name(as_victim, proj)
    fakedir = os.path.join(top, "fake")
    os.makedirs(fakedir, mode=0o700)
    os.chown(fakedir, other_user.pw_uid, other_user.pw_gid)
    log = os.path.join(fakedir, "log")
    evil = os.path.join(top, "evil")
    os.makedirs(evil, mode=0o755)
    os.symlink(os.path.join(fakedir, "fake.sock"), os.path.join(evil, name))
    fake = subprocess.Popen(["runuser", "-u", USER, "--", sys.executable, "-c", _VICTIM_FAKE,
                             os.path.join(fakedir, "fake.sock"), log, secret],
                            stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    swapper = None
    try:
        assert fake.stdout.readline().strip() == "listening"
        swapper = subprocess.Popen([sys.executable, "-c", _SWAPPER, rt, evil],
                                   stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        assert swapper.stdout.readline().strip() == "swapping"
        loop = "for i in $(seq 100); do %s run --root %s -- -q >/dev/null 2>&1; " \
               "echo rc=$?; done" % (zbin, proj)
        r = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", "PATH=/usr/bin:/bin",
                            "PYTEST_ZYGOTE_RUNTIME_DIR=" + rt, "HOME=" + top,
                            "SECRET_TOKEN=" + secret, "sh", "-c", loop],
                           capture_output=True, text=True, timeout=600, cwd=top,
                           stdin=subprocess.DEVNULL)
    finally:
        if swapper:
            swapper.kill()
            swapper.wait()
        # fake runs as the other user under runuser: end it by its pid.
        for pid in pz_util.descendants(fake.pid):
            pz_util.kill_quietly(pid)
        pz_util.kill_quietly(fake.pid)
        fake.wait()
        if os.stat(rt).st_uid != other_user.pw_uid:
            os.rename(rt, rt + ".tmp")
            os.rename(evil, rt)
            os.rename(rt + ".tmp", evil)
    codes = [line for line in r.stdout.split() if line.startswith("rc=")]
    assert len(codes) == 100, r
    reached = open(log).read().splitlines() if os.path.exists(log) else []
    leaked = [line for line in reached if line.endswith("True")]
    assert not reached, "%d of 100 runs reached the other socket (%d with the secret); " \
        "exit codes: %s" % (len(reached), len(leaked), sorted(set(codes)))
    # The race was really run: some runs saw the swapped directory.
    assert set(codes) - {"rc=69"}, sorted(set(codes))


def test_start_never_truncates_through_a_symlinked_log(victim, zbin):
    """The detached server's log is opened in the checked directory without
    following a symlink: one planted at the log's name (by whoever swapped
    the directory for a moment) cannot make `start` truncate another file."""
    top, proj, rt, secret, as_victim = victim
    precious = os.path.join(top, "precious")
    with open(precious, "w") as f:
        f.write("keep me\n")
    owner = os.stat(rt)
    os.chown(precious, owner.st_uid, owner.st_gid)
    log = os.path.join(rt, _socket_name(as_victim, proj)[:-len(".sock")] + ".log")
    os.symlink(precious, log)
    r = as_victim([zbin, "start", "--root", proj])
    try:
        # start refuses, naming the log it cannot open (a server without a
        # log would hide every later warm-up error)
        assert r.returncode == 71, r
        assert "cannot write the log" in r.stderr and "symbolic links" in r.stderr, r
    finally:
        as_victim([zbin, "stop", "--root", proj, "--grace", "1"])
    with open(precious) as f:
        assert f.read() == "keep me\n"
