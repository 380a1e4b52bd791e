"""Helpers for the end-to-end tests: processes, pseudo-terminals, output
normalisation and the raw wire protocol. No fixtures here (see conftest.py)."""

import errno
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECTS = REPO / "tests" / "projects"
TIMEOUT = 60  # seconds for any one subprocess; a hang fails instead of blocking


def child_timing(r):
    """The line PYTEST_ZYGOTE_TIMING=1 makes a run's child write on stderr, as
    {"cpu_ms", "faults", "reloaded", "checked", "ahead"}; fails when it is
    missing. ahead: the run was collected ahead (ahead.c)."""
    m = re.search(r"pytest-zygote: child ([\d.]+) ms CPU, (\d+) page faults, (\d+) modules "
                  r"reloaded, (\d+) files checked(, collected ahead)?", r.err)
    assert m, r
    return {"cpu_ms": float(m[1]), "faults": int(m[2]), "reloaded": int(m[3]),
            "checked": int(m[4]), "ahead": bool(m[5])}

READY_RE = re.compile(
    r"^pytest-zygote: ready pid (?P<pid>\d+), socket (?P<socket>.+?), "
    r"(?P<modules>\d+) modules, warm-up (?P<warmup>\d+(?:\.\d+)?) ?s$"
)
ALREADY_RE = re.compile(
    r"^pytest-zygote: already running for (?P<root>.+) "
    r"\(pid (?P<pid>\d+), socket (?P<socket>.+)\)$"
)
STOPPED_RE = re.compile(r"^pytest-zygote: stopped \(pid (?P<pid>\d+)\)$")

# --- output normalisation -------------------------------------------------

_SESSION_TIME = re.compile(r" in \d+\.\d+s(?: \(\d+:\d\d:\d\d\))?")
_DURATION = re.compile(r"^(\s*)\d+\.\d+s (call|setup|teardown)\b")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def normalise(text):
    """Remove what legitimately differs between two runs: timings (and the
    width of the separator that surrounds them), object addresses, CRs."""
    text = text.replace("\r\n", "\n")
    out = []
    for line in text.split("\n"):
        new = _SESSION_TIME.sub(" in <T>", line)
        new = _DURATION.sub(r"\1<T> \2", new)
        if new != line:
            # The '=' padding around "N passed in 0.12s" depends on its length.
            new = re.sub(r"={2,}", "==", new)
        new = _ADDRESS.sub("0xADDR", new)
        out.append(new)
    return "\n".join(out)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text):
    return _ANSI.sub("", text)


# --- comparing a run with plain pytest --------------------------------------------

