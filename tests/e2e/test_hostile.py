"""What a test does to its own process cannot reach the harness: the harness's
descriptors in the test child are out of the range tests use and are checked
before each write, the run's exit code is the child's real exit status, a
closed or unwritable stdout or stderr ends a run as it ends plain pytest, and
a `stop` from inside a run ends it with a message and a documented code."""

import os
import select
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

import pz_util
from pz_util import MSG_ERROR, MSG_EXIT, run_request


# Closes the low descriptors (where the harness used to keep its report
# socket and its page-learning pipe) and opens files in their place; the
# files must hold only what the test wrote.
CLOSE_LOW = textwrap.dedent("""
    import os

    def test_reuses_low_fds():
        out = os.environ["PZ_HOSTILE_DIR"]
        for fd in range(3, 21):
            try:
                os.close(fd)
            except OSError:
                pass
        files = []
        for i in range(18):
            fd = os.open(os.path.join(out, "f%d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(fd, b"mine")
            files.append(fd)
        # left open: the run ends with them open, as a sloppy test would
""")

# Finds every socket and pipe it holds beyond stdio and writes an EXIT frame
# with code 0 on each, then fails.
FAKE_EXIT = textwrap.dedent("""
    import os
    import struct

    def test_forges_exit():
        frame = struct.pack("=IIi", 40, 4, 0)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd < 3:
                continue
            try:
                target = os.readlink("/proc/self/fd/%d" % fd)
            except OSError:
                continue
            if target.startswith(("socket:", "pipe:")):
                try:
                    os.write(fd, frame)
                except OSError:
                    pass
        assert False, "this test fails"
""")

# Runs `pytest-zygote stop` on its own server.
STOP_INSIDE = textwrap.dedent("""
    import os
    import subprocess

    def test_stops_its_server():
        subprocess.run([os.environ["PZ_BIN"], "stop", "--grace", "1"], timeout=60)
        import time
        time.sleep(30)
""")


@pytest.fixture
def hostile(pz):
    root = pz.project("basic")
    (root / "tests" / "test_close_low.py").write_text(CLOSE_LOW)
    (root / "tests" / "test_fake_exit.py").write_text(FAKE_EXIT)
    (root / "tests" / "test_stop_inside.py").write_text(STOP_INSIDE)
    return root


def test_a_test_reusing_low_fds_gets_only_what_it_wrote(pz, hostile, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    plain = pz.run_plain(["-q", "-s", "-p", "no:cacheprovider", "tests/test_close_low.py"],
                         cwd=hostile, env={"PZ_HOSTILE_DIR": str(out)})
    assert plain.rc == 0, plain
    pz.start(hostile)
    # twice: the first run of a generation and one served by the spare
    for attempt in range(2):
        for f in out.iterdir():
            f.unlink()
        r = pz.run_zygote(["-q", "-s", "-p", "no:cacheprovider", "tests/test_close_low.py"],
                          cwd=hostile, env={"PZ_HOSTILE_DIR": str(out)})
        assert r.rc == 0, r
        contents = {f.name: f.read_bytes() for f in out.iterdir()}
        assert len(contents) == 18, contents
        spoiled = {k: v[:40] for k, v in contents.items() if v != b"mine"}
        assert not spoiled, "run %d: the harness wrote into the test's files: %r" % (
            attempt + 1, spoiled)


def test_a_forged_exit_frame_does_not_change_the_exit_code(pz, hostile):
    args = ["-q", "-p", "no:cacheprovider", "tests/test_fake_exit.py"]
    plain = pz.run_plain(args, cwd=hostile)
    assert plain.rc == 1, plain
    pz.start(hostile)
    for attempt in range(2):
        r = pz.run_zygote(args, cwd=hostile)
        assert r.rc == 1, "run %d: %r" % (attempt + 1, r)
        assert "1 failed" in r.out, r


def _raw_run(sock_path, root, argv):
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    head, tail = run_request(argv, str(root), env)
    fds = [os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY),
           os.open(os.devnull, os.O_WRONLY)]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    try:
        s.connect(sock_path)
        s.sendall(head)
        socket.send_fds(s, [tail], fds)
        return pz_util.read_all(s)
    finally:
        s.close()
        for fd in fds:
            os.close(fd)


def test_a_run_reply_carries_one_exit(pz, hostile):
    srv = pz.start(hostile)
    for args, code in ((["-q", "tests/test_scopes.py"], 0),
                       (["-q", "tests/test_fake_exit.py"], 1)):
        for attempt in range(2):
            msgs = _raw_run(srv.socket, hostile, args)
            exits = [struct.unpack("=i", p)[0] for t, p in msgs if t == MSG_EXIT]
            assert exits == [code], "run %d of %s: %r" % (attempt + 1, args, msgs)


def test_stop_from_inside_a_run_ends_it_with_a_message(pz, hostile):
    pz.start(hostile)
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", "tests/test_stop_inside.py"],
                      cwd=hostile, env={"PZ_BIN": str(pz.zbin)})
    assert r.rc == 75, r
    assert "stopped" in r.err and "during the run" in r.err, r


def _plain_and_zygote(pz, root, redirect, env=None):
    """Exit code and stderr of plain pytest and of a run, with one of the
    standard descriptors redirected by the shell as `redirect` says."""
    out = {}
    for name, cmd in (("plain", "%s -m pytest -q -p no:cacheprovider tests/test_scopes.py"
                       % sys.executable),
                      ("zygote", "%s run -- -q -p no:cacheprovider tests/test_scopes.py"
                       % pz.zbin)):
        p = subprocess.run(["/bin/sh", "-c", "%s %s" % (cmd, redirect)], cwd=root,
                           env=pz.env(env), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=120)
        out[name] = (p.returncode, p.stderr.decode(errors="replace"))
    return out


@pytest.mark.parametrize("redirect", ["1>&-", ">/dev/full", "1</dev/null", "2>&-"])
def test_unusable_stdout_or_stderr_ends_the_run_as_plain_pytest(pz, hostile, redirect):
    pz.start(hostile)
    got = _plain_and_zygote(pz, hostile, redirect)
    (prc, perr), (zrc, zerr) = got["plain"], got["zygote"]
    assert zrc == prc, got
    # no traceback out of the harness's own code
    assert "pytest_zygote" not in zerr and "_zy" not in zerr, got


def test_the_server_keeps_none_of_its_starters_descriptors(pz, hostile):
    """A detached server outlives the `start` (or `run --start-if-needed`) that
    started it: a pipe that process held (a CI step's output) must see
    end-of-file when it is done, and no test child may find it on a low fd."""
    r, w = os.pipe()
    try:
        p = subprocess.run([str(pz.zbin), "start", "--root", str(hostile)], cwd=hostile,
                           env=pz.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, pass_fds=(w,), timeout=120)
        assert p.returncode == 0, p
        os.close(w)
        w = -1
        ready, _, _ = select.select([r], [], [], 30)
        assert ready and os.read(r, 1) == b"", "the server holds the starter's pipe open"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_closed_stdout_stays_closed_in_a_run_sent_to_a_variant(pz, hostile):
    """An interpreter setting sends the run to a zygote for its environment:
    the client asks twice, and the second request must still say that
    stdout was closed."""
    pz.start(hostile)
    got = _plain_and_zygote(pz, hostile, "1>&-", env={"PYTHONDEVMODE": "1"})
    (prc, _), (zrc, zerr) = got["plain"], got["zygote"]
    assert prc == 1, got
    assert zrc == prc, got
