"""Changes to the project between runs, as editors, git and people make them,
and what the server does with them: the reverse import closure that a child
re-imports, background generations that absorb edits, runs that must wait for
a fresh zygote (configuration, code outside the project), workarounds, and
the polling watcher.

Every edit is followed at once by a run that must see it. Where the outcome
is compared with plain pytest, plain pytest runs cold: with its bytecode
cache redirected to an empty directory (PYTHONPYCACHEPREFIX), so that the
.pyc files a zygote child wrote cannot make both agree on stale code.
"""

import os
import signal
import tempfile
import time

import pytest

import pz_util
from pz_util import normalise, wait_until

Q = ["-q", "-p", "no:cacheprovider"]
V = ["-v", "-p", "no:cacheprovider"]
WAIT = 60  # bound on waiting for the server to reach a state (not a timing assertion)


# --- helpers ------------------------------------------------------------------


def plain_cold(pz, root, args, env=None):
    """Plain pytest with a private, empty bytecode cache."""
    cache = tempfile.mkdtemp(prefix="pyc-", dir=str(pz.tmp_path))
    e = dict(env or {})
    e["PYTHONPYCACHEPREFIX"] = cache
    return pz.run_plain(args, cwd=root, env=e)


def check(pz, root, args=Q, rc=None, has=(), lacks=(), env=None):
    """Run through the zygote at once, then plain pytest; both must agree
    (exit code and normalised stdout), and match what the caller expects."""
    zyg = pz.run_zygote(args, cwd=root, env=env)
    plain = plain_cold(pz, root, args, env=env)
    assert ((zyg.rc, normalise(zyg.out), normalise(zyg.err))
            == (plain.rc, normalise(plain.out), normalise(plain.err))), (
        "zygote and plain pytest differ for %r\n--- zygote (rc %d):\n%s\nstderr:\n%s\n"
        "--- plain (rc %d):\n%s\nstderr:\n%s"
        % (args, zyg.rc, zyg.out, zyg.err, plain.rc, plain.out, plain.err))
    if rc is not None:
        assert zyg.rc == rc, zyg
    for text in has:
        assert text in zyg.out + zyg.err, (text, zyg)
    for text in lacks:
        assert text not in zyg.out + zyg.err, (text, zyg)
    return zyg


def zrun(pz, root, args=Q, rc=None, has=(), env=None, what=""):
    r = pz.run_zygote(args, cwd=root, env=env)
    if rc is not None:
        assert r.rc == rc, (what, r)
    for text in has:
        assert text in r.out, (what, text, r)
    return r


def wait_status(srv, pred, what, timeout=WAIT):
    last = {}

    def ok():
        last["st"] = srv.status()
        return pred(last["st"])

    assert wait_until(ok, timeout=timeout, interval=0.05), (
        "status never showed %s; last: %r" % (what, last.get("st")))
    return last["st"]


def wait_settled(srv, generation=None):
    """A generation (at least `generation`) is current, none warms, no change pending."""

    def pred(st):
        return (st["state"] == "ready" and st["warming"] == 0 and st["dirty_count"] == 0
                and st["preparing"] == 0 and (generation is None or st["generation"] >= generation))

    return wait_status(srv, pred, "a settled generation >= %r" % (generation,))


def save_inplace(path, text):
    with open(path, "w") as f:
        f.write(text)


def save_rename(path, text):
    tmp = path.with_name("." + path.name + ".new")
    tmp.write_text(text)
    os.rename(tmp, path)


def save_recreate(path, text):
    os.unlink(path)
    path.write_text(text)


def save_vim(path, text):
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    path.write_text(text)
    os.unlink(backup)


SAVERS = {"in-place": save_inplace, "rename-over": save_rename,
          "delete-recreate": save_recreate, "vim": save_vim}


def pin_mtime(path, second, fraction_ns):
    ns = second * 1_000_000_000 + fraction_ns
    os.utime(path, ns=(ns, ns))


def git(pz, root, *args):
    r = pz.call(["git", "-c", "user.email=a@b", "-c", "user.name=t",
                 "-c", "init.defaultBranch=main", *args], cwd=root)
    assert r.rc == 0, r
    return r


def lines(path):
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.fixture
def ch(pz):
    root = pz.project("changes")
    return root, pz.start(root)


