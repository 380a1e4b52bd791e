"""Random edit -> run cycles on one server: zero stale results.

A model of the project (every module's constant, the expectations file the
tests read at run time, the extra test functions of each test file) decides
what every run must report; the files are written from the model. The edits
mix editors' ways of saving, same-size edits pinned to the same whole second
(what bytecode caches cannot tell apart), added, removed and renamed test
functions, several edits before one run, and pauses that let background
generations warm up between, during and after the edits.

The seed is random unless PZ_STRESS_SEED is set; a failure names it.
PZ_STRESS_CYCLES and PZ_STRESS_SETTLE_MS (default 50, the server's settle
time) are for investigating: a settle time of an hour keeps generation 1.
"""

import json
import os
import random
import re
import time

import pz_util

CYCLES = int(os.environ.get("PZ_STRESS_CYCLES", "220"))
MODS = ["m0", "m1", "m2", "m3", "m4", "m5"]
# module -> the module whose VALUE it re-exports as UP (through its imports)
UPSTREAM = {"m1": "m0", "m2": "m0", "m3": "m0", "m5": "m4"}
MOD_SRC = {
    "m0": "VALUE = {v}\n",
    "m1": "from mods.m0 import VALUE as UP\n\nVALUE = {v}\n",
    "m2": "from mods.m1 import UP\n\nVALUE = {v}\n",
    "m3": "from . import m2 as _m2\n\nUP = _m2.UP\nVALUE = {v}\n",
    "m4": "VALUE = {v}\n",
    "m5": "import mods.m4\n\nUP = mods.m4.VALUE\nVALUE = {v}\n",
}
TEST_HEAD = '''import json
import os

from mods import {m} as mod

HERE = os.path.dirname(os.path.abspath(__file__))


def _expected():
    with open(os.path.join(HERE, "..", "expected.json")) as f:
        return json.load(f)


def test_{m}_value():
    assert mod.VALUE == _expected()["{m}"]
'''
TEST_UP = '''

def test_{m}_up():
    assert mod.UP == _expected()["{up}"]
'''
TEST_EXTRA = '''

def test_{m}_extra_{n}():
    pass
'''
ARGS = ["-v", "--tb=line", "-p", "no:cacheprovider"]
RESULT_RE = re.compile(r"^(tests/test_m\d\.py::\S+) (PASSED|FAILED|ERROR)\b", re.M)


class Model:
    def __init__(self, root, rng):
        self.root = root
        self.rng = rng
        self.values = {m: 1000 + i for i, m in enumerate(MODS)}
        self.expected = dict(self.values)
        self.extras = {m: [] for m in MODS}
        self.ns = {}  # path -> the last mtime (ns) this model gave it
        self.history = []

    # -- files --

    def mod_path(self, m):
        return self.root / "mods" / ("%s.py" % m)

    def test_path(self, m):
        return self.root / "tests" / ("test_%s.py" % m)

    def mod_text(self, m):
        return MOD_SRC[m].format(v=self.values[m])

    def test_text(self, m):
        text = TEST_HEAD.format(m=m)
        if m in UPSTREAM:
            text += TEST_UP.format(m=m, up=UPSTREAM[m])
        for n in self.extras[m]:
            text += TEST_EXTRA.format(m=m, n=n)
        return text

    def write_expected(self):
        tmp = self.root / "expected.json.tmp"
        tmp.write_text(json.dumps(self.expected) + "\n")
        os.rename(tmp, self.root / "expected.json")

    def write_all(self):
        (self.root / "mods").mkdir(exist_ok=True)
        (self.root / "tests").mkdir(exist_ok=True)
        (self.root / "mods" / "__init__.py").write_text("")
        for m in MODS:
            self.mod_path(m).write_text(self.mod_text(m))
            self.test_path(m).write_text(self.test_text(m))
        self.write_expected()

    def save(self, path, text, how, same_second):
        """Write text to path the way `how` says, then give it an mtime that
        differs from every earlier one of this file in nanoseconds, within
        the second it had before when same_second is set."""
        old = os.stat(path)
        if how == "in-place":
            with open(path, "w") as f:
                f.write(text)
        elif how == "rename-over":
            tmp = path.with_name("." + path.name + ".tmp")
            tmp.write_text(text)
            os.rename(tmp, path)
        elif how == "delete-recreate":
            os.unlink(path)
            path.write_text(text)
        elif how == "vim":
            backup = path.with_name(path.name + "~")
            os.rename(path, backup)
            path.write_text(text)
            os.unlink(backup)
        else:
            raise AssertionError(how)
        last = self.ns.get(str(path), old.st_mtime_ns)
        if same_second:
            second = old.st_mtime_ns // 1_000_000_000
            ns = second * 1_000_000_000 + self.rng.randrange(1_000_000_000)
            while ns == last or ns == old.st_mtime_ns:
                ns = second * 1_000_000_000 + self.rng.randrange(1_000_000_000)
        else:
            ns = os.stat(path).st_mtime_ns
            if ns <= last:
                ns = last + 1
        os.utime(path, ns=(ns, ns))
        self.ns[str(path)] = ns

    # -- edits --

    def edit(self):
        rng = self.rng
        kind = rng.choices(
            ["value", "value-same-second", "add-test", "remove-test", "rename-test",
             "expectation"],
            weights=[30, 30, 12, 10, 10, 8])[0]
        m = rng.choice(MODS)
        how = rng.choice(["in-place", "in-place", "rename-over", "delete-recreate", "vim"])
        if kind.startswith("value"):
            new = self.values[m]
            while new == self.values[m]:
                new = rng.randrange(1000, 10000)  # four digits: the size stays the same
            self.values[m] = new
            if rng.random() < 0.85:
                self.expected[m] = new
                self.write_expected()
            self.save(self.mod_path(m), self.mod_text(m), how, kind == "value-same-second")
            self.history.append("%s %s=%d (%s, expected %d)"
                                % (kind, m, new, how, self.expected[m]))
        elif kind == "add-test":
            taken = set(self.extras[m])
            n = rng.choice([n for n in range(100, 1000) if n not in taken])
            self.extras[m].append(n)
            self.save(self.test_path(m), self.test_text(m), how, False)
            self.history.append("add test_%s_extra_%d (%s)" % (m, n, how))
        elif kind == "remove-test":
            if not self.extras[m]:
                return self.edit()
            n = self.extras[m].pop(rng.randrange(len(self.extras[m])))
            self.save(self.test_path(m), self.test_text(m), how, False)
            self.history.append("remove test_%s_extra_%d (%s)" % (m, n, how))
        elif kind == "rename-test":
            # three digits to three digits: the same size, pinned to the same second
            if not self.extras[m]:
                return self.edit()
            i = rng.randrange(len(self.extras[m]))
            taken = set(self.extras[m])
            n = rng.choice([n for n in range(100, 1000) if n not in taken])
            old, self.extras[m][i] = self.extras[m][i], n
            self.save(self.test_path(m), self.test_text(m), how, True)
            self.history.append("rename test_%s_extra_%d -> %d (%s, same second)"
                                % (m, old, n, how))
        else:
            # the expectations file only: tests read it at run time
            if self.expected[m] == self.values[m]:
                self.expected[m] = self.values[m] + 1 if self.values[m] < 9999 else 1000
            else:
                self.expected[m] = self.values[m]
            self.write_expected()
            self.history.append("expectation %s=%d (module has %d)"
                                % (m, self.expected[m], self.values[m]))
        return None

    # -- what a run must report --

    def outcome(self):
        want = {}
        for m in MODS:
            f = "tests/test_%s.py::" % m
            want[f + "test_%s_value" % m] = (
                "PASSED" if self.values[m] == self.expected[m] else "FAILED")
            if m in UPSTREAM:
                up = UPSTREAM[m]
                want[f + "test_%s_up" % m] = (
                    "PASSED" if self.values[up] == self.expected[up] else "FAILED")
            for n in self.extras[m]:
                want[f + "test_%s_extra_%d" % (m, n)] = "PASSED"
        return want


