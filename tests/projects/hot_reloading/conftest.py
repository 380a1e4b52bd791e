"""Written for pytest-hot-reloading; must run unchanged under pytest-zygote.
Its workaround appends "WORD PID" to workaround.log when it runs."""

import os

import mylib
from pytest_hot_reloading.workaround import register_workaround

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workaround.log")


def log(word):
    with open(LOG, "a") as f:
        f.write("%s %d\n" % (word, os.getpid()))


@register_workaround("mylib")
def reset_mylib_registry():
    log("workaround")
    mylib.registry.clear()
    yield
    log("workaround-after")