# --- 1. every way an editor saves ----------------------------------------------


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_editor_saves(pz, ch, saver):
    root, srv = ch
    save = SAVERS[saver]
    check(pz, root, rc=0, has=["5 passed"])
    save(root / "pkg" / "a.py", "VALUE = 2\n")  # test_a, test_b (via b), test_d_a (via d)
    check(pz, root, rc=1, has=["3 failed, 2 passed", "assert 2 == 1"])
    save(root / "tests" / "test_c.py", 'def test_c(cname):\n    assert cname == "zz"\n')
    check(pz, root, rc=1, has=["4 failed, 1 passed", "assert 'c' == 'zz'"])
    save(root / "pkg" / "c.py", 'NAME = "zz"\n')  # imported by the conftest
    check(pz, root, rc=1, has=["3 failed, 2 passed"])
    save(root / "pkg" / "a.py", "VALUE = 3\n")
    check(pz, root, rc=1, has=["3 failed, 2 passed", "assert 3 == 1"])
    save(root / "pkg" / "a.py", "VALUE = 1\n")
    check(pz, root, rc=0, has=["5 passed"])
    assert srv.status()["pid"] == srv.pid


def test_git_checkout_of_a_branch_touching_many_files(pz):
    root = pz.project("changes")
    (root / ".gitignore").write_text("__pycache__/\n")
    git(pz, root, "init", "-q")
    git(pz, root, "add", "-A")
    git(pz, root, "commit", "-q", "-m", "main")
    git(pz, root, "checkout", "-q", "-b", "other")
    (root / "pkg" / "a.py").write_text("VALUE = 5\n")
    (root / "pkg" / "c.py").write_text('NAME = "o"\n')
    (root / "pkg" / "e.py").write_text("from pkg.b import get\n\nE = get() * 10\n")
    (root / "tests" / "test_a.py").write_text(
        "from pkg import a, b\n\n\ndef test_a():\n    assert a.VALUE == 5\n\n\n"
        "def test_b():\n    assert b.get() == 5\n")
    (root / "tests" / "test_c.py").write_text(
        'def test_c(cname):\n    assert cname == "o"\n')
    (root / "tests" / "test_d.py").unlink()
    (root / "tests" / "test_e.py").write_text(
        "from pkg.e import E\n\n\ndef test_only_on_other():\n    assert E == 50\n")
    git(pz, root, "add", "-A")
    git(pz, root, "commit", "-q", "-m", "other")
    git(pz, root, "checkout", "-q", "main")

    pz.start(root)
    check(pz, root, V, rc=0, has=["test_d.py::test_d_a PASSED", "5 passed"],
          lacks=["test_only_on_other"])
    git(pz, root, "checkout", "-q", "other")
    check(pz, root, V, rc=0, has=["test_e.py::test_only_on_other PASSED", "4 passed"],
          lacks=["test_d.py"])
    git(pz, root, "checkout", "-q", "main")
    check(pz, root, V, rc=0, has=["test_d.py::test_d_a PASSED", "5 passed"],
          lacks=["test_only_on_other"])
    git(pz, root, "checkout", "-q", "other")
    check(pz, root, V, rc=0, has=["test_e.py::test_only_on_other PASSED", "4 passed"])


def test_git_stash_and_pop(pz):
    root = pz.project("changes")
    (root / ".gitignore").write_text("__pycache__/\n")
    git(pz, root, "init", "-q")
    git(pz, root, "add", "-A")
    git(pz, root, "commit", "-q", "-m", "main")
    pz.start(root)
    check(pz, root, rc=0, has=["5 passed"])
    (root / "pkg" / "a.py").write_text("VALUE = 9\n")
    (root / "tests" / "test_c.py").write_text('def test_c(cname):\n    assert cname == "s"\n')
    check(pz, root, rc=1, has=["4 failed, 1 passed", "assert 9 == 1"])
    git(pz, root, "stash", "-q")
    check(pz, root, rc=0, has=["5 passed"])
    git(pz, root, "stash", "pop", "-q")
    check(pz, root, rc=1, has=["4 failed, 1 passed", "assert 9 == 1"])
    git(pz, root, "stash", "-q")
    check(pz, root, rc=0, has=["5 passed"])


def test_new_test_file_is_collected(pz, ch):
    root, _ = ch
    check(pz, root, rc=0, has=["5 passed"])
    (root / "pkg" / "fresh.py").write_text("FRESH = 'yes'\n")  # never imported at warm-up
    (root / "tests" / "test_new.py").write_text(
        "from pkg.fresh import FRESH\n\n\ndef test_brand_new():\n    assert FRESH == 'yes'\n\n\n"
        "def test_brand_failing():\n    assert FRESH == 'no'\n")
    check(pz, root, Q + ["-k", "brand_new"], rc=0, has=["1 passed, 6 deselected"])
    check(pz, root, Q + ["tests/test_new.py::test_brand_new"], rc=0, has=["1 passed"])
    check(pz, root, Q + ["tests/test_new.py::test_brand_failing"], rc=1, has=["1 failed"])
    check(pz, root, Q, rc=1, has=["1 failed, 6 passed"])


