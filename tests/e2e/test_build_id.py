"""Build identity: every build carries a digest of its sources, and a client
refuses to run in a server of another build (exit 76) with a message naming
both builds and `pytest-zygote restart`, while status and stop still work
across builds (stop is the way out). The second build is real: a copy of this
source tree with one comment added, built with meson once for the module."""

import os
import re
import shutil
import subprocess
import sys

import pytest

import pz_util

REPO = pz_util.REPO
BUILD_RE = re.compile(r"build ([0-9a-f]{12}), protocol (\d+)")


@pytest.fixture(scope="module")
def other_build(tmp_path_factory):
    """pytest-zygote built from this tree with one comment added: same
    version, another build id."""
    src = tmp_path_factory.mktemp("other-build") / "src"
    src.mkdir()
    for name in ("meson.build", "meson_options.txt"):
        shutil.copy2(REPO / name, src / name)
    for tree in ("src", "include", "plugin/src", "scripts"):
        shutil.copytree(REPO / tree, src / tree,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with open(src / "src" / "client" / "main.c", "a") as f:
        f.write("/* another build, for tests/e2e/test_build_id.py */\n")
    build = src.parent / "build"
    for argv in (["meson", "setup", str(build), "-Dpython=/usr/bin/python3", "-Dtests=false",
                  "-Dhot_reloading_compat=disabled"],
                 ["meson", "compile", "-C", str(build)]):
        r = subprocess.run(argv, cwd=src, capture_output=True, text=True, timeout=900,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (argv, r.stdout[-3000:], r.stderr[-3000:])
    return str(build / "pytest-zygote")


def _build_of(zbin):
    r = subprocess.run([zbin, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    m = BUILD_RE.search(r.stdout)
    assert m, r.stdout
    return m[1]


def test_version_names_the_build(pz, other_build):
    ours, theirs = _build_of(pz.zbin), _build_of(other_build)
    assert ours != theirs
    # The server binary of a build says the same.
    server = os.path.join(os.path.dirname(pz.zbin), "pytest-zygote-server")
    r = pz.call([server, "--version"])
    assert r.rc == 0 and "build %s" % ours in r.out, r


def test_run_refuses_a_server_of_another_build(pz, other_build):
    ours, theirs = _build_of(pz.zbin), _build_of(other_build)
    root = pz.project("basic")
    srv = pz.start(root)
    assert srv.status()["build"] == ours

    # A run by the other build: refused before anything runs, naming both.
    r = pz.call([other_build, "run", "--root", root, "--", "-q", "-p", "no:cacheprovider"],
                cwd=root)
    assert r.rc == 76, r
    assert ours in r.err and theirs in r.err, r
    assert "pytest-zygote restart --root %s" % root in r.err, r
    assert "passed" not in r.out and "nothing was run" in r.err, r
    assert srv.status()["runs"] == 0

    # start by the other build: a server runs, but not one its run can use.
    r = pz.call([other_build, "start", "--root", root])
    assert r.rc == 76 and "another build" in r.err and ours in r.err, r

    # status works across builds and says so.
    r = pz.call([other_build, "status", "--root", root])
    assert r.rc == 0, r
    assert re.search(r"build\s+%s" % ours, r.out), r
    assert "another build" in r.err and "restart" in r.err, r

    # Our own build runs as before, and its status does not warn.
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", "tests/test_scopes.py"], cwd=root,
                      root=root)
    assert r.rc == 0 and "passed" in r.out, r
    r = pz.cli("status", "--root", root)
    assert r.rc == 0 and "another build" not in r.err, r

    # stop works across builds: the way out.
    r = pz.call([other_build, "stop", "--root", root, "--grace", "1"])
    assert r.rc == 0 and "stopped" in r.out, r
    assert pz_util.wait_until(lambda: pz_util.is_gone(srv.pid), timeout=30)

    # restart by the other build puts its own build there, and its runs run.
    r = pz.call([other_build, "start", "--root", root])
    assert r.rc == 0, r
    r = pz.call([other_build, "run", "--root", root, "--", "-q", "-p", "no:cacheprovider",
                 "tests/test_scopes.py"], cwd=root)
    assert r.rc == 0 and "passed" in r.out, r
    r = pz.call([other_build, "stop", "--root", root, "--grace", "1"])
    assert r.rc == 0, r


def test_plugin_declines_a_server_of_another_build(pz, other_build):
    """The pytest plugin's hand-over, by a pytest-zygote of another build than
    the server's: pytest runs in its own process, with a notice, instead of
    handing over to a client that would refuse."""
    root = pz.project("basic")
    pz.start(root)
    env = {"PYTHONPATH": str(REPO / "plugin" / "src"), "PYTEST_ZYGOTE_BIN": other_build}
    args = [sys.executable, "-m", "pytest", "-p", "pytest_zygote.plugin", "-q",
            "-p", "no:cacheprovider", "tests/test_scopes.py"]
    r = pz.call(args, cwd=root, env=env)
    assert r.rc == 0 and "passed" in r.out, r
    assert "another build" in r.err and "running in this process" in r.err, r
    assert pz.cli("status", "--root", root, "--json").out.count('"runs": 0') == 1
    # With --zygote-require, the same refusal is an exit code.
    r = pz.call(args + ["--zygote-require"], cwd=root, env=env)
    assert r.rc == 76 and "another build" in r.err, r
    # The server's own build hands over.
    env["PYTEST_ZYGOTE_BIN"] = pz.zbin
    r = pz.call(args, cwd=root, env=env)
    assert r.rc == 0 and "passed" in r.out and "another build" not in r.err, r
    assert '"runs": 1' in pz.cli("status", "--root", root, "--json").out
