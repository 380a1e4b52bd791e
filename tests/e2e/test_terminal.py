"""The run's stdio are the client's terminal: isatty, colours, width, input,
Ctrl-C, window changes and the debugger behave as under plain pytest. Each
interactive test runs against plain pytest too, so the test itself is checked."""

import re
import subprocess
import sys

import pytest

from pz_util import TIMEOUT, PtyRun, normalise, strip_ansi

MODES = ["plain", "zygote"]


@pytest.fixture
def term(pz):
    """term(mode, args, rows=24, cols=80) -> PtyRun in the 'terminal' project."""
    root = pz.project("terminal")
    runs = []
    started = []

    def spawn(mode, args, rows=24, cols=80, env=None):
        if mode == "plain":
            argv = [sys.executable, "-m", "pytest", *args]
        else:
            if not started:
                started.append(pz.start(root))
            argv = [pz.zbin, "run", "--", *args]
        run = PtyRun(argv, cwd=root, env=pz.env(env), rows=rows, cols=cols)
        runs.append(run)
        return run

    spawn.root = root
    yield spawn
    for run in runs:
        run.close()


def first_separator(text):
    for line in strip_ansi(text).replace("\r", "\n").split("\n"):
        if line.startswith("=") and "test session starts" in line:
            return line
    raise AssertionError("no session header in:\n" + text)


def test_colours_and_layout_match_plain_pytest_on_a_tty(term):
    plain = term("plain", ["tests/test_colour.py"], rows=30, cols=100)
    p_rc, p_text = plain.wait()
    zyg = term("zygote", ["tests/test_colour.py"], rows=30, cols=100)
    z_rc, z_text = zyg.wait()
    assert p_rc == 1 and "\x1b[" in p_text  # the baseline is coloured
    assert z_rc == p_rc
    assert "\x1b[31m" in z_text, "no red in the zygote run's output:\n" + z_text
    assert normalise(z_text) == normalise(p_text)


@pytest.mark.parametrize("cols", [57, 133])
def test_width_follows_the_terminal(term, cols):
    run = term("zygote", ["-q", "tests/test_colour.py"], rows=30, cols=cols)
    rc, text = run.wait()
    assert rc == 1, text
    seps = [ln for ln in strip_ansi(text).replace("\r", "").split("\n")
            if re.fullmatch(r"=+ FAILURES =+", ln)]
    assert seps, text
    assert len(seps[0]) == cols, (cols, seps[0])
    run2 = term("zygote", ["tests/test_colour.py"], rows=30, cols=cols)
    run2.wait()
    assert len(first_separator(run2.text)) == cols


def test_no_colour_when_not_a_tty(pz):
    root = pz.project("terminal")
    pz.start(root)
    r = pz.run_zygote(["tests/test_colour.py"], cwd=root)
    assert r.rc == 1
    assert "\x1b[" not in r.out


def test_pty_colour_can_be_turned_off_like_plain(term):
    zyg = term("zygote", ["--color=no", "tests/test_colour.py"], cols=90)
    rc, text = zyg.wait()
    assert rc == 1
    assert "\x1b[" not in text


@pytest.mark.parametrize("mode", MODES)
def test_isatty_in_a_test(term, mode):
    run = term(mode, ["-s", "-q", "tests/test_interactive.py::test_isatty"], rows=33, cols=99)
    rc, text = run.wait()
    assert rc == 0, text
    assert "TTYNAME %s" % run.ttyname in text
    assert "SIZE 99x33" in text


@pytest.mark.parametrize("mode", MODES)
def test_input_reads_from_the_terminal(term, mode):
    run = term(mode, ["-s", "-q", "tests/test_interactive.py::test_input"])
    run.expect(r"PZ-PROMPT> ")
    run.send(b"hello zygote\n")
    run.expect(r"GOT 'hello zygote'")
    rc, text = run.wait()
    assert rc == 0, text
    assert "1 passed" in text


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_c_interrupts_the_run(pz, term, mode):
    run = term(mode, ["-s", "tests/test_interactive.py::test_sleep"])
    run.expect(r"SLEEPING")
    run.send(b"\x03")
    rc, text = run.wait()
    assert rc == 2, text
    assert "KeyboardInterrupt" in text
    assert re.search(r"!{3,} KeyboardInterrupt !{3,}", strip_ansi(text)), text
    if mode == "zygote":
        # the server is unharmed
        r = pz.run_zygote(["-q", "tests/test_colour.py::test_ok"], cwd=term.root)
        assert r.rc == 0, r


def test_ctrl_c_output_matches_plain_pytest(term):
    outputs = []
    for mode in MODES:
        run = term(mode, ["-s", "-p", "no:cacheprovider", "tests/test_interactive.py::test_sleep"],
                   cols=90)
        run.expect(r"SLEEPING")
        run.send(b"\x03")
        rc, text = run.wait()
        outputs.append((rc, normalise(text)))
    # The traceback ends in time.sleep either way; everything must match.
    assert outputs[1][0] == outputs[0][0]
    assert outputs[1][1].splitlines() == outputs[0][1].splitlines()


