"""The project's [pytest-zygote] section (read with inih in C): one
precedence, flags > environment > section > defaults; problems reported
with file and line. Also: the example file with every key is valid."""

import shutil

import pz_util
from test_watch_config import SETTLE, _dirty_after_touching


def _write(root, name, text):
    (root / name).write_text(text)


def test_bad_keys_and_values_stop_start_with_file_and_line(pz):
    root = pz.project("graph")
    _write(root, ".pytest-zygote.ini", "[pytest-zygote]\nsettle_ms = 10\ncolour = yes\n"
                                       "spare = maybe\n")
    r = pz.cli("start", "--root", root)
    assert r.rc == 64, r
    assert "%s/.pytest-zygote.ini:3: unknown key 'colour'" % root in r.err, r
    assert "%s/.pytest-zygote.ini:4: bad value for spare: 'maybe'" % root in r.err, r
    # elsewhere the same problems are warnings
    r = pz.cli("status", "--root", root)
    assert r.rc == 69 and "warning" in r.err and ".pytest-zygote.ini:3" in r.err, r


def test_section_applies(pz):
    root = pz.project("graph")
    _write(root, "pytest.ini", (root / "pytest.ini").read_text()
           + "\n[pytest-zygote]\nwatch_globs = pkg/*.py\n")
    assert _dirty_after_touching(pz, root, SETTLE, ["tests/test_leaf.py", "pkg/leaf.py"]) \
        == ["pkg/leaf.py"]


def test_pyproject_only_project_is_configurable(pz):
    root = pz.project("graph")
    ini = (root / "pytest.ini").read_text().replace("[pytest]", "[tool.pytest.ini_options]")
    (root / "pytest.ini").unlink()
    _write(root, "pyproject.toml", '[project]\nname = "graph"\nclassifiers = ["a", "b"]\n\n'
           + ini + '\n[tool.pytest-zygote]\nwatch_globs = "pkg/*.py"  # only the package\n')
    assert _dirty_after_touching(pz, root, SETTLE, ["tests/test_leaf.py", "pkg/leaf.py"]) \
        == ["pkg/leaf.py"]


def test_environment_beats_section(pz):
    root = pz.project("graph")
    _write(root, ".pytest-zygote.ini", "[pytest-zygote]\nwatch_globs = pkg/*.py\n")
    env = dict(SETTLE, PYTEST_ZYGOTE_WATCH_GLOBS="tests/*.py")
    assert _dirty_after_touching(pz, root, env, ["tests/test_leaf.py", "pkg/leaf.py"]) \
        == ["tests/test_leaf.py"]


def test_flag_beats_environment_and_section(pz):
    root = pz.project("graph")
    _write(root, ".pytest-zygote.ini", "[pytest-zygote]\npython = /nonexistent/python\n")
    r = pz.cli("start", "--root", root)
    assert r.rc != 0 and "/nonexistent/python" in r.err, r
    r = pz.cli("start", "--root", root, env={"PYTEST_ZYGOTE_PYTHON": "/nonexistent/env-python"})
    assert r.rc != 0 and "/nonexistent/env-python" in r.err, r
    srv = pz.start(root, "--python", "/usr/bin/python3",
                   env={"PYTEST_ZYGOTE_PYTHON": "/nonexistent/env-python"})
    assert srv.status()["python"] == "/usr/bin/python3"


def test_the_example_file_with_every_key_is_valid(pz):
    root = pz.project("graph")
    shutil.copy(pz_util.REPO / "examples" / "pytest-zygote.ini", root / ".pytest-zygote.ini")
    srv = pz.start(root)
    st = srv.status()
    assert st["state"] == "ready" and st["watching"] == "inotify", st


def test_bad_environment_values_stop_start_as_the_files_do(pz):
    # The same table and words for the environment as for the file: a bad
    # value stops start (exit 64), no server is left, nothing is written.
    root = pz.project("basic")
    for env, words in ((
            {"PYTEST_ZYGOTE_SPARE": "maybe"},
            "bad value for PYTEST_ZYGOTE_SPARE in the environment: 'maybe' is not true or false"),
            ({"PYTEST_ZYGOTE_MAX_RUNS": "lots"},
             "bad value for PYTEST_ZYGOTE_MAX_RUNS in the environment: 'lots' is not a whole "
             "number from 0 to 256"),
            ({"PYTEST_ZYGOTE_RELOAD": "always"},
             "bad value for PYTEST_ZYGOTE_RELOAD in the environment: 'always' is not child or "
             "fresh")):
        r = pz.cli("start", "--root", root, env=env)
        assert r.rc == 64 and words in r.err, r
        assert pz.cli("status", "--root", root).rc == 69
    # a run reads its own: checked by run, before anything is sent
    r = pz.run_zygote(["-q"], cwd=root, env={"PYTEST_ZYGOTE_TIMING": "0.5"})
    assert r.rc == 64 and "PYTEST_ZYGOTE_TIMING in the environment: '0.5'" in r.err, r
    # booleans mean the same everywhere: false is off, as 0 is
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SPARE": "false", "PYTEST_ZYGOTE_DEBUG": "off"})
    r = pz.run_zygote(["-q"], cwd=root, env={"PYTEST_ZYGOTE_TIMING": "no"})
    assert r.rc in (0, 1) and "page faults" not in r.err, r
    r = pz.run_zygote(["-q"], cwd=root, env={"PYTEST_ZYGOTE_TIMING": "Yes"})
    assert r.rc in (0, 1) and "page faults" in r.err, r
    log = open(srv.status()["log"]).read()
    assert "debug" not in log.lower(), log
    srv.stop()
