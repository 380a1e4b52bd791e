"""Warm-up must not be observable (docs/design.md, PITFALLS.md item 16).

The zygote only imports non-test modules: conftests and test modules execute
in every run exactly as often as in a cold run, and no project hook
(pytest_configure, pytest_sessionstart, collection hooks) runs in the zygote.
Each case here is a pattern from real suites that breaks when a run reuses
what a warm-up collection left behind. Every case compares zygote runs with
plain `python -m pytest` test by test ({node id: outcome}), plus the exit
code, the short test summary and the final summary line: twice in a row, then
after an edit (right after it, and again once the server has absorbed it).
"""

import json
import os
import re
import shutil
import types
from pathlib import Path

import pytest

from pz_util import Outcomes, assert_same_outcomes, show_run, wait_absorbed

ARGS = ["-v", "-rA", "-p", "no:cacheprovider"]
WAIT = 60  # bound on waiting for the server to settle (not a timing assertion)

# --- running ---------------------------------------------------------------------


_PYCACHE = {}


@pytest.fixture(scope="module", autouse=True)
def _pycache_prefix(tmp_path_factory):
    """A bytecode cache for the plain runs of this module, outside the
    projects: pytest and its plugins compile once, not once per run."""
    _PYCACHE["dir"] = tmp_path_factory.mktemp("plain-pycache")
    yield
    _PYCACHE.clear()


def plain_cold(pz, root, args=ARGS, env=None):
    """Plain pytest compiling every project file afresh: its bytecode cache is
    moved out of the project (PYTHONPYCACHEPREFIX) and the project's part of
    it is removed first, so that neither the .pyc files a zygote child wrote
    nor a same-second, same-size edit can make both agree on stale code."""
    cache = _PYCACHE["dir"]
    shutil.rmtree(str(cache) + str(Path(root).resolve()), ignore_errors=True)
    return pz.run_plain(args, cwd=root, env=dict(env or {}, PYTHONPYCACHEPREFIX=str(cache)))


def expect(o, final, what=""):
    __tracebackhide__ = True
    assert o.final == final, "plain pytest %s: expected %r\n%s" % (
        what, final, show_run("plain", o))


