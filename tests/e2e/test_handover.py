"""The pytest plugin: `pytest -p pytest_zygote.plugin ARGS` (here from the
project's addopts) hands the run to the zygote for its rootdir, with the
predecessor's flags and PYTEST_DAEMON_* variables as aliases."""

import json
import os
import re
import sys

import pytest

import pz_util

PLUGIN_SRC = str(pz_util.REPO / "plugin" / "src")


def _env(pz, extra=None):
    env = {"PYTHONPATH": PLUGIN_SRC, "PYTEST_ZYGOTE_BIN": pz.zbin}
    env.update(extra or {})
    return env


def _pytest(pz, root, *args, env=None, pre=()):
    return pz.call([sys.executable, *pre, "-m", "pytest", *args], cwd=root, env=_env(pz, env))


def _runs(pz, root, *extra):
    r = pz.cli("status", "--root", root, "--json", *extra)
    if r.rc != 0:
        return None
    import json
    return json.loads(r.out)["runs"]


def test_no_zygote_runs_in_process_as_plain_pytest(pz):
    # The plugin in committed addopts, on a machine without a server (CI):
    # pytest runs in its own process, with plain pytest's output and exit
    # code, and says once (not with -q) how to start a zygote.
    # --zygote-require makes it an error instead.
    root = pz.project("handover")
    (root / "tests" / "test_fails.py").write_text("def test_fails():\n    assert 0\n")
    for args in (("-p", "no:cacheprovider"), ("-q", "-p", "no:cacheprovider")):
        plain = pz.call([sys.executable, "-m", "pytest", *args, "-p", "no:pytest_zygote",
                         "-o", "addopts="], cwd=root, env=_env(pz))
        r = _pytest(pz, root, *args)
        assert (r.rc, plain.rc) == (1, 1), (r, plain)
        assert pz_util.normalise(r.out) == pz_util.normalise(plain.out), (r, plain)
        said = "no zygote is running for %s; running in this process" % root
        assert (said in r.err) == ("-q" not in args), r
        assert "IN-PROCESS" in _pytest(pz, root, *args, "-s", "-k", "where").out
    r = _pytest(pz, root, "-q", "--zygote-require")
    assert r.rc == 69 and "pytest --zygote-start" in r.err, r


def test_start_run_stop(pz):
    root = pz.project("handover")
    r = _pytest(pz, root, "--zygote-start")
    assert r.rc == 0, r
    assert pz_util.READY_RE.match(r.out.strip().splitlines()[-1]), r
    r = _pytest(pz, root, "-q", "-s", "-p", "no:cacheprovider")
    assert r.rc == 0, r
    assert "IN-ZYGOTE" in r.out, r
    assert _runs(pz, root) == 1
    plain = _pytest(pz, root, "-q", "-s", "-p", "no:cacheprovider", "--zygote-disable")
    assert "IN-PROCESS" in plain.out, plain
    assert pz_util.normalise(plain.out.replace("IN-PROCESS", "X")) == \
        pz_util.normalise(r.out.replace("IN-ZYGOTE", "X"))
    r = _pytest(pz, root, "--stop-daemon")
    assert r.rc == 0, r
    assert _runs(pz, root) is None


def test_hands_over_before_other_plugins_are_imported(pz, tmp_path):
    """The hand-over happens when pytest registers the plugin, before it
    imports the plugins named after it (and the installed ones): the pytest
    process pays for Python, pytest and the ini file only. Those plugins are
    imported in the test child."""
    root = pz.project("handover")
    assert _pytest(pz, root, "--zygote-start").rc == 0
    lib = tmp_path / "lib"
    lib.mkdir()
    log = tmp_path / "imports.txt"
    (lib / "late_plugin.py").write_text(
        "import os, sys\n"
        "with open(os.environ['LATE_LOG'], 'a') as f:\n"
        "    f.write('zygote\\n' if 'pytest_zygote._zygote' in sys.modules else 'pytest\\n')\n")
    r = _pytest(pz, root, "-q", "-p", "late_plugin",
                env={"PYTHONPATH": PLUGIN_SRC + os.pathsep + str(lib), "LATE_LOG": str(log)})
    assert r.rc == 0, r
    assert log.read_text() == "zygote\n", log.read_text()
    plain = _pytest(pz, root, "-q", "-p", "late_plugin", "--zygote-disable",
                    env={"PYTHONPATH": PLUGIN_SRC + os.pathsep + str(lib), "LATE_LOG": str(log)})
    assert plain.rc == 0 and log.read_text() == "zygote\npytest\n", log.read_text()