def test_removed_test_function(pz, ch):
    root, _ = ch
    check(pz, root, V, rc=0, has=["test_a.py::test_b PASSED"])
    (root / "tests" / "test_a.py").write_text(
        "from pkg import a, b\n\n\ndef test_a():\n    assert a.VALUE == 1\n")
    check(pz, root, V, rc=0, has=["4 passed"], lacks=["test_b"])
    r = check(pz, root, Q + ["tests/test_a.py::test_b"], rc=4)
    assert "not found" in r.out + r.err, r


def test_deleted_module(pz, ch):
    root, srv = ch
    check(pz, root, rc=0)
    (root / "pkg" / "b.py").unlink()
    check(pz, root, rc=2, has=["ImportError", "cannot import name 'b'"])
    (root / "pkg" / "util" / "d.py").unlink()
    check(pz, root, rc=2, has=["cannot import name 'b' from 'pkg'",
                               "cannot import name 'd' from 'pkg.util'"])
    (root / "pkg" / "b.py").write_text(
        "from pkg.a import VALUE\n\n\ndef get():\n    return VALUE\n")
    (root / "pkg" / "util" / "d.py").write_text('from ..a import VALUE as A\n\nWORD = "d"\n')
    check(pz, root, rc=0, has=["5 passed"])
    assert srv.status()["pid"] == srv.pid


def test_renamed_module(pz, ch):
    root, _ = ch
    check(pz, root, rc=0)
    os.rename(root / "pkg" / "c.py", root / "pkg" / "renamed_c.py")
    # tests/conftest.py still imports pkg.c
    check(pz, root, rc=4, has=["ImportError while loading conftest",
                               "cannot import name 'c' from 'pkg'"])
    conftest = root / "tests" / "conftest.py"
    conftest.write_text(conftest.read_text().replace(
        "from pkg import c\n", "from pkg import renamed_c as c\n"))
    check(pz, root, rc=0, has=["5 passed"])
    (root / "pkg" / "renamed_c.py").write_text('NAME = "r"\n')
    check(pz, root, rc=1, has=["1 failed, 4 passed", "assert 'r' == 'c'"])


def test_same_second_same_size_edits(pz):
    """CPython's and pytest's bytecode caches validate by whole-second mtime
    and size: every edit below has both of them equal to the previous one."""
    root = pz.project("changes")
    second = int(time.time()) - 60
    files = [root / "pkg" / "a.py", root / "pkg" / "c.py", root / "tests" / "test_c.py"]
    for f in files:
        pin_mtime(f, second, 100_000_000)
    pz.start(root)
    check(pz, root, rc=0, has=["5 passed"])
    for i, value in enumerate((2, 3, 4, 1)):
        (root / "pkg" / "a.py").write_text("VALUE = %d\n" % value)
        pin_mtime(root / "pkg" / "a.py", second, 200_000_000 + i)
        if value == 1:
            check(pz, root, rc=0, has=["5 passed"])
        else:
            check(pz, root, rc=1, has=["3 failed, 2 passed", "assert %d == 1" % value])
    for i, name in enumerate("xyzc"):
        (root / "pkg" / "c.py").write_text('NAME = "%s"\n' % name)  # imported by the conftest
        pin_mtime(root / "pkg" / "c.py", second, 300_000_000 + i)
        (root / "tests" / "test_c.py").write_text(
            'def test_c(cname):\n    assert cname == "%s"\n' % "xyzc"[(i + 1) % 4])
        pin_mtime(root / "tests" / "test_c.py", second, 400_000_000 + i)
        check(pz, root, rc=1, has=["1 failed, 4 passed",
                                   "assert '%s' == '%s'" % (name, "xyzc"[(i + 1) % 4])])