@pytest.mark.parametrize("mode", MODES)
def test_window_size_change_reaches_the_test(term, mode):
    run = term(mode, ["-s", "-q", "tests/test_interactive.py::test_winch"], rows=24, cols=80)
    run.expect(r"WAITING-FOR-WINCH")
    run.resize(50, 120)
    run.expect(r"WINCH 120x50")
    rc, text = run.wait()
    assert rc == 0, text


@pytest.mark.parametrize("mode", MODES)
def test_breakpoint_prompt_and_continue(term, mode):
    run = term(mode, ["tests/test_interactive.py::test_breakpoint"])
    run.expect(r"PDB set_trace")
    run.expect(r"\(Pdb\) ")
    run.send(b"p value\n")
    run.expect(r"\n41\r?\n")
    run.expect(r"\(Pdb\) ")
    run.send(b"c\n")
    rc, text = run.wait()
    assert rc == 0, text
    assert "1 passed" in strip_ansi(text)


@pytest.mark.parametrize("mode", MODES)
def test_pdb_on_failure_then_quit(term, mode):
    run = term(mode, ["--pdb", "tests/test_interactive.py::test_fails_for_pdb"])
    run.expect(r"entering PDB")
    run.expect(r"\(Pdb\) ")
    run.send(b"p local_marker\n")
    run.expect(r"'pz-local'")
    run.expect(r"\(Pdb\) ")
    run.send(b"q\n")
    rc, text = run.wait()
    assert rc == 2, text
    assert "Quitting debugger" in text


@pytest.mark.parametrize("args,project", [
    pytest.param("-q", "basic", id="basic-q"),
    pytest.param("-v", "many", id="many-v"),
])
def test_pipe_into_head_terminates(pz, args, project):
    root = pz.project(project)
    pz.start(root)
    for argv in (["%s -m pytest" % sys.executable], ['"$PZ_BIN" run --']):
        script = "%s %s | head -1" % (argv[0], args)
        try:
            p = subprocess.run(["bash", "-c", script], cwd=root,
                               env=pz.env({"PZ_BIN": pz.zbin}), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError("pipeline did not terminate: " + script) from None
        assert p.returncode == 0, (script, p)
        assert len(p.stdout.splitlines()) == 1, (script, p.stdout)
        if project == "many":
            assert "test session starts" in p.stdout
        else:
            assert p.stdout.startswith("."), p.stdout


@pytest.mark.parametrize("mode", MODES)
def test_stdin_from_a_pipe(pz, mode):
    root = pz.project("terminal")
    args = ["-s", "-q", "tests/test_interactive.py::test_input"]
    if mode == "plain":
        r = pz.run_plain(args, cwd=root, input="hello zygote\n")
    else:
        pz.start(root)
        r = pz.call([pz.zbin, "run", "--", *args], cwd=root, input="hello zygote\n")
    assert r.rc == 0, r
    assert "GOT 'hello zygote'" in r.out


def _slow_project(tmp_path):
    """A project whose conftest takes 1.5 s to import: warm-up lasts long
    enough for `start` to show its progress line."""
    root = tmp_path / "slowwarm"
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (root / "conftest.py").write_text("import time\n\ntime.sleep(1.5)\n")
    (root / "tests" / "test_one.py").write_text("def test_one():\n    pass\n")
    return root.resolve()


def test_start_shows_progress_on_a_terminal(pz, tmp_path):
    root = _slow_project(tmp_path)
    pz.roots.append(str(root))
    run = PtyRun([pz.zbin, "start", "--root", str(root)], cwd=root, env=pz.env())
    try:
        rc, text = run.wait()
    finally:
        run.close()
    assert rc == 0, text
    frames = [f for f in text.split("\r") if "warming up slowwarm (" in f]
    assert frames, "no progress line in:\n" + repr(text)
    # Phase, module count and elapsed time, redrawn in place as time passes.
    m = re.search(r"warming up slowwarm \((\d+\.\d) s, (\d+) modules\): learning imports", text)
    assert m and int(m[2]) > 50, repr(text)
    elapsed = {re.search(r"\((\d+\.\d) s", f)[1] for f in frames}
    assert len(elapsed) >= 2, frames
    assert all(f.startswith("\x1b[K") for f in frames), frames
    # The progress line is cleared before the one result line.
    assert re.search(r"\r\x1b\[Kpytest-zygote: (\x1b\[32m)?ready", text), repr(text)
    pz.cli("stop", "--root", root)


def test_start_prints_one_line_without_a_terminal(pz, tmp_path):
    root = _slow_project(tmp_path)
    server = pz.start(root)  # asserts exactly one line on stdout
    assert server.result.err == "", server.result.err
    assert "\r" not in server.result.out and "\x1b" not in server.result.out