def _outcome_of(result):
    return {name: status for name, status in RESULT_RE.findall(result.out)}


def test_random_edits_never_give_stale_results(pz):
    seed = int(os.environ.get("PZ_STRESS_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    root = pz.project("stress")
    model = Model(root, rng)
    model.write_all()  # the sample project, exactly as the model has it
    # A short settle time, so that generations keep warming up in the
    # background between and during the cycles.
    settle = os.environ.get("PZ_STRESS_SETTLE_MS", "50")
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": settle})
    started = time.monotonic()
    for cycle in range(CYCLES):
        for _ in range(1 if rng.random() < 0.75 else rng.randint(2, 4)):
            model.edit()
        r = pz.run_zygote(ARGS, cwd=root)
        want = model.outcome()
        got = _outcome_of(r)
        rc = 0 if all(s == "PASSED" for s in want.values()) else 1
        if got != want or r.rc != rc:
            stale = {k: (want.get(k), got.get(k)) for k in set(want) | set(got)
                     if want.get(k) != got.get(k)}
            raise AssertionError(
                "stale or wrong result in cycle %d (seed %d, PZ_STRESS_SEED=%d reproduces)\n"
                "expected rc %d, got %d\ndiffering tests (expected, got): %r\n"
                "last edits:\n  %s\nstatus: %r\nstdout:\n%s\nstderr:\n%s"
                % (cycle, seed, seed, rc, r.rc, stale, "\n  ".join(model.history[-8:]),
                   srv.status(), r.out, r.err))
        model.history.append("-- run %d ok" % cycle)
        # Pauses of random length (not for correctness): some cycles run
        # while a generation warms up, some after it took over.
        if rng.random() < 0.15:
            time.sleep(rng.choice([0.05, 0.2, 0.6]))
    elapsed = time.monotonic() - started

    st = srv.status()
    assert st["pid"] == srv.pid and pz_util.is_alive(srv.pid, srv.starttime), st
    assert st["runs"] >= CYCLES, st
    # After the last edit has settled, the current generation serves it.
    assert pz_util.wait_until(
        lambda: (lambda s: s["warming"] == 0 and s["dirty_count"] == 0
                 and s["state"] == "ready")(srv.status()), timeout=60), srv.status()
    r = pz.run_zygote(ARGS, cwd=root)
    assert _outcome_of(r) == model.outcome(), (seed, r)
    st = srv.wait_idle()
    assert st["refreshes"] >= 1, st
    # old generations drain and exit
    assert pz_util.wait_until(lambda: len(srv.zygote_pids()) == 1, timeout=60), (
        srv.zygote_pids(), srv.status())
    print("stress: seed %d, %d cycles in %.1f s, %d generations, %d refreshes"
          % (seed, CYCLES, elapsed, st["generation"], st["refreshes"]))
