"""Fixtures for the end-to-end tests of the pytest-zygote binary.

Run with:  /usr/bin/python3 -m pytest -q tests/e2e
The binary is $PYTEST_ZYGOTE_BIN, else <repo>/build/pytest-zygote.

Every test gets a private runtime directory (PYTEST_ZYGOTE_RUNTIME_DIR in the
environment of every subprocess), copies of the sample projects it needs, and
at teardown every server is stopped and no process that belongs to the test
may remain.
"""

import collections
import os
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import pz_util
from pz_util import PROJECTS, READY_RE, TIMEOUT

Result = collections.namedtuple("Result", "rc out err")

# Variables from the developer's environment that would make plain pytest and
# the zygote differ for reasons that have nothing to do with the zygote.
_DROP_PREFIXES = ("PYTEST_", "PYTHON", "PY_COLORS", "NO_COLOR", "FORCE_COLOR",
                  "COLUMNS", "LINES", "XDG_RUNTIME_DIR")


def _zbin_path():
    p = os.environ.get("PYTEST_ZYGOTE_BIN")
    return Path(p).resolve() if p else pz_util.REPO / "build" / "pytest-zygote"


@pytest.fixture(scope="session")
def zbin():
    p = _zbin_path()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail("pytest-zygote binary not found at %s: build it "
                    "(meson compile -C build) or set PYTEST_ZYGOTE_BIN" % p, pytrace=False)
    return str(p)


