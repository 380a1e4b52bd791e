"""Every run starts from the zygote's clean state: what a run mutates dies with
its child, and the run sees the client's environment, not the server's."""

import ast
import re

import pytest


MUTATIONS = "tests/test_mutations.py"
N_MUTATION_TESTS = 11


@pytest.fixture
def iso(pz):
    root = pz.project("isolation")
    return root


def _facts(out):
    d = {}
    for line in out.splitlines():
        if line.startswith("FACT "):
            k, _, v = line[5:].partition("=")
            d[k] = v
    return d


def test_baseline_plain_pytest_passes_twice(pz, iso):
    env = {"PZ_EXPECT_CWD": str(iso)}
    for _ in range(2):
        r = pz.run_plain(["-q", MUTATIONS], cwd=iso, env=env)
        assert r.rc == 0, r
        assert "%d passed" % N_MUTATION_TESTS in r.out


def test_mutations_of_one_run_are_absent_in_the_next(pz, iso):
    # PZ_SERVER_ONLY is in the server's environment only: runs must not see it.
    pz.start(iso, env={"PZ_SERVER_ONLY": "1"})
    env = {"PZ_EXPECT_CWD": str(iso)}
    for i in range(3):
        r = pz.run_zygote(["-q", MUTATIONS], cwd=iso, env=env)
        assert r.rc == 0, "run %d: %r" % (i + 1, r)
        assert "%d passed" % N_MUTATION_TESTS in r.out
    # from another directory, the cwd follows the client too
    sub = iso / "tests"
    r = pz.run_zygote(["-q", "test_mutations.py"], cwd=sub, env={"PZ_EXPECT_CWD": str(sub)})
    assert r.rc == 0, r


def test_runs_see_the_client_environment(pz, iso):
    pz.start(iso, env={"PZ_CLIENT_VAR": "from-server"})
    node = MUTATIONS + "::test_environ_from_client"
    for value in ("one", "two"):
        r = pz.run_zygote(["-q", node], cwd=iso,
                          env={"PZ_CLIENT_VAR": value, "PZ_EXPECT_CLIENT_VAR": value})
        assert r.rc == 0, r
    # a variable the client does not have is absent even if the server has it
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", node], cwd=iso,
                      env={"PZ_CLIENT_VAR": None, "PZ_EXPECT_CLIENT_VAR": "from-server"})
    assert r.rc == 1, "the run saw the server's PZ_CLIENT_VAR: %r" % (r,)


def test_pythonpath_of_the_client_is_importable(pz, iso, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "pz_extra_module.py").write_text("VALUE = 'from-client'\n")
    env = {"PYTHONPATH": str(extra), "PZ_EXPECT_EXTRA": "from-client"}
    node = "tests/test_facts.py::test_pythonpath_module"
    plain = pz.run_plain(["-q", node], cwd=iso, env=env)
    assert plain.rc == 0, plain
    pz.start(iso)
    zyg = pz.run_zygote(["-q", node], cwd=iso, env=env)
    assert zyg.rc == 0, zyg


def test_atexit_handlers(pz, iso, tmp_path):
    zygote_log = tmp_path / "atexit-log"
    env = {"PZ_ATEXIT_LOG": str(zygote_log)}
    pz.start(iso, env=env)
    for run_id in ("run-1", "run-2"):
        run_file = tmp_path / ("atexit-%s" % run_id)
        r = pz.run_zygote(
            ["-q", MUTATIONS + "::test_atexit_registered_during_run"], cwd=iso,
            env=dict(env, PZ_RUN_ATEXIT_FILE=str(run_file), PZ_RUN_ID=run_id))
        assert r.rc == 0, r
        # a handler the run registered has run by the time the client exits
        assert run_file.is_file(), "atexit handler registered by %s did not run" % run_id
        assert run_file.read_text() == run_id

    def foreign_lines():
        if not zygote_log.exists():
            return []
        lines = [ln.split() for ln in zygote_log.read_text().splitlines()]
        return [ln for ln in lines if ln[0] != ln[1]]

    # the zygote's handler (registered at warm-up) never runs in a child
    assert foreign_lines() == [], "zygote atexit handler ran in a test child"
    assert pz.cli("stop", "--root", iso).rc == 0
    assert foreign_lines() == []


def test_test_code_does_not_run_at_warm_up(pz, iso, tmp_path):
    log = tmp_path / "ran"
    srv = pz.start(iso, env={"PZ_TEST_RAN_LOG": str(log)})
    assert not log.exists(), "a test ran inside the zygote at warm-up"
    r = pz.run_zygote(["-q", MUTATIONS + "::test_records_that_it_ran"], cwd=iso,
                      env={"PZ_TEST_RAN_LOG": str(log)})
    assert r.rc == 0, r
    pids = [int(x) for x in log.read_text().split()]
    assert len(pids) == 1
    assert pids[0] not in [srv.pid] + srv.zygote_pids()


def test_random_values_differ_between_runs(pz, iso):
    pz.start(iso)
    seen = []
    for _ in range(4):
        r = pz.run_zygote(["-q", "-s", MUTATIONS + "::test_random_values"], cwd=iso)
        assert r.rc == 0, r
        m = re.search(r"^RANDOM (\S+) (\d+)", r.out, re.M)
        assert m, r.out
        seen.append((m.group(1), m.group(2)))
    assert len(set(v[0] for v in seen)) == len(seen), seen
    assert len(set(v[1] for v in seen)) == len(seen), seen


def test_each_run_is_a_fresh_process(pz, iso):
    srv = pz.start(iso)
    pids = []
    for _ in range(3):
        r = pz.run_zygote(["-q", "-s", "tests/test_facts.py::test_print_facts"], cwd=iso)
        assert r.rc == 0, r
        pids.append(int(_facts(r.out)["pid"]))
    assert len(set(pids)) == 3
    assert not set(pids) & set([srv.pid] + srv.zygote_pids())


def test_run_holds_no_server_descriptors(pz, iso):
    pz.start(iso)
    r = pz.run_zygote(["-q", "-s", "tests/test_facts.py::test_print_facts"], cwd=iso)
    assert r.rc == 0, r
    targets = ast.literal_eval(_facts(r.out)["fdtargets"])
    bad = [t for t in targets
           if any(k in t for k in ("inotify", "eventpoll", "signalfd", "timerfd",
                                   "pidfd", pz.runtime_dir))]
    assert not bad, "the test child holds server descriptors: %r" % (targets,)


def test_large_environment_value(pz, iso):
    pz.start(iso)
    big = "x" * 100_000  # one string may not exceed 128 KiB (MAX_ARG_STRLEN)
    r = pz.run_zygote(["-q", MUTATIONS + "::test_environ_from_client"], cwd=iso,
                      env={"PZ_CLIENT_VAR": big, "PZ_EXPECT_CLIENT_VAR": big})
    assert r.rc == 0, r
