"""The project pytest-zygote watch is tested on (tests/e2e/test_watch.py)."""
import os
import sys
import time

import app

HERE = os.path.dirname(os.path.abspath(__file__))
SLOW = os.path.join(HERE, "..", "slow.flag")


def test_value():
    assert app.VALUE == 1


def test_watch_variables_are_not_the_tests():
    assert "PYTEST_ZYGOTE_RESULT_FILE" not in os.environ


def test_terminal_is_in_its_own_mode_during_a_run():
    if sys.stdin.isatty():
        import termios

        lflag = termios.tcgetattr(0)[3]
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
