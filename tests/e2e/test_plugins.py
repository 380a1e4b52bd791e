"""Plugins people use, side by side with plain pytest: pytest-django (on a copy
of examples/django), pytest-cov, pytest-asyncio, pytest-mock, hypothesis,
pytest-timeout and pytest-xdist, all from Debian packages
(scripts/install-deps.sh installs them).

For each plugin, `pytest-zygote run ARGS` and `python -m pytest ARGS` must give
the same exit code and the same per-test outcomes (read from `-rA`'s short
summary), and the same normalised output where the output is deterministic.
Every subprocess has a 60 s limit (pz_util.TIMEOUT): a hang fails the test.
"""

import importlib.util
import re
import shutil
import sqlite3
import xml.etree.ElementTree as ET

import pytest

from pz_util import REPO, normalise

PLUGIN_MODULES = {
    "pytest-django": "pytest_django",
    "pytest-cov": "pytest_cov",
    "pytest-asyncio": "pytest_asyncio",
    "pytest-mock": "pytest_mock",
    "hypothesis": "hypothesis",
    "pytest-timeout": "pytest_timeout",
    "pytest-xdist": "xdist",
    "django": "django",
}


def require(*names):
    """Fail (not skip) when a plugin is missing: CI installs them all."""
    missing = [n for n in names if importlib.util.find_spec(PLUGIN_MODULES[n]) is None]
    if missing:
        pytest.fail("not installed: %s (run scripts/install-deps.sh)" % ", ".join(missing),
                    pytrace=False)


# -- comparing runs -----------------------------------------------------------

_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (.*?)(?: - .*)?$")
_SKIPPED = re.compile(r"^SKIPPED \[\d+\] \S+?:\d+: (.*)$")


def outcomes(text):
    """Sorted (outcome, node id) pairs from the short test summary of -rA;
    ("SKIPPED", reason) for skips (-rA names their location, not the test)."""
    found = []
    in_summary = False
    for line in text.splitlines():
        if "short test summary info" in line:
            in_summary = True
            continue
        if in_summary:
            m = _OUTCOME.match(line)
            if m:
                found.append((m[1], m[2]))
            m = _SKIPPED.match(line)
            if m:
                found.append(("SKIPPED", m[1]))
    return sorted(found)


_MOCK_ID = re.compile(r"\bid='\d+'")
_THREAD_ID = re.compile(r"(Stack of \S+) \(\d+\)")


def norm(text):
    """pz_util.normalise plus what differs between any two processes here:
    unittest.mock's id='...' and thread idents in pytest-timeout's dumps."""
    text = normalise(text)
    text = _MOCK_ID.sub("id='ID'", text)
    text = _THREAD_ID.sub(r"\1 (TID)", text)
    return text


def assert_same_outcomes(plain, zyg, expected=None, what=""):
    assert zyg.rc == plain.rc, "exit code differs %s\nplain: %r\nzygote: %r" % (what, plain, zyg)
    assert outcomes(zyg.out) == outcomes(plain.out), (
        "per-test outcomes differ %s\nplain:\n%s\nzygote:\n%s" % (what, plain.out, zyg.out))
    if expected is not None:
        assert outcomes(plain.out) == sorted(expected), "plain pytest itself: %r" % (plain,)


def assert_same_output(plain, zyg, what=""):
    assert zyg.rc == plain.rc, "exit code differs %s\nplain: %r\nzygote: %r" % (what, plain, zyg)
    assert norm(zyg.out) == norm(plain.out), "stdout differs %s" % what
    assert norm(zyg.err) == norm(plain.err), "stderr differs %s" % what


# -- pytest-django on examples/django -----------------------------------------

