"""pytest-zygote watch: a run per settled save, its status line, cancelling a
run on a new save, the keys and the terminal's modes on a pty, the exit code,
and the watch connection's limits on the server. The affected-test selection
itself is not tested here (the run only gets PYTEST_ZYGOTE_AFFECTED=1)."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import termios
import time

from pathlib import Path

import pytest

from pz_util import (TIMEOUT, PtyRun, hello, is_gone, message, read_msg, strip_ansi,
                     wait_until)

MSG_DONE, MSG_ERROR, MSG_CHANGES = 6, 41, 46
KIND_WATCH = 5
MAX_WATCHERS = 16
STATUS_RE = r"watching (\d+) files?; last run [0-9.]+ s; (\d+) failed"


def save(root, name, text):
    with open(os.path.join(root, name), "w") as f:
        f.write(text)


class PipeWatch:
    """`pytest-zygote watch` with stdout and stderr to files, stdin /dev/null."""

    def __init__(self, pz, root, args=(), env=None, extra=()):
        self.out_path = pz.tmp_path / ("watch-out-%d.txt" % time.monotonic_ns())
        self.err_path = pz.tmp_path / ("watch-err-%d.txt" % time.monotonic_ns())
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [pz.zbin, "watch", *extra, "--", *args], cwd=root, env=pz.env(env),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    @property
    def out(self):
        return self.out_path.read_text()

    @property
    def err(self):
        return self.err_path.read_text()

    def wait_out(self, pattern, count=1, timeout=TIMEOUT):
        ok = wait_until(lambda: len(re.findall(pattern, self.out)) >= count
                        or self.proc.poll() is not None, timeout=timeout)
        n = len(re.findall(pattern, self.out))
        assert ok and n >= count, "%d of %d %r (rc %r); stdout:\n%s\nstderr:\n%s" % (
            n, count, pattern, self.proc.poll(), self.out, self.err)

    def finish(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("watch did not end on signal %d" % sig) from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def watch(pz):
    made = []

    def start(root, args=(), env=None, extra=()):
        w = PipeWatch(pz, root, args, env, extra)
        made.append(w)
        # Subscribed (the first status line) before the test saves anything.
        w.wait_out(r"watching \d+ files? \[affected\]")
        return w

    yield start
    for w in made:
        w.kill()


def sessions(text):
    return len(re.findall(r"=+ test session starts =+", strip_ansi(text)))


def test_a_save_runs_the_tests_once_and_prints_the_status_line(pz, watch):
    root = pz.project("watch")
    pz.start(root)
    w = watch(root)
    save(root, "app.py", "VALUE = 2\n")
    w.wait_out(STATUS_RE)
    m = re.search(STATUS_RE, w.out)
    assert int(m[1]) == 3, w.out  # app.py, tests/test_app.py, pytest.ini
    assert int(m[2]) == 1, w.out  # test_value fails; the env test passes
    assert "test_watch_variables_are_not_the_tests PASSED" in w.out or \
        "1 failed, 3 passed" in w.out, w.out
    save(root, "app.py", "VALUE = 1\n")
    w.wait_out(STATUS_RE, count=2)
    assert re.findall(STATUS_RE, w.out)[1][1] == "0"
    assert sessions(w.out) == 2, w.out  # one run per change, no colour on a file
    assert "\x1b[" not in w.out
    assert w.finish() == 0  # Ctrl-C: the last run's exit code


def test_ctrl_c_exits_with_the_last_runs_code(pz, watch):
    root = pz.project("watch")
    pz.start(root)
    w = watch(root)
    save(root, "app.py", "VALUE = 3\n")
    w.wait_out(STATUS_RE)
    assert w.finish(signal.SIGINT) == 1
    w2 = watch(root)
    assert w2.finish(signal.SIGTERM) == 0  # no run yet


def test_quick_saves_within_the_settle_time_make_one_run(pz, watch):
    root = pz.project("watch")
    pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": "2000"})
    w = watch(root)
    save(root, "app.py", "VALUE = 4\n")
    save(root, "app.py", "VALUE = 1\n")
    save(root, "tests/test_app.py", open(root / "tests/test_app.py").read())
    w.wait_out(STATUS_RE)
    save(root, "app.py", "VALUE = 1\n")  # a later save: the second run
    w.wait_out(STATUS_RE, count=2)
    assert sessions(w.out) == 2, w.out
    assert w.finish() == 0


def test_a_save_during_a_run_cancels_it_and_starts_the_next(pz, watch):
    root = pz.project("watch")
    pz.start(root)
    w = watch(root)
    (root / "slow.flag").write_text("")
    started = root / "slow.flag.started"
    save(root, "app.py", "VALUE = 1\n")
    assert wait_until(started.exists, timeout=TIMEOUT), w.out + w.err
    (root / "slow.flag").unlink()
    save(root, "app.py", "VALUE = 5\n")  # cancels the slow run
    w.wait_out(STATUS_RE)
    assert "run cancelled: " in w.err and "app.py changed" in w.err, w.err
    assert sessions(w.out) == 2, w.out  # the cancelled one, and the next
    assert "KeyboardInterrupt" in w.out, w.out  # pytest saw a Ctrl-C
    assert len(re.findall(STATUS_RE, w.out)) == 1  # no status for the cancelled run
    assert re.search(STATUS_RE, w.out)[2] == "1"
    assert w.finish() == 1


def test_pipe_stdout_runs_once_per_change_without_keys(pz, watch):
    root = pz.project("watch")
    pz.start(root)
    w = watch(root, args=["-q"])
    for k in range(3):
        save(root, "app.py", "VALUE = 1  # %d\n" % k)
        w.wait_out(STATUS_RE, count=k + 1)
    assert sessions(w.out) == 0  # -q: no header; count the status lines
    assert len(re.findall(STATUS_RE, w.out)) == 3
    assert "Enter:" not in w.out  # no keys without a terminal
    assert w.finish() == 0


def test_no_server_fails_clearly_and_start_if_needed_starts_one(pz):
    root = pz.project("watch")
    r = pz.cli("watch", "--root", root, timeout=TIMEOUT)
    assert r.rc == 69, r
    assert "start" in r.err, r
    w = PipeWatch(pz, root, extra=["--start-if-needed"])
    try:
        w.wait_out(r"watching \d+ files? \[affected\]")
        save(root, "app.py", "VALUE = 1\n")
        w.wait_out(STATUS_RE)
        assert w.finish() == 0
    finally:
        w.kill()


def test_the_server_going_away_ends_the_watch(pz, watch):
    # After `stop` no server comes back within 5 s: watch ends, exit 69.
    root = pz.project("watch")
    srv = pz.start(root)
    w = watch(root)
    assert srv.stop().rc == 0
    assert w.proc.wait(timeout=TIMEOUT) == 69
    assert "went away" in w.err and "is back" not in w.err, w.err


def test_a_restart_keeps_the_watch_going(pz, watch):
    # `restart` is a stop, then a start: the watch subscribes to the new
    # server, says so, prints its status line again, and the next save
    # runs the tests on the new server.
    root = pz.project("watch")
    first = pz.start(root)
    w = watch(root)
    r = pz.cli("restart", "--root", root)
    assert r.rc == 0, r
    w.wait_out(r"watching \d+ files? \[affected\]", count=2)
    assert "is back; watching again" in w.err, w.err
    st = json.loads(pz.cli("status", "--root", root, "--json").out)
    assert st["pid"] != first.pid, st
    save(root, "app.py", "VALUE = 1\n")
    w.wait_out(STATUS_RE)
    assert w.proc.poll() is None, w.err
    assert w.finish() == 0


# --- on a terminal -----------------------------------------------------------


def lflag(fd):
    return termios.tcgetattr(fd)[3]


def fresh_pty_modes():
    """The modes of a new pty, as PtyRun's was before watch started (read
    from PtyRun's own, the watch may already have changed them)."""
    master, slave = os.openpty()
    try:
        return termios.tcgetattr(master)
    finally:
        os.close(master)
        os.close(slave)