def compare_runs(pz, name, edit, before, after, args=ARGS, env=None, start_env=None,
                 each=None):
    """The standard case for project tests/projects/NAME: plain pytest must
    end with the summary `before`; two zygote runs in a row report what it
    reports; then edit(root) changes files, and a zygote run at once, plain
    pytest (now ending with `after`), and a zygote run once the server has
    absorbed the edit must agree again. each(label), when given, runs after
    every run, plain or zygote (to check and reset what the run left
    behind). Runs get env; the server is started with start_env. Returns
    (root, server)."""
    __tracebackhide__ = True
    root = pz.project(name)
    srv = pz.start(root, env=start_env)

    def plain(label):
        o = Outcomes(plain_cold(pz, root, args, env))
        if each:
            each(label)
        return o

    def zygote(label):
        r = pz.run_zygote(args, cwd=root, env=env)
        if each:
            each(label)
        return r

    p = plain("plain run before the edit")
    expect(p, before, "before the edit")
    for i in (1, 2):
        assert_same_outcomes(p.result, zygote("zygote run %d" % i), "(run %d)" % i)
    edit(root)
    z = zygote("zygote run right after the edit")
    p = plain("plain run after the edit")
    expect(p, after, "after the edit")
    assert_same_outcomes(p.result, z, "(right after the edit)")
    wait_absorbed(srv, WAIT)
    z = zygote("zygote run once the edit was absorbed")
    assert_same_outcomes(p.result, z, "(after the edit, once absorbed)")
    return root, srv


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def replace_in(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


# --- 1, 2: parametrize with iterators ----------------------------------------------


def test_parametrize_with_iterators(pz):
    # itertools.chain, a generator expression, zip and map as argvalues.
    def edit(root):
        (root / "app" / "data.py").write_text("BASE = [1, 2, 3, 4]\nEXTRA = [10, 20, 30, 40]\n")

    compare_runs(pz, "warm_iterparam", edit, "15 passed", "20 passed")


def test_generate_tests_with_an_iterator(pz):
    # pytest_generate_tests in a conftest parametrizes with an iterator made
    # when the conftest is executed.
    def edit(root):
        (root / "app" / "words.py").write_text('WORDS = ["alpha", "beta", "gamma", "x1"]\n')

    compare_runs(pz, "warm_gentests", edit, "3 passed", "1 failed, 3 passed")


# --- 3: generated subclasses set on the test module ------------------------------


def test_collection_hook_sets_generated_classes_on_the_module(pz):
    def edit(root):
        replace_in(root / "app" / "backends.py", '["sqlite", "memory"]',
                   '["sqlite", "memory", "postgres"]')

    compare_runs(pz, "warm_subclass", edit, "4 passed", "6 passed")


# --- 4: environment and sys.path set by a conftest when it is executed ------------


def test_conftest_sets_os_environ(pz):
    def edit(root):
        replace_in(root / "conftest.py", '"test"', '"ci"')

    compare_runs(pz, "warm_environ", edit, "2 passed", "1 failed, 1 passed",
                 env={"WARM_CLIENT": "yes"})


def test_conftest_inserts_into_sys_path(pz):
    def edit(root):
        replace_in(root / "helpers" / "helperlib.py", '"hello "', '"hi "')

    compare_runs(pz, "warm_syspath", edit, "2 passed", "1 failed, 1 passed")


# --- 5: pytest_configure configures a library once per process --------------------


def test_pytest_configure_configures_a_library_once(pz):
    # appconf.configure() raises "Settings already configured" when called
    # twice in one process, as django.conf.settings.configure() does.
    def edit(root):
        replace_in(root / "appconf.py", '{"DEBUG": False}', '{"DEBUG": True}')

    compare_runs(pz, "warm_settings", edit, "2 passed", "1 failed, 1 passed")


def test_pytest_configure_configures_django(pz):
    pytest.importorskip("django")

    def edit(root):
        append(root / "tests" / "test_django.py", "\n\ndef test_user_model():\n"
               "    from django.contrib.auth.models import User\n\n"
               "    assert User._meta.app_label == \"auth\"\n")

    compare_runs(pz, "warm_django", edit, "3 passed", "4 passed")


# --- 6: session state in a rootless conftest ------------------------------------


def test_rootless_conftest_sees_one_session(pz):
    def edit(root):
        append(root / "tests" / "test_session.py",
               "\n\ndef test_started(sessions):\n    assert sessions[0].testscollected\n")

    compare_runs(pz, "warm_sessions", edit, "1 passed", "2 passed")


# --- 7: exit-time cleanup -----------------------------------------------------------


def _log_lines(path):
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    path.write_text("")
    return lines


def test_temporary_directories_are_removed_at_exit(pz, tmp_path):
    # TemporaryDirectory objects alive until the interpreter exits (one made
    # at module import, one kept by a test) are removed at exit, by the
    # weakref.finalize they registered: each run makes two, and after it
    # neither exists.
    log = tmp_path / "tmpdirs.log"

    def each(label):
        made = _log_lines(log)
        left = [d for d in made if os.path.exists(d)]
        assert len(made) == 2 and not left, (
            "%s made %d temporary directories (not 2: %r) and left %r behind"
            % (label, len(made), made, left))

    def edit(root):
        replace_in(root / "tests" / "test_tmpdir.py", '"warm-module-"', '"warm-module-v2-"')

    compare_runs(pz, "warm_cleanup", edit, "2 passed", "2 passed",
                 env={"TMPDIR_LOG": str(log)}, each=each)


def test_atexit_handler_of_a_conftest_runs_once_per_run(pz, tmp_path):
    log = tmp_path / "atexit.log"
    state = {"edited": False}

    def each(label):
        lines = _log_lines(log)
        assert len(lines) == 1, "%s ran the conftest's atexit handler %d times: %r" % (
            label, len(lines), lines)
        word = lines[0].split()[0]
        assert word == ("atexit-v2" if state["edited"] else "atexit"), (label, lines)

    def edit(root):
        replace_in(root / "conftest.py", '"atexit %d', '"atexit-v2 %d')
        state["edited"] = True

    compare_runs(pz, "warm_cleanup", edit, "2 passed", "2 passed",
                 env={"ATEXIT_LOG": str(log)}, each=each)


# --- 8: orphaned submodules after a failed import -------------------------------


def test_failed_package_import_leaves_no_orphaned_submodules(pz):
    # pkg/__init__.py does `from . import a`, then `from . import b`; pkg2's
    # does `from .a import A`, then `from .b import B`. Neither b.py exists:
    # importing the package fails (the same collection error in every run)
    # after its submodule a was imported. Once b.py exists, both import,
    # with their submodules set as attributes, and every test passes.
    def edit(root):
        (root / "pkg" / "b.py").write_text("B = 2\n")
        (root / "pkg2" / "b.py").write_text("B = 2\n")

    compare_runs(pz, "warm_orphan", edit, "2 errors", "4 passed")


# --- 9: class attributes mutated at collection ---------------------------------------


def test_collection_hook_mutates_a_test_class(pz):
    def edit(root):
        path = root / "tests" / "test_registry.py"
        replace_in(path, '["test_one", "test_two"]', '["test_one", "test_three", "test_two"]')
        replace_in(path, "len(self.COLLECTED) == 2", "len(self.COLLECTED) == 3")
        append(path, '\n    def test_three(self):\n        assert "test_three" in self.COLLECTED\n')

    compare_runs(pz, "warm_classstate", edit, "2 passed", "3 passed")


# --- 10: sys.modules and the working directory changed by a conftest ------------------


def test_conftest_puts_a_module_into_sys_modules(pz):
    def edit(root):
        replace_in(root / "conftest.py", "fake.VALUE = 7", "fake.VALUE = 8")

    compare_runs(pz, "warm_sysmodules", edit, "2 passed", "1 failed, 1 passed")


def test_conftest_changes_directory(pz):
    def edit(root):
        append(root / "tests" / "test_cwd.py",
               "\n\ndef test_listdir():\n    assert os.listdir(\".\") == [\"data.txt\"]\n")

    compare_runs(pz, "warm_chdir", edit, "2 passed", "3 passed")


# --- 11: a pytest_collect_file plugin for custom files -----------------------------------


def test_custom_files_collected_by_a_conftest(pz):
    def edit(root):
        path = root / "tests" / "arith.check"
        replace_in(path, "calc.add(1, 2) => 3", "calc.add(1, 2) => 4")
        append(path, "mul_big: calc.mul(100, 3) => 300\n")

    compare_runs(pz, "warm_collectfile", edit, "4 passed", "1 failed, 4 passed")


# --- 12: conftests and test modules execute once per run ---------------------------------


def test_conftests_and_test_modules_execute_once_per_run(pz, tmp_path):
    # Every conftest (rootless ones and one in a package) and test module
    # logs each execution of itself: one line each per run, zygote or plain.
    log = tmp_path / "exec.log"
    names = ["conftest", "tests/conftest", "tests/pkg/conftest", "tests/pkg/test_inpkg",
             "tests/test_top"]
    state = {"edited": False}

    def each(label):
        want = sorted(n + "-v2" if state["edited"] and n == "tests/conftest" else n
                      for n in names)
        assert sorted(_log_lines(log)) == want, "%s: executions differ from one each" % label

    def edit(root):
        replace_in(root / "tests" / "conftest.py", '"tests/conftest\\n"',
                   '"tests/conftest-v2\\n"')
        state["edited"] = True

    compare_runs(pz, "warm_execcount", edit, "2 passed", "2 passed",
                 env={"EXEC_LOG": str(log)}, each=each)


# --- 13: where the learning run comes from ----------------------------------------------------


def _learning_project(root):
    (root / "lib").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\npythonpath = lib\n")
    (root / "lib" / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    # Each process that imports the conftest (the learning run, a run's
    # child, plain pytest) writes its pid to PIDS_FILE.
    (root / "tests" / "conftest.py").write_text(
        "import os\n\nimport helper  # noqa: F401\n\n"
        "with open(os.environ['PIDS_FILE'], 'a') as f:\n"
        "    f.write('%d\\n' % os.getpid())\n")
    (root / "tests" / "test_a.py").write_text(
        "import helper\n\n\ndef test_twice():\n    assert helper.twice(2) == 4\n\n\n"
        "def test_fails():\n    assert helper.twice(2) == 5\n")


def test_the_first_learning_run_starts_python_itself_when_a_second_cpu_can_run_it(pz, tmp_path):
    # With two CPUs, the first generation's learning run is forked by C
    # before Python starts and starts Python itself, next to the zygote
    # doing the same (zygote.c, learn_early); with one it is forked from the
    # zygote's Python. Either way it is the process that imported the
    # conftest at warm-up (the zygote never does), and runs report as plain
    # pytest.
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    root = tmp_path / "p"
    _learning_project(root)
    pids = tmp_path / "pids"
    env = {"PIDS_FILE": str(pids)}
    args = ["-q", "-p", "no:cacheprovider"]
    helper = root / "lib" / "helper.py"
    pz.roots.append(str(root))
    started = re.compile(r".*zygote: debug: generation 1: learning run (\d+) started before Python$")
    for taskset in ([], ["taskset", "-c", "0"]):
        helper.write_text("def twice(x):\n    return 2 * x\n")
        plain = pz.run_plain(args, cwd=root, env=env)
        assert plain.rc == 1 and "1 failed, 1 passed" in plain.out, plain
        pids.write_text("")
        r = pz.call(taskset + [pz.zbin, "start", "--root", root],
                    env=dict(env, PYTEST_ZYGOTE_DEBUG="1"))
        assert r.rc == 0, r
        st = json.loads(pz.cli("status", "--root", root, "--json").out)
        learners = [int(m.group(1)) for m in map(started.match, Path(st["log"]).read_text()
                                                 .splitlines()) if m]
        warm = pids.read_text().split()
        assert len(warm) == 1 and int(warm[0]) not in (st["pid"], st["zygote_pid"]), (warm, st)
        if taskset:
            assert learners == [], "one CPU: the learning run is forked from Python"
        else:
            assert learners == [int(warm[0])], (learners, warm)
        for _ in range(2):
            assert_same_outcomes(plain, pz.run_zygote(args, cwd=root, env=env))
        # An edit that swaps which test fails: right after it, and once the
        # server has absorbed it.
        helper.write_text("def twice(x):\n    return 2 * x + (x == 2)\n")
        edited = pz.run_plain(args, cwd=root, env=env)
        assert edited.rc == 1 and "FAILED tests/test_a.py::test_twice" in edited.out, edited
        assert_same_outcomes(edited, pz.run_zygote(args, cwd=root, env=env))
        wait_absorbed(types.SimpleNamespace(status=lambda: json.loads(
            pz.cli("status", "--root", root, "--json").out)), timeout=60)
        assert_same_outcomes(edited, pz.run_zygote(args, cwd=root, env=env))
        assert pz.cli("stop", "--root", root).rc == 0


def test_every_run_starts_from_a_frozen_heap_the_first_after_start_too(pz, tmp_path):
    # The zygote collects what warm-up left and freezes its heap after it
    # said ready (settle), before its first fork: a run that comes at once
    # waits for that, and a test's gc.collect() never walks warm-up's
    # objects. Plain pytest freezes nothing.
    root = tmp_path / "p"
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (root / "tests" / "test_gc.py").write_text(
        "import gc\nimport os\n\n\ndef test_freeze_count():\n"
        "    with open(os.environ['FREEZE_FILE'], 'a') as f:\n"
        "        f.write('%d %d\\n' % (gc.get_freeze_count(), gc.isenabled()))\n")
    out = tmp_path / "freeze"
    env = {"FREEZE_FILE": str(out)}
    args = ["-q", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=root, env=env)
    assert plain.rc == 0 and out.read_text().split() == ["0", "1"], (plain, out.read_text())
    out.write_text("")
    pz.start(root)
    for _ in range(3):  # the first at once after start
        assert_same_outcomes(plain, pz.run_zygote(args, cwd=root, env=env))
    seen = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
    assert len(seen) == 3 and all(n > 10000 and enabled == 1 for n, enabled in seen), seen
