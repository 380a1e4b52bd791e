"""pytest plugin used by bench/run.py (`-p pz_bench_probe`, with bench/probe on
PYTHONPATH) in its measurement runs only, never in the timed ones.

It writes one JSON object to the file named by $PZ_BENCH_PROBE_OUT when the
session ends:
    tests        items that ran
    runtest_s    the sum of pytest_runtest_protocol durations (setup, call,
                 teardown and their reports): the project's *test time*
    collect_s    pytest_collection duration
    cpu_s        user + system CPU time of this process so far (in a zygote
                 child: since the fork, including what a spare child did
                 before the request came), minflt its minor page faults
    smaps        /proc/self/smaps_rollup in kB (Rss, Pss, Private_Dirty, ...)
                 read at pytest_unconfigure: in a pytest-zygote run, the memory
                 the test child made its own
With $PZ_BENCH_GC_COLLECT=1 the first test's call phase also runs
gc.collect(), as a test calling it would.
"""

import gc
import json
import os
import resource
import time

import pytest

_state = {"tests": 0, "runtest_s": 0.0, "collect_s": 0.0, "gc_collect": False}
_gc_done = []


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session):
    t0 = time.perf_counter()
    yield
    _state["collect_s"] += time.perf_counter() - t0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t0 = time.perf_counter()
    yield
    _state["runtest_s"] += time.perf_counter() - t0
    _state["tests"] += 1


def pytest_runtest_call(item):
    if os.environ.get("PZ_BENCH_GC_COLLECT") == "1" and not _gc_done:
        _gc_done.append(gc.collect())
        _state["gc_collect"] = True


def _smaps():
    out = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError as e:
        out["error"] = str(e)
    return out


def pytest_unconfigure(config):
    path = os.environ.get("PZ_BENCH_PROBE_OUT")
    if not path:
        return
    r = resource.getrusage(resource.RUSAGE_SELF)
    _state["cpu_s"] = r.ru_utime + r.ru_stime
    _state["minflt"] = r.ru_minflt
    _state["smaps"] = _smaps()
    _state["pid"] = os.getpid()
    with open(path, "w") as f:
        json.dump(_state, f)