def test_keys_on_a_terminal_and_its_modes_restored(pz):
    root = pz.project("watch")
    pz.start(root)
    run = PtyRun([pz.zbin, "watch"], cwd=root, env=pz.env())
    try:
        before = fresh_pty_modes()
        run.expect(r"watching \d+ files \[affected\].*Enter: all")
        assert wait_until(lambda: not lflag(run.master) & termios.ICANON), \
            "the terminal is not in key mode while waiting"
        assert not lflag(run.master) & termios.ECHO
        run.send(b"a")
        run.expect(r"watching \d+ files \[all\]")
        run.send(b"a")
        run.expect(r"watching \d+ files \[affected\]")
        save(root, "app.py", "VALUE = 6\n")  # a failing run
        run.expect(STATUS_RE.replace("(\\d+) failed", "1 failed"))
        run.send(b"\r")  # Enter: every test again
        run.expect(r"test session starts")
        run.expect(STATUS_RE.replace("(\\d+) failed", "1 failed"))
        run.send(b"f")  # only the failed one
        run.expect(r"run-last-failure: rerun previous 1 failure")
        m = run.expect(r"(\d+) failed(, (\d+) deselected)?")
        assert m[1] == "1", run.text
        run.expect(STATUS_RE.replace("(\\d+) failed", "1 failed"))
        # The run's own test checked ICANON and ECHO were on during the run:
        # only test_value failed.
        assert "test_terminal_is_in_its_own_mode_during_a_run" not in run.text
        run.send(b"q")
        rc, text = run.wait()
        assert rc == 1, text  # the last run's code
        assert termios.tcgetattr(run.master) == before
    finally:
        run.close()