# "tests/test_x.py::test_y[1] PASSED      [ 50%]" (-v); a test whose setup
# passed and whose teardown failed has two such lines.
_VLINE = re.compile(r"^(?P<id>\S+::\S+) (?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_FINAL = re.compile(r"^=+ (?P<text>.+?) in <T> =+$")  # once normalised


class Outcomes:
    """What a run reported: {node id: outcome}, the short test summary lines
    (-rA: collection errors, skip reasons and failure messages), the final
    summary line ("3 passed, 1 failed") and the exit code."""

    def __init__(self, result):
        self.result = result
        self.rc = result.rc
        self.tests = {}
        self.summary = []
        self.final = None
        in_summary = False
        for line in normalise(result.out).splitlines():
            m = _VLINE.match(line)
            if m and not in_summary:
                prev = self.tests.get(m["id"])
                self.tests[m["id"]] = m["outcome"] if prev is None else prev + "+" + m["outcome"]
                continue
            if re.match(r"^=+ short test summary info =+$", line):
                in_summary = True
                continue
            m = _FINAL.match(line)
            if m:
                self.final = m["text"]
                in_summary = False
                continue
            if in_summary:
                self.summary.append(line)


def show_run(what, o):
    """The end of a run's output and stderr (o: Outcomes), for a failure message."""
    r = o.result
    return "--- %s (rc %d):\n%s\n--- %s stderr:\n%s" % (what, r.rc, r.out[-6000:], what,
                                                       r.err[-3000:])


def assert_same_outcomes(plain, zyg, what=""):
    """zyg (a zygote run) reported what plain (plain pytest) reported."""
    __tracebackhide__ = True
    p, z = Outcomes(plain), Outcomes(zyg)
    problems = []
    only_p = sorted(set(p.tests) - set(z.tests))
    only_z = sorted(set(z.tests) - set(p.tests))
    differ = sorted(k for k in set(p.tests) & set(z.tests) if p.tests[k] != z.tests[k])
    if only_p:
        problems.append("only in plain pytest: %s" % ", ".join(
            "%s %s" % (k, p.tests[k]) for k in only_p))
    if only_z:
        problems.append("only in the zygote run: %s" % ", ".join(
            "%s %s" % (k, z.tests[k]) for k in only_z))
    for k in differ:
        problems.append("%s: plain %s, zygote %s" % (k, p.tests[k], z.tests[k]))
    if z.rc != p.rc:
        problems.append("exit code: plain %d, zygote %d" % (p.rc, z.rc))
    if z.final != p.final:
        problems.append("summary: plain %r, zygote %r" % (p.final, z.final))
    if z.summary != p.summary:
        problems.append("short test summary differs:\nplain:\n  %s\nzygote:\n  %s" % (
            "\n  ".join(p.summary), "\n  ".join(z.summary)))
    if problems:
        pytest.fail("zygote run differs from plain pytest %s:\n%s\n%s\n%s" % (
            what, "\n".join(problems), show_run("plain", p), show_run("zygote", z)))
    return z


# --- /proc ------------------------------------------------------------------


def _read(path, mode="rb"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def proc_stat(pid):
    """(state, ppid, pgrp, starttime) or None when the process is gone."""
    data = _read("/proc/%d/stat" % pid)
    if data is None:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[19])


def cmdline(pid):
    data = _read("/proc/%d/cmdline" % pid)
    if data is None:
        return None
    # setproctitle leaves NUL/space padding; argv elements are NUL-separated.
    return data.replace(b"\0", b" ").decode(errors="replace").strip()


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def is_alive(pid, starttime=None):
    """Running (not a zombie) and, when starttime is given, the same process."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[3] == starttime


def is_gone(pid, starttime=None):
    """Gone entirely (reaped), or the pid now belongs to another process."""
    st = proc_stat(pid)
    if st is None:
        return True
    return starttime is not None and st[3] != starttime


def children(pid):
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st[1] == pid and st[0] not in ("Z", "X"):
            out.append(p)
    return out


def descendants(pid):
    by_parent = {}
    for p in all_pids():
        st = proc_stat(p)
        if st and st[0] not in ("Z", "X"):
            by_parent.setdefault(st[1], []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in by_parent.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def processes_matching(markers, exclude=()):
    """Live processes whose command line, environment or cwd mentions one of
    the markers (absolute paths: a runtime dir, a project root)."""
    me = os.getpid()
    found = {}
    bmarkers = [m.encode() for m in markers]
    for pid in all_pids():
        if pid == me or pid in exclude:
            continue
        st = proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        cmd = _read("/proc/%d/cmdline" % pid) or b""
        env = _read("/proc/%d/environ" % pid) or b""
        try:
            cwd = os.readlink("/proc/%d/cwd" % pid)
        except OSError:
            cwd = ""
        cmd += b"\0"
        env += b"\0"
        for m, bm in zip(markers, bmarkers):
            # a whole path, not the prefix of a longer name
            in_cmd = any(bm + end in cmd for end in (b"/", b"\0", b" "))
            in_env = b"PYTEST_ZYGOTE_RUNTIME_DIR=" + bm + b"\0" in env
            if in_cmd or in_env or cwd == m or cwd.startswith(m + "/"):
                found[pid] = cmdline(pid)
                break
    return found


def wait_until(predicate, timeout=10.0, interval=0.02):
    """Poll predicate until it returns a true value or timeout passes; returns
    the last value. Not a timing assertion: the limit only bounds a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def spare_ready(zygote_pid):
    """The zygote's spare child once it is prepared (asleep waiting for a
    request), else None."""
    for c in children(zygote_pid):
        st = proc_stat(c)
        if (cmdline(c) or "").startswith("pytest-zygote: spare ") and st and st[0] == "S":
            return c
    return None


def settled_fds(pid, interval=0.2, tries=50):
    """A server's open descriptors (fd -> what it is) once they stop changing:
    the same twice, INTERVAL apart. Right after a request (status included)
    its connection may still be closing on the server's side."""
    def fds():
        d = "/proc/%d/fd" % pid
        out = {}
        for fd in os.listdir(d):
            try:
                out[int(fd)] = os.readlink(os.path.join(d, fd))
            except OSError:
                pass
        return out

    prev = fds()
    for _ in range(tries):
        time.sleep(interval)
        cur = fds()
        if cur == prev:
            return cur
        prev = cur
    return prev


def kill_quietly(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- pseudo-terminal --------------------------------------------------------


def set_winsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyRun:
    """A command on a fresh pty as its controlling terminal, in its own
    session and foreground process group, as if started from a shell."""

    def __init__(self, argv, cwd, env, rows=24, cols=80):
        self.master, slave = os.openpty()
        set_winsize(slave, rows, cols)
        self.ttyname = os.ttyname(slave)

        def child_setup():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True, preexec_fn=child_setup, close_fds=True)
        finally:
            os.close(slave)
        self.buf = b""
        self.pos = 0  # expect() searches the output after its previous match
        self.eof = False
        self.rc = None

    @property
    def text(self):
        return self.buf.decode(errors="replace")

    def _read_once(self, timeout):
        if self.eof:
            return False
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def expect(self, pattern, timeout=TIMEOUT):
        """Read until the regex (str) matches the output that follows the
        previous match; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.eof and self.proc.poll() is not None):
                raise AssertionError(
                    "pattern %r not seen (rc=%r); output so far:\n%s"
                    % (pattern, self.proc.poll(), self.text))
            self._read_once(min(left, 0.2))

    def send(self, data):
        os.write(self.master, data)

    def resize(self, rows, cols):
        set_winsize(self.master, rows, cols)

    def wait(self, timeout=TIMEOUT):
        """Read until the command exits, then drain; return (rc, text)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError("command on pty did not exit within %ss; output:\n%s"
                                     % (timeout, self.text))
            self._read_once(0.2)
        # The client has exited; what its run wrote is already in the pty
        # buffer. Drain it without waiting for an EOF that a leaked slave fd
        # elsewhere would postpone forever.
        while self._read_once(0.3):
            pass
        self.rc = self.proc.returncode
        return self.rc, self.text

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self):
        self.kill()
        try:
            os.close(self.master)
        except OSError:
            pass


