"""Real suites nobody here wrote, from Debian's archive (fetched by
scripts/fetch-real-suites.py into $PYTEST_ZYGOTE_REAL_SUITES, as
scripts/test.sh does): every test id ends the same way through the zygote as
under plain pytest, twice in a row and after an edit of a test module."""

import os
import shutil
import sys
from pathlib import Path

import pytest

import pz_util

SUITES = {
    # name: (pytest arguments, a test file to edit)
    "markupsafe": (["tests"], "tests/test_escape.py"),
    "jinja2": (["tests"], "tests/test_api.py"),
}


def _suites_dir(name):
    d = os.environ.get("PYTEST_ZYGOTE_REAL_SUITES")
    if not d:
        pytest.skip("PYTEST_ZYGOTE_REAL_SUITES is not set (scripts/test.sh fetches the suites "
                    "with scripts/fetch-real-suites.py and sets it)")
    # The suites test the installed package of the same Debian source
    # (their conftest imports it), not the tarball's src/.
    import importlib.util

    assert importlib.util.find_spec(name), (
        "the %s suite needs Debian's python3-%s: run scripts/install-deps.sh" % (name, name))
    return Path(d)


def _compare_suite():
    """scripts/compare-suite.py, whose junit reading the comparison shares."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "compare-suite.py"
    spec = importlib.util.spec_from_file_location("compare_suite", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look themselves up there
    spec.loader.exec_module(mod)
    return mod


outcomes = _compare_suite().junit_outcomes


def diff(plain, zyg):
    ids = sorted(set(plain) | set(zyg))
    return ["%s: plain %s, zygote %s" % (i, plain.get(i), zyg.get(i))
            for i in ids if plain.get(i) != zyg.get(i)]


@pytest.mark.parametrize("name", sorted(SUITES))
def test_real_suite_gives_plain_pytests_outcomes(pz, tmp_path, name):
    src = _suites_dir(name) / name
    assert src.is_dir(), "%s is missing: run /usr/bin/python3 scripts/fetch-real-suites.py %s" % (
        src, src.parent)
    root = tmp_path / name
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    root = root.resolve()
    pz.roots.append(str(root))
    args, edit = SUITES[name]

    def run(side, n, ahead=None):
        junit = tmp_path / ("%s-%d.xml" % (side, n))
        argv = ["-q", "-p", "no:cacheprovider", "--junitxml", str(junit)] + args
        r = (pz.run_plain if side == "plain" else pz.run_zygote)(
            argv, cwd=root, timeout=300, env={"PYTEST_ZYGOTE_TIMING": "1"})
        assert junit.is_file(), r
        if ahead is not None:
            assert pz_util.child_timing(r)["ahead"] == ahead, r
        return r.rc, outcomes(junit)

    plain_rc, plain = run("plain", 1)
    assert len(plain) > 40, plain  # a real suite ran
    # Every run collected ahead when it can be (the default asks for 200 ms
    # of collection), and the second run of the same arguments is.
    srv = pz.start(root, env={"PYTEST_ZYGOTE_COLLECT_AHEAD_MS": "1"})
    for n, ahead in ((1, False), (2, False), (2, True)):
        if ahead:
            assert pz_util.wait_until(lambda: any(
                (pz_util.cmdline(c) or "").startswith("pytest-zygote: collected ahead")
                for c in pz_util.children(srv.status()["zygote_pid"])), timeout=60)
        rc, zyg = run("zygote", n, ahead)
        assert diff(plain, zyg) == [] and rc == plain_rc, (rc, plain_rc, diff(plain, zyg)[:20])
    path = root / edit
    path.write_text(path.read_text() + "\n\ndef test_added_by_pytest_zygote():\n    pass\n")
    plain_rc, plain = run("plain", 2)
    assert any(k.endswith("::test_added_by_pytest_zygote") for k in plain), sorted(plain)[:5]
    rc, zyg = run("zygote", 3)
    assert diff(plain, zyg) == [] and rc == plain_rc, (rc, plain_rc, diff(plain, zyg)[:20])


@pytest.mark.parametrize("name", sorted(SUITES))
def test_real_suite_in_parallel_gives_plain_xdists_outcomes(pz, tmp_path, name):
    # -n 2: the zygote's workers (forks of it) against plain pytest -n 2's
    # (new interpreters), every test id.
    pytest.importorskip("xdist")
    src = _suites_dir(name) / name
    assert src.is_dir(), src
    root = tmp_path / name
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    root = root.resolve()
    pz.roots.append(str(root))
    args, _ = SUITES[name]

    def run(side, n):
        junit = tmp_path / ("%s-n2-%d.xml" % (side, n))
        argv = ["-q", "-n", "2", "-p", "no:cacheprovider", "--junitxml", str(junit)] + args
        r = (pz.run_plain if side == "plain" else pz.run_zygote)(argv, cwd=root, timeout=300)
        assert junit.is_file(), r
        return r.rc, outcomes(junit)

    plain_rc, plain = run("plain", 1)
    assert len(plain) > 40, plain
    pz.start(root)
    for n in (1, 2):
        rc, zyg = run("zygote", n)
        assert diff(plain, zyg) == [] and rc == plain_rc, (rc, plain_rc, diff(plain, zyg)[:20])
