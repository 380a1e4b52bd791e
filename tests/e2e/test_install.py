"""Installation, both routes, for real: `meson install` into a prefix, and
`pip install --no-build-isolation --no-index .` into a fresh virtualenv.

Each route builds from a copy of the source tree, once per module (a meson
build each), and deletes the copy and its build directory before anything
installed runs: an installed binary must need neither. Nothing is installed
outside pytest's temporary directory.
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

import pz_util

BUILD_TIMEOUT = 900  # one meson build on a busy 2-core machine takes a minute or two
PY = "/usr/bin/python3"


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PYTHON", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _sh(argv, cwd=None, env=None):
    p = subprocess.run([str(a) for a in argv], cwd=cwd, env=env or _clean_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=BUILD_TIMEOUT)
    assert p.returncode == 0, "%s failed (%d):\n%s\n%s" % (argv, p.returncode, p.stdout[-3000:],
                                                          p.stderr[-3000:])
    return p


def _source_copy(dest):
    shutil.copytree(pz_util.REPO, dest, ignore=shutil.ignore_patterns(
        ".git", "build", "build-*", "__pycache__", ".pytest_cache", ".mesonpy-*", "*.pyc"))
    return dest


def _pkg_dir(base):
    """The one site-packages-like directory under base that holds pytest_zygote."""
    found = {p.parent.resolve() for p in base.glob("lib*/python3*/*-packages/pytest_zygote")}
    assert len(found) == 1, (base, found)  # (a virtualenv's lib64 is a symlink to lib)
    return found.pop()


# --- meson install --------------------------------------------------------------


@pytest.fixture(scope="module")
def meson_prefix(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meson-install")
    src = _source_copy(tmp / "src")
    build, prefix = tmp / "build", tmp / "prefix"
    _sh(["meson", "setup", build, src, "--prefix", prefix, "-Dpython=" + PY, "-Dtests=false"])
    _sh(["meson", "install", "-C", build])  # builds, then installs
    shutil.rmtree(src)
    shutil.rmtree(build)
    return prefix


def test_meson_install_runs_without_source_or_build_tree(pz, meson_prefix):
    binary = meson_prefix / "bin" / "pytest-zygote"
    assert os.access(binary, os.X_OK), binary
    server = meson_prefix / "bin" / "pytest-zygote-server"
    assert os.access(server, os.X_OK), server
    pkg = _pkg_dir(meson_prefix)
    assert (pkg / "pytest_zygote" / "_zygote.py").is_file()
    assert (pkg / "pytest_hot_reloading" / "workaround.py").is_file(), \
        "the original is absent here, so the compatibility package is installed"
    assert not list(pkg.glob("*.dist-info")), "meson install writes no distribution metadata"
    assert not list(pkg.rglob("__pycache__")), "no bytecode copied from the source tree"

    pz.zbin = str(binary)
    root = pz.project("handover")
    srv = pz.start(root)
    assert srv.status()["python"] == PY
    assert os.readlink("/proc/%d/exe" % srv.pid) == str(server), "the installed server runs"
    r = pz.run_zygote(["-q", "-s"], cwd=root)
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    # The handing-over pytest imports the installed package (PYTHONPATH: this
    # prefix is not on the interpreter's path) and finds the binary beside it.
    r = pz.call([PY, "-m", "pytest", "-q", "-s"], cwd=root, env={"PYTHONPATH": str(pkg)})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    assert srv.status()["runs"] == 2
    r = pz.cli("stop", "--root", root)
    assert r.rc == 0 and pz_util.STOPPED_RE.match(r.out.strip()), r


def _compat_installed(tmp, *options, env=None):
    """meson setup (no build): would the compatibility package be installed?
    Returns the failed process when setup fails."""
    build = tempfile.mkdtemp(dir=tmp)
    p = subprocess.run(["meson", "setup", build, str(pz_util.REPO), "-Dpython=" + PY,
                        "-Dtests=false", *options], env=env or _clean_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return p
    files = json.loads(_sh(["meson", "introspect", "--installed", build]).stdout)
    return any("pytest_hot_reloading" in f for f in files.values())


def test_compat_package_only_where_the_original_is_absent(tmp_path):
    """-Dhot_reloading_compat: auto installs it only when the interpreter cannot
    import pytest_hot_reloading already (installed where it cannot: see
    test_meson_install_...); enabled refuses to shadow it. Two meson setups
    without a build, about 10 s each."""
    original = tmp_path / "site"
    (original / "pytest_hot_reloading").mkdir(parents=True)
    (original / "pytest_hot_reloading" / "__init__.py").write_text("")
    with_original = dict(_clean_env(), PYTHONPATH=str(original))
    builds = tmp_path / "builds"
    builds.mkdir()

    assert _compat_installed(builds, env=with_original) is False
    p = _compat_installed(builds, "-Dhot_reloading_compat=enabled", env=with_original)
    assert not isinstance(p, bool) and p.returncode != 0, p
    assert "already imports pytest_hot_reloading from %s" % original in p.stdout, p.stdout[-2000:]


# --- pip install into a virtualenv ------------------------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pip-install")
    src = _source_copy(tmp / "src")
    v = tmp / "venv"
    _sh([PY, "-m", "venv", "--system-site-packages", v])
    _sh([v / "bin" / "pip", "install", "--no-build-isolation", "--no-index", src])
    shutil.rmtree(src)
    return v


def _vpytest(pz, venv, root, *args, env=None):
    """`V/bin/python -m pytest ARGS` as a user would type it: no PYTHONPATH, no
    PYTEST_ZYGOTE_BIN, and the virtualenv not on PATH (not activated)."""
    return pz.call([venv / "bin" / "python", "-m", "pytest", *args], cwd=root, env=env)


def test_pip_installs_binary_package_and_entry_point(venv):
    assert os.access(venv / "bin" / "pytest-zygote", os.X_OK)
    assert os.access(venv / "bin" / "pytest-zygote-server", os.X_OK)
    pkg = _pkg_dir(venv)
    assert pkg.parent.parent.parent == venv, pkg
    assert (pkg / "pytest_zygote" / "plugin.py").is_file()
    assert (pkg / "pytest_hot_reloading" / "plugin.py").is_file()
    eps = (list(pkg.glob("pytest_zygote-*.dist-info"))[0] / "entry_points.txt").read_text()
    assert "[pytest11]\npytest_zygote.plugin = pytest_zygote.plugin" in eps, eps
    # pip's own bookkeeping: it can uninstall what it installed
    r = subprocess.run([venv / "bin" / "pip", "show", "-f", "pytest-zygote"],
                       capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert r.returncode == 0 and "pytest_hot_reloading/plugin.py" in r.stdout, r
    assert "bin/pytest-zygote-server" in r.stdout, r


def test_pip_binary_runs_the_virtualenvs_python(pz, venv):
    pz.zbin = str(venv / "bin" / "pytest-zygote")
    root = pz.project("autoload")
    srv = pz.start(root)
    assert srv.status()["python"] in (str(venv / "bin" / "python"),
                                      str(venv / "bin" / "python3")), srv.status()
    assert os.readlink("/proc/%d/exe" % srv.pid) == str(venv / "bin" / "pytest-zygote-server")
    r = pz.run_zygote(["-q", "-s"], cwd=root)
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "PREFIX=%s\n" % venv in r.out, r
    assert srv.stop().rc == 0


def test_entry_point_hands_over_only_to_a_project_that_uses_a_zygote(pz, venv):
    pz.zbin = str(venv / "bin" / "pytest-zygote")
    # The plugin finds a running zygote by its pid file, named as src/common/paths.c
    # names it: a leading dot and a name past 24 bytes are part of that.
    root = pz.project("autoload", ".autoload-project-with-a-long-name")
    # No zygote, nothing asks for one: plain pytest, not a word from us.
    r = _vpytest(pz, venv, root, "-q", "-s")
    assert r.rc == 0 and "IN-PROCESS" in r.out and "zygote" not in r.out + r.err, r

    r = _vpytest(pz, venv, root, "--zygote-start")
    assert r.rc == 0 and pz_util.READY_RE.match(r.out.strip().splitlines()[-1]), r
    r = _vpytest(pz, venv, root, "-q", "-s")
    assert r.rc == 0 and "IN-ZYGOTE" in r.out and "PREFIX=%s\n" % venv in r.out, r
    assert "PytestAssertRewriteWarning" not in r.out, r
    r = _vpytest(pz, venv, root, "-q", "-s", "--zygote-disable")
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    # another instance of the same root is not running, until it is
    seven = {"PYTEST_ZYGOTE_INSTANCE": "7"}
    r = _vpytest(pz, venv, root, "-q", "-s", env=seven)
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    assert _vpytest(pz, venv, root, "--zygote-start", env=seven).rc == 0
    r = _vpytest(pz, venv, root, "-q", "-s", env=seven)
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    assert pz.cli("stop", "--root", root, "--instance", "7").rc == 0
    r = _vpytest(pz, venv, root, "--stop-daemon")
    assert r.rc == 0, r
    r = _vpytest(pz, venv, root, "-q", "-s")
    assert r.rc == 0 and "IN-PROCESS" in r.out and "zygote" not in r.err, r

    # A project with a [pytest-zygote] section is told, once, why it runs
    # slow (not with -q).
    (root / ".pytest-zygote.ini").write_text("[pytest-zygote]\nsettle_ms = 300\n")
    r = _vpytest(pz, venv, root, "-s")
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    assert r.err.count("no zygote is running for %s" % root) == 1, r
    r = _vpytest(pz, venv, root, "-q", "-s")
    assert r.rc == 0 and "IN-PROCESS" in r.out and "zygote" not in r.err, r
    # ... and start_if_needed there starts one.
    (root / ".pytest-zygote.ini").write_text("[pytest-zygote]\nstart_if_needed = true\n")
    r = _vpytest(pz, venv, root, "-q", "-s")
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r


def test_named_plugin_and_entry_point_register_once(pz, venv):
    """handover's addopts says -p pytest_zygote.plugin; the entry point loads
    the same module: one registration, and the explicit rules apply."""
    pz.zbin = str(venv / "bin" / "pytest-zygote")
    root = pz.project("handover")
    r = _vpytest(pz, venv, root, "-q", "-s")
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    r = _vpytest(pz, venv, root, "-q", "-s", "--zygote-require")
    assert r.rc == 69 and "pytest --zygote-start" in r.err, r
    r = _vpytest(pz, venv, root, "-q", "-s", "--zygote-start-if-needed",
                 env={"PYTEST_ADDOPTS": "-p pytest_zygote.plugin"})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    assert "already registered" not in r.out + r.err, r


def test_pytest_hot_reloading_project_in_the_virtualenv(pz, venv):
    pz.zbin = str(venv / "bin" / "pytest-zygote")
    root = pz.project("hot_reloading")

    def pytest_(*args, env=None):
        return _vpytest(pz, venv, root, *args, env=env)

    pz_util.hot_reloading_flow(pytest_, root, "workarounds")


def test_another_interpreters_zygote_is_not_used(pz, venv):
    """A zygote started for the system interpreter serves /usr/bin/python3's
    pytest; the virtualenv's `python -m pytest` (other packages) runs in its
    own process and says why, until a zygote of its own runs."""
    root = pz.project("handover")
    pz.start(root)  # the build's interpreter
    r = pz.call([PY, "-m", "pytest", "-q", "-s"], cwd=root,
                env={"PYTHONPATH": str(pz_util.REPO / "plugin" / "src"),
                     "PYTEST_ZYGOTE_BIN": pz.zbin})
    assert r.rc == 0 and "IN-ZYGOTE" in r.out, r
    r = _vpytest(pz, venv, root, "-q", "-s")
    assert r.rc == 0 and "IN-PROCESS" in r.out, r
    assert "runs %s" % venv in r.err and "running in this process" in r.err, r
    r = _vpytest(pz, venv, root, "-q", "-s", "--zygote-require")
    assert r.rc == 69, r


def test_start_hook_in_the_virtualenv(pz, venv):
    """`python -m pytest_zygote.hook install` of the pip route: into the
    virtualenv's site-packages; a project without -p anywhere (the entry
    point loads the plugin) is handed over before pytest is imported, with
    the venv's interpreter and only while a zygote of it runs."""
    pz.zbin = str(venv / "bin" / "pytest-zygote")
    py = str(venv / "bin" / "python")
    r = pz.call([py, "-m", "pytest_zygote.hook", "install"])
    assert r.rc == 0 and "installed %s/pytest_zygote_hook.pth" % _pkg_dir(venv) in r.out, r
    try:
        root = pz.project("autoload")
        verbose = {"PYTEST_ZYGOTE_HOOK": "verbose"}
        r = _vpytest(pz, venv, root, "-q", "-s", env=verbose)
        assert r.rc == 0 and "IN-PROCESS" in r.out, r
        assert "pytest starts as usual: no zygote is running for %s" % root in r.err, r
        pz.start(root)
        r = _vpytest(pz, venv, root, "-q", "-s", env=verbose)
        assert r.rc == 0 and "IN-ZYGOTE" in r.out and "PREFIX=%s\n" % venv in r.out, r
        assert "hook: handing over: %s run --root %s" % (venv / "bin" / "pytest-zygote", root) \
            in r.err, r
        # PYTEST_DISABLE_PLUGIN_AUTOLOAD: no entry point, no -p: no plugin, no hand-over
        r = _vpytest(pz, venv, root, "-q", "-s",
                     env=dict(verbose, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))
        assert r.rc == 0 and "IN-PROCESS" in r.out and "the plugin is not loaded" in r.err, r
    finally:
        r = pz.call([py, "-m", "pytest_zygote.hook", "remove"])
        assert r.rc == 0 and "removed" in r.out, r
