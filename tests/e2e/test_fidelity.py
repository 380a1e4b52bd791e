"""A zygote run must look exactly like plain pytest: same exit code, same
stdout and stderr once timings and object addresses are normalised."""

import shutil
import xml.etree.ElementTree as ET

import pytest

from pz_util import normalise


def assert_same(plain, zyg, what=""):
    assert zyg.rc == plain.rc, "exit code differs %s\nplain: %r\nzygote: %r" % (what, plain, zyg)
    assert normalise(zyg.out) == normalise(plain.out), "stdout differs %s" % what
    assert normalise(zyg.err) == normalise(plain.err), "stderr differs %s" % what


CASES = [
    pytest.param([], id="default"),
    pytest.param(["-q"], id="q"),
    pytest.param(["-v"], id="v"),
    pytest.param(["-vv", "-rxXs"], id="vv-rxXs"),
    pytest.param(["-rA"], id="rA"),
    pytest.param(["-k", "param or TestClass"], id="k-expr"),
    pytest.param(["-k", "no_test_matches_this"], id="k-nothing-rc5"),
    pytest.param(["-m", "slow"], id="m-slow"),
    pytest.param(["-m", "not slow and not fast", "-q"], id="m-expr"),
    pytest.param(["-x"], id="x"),
    pytest.param(["--maxfail=2"], id="maxfail"),
    pytest.param(["-p", "no:cacheprovider"], id="no-cacheprovider"),
    pytest.param(["--collect-only"], id="collect-only"),
    pytest.param(["--co", "-q"], id="co-q"),
    pytest.param(["errors/test_collect_error.py", "tests"], id="collection-error"),
    pytest.param(["--continue-on-collection-errors", "-q", "errors", "tests"],
                 id="continue-on-collection-errors"),
    pytest.param(["tests/test_basic.py::TestClass::test_method_one",
                  "tests/test_basic.py::test_param[2-2-4]", "tests/pkg/test_pkg.py"],
                 id="node-ids"),
    pytest.param(["tests/test_basic.py::test_does_not_exist"], id="bad-node-id"),
    pytest.param(["--tb=short"], id="tb-short"),
    pytest.param(["--tb=line", "-q"], id="tb-line"),
    pytest.param(["--tb=no", "-q"], id="tb-no"),
    pytest.param(["-l"], id="showlocals"),
    pytest.param(["-s"], id="s"),
    pytest.param(["--setup-show", "-q"], id="setup-show"),
    pytest.param(["--strict-markers", "-q"], id="strict-markers"),
    pytest.param(["-W", "error::UserWarning", "-q"], id="W-error"),
    pytest.param(["--fixtures"], id="fixtures"),
    pytest.param(["--markers"], id="markers"),
    pytest.param(["--version"], id="version"),
    pytest.param(["--help"], id="help"),
    pytest.param(["--no-such-option"], id="usage-error"),
    pytest.param(["-p", "internal_error_plugin", "-q"], id="internal-error"),
]


@pytest.mark.parametrize("args", CASES)
def test_same_as_plain_pytest(pz, args):
    root = pz.project("basic")
    pz.start(root)
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    assert_same(plain, zyg, "for %r" % (args,))


def test_same_from_a_subdirectory(pz):
    root = pz.project("basic")
    pz.start(root)
    cwd = root / "tests" / "pkg"
    plain = pz.run_plain(["-q"], cwd=cwd)
    zyg = pz.run_zygote(["-q"], cwd=cwd)  # the root is found from the cwd
    assert_same(plain, zyg)
    assert "2 passed" in zyg.out


def test_same_with_root_option_from_outside(pz):
    root = pz.project("basic")
    pz.start(root)
    args = ["-q", str(root / "tests" / "test_scopes.py")]
    plain = pz.run_plain(args, cwd=pz.tmp_path)
    zyg = pz.run_zygote(args, cwd=pz.tmp_path, root=root)
    assert_same(plain, zyg)
    assert "4 passed" in zyg.out


def test_dashdash_is_optional(pz):
    root = pz.project("basic")
    pz.start(root)
    with_dd = pz.run_zygote(["-q", "-k", "param"], cwd=root)
    without = pz.run_zygote(["-q", "-k", "param"], cwd=root, dashdash=False)
    assert with_dd.rc == without.rc == 1
    assert normalise(with_dd.out) == normalise(without.out)
    assert "1 failed, 5 passed, 20 deselected" in without.out


def _cache_dir(root):
    return root / ".pytest_cache"


@pytest.mark.parametrize("flag", ["--lf", "--ff", "--nf"])
def test_cache_flags_after_a_failing_zygote_run(pz, flag):
    root = pz.project("basic")
    pz.start(root)
    first = pz.run_zygote(["-q"], cwd=root)
    assert first.rc == 1, first
    # The zygote run must have written the cache that plain pytest reads.
    assert (_cache_dir(root) / "v" / "cache" / "lastfailed").is_file()
    saved = pz.tmp_path / "saved-cache"
    shutil.copytree(_cache_dir(root), saved)

    plain = pz.run_plain([flag], cwd=root)
    shutil.rmtree(_cache_dir(root))
    shutil.copytree(saved, _cache_dir(root))
    zyg = pz.run_zygote([flag], cwd=root)
    assert_same(plain, zyg, "for %s" % flag)
    if flag == "--lf":
        assert "run-last-failure: rerun previous 4 failures" in zyg.out
    if flag == "--ff":
        assert "run-last-failure: rerun previous 4 failures first" in zyg.out


