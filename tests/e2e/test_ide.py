"""IDE flows, driven by the example files in examples/ide: VS Code's test
explorer (its reporter plugin imported with -p from a directory only the
client's PYTHONPATH has, results sent to a Unix socket named in the
environment), a VS Code debug launch (debugpy loaded: run in-process), the
JetBrains run configuration, and pytest.main(plugins=[...]) as IDE runners
call it."""

import json
import os
import socket
import sys
import threading
import xml.etree.ElementTree as ET

import pz_util

PLUGIN_SRC = str(pz_util.REPO / "plugin" / "src")
IDE = pz_util.REPO / "examples" / "ide"

# A stand-in for VS Code's vscode_pytest plugin: it reports collected items
# and results as JSON to the Unix socket named by TEST_RUN_PIPE.
REPORTER = '''
import json, os, socket

def _send(payload):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["TEST_RUN_PIPE"])
    s.sendall((json.dumps(payload) + "\\n").encode())
    s.close()

def pytest_collection_finish(session):
    _send({"event": "discovery", "tests": [i.nodeid for i in session.items]})

def pytest_runtest_logreport(report):
    if report.when == "call":
        _send({"event": "result", "test": report.nodeid, "outcome": report.outcome})
'''

# VS Code runs tests through a script that calls pytest.main() in-process.
RUN_SCRIPT = '''
import sys
import pytest
sys.exit(pytest.main(["-p", "vscode_pytest", *sys.argv[1:]]))
'''


