"""Workarounds that write "WORD PID" to workaround.log (next to this file)
when they run, and hooks that mark the end of the session in the same log.
The pid tells a run's lines from those of warm-ups and practice runs."""

import json  # noqa: F401 - the library the first workarounds are for
import os

import fakelib  # noqa: F401
import fakelib2  # noqa: F401
import fakelib3  # noqa: F401

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workaround.log")


def log(word):
    with open(LOG, "a") as f:
        f.write("%s %d\n" % (word, os.getpid()))


try:
    # Importable inside the zygote and its children only.
    from pytest_zygote.workaround import register_workaround
except ImportError:
    register_workaround = None

if register_workaround is not None:

    @register_workaround("json")
    def json_around_the_session():
        log("json-before")
        yield
        log("json-after")

    @register_workaround("json")
    def json_once():
        log("json-plain")

    @register_workaround("fakelib")
    def fakelib_workaround():
        log("fakelib")

    @register_workaround("fakelib2")
    def fakelib2_workaround():
        log("fakelib2")

    @register_workaround("fakelib3")
    def fakelib3_workaround():
        log("fakelib3")

    @register_workaround("pz_library_nobody_imports")
    def missing_workaround():
        log("not-imported")


def pytest_sessionfinish(session):
    log("sessionfinish")


def pytest_unconfigure(config):
    log("unconfigure")