def test_same_second_same_size_edit_absorbed_by_a_new_generation(pz):
    """Edit, run (the child writes the new .pyc), edit again in the same second
    with the same size, and let a new generation warm up before the next run:
    that generation must not import the previous edit's bytecode."""
    root = pz.project("changes")
    a = root / "pkg" / "a.py"
    test_c = root / "tests" / "test_c.py"
    second = int(time.time()) - 60
    pin_mtime(a, second, 100_000_000)
    pin_mtime(test_c, second, 100_000_000)
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": "1500"})
    zrun(pz, root, rc=0, has=["5 passed"])
    a.write_text("VALUE = 2\n")
    pin_mtime(a, second, 200_000_000)
    test_c.write_text('def test_c(cname):\n    assert cname == "x"\n')
    pin_mtime(test_c, second, 200_000_000)
    zrun(pz, root, rc=1, has=["4 failed, 1 passed", "assert 2 == 1", "assert 'c' == 'x'"])
    a.write_text("VALUE = 3\n")
    pin_mtime(a, second, 300_000_000)
    test_c.write_text('def test_c(cname):\n    assert cname == "c"\n')
    pin_mtime(test_c, second, 300_000_000)
    wait_settled(srv, generation=2)
    check(pz, root, rc=1, has=["3 failed, 2 passed", "assert 3 == 1"])


def test_syntax_error_in_a_module_imported_at_warm_up(pz, ch):
    root, srv = ch
    check(pz, root, rc=0)
    a = root / "pkg" / "a.py"
    a.write_text("VALUE = (\n")
    check(pz, root, rc=2, has=["SyntaxError"])
    assert srv.status()["state"] == "ready"
    # the next generation warms up with the error and serves the same output
    wait_settled(srv, generation=2)
    check(pz, root, rc=2, has=["SyntaxError"])
    check(pz, root, ["-q", "-p", "no:cacheprovider", "tests/test_c.py"], rc=0)
    a.write_text("VALUE = 1\n")
    check(pz, root, rc=0, has=["5 passed"])
    st = wait_settled(srv, generation=3)
    check(pz, root, rc=0, has=["5 passed"])
    assert st["pid"] == srv.pid and pz_util.is_alive(srv.pid, srv.starttime)


def test_conftest_imports_an_edited_module(pz, ch):
    root, srv = ch
    check(pz, root, ["-q", "-p", "no:cacheprovider", "tests/test_c.py"], rc=0)
    (root / "pkg" / "c.py").write_text('NAME = "edited"\n')
    check(pz, root, ["-q", "-p", "no:cacheprovider", "tests/test_c.py"], rc=1,
          has=["assert 'edited' == 'c'"])
    wait_settled(srv, generation=2)
    check(pz, root, ["-q", "-p", "no:cacheprovider", "tests/test_c.py"], rc=1,
          has=["assert 'edited' == 'c'"])
    (root / "pkg" / "c.py").write_text('NAME = "c"\n')
    check(pz, root, ["-q", "-p", "no:cacheprovider", "tests/test_c.py"], rc=0)


# --- 2. the reverse import closure --------------------------------------------

LEAF_CLOSURE = {"pkg.leaf", "pkg.mid", "pkg.top", "pkg.rel", "pkg.lazy", "tests.test_leaf",
                "tests.test_mid", "tests.test_top", "tests.test_rel", "tests.test_lazy"}
OTHER_CLOSURE = {"pkg.other", "tests.conftest", "tests.test_other"}
ALL_GRAPH = LEAF_CLOSURE | OTHER_CLOSURE | {"pkg"}
# Test modules and conftests: every run executes them, as a cold run does.
TEST_SIDE = {"tests.conftest", "tests.test_leaf", "tests.test_mid", "tests.test_top",
             "tests.test_rel", "tests.test_lazy", "tests.test_other"}


def _graph_run(pz, root, x, y, passed=6):
    """Run; return the modules the run's own process executed (import.log
    lines "NAME PID" with the pid of the "RUN PID" lines its tests wrote)."""
    log = root / "import.log"
    (root / "expected.txt").write_text("X=%d\nY=%d\n" % (x, y))
    log.write_text("")
    r = pz.run_zygote(Q, cwd=root)
    assert r.rc == 0 and "%d passed" % passed in r.out, r
    entries = [line.split() for line in lines(log)]
    pids = {pid for name, pid in entries if name == "RUN"}
    assert len(pids) == 1, entries
    return sorted(name for name, pid in entries if pid in pids and name != "RUN")


def _closure_msg(got, want):
    return "re-imported %r; missing %r; outside the closure %r" % (
        got, sorted(want - set(got)), sorted(set(got) - want))


