"""Modules pytest executes in every session (rootless conftest.py files,
and with --import-mode=importlib every test module and conftest) run in
every zygote run exactly as often as in plain pytest, with the same results
and sys.path side effects; and what a spare prepares ahead of its request is
what the run would have built itself."""

import pytest

import pz_util
from pz_util import normalise

ARGS = ["-q", "-p", "no:cacheprovider"]


@pytest.fixture
def rootless(pz, tmp_path):
    root = pz.project("rootless")
    log = tmp_path / "exec.log"
    env = {"EXEC_LOG": str(log)}
    return root, log, env


def _lines(log):
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("mode", ["prepend", "importlib"])
def test_modules_pytest_reexecutes_run_in_every_run_as_in_plain(pz, rootless, mode):
    root, log, env = rootless
    args = ARGS + ["--import-mode=%s" % mode]
    plain = pz.run_plain(args, cwd=root, env=env)
    executed = sorted(ln.split()[0] for ln in _lines(log))
    assert executed == ["conftest", "sub/conftest", "test_rootless"], executed
    srv = pz.start(root, env=env)
    zpid = srv.status()["zygote_pid"]
    assert pz_util.wait_until(lambda: pz_util.spare_ready(zpid), timeout=30)
    for _ in range(3):
        log.unlink()
        z = pz.run_zygote(args, cwd=root, env=env)
        assert z.rc == plain.rc, (z, plain)
        assert normalise(z.out) == normalise(plain.out)
        assert sorted(ln.split()[0] for ln in _lines(log)) == executed


def test_an_edited_rootless_conftest_runs_again(pz, rootless, tmp_path):
    root, log, env = rootless
    pz.start(root, env=env)
    assert pz.run_zygote(ARGS, cwd=root, env=env).rc == 0
    log.write_text("")
    sub = root / "tests" / "sub" / "conftest.py"
    sub.write_text(sub.read_text().replace('"sub/conftest ', '"sub/conftest-v2 '))
    # The run says its pid: a fresh generation that warms up meanwhile runs
    # every conftest in its learning run, writing to the same log.
    (tmp_path / "say_pid.py").write_text(
        "import os\n\ndef pytest_sessionstart(session):\n    print('RUN-PID', os.getpid())\n")
    run_env = dict(env, PYTHONPATH=str(tmp_path))
    z = pz.run_zygote(ARGS + ["-s", "-p", "say_pid"], cwd=root, env=run_env)
    assert z.rc == 0 and "RUN-PID " in z.out, z
    pid = z.out.split("RUN-PID ")[1].split()[0]
    mine = [ln.split()[0] for ln in _lines(log) if ln.split()[1] == pid]
    # rootless conftests run in every run, as in plain pytest; the edit's text
    assert mine == ["conftest", "sub/conftest-v2", "test_rootless"], _lines(log)
    assert not any(ln.split()[0] == "sub/conftest" for ln in _lines(log)), _lines(log)


def _built_config(prof):
    """Whether pytest's own get_config() ran in the profiled child."""
    import pstats

    stats = pstats.Stats(str(prof)).stats
    # Distribution file lists (RECORD) were read at warm-up, never in a child.
    assert not any(k[2] in ("_read_files_distinfo", "_read_files_egginfo") for k in stats)
    return any(k[2] == "get_config" and k[0].endswith("_pytest/config/__init__.py")
               for k in stats)


def test_a_spare_builds_the_config_a_run_would_build(pz, tmp_path):
    # The run takes the plugin manager and config its spare built before the
    # request, unless its arguments exclude a plugin or the environment
    # variables get_config() reads differ from the spare's; the output is
    # plain pytest's either way.
    root = pz.project("basic")
    srv = pz.start(root)
    zpid = srv.status()["zygote_pid"]
    prof = tmp_path / "child.prof"

    def run(args, env=None):
        assert pz_util.wait_until(lambda: pz_util.spare_ready(zpid), timeout=30)
        z = pz.run_zygote(args, cwd=root, env=dict(env or {}, PYTEST_ZYGOTE_PROFILE=str(prof)))
        plain = pz.run_plain(args, cwd=root, env=env)
        assert z.rc == plain.rc and normalise(z.out) == normalise(plain.out), (z, plain)
        return _built_config(prof)

    assert run(["-q"]) is False
    assert run(["-q", "-p", "no:cacheprovider"]) is True
    assert run(["-q", "-pno:cacheprovider"]) is True
    # TOX_ENV_DIR moves the cache directory (cacheprovider's option default)
    tox = tmp_path / "tox"
    tox.mkdir()
    assert run(["-q"], env={"TOX_ENV_DIR": str(tox)}) is True
    assert (tox / ".pytest_cache").is_dir()
    # and the next plain run takes the spare's again
    assert run(["-q"]) is False


def _calls(prof, name, file_suffix):
    import pstats

    stats = pstats.Stats(str(prof)).stats
    return sum(v[1] for k, v in stats.items() if k[2] == name and k[0].endswith(file_suffix))


def test_runs_reuse_the_rewritten_code_of_unchanged_test_modules(pz, tmp_path):
    # The learning run hands the zygote the code pytest's rewriter made of
    # every test module and conftest; a run executes it again without
    # reading or rewriting the file, until the file changes.
    root = pz.project("basic")
    # No refresh during the test: a fresh generation taking over after the
    # edit (on a slow machine, before the last run) would hold the edited
    # module's new code too, and its zygote another pid.
    srv = pz.start(root, env={"PYTEST_ZYGOTE_SETTLE_MS": "600000"})
    zpid = srv.status()["zygote_pid"]
    prof = tmp_path / "child.prof"
    plain = pz.run_plain(["-q"], cwd=root)

    def run():
        assert pz_util.wait_until(lambda: pz_util.spare_ready(zpid), timeout=30)
        z = pz.run_zygote(["-q"], cwd=root, env={"PYTEST_ZYGOTE_PROFILE": str(prof)})
        assert z.rc == plain.rc and normalise(z.out) == normalise(plain.out), (z, plain)
        # pytest's own cache reads and rewrites (the zygote's wrapper of
        # _read_pyc lives in _zy/speedups.py, not counted)
        return sum(_calls(prof, name, "_pytest/assertion/rewrite.py")
                   for name in ("_read_pyc", "rewrite_asserts"))

    assert run() == 0
    assert run() == 0
    test = root / "tests" / "test_scopes.py"
    test.write_text(test.read_text() + "\n# an edit\n")
    plain = pz.run_plain(["-q"], cwd=root)
    assert run() == 1  # the edited module only: plain's cached code, read once