DJANGO_ENV = {"DJANGO_SETTINGS_MODULE": None, "DJANGO_CONFIGURATION": None}
DJANGO_TESTS = [
    "notes/tests/test_models.py::test_summary_is_the_first_line",
    "notes/tests/test_models.py::test_summary_is_truncated",
    "notes/tests/test_models.py::test_pinned_notes_come_first",
    "notes/tests/test_models.py::test_tags_are_shared",
    "notes/tests/test_models.py::test_both_migrations_are_applied",
    "notes/tests/test_models.py::test_each_test_starts_with_an_empty_table",
    "notes/tests/test_views.py::test_login_is_required",
    "notes/tests/test_views.py::test_list_shows_only_own_notes",
    "notes/tests/test_views.py::test_create_note",
    "notes/tests/test_views.py::test_create_rejects_bad_input[not json]",
    "notes/tests/test_views.py::test_create_rejects_bad_input[{}]",
    'notes/tests/test_views.py::test_create_rejects_bad_input[{"title": "   "}]',
    "notes/tests/test_views.py::test_detail_of_another_users_note_is_404",
    "notes/tests/test_views.py::test_filter_by_tag",
    "notes/tests/test_views.py::test_transactional_test_sees_committed_rows",
]
TEST_DB = "test_db.sqlite3"
_DB_MESSAGE = re.compile(
    r"(Creating|Using existing|Destroying old|Destroying) test database for alias 'default'")


@pytest.fixture
def django_root(pz):
    """A copy of examples/django, without databases or caches."""
    require("django", "pytest-django")
    dest = pz.tmp_path / "django"
    shutil.copytree(REPO / "examples" / "django", dest, ignore=shutil.ignore_patterns(
        "__pycache__", ".pytest_cache", "*.pyc", "*.sqlite3", "*.sqlite3-journal",
        ".hypothesis", ".coverage"))
    dest = dest.resolve()
    pz.roots.append(str(dest))
    return dest


def test_django_example_passes_under_plain_pytest(pz, django_root):
    r = pz.run_plain(["-q", "-p", "no:cacheprovider"], cwd=django_root, env=DJANGO_ENV)
    assert r.rc == 0, r
    assert "15 passed" in r.out
    assert not (django_root / TEST_DB).exists()  # without --reuse-db it is destroyed


def test_django_same_outcomes(pz, django_root):
    pz.start(django_root, env=DJANGO_ENV)
    args = ["-rA", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=django_root, env=DJANGO_ENV)
    zyg = pz.run_zygote(args, cwd=django_root, env=DJANGO_ENV)
    assert_same_outcomes(plain, zyg, [("PASSED", t) for t in DJANGO_TESTS])
    # and again: the first run left nothing behind that the second one sees
    again = pz.run_zygote(args, cwd=django_root, env=DJANGO_ENV)
    assert_same_outcomes(plain, again)


@pytest.fixture
def django_pair(pz, django_root):
    """(plain, zygote) results of one default run of the Django example."""
    pz.start(django_root, env=DJANGO_ENV)
    args = ["-p", "no:cacheprovider"]
    return (pz.run_plain(args, cwd=django_root, env=DJANGO_ENV),
            pz.run_zygote(args, cwd=django_root, env=DJANGO_ENV))


def _section(out, title):
    """The lines of a '==== title ====' section of pytest's report."""
    lines = out.splitlines()
    start = next((i for i, l in enumerate(lines) if re.match(r"^=+ %s =+$" % title, l)), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("====")),
               len(lines))
    return lines[start:end]


def test_django_report_header(django_pair):
    plain, zyg = django_pair
    header = lambda r: [l for l in r.out.splitlines() if l.startswith("django: ")]  # noqa: E731
    assert header(plain) == ["django: settings: mysite.settings (from ini)"], plain
    assert header(zyg) == header(plain)


def test_django_warnings_summary(django_pair):
    # DeprecationWarnings that importing Django raises while pytest-django
    # sets Django up (pytest records them with when="config")
    plain, zyg = django_pair
    assert "'cgi' is deprecated" in "\n".join(_section(plain.out, "warnings summary")), plain
    assert _section(zyg.out, "warnings summary") == _section(plain.out, "warnings summary")


def test_django_same_output(django_pair):
    plain, zyg = django_pair
    assert_same_output(plain, zyg)


def test_django_models_edit_reloads_in_the_child(pz, django_root):
    """Editing a models module re-imports it in the next child; Django's app
    registry must not keep the old classes (their auto-created many-to-many
    models broke every test using tags)."""
    pz.start(django_root, env=DJANGO_ENV)
    args = ["-q", "-p", "no:cacheprovider"]
    assert pz.run_zygote(args, cwd=django_root, env=DJANGO_ENV).rc == 0
    models = django_root / "notes" / "models.py"
    models.write_text(models.read_text() + "\n\nNote.shout = lambda self: self.title.upper()\n")
    (django_root / "notes" / "tests" / "test_shout.py").write_text(
        "import pytest\n"
        "from notes.models import Note, Tag\n\n\n"
        "@pytest.mark.django_db\n"
        "def test_shout(django_user_model):\n"
        "    user = django_user_model.objects.create(username='u')\n"
        "    note = Note.objects.create(owner=user, title='hi')\n"
        "    note.tags.add(Tag.objects.create(name='t'))\n"
        "    assert note.shout() == 'HI'\n"
        "    assert [t.name for t in note.tags.all()] == ['t']\n")
    zyg = pz.run_zygote(args, cwd=django_root, env=DJANGO_ENV)
    plain = pz.run_plain(args, cwd=django_root, env=DJANGO_ENV)
    assert plain.rc == 0 and "16 passed" in plain.out, plain
    assert zyg.rc == 0, zyg
    assert_same_output(plain, zyg)


