"""`pytest-zygote run --affected`: among the tests ARGS select, only those
that can have changed outcome since each last ran.

The never-miss property is checked at random: a generated project (packages
with cross-module imports, an importlib.import_module of a literal name
called by a test, a data file read at import and one read inside a test,
conftest fixtures at two levels), random edits, and after each edit a cold
plain pytest as the oracle: every test whose outcome differs from the last
oracle must have been selected, and every selected test must have the
oracle's outcome. The other tests pin the summary line and the state's life.
"""

import os
import random
import re
import tempfile
import time

import pytest

A = ["--affected", "--"]
SUMMARY_RE = re.compile(r"^(\d+) of (\d+) tests: (.*)$", re.M)
RESULT_RE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", re.M)


# --- a generated project -----------------------------------------------------

PACKAGES, MODULES = 3, 3
STEPS = 10  # random edits per seed


class Project:
    """A project with packages p0..p2 of modules m0..m2. Each module has a
    constant C and val() = C plus the val() of the modules it imports (only
    earlier ones: no cycles). Test modules assert on val() of one or two
    modules modulo small numbers, so a changed constant flips some outcomes.
    p0/m2 reads data/d0.txt at import; p1/m2 imports p2/m0 by
    importlib.import_module (a literal name) when a test calls it;
    tests/test_data.py reads data/d1.txt inside a test. Fixtures come from
    tests/conftest.py (used by all) and tests/sub/conftest.py."""

    def __init__(self, root, rng):
        self.root = str(root)
        self.rng = rng
        self.mods = ["p%d.m%d" % (p, m) for p in range(PACKAGES) for m in range(MODULES)]
        self.consts = {m: rng.randint(0, 9) for m in self.mods}
        self.deps = {}
        for i, m in enumerate(self.mods):
            earlier = self.mods[:i]
            self.deps[m] = sorted(rng.sample(earlier, min(len(earlier), rng.randint(0, 2))))
        self.extras = {m: 0 for m in self.mods}
        self.fixture = {"tests": 1, "tests/sub": 2}
        self.data = {"d0": 3, "d1": 4}
        self.new_tests = 0
        self.write_all()

    def path(self, rel):
        return os.path.join(self.root, rel)

    def write(self, rel, text):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)

    def module_text(self, m):
        lines = ["import importlib", "import os", ""]
        lines += ["import %s" % d for d in self.deps[m]]
        lines += ["", "C = %d" % self.consts[m]]
        extra = ""
        if m == "p0.m2":
            lines.append("with open(os.path.join(os.path.dirname(__file__), '..', 'data', "
                         "'d0.txt')) as f:\n    D = int(f.read())")
            extra = " + D"
        lines += ["", "", "def val():",
                  "    return C%s%s" % (extra, "".join(" + %s.val()" % d for d in self.deps[m]))]
        if m == "p1.m2":
            lines += ["", "", "def dynamic():",
                      "    return importlib.import_module('p2.m0').val() + C"]
        for i in range(self.extras[m]):
            lines += ["", "", "def extra_%d():" % i, "    return %d" % i]
        return "\n".join(lines) + "\n"

    def test_text(self, i, mods):
        lines = ["import %s" % m for m in mods] + [""]
        for k in range(4):
            expr = " + ".join("%s.val()" % m for m in mods)
            lines += ["", "def test_%d_%d(base):" % (i, k),
                      "    assert (%s + base + %d) %% %d != 0" % (expr, k, 3 + k % 2)]
        return "\n".join(lines) + "\n"

    def write_all(self):
        self.write("pytest.ini", "[pytest]\n")
        for p in range(PACKAGES):
            self.write("p%d/__init__.py" % p, "")
        for m in self.mods:
            self.write(m.replace(".", "/") + ".py", self.module_text(m))
        self.write_data()
        self.write_conftests()
        rng = random.Random(self.rng.random())
        leaf_tests = 0
        for i in range(6):
            mods = sorted(rng.sample(self.mods, rng.randint(1, 2)))
            sub = "sub/" if i % 2 else ""
            self.write("tests/%stest_t%d.py" % (sub, i), self.test_text(i, mods))
            leaf_tests += 1
        self.write("tests/test_dynamic.py",
                   "import p1.m2\n\n\ndef test_dynamic(base):\n"
                   "    assert (p1.m2.dynamic() + base) % 3 != 0\n\n\n"
                   "def test_dynamic_2(base):\n    assert (p1.m2.dynamic() + base) % 4 != 1\n")
        self.write("tests/test_data.py",
                   "import os\n\n\ndef read():\n"
                   "    with open(os.path.join(os.path.dirname(__file__), '..', 'data', "
                   "'d1.txt')) as f:\n        return int(f.read())\n\n\n"
                   + "".join("def test_data_%d():\n    assert (read() + %d) %% 5 != 0\n\n\n"
                             % (k, k) for k in range(4))
                   + "def test_data_base(base):\n    assert (read() + base) % 4 != 0\n\n\n"
                   "def test_import_data():\n    import p0.m2\n    assert p0.m2.D % 4 != 0\n")

    def write_data(self):
        for name, v in self.data.items():
            self.write("data/%s.txt" % name, "%d\n" % v)

    def write_conftests(self):
        self.write("tests/conftest.py", "import pytest\n\n\n@pytest.fixture\ndef base():\n"
                   "    return %d\n" % self.fixture["tests"])
        self.write("tests/sub/conftest.py", "import pytest\n\n\n@pytest.fixture\ndef base():\n"
                   "    return %d\n" % self.fixture["tests/sub"])

    def edit(self):
        """One random edit; returns what it did, in words."""
        rng = self.rng
        kind = rng.choice(["const", "const", "const", "extra", "data", "data", "conftest",
                           "newtest"])
        if kind == "const":
            m = rng.choice(self.mods)
            self.consts[m] = rng.randint(0, 9)
            self.write(m.replace(".", "/") + ".py", self.module_text(m))
            return "%s: C = %d" % (m, self.consts[m])
        if kind == "extra":
            m = rng.choice(self.mods)
            self.extras[m] = max(0, self.extras[m] + rng.choice([-1, 1, 1]))
            self.write(m.replace(".", "/") + ".py", self.module_text(m))
            return "%s: %d extra functions" % (m, self.extras[m])
        if kind == "data":
            name = rng.choice(sorted(self.data))
            self.data[name] = rng.randint(0, 9)
            self.write_data()
            return "data/%s.txt = %d" % (name, self.data[name])
        if kind == "conftest":
            where = rng.choice(sorted(self.fixture))
            self.fixture[where] = rng.randint(0, 5)
            self.write_conftests()
            return "%s/conftest.py: base = %d" % (where, self.fixture[where])
        self.new_tests += 1
        mods = sorted(rng.sample(self.mods, 1))
        i = 100 + self.new_tests
        self.write("tests/test_t%d.py" % i, self.test_text(i, mods))
        return "new tests/test_t%d.py" % i


