"""A run's inputs that the zygote fixed at warm-up must not change its result.

A cold `python3 -m pytest` reads every input afresh: the environment (read by
project modules, by libraries and by the interpreter itself when it starts),
data files that modules read when they are imported, and the registries that
the modules it imports fill. The zygote imported all of that once, with the
environment of `start` and the files as they were then. Each case here starts
a server, gives a run different inputs (its own environment, an edited file)
and compares the zygote's run with plain pytest in the same directory, with
the same arguments and environment, test by test (pz_util.Outcomes: node ids
and outcomes, exit code, short test summary, final line).

Right after an edit the zygote runs first, before plain pytest and before the
server could absorb the edit: that run is the one that must be cold. Plain
pytest must end as the scenario says (check's `expected`), so that no
case passes because its project does not show what it is about.

Projects: tests/projects/inputs_*.
"""

import re
import shutil
from pathlib import Path

import pytest

import pz_util
from pz_util import (REPO, TIMEOUT, Outcomes, assert_same_outcomes, show_run, wait_absorbed,
                     wait_until)

ARGS = ["-v", "-rA", "-p", "no:cacheprovider"]
WAIT = 60  # bound on waiting for the server (not a timing assertion)
FRESH = "waiting for a fresh zygote"
ENV_DIFFERS = "differs from the zygote's"


# --- running and comparing ------------------------------------------------------


