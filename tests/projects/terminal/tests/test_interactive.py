"""Tests driven through a pseudo-terminal by tests/e2e/test_terminal.py.
Most are selected by node id and some need -s."""
import os
import shutil
import signal
import sys
import threading
import time


def test_isatty():
    # Run with -s: the test's stdio are the terminal itself.
    assert sys.stdin.isatty() and sys.stdout.isatty() and sys.stderr.isatty()
    assert os.isatty(0) and os.isatty(1) and os.isatty(2)
    print("TTYNAME %s" % os.ttyname(1))
    size = shutil.get_terminal_size()
    print("SIZE %dx%d" % (size.columns, size.lines))


def test_input():
    answer = input("PZ-PROMPT> ")
    print("GOT %r" % answer)
    assert answer == "hello zygote"


def test_sleep():
    # Say so from another thread once this one is inside time.sleep, so that
    # Ctrl-C always interrupts the same line.
    threading.Timer(0.5, print, ("SLEEPING",), {"flush": True}).start()
    time.sleep(60)


def test_winch():
    got = []

    def on_winch(signum, frame):
        size = os.get_terminal_size(1)
        got.append((size.columns, size.lines))

    signal.signal(signal.SIGWINCH, on_winch)
    print("WAITING-FOR-WINCH", flush=True)
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got, "no SIGWINCH within 30 s"
    print("WINCH %dx%d" % got[0], flush=True)


def test_breakpoint():
    value = 41
    breakpoint()
    value += 1
    assert value == 42


def test_fails_for_pdb():
    local_marker = "pz-local"
    assert local_marker == "something else"