def test_only_the_reverse_import_closure_is_reimported(pz):
    root = pz.project("graph")
    srv = pz.start(root)
    entries = [line.split() for line in lines(root / "import.log")]
    zygote = {str(p) for p in srv.zygote_pids()}
    # The zygote executed each project module once and no test module; the
    # learning run it forked executed everything.
    warm = [name for name, pid in entries if pid in zygote]
    assert sorted(warm) == sorted(ALL_GRAPH - TEST_SIDE), entries
    learning = {}
    for name, pid in entries:
        learning.setdefault(pid, set()).add(name)
    assert ALL_GRAPH in learning.values(), entries
    assert _graph_run(pz, root, 1, 1) == sorted(TEST_SIDE)

    leaf = root / "pkg" / "leaf.py"
    leaf.write_text(leaf.read_text().replace("X = 1", "X = 2"))
    got = _graph_run(pz, root, 2, 1)
    assert got == sorted(LEAF_CLOSURE | TEST_SIDE), _closure_msg(got, LEAF_CLOSURE | TEST_SIDE)
    # until a new generation takes over, every run re-imports the same closure
    st = srv.status()
    if st["generation"] == 1 and st["warming"] == 0:
        got = _graph_run(pz, root, 2, 1)
        assert got == sorted(LEAF_CLOSURE | TEST_SIDE), _closure_msg(got, LEAF_CLOSURE | TEST_SIDE)

    # a new generation absorbs the edit; a run then executes no project module
    wait_settled(srv, generation=2)
    assert _graph_run(pz, root, 2, 1) == sorted(TEST_SIDE)

    other = root / "pkg" / "other.py"
    other.write_text(other.read_text().replace("Y = 1", "Y = 7"))
    got = _graph_run(pz, root, 2, 7)
    assert got == sorted(OTHER_CLOSURE | TEST_SIDE), _closure_msg(got, OTHER_CLOSURE | TEST_SIDE)

    # both at once, relative to generation 2's snapshot
    leaf.write_text(leaf.read_text().replace("X = 2", "X = 3"))
    got = _graph_run(pz, root, 3, 7)
    st = srv.status()
    if st["generation"] == 2:
        want = LEAF_CLOSURE | OTHER_CLOSURE | TEST_SIDE
        assert got == sorted(want), _closure_msg(got, want)


def test_editing_a_test_module_reimports_no_project_module(pz):
    root = pz.project("graph")
    pz.start(root)
    t = root / "tests" / "test_top.py"
    t.write_text(t.read_text() + "\n\ndef test_more():\n    pass\n")
    assert _graph_run(pz, root, 1, 1, passed=7) == sorted(TEST_SIDE)


# --- 3. generations -----------------------------------------------------------


