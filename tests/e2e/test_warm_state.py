"""What the zygote's warm-up imports did to the process, and what it did not
do: no project hook runs in the zygote, a run sees the process state a cold
run would (environment, sys.path and cwd writes of imported modules, exit
handlers, BLAS threads), and a suite whose collection is long starts without
collecting all of it. Each case compares with plain pytest."""

import os
import textwrap

import pytest

from pz_util import normalise, spare_ready, wait_until


def _write(root, files):
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def _project(pz, tmp_path, name, files):
    root = tmp_path / name
    _write(root, files)
    root = root.resolve()
    pz.roots.append(str(root))
    return root


def _same(plain, zyg):
    assert zyg.rc == plain.rc, (plain, zyg)
    assert normalise(zyg.out) == normalise(plain.out), (plain.out, zyg.out)


HOOKS = {
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "app/__init__.py": "",
    "app/core.py": "VALUE = 1\n",
    "conftest.py": """
        import os

        def _log(what):
            with open(os.environ["HOOK_LOG"], "a") as f:
                f.write("%d %s\\n" % (os.getpid(), what))

        _log("conftest")

        def pytest_configure(config):
            _log("configure")

        def pytest_sessionstart(session):
            _log("sessionstart")

        def pytest_collection_modifyitems(items):
            _log("modifyitems")
    """,
    "tests/test_a.py": """
        import os
        from app import core

        with open(os.environ["HOOK_LOG"], "a") as f:
            f.write("%d test_a\\n" % os.getpid())

        def test_a():
            assert core.VALUE == 1
    """,
}


def test_no_project_code_runs_in_the_zygote(pz, tmp_path):
    root = _project(pz, tmp_path, "hooks", HOOKS)
    log = tmp_path / "hooks.log"
    env = {"HOOK_LOG": str(log)}
    server = pz.start(root, env=env)
    zygotes = set(server.zygote_pids())
    assert zygotes
    # After the learning run, the practice run (for the spare's pages): a
    # child too. Both are over once the spare is ready.
    wait_until(lambda: spare_ready(next(iter(zygotes))), timeout=30)
    entries = [ln.split() for ln in log.read_text().splitlines()]
    # The learning run executed them, in a child of the zygote.
    assert {what for _, what in entries} == {"conftest", "configure", "sessionstart",
                                             "modifyitems", "test_a"}, entries
    assert not {int(pid) for pid, _ in entries} & zygotes, (entries, zygotes)
    log.write_text("")
    for _ in range(2):
        z = pz.run_zygote(["-q"], cwd=root, env=env)
        assert z.rc == 0, z
    # Every run executes the conftest and the test module itself, as plain does.
    runs = [ln.split()[1] for ln in log.read_text().splitlines()]
    log.write_text("")
    for _ in range(2):
        assert pz.run_plain(["-q"], cwd=root, env=env).rc == 0
    assert runs == [ln.split()[1] for ln in log.read_text().splitlines()], runs


SIDE_EFFECTS = {
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "extra/helper_mod.py": "WHERE = 'extra'\n",
    "app/__init__.py": """
        import os
        import sys

        os.environ.setdefault("APP_MODE", "module-default")
        os.environ["APP_FORCED"] = "module"
        os.environ.pop("APP_DROPPED", None)
        sys.path.append(os.path.join(os.path.dirname(__file__), os.pardir, "extra"))
    """,
    "tests/test_env.py": """
        import os

        import app  # noqa: F401

        def test_env():
            print("MODE=%s FORCED=%s DROPPED=%s" % (
                os.environ.get("APP_MODE"), os.environ.get("APP_FORCED"),
                os.environ.get("APP_DROPPED")))

        def test_path():
            import helper_mod
            assert helper_mod.WHERE == "extra"
    """,
}


@pytest.mark.parametrize("client_env", [
    {},
    {"APP_MODE": "client", "APP_FORCED": "client", "APP_DROPPED": "client"},
], ids=["unset", "set-by-client"])
def test_imported_modules_environment_and_path_writes_reach_runs(pz, tmp_path, client_env):
    root = _project(pz, tmp_path, "sidefx", SIDE_EFFECTS)
    pz.start(root)
    args = ["-q", "-s", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=root, env=client_env)
    assert plain.rc == 0, plain
    for _ in range(2):
        _same(plain, pz.run_zygote(args, cwd=root, env=client_env))
    if client_env:
        assert "MODE=client FORCED=module DROPPED=None" in plain.out, plain.out
    else:
        assert "MODE=module-default FORCED=module DROPPED=None" in plain.out, plain.out