def test_predecessor_names(pz):
    root = pz.project("handover")
    r = _pytest(pz, root, "-q", "-s", env={"PYTEST_DAEMON_START_IF_NEEDED": "True"})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    # --daemon restarts a running one
    pid = _runs(pz, root)
    assert pid == 1
    r = _pytest(pz, root, "--daemon")
    assert r.rc == 0, r
    assert _runs(pz, root) == 0, "a fresh zygote has served no run"
    for flag_env in ({"PYTEST_DAEMON_DISABLE": "1"}, {"PYTEST_DAEMON_DISABLE": "TRUE"}):
        r = _pytest(pz, root, "-q", "-s", env=flag_env)
        assert r.rc == 0 and "IN-PROCESS" in r.out, r
    r = _pytest(pz, root, "-q", "-s", "--daemon-disable")
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    assert _runs(pz, root) == 0


def test_daemon_port_is_ignored_unless_ports_are_instances(pz):
    # launch.json files of pytest-hot-reloading carry its default port: it
    # selects nothing here (the project's one zygote serves the run) ...
    root = pz.project("handover")
    assert _pytest(pz, root, "--zygote-start").rc == 0
    r = _pytest(pz, root, "-q", "-s", "--daemon-port", "4852")
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    r = _pytest(pz, root, "-q", "-s", env={"PYTEST_DAEMON_PORT": "4852"})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    assert _runs(pz, root) == 2
    # ... unless PYTEST_ZYGOTE_PORT_INSTANCES=1 asks for a zygote per port.
    ports = {"PYTEST_ZYGOTE_PORT_INSTANCES": "1"}
    r = _pytest(pz, root, "-q", "-s", "--daemon-port", "4852", env=ports)
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    r = _pytest(pz, root, "--daemon-port", "4852", "--zygote-start", env=ports)
    assert r.rc == 0, r
    r = _pytest(pz, root, "-q", "-s", env=dict(ports, PYTEST_DAEMON_PORT="4852"))
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    assert _runs(pz, root, "--instance", "4852") == 1
    assert _runs(pz, root) == 2
    assert pz.cli("stop", "--root", root, "--instance", "4852").rc == 0


def test_predecessor_watch_globs_keep_their_meaning(pz, tmp_path):
    # `pytest --daemon --daemon-watch-globs ./pkg/*.py`, run from a
    # subdirectory: relative to where pytest runs, '*' crossing '/'.
    root = pz.project("handover")
    for d in ("pkg/sub", "other"):
        os.makedirs(root / d)
    for f in ("pkg/sub/deep.py", "other/o.py"):
        (root / f).write_text("X = 1\n")
    env = {"PYTEST_ZYGOTE_SETTLE_MS": "3600000"}
    r = pz.call([sys.executable, "-m", "pytest", "--daemon", "--daemon-watch-globs", "../pkg/*.py",
                 "--daemon-ignore-watch-globs", "../pkg/sub/skip*"],
                cwd=root / "tests", env=_env(pz, env))
    assert r.rc == 0, r
    (root / "pkg" / "sub" / "skip_me.py").write_text("X = 1\n")
    for f in ("other/o.py", "pkg/sub/deep.py", "tests/test_where.py"):
        with open(root / f, "a") as fh:
            fh.write("# touched\n")
    st = {}

    def settled():
        st.update(json.loads(pz.cli("status", "--root", root, "--json").out))
        return st.get("dirty_count", 0) > 0
    assert pz_util.wait_until(settled, timeout=10), st
    st.update(json.loads(pz.cli("status", "--root", root, "--json").out))
    assert sorted(os.path.relpath(p, root) for p in st["dirty"]) == ["pkg/sub/deep.py"], st


def test_options_without_meaning_are_accepted_and_said_so(pz):
    root = pz.project("handover")
    r = _pytest(pz, root, "-q", "--zygote-disable", "--pytest-name", "pytest",
                "--daemon-timeout", "5", "--daemon-do-not-autowatch-fixtures")
    assert r.rc == 0, r
    for opt in ("--pytest-name", "--daemon-timeout", "--daemon-do-not-autowatch-fixtures"):
        assert r.err.count(opt + " (") == 1, r.err


