"""Bad input from clients, in the real protocol: each refusal reaches that
client as an ERROR message that says what was wrong (where the connection
still allows a reply), costs the server nothing (no descriptor kept, no
process touched), and the next normal run is served. Also what is not bad
input: arguments and environment that are not UTF-8 work as under plain
pytest. test_errors.py has the random-garbage and idle-client cases."""

import os
import socket
import struct
import subprocess

import pytest

import pz_util
from pz_util import (KIND_RUN, MSG_ARGV, MSG_CWD, MSG_DONE, MSG_ENV, MSG_ERROR, MSG_EXIT,
                     MSG_BUILD, MSG_FDS, header, hello, message, run_request, strings)
from test_errors import _connect
from test_trust import foreign_server, other_user  # noqa: F401 (fixtures)


def _fds(n):
    return [os.open("/dev/null", os.O_RDWR) for _ in range(n)]


def _exchange(sock_path, data, fds=(), fds_at=None, shut=False):
    """Send data (fds ride along with the byte at fds_at), optionally shut
    down our side, and return every message until the server closes."""
    s = _connect(sock_path)
    try:
        try:
            if fds:
                s.sendall(data[:fds_at])
                socket.send_fds(s, [data[fds_at:]], list(fds))
            else:
                s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished: the reply is still queued
        return pz_util.read_all(s)
    finally:
        s.close()
        for fd in fds:
            os.close(fd)


# The environment of a raw request: a real client's has HOME, which the
# standard library reads at import (sysconfig's user base); a request without
# it would be sent to a zygote warmed without it (a REDIRECT).
RAW_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}


def _run_request(root, nfds=3):
    return run_request(["-q", "tests/test_scopes.py"], str(root), RAW_ENV, nfds=nfds)


def _cases(root):
    """(name, bytes, number of fds, offset of the fds, shut down, expected text)."""
    head, tail = _run_request(root)
    argv = message(MSG_ARGV, strings(["-q"]))
    cwd = message(MSG_CWD, str(root).encode() + b"\0")
    body = argv + cwd + message(MSG_ENV, b"A=1\0")
    run = hello(kind=KIND_RUN)
    yield ("wrong version", hello(version=999), 0, None, False,
           "protocol version mismatch: client speaks 999, server speaks 2; restart the "
           "server with 'pytest-zygote restart'")
    run2 = hello(version=2, kind=KIND_RUN)
    yield ("version 2 without BUILD", run2 + argv, 0, None, False,
           "expected BUILD after a version 2 HELLO")
    yield ("malformed BUILD", run2 + message(MSG_BUILD, b"a b\0"), 0, None, False,
           "malformed BUILD (need one build id)")
    yield ("wrong magic", hello(magic=0xDEADBEEF), 0, None, False,
           "not a pytest-zygote client (bad magic)")
    yield ("no HELLO first", argv, 0, None, False, "expected a HELLO message first")
    yield ("unknown kind", hello(kind=77), 0, None, False, "unknown request kind")
    yield ("oversized message", run + header(MSG_ARGV, 2 << 20) + b"-q\0", 0, None, False,
           "a message larger than 1 MiB")
    yield ("argv without NUL", run + message(MSG_ARGV, b"-q"), 0, None, False,
           "malformed ARGV (each argument must end with a NUL byte)")
    yield ("env entry without =", run + argv + cwd + message(MSG_ENV, b"NOEQUALS\0"), 0, None,
           False, "malformed ENV entry (need K=V)")
    yield ("relative cwd", run + argv + message(MSG_CWD, b"tests\0"), 0, None, False,
           "malformed CWD (need one absolute path)")
    yield ("argv twice", run + argv + argv, 0, None, False, "ARGV out of order")
    yield ("unknown message", run + header(0x7777, 0), 0, None, False,
           "unexpected message in a request")
    yield ("run without body", run + message(MSG_DONE), 0, None, False,
           "incomplete run request")
    yield ("too few fds", head + tail, 2, len(head), False,
           "FDS count does not match the descriptors sent")
    yield ("too many fds", head + tail, 4, len(head), False,
           "more file descriptors than the FDS message announced")
    yield ("fds over the limit", head + tail, 17, len(head), False,
           "too many file descriptors in one message")
    h2, t2 = _run_request(root, nfds=2)
    yield ("two fds announced", h2 + t2, 2, len(h2), False, "a run needs three descriptors")
    yield ("truncated message", run + body + message(MSG_FDS, struct.pack("=I", 3))[:6], 0,
           None, True, "the request was cut off in the middle of a message")
    yield ("no DONE", run + body, 0, None, True, "the request ended before its DONE message")


def test_each_bad_request_gets_a_clear_error_and_costs_nothing(pz):
    root = pz.project("basic")
    srv = pz.start(root)
    before = srv.status()
    fds_before = pz_util.settled_fds(srv.pid)
    problems = []
    for name, data, nfds, at, shut, text in _cases(root):
        msgs = _exchange(srv.socket, data, _fds(nfds), at, shut)
        errors = [p.rstrip(b"\0").decode() for t, p in msgs if t == MSG_ERROR]
        if [t for t, _ in msgs] != [MSG_ERROR] or text not in errors[0]:
            problems.append("%s: expected one ERROR with %r, got %r" % (name, text, msgs))
    assert not problems, "\n".join(problems)
    # Nothing a bad client sent was kept (the server may still be closing the
    # last connection when the client has read its ERROR).
    assert pz_util.settled_fds(srv.pid) == fds_before
    after = srv.status()
    assert (after["pid"], after["zygote_pid"], after["runs"]) == \
        (before["pid"], before["zygote_pid"], before["runs"])
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0 and "4 passed" in r.out, r


