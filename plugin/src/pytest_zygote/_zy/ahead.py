"""Collecting ahead (src/zygote/ahead.c; docs/design.md, "Collecting ahead").

A child forked after a run whose collection took a while starts that run
again with stdio of its own (memfds), collects, and stops before the first
test: _Ahead.pytest_runtestloop waits in C for the request. The zygote gives
it the request only when the request is that run again, the server saw no
change in the project since, and every file and directory the collection
read (recorded here, with an audit hook) is as it was. Then the output so
far goes to the client, the client's stdio takes the place of ours, and
what pytest set up around stdio while it configured is pointed at it too.

CollectTime measures every run's collection, which decides whether the next
is done ahead.
"""

import os
import sys
import time

import pytest

from . import state


class CollectTime:
    """How long this run's collection took (state.collect_ms)."""

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_collection(self, session):
        t0 = time.perf_counter()
        yield
        state.collect_ms = int((time.perf_counter() - t0) * 1000)


_READ_EVENTS = ("os.listdir", "os.scandir")


_ABSENT = "- - - -"


def _key(path):
    try:
        st = os.stat(path)
    except OSError:
        return _ABSENT
    return "%d %d %d %d" % (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# Files up to this size are compared by content when their stat changed.
_BLOB_MAX = 1 << 20


def _listing(reads):
    """What C's reads_unchanged reads: "key blob path" lines and the contents
    of the small regular files among them, kept only when the file's stat is
    still what it was when it was first read (else its bytes may not be what
    collection saw)."""
    import stat

    lines, blobs, off = [], [], 0
    for path, key in reads.items():
        boff = -1
        if key != _ABSENT:
            try:
                st = os.stat(path)
                if stat.S_ISREG(st.st_mode) and st.st_size <= _BLOB_MAX:
                    with open(path, "rb") as f:
                        data = f.read(_BLOB_MAX + 1)
                    if len(data) == st.st_size and _key(path) == key:
                        blobs.append(data)
                        boff, off = off, off + len(data)
            except OSError:
                pass
        lines.append("%s %d %s\n" % (key, boff, path))
    return "".join(lines), b"".join(blobs)


class _Ahead:
    def __init__(self):
        self.reads = {}
        self.live = True
        sys.addaudithook(self._audit)

    def _audit(self, event, args):
        # Hooks cannot be removed: this one goes quiet once adopted.
        if not self.live:
            return
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            if mode is not None and any(c in str(mode) for c in "wax+"):
                return
            if mode is None and flags & (os.O_WRONLY | os.O_RDWR):
                return
        elif event in _READ_EVENTS:
            path = args[0] if args and args[0] is not None else "."
            if isinstance(path, int):
                return
        else:
            return
        try:
            path = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if path not in self.reads and "\n" not in path:
            self.reads[path] = _key(path)

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        # pytest-xdist's controller starts its workers when the session
        # starts: a run with workers is not done ahead.
        if config.pluginmanager.has_plugin("dsession") or config.getoption("numprocesses", None):
            os._exit(0)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session):
        self._adopt(session.config)
        yield

    def _adopt(self, config):
        import _pytest_zygote_c

        sys.stdout.flush()
        sys.stderr.flush()
        self.live = False
        reads, blobs = _listing(self.reads)
        if not _pytest_zygote_c.ahead_adopt(reads, blobs):
            os._exit(0)
        # What pytest set up on the stdio it saw while configuring (dups of
        # our memfds) now stands for the client's: the fd capture's saved
        # descriptors and faulthandler's copy of stderr.
        capman = config.pluginmanager.get_plugin("capturemanager")
        capturing = getattr(capman, "_global_capturing", None)
        for cap in (getattr(capturing, n, None) for n in ("in_", "out", "err")):
            save = getattr(cap, "targetfd_save", None)
            if isinstance(save, int) and cap.targetfd in (0, 1, 2):
                os.dup2(cap.targetfd, save)
        try:
            from _pytest.faulthandler import fault_handler_stderr_key

            f = config.stash.get(fault_handler_stderr_key, None)
            if f is not None:
                os.dup2(2, f.fileno())
        except (ImportError, OSError, ValueError):
            pass
        # The session's clocks started before the request: what it reports
        # is measured from the request, as the person waiting sees it.
        now = time.time()
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and hasattr(tr, "_sessionstarttime"):
            tr._sessionstarttime = now
        try:
            from _pytest.junitxml import xml_key

            xml = config.stash.get(xml_key, None)
            if xml is not None and hasattr(xml, "suite_start_time"):
                xml.suite_start_time = now
        except ImportError:
            pass
        state.ahead_adopted = True


def plugin():
    return _Ahead()