# --- helpers ---------------------------------------------------------------


def outcomes(out):
    """nodeid -> outcome word, from -rA's short test summary."""
    return {m[2]: m[1] for m in RESULT_RE.finditer(out)}


def summary(r):
    m = SUMMARY_RE.search(r.out)
    assert m, "no --affected summary line in:\n%s\nstderr:\n%s" % (r.out, r.err)
    return int(m[1]), int(m[2]), m[3]


def edited():
    """Let the clock that stamps file times tick past an edit made just now.
    A run that starts within a tick (4 ms) of an edit cannot tell whether it
    read the file before or after it and records the file as changed (its
    tests run again next time too): right, but not what these tests count."""
    time.sleep(0.02)


def oracle(pz, root):
    """A cold full run (no bytecode cache, no plugins: the tests need none)."""
    cache = tempfile.mkdtemp(prefix="pyc-", dir=str(pz.tmp_path))
    r = pz.run_plain(["-rA", "-p", "no:cacheprovider"], cwd=root,
                     env={"PYTHONPYCACHEPREFIX": cache, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert r.rc in (0, 1), r
    return outcomes(r.out)


def affected(pz, root, *args, rc=None):
    r = pz.run_zygote(["--affected", "--", "-rA"] + list(args), cwd=root, dashdash=False)
    if rc is not None:
        assert r.rc == rc, r
    else:
        assert r.rc in (0, 1), r
    return r


# --- never miss, at random ---------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_misses_a_changed_outcome(pz, tmp_path, seed):
    """After each random edit, every test whose outcome a cold full run
    changes was selected, and ran to the cold run's outcome."""
    rng = random.Random(seed)
    root = tmp_path / "proj"
    proj = Project(root, rng)
    # Fresh generations start at most every 30 s: most steps are served by
    # the reload step, some by a fresh zygote (and the machine stays free
    # for the oracle's cold runs).
    pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": "600000"})
    before = oracle(pz, root)
    first = affected(pz, root)
    assert summary(first)[2] == "first run"
    assert outcomes(first.out) == before
    narrowed = []
    for step in range(STEPS):
        what = proj.edit()
        edited()
        r = affected(pz, root)
        now = oracle(pz, root)
        ran = outcomes(r.out)
        changed = {t for t in now if before.get(t) != now[t]}
        missed = changed - set(ran)
        assert not missed, ("seed %d step %d (%s): outcome changed but not selected: %s\n%s"
                            % (seed, step, what, sorted(missed), r.out))
        wrong = {t: (ran[t], now.get(t)) for t in ran if ran[t] != now.get(t)}
        assert not wrong, ("seed %d step %d (%s): selected tests ran to another outcome than "
                           "a cold run: %s\n%s" % (seed, step, what, wrong, r.out))
        sel, total, why = summary(r)
        assert sel == len(ran) and total == len(now), (sel, total, len(ran), len(now), r.out)
        narrowed.append((what, sel, total, why))
        before = now
    print("seed %d: %s" % (seed, "; ".join("%s -> %d of %d (%s)" % n for n in narrowed)))
    # The selection narrows: not every step ran everything.
    assert any(sel < total for _, sel, total, _ in narrowed), narrowed


# --- the summary line and the state ------------------------------------------


def small_project(root):
    files = {
        "pytest.ini": "[pytest]\n",
        "pkg/__init__.py": "",
        "pkg/a.py": "X = 1\n",
        "pkg/b.py": "import os\nY = os.environ.get('AFF_Y', '2')\n",
        "tests/test_a.py": "from pkg import a\n\n\ndef test_a1():\n    assert a.X == 1\n\n\n"
                           "def test_a2():\n    pass\n",
        "tests/test_b.py": "from pkg import b\n\n\ndef test_b():\n    assert b.Y == '2'\n",
        "tests/test_env.py": "import os\n\n\ndef test_not_seen():\n"
                             "    assert 'PYTEST_ZYGOTE_AFFECTED' not in os.environ\n",
    }
    for rel, text in files.items():
        p = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)


def test_summary_line_and_selection(pz, tmp_path):
    root = tmp_path / "small"
    small_project(root)
    pz.start(root)
    r = affected(pz, root, rc=0)
    assert summary(r) == (4, 4, "first run")
    r = affected(pz, root, rc=0)
    assert summary(r) == (0, 4, "nothing changed"), r.out
    assert "4 deselected" in r.out
    (root / "pkg" / "a.py").write_text("X = 2\n")
    edited()
    r = affected(pz, root, rc=1)
    assert summary(r) == (2, 4, "pkg/a.py changed")
    assert set(outcomes(r.out)) == {"tests/test_a.py::test_a1", "tests/test_a.py::test_a2"}
    # The failure runs again though nothing changed; its neighbour does not.
    r = affected(pz, root, rc=1)
    assert summary(r) == (1, 4, "1 failed last time")
    # A variable a module read at import.
    r = affected(pz, root, "--deselect", "tests/test_a.py::test_a1", rc=0)
    assert summary(r) == (0, 3, "nothing changed")
    r = pz.run_zygote(A + ["-rA", "tests/test_b.py"], cwd=root, dashdash=False,
                      env={"AFF_Y": "3"})
    assert r.rc == 1 and summary(r) == (1, 1, "$AFF_Y changed"), r


def test_k_deselected_tests_run_later(pz, tmp_path):
    """A test ARGS left out keeps its record: a change it did not run with
    selects it later, also after a change that selected everything."""
    root = tmp_path / "small"
    small_project(root)
    pz.start(root)
    affected(pz, root, rc=0)
    (root / "pkg" / "a.py").write_text("X = 1  # edited\n")
    edited()
    r = affected(pz, root, "-k", "a1", rc=0)
    assert summary(r) == (1, 1, "pkg/a.py changed")
    r = affected(pz, root, rc=0)
    assert summary(r) == (1, 4, "pkg/a.py changed")
    assert set(outcomes(r.out)) == {"tests/test_a.py::test_a2"}
    (root / "pytest.ini").write_text("[pytest]\n# edited\n")
    edited()
    r = affected(pz, root, "-k", "b", rc=0)
    assert summary(r) == (1, 1, "pytest.ini changed")
    r = affected(pz, root, rc=0)
    assert summary(r) == (3, 4, "pytest.ini changed"), r.out


def test_cache_clear_restart_and_no_cache(pz, tmp_path):
    root = tmp_path / "small"
    small_project(root)
    srv = pz.start(root)
    affected(pz, root, rc=0)
    # The state is in pytest's cache directory: a new server keeps it.
    srv.stop()
    pz.start(root)
    r = affected(pz, root, rc=0)
    assert summary(r) == (0, 4, "nothing changed")
    r = affected(pz, root, "--cache-clear", rc=0)
    assert summary(r) == (4, 4, "first run")
    r = affected(pz, root, "-p", "no:cacheprovider", rc=0)
    assert summary(r) == (4, 4, "no cache (-p no:cacheprovider)")
    r = affected(pz, root, "--tb=line", rc=0)
    assert summary(r) == (0, 4, "nothing changed")
    r = affected(pz, root, "--runxfail", rc=0)
    assert summary(r) == (4, 4, "pytest's options changed")


def test_runtime_reads_and_imports(pz, tmp_path):
    """What a test reads or imports while it runs, and a directory it
    lists, are its module's."""
    root = tmp_path / "rt"
    files = {
        "pytest.ini": "[pytest]\n",
        "pkg/__init__.py": "",
        "pkg/dyn.py": "V = 1\n",
        "data/x.txt": "1\n",
        "tests/test_read.py": "def test_read():\n    assert open('data/x.txt').read() == '1\\n'\n",
        "tests/test_dyn.py": "import importlib\n\n\ndef test_dyn():\n"
                             "    assert importlib.import_module('pkg.dyn').V == 1\n",
        "tests/test_list.py": "import os\n\n\ndef test_list():\n"
                              "    assert len(os.listdir('data')) == 1\n",
        "tests/test_other.py": "def test_other():\n    pass\n",
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    pz.start(root)
    affected(pz, root, rc=0)
    (root / "data" / "x.txt").write_text("2\n")
    edited()
    r = affected(pz, root, rc=1)
    assert summary(r) == (1, 4, "data/x.txt changed"), r.out
    (root / "pkg" / "dyn.py").write_text("V = 2\n")
    edited()
    r = affected(pz, root, rc=1)
    assert set(outcomes(r.out)) == {"tests/test_read.py::test_read", "tests/test_dyn.py::test_dyn"}
    (root / "data" / "y.txt").write_text("new\n")
    edited()
    r = affected(pz, root, rc=1)
    assert "tests/test_list.py::test_list" in outcomes(r.out)
    assert "tests/test_other.py::test_other" not in outcomes(r.out)


def test_xdist_runs_everything(pz, tmp_path):
    """With -n the controller collects nothing to select from: every test
    runs, the line says so, and nothing is recorded."""
    pytest.importorskip("xdist")
    root = tmp_path / "small"
    small_project(root)
    pz.start(root)
    affected(pz, root, rc=0)
    r = affected(pz, root, "-n", "2", rc=0)
    assert "--affected does not select with -n (pytest-xdist): every test runs" in r.out, r.out
    assert len(outcomes(r.out)) == 4, r.out
    r = affected(pz, root, rc=0)
    assert summary(r) == (0, 4, "nothing changed")