def test_raw_run_request_is_served(pz):
    # The encoder above speaks the protocol, not just garbage: a well-formed
    # request runs (so the refusals above are about what they change).
    root = pz.project("basic")
    srv = pz.start(root)
    head, tail = _run_request(root)
    r, w = os.pipe()
    fds = [os.open("/dev/null", os.O_RDONLY), w, os.dup(w)]
    try:
        msgs = _exchange(srv.socket, head + tail, fds, len(head))
        out = os.read(r, 65536).decode()
    finally:
        os.close(r)
    # (The zygote repeats the child's EXIT after reaping it; clients stop at the first.)
    assert msgs and set(msgs) == {(MSG_EXIT, struct.pack("=i", 0))}, msgs
    assert "4 passed" in out, out


def test_working_directory_that_is_gone(pz, tmp_path):
    root = pz.project("basic")
    srv = pz.start(root)
    # Raw: the child cannot enter it; the client hears why and exit code 70.
    gone = tmp_path / "gone"
    head, tail = run_request(["-q"], str(gone), RAW_ENV)
    msgs = _exchange(srv.socket, head + tail, _fds(3), len(head))
    assert [t for t, _ in msgs] == [MSG_ERROR, MSG_EXIT], msgs
    assert ("cannot enter the working directory '%s': No such file or directory" % gone) \
        in msgs[0][1].decode(), msgs
    assert struct.unpack("=i", msgs[1][1]) == (70,)
    # The real client, in a directory deleted under it: says so itself (plain
    # pytest dies with a FileNotFoundError traceback there).
    gone.mkdir()
    r = pz.call(["sh", "-c", 'cd "$1" && rmdir "$1" && exec "$2" run --root "$3" -- -q',
                 "sh", gone, pz.zbin, root])
    assert r.rc == 64, r
    assert "cannot get the current directory: No such file or directory (it was deleted" \
        in r.err, r
    r = pz.run_zygote(["-q", "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0, r


ENCODING_TEST = '''
import os, sys

def test_show():
    print("ARGV", ascii(sys.argv[1:]))
    print("ENV", ascii(os.environ.get("PZ_BYTES")), ascii(os.environb.get(b"PZ_BYTES")))
'''


def test_arguments_and_environment_that_are_not_utf8_work_as_in_plain_pytest(pz):
    # Python decodes both with surrogateescape; so does the child.
    root = pz.project("basic")
    (root / "tests" / "test_encoding.py").write_text(ENCODING_TEST)
    pz.start(root)
    env = {"PZ_BYTES": None}
    args = [b"-q", b"-s", b"-p", b"no:cacheprovider", b"tests/test_encoding.py"]
    results = []
    for extra, env_bytes in (([], b"caf\xe9"), ([b"-k", b"\xff or show"], b"ok")):
        argv_tail = args + extra
        envb = {k.encode(): v.encode() for k, v in pz.env(env).items()}
        envb[b"PZ_BYTES"] = env_bytes
        plain = subprocess.run([b"/usr/bin/python3", b"-m", b"pytest"] + argv_tail, cwd=root,
                               env=envb, capture_output=True, timeout=pz_util.TIMEOUT)
        zyg = subprocess.run([pz.zbin.encode(), b"run", b"--"] + argv_tail, cwd=root, env=envb,
                             capture_output=True, timeout=pz_util.TIMEOUT)
        results.append((plain, zyg))
        assert zyg.returncode == plain.returncode, (plain, zyg)
        assert pz_util.normalise(zyg.stdout.decode("utf-8", "surrogateescape")) == \
            pz_util.normalise(plain.stdout.decode("utf-8", "surrogateescape"))
    (plain, zyg), (plain_k, zyg_k) = results
    assert plain.returncode == 0 and b"ENV 'caf\\udce9' b'caf\\xe9'" in zyg.stdout, zyg
    # pytest rejects the -k expression the same way in both
    assert plain_k.returncode == 4 and b"\\udcff or show" in zyg_k.stdout + zyg_k.stderr, zyg_k


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a second user")
def test_run_request_from_another_uid_is_refused(foreign_server, other_user):  # noqa: F811
    # A complete run request with descriptors, from root to the other user's
    # zygote: refused before any of it is read; nothing runs.
    as_other, proj, rt, sock = foreign_server
    head, tail = run_request(["-q"], proj, {"PATH": "/usr/bin:/bin"})
    msgs = _exchange(sock, head + tail, _fds(3), len(head))
    assert [t for t, _ in msgs] == [MSG_ERROR], msgs
    text = msgs[0][1].decode()
    assert "refused: this zygote belongs to uid %d" % other_user.pw_uid in text, text
    r = as_other("status", "--root", proj, "--json")
    assert r.returncode == 0 and '"runs": 0' in r.stdout and '"state": "ready"' in r.stdout, r