class Pipe:
    """A Unix socket server collecting JSON lines, like the IDE's side."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.messages = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            for line in data.decode().splitlines():
                self.messages.append(json.loads(line))

    def close(self):
        self.sock.close()


def _vscode_args():
    settings = json.loads((IDE / "vscode" / ".vscode" / "settings.json").read_text())
    return settings["python.testing.pytestArgs"]


def _runs(pz, root):
    r = pz.cli("status", "--root", root, "--json")
    return json.loads(r.out)["runs"] if r.rc == 0 else None


def _ide_env(pz, tmp_path, pipe):
    ext = tmp_path / "python_files"
    ext.mkdir(exist_ok=True)
    (ext / "vscode_pytest.py").write_text(REPORTER)
    (ext / "run_pytest_script.py").write_text(RUN_SCRIPT)
    return ext, {"PYTHONPATH": os.pathsep.join([PLUGIN_SRC, str(ext)]),
                 "PYTEST_ZYGOTE_BIN": pz.zbin, "TEST_RUN_PIPE": pipe.path}


def test_vscode_test_explorer_discovers_and_runs_through_the_zygote(pz, tmp_path):
    root = pz.project("handover", "explorer")
    pipe = Pipe(tmp_path / "run.sock")
    try:
        ext, env = _ide_env(pz, tmp_path, pipe)
        args = _vscode_args()  # -p pytest_zygote.plugin --zygote-start-if-needed
        # Discovery starts the zygote (start-if-needed) and collects there.
        r = pz.call([sys.executable, "-m", "pytest", "-p", "vscode_pytest", "--collect-only",
                     *args, str(root)], cwd=root, env=env)
        assert r.rc == 0, r
        assert _runs(pz, root) == 1, "discovery did not run in the zygote"
        found = [m for m in pipe.messages if m["event"] == "discovery"]
        assert len(found) == 1 and len(found[0]["tests"]) >= 2, pipe.messages
        ids = found[0]["tests"][:2]
        # A run of two of the discovered tests, by node id, via pytest.main().
        r = pz.call([sys.executable, str(ext / "run_pytest_script.py"), *args, *ids],
                    cwd=root, env=env)
        assert _runs(pz, root) == 2, "the run did not happen in the zygote: %r" % (r,)
        results = {m["test"]: m["outcome"] for m in pipe.messages if m["event"] == "result"}
        assert sorted(results) == sorted(ids), pipe.messages
        plain = pz.run_plain(["-q", *ids], cwd=root,
                             env={"PYTHONPATH": PLUGIN_SRC, "PYTEST_ZYGOTE_DISABLE": "1"})
        assert r.rc == plain.rc, (r, plain)
    finally:
        pipe.close()


def test_vscode_debug_launch_runs_in_process(pz, tmp_path):
    """launch.json's profile under a real debugpy: the plugin sees the
    debugger and runs in the pytest process, so breakpoints work."""
    root = pz.project("handover")
    pz.start(root)
    launch = json.loads((IDE / "vscode" / ".vscode" / "launch.json").read_text())
    conf = launch["configurations"][1]
    assert conf["module"] == "pytest"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-Xfrozen_modules=off", "-m", "debugpy", "--listen",
            "127.0.0.1:%d" % port, "-m", conf["module"], *conf["args"], "-s"]
    env = {"PYTHONPATH": PLUGIN_SRC, "PYTEST_ZYGOTE_BIN": pz.zbin,
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    r = pz.call(argv, cwd=root, env=env)
    assert r.rc == 0, r
    assert "IN-PROCESS" in r.out and "IN-ZYGOTE" not in r.out, r
    assert "pytest-zygote: a debugger is active; running in this process" in r.err, r
    assert _runs(pz, root) == 0


def test_jetbrains_run_configuration_hands_over(pz):
    root = pz.project("handover")
    conf = ET.parse(IDE / "jetbrains" / ".run" / "pytest (zygote).run.xml").find("configuration")
    opts = {o.get("name"): o.get("value") for o in conf.findall("option")}
    envs = {e.get("name"): e.get("value") for e in conf.find("envs")}
    assert opts["MODULE_MODE"] == "true"
    argv = [sys.executable, "-m", opts["SCRIPT_NAME"], *opts["PARAMETERS"].split(), "-s"]
    env = dict(envs, PYTHONPATH=PLUGIN_SRC, PYTEST_ZYGOTE_BIN=pz.zbin)
    r = pz.call(argv, cwd=root, env=env)  # starts the zygote: START_IF_NEEDED=1
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    assert _runs(pz, root) == 1


def test_plugin_modules_given_to_pytest_main_go_along(pz, tmp_path):
    root = pz.project("handover")
    pz.start(root)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "ide_marker.py").write_text(
        "def pytest_report_header(config):\n    return 'IDE-MARKER-HEADER'\n")
    code = ("import sys, pytest, ide_marker\n"
            "sys.exit(pytest.main(['-s'], plugins=[ide_marker]))\n")
    env = {"PYTHONPATH": os.pathsep.join([PLUGIN_SRC, str(lib)]), "PYTEST_ZYGOTE_BIN": pz.zbin}
    r = pz.call([sys.executable, "-c", code], cwd=root, env=env)
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "IDE-MARKER-HEADER" in r.out, r


def test_plugin_objects_given_to_pytest_main_run_in_process(pz):
    root = pz.project("handover")
    pz.start(root)
    code = ("import sys, pytest\n"
            "class Reporter:\n"
            "    def pytest_report_header(self, config):\n"
            "        return 'OBJECT-HEADER'\n"
            "sys.exit(pytest.main(['-s'], plugins=[Reporter()]))\n")
    r = pz.call([sys.executable, "-c", code], cwd=root,
                env={"PYTHONPATH": PLUGIN_SRC, "PYTEST_ZYGOTE_BIN": pz.zbin})
    assert r.rc == 0 and "IN-PROCESS" in r.out and "OBJECT-HEADER" in r.out, r
    assert "plugin objects that cannot be sent to the zygote (Reporter)" in r.err, r
    assert _runs(pz, root) == 0


def test_ide_files_name_no_interpreter():
    # The project's interpreter (a virtualenv's, usually) is the IDE's choice.
    for path in IDE.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".xml"):
            text = path.read_text()
            assert "/usr/bin/python" not in text and "defaultInterpreterPath" not in text, path
            if path.suffix == ".xml":
                for o in ET.parse(path).iter("option"):
                    if o.get("name") == "SDK_HOME":
                        assert o.get("value") == "", path


# PyCharm's pytest runner (the test tree): a helper script that puts its
# helpers directory on sys.path, imports the teamcity reporter module and
# hands it to pytest.main() with the targets. A stand-in with the same shape.
JB_REPORTER = '''
def pytest_runtest_logreport(report):
    if report.when == "call":
        print("##teamcity[testFinished name='%s' outcome='%s']" % (report.nodeid, report.outcome))
'''
JB_RUNNER = '''
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
import pytest
from teamcity import pytest_plugin
sys.exit(pytest.main(sys.argv[1:], [pytest_plugin]))
'''


def test_jetbrains_test_tree_runner_is_handed_over_warm(pz, tmp_path):
    root = pz.project("handover")
    pz.start(root)
    runner = tmp_path / "pycharm"
    (runner / "helpers" / "teamcity").mkdir(parents=True)
    (runner / "helpers" / "teamcity" / "__init__.py").write_text("")
    (runner / "helpers" / "teamcity" / "pytest_plugin.py").write_text(JB_REPORTER)
    (runner / "_jb_pytest_runner.py").write_text(JB_RUNNER)
    r = pz.call([sys.executable, str(runner / "_jb_pytest_runner.py"), "-s",
                 "tests/test_where.py"], cwd=root,
                env={"PYTHONPATH": PLUGIN_SRC, "PYTEST_ZYGOTE_BIN": pz.zbin})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    assert "##teamcity[testFinished name='tests/test_where.py::test_where' outcome='passed']" \
        in r.out, r
    assert _runs(pz, root) == 1