def plain(pz, root, env=None, args=ARGS):
    """Plain pytest in root with env, compiling every project file afresh:
    the project's bytecode caches are removed first, so that neither a .pyc
    a zygote child wrote nor a stale one can make both agree on old code.
    (Libraries keep theirs: compiling them would add warnings, such as an
    invalid escape sequence, that a cold run does not show.)"""
    for cache in sorted(Path(root).rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    return pz.run_plain(args, cwd=root, env=env)


def check(pz, root, expected, env=None, args=ARGS, what=""):
    """A zygote run in root, then plain pytest with the same arguments and
    environment: plain pytest's final line must report `expected` (its
    counts, warnings aside), and the zygote run what plain pytest reported.
    Returns (plain Result, zygote Result)."""
    __tracebackhide__ = True
    zyg = pz.run_zygote(args, cwd=root, env=env)
    cold = plain(pz, root, env, args)
    got = Outcomes(cold)
    assert counts(got.final) == expected, "plain pytest %s: expected %r\n%s" % (
        what, expected, show_run("plain", got))
    assert_same_outcomes(cold, zyg, what)
    return cold, zyg


def counts(final):
    """A final summary line without its warnings: "1 failed, 2 passed"."""
    return re.sub(r",? ?\d+ warnings?", "", final or "")


def replace_in(path, old, new):
    """Edit a file; the edit changes its size, so that no (mtime, size)
    check can miss it."""
    text = path.read_text()
    assert old in text and len(old) != len(new), (path, old, new)
    path.write_text(text.replace(old, new, 1))


def assert_fresh(zyg):
    """The run said it waited for a fresh zygote."""
    __tracebackhide__ = True
    assert FRESH in zyg.err, "the run did not say %r; its stderr:\n%s" % (FRESH, zyg.err)


def edit_and_check(pz, srv, root, edit, expected, env=None):
    """edit(); a zygote run at once and one once the server absorbed the
    edit both report what plain pytest does. Returns the first zygote Result."""
    __tracebackhide__ = True
    edit()
    _, zyg = check(pz, root, expected, env, what="(right after the edit)")
    wait_absorbed(srv, WAIT)
    check(pz, root, expected, env, what="(after the edit, once absorbed)")
    return zyg


# --- environment: the server's, then another ----------------------------------------

WHERE = ["server-without", "server-with"]


def server_and_other_environment(pz, root, where, without, name, value, expected):
    """Start a server for root with the environment `without`, or with
    name=value added to it (where == "server-with"); then runs in the
    server's environment, twice in the other one, and again in the server's,
    each reporting what plain pytest does (expected: plain pytest's counts
    with the variable, and without it). Returns [(env, plain Result, zygote
    Result)] of the four runs."""
    __tracebackhide__ = True
    envs = [(dict(without, **{name: value}), expected[0]), (without, expected[1])]
    if where == "server-without":
        envs.reverse()
    pz.start(root, env=envs[0][0])
    runs = []
    for i, (env, want) in enumerate([envs[0], envs[1], envs[1], envs[0]], 1):
        what = "(run %d: %s=%s, %s environment)" % (
            i, name, env[name], "the server's" if i in (1, 4) else "another")
        runs.append((env,) + check(pz, root, want, env, what=what))
    return runs


# --- 1. environment read at import by a project module ------------------------------

# variable -> plain pytest's counts with it set, and without it
PROJECT_ENV = {
    "RUN_SLOW": ("1 failed, 2 passed", "2 passed, 1 skipped"),  # a skipif on settings.SLOW
    "SKIP_DB": ("1 passed, 1 skipped", "2 passed, 1 skipped"),  # the conftest's collect_ignore
}


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", PROJECT_ENV)
def test_environment_read_by_a_project_module(pz, name, where):
    # pkg/settings.py: SLOW = os.environ.get("RUN_SLOW") == "1", and a
    # failing test is skipped unless settings.SLOW; pkg/flags.py: SKIP_DB =
    # os.environ.get("SKIP_DB"), and the root conftest ignores
    # tests/test_db.py when it is set.
    root = pz.project("inputs_env_project")
    server_and_other_environment(pz, root, where, dict.fromkeys(PROJECT_ENV), name, "1",
                                 PROJECT_ENV[name])


# --- 2. environment read at import by a library outside the project ----------------


@pytest.mark.parametrize("where", WHERE)
def test_environment_read_by_a_library_outside_the_project(pz, where):
    # envlib (outside the root, on PYTHONPATH) reads ENVLIB_MODE when it is
    # imported; test_mode passes only without it.
    ext = pz.tmp_path / "ext"
    ext.mkdir()
    (ext / "envlib.py").write_text(
        'import os\n\nMODE = os.environ.get("ENVLIB_MODE", "default")\n')
    root = pz.project("inputs_env_library")
    runs = server_and_other_environment(
        pz, root, where, {"PYTHONPATH": str(ext), "ENVLIB_MODE": None}, "ENVLIB_MODE", "other",
        ("1 failed, 1 passed", "2 passed"))
    err = runs[1][2].err
    assert ENV_DIFFERS in err, (
        "the client did not say that the run's environment differs from the zygote's:\n%s"
        % err)

    r = pz.cli("stop", "--root", root)
    assert r.rc == 0, r
    pz_util.assert_no_strays([pz.runtime_dir] + pz.roots)

    def sockets():
        return sorted(Path(pz.runtime_dir).glob("*.sock"))

    assert wait_until(lambda: not sockets(), timeout=10), (
        "sockets left in the runtime dir after stop: %r" % sockets())


def test_zygotes_for_other_environments_are_few_and_go_away(pz):
    # At most PYTEST_ZYGOTE_VARIANTS of them (here 1): the least recently used
    # is stopped when another is needed. One unused for
    # PYTEST_ZYGOTE_VARIANT_IDLE seconds (a variant takes it from the
    # environment of the run that started it) stops by itself. Each run still
    # gets what plain pytest gets.
    ext = pz.tmp_path / "ext"
    ext.mkdir()
    (ext / "envlib.py").write_text(
        'import os\n\nMODE = os.environ.get("ENVLIB_MODE", "default")\n')
    root = pz.project("inputs_env_library")
    base = {"PYTHONPATH": str(ext), "ENVLIB_MODE": None}
    srv = pz.start(root, env=dict(base, PYTEST_ZYGOTE_VARIANTS="1"))

    def sockets():
        return sorted(p.name for p in Path(pz.runtime_dir).glob("*.sock"))

    main = sockets()
    assert len(main) == 1, main
    check(pz, root, "1 failed, 1 passed", dict(base, ENVLIB_MODE="a"))
    first = sorted(set(sockets()) - set(main))
    assert len(first) == 1 and srv.status()["variants"] == 1, (sockets(), srv.status())
    check(pz, root, "1 failed, 1 passed",
          dict(base, ENVLIB_MODE="b", PYTEST_ZYGOTE_VARIANT_IDLE="1"))
    # the first variant was stopped to make room for the second
    assert wait_until(lambda: first[0] not in sockets(), timeout=WAIT), sockets()
    assert srv.status()["variants"] == 1
    # and the second stops after a second without runs
    assert wait_until(lambda: sockets() == main, timeout=WAIT), sockets()
    check(pz, root, "2 passed", base)


# --- 3. interpreter-start settings --------------------------------------------------

# Each setting makes one test of inputs_interp fail in a cold run.
INTERP_SETTINGS = {"PYTHONHASHSEED": "0", "PYTHONDEVMODE": "1", "PYTHONOPTIMIZE": "1"}


def interp_lines(result, with_hash):
    """What tests/test_interp.py::test_report printed (-rA shows it): its
    hash("abc") only when the hash seed is fixed (random otherwise)."""
    return [line for line in result.out.splitlines() if line.startswith("INTERP ")
            and (with_hash or not line.startswith("INTERP hash="))]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", INTERP_SETTINGS)
def test_interpreter_start_setting(pz, name, where):
    root = pz.project("inputs_interp")
    runs = server_and_other_environment(pz, root, where, dict.fromkeys(INTERP_SETTINGS), name,
                                        INTERP_SETTINGS[name], ("1 failed, 3 passed", "4 passed"))
    printed = []
    for i, (env, cold, zyg) in enumerate(runs, 1):
        with_hash = env["PYTHONHASHSEED"] is not None
        printed.append(interp_lines(zyg, with_hash))
        assert printed[-1] == interp_lines(cold, with_hash), (
            "run %d (%s=%s): the zygote's interpreter differs from plain pytest's:\n"
            "plain:  %r\nzygote: %r" % (i, name, env[name], interp_lines(cold, with_hash),
                                        printed[-1]))
    assert printed[1] == printed[2], "two runs with the same environment differ: %r" % printed


def test_each_run_gets_a_hash_seed_of_its_own(pz):
    # PYTEST_ZYGOTE_HASH_SEED=per-run: every such run is forked from a
    # generation no run came from (a cold run's seed is its own too); the
    # generations after the first replay the first one's learning run, as
    # nothing changed. Runs without it share their generation's seed.
    root = pz.project("inputs_interp")
    srv = pz.start(root)
    per_run = {"PYTEST_ZYGOTE_HASH_SEED": "per-run"}

    def hash_of(env):
        r = check(pz, root, "4 passed", env)[1]
        lines = [ln for ln in interp_lines(r, True) if ln.startswith("INTERP hash=")]
        assert len(lines) == 1, r
        return lines[0]

    seeds = [hash_of(per_run) for _ in range(3)]
    assert len(set(seeds)) == 3, seeds
    assert hash_of({}) == hash_of({}), "two runs of one generation differ"
    log = Path(srv.status()["log"]).read_text()
    assert log.count("replayed the learning run") >= 2, log
    r = pz.run_zygote(ARGS, cwd=root, env={"PYTEST_ZYGOTE_HASH_SEED": "sometimes"})
    assert r.rc == 64 and "bad value for PYTEST_ZYGOTE_HASH_SEED in the environment: " \
        "'sometimes' is not generation or per-run" in r.err, r


# --- 4. hash-order flakiness found by the flake hunt ---------------------------------

HUNT = REPO / "examples" / "ci" / "flaky-hunt.sh"
HUNT_RUNS = 12
SET_ORDER = "tests/test_order.py::test_set_order"
STABLE = "tests/test_order.py::test_stable"


def test_flaky_hunt_finds_hash_order_flakiness(pz):
    # test_set_order depends on the order of a set of strings, which depends
    # on the hash seed: it fails for some seeds and passes for others. Cold
    # runs each get a random seed; 12 of them all agree with probability
    # about 2 * 0.5**12.
    root = pz.project("inputs_hashorder")
    seed_for = {}  # outcome of test_set_order -> a seed that gives it
    for seed in range(20):
        o = Outcomes(plain(pz, root, {"PYTHONHASHSEED": str(seed)}))
        assert set(o.tests) == {SET_ORDER, STABLE}, show_run("plain", o)
        seed_for.setdefault(o.tests[SET_ORDER], seed)
        if len(seed_for) == 2:
            break
    assert sorted(seed_for) == ["FAILED", "PASSED"], (
        "plain pytest does not depend on the hash seed: %r" % seed_for)

    r = pz.call(["bash", HUNT, "-n", HUNT_RUNS, "--root", root, "--", "-p", "no:cacheprovider"],
                cwd=root, timeout=4 * TIMEOUT,
                env={"PYTEST_ZYGOTE_BIN": pz.zbin, "PYTHON": "/usr/bin/python3"})
    lines = r.out.splitlines()
    summary = lines[next((i for i, line in enumerate(lines)
                          if line.startswith("flaky-hunt summary:")), len(lines)):]
    report = "flaky-hunt.sh (rc %d):\n%s\nstderr:\n%s" % (
        r.rc, "\n".join(summary) or r.out, r.err)
    flaky = re.compile(r"^ +flaky +%s: failed in runs? [\d,]+ of %d$"
                       % (re.escape(SET_ORDER), HUNT_RUNS))
    assert any(flaky.match(line) for line in summary), (
        "the hunt did not find %s flaky, as %d cold runs would; %s"
        % (SET_ORDER, HUNT_RUNS, report))
    assert r.rc == 1 and "  1 test passed (or skipped) in every run" in summary, report


# --- 5. data file read at import -------------------------------------------------------


def test_data_file_read_at_import(pz):
    # pkg/config.py loads pkg/config.json when it is imported (not a *.py
    # file: by default the server does not watch it).
    root = pz.project("inputs_datafile")
    config = root / "pkg" / "config.json"
    srv = pz.start(root)
    check(pz, root, "2 passed")
    edit_and_check(pz, srv, root, lambda: config.write_text('{"x": 2, "edited": true}\n'),
                   "1 failed, 1 passed")
    edit_and_check(pz, srv, root, lambda: config.write_text('{"x": 1}\n'), "2 passed")


# --- 6. registries outside the reverse-import closure ----------------------------------

# id: (project, file, [(old, new)...], plain pytest after the edit). Every
# project passes its two tests before the edit; the edited module registers
# into a registry that lives in a module it imports (which the child does
# not re-import): the registry still holds the zygote's object.
REGISTRIES = {
    # REG.setdefault: the first registration wins
    "own-registry": ("inputs_registry", "pkg/plugins.py", [("value = 1", "value = 22")],
                     "1 failed, 1 passed"),
    # marshmallow.class_registry keeps the first class of a name per module
    "marshmallow": ("inputs_marshmallow", "pkg/schemas.py",
                    [("name = fields.Str()\n", "name = fields.Str()\n    email = fields.Str()\n")],
                    "1 failed, 1 passed"),
    # declarative_base's MetaData: "Table 'users' is already defined"
    "sqlalchemy": ("inputs_sqlalchemy", "pkg/models.py",
                   [("Column, Integer\n", "Column, Integer, String\n"),
                    ("primary_key=True)\n", "primary_key=True)\n    name = Column(String)\n")],
                   "1 failed, 1 passed"),
    # a click group in one module, its commands added in another
    "click": ("inputs_click", "pkg/commands.py", [('"v1"', '"v2!"')], "1 failed, 1 passed"),
    "click-rename": ("inputs_click", "pkg/commands.py",
                     [("@cli.command()", '@cli.command(name="hi")')], "2 failed"),
}


@pytest.mark.parametrize("case", REGISTRIES)
def test_registry_filled_by_an_edited_module(pz, case):
    name, path, edits, after = REGISTRIES[case]
    root = pz.project(name)
    srv = pz.start(root)
    check(pz, root, "2 passed")

    def edit():
        for old, new in edits:
            replace_in(root / path, old, new)

    edit_and_check(pz, srv, root, edit, after)


# --- 7. the project is one of pytest's own dependencies ---------------------------------


def test_project_is_a_package_pytest_imports(pz):
    # src/iniconfig, a copy of the installed package, shadows it on
    # PYTHONPATH=src: pytest itself imports the project's copy.
    root = pz.project("inputs_iniconfig")
    pkg = root / "src" / "iniconfig"
    shutil.copytree("/usr/lib/python3/dist-packages/iniconfig", pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {"PYTHONPATH": "src"}
    srv = pz.start(root, env=env, cwd=root)
    check(pz, root, "1 failed, 1 passed", env)

    def edit():
        with open(pkg / "__init__.py", "a") as f:
            f.write("\nZYGOTE_MARK = 1\n")

    zyg = edit_and_check(pz, srv, root, edit, "2 passed", env)
    assert_fresh(zyg)


# --- 8. reload = fresh --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ini", "env"])
def test_reload_fresh_waits_for_a_fresh_zygote(pz, how):
    root = pz.project("inputs_fresh")
    if how == "ini":
        (root / ".pytest-zygote.ini").write_text("[pytest-zygote]\nreload = fresh\n")
        srv = pz.start(root)
    else:
        srv = pz.start(root, env={"PYTEST_ZYGOTE_RELOAD": "fresh"})
    check(pz, root, "1 passed")
    zyg = edit_and_check(pz, srv, root,
                         lambda: replace_in(root / "pkg" / "mod.py", "VALUE = 1", "VALUE = 22"),
                         "1 failed")
    assert_fresh(zyg)


# --- 9. Django settings chosen by the run ---------------------------------------------------


@pytest.mark.parametrize("where", WHERE)
def test_django_settings_module_of_the_run(pz, where):
    # pytest.ini names proj.settings (FEATURE = "a"); proj.other_settings
    # has FEATURE = "b"; proj.features reads settings.FEATURE when it is
    # imported (by a test module, so the zygote imports it too). The server
    # starts without DJANGO_SETTINGS_MODULE or with the ini's value, as
    # a developer may have exported it. pytest-django picks --ds, else
    # DJANGO_SETTINGS_MODULE, else the ini.
    pytest.importorskip("pytest_django")
    root = pz.project("inputs_django")
    pz.start(root, env={"DJANGO_SETTINGS_MODULE": "proj.settings" if where == "server-with"
                        else None})
    default = {"DJANGO_SETTINGS_MODULE": None}
    other = {"DJANGO_SETTINGS_MODULE": "proj.other_settings"}
    check(pz, root, "3 passed", default, what="(pytest.ini's settings)")
    check(pz, root, "2 failed, 1 passed", other, what="(DJANGO_SETTINGS_MODULE)")
    check(pz, root, "2 failed, 1 passed", default, ARGS + ["--ds", "proj.other_settings"],
          what="(--ds)")
    check(pz, root, "3 passed", {"DJANGO_SETTINGS_MODULE": "proj.settings"},
          what="(DJANGO_SETTINGS_MODULE=proj.settings)")
    check(pz, root, "2 failed, 1 passed", {"DJANGO_SETTINGS_MODULE": "proj.settings"},
          ARGS + ["--ds", "proj.other_settings"], what="(--ds over the environment)")
    check(pz, root, "3 passed", default, what="(pytest.ini's settings, afterwards)")