class BgRun:
    """A `pytest-zygote run` in the background whose stderr can be watched."""

    def __init__(self, pz, root, args, env=None):
        self.proc = subprocess.Popen(
            [pz.zbin, "run", "--", *args], cwd=root, env=pz.env(env),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err = b""

    def wait_stderr(self, text, timeout=TIMEOUT):
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while text.encode() not in self.err:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            self.err += chunk
        return text.encode() in self.err

    def finish(self, timeout=TIMEOUT):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the run did not finish within %d s; stderr so far: %r"
                                 % (timeout, self.err)) from None
        return self.proc.returncode, out.decode(), (self.err + err).decode()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


# --- wire protocol (for the bad-client tests) -------------------------------

PROTO_MAGIC = 0x47595A50
PROTO_VERSION = 1
MSG_HELLO = 1


def header(msg_type, length):
    return struct.pack("=II", msg_type, length)


def hello(magic=PROTO_MAGIC, version=PROTO_VERSION, kind=2, flags=0):
    return header(MSG_HELLO, 16) + struct.pack("=IIII", magic, version, kind, flags)


# --- the pytest-hot-reloading compatibility project ---------------------------


def hot_reloading_flow(pytest, root, module="workaround"):
    """Run tests/projects/hot_reloading (a copy at root), written for
    pytest-hot-reloading, through the zygote: `pytest(*args, env=...)` runs
    pytest with the compatibility package importable. module is the one its
    conftest imports register_workaround from (workaround or workarounds)."""
    conftest = root / "conftest.py"
    conftest.write_text(conftest.read_text().replace(
        "pytest_hot_reloading.workaround import", "pytest_hot_reloading.%s import" % module))
    r = pytest("-q", "-s")  # no zygote yet: in-process, as plain pytest
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    # No refresh while the test runs: the edited module must be re-imported
    # by the run's own child, where workarounds run.
    r = pytest("-q", "-s", "--daemon-start-if-needed", env={"PYTEST_ZYGOTE_SETTLE_MS": "600000"})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r

    log = root / "workaround.log"
    log.write_text("")
    (root / "pkg" / "models.py").write_text(
        (root / "pkg" / "models.py").read_text().replace("VALUE = 1", "VALUE = 2"))
    (root / "expected.txt").write_text("2\n")
    r = pytest("-q", "-s")
    # Without the workaround the re-imported model registers twice and
    # collection fails.
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "1 passed" in r.out, r
    entries = [line.split() for line in log.read_text().splitlines()]
    pid = [p for word, p in entries if word == "test"]
    assert len(pid) == 1, entries
    assert [w for w, p in entries if p == pid[0]] == \
        ["workaround", "test", "workaround-after"], entries
    return r
# --- leftovers ---------------------------------------------------------------


def server_processes(sup_pid):
    """The processes a healthy idle server consists of: the supervisor, its
    zygote generations and each generation's spare child."""
    if not is_alive(sup_pid):
        return set()
    keep = {sup_pid}
    for z in children(sup_pid):
        if (cmdline(z) or "").startswith("pytest-zygote: zygote"):
            keep.add(z)
            keep.update(c for c in children(z)
                        if (cmdline(c) or "").startswith("pytest-zygote: spare"))
    return keep