def test_a_new_generation_absorbs_an_edit(pz):
    root = pz.project("changes")
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": "2000"})
    st = srv.status()
    assert (st["generation"], st["refreshes"], st["warming"], st["dirty"]) == (1, 0, 0, [])
    old = st["zygote_pid"]
    old_start = pz_util.proc_stat(old)[3]
    (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    (root / "pkg" / "c.py").write_text('NAME = "n"\n')
    st = srv.status()  # well inside the settle time
    assert st["generation"] == 1, st
    assert sorted(st["dirty"]) == sorted([str(root / "pkg" / "a.py"),
                                          str(root / "pkg" / "c.py")]), st
    assert st["dirty_count"] >= 2, st
    check(pz, root, rc=1, has=["4 failed, 1 passed"])
    st = wait_settled(srv, generation=2)
    assert (st["generation"], st["refreshes"], st["dirty"], st["dirty_count"]) == (2, 1, [], 0)
    assert st["zygote_pid"] != old
    srv.wait_idle()
    assert wait_until(lambda: pz_util.is_gone(old, old_start), timeout=WAIT), (
        "the old generation's zygote %d did not exit" % old)
    check(pz, root, rc=1, has=["4 failed, 1 passed"])
    assert srv.status()["generation"] == 2


@pytest.fixture
def gated(pz):
    """The warmgate project, started with a warm-up gate: remove `gate` to hold
    the next warm-up after it imported pkg.val, touch it to let it go. Each
    warm-up appends a line to `marker`."""
    root = pz.project("warmgate")
    marker = pz.tmp_path / "warm.marker"
    gate = pz.tmp_path / "warm.gate"
    gate.touch()

    def start(**extra):
        env = {"WARMGATE_MARKER": str(marker), "WARMGATE_GATE": str(gate)}
        env.update(extra)
        srv = pz.start(root, env=env)
        assert len(lines(marker)) == 1
        return srv

    yield root, marker, gate, start
    gate.touch()  # never leave a warm-up waiting at teardown


def _val(root, value):
    (root / "pkg" / "val.py").write_text("VALUE = %d\n" % value)
    (root / "expected.txt").write_text("%d\n" % value)


def test_runs_during_a_warm_up_are_served_and_never_stale(pz, gated):
    root, marker, gate, start = gated
    srv = start(PYTEST_ZYGOTE_SETTLE_MS="0")
    zrun(pz, root, rc=0, has=["1 passed"], what="before any edit")
    old = srv.status()["zygote_pid"]
    old_start = pz_util.proc_stat(old)[3]

    gate.unlink()
    _val(root, 2)
    zrun(pz, root, rc=0, has=["1 passed"], what="VALUE=2, generation 1")
    # generation 2 starts, imports pkg.val (VALUE = 2) and waits at the gate
    assert wait_until(lambda: len(lines(marker)) == 2, timeout=WAIT), lines(marker)
    st = srv.status()
    assert (st["generation"], st["warming"], st["state"]) == (1, 2, "ready"), st
    # runs while it warms are served by generation 1 (they would hang otherwise)
    for _ in range(3):
        zrun(pz, root, rc=0, has=["1 passed"], what="VALUE=2, generation 2 warming")
    # an edit after generation 2 imported the module
    _val(root, 3)
    zrun(pz, root, rc=0, has=["1 passed"], what="VALUE=3, generation 1")
    st = srv.status()
    assert (st["generation"], st["warming"]) == (1, 2), st

    gate.touch()
    wait_status(srv, lambda s: s["generation"] >= 2, "generation 2")
    # generation 2 imported VALUE = 2: its runs must still see VALUE = 3
    zrun(pz, root, rc=0, has=["1 passed"],
         what="VALUE=3, first run of generation 2, which imported VALUE=2 while warming")
    wait_settled(srv)
    zrun(pz, root, rc=0, has=["1 passed"], what="VALUE=3, settled")
    srv.wait_idle()
    assert wait_until(lambda: pz_util.is_gone(old, old_start), timeout=WAIT), (
        "generation 1's zygote %d did not exit" % old)
    assert len(srv.zygote_pids()) == 1, srv.zygote_pids()


# --- 4. changes that need a fresh zygote --------------------------------------

INI = ("[pytest]\ntestpaths = tests\n", "[pytest]\ntestpaths = tests\naddopts = -v\n")
CONFIGS = {
    "pytest.ini": INI,
    ".pytest.ini": INI,
    "tox.ini": INI,
    "setup.cfg": ("[tool:pytest]\ntestpaths = tests\n",
                  "[tool:pytest]\ntestpaths = tests\naddopts = -v\n"),
    "pyproject.toml": ('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
                       '[tool.pytest.ini_options]\ntestpaths = ["tests"]\naddopts = "-v"\n'),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_change_waits_for_a_fresh_zygote(pz, name):
    root = pz.project("changes")
    before, after = CONFIGS[name]
    (root / "pytest.ini").unlink()
    (root / name).write_text(before)
    srv = pz.start(root)
    check(pz, root, ["-p", "no:cacheprovider"], rc=0, lacks=["PASSED"])
    (root / name).write_text(after)
    r = pz.run_zygote(["-p", "no:cacheprovider"], cwd=root)
    assert "waiting for a fresh zygote" in r.err, r
    assert r.rc == 0 and "tests/test_a.py::test_a PASSED" in r.out, r
    check(pz, root, ["-p", "no:cacheprovider"], rc=0, has=["tests/test_c.py::test_c PASSED"])
    st = srv.status()
    assert st["generation"] >= 2 and st["state"] == "ready" and st["fresh_reason"] == "", st


def test_config_change_parks_runs_until_the_fresh_zygote_is_warm(pz, gated):
    root, marker, gate, start = gated
    srv = start()
    gate.unlink()
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = -v\n")
    st = wait_status(srv, lambda s: s["state"] == "refreshing", "state refreshing")
    assert "pytest.ini" in st["fresh_reason"], st
    run = pz_util.BgRun(pz, root, ["-p", "no:cacheprovider"])
    try:
        assert run.wait_stderr("waiting for a fresh zygote"), run.err
        assert "pytest.ini" in run.err.decode(), run.err
        assert run.proc.poll() is None, "the run did not wait for the fresh generation"
        assert srv.status()["state"] == "refreshing"
        gate.touch()
        rc, out, err = run.finish()
    finally:
        run.kill()
    assert rc == 0 and "tests/test_val.py::test_val PASSED" in out, (rc, out, err)
    st = srv.status()
    assert st["state"] == "ready" and st["fresh_reason"] == "" and st["generation"] >= 2, st
    check(pz, root, ["-p", "no:cacheprovider"], rc=0, has=["test_val PASSED"])


def test_helper_outside_the_root_on_pythonpath(pz, gated):
    root, marker, gate, start = gated
    ext = pz.tmp_path / "extlib"
    ext.mkdir()
    helper = ext / "exthelper.py"
    helper.write_text("VALUE = 1\n")
    (root / "tests" / "test_ext.py").write_text(
        "import exthelper\n\n\ndef test_ext():\n    assert exthelper.VALUE == 1\n")
    env = {"PYTHONPATH": str(ext)}
    srv = start(**env)
    check(pz, root, Q, rc=0, has=["2 passed"], env=env)

    # ungated: the next run waits and sees the new code
    helper.write_text("VALUE = 22\n")
    r = pz.run_zygote(Q, cwd=root, env=env)
    assert "waiting for a fresh zygote" in r.err, r
    assert r.rc == 1 and "assert 22 == 1" in r.out, r
    check(pz, root, Q, rc=1, has=["assert 22 == 1"], env=env)

    # gated: status says why while the run is parked
    wait_settled(srv)
    gate.unlink()
    helper.write_text("VALUE = 1\n")
    st = wait_status(srv, lambda s: s["state"] == "refreshing", "state refreshing")
    assert "exthelper.py" in st["fresh_reason"], st
    run = pz_util.BgRun(pz, root, Q, env=env)
    try:
        assert run.wait_stderr("waiting for a fresh zygote"), run.err
        assert run.proc.poll() is None, "the run did not wait for the fresh generation"
        gate.touch()
        rc, out, err = run.finish()
    finally:
        run.kill()
    assert rc == 0 and "2 passed" in out, (rc, out, err)


# --- 5. workarounds -----------------------------------------------------------


def _workaround_run(pz, root):
    """Run; return the workaround.log words the run's own process wrote."""
    log = root / "workaround.log"
    log.write_text("")
    r = zrun(pz, root, rc=0, has=["1 passed"])
    entries = [line.split() for line in lines(log)]
    pids = {pid for word, pid in entries if word == "test"}
    assert len(pids) == 1, entries
    return [word for word, pid in entries if pid in pids], r


def test_workarounds_run_only_after_a_reload(pz):
    root = pz.project("workarounds")
    srv = pz.start(root)
    session = ["test", "sessionfinish", "unconfigure"]

    got, r = _workaround_run(pz, root)
    assert got == session, "workarounds ran without an edit: %r" % got

    (root / "pkg" / "mod.py").write_text("VALUE = 2\n")
    (root / "expected.txt").write_text("2\n")
    got, r = _workaround_run(pz, root)
    assert "fakelib" not in got, "fakelib ships _clear_zygote_workarounds: %r" % got
    assert "fakelib2" not in got, "fakelib2 ships _clear_hot_reload_workarounds: %r" % got
    assert "not-imported" not in got, got
    before = got[:got.index("test")]
    assert sorted(before) == ["fakelib3", "json-before", "json-plain"], (got, r)
    # the generator's code after yield runs after the session
    assert got[len(before):] == session + ["json-after"], (got, r)

    # once a new generation has absorbed the edit, nothing is re-imported
    wait_settled(srv, generation=2)
    got, r = _workaround_run(pz, root)
    assert got == session, got


# --- 6. polling instead of inotify --------------------------------------------


def test_poll_mode(pz):
    root = pz.project("changes")
    srv = pz.start(root, env={"PYTEST_ZYGOTE_POLL_MS": "200"})
    st = srv.status()
    assert st["watching"] == "poll", st
    check(pz, root, rc=0)
    (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    check(pz, root, rc=1, has=["3 failed, 2 passed"])
    st = wait_settled(srv, generation=2)
    assert st["refreshes"] == 1, st
    check(pz, root, rc=1, has=["3 failed, 2 passed"])
    (root / "pkg" / "a.py").write_text("VALUE = 1\n")
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = -v\n")
    r = pz.run_zygote(["-p", "no:cacheprovider"], cwd=root)
    assert "waiting for a fresh zygote" in r.err, r
    assert r.rc == 0 and "tests/test_a.py::test_a PASSED" in r.out, r
    st = wait_settled(srv, generation=3)
    assert st["watching"] == "poll", st


# --- 7. what a child compares with the snapshot --------------------------------
#
# A child compares only the files the server lists as possibly changed since
# its generation started (PYTEST_ZYGOTE_CHECK), and every imported file where
# that list cannot be trusted. Each test here edits pkg/a.py so that a child
# trusting a list that lacks it would run the old code (and pass).

TIMING = {"PYTEST_ZYGOTE_TIMING": "1"}
QUIET = "600000"  # settle time: no fresh generation absorbs the edit meanwhile


def test_a_run_compares_only_the_files_that_changed(pz):
    root = pz.project("changes")
    pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET})
    r = zrun(pz, root, rc=0, env=TIMING)
    assert pz_util.child_timing(r)["checked"] == 0, r
    (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed"], env=TIMING)
    assert pz_util.child_timing(r)["checked"] == 1, r


def test_lost_events_make_runs_compare_every_file(pz):
    # PYTEST_ZYGOTE_TEST_LOSE_EVENTS drops what the watcher saw and reports
    # an overflow, as the kernel does when its queue is full.
    root = pz.project("changes")
    pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET, "PYTEST_ZYGOTE_TEST_LOSE_EVENTS": "1"})
    r = zrun(pz, root, rc=0, env=TIMING)
    (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed"], env=TIMING)
    assert pz_util.child_timing(r)["checked"] > 1, r
    check(pz, root, rc=1, has=["3 failed, 2 passed"])


def test_too_many_changes_make_runs_compare_every_file(pz):
    # More changed files than the list holds (512), the imported one last.
    root = pz.project("changes")
    pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET})
    zrun(pz, root, rc=0)
    for i in range(600):
        (root / "pkg" / ("new%d.py" % i)).write_text("X = %d\n" % i)
    (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed"], env=TIMING)
    assert pz_util.child_timing(r)["checked"] > 1, r


def test_poll_mode_sees_an_edit_that_keeps_mtime_size_and_inode(pz):
    # cp -p, tar and rsync -t put an old mtime back: only the change time
    # tells. Polled only when a run comes (the interval is an hour).
    root = pz.project("changes")
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET,
                              "PYTEST_ZYGOTE_POLL_MS": "3600000"})
    assert srv.status()["watching"] == "poll"
    zrun(pz, root, rc=0)
    a = root / "pkg" / "a.py"
    st = os.stat(a)
    save_inplace(a, "VALUE = 2\n")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(a)
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (
        st.st_mtime_ns, st.st_size, st.st_ino)
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed"], env=TIMING)
    assert pz_util.child_timing(r)["checked"] == 1, r