def test_ctrl_c_on_a_terminal_interrupts_the_run_then_quits(pz):
    root = pz.project("watch")
    pz.start(root)
    run = PtyRun([pz.zbin, "watch"], cwd=root, env=pz.env())
    try:
        before = fresh_pty_modes()
        run.expect(r"watching \d+ files \[affected\]")
        (root / "slow.flag").write_text("")
        save(root, "app.py", "VALUE = 1\n")
        assert wait_until((root / "slow.flag.started").exists, timeout=TIMEOUT), run.text
        run.send(b"\x03")  # Ctrl-C during the run: pytest stops, watch goes on
        run.expect(r"KeyboardInterrupt")
        run.expect(r"watching \d+ files; last run [0-9.]+ s")
        assert run.proc.poll() is None
        assert wait_until(lambda: not lflag(run.master) & termios.ICANON)
        run.send(b"\x03")  # Ctrl-C while waiting: quit, with the run's code
        rc, text = run.wait()
        assert rc == 2, text  # pytest's "interrupted"
        assert termios.tcgetattr(run.master) == before
    finally:
        run.close()


def test_sigterm_while_waiting_restores_the_terminal(pz):
    root = pz.project("watch")
    pz.start(root)
    run = PtyRun([pz.zbin, "watch"], cwd=root, env=pz.env())
    try:
        before = fresh_pty_modes()
        run.expect(r"watching \d+ files \[affected\]")
        assert wait_until(lambda: not lflag(run.master) & termios.ICANON)
        run.proc.send_signal(signal.SIGTERM)
        rc, _ = run.wait()
        assert rc == 0
        assert termios.tcgetattr(run.master) == before
    finally:
        run.close()


# --- the watch connection on the server ---------------------------------------


