"""Module-level state that the tests mutate; every run must start pristine."""
import atexit
import os

COUNTER = 0
REGISTRY = []


def _atexit_probe(registered_in):
    # One line per call: "<pid that registered> <pid that ran it>". A line
    # with two different pids is a zygote handler running in a test child.
    path = os.environ.get("PZ_ATEXIT_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%d %d\n" % (registered_in, os.getpid()))


# Registered at import: in a zygote this happens at warm-up.
atexit.register(_atexit_probe, os.getpid())