def test_under_a_debugger_runs_in_process(pz):
    root = pz.project("handover")
    assert _pytest(pz, root, "--zygote-start").rc == 0
    pre = ("-c", "import sys; sys.settrace(lambda *a: None); import pytest; "
                 "raise SystemExit(pytest.console_main())")
    r = pz.call([sys.executable, *pre, "-q", "-s"], cwd=root, env=_env(pz))
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    assert "debugger" in r.err, r
    r = pz.call([sys.executable, *pre, "-q", "-s", "--zygote-force"], cwd=root, env=_env(pz))
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r


def test_under_coverage_runs_in_process_and_says_so(pz, tmp_path):
    # `coverage run -m pytest` traces this process; the zygote's child would
    # not be measured. The notice names coverage, not a debugger.
    pytest.importorskip("coverage")
    root = pz.project("handover")
    assert _pytest(pz, root, "--zygote-start").rc == 0
    data = tmp_path / "cov.data"
    r = pz.call([sys.executable, "-m", "coverage", "run", "--data-file", str(data), "-m",
                 "pytest", "-q", "-s", "-p", "no:cacheprovider"], cwd=root, env=_env(pz))
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    assert "pytest-zygote: coverage is measuring this process; running in this process" \
        in r.err, r
    assert data.exists()
    assert _runs(pz, root) == 0


def test_ide_plugin_from_the_clients_pythonpath(pz, tmp_path):
    """VS Code's test explorer passes its own plugin with -p from a directory
    only its PYTHONPATH has, and names a pipe in the environment."""
    root = pz.project("handover")
    ide = tmp_path / "ide"
    ide.mkdir()
    (ide / "ide_reporter.py").write_text(
        "import os\n"
        "def pytest_collection_finish(session):\n"
        "    with open(os.environ['IDE_PIPE_NAME'], 'w') as f:\n"
        "        f.write('%d items' % len(session.items))\n")
    assert _pytest(pz, root, "--zygote-start").rc == 0
    out = tmp_path / "pipe.txt"
    r = _pytest(pz, root, "-q", "-p", "ide_reporter",
                env={"PYTHONPATH": PLUGIN_SRC + os.pathsep + str(ide),
                     "IDE_PIPE_NAME": str(out)})
    assert r.rc == 0, r
    assert out.read_text() == "2 items"
    assert _runs(pz, root) == 1


@pytest.mark.parametrize("module", ["workaround", "workarounds"])
def test_pytest_hot_reloading_project_runs_unchanged(pz, module):
    """-p pytest_hot_reloading.plugin and register_workaround from
    pytest_hot_reloading.workaround(s), from a source checkout."""
    root = pz.project("hot_reloading", "hot_reloading_" + module)

    def pytest_(*args, env=None):
        return _pytest(pz, root, *args, env=env)

    pz_util.hot_reloading_flow(pytest_, root, module)
    assert _pytest(pz, root, "--stop-daemon").rc == 0
    plain = _pytest(pz, root, "-q", "-s", "--daemon-disable")
    assert plain.rc == 0 and "IN-PROCESS" in plain.out, plain


def test_interpreter_flags_are_never_dropped(pz):
    """The client sends the environment, not the interpreter's own flags:
    `python -X dev -m pytest` runs in its own process (dev mode on, as plain
    pytest), saying why; PYTHONDEVMODE=1 is handed over, and the run is
    served by a zygote started with it (dev mode on, in the zygote)."""
    root = pz.project("handover")
    pz.start(root)
    args = ("-q", "-s", "-p", "no:cacheprovider", "-k", "where or dev")
    (root / "tests" / "test_dev.py").write_text(
        "import sys\n\ndef test_dev():\n    print('DEV=%d' % sys.flags.dev_mode)\n")
    r = _pytest(pz, root, *args, pre=("-X", "dev"))
    assert r.rc == 0 and "IN-PROCESS" in r.out and "DEV=1" in r.out, r
    assert "runs with -X dev" in r.err, r
    r = _pytest(pz, root, *args, env={"PYTHONDEVMODE": "1"})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "DEV=1" in r.out, r
    assert "PYTHONDEVMODE (an interpreter setting)" in r.err, r
    r = _pytest(pz, root, *args)
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "DEV=0" in r.out, r