def test_an_imported_file_the_watcher_ignores_is_compared_in_every_run(pz):
    root = pz.project("changes")
    pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET,
                        "PYTEST_ZYGOTE_IGNORE_GLOBS": "pkg/a.py"})
    r = zrun(pz, root, rc=0, env=TIMING)
    assert pz_util.child_timing(r)["checked"] == 1, r
    (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed"], env=TIMING)
    assert pz_util.child_timing(r)["checked"] == 1, r


def test_an_edit_while_the_server_is_stopped_is_seen(pz):
    # The events wait in the kernel's queue; the run's request drains them
    # before the run is handed over.
    root = pz.project("changes")
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET})
    zrun(pz, root, rc=0)
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        (root / "pkg" / "a.py").write_text("VALUE = 2\n")
        (root / "pkg" / "util" / "d.py").write_text('WORD = "e"\nA = 1\n')
    finally:
        os.kill(srv.pid, signal.SIGCONT)
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed", "test_d - Assert"], env=TIMING)
    assert pz_util.child_timing(r)["checked"] == 2, r


def test_a_real_inotify_overflow_makes_runs_compare_every_file(pz):
    # The server stopped, the kernel's queue fills up and drops the rest,
    # the edit of pkg/a.py among them. Two files written in turn (the kernel
    # merges only an event equal to the last one queued), so that the list
    # would not be too long to trust anyway.
    limit = int(open("/proc/sys/fs/inotify/max_queued_events").read())
    if limit > 60000:
        pytest.skip("max_queued_events is %d: too many files to write" % limit)
    root = pz.project("changes")
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET})
    zrun(pz, root, rc=0)
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        for i in range(limit // 2 + 100):
            (root / "pkg" / ("f%d.py" % (i % 2))).write_text("X = %d\n" % i)
        (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    finally:
        os.kill(srv.pid, signal.SIGCONT)
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed"], env=TIMING)
    assert pz_util.child_timing(r)["checked"] > 1, r


def test_a_client_cannot_hand_its_run_a_check_list(pz):
    # The list is the server's: one in the client's environment is dropped.
    root = pz.project("changes")
    pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": QUIET, "PYTEST_ZYGOTE_TEST_LOSE_EVENTS": "1"})
    zrun(pz, root, rc=0)
    (root / "pkg" / "a.py").write_text("VALUE = 2\n")
    env = dict(TIMING, PYTEST_ZYGOTE_CHECK="")
    r = zrun(pz, root, rc=1, has=["3 failed, 2 passed"], env=env)
    assert pz_util.child_timing(r)["checked"] > 1, r