def _mark_test_db(root):
    """Leave a table in the kept test database that only reuse preserves."""
    con = sqlite3.connect(str(root / TEST_DB))
    try:
        con.execute("CREATE TABLE pz_reuse_marker (x INTEGER)")
        con.commit()
    finally:
        con.close()


def _has_marker(root):
    if not (root / TEST_DB).exists():
        return None
    con = sqlite3.connect(str(root / TEST_DB))
    try:
        return bool(con.execute("SELECT count(*) FROM sqlite_master WHERE name = "
                                "'pz_reuse_marker'").fetchone()[0])
    finally:
        con.close()


def _reuse_db_sequence(run, root):
    """--reuse-db twice, then --reuse-db --create-db, then neither; after each
    run: exit code, the database messages (-v -s shows them), whether the test
    database file exists and whether it still holds the marker table."""
    for p in root.glob(TEST_DB + "*"):
        p.unlink()
    steps = [["--reuse-db"], ["--reuse-db"], ["--reuse-db", "--create-db"], []]
    seen = []
    for i, extra in enumerate(steps):
        r = run(["-v", "-s", "-p", "no:cacheprovider"] + extra, cwd=root, env=DJANGO_ENV)
        assert r.rc == 0, "step %d %r: %r" % (i + 1, extra, r)
        seen.append((extra, r.rc, _DB_MESSAGE.findall(r.out + r.err),
                     (root / TEST_DB).exists(), _has_marker(root)))
        if i == 0 and (root / TEST_DB).exists():
            _mark_test_db(root)
    return seen


def test_django_reuse_db_and_create_db(pz, django_root):
    pz.start(django_root, env=DJANGO_ENV)
    plain = _reuse_db_sequence(pz.run_plain, django_root)
    zyg = _reuse_db_sequence(pz.run_zygote, django_root)
    assert zyg == plain
    # What plain pytest-django does (so that the comparison means something):
    # the test database is kept and reused, --create-db rebuilds it, and a run
    # without --reuse-db destroys it at the end.
    assert plain == [
        (["--reuse-db"], 0, ["Using existing"], True, False),
        (["--reuse-db"], 0, ["Using existing"], True, True),
        (["--reuse-db", "--create-db"], 0, ["Creating", "Destroying old"], True, False),
        ([], 0, ["Creating", "Destroying old", "Destroying"], False, None),
    ], plain


# -- pytest-cov ---------------------------------------------------------------

def _coverage_table(out):
    """The lines of pytest-cov's terminal report, from its header to TOTAL."""
    lines = out.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("---------- coverage:")), None)
    assert start is not None, "no coverage report in:\n%s" % out
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("TOTAL"))
    return lines[start:end + 1]


def test_cov_term_missing_table(pz):
    require("pytest-cov")
    root = pz.project("plugin_cov")
    pz.start(root)
    args = ["-rA", "-p", "no:cacheprovider", "--cov=pkg", "--cov-report=term-missing"]
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    assert_same_outcomes(plain, zyg, [
        ("PASSED", "tests/test_shapes.py::test_square_area"),
        ("PASSED", "tests/test_shapes.py::test_circle_perimeter"),
        ("PASSED", "tests/test_shapes.py::test_unknown_area"),
        ("PASSED", "tests/test_shapes.py::test_lazy_import"),
    ])
    plain_table = _coverage_table(plain.out)
    # plain pytest-cov counts the module-level lines (imports, defs, constants)
    assert any(re.match(r"pkg/__init__\.py\s+2\s+0\s+100%", l) for l in plain_table), plain.out
    assert _coverage_table(zyg.out) == plain_table, "coverage differs\nplain:\n%s\nzygote:\n%s" % (
        "\n".join(plain_table), "\n".join(_coverage_table(zyg.out)))
    assert norm(zyg.out) == norm(plain.out)


