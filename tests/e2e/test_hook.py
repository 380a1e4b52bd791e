"""The interpreter-start hook (`python3 -m pytest_zygote.hook install`): a
`.pth` line that hands `python -m pytest` and `pytest` commands to a running
zygote before pytest is imported, and otherwise leaves pytest (and the
plugin) to start as usual. Each test installs it into a private user site
directory (PYTHONUSERBASE), with the package made importable there as an
installation would; the zygote is started with the same environment."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import pz_util

PLUGIN_SRC = str(pz_util.REPO / "plugin" / "src")


@pytest.fixture
def hook_env(tmp_path):
    """The environment of a user whose interpreter has the hook installed."""
    base = tmp_path / "userbase"
    env = {"PYTHONUSERBASE": str(base), "PATH": os.environ.get("PATH", "/usr/bin")}
    site_dir = subprocess.run([sys.executable, "-c",
                               "import site; print(site.getusersitepackages())"],
                              env=env, capture_output=True, text=True, check=True).stdout.strip()
    os.makedirs(site_dir)
    # The package, as an installation puts it on sys.path (this .pth sorts
    # after the hook's: the hook must find the package on its own).
    with open(os.path.join(site_dir, "pytest_zygote_src.pth"), "w") as f:
        f.write(PLUGIN_SRC + "\n")
    r = subprocess.run([sys.executable, "-m", "pytest_zygote.hook", "install", "--dir", site_dir],
                       env=dict(env, PYTHONPATH=PLUGIN_SRC), capture_output=True, text=True)
    assert r.returncode == 0 and "installed %s/pytest_zygote_hook.pth" % site_dir in r.stdout, r
    return {"PYTHONUSERBASE": str(base), "SITE_DIR": site_dir}


def _env(pz, hook_env, extra=None):
    env = {"PYTEST_ZYGOTE_BIN": pz.zbin, "PYTHONUSERBASE": hook_env["PYTHONUSERBASE"],
           "PYTEST_ZYGOTE_HOOK": "verbose"}
    env.update(extra or {})
    return env


def _pytest(pz, hook_env, cwd, *args, env=None, python=sys.executable):
    return pz.call([python, "-m", "pytest", *args], cwd=cwd, env=_env(pz, hook_env, env))


def _plain(pz, cwd, *args):
    """Plain pytest: no hook, no plugin."""
    return pz.call([sys.executable, "-m", "pytest", *args, "-p", "no:pytest_zygote.plugin",
                    "-o", "addopts="], cwd=cwd, env={"PYTHONPATH": PLUGIN_SRC})


def _runs(pz, root):
    r = pz.cli("status", "--root", root, "--json")
    return json.loads(r.out)["runs"] if r.rc == 0 else None


HANDED = "pytest-zygote hook: handing over"
STARTS = "pytest-zygote hook: pytest starts as usual: "


def test_install_status_remove(pz, hook_env, tmp_path):
    env = {"PYTHONUSERBASE": hook_env["PYTHONUSERBASE"], "PYTHONPATH": PLUGIN_SRC}
    r = pz.call([sys.executable, "-m", "pytest_zygote.hook", "status"], env=env)
    assert r.rc == 0 and "installed: %s/pytest_zygote_hook.pth" % hook_env["SITE_DIR"] in r.out, r
    # Any other program: nothing imported, nothing said, sys.path as without it.
    probe = "import sys; print(sorted(m for m in sys.modules if 'zygote' in m), sys.path)"
    with_hook = pz.call([sys.executable, "-c", probe], env=env)
    for script in ("pytest_helper.py", "run_pytest.py"):  # names that mention pytest
        (tmp_path / script).write_text(probe + "\n")
        r = pz.call([sys.executable, str(tmp_path / script)], env=env)
        assert r.rc == 0 and r.out.startswith("[] ") and r.err == "", r
    r = pz.call([sys.executable, "-m", "pytest_zygote.hook", "remove", "--dir",
                 hook_env["SITE_DIR"]], env=env)
    assert r.rc == 0 and "removed" in r.out, r
    without = pz.call([sys.executable, "-c", probe], env=env)
    assert with_hook.rc == without.rc == 0 and with_hook.out == without.out, (with_hook, without)
    assert with_hook.out.startswith("[] ") and with_hook.err == "", with_hook
    r = pz.call([sys.executable, "-m", "pytest_zygote.hook", "status"], env=env)
    assert r.rc == 1 and "not installed" in r.out, r
    # A directory that cannot be written: a clear error, exit 73.
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = pz.call([sys.executable, "-m", "pytest_zygote.hook", "install", "--dir",
                 str(blocker / "site")], env=env)
    assert r.rc == 73 and "cannot write %s/site/pytest_zygote_hook.pth" % blocker in r.err, r


def test_hands_over_before_pytest_is_imported(pz, hook_env):
    root = pz.project("handover")  # addopts = -p pytest_zygote.plugin
    (root / "tests" / "test_fails.py").write_text("def test_fails():\n    assert 0\n")
    pz.start(root, env=_env(pz, hook_env))
    args = ("-p", "no:cacheprovider", "-rA", "-v")
    # twice in a row, then after an edit: per test id as plain pytest
    for what in ("(start hook)", "(start hook, again)"):
        r = _pytest(pz, hook_env, root, *args)
        assert HANDED in r.err, r
        pz_util.assert_same_outcomes(_plain(pz, root, *args), r, what)
    (root / "tests" / "test_fails.py").write_text(
        "def test_fails():\n    assert 1\n\n\ndef test_new():\n    assert 0\n")
    r = _pytest(pz, hook_env, root, *args)
    assert HANDED in r.err and "test_fails.py::test_new FAILED" in r.out, r
    pz_util.assert_same_outcomes(_plain(pz, root, *args), r, "(start hook, after an edit)")
    r = _pytest(pz, hook_env, root, "-q", "-s", "-k", "where")
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and HANDED in r.err, r
    # From a subdirectory, with a node id: the rootdir pytest would find.
    r = _pytest(pz, hook_env, root / "tests", "-q", "-s", "test_where.py::test_where")
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "1 passed" in r.out, r
    assert "--root %s " % root in r.err, r
    # pytest's own script (when it runs this interpreter)
    script = shutil.which("pytest")
    if script and open(script).readline().strip() == "#!" + sys.executable:
        r = pz.call([script, "-q", "-s", "-k", "where"], cwd=root, env=_env(pz, hook_env))
        assert r.rc == 0 and "IN-ZYGOTE" in r.out and HANDED in r.err, r
    assert _runs(pz, root) >= 4


def test_plugin_named_in_pyproject_and_flags_it_may_drop(pz, hook_env, tmp_path):
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\naddopts = ["-p", "pytest_zygote.plugin"]\n')
    (root / "tests" / "test_a.py").write_text(
        "import sys\n\ndef test_a():\n    print('Z' if 'pytest_zygote._zygote' in sys.modules "
        "else 'P')\n")
    pz.start(root, env=_env(pz, hook_env))
    for extra in ((), ("--zygote-start-if-needed",), ("--daemon-port", "4852")):
        r = _pytest(pz, hook_env, root, "-q", "-s", *extra)
        assert r.rc == 0 and "Z\n" in r.out and HANDED in r.err, (extra, r)
        assert "4852" not in r.err.split(HANDED)[1].splitlines()[0], r


CASES = [
    # (name, extra env, extra args, server running, why, where the run went)
    ("no server", {}, (), False, "no zygote is running for", "IN-PROCESS"),
    ("plugin off", {}, ("-p", "no:pytest_zygote.plugin"), True,
     "the plugin is disabled with -p no:", "IN-PROCESS"),
    ("disabled", {"PYTEST_ZYGOTE_DISABLE": "1"}, (), True, "PYTEST_ZYGOTE_DISABLE is set",
     "IN-PROCESS"),
    ("nested", {"PYTEST_ZYGOTE_CHILD": "1"}, (), True, "PYTEST_ZYGOTE_CHILD is set",
     "IN-PROCESS"),
    ("xdist worker", {"PYTEST_XDIST_WORKER": "gw0"}, (), True, "PYTEST_XDIST_WORKER is set",
     "IN-PROCESS"),
    # left to the plugin, which hands over
    ("rootdir", {}, ("--rootdir", "."), True, "--rootdir is left to pytest", "IN-ZYGOTE"),
    ("zygote flag", {}, ("--zygote-force",), True, "--zygote-force is left to pytest",
     "IN-ZYGOTE"),
    ("warnings", {}, ("-W", "ignore::DeprecationWarning"), True, None, "IN-ZYGOTE"),
]


@pytest.mark.parametrize("name,env,args,running,why,where", CASES, ids=[c[0] for c in CASES])
def test_declines_what_it_cannot_decide(pz, hook_env, name, env, args, running, why, where):
    root = pz.project("handover")
    if running:
        pz.start(root, env=_env(pz, hook_env))
    r = _pytest(pz, hook_env, root, "-q", "-s", "-p", "no:cacheprovider", *args, env=env)
    assert r.rc == 0 and where in r.out, r
    if why is None:
        assert HANDED in r.err, r
    else:
        assert STARTS + why in r.err and HANDED not in r.err, r
    if where == "IN-PROCESS":
        plain = _plain(pz, root, "-q", "-s", "-p", "no:cacheprovider", *args)
        assert pz_util.normalise(r.out) == pz_util.normalise(plain.out), (r, plain)


def test_hook_off_leaves_the_plugin(pz, hook_env):
    root = pz.project("handover")
    pz.start(root, env=_env(pz, hook_env))
    r = _pytest(pz, hook_env, root, "-q", "-s", env={"PYTEST_ZYGOTE_HOOK": "0"})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "hook" not in r.err, r


def test_another_interpreter_is_left_to_the_plugin(pz, hook_env, tmp_path):
    # A virtualenv's python where the zygote runs the system's: the hook
    # declines, the plugin runs pytest in-process and says why.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
    root = pz.project("handover")
    pz.start(root, env=_env(pz, hook_env))
    r = _pytest(pz, hook_env, root, "-q", "-s", python=str(venv / "bin" / "python"))
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    assert STARTS + "the zygote runs %s" % sys.executable in r.err, r
    assert "running in this process" in r.err, r


def test_a_pytest_inside_a_run_runs_in_its_own_process(pz, hook_env):
    # A test that runs pytest on its own project (a plugin's test suite does)
    # with one run slot: handed over, it would wait for the run that waits
    # for it. It runs in its own process, through the hook and the plugin.
    root = pz.project("handover")
    (root / "tests" / "test_nested.py").write_text(
        "import subprocess, sys\n\n"
        "def test_nested():\n"
        "    for env in ({}, {'PYTEST_ZYGOTE_HOOK': '0'}):\n"
        "        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-s', '-p',\n"
        "                            'no:cacheprovider', 'tests/test_where.py'],\n"
        "                           capture_output=True, text=True, timeout=120,\n"
        "                           env=dict(__import__('os').environ, **env))\n"
        "        assert r.returncode == 0 and 'IN-PROCESS' in r.stdout, r\n")
    pz.start(root, env=_env(pz, hook_env, {"PYTEST_ZYGOTE_MAX_RUNS": "1"}))
    r = _pytest(pz, hook_env, root, "-q", "-p", "no:cacheprovider", "tests/test_nested.py")
    assert r.rc == 0 and "1 passed" in r.out and HANDED in r.err, r


LAYOUTS = [
    # (files, cwd, args): the hook's rootdir must be pytest's
    ({"pyproject.toml": "[tool.pytest.ini_options]\n", "a/b/test_x.py": ""}, "a/b", ()),
    ({"pyproject.toml": "[tool.black]\n", "a/tox.ini": "[pytest]\n", "a/b/test_x.py": ""},
     "a/b", ()),
    ({"setup.cfg": "[tool:pytest]\n", "a/tox.ini": "[tox]\n", "a/.pytest.ini": "[other]\n",
      "a/b/test_x.py": ""}, "a", ("b/test_x.py::test_x",)),
    ({"pytest.ini": "", "a/pytest.ini": "[pytest]\n", "a/test_x.py": "", "c/test_y.py": ""},
     ".", ("a/test_x.py",)),
    ({"pytest.ini": "", "a/pytest.ini": "[pytest]\n", "a/test_x.py": "", "c/test_y.py": ""},
     ".", ("a/test_x.py", "c")),
    ({"pytest.ini": "[pytest]\n", "tests/pytest.ini": "", "tests/test_x.py": ""},
     ".", ("-k", "tests")),
    # an option pytest does not know yet when it looks for the rootdir (xdist's)
    ({"pytest.ini": "[pytest]\n", "tests/pytest.ini": "", "tests/test_x.py": ""},
     ".", ("--rsyncdir", "tests")),
]


@pytest.mark.parametrize("files,cwd,args", LAYOUTS, ids=[str(i) for i in range(len(LAYOUTS))])
def test_rootdir_is_the_one_pytest_finds(pz, tmp_path, files, cwd, args):
    root = tmp_path / "t"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    r = pz.call([sys.executable, "-m", "pytest", "--co", "-p", "no:cacheprovider", *args],
                cwd=root / cwd, env={"PYTHONPATH": PLUGIN_SRC})
    lines = [x for x in r.out.splitlines() if x.startswith("rootdir: ")]
    assert lines, r
    theirs = lines[0][len("rootdir: "):].split(",")[0]
    code = ("import os, sys, json; from pytest_zygote import _fast; "
            "print(_fast.rootdir(_fast._split(json.loads(sys.argv[1]))[1], os.getcwd())[0])")
    mine = pz.call([sys.executable, "-c", code, json.dumps(list(args))], cwd=root / cwd,
                   env={"PYTHONPATH": PLUGIN_SRC})
    assert mine.rc == 0 and mine.out.strip() == theirs, (mine, r.out)