class Ctx:
    """Per-test state shared by the fixtures below."""

    def __init__(self, zbin, runtime_dir, tmp_path):
        self.zbin = zbin
        self.runtime_dir = runtime_dir
        self.tmp_path = tmp_path
        self.roots = []  # project copies made by this test
        self.foreground = []  # Popen objects of --foreground servers
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
        env["PYTEST_ZYGOTE_RUNTIME_DIR"] = runtime_dir
        env.setdefault("TERM", "xterm")
        self.base_env = env

    def env(self, extra=None):
        env = dict(self.base_env)
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    # -- subprocesses --

    def call(self, argv, cwd=None, env=None, timeout=TIMEOUT, input=None):
        """Run argv with stdin from /dev/null (or input) and return Result."""
        try:
            p = subprocess.run(
                [str(a) for a in argv], cwd=cwd, env=self.env(env), input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("timed out after %ss: %s\nstdout:\n%s\nstderr:\n%s" % (
                timeout, argv, _s(e.stdout), _s(e.stderr))) from None
        return Result(p.returncode, p.stdout, p.stderr)

    def cli(self, *args, **kw):
        """pytest-zygote ARGS."""
        return self.call([self.zbin, *args], **kw)

    def run_plain(self, args, cwd, **kw):
        return self.call([sys.executable, "-m", "pytest", *args], cwd=cwd, **kw)

    def run_zygote(self, args, cwd, root=None, start_if_needed=False, dashdash=True, **kw):
        argv = [self.zbin, "run"]
        if root is not None:
            argv += ["--root", str(root)]
        if start_if_needed:
            argv.append("--start-if-needed")
        if dashdash:
            argv.append("--")
        return self.call(argv + list(args), cwd=cwd, **kw)

    # -- projects --

    def project(self, name, dest_name=None):
        src = PROJECTS / name
        assert src.is_dir(), src
        dest = self.tmp_path / (dest_name or name)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
            "__pycache__", ".pytest_cache", "*.pyc"))
        dest = dest.resolve()
        self.roots.append(str(dest))
        return dest

    # -- servers --

    def pid_file(self, socket_path):
        return Path(str(socket_path)[: -len(".sock")] + ".pid")

    def start(self, root, *extra, env=None, cwd=None):
        """pytest-zygote start --root ROOT; asserts it succeeded; returns a Server."""
        if str(root) not in self.roots:
            self.roots.append(str(root))
        r = self.cli("start", "--root", root, *extra, env=env, cwd=cwd)
        assert r.rc == 0, "start failed: %r" % (r,)
        lines = r.out.splitlines()
        assert len(lines) == 1, "start must print one line to stdout: %r" % (r,)
        m = READY_RE.match(lines[0])
        assert m, "unexpected ready line: %r" % (r,)
        return Server(self, root, int(m["pid"]), m["socket"], lines[0], r)

    def start_foreground(self, root, *extra, env=None, pass_fds=()):
        """start --foreground --ready-fd N, waiting on the pipe (no sleeps)."""
        if str(root) not in self.roots:
            self.roots.append(str(root))
        rfd, wfd = os.pipe()
        log = open(self.tmp_path / ("foreground-%d.log" % len(self.foreground)), "w+")
        try:
            proc = subprocess.Popen(
                [self.zbin, "start", "--root", str(root), "--foreground",
                 "--ready-fd", str(wfd), *extra],
                env=self.env(env), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(wfd, *pass_fds))
        finally:
            os.close(wfd)
        self.foreground.append(proc)
        try:
            r, _, _ = select.select([rfd], [], [], TIMEOUT)
            data = os.read(rfd, 64) if r else None
        finally:
            os.close(rfd)
        if data != b"\n":
            log.seek(0)
            raise AssertionError("foreground server not ready (read %r, rc %r); log:\n%s"
                                 % (data, proc.poll(), log.read()))
        return Server(self, root, proc.pid, None, None, None, proc=proc)

    def cleanup(self):
        """Stop every server, kill what is left, and report leftovers."""
        problems = []
        stops = []
        for root in self.roots:
            try:
                stops.append(self.cli("stop", "--root", root, "--grace", "2", timeout=30))
            except (AssertionError, OSError) as e:
                problems.append("stop --root %s failed: %s" % (root, e))
        for proc in self.foreground:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append("foreground server %d still running after stop" % proc.pid)
                proc.kill()
                proc.wait(timeout=10)
        for pidfile in Path(self.runtime_dir).glob("*.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not (pz_util.cmdline(pid) or "").startswith("pytest-zygote"):
                continue  # a stale pid file naming someone else: never kill that
            if not pz_util.wait_until(lambda: not pz_util.is_alive(pid), timeout=10):
                problems.append("server pid %d (%s) still alive 10 s after stop (%r)"
                                % (pid, pidfile.name, stops))
                for c in pz_util.descendants(pid):
                    pz_util.kill_quietly(c)
                pz_util.kill_quietly(pid)
        markers = [self.runtime_dir] + self.roots
        left = pz_util.wait_until(lambda: not pz_util.processes_matching(markers),
                                  timeout=10)
        if not left:
            procs = pz_util.processes_matching(markers)
            problems.append("processes left behind: %r" % (procs,))
            for pid in procs:
                pz_util.kill_quietly(pid)
        return problems


def _s(x):
    if isinstance(x, bytes):
        return x.decode(errors="replace")
    return x or ""


class Server:
    def __init__(self, ctx, root, pid, socket, line, result, proc=None):
        self.ctx = ctx
        self.root = str(root)
        self.pid = pid
        self.socket = socket
        self.line = line
        self.result = result
        self.proc = proc
        self.starttime = pz_util.proc_stat(pid)[3] if pz_util.proc_stat(pid) else None

    def status(self):
        import json
        r = self.ctx.cli("status", "--root", self.root, "--json")
        assert r.rc == 0, r
        return json.loads(r.out)

    def wait_idle(self, timeout=10):
        """status --json once no run is in progress (the server may learn that a
        run ended a moment after its client did)."""
        last = {}

        def idle():
            last["st"] = self.status()
            return last["st"]["running"] == 0

        pz_util.wait_until(idle, timeout=timeout)
        return last["st"]

    def zygote_pids(self):
        """The supervisor's children that are zygote generations."""
        return [p for p in pz_util.children(self.pid)
                if (pz_util.cmdline(p) or "").startswith("pytest-zygote: zygote")]

    def stop(self, *extra):
        return self.ctx.cli("stop", "--root", self.root, *extra)


@pytest.fixture
def pz(zbin, tmp_path):
    """Everything at once: ctx.cli, ctx.project, ctx.start, ctx.run_plain, ..."""
    # Short, private (mkdtemp makes it 0700) and outside tmp_path: a socket
    # path must fit in 108 bytes.
    runtime_dir = tempfile.mkdtemp(prefix="pz-")
    os.chmod(runtime_dir, 0o700)
    ctx = Ctx(zbin, runtime_dir, tmp_path)
    yield ctx
    problems = ctx.cleanup()
    shutil.rmtree(runtime_dir, ignore_errors=True)
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def runtime_dir(pz):
    return pz.runtime_dir


@pytest.fixture
def project(pz):
    """project(name) -> Path of a fresh copy of tests/projects/<name>."""
    return pz.project


@pytest.fixture
def server(pz):
    """server(root, *extra_args, foreground=False, env=None) -> Server; stopped at teardown."""

    def start(root, *extra, foreground=False, env=None):
        if foreground:
            return pz.start_foreground(root, *extra, env=env)
        return pz.start(root, *extra, env=env)

    return start


@pytest.fixture
def run_plain(pz):
    return pz.run_plain


@pytest.fixture
def run_zygote(pz):
    return pz.run_zygote


@pytest.fixture
def normaliser():
    return pz_util.normalise


# -- sanitizer builds (scripts/sanitize.sh) --

def _sanitizer_logs():
    """Report files of the log_path= prefixes in ASAN_OPTIONS / UBSAN_OPTIONS /
    LSAN_OPTIONS (sanitizers write PREFIX.PID), or None when none is set."""
    prefixes = []
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        for opt in os.environ.get(var, "").split(":"):
            key, _, value = opt.partition("=")
            if key == "log_path" and value not in ("", "stdout", "stderr"):
                prefixes.append(value)
    if not prefixes:
        return None
    return {str(p) for pre in prefixes for p in Path(pre).parent.glob(Path(pre).name + ".*")}


@pytest.fixture(autouse=True)
def _no_sanitizer_reports():
    """A sanitizer report written by any process during the test (client,
    supervisor, zygote, test child) fails it. Set up first, so this runs after
    the other fixtures have stopped every server."""
    before = _sanitizer_logs()
    yield
    if before is None:
        return
    new = sorted(_sanitizer_logs() - before)
    if new:
        pytest.fail("sanitizer reports:\n" + "\n".join(
            "%s:\n%s" % (p, Path(p).read_text(errors="replace")[-6000:]) for p in new),
            pytrace=False)