def _line_hits(path):
    """{filename: {line number: hits}} from a Cobertura XML report."""
    hits = {}
    for cls in ET.parse(str(path)).getroot().iter("class"):
        lines = hits.setdefault(cls.get("filename"), {})
        for line in cls.iter("line"):
            lines[int(line.get("number"))] = int(line.get("hits"))
    return hits


def test_cov_xml_line_hits(pz):
    require("pytest-cov")
    root = pz.project("plugin_cov")
    pz.start(root)
    base = ["-q", "-p", "no:cacheprovider", "--cov=pkg"]
    plain = pz.run_plain(base + ["--cov-report=xml:plain.xml"], cwd=root)
    zyg = pz.run_zygote(base + ["--cov-report=xml:zygote.xml"], cwd=root)
    assert plain.rc == zyg.rc == 0, (plain, zyg)
    assert "Coverage XML written to file zygote.xml" in zyg.out, zyg
    plain_hits = _line_hits(root / "plain.xml")
    zyg_hits = _line_hits(root / "zygote.xml")
    assert sorted(plain_hits) == ["__init__.py", "lazy.py", "shapes.py"], plain_hits
    assert plain_hits["shapes.py"][1] == 1  # "import math" ran under coverage
    assert zyg_hits == plain_hits


# -- pytest-asyncio -----------------------------------------------------------

ASYNC = "tests/test_async.py::"


@pytest.mark.parametrize("mode, extra, expected", [
    pytest.param("strict", [], [
        ("PASSED", ASYNC + "test_sleep_and_gather"),
        ("PASSED", ASYNC + "test_async_fixture"),
        ("PASSED", ASYNC + "test_running_loop_is_fresh"),
        ("FAILED", ASYNC + "test_async_failure"),
        ("SKIPPED", "async def function and no async plugin installed (see warnings)"),
        ("PASSED", ASYNC + "test_sync_still_works"),
    ], id="strict"),
    pytest.param("auto", ["--asyncio-mode=auto"], [
        ("PASSED", ASYNC + "test_sleep_and_gather"),
        ("PASSED", ASYNC + "test_async_fixture"),
        ("PASSED", ASYNC + "test_running_loop_is_fresh"),
        ("FAILED", ASYNC + "test_async_failure"),
        ("PASSED", ASYNC + "test_unmarked_coroutine"),
        ("PASSED", ASYNC + "test_sync_still_works"),
    ], id="auto"),
])
def test_asyncio(pz, mode, extra, expected):
    require("pytest-asyncio")
    root = pz.project("plugin_asyncio")
    pz.start(root)
    args = ["-rA", "-p", "no:cacheprovider"] + extra
    plain = pz.run_plain(args, cwd=root)
    assert "asyncio: mode=Mode.%s" % mode.upper() in plain.out, plain
    for i in range(2):  # the event loop of one run does not leak into the next
        zyg = pz.run_zygote(args, cwd=root)
        assert_same_outcomes(plain, zyg, expected, "(run %d)" % (i + 1))
        assert_same_output(plain, zyg, "(run %d)" % (i + 1))


# -- pytest-mock --------------------------------------------------------------

MOCKER = "tests/test_mocker.py"


def test_mock_same_as_plain(pz):
    require("pytest-mock")
    root = pz.project("plugin_mock")
    pz.start(root)
    args = ["-rA", "-p", "no:cacheprovider", MOCKER]
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    assert_same_outcomes(plain, zyg, [
        ("PASSED", MOCKER + "::test_patch_function"),
        ("PASSED", MOCKER + "::test_patch_undone_between_tests"),
        ("PASSED", MOCKER + "::test_spy"),
        ("PASSED", MOCKER + "::test_patch_object_and_stdlib"),
        ("FAILED", MOCKER + "::test_mock_failure_is_reported"),
    ])
    assert_same_output(plain, zyg)


