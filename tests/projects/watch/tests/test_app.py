"""The project pytest-zygote watch is tested on (tests/e2e/test_watch.py)."""
import os
import time

import app

HERE = os.path.dirname(os.path.abspath(__file__))
SLOW = os.path.join(HERE, "..", "slow.flag")


def test_value():
    assert app.VALUE == 1


def test_watch_variables_are_not_the_tests():
    assert "PYTEST_ZYGOTE_RESULT_FILE" not in os.environ


def test_terminal_is_in_its_own_mode_during_a_run():
    # The run's terminal, if it has one: fd 0 is /dev/null while pytest
    # captures, but pytest keeps a copy of the original.
    ttys = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("/dev/pts/"):
            ttys.add(target)
    for tty in ttys:
        import termios

        fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
        try:
            lflag = termios.tcgetattr(fd)[3]
        finally:
            os.close(fd)
        assert lflag & termios.ICANON and lflag & termios.ECHO


def test_slow_when_flagged():
    # Runs until interrupted while slow.flag exists (a long run to cancel);
    # each start adds a line to slow.flag.started.
    if os.path.exists(SLOW):
        with open(SLOW + ".started", "a") as f:
            f.write("started\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