def test_lf_after_a_failing_plain_run(pz):
    root = pz.project("basic")
    pz.start(root)
    assert pz.run_plain(["-q"], cwd=root).rc == 1
    saved = pz.tmp_path / "saved-cache"
    shutil.copytree(_cache_dir(root), saved)
    plain = pz.run_plain(["--lf", "-q"], cwd=root)
    shutil.rmtree(_cache_dir(root))
    shutil.copytree(saved, _cache_dir(root))
    zyg = pz.run_zygote(["--lf", "-q"], cwd=root)
    assert_same(plain, zyg)
    assert "3 failed, 2 deselected, 1 error" in zyg.out


def _junit_cases(path):
    tree = ET.parse(path)
    suite = tree.getroot()
    if suite.tag == "testsuites":
        suite = suite[0]
    counts = {k: suite.get(k) for k in ("tests", "errors", "failures", "skipped")}
    cases = []
    for tc in suite.iter("testcase"):
        outcome = "passed"
        message = None
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
                message = child.get("message")
        cases.append((tc.get("classname"), tc.get("name"), outcome, message))
    return counts, cases


def test_junitxml(pz):
    root = pz.project("basic")
    pz.start(root)
    xml = pz.tmp_path / "junit.xml"
    args = ["-q", "--junitxml", str(xml)]
    plain = pz.run_plain(args, cwd=root)
    plain_xml = _junit_cases(xml)
    xml.unlink()
    zyg = pz.run_zygote(args, cwd=root)
    assert xml.is_file(), "the zygote run wrote no junit xml"
    zyg_xml = _junit_cases(xml)
    assert_same(plain, zyg)
    assert zyg_xml == plain_xml
    assert len(zyg_xml[1]) == 26


def test_import_time_warnings_are_reported_like_plain_pytest(pz):
    # app/legacy.py warns when imported. The zygote imported it at warm-up;
    # plain pytest imports it during collection and lists all three.
    root = pz.project("importwarn")
    pz.start(root)
    plain = pz.run_plain(["-q"], cwd=root)
    assert "3 warnings" in plain.out and "LegacyWarning" in plain.out
    zyg = pz.run_zygote(["-q"], cwd=root)
    assert_same(plain, zyg)


def test_process_facts_match_plain_pytest(pz):
    """sys.argv, sys.executable, sys.prefix, sys.path, cwd, flags, the signal
    mask and ignored signals seen by a test are those of plain pytest."""
    root = pz.project("isolation")
    pz.start(root)
    args = ["-q", "-s", "tests/test_facts.py::test_print_facts"]
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    assert plain.rc == 0 and zyg.rc == 0, (plain, zyg)

    def facts(out):
        d = {}
        for line in out.splitlines():
            if line.startswith("FACT "):
                k, _, v = line[5:].partition("=")
                d[k] = v
        return d

    p, z = facts(plain.out), facts(zyg.out)
    for key in ("argv", "executable", "prefix", "path", "cwd", "flags",
                "sigblk", "sigign", "stdin_isatty"):
        assert z.get(key) == p.get(key), "%s differs: plain %s, zygote %s" % (key, p.get(key),
                                                                          z.get(key))


def test_caught_signals_match_plain_pytest(pz):
    """The set of signals with a handler (SigCgt) in a test: plain pytest has
    Python's SIGINT handler and faulthandler's; the zygote child must not
    keep handlers of its own (SIGCHLD, SIGTERM, ...)."""
    root = pz.project("isolation")
    pz.start(root)
    args = ["-q", "-s", "tests/test_facts.py::test_print_facts"]
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)

    def sigcgt(out):
        return [ln for ln in out.splitlines() if ln.startswith("FACT sigcgt=")]

    assert sigcgt(zyg.out) == sigcgt(plain.out)


@pytest.mark.parametrize("env", [
    pytest.param({"PYTEST_ADDOPTS": "-v -rA"}, id="PYTEST_ADDOPTS"),
    pytest.param({"PY_COLORS": "1"}, id="PY_COLORS"),
    pytest.param({"COLUMNS": "123"}, id="COLUMNS"),
    pytest.param({"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, id="no-plugin-autoload"),
])
def test_same_with_client_environment(pz, env):
    """Options that come from the client's environment apply to the run."""
    root = pz.project("basic")
    pz.start(root)
    plain = pz.run_plain(["-q"], cwd=root, env=env)
    zyg = pz.run_zygote(["-q"], cwd=root, env=env)
    assert_same(plain, zyg, "with %r" % (env,))


def test_project_path_with_spaces_and_unicode(pz):
    root = pz.project("basic", dest_name="my proj \u00fc")
    srv = pz.start(root)
    assert srv.status()["root"] == str(root)
    for args in (["-q"], ["-v", "-k", "TestClass"]):
        plain = pz.run_plain(args, cwd=root)
        zyg = pz.run_zygote(args, cwd=root)
        assert_same(plain, zyg, "for %r" % (args,))