def test_xdist_with_the_plugin_active(pz):
    # pytest -n 2 with the plugin in addopts: xdist's workers load the plugin
    # too and must run where they are. Without a server everything runs in
    # process; with one the controller is handed over as one run. Both end
    # as plain pytest -n 2 does, test by test.
    pytest.importorskip("xdist")
    root = pz.project("plugin_xdist")
    (root / "pytest.ini").write_text(
        "[pytest]\ntestpaths = tests\naddopts = -p pytest_zygote.plugin\n")
    args = ("-n", "2", "-v", "-p", "no:cacheprovider")

    def outcomes(r):
        # "[gw0] [ 50%] PASSED tests/test_work.py::test_a"
        return sorted(re.findall(r"\b(PASSED|FAILED|ERROR|SKIPPED) (\S+::\S+)", r.out))

    plain = pz.call([sys.executable, "-m", "pytest", *args, "-p", "no:pytest_zygote",
                     "-o", "addopts="], cwd=root, env=_env(pz))
    assert plain.rc == 1 and outcomes(plain), plain
    r = _pytest(pz, root, *args)
    assert (r.rc, outcomes(r)) == (plain.rc, outcomes(plain)), (r, plain)
    pz.start(root)
    r = _pytest(pz, root, *args)
    assert (r.rc, outcomes(r)) == (plain.rc, outcomes(plain)), r.out + r.err
    assert "waiting:" not in r.err, r
    # one run, whose two workers are runs too (forks of the zygote)
    assert _runs(pz, root) == 3, r


def test_daemon_use_os_events_is_a_flag(pz):
    # pytest-hot-reloading's start command passes it alone; followed by a
    # path, the path is still the path to run (it used to be taken as the
    # option's value, and the whole suite ran).
    root = pz.project("handover")
    (root / "tests" / "test_other.py").write_text("def test_other():\n    pass\n")
    r = _pytest(pz, root, "--zygote-start", "--daemon-use-os-events")
    assert r.rc == 0 and pz_util.READY_RE.match(r.out.strip().splitlines()[-1]), r
    r = _pytest(pz, root, "--daemon-use-os-events", "tests/test_other.py", "-q",
                "-p", "no:cacheprovider")
    assert r.rc == 0 and "1 passed" in r.out, r
    assert _runs(pz, root) == 1
    import json
    st = json.loads(pz.cli("status", "--root", root, "--json").out)
    assert st["watching"] == "inotify", st


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_runtime_directory_of_another_user_is_no_server(pz, tmp_path):
    # Another user made the runtime directory first (/tmp/pytest-zygote-UID
    # when XDG_RUNTIME_DIR is unset) and holds a locked pid file in it: the
    # plugin must not hand over to a client that refuses the directory; pytest
    # runs in its own process, as plain pytest.
    import fcntl
    root = pz.project("handover")
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    env = {"PYTEST_ZYGOTE_RUNTIME_DIR": str(planted)}
    # the pid file's name, as the program says
    r = pz.cli("probe", "--root", root, env=env)
    assert r.rc == 0, r
    sock = re.search(r"^probe\.socket=(.*)$", r.out, re.M)[1]
    pid_file = planted / (os.path.basename(sock)[:-len(".sock")] + ".pid")
    planted.chmod(0o755)
    pid_file.write_text("1\n")
    nobody = 65534
    os.chown(planted, nobody, nobody)
    os.chown(pid_file, nobody, nobody)
    with open(pid_file) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        r = _pytest(pz, root, "-q", "-s", "-p", "no:cacheprovider", env=env)
    assert r.rc == 0 and "IN-PROCESS" in r.out and "2 passed" in r.out, r


def test_a_runner_scripts_sys_path_reaches_the_child(pz, tmp_path):
    # As IDE runners do: a script puts its helper directory on sys.path and
    # calls pytest.main() with the plugin named; the test imports a module
    # from there. Handed over, it imports it as in the script's process.
    root = pz.project("handover")
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "runner_helper.py").write_text("MARK = 'from-the-runner'\n")
    (root / "tests" / "test_helper.py").write_text(
        "import os\n\ndef test_helper():\n    import runner_helper\n"
        "    print('HELPER', runner_helper.MARK)\n"
        "    print('SENT', 'PYTEST_ZYGOTE_SYS_PATH' in os.environ)\n")
    script = tmp_path / "run_tests.py"
    script.write_text(
        "import sys\nsys.path.insert(0, %r)\nimport pytest\n"
        "sys.exit(pytest.main(['-q', '-s', '-p', 'no:cacheprovider', 'tests']))\n"
        % str(helpers))
    assert _pytest(pz, root, "--zygote-start").rc == 0
    r = pz.call([sys.executable, str(script)], cwd=root, env=_env(pz))
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "HELPER from-the-runner" in r.out, r
    assert "SENT False" in r.out, r  # how it travelled is not the tests' to see
    assert _runs(pz, root) == 1