EXIT = {
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "tests/test_exit.py": """
        import logging
        import logging.handlers
        import os
        import tempfile

        KEEP = []

        def test_buffered_log_is_flushed_at_exit():
            target = logging.FileHandler(os.environ["FLUSH_LOG"])
            memory = logging.handlers.MemoryHandler(capacity=1000, target=target)
            log = logging.getLogger("exit-test")
            log.addHandler(memory)
            log.warning("written at exit")

        def test_temporary_directory_removed_at_exit():
            d = tempfile.TemporaryDirectory()
            KEEP.append(d)
            with open(os.environ["TMP_LOG"], "a") as f:
                f.write(d.name + "\\n")
    """,
}


def test_exit_handlers_run_as_in_a_cold_run(pz, tmp_path):
    root = _project(pz, tmp_path, "exits", EXIT)
    flush, tmps = tmp_path / "flush.log", tmp_path / "tmp.log"
    env = {"FLUSH_LOG": str(flush), "TMP_LOG": str(tmps)}
    pz.start(root)
    plain = pz.run_plain(["-q"], cwd=root, env=env)
    assert plain.rc == 0, plain
    assert flush.read_text() == "written at exit\n"
    for _ in range(2):
        flush.unlink()
        _same(plain, pz.run_zygote(["-q"], cwd=root, env=env))
        assert flush.read_text() == "written at exit\n"
    dirs = tmps.read_text().split()
    assert len(dirs) == 3, dirs
    assert not [d for d in dirs if os.path.exists(d)], dirs


BLAS = {
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "tests/test_blas.py": """
        import os

        import numpy as np

        def test_matmul_threads():
            a = np.ones((400, 400))
            assert (a @ a)[0, 0] == 400
            print("THREADS=%d" % len(os.listdir("/proc/self/task")))
    """,
}


def _openblas_loaded():
    import subprocess
    import sys

    code = ("import numpy, sys; print(any('openblas' in l for l in open('/proc/self/maps')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return r.stdout.strip() == "True"


@pytest.mark.skipif(not _openblas_loaded(), reason="numpy does not use OpenBLAS here "
                    "(scripts/install-deps.sh installs libopenblas0-pthread)")
def test_blas_threads_not_started_in_the_zygote_and_given_back_to_runs(pz, tmp_path):
    root = _project(pz, tmp_path, "blas", BLAS)
    server = pz.start(root)
    assert "threads were running" not in server.result.err, server.result.err
    args = ["-q", "-s", "-p", "no:cacheprovider"]
    for env in ({}, {"OPENBLAS_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "2"}):
        plain = pz.run_plain(args, cwd=root, env=env)
        zyg = pz.run_zygote(args, cwd=root, env=env)
        assert "THREADS=" in plain.out, plain
        _same(plain, zyg)


SLOW = {
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "conftest.py": "",
}
for _i in range(12):
    SLOW["tests/test_slow_%02d.py" % _i] = """
        import os
        import time

        with open(os.environ["IMPORT_LOG"], "a") as f:
            f.write("%%d test_slow_%02d\\n" %% os.getpid())
        time.sleep(0.25)

        def test_one():
            pass
    """ % _i


def test_learning_stops_collecting_after_its_budget(pz, tmp_path):
    """A suite whose collection is long: the learning run and the practice
    run stop taking new files after PYTEST_ZYGOTE_LEARN_SECONDS, and runs
    still collect everything."""
    root = _project(pz, tmp_path, "slowsuite", SLOW)
    log = tmp_path / "imports.log"
    env = {"IMPORT_LOG": str(log)}
    server = pz.start(root, env=dict(env, PYTEST_ZYGOTE_LEARN_SECONDS="0.5"))
    # The learning run, then the practice run (for the spare's pages): once
    # the spare is ready, both are over, and each stopped early.
    zygote = server.zygote_pids()[0]
    wait_until(lambda: spare_ready(zygote), timeout=30)
    per_pid = {}
    for line in log.read_text().splitlines():
        per_pid.setdefault(line.split()[0], []).append(line)
    assert len(per_pid) == 2, per_pid
    assert all(1 <= len(v) < 12 for v in per_pid.values()), per_pid
    log.write_text("")
    plain = pz.run_plain(["-q", "-p", "no:cacheprovider"], cwd=root, env=env)
    assert "12 passed" in plain.out, plain
    log.write_text("")
    zyg = pz.run_zygote(["-q", "-p", "no:cacheprovider"], cwd=root, env=env)
    _same(plain, zyg)
    assert len(log.read_text().splitlines()) == 12