def watch_conn(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(sock_path)
    s.sendall(hello(kind=KIND_WATCH) + message(MSG_DONE))
    return s


def test_a_watcher_killed_leaves_the_server_serving(pz, watch):
    root = pz.project("watch")
    srv = pz.start(root)
    w = watch(root)
    assert srv.status()["watchers"] == 1
    save(root, "app.py", "VALUE = 1  # saved\n")
    w.wait_out(STATUS_RE)  # a run wrote its counts to the watch's result file
    result = Path(pz.runtime_dir) / ("watch-%d.result" % w.proc.pid)
    assert result.exists(), list(Path(pz.runtime_dir).iterdir())
    w.proc.kill()
    w.proc.wait()
    assert wait_until(lambda: srv.status()["watchers"] == 0), srv.status()
    r = pz.run_zygote(["-q"], cwd=root)
    assert r.rc == 0, r
    w2 = watch(root)  # the slot is free again
    assert not result.exists()  # the next watch removed the dead one's file
    save(root, "app.py", "VALUE = 1\n")
    w2.wait_out(STATUS_RE)
    assert w2.finish() == 0


def test_watchers_are_bounded_and_do_not_starve_the_server(pz):
    root = pz.project("watch")
    srv = pz.start(root)
    conns = []
    try:
        for _ in range(MAX_WATCHERS):
            s = watch_conn(srv.socket)
            typ, payload = read_msg(s)
            assert typ == MSG_CHANGES and payload.startswith(b"files="), (typ, payload)
            conns.append(s)
        extra = watch_conn(srv.socket)
        typ, payload = read_msg(extra)
        assert typ == MSG_ERROR and b"too many watch clients" in payload, (typ, payload)
        extra.close()
        assert srv.status()["watchers"] == MAX_WATCHERS
        assert pz.run_zygote(["-q"], cwd=root).rc == 0  # runs are still served
        save(root, "app.py", "VALUE = 1\n")
        for s in conns:  # every watcher hears of the save
            typ, payload = read_msg(s)
            assert typ == MSG_CHANGES and b"changed=%s/app.py" % bytes(root) in payload, \
                payload
        # A watcher that sends anything is closed; its slot is free again.
        conns[0].sendall(message(MSG_DONE))
        assert read_msg(conns[0])[0] == MSG_ERROR
        assert wait_until(lambda: srv.status()["watchers"] == MAX_WATCHERS - 1)
        again = watch_conn(srv.socket)
        conns.append(again)
        assert read_msg(again)[0] == MSG_CHANGES
    finally:
        for s in conns:
            s.close()
    assert wait_until(lambda: srv.status()["watchers"] == 0)
    assert not is_gone(srv.pid)


def test_a_save_runs_only_the_tests_it_affects(pz, watch):
    """watch and run --affected together: a save runs the tests whose module
    the change reaches and those that failed last time, and the run's line
    says which and why."""
    root = pz.project("watch")
    save(root, "other.py", "N = 1\n")
    save(root, "tests/test_other.py",
         "import other\n\n\ndef test_other_a():\n    assert other.N == 1\n\n\n"
         "def test_other_b():\n    assert other.N < 5\n")
    pz.start(root)
    w = watch(root, args=("-q", "-p", "no:randomly"))
    save(root, "other.py", "N = 1  # first save: no record yet, everything runs\n")
    w.wait_out(STATUS_RE)
    assert re.search(r"6 of 6 tests: first run", w.out), w.out
    save(root, "other.py", "N = 2\n")
    w.wait_out(STATUS_RE, count=2)
    assert re.search(r"2 of 6 tests: other\.py changed", w.out), w.out
    assert re.findall(STATUS_RE, w.out)[1][1] == "1", w.out  # test_other_a fails
    save(root, "app.py", "VALUE = 1  # saved\n")
    w.wait_out(STATUS_RE, count=3)
    # test_app's four, and test_other_a again (it failed last time).
    assert re.search(r"5 of 6 tests: app\.py changed", w.out), w.out
    assert w.finish() == 1