def test_mock_left_by_one_run_is_absent_in_the_next(pz):
    require("pytest-mock")
    root = pz.project("plugin_mock")
    pz.start(root)
    leak = ["-q", "-p", "no:cacheprovider", "tests/test_leak.py::test_leak_a_patch"]
    check = ["-q", "-p", "no:cacheprovider",
             "tests/test_leak.py::test_no_leak_from_an_earlier_run"]
    # Within one run the leak is visible (so the check can fail) ...
    both = ["-rA", "-p", "no:cacheprovider", "tests/test_leak.py"]
    plain = pz.run_plain(both, cwd=root)
    zyg = pz.run_zygote(both, cwd=root)
    assert_same_outcomes(plain, zyg, [
        ("PASSED", "tests/test_leak.py::test_leak_a_patch"),
        ("FAILED", "tests/test_leak.py::test_no_leak_from_an_earlier_run"),
    ])
    # ... but a run forked after a leaking run starts from the zygote's state.
    for i in range(2):
        r = pz.run_zygote(leak, cwd=root)
        assert r.rc == 0 and "1 passed" in r.out, "leaking run %d: %r" % (i + 1, r)
        r = pz.run_zygote(check, cwd=root)
        assert r.rc == 0 and "1 passed" in r.out, "run after a leaking run: %r" % (r,)
        r = pz.run_zygote(["-q", "-p", "no:cacheprovider", MOCKER,
                           "--deselect", MOCKER + "::test_mock_failure_is_reported"], cwd=root)
        assert r.rc == 0 and "4 passed, 1 deselected" in r.out, r


# -- hypothesis ---------------------------------------------------------------

NO_HYPOTHESIS_ENV = {"HYPOTHESIS_STORAGE_DIRECTORY": None}


def test_hypothesis_same_as_plain(pz):
    require("hypothesis")
    root = pz.project("plugin_hypothesis")
    pz.start(root)
    args = ["-rA", "-p", "no:cacheprovider"]
    plain = pz.run_plain(args, cwd=root, env=NO_HYPOTHESIS_ENV)
    zyg = pz.run_zygote(args, cwd=root, env=NO_HYPOTHESIS_ENV)
    assert_same_outcomes(plain, zyg, [
        ("PASSED", "tests/test_props.py::test_sort_is_idempotent"),
        ("PASSED", "tests/test_props.py::test_concat_length"),
        ("PASSED", "tests/test_props.py::test_square_nonnegative"),
        ("FAILED", "tests/test_falsify.py::test_small_numbers_only"),
    ])
    assert "Falsifying example: test_small_numbers_only(" in zyg.out, zyg
    assert "n=1000," in zyg.out, zyg
    assert_same_output(plain, zyg)


def test_hypothesis_database_replays_the_failure(pz):
    require("hypothesis")
    root = pz.project("plugin_hypothesis")
    pz.start(root)
    args = ["-q", "-p", "no:cacheprovider", "tests/test_falsify.py"]
    for i in range(2):
        r = pz.run_zygote(args, cwd=root, env=NO_HYPOTHESIS_ENV)
        assert r.rc == 1, r
        assert "Falsifying example: test_small_numbers_only(" in r.out, r
        assert "n=1000," in r.out, r
        examples = root / ".hypothesis" / "examples"
        assert examples.is_dir() and any(examples.iterdir()), (
            "run %d: the failing example was not saved under %s" % (i + 1, examples))


def _hypothesis_dirs(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob(".hypothesis"))


@pytest.mark.parametrize("where", ["root", "subdir", "env"])
def test_hypothesis_database_location(pz, where):
    """The database goes where plain hypothesis puts it: ./.hypothesis of the
    run's working directory, or $HYPOTHESIS_STORAGE_DIRECTORY."""
    require("hypothesis")
    results = {}
    for kind in ("plain", "zygote"):
        root = pz.project("plugin_hypothesis", dest_name="hyp-" + kind)
        storage = pz.tmp_path / ("storage-" + kind)
        env = dict(NO_HYPOTHESIS_ENV)
        if where == "env":
            env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(storage)
        cwd = root / "tests" if where == "subdir" else root
        args = ["-q", "-p", "no:cacheprovider", str(root / "tests" / "test_falsify.py")]
        if kind == "plain":
            r = pz.run_plain(args, cwd=cwd, env=env)
        else:
            pz.start(root)
            r = pz.run_zygote(args, cwd=cwd, env=env)
        assert r.rc == 1 and "Falsifying example" in r.out, (kind, r)
        results[kind] = (_hypothesis_dirs(root),
                         (storage / "examples").is_dir() and any((storage / "examples").iterdir()))
    expected = {"root": ([".hypothesis"], False), "subdir": (["tests/.hypothesis"], False),
                "env": ([], True)}[where]
    assert results["plain"] == expected, results
    assert results["zygote"] == results["plain"], (
        "hypothesis database (dirs named .hypothesis, storage dir used): %r" % (results,))