def strays(markers, sup_pid=None):
    """What a test's server family should not have: live processes that carry
    one of the markers (PYTEST_ZYGOTE_RUNTIME_DIR in the environment, a
    project root as cwd or argument) or descend from the supervisor, other
    than the server itself (server_processes); and zombies whose parent is one
    of those processes (the supervisor and the zygote must reap their
    children). Zombies whose parent is PID 1 are not counted: this VM's init
    does not reap, so a detached supervisor or zygote that exited stays a
    zombie there. Returns {pid: description}."""
    ours = set(processes_matching(markers))
    keep = set()
    if sup_pid is not None:
        keep = server_processes(sup_pid)
        if keep:
            ours |= set(descendants(sup_pid)) | {sup_pid}
    ours.discard(os.getpid())
    found = {p: "%s (alive, parent %s)" % (cmdline(p), (proc_stat(p) or ("", "?"))[1])
             for p in ours - keep if is_alive(p)}
    for p in all_pids():
        st = proc_stat(p)
        if st and st[0] == "Z" and st[1] != 1 and (st[1] in ours or st[1] in keep):
            found[p] = "zombie %s, parent %d (%s)" % (
                (_read("/proc/%d/comm" % p) or b"?").decode().strip(), st[1], cmdline(st[1]))
    return found


def assert_no_strays(markers, sup_pid=None, timeout=10):
    """Wait (at most timeout seconds, to bound a hang) until strays() is
    empty; fail with the list otherwise."""
    left = {}

    def clean():
        left.clear()
        left.update(strays(markers, sup_pid))
        return not left

    assert wait_until(clean, timeout=timeout), "processes left behind: %r" % (left,)
# The rest of include/zygote/proto.h, for clients that speak the real protocol.
MSG_ARGV, MSG_CWD, MSG_ENV, MSG_FDS, MSG_DONE = 2, 3, 4, 5, 6
MSG_BUILD = 7  # after a version 2 HELLO (PROTO_VERSION above is 1: no BUILD)
MSG_SIGNAL = 20
MSG_EXIT, MSG_ERROR, MSG_NOTICE, MSG_STATUS = 40, 41, 42, 43
KIND_RUN, KIND_STATUS = 1, 2


def message(msg_type, payload=b""):
    return header(msg_type, len(payload)) + payload


def strings(items):
    """NUL-terminated strings back to back (str items as the OS would
    encode them: UTF-8 with surrogateescape)."""
    return b"".join(os.fsencode(x) + b"\0" for x in items)


def run_request(argv, cwd, env, nfds=3):
    """A whole run request as the C client sends it, split where its fds
    ride along: (bytes before the FDS message, FDS + DONE)."""
    head = (hello(kind=KIND_RUN) + message(MSG_ARGV, strings(argv))
            + message(MSG_CWD, os.fsencode(cwd) + b"\0")
            + message(MSG_ENV, strings("%s=%s" % kv for kv in env.items())))
    return head, message(MSG_FDS, struct.pack("=I", nfds)) + message(MSG_DONE)


def read_msg(sock):
    """(type, payload) of the next message, or (None, b"") at EOF."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    hdr = exactly(8)
    if hdr is None:
        return None, b""
    typ, length = struct.unpack("=II", hdr)
    return typ, exactly(length) or b""


def read_all(sock):
    """Every message until the server closes the connection."""
    out = []
    while True:
        try:
            typ, payload = read_msg(sock)
        except ConnectionResetError:
            break
        if typ is None:
            break
        out.append((typ, payload))
    return out


# --- a second user account (tests that need root) ---------------------------


def user_tree(pw, project, top):
    """A fresh tree under top (world-traversable, owned by the account pw)
    holding a copy of tests/projects/<project> and a private runtime
    directory. Returns (project dir, runtime dir)."""
    shutil.rmtree(top, ignore_errors=True)
    os.makedirs(top)
    os.chmod(top, 0o755)
    proj = os.path.join(top, project)
    shutil.copytree(PROJECTS / project, proj,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    rt = os.path.join(top, "rt")
    os.makedirs(rt, mode=0o700)
    for dirpath, dirnames, filenames in os.walk(top):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            os.chown(n, pw.pw_uid, pw.pw_gid)
    return proj, rt


def run_as(pw, env, argv, cwd):
    """argv as the account pw with exactly env (runuser, env -i)."""
    return subprocess.run(["runuser", "-u", pw.pw_name, "--", "env", "-i"]
                          + ["%s=%s" % kv for kv in env.items()] + [str(a) for a in argv],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def wait_absorbed(srv, timeout):
    """The server has no pending change, no generation warming and none
    preparing its first spare: a change it tracks has been absorbed by the
    current generation."""
    last = {}

    def settled():
        last["st"] = st = srv.status()
        return (st["state"] == "ready" and st["warming"] == 0 and st["dirty_count"] == 0
                and st["preparing"] == 0)

    assert wait_until(settled, timeout=timeout, interval=0.05), (
        "server never settled; last status: %r" % (last.get("st"),))
