"""Collecting ahead (src/zygote/ahead.c, _zy/ahead.py): after a run, a child
starts the same run again and waits, collected, for it. It may take the next
request only when that request is the same run and nothing it read changed;
every run, taken or not, must end as plain pytest's."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

import pz_util

# Every run's collection counts as long enough here.
AHEAD = {"PYTEST_ZYGOTE_COLLECT_AHEAD_MS": "1"}
TIMING = {"PYTEST_ZYGOTE_TIMING": "1"}
ARGS = ["-v", "-rA", "-p", "no:cacheprovider"]

CONFTEST = '''\
import pathlib
import sys

WORDS = pathlib.Path(__file__).with_name("words.txt")


def pytest_generate_tests(metafunc):
    # Read at collection, not at import: no module of the project changes
    # when words.txt does.
    if "word" in metafunc.fixturenames:
        metafunc.parametrize("word", WORDS.read_text().split())


def pytest_collection_finish(session):
    sys.stderr.write("conftest: collection finished\\n")
    sys.stderr.flush()
'''

TESTS = '''\
import os
import sys

import pytest


def test_word(word):
    assert word.islower()


@pytest.mark.parametrize("n", range(60))
def test_many(n):
    assert n >= 0


def test_prints_and_fails():
    print("printed by the failing test")
    assert 1 == 2


def test_reads_stdin():
    if os.environ.get("READ_STDIN"):
        print("stdin said %r" % sys.stdin.read())


def test_writes_fd1():
    os.write(1, b"written to fd 1\\n")
'''


def _project(pz):
    root = pz.tmp_path / "ahead"
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (root / "tests" / "conftest.py").write_text(CONFTEST)
    (root / "tests" / "words.txt").write_text("alpha beta gamma\n")
    (root / "tests" / "test_words.py").write_text(TESTS)
    root = root.resolve()
    pz.roots.append(str(root))
    pz.run_plain(["-q", "-p", "no:cacheprovider"], cwd=root)  # bytecode written, as in use
    return root


def _collected(srv):
    """The pid of the child that has collected the last run ahead and waits."""
    zpid = srv.status()["zygote_pid"]
    for c in pz_util.children(zpid):
        if (pz_util.cmdline(c) or "").startswith("pytest-zygote: collected ahead "):
            return c
    return None


def _run(pz, root, args=ARGS, env=None, **kw):
    r = pz.run_zygote(args, cwd=root, env={**TIMING, **(env or {})}, **kw)
    return r, pz_util.child_timing(r)["ahead"]


def test_the_same_run_again_is_collected_ahead_and_reports_as_plain_pytest(pz):
    root = _project(pz)
    plain = pz.run_plain(ARGS, cwd=root, env=TIMING)
    srv = pz.start(root, env=AHEAD)
    first, ahead = _run(pz, root)
    assert not ahead
    pz_util.assert_same_outcomes(plain, first)
    for _ in range(2):
        assert pz_util.wait_until(lambda: _collected(srv), timeout=30)
        again, ahead = _run(pz, root)
        assert ahead, again
        pz_util.assert_same_outcomes(plain, again)
        # Everything the run printed, collection's part included, in order.
        assert pz_util.normalise(again.out) == pz_util.normalise(first.out)
        assert "written to fd 1" in again.out
        assert "printed by the failing test" in again.out  # its captured output
    assert _collected(srv) or pz_util.wait_until(lambda: _collected(srv), timeout=30)


def test_a_run_right_after_the_last_waits_for_its_collection(pz):
    # Runs back to back (a flake hunt): the request comes while the child
    # is still collecting; it is waited for, not thrown away.
    root = _project(pz)
    plain = pz.run_plain(ARGS, cwd=root, env=TIMING)
    pz.start(root, env=AHEAD)
    _run(pz, root)
    for _ in range(2):
        r, ahead = _run(pz, root)
        assert ahead, r
        pz_util.assert_same_outcomes(plain, r)


def test_stdout_and_stderr_joined_keep_their_order(pz):
    # The conftest writes to stderr while pytest writes to stdout, before
    # and after the request: 2>&1 must show them as a run not done ahead.
    root = _project(pz)
    srv = pz.start(root, env=AHEAD)

    def run():
        p = subprocess.run([pz.zbin, "run", "--"] + ARGS, cwd=root, env=pz.env(TIMING),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        return "\n".join(line for line in pz_util.normalise(p.stdout).splitlines()
                         if not line.startswith("pytest-zygote: child ")), p.stdout

    first, raw = run()
    assert "collected ahead" not in raw
    assert pz_util.wait_until(lambda: _collected(srv), timeout=30)
    again, raw = run()
    assert "collected ahead" in raw
    assert "conftest: collection finished" in again
    assert again == first


def test_the_clients_stdin_reaches_the_tests(pz):
    root = _project(pz)
    srv = pz.start(root, env=AHEAD)
    args = ["-s", "-q", "-p", "no:cacheprovider", "-k", "stdin"]
    env = {"READ_STDIN": "1"}
    r, _ = _run(pz, root, args, env=env, input="one\n")
    assert "stdin said 'one\\n'" in r.out, r
    assert pz_util.wait_until(lambda: _collected(srv), timeout=30)
    r, ahead = _run(pz, root, args, env=env, input="two\n")
    assert ahead and "stdin said 'two\\n'" in r.out, r


@pytest.mark.parametrize("edit", ["data file read at collection", "new doctest file",
                                  "test module", "other arguments", "other environment"])
def test_a_run_that_differs_is_not_collected_ahead(pz, edit):
    # Each case leaves the child collected ahead stale; the run must see
    # what plain pytest sees. The first two change no watched file: only
    # the files and directories the collection read tell.
    root = _project(pz)
    srv = pz.start(root, env=AHEAD)
    args, env = list(ARGS) + ["--doctest-glob=*.txt"], {}
    r, _ = _run(pz, root, args)
    assert r.rc == 1, r
    assert pz_util.wait_until(lambda: _collected(srv), timeout=30)
    tests = root / "tests"
    if edit == "data file read at collection":
        (tests / "words.txt").write_text("alpha beta Gamma delta\n")
    elif edit == "new doctest file":
        (tests / "extra.txt").write_text(">>> 1 + 1\n3\n")
    elif edit == "test module":
        with open(tests / "test_words.py", "a") as f:
            f.write("\n\ndef test_added():\n    assert False\n")
    elif edit == "other arguments":
        args.append("-l")
    else:
        env = {"SOME_VARIABLE": "1"}
    plain = pz.run_plain(args, cwd=root, env={**TIMING, **env})
    r, ahead = _run(pz, root, args, env=env)
    assert not ahead, r
    pz_util.assert_same_outcomes(plain, r)
    if edit == "data file read at collection":
        assert "test_word[Gamma] FAILED" in r.out
    elif edit == "new doctest file":
        assert "extra.txt::extra.txt FAILED" in r.out


def test_a_terminal_run_is_not_collected_ahead(pz):
    # A terminal's size and modes decide what pytest prints.
    root = _project(pz)
    pz.start(root, env=AHEAD)
    outs = []
    for _ in range(2):
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(root)
            env = pz.env(TIMING)
            os.execve(pz.zbin, [pz.zbin, "run", "--", "-q", "-p", "no:cacheprovider"], env)
        out = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(fd)
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 1, out
        outs.append(out.decode(errors="replace"))
        time.sleep(1)
    assert "files checked" in outs[1] and "collected ahead" not in outs[1], outs[1]


def test_a_run_with_workers_is_not_collected_ahead(pz):
    pytest.importorskip("xdist")
    root = _project(pz)
    pz.start(root, env=AHEAD)
    args = ["-q", "-n", "2", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=root)
    for _ in range(2):
        r, ahead = _run(pz, root, args)
        assert not ahead and r.rc == plain.rc == 1, r
        assert pz_util.Outcomes(r).final == pz_util.Outcomes(plain).final


def test_collect_ahead_ms_0_turns_it_off(pz):
    root = _project(pz)
    srv = pz.start(root, env={"PYTEST_ZYGOTE_COLLECT_AHEAD_MS": "0"})
    for _ in range(2):
        r, ahead = _run(pz, root)
        assert not ahead and r.rc == 1, r
        time.sleep(0.5)
    assert _collected(srv) is None