# -- pytest-timeout -----------------------------------------------------------

SLEEP = "tests/test_sleep.py::"


def test_timeout_signal_method(pz):
    require("pytest-timeout")
    root = pz.project("plugin_timeout")
    server = pz.start(root)
    args = ["-rA", "-p", "no:cacheprovider", "--timeout=1", "--timeout-method=signal"]
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    assert_same_outcomes(plain, zyg, [
        ("PASSED", SLEEP + "test_quick"),
        ("FAILED", SLEEP + "test_sleeps_too_long"),
        ("PASSED", SLEEP + "test_after_the_slow_one"),
    ])
    assert "Failed: Timeout >1.0s" in zyg.out, zyg
    assert_same_output(plain, zyg)
    # the server keeps serving, with the same supervisor
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", SLEEP + "test_quick"], cwd=root)
    assert r.rc == 0 and "1 passed" in r.out, r
    assert server.wait_idle()["pid"] == server.pid


def _last_frame(out):
    """The innermost frame line of the main thread's stack in a thread-method dump."""
    lines = out.splitlines()
    frames = [l.strip() for l in lines if l.lstrip().startswith("File ")]
    return frames[-1] if frames else None


def test_timeout_thread_method(pz):
    require("pytest-timeout")
    root = pz.project("plugin_timeout")
    server = pz.start(root)
    args = ["-rA", "-p", "no:cacheprovider", "--timeout=1", "--timeout-method=thread"]
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    # The thread method dumps every stack on stderr and ends the process with
    # os._exit(1): no summary, the tests after the slow one never run.
    assert zyg.rc == plain.rc == 1, (plain, zyg)
    for r in (plain, zyg):
        assert "+ Timeout +" in r.err, r
        assert "test_after_the_slow_one" not in r.out + r.err, r
        assert "short test summary info" not in r.out, r
    assert _last_frame(zyg.err) == _last_frame(plain.err), (plain.err, zyg.err)
    assert 'test_sleep.py", line 9, in test_sleeps_too_long' in _last_frame(zyg.err)
    # stdout (header, progress up to the slow test) is the same
    assert norm(zyg.out) == norm(plain.out)
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", SLEEP + "test_quick"], cwd=root)
    assert r.rc == 0 and "1 passed" in r.out, r
    assert server.wait_idle()["pid"] == server.pid


# -- pytest-xdist -------------------------------------------------------------

XDIST_EXPECTED = (
    [("PASSED", "tests/test_work.py::test_square[%d]" % n) for n in range(6)]
    + [("PASSED", "tests/test_work.py::test_worker_id"),
       ("FAILED", "tests/test_work.py::test_fails"),
       ("SKIPPED", "not today")])

_XDIST_REFUSAL = re.compile(r"(xdist|-n\b|--numprocesses|distributed)", re.I)


def test_xdist_n2_works_or_is_refused_clearly(pz):
    require("pytest-xdist")
    root = pz.project("plugin_xdist")
    server = pz.start(root)
    args = ["-rA", "-p", "no:cacheprovider", "-n", "2"]
    plain = pz.run_plain(args, cwd=root)  # pz.call fails the test after 60 s
    assert "gw0" in plain.out and "gw1" in plain.out, plain
    for i in range(2):
        zyg = pz.run_zygote(args, cwd=root)
        if zyg.rc != plain.rc:
            # Refused: a usage error (pytest's 4 or pytest-zygote's 64) that
            # says why, and no partial run.
            assert zyg.rc in (4, 64), "neither works nor is refused: %r" % (zyg,)
            assert _XDIST_REFUSAL.search(zyg.err), "refusal without a clear message: %r" % (zyg,)
        else:
            assert_same_outcomes(plain, zyg, XDIST_EXPECTED, "(run %d)" % (i + 1))
            assert "gw0" in zyg.out and "gw1" in zyg.out, zyg
    # the server still serves plain runs afterwards
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", "tests/test_work.py::test_worker_id"],
                      cwd=root)
    assert r.rc == 0 and "1 passed" in r.out, r
    assert server.wait_idle()["pid"] == server.pid
