"""A run never executes stale code: edits to test files, project modules and
conftest files between runs are seen by the next run, whatever the editor
does and even when the bytecode caches cannot tell the versions apart."""

import os
import re
import time

import pytest

from pz_util import normalise

EDIT = "tests/test_edit.py"
EDIT_SRC = "def test_edit():\n    result = %d\n    assert result == 1\n"


def _value(out):
    m = re.search(r"^VALUE=(\S+) HELPER=(\S+)$", out, re.M)
    assert m, out
    return m.group(1), m.group(2)


def _run_value(pz, root):
    r = pz.run_zygote(["-q", "-s", "-p", "no:cacheprovider", "tests/test_reload.py"], cwd=root)
    assert r.rc == 0, r
    return _value(r.out)


@pytest.fixture
def rl(pz):
    root = pz.project("reload")
    srv = pz.start(root)
    return root, srv


def _same_as_plain(pz, root, args):
    plain = pz.run_plain(args, cwd=root)
    zyg = pz.run_zygote(args, cwd=root)
    assert zyg.rc == plain.rc, (plain, zyg)
    assert normalise(zyg.out) == normalise(plain.out)
    return zyg


def test_editing_a_test_file(pz, rl):
    root, _ = rl
    assert pz.run_zygote(["-q", EDIT], cwd=root).rc == 0
    (root / EDIT).write_text(EDIT_SRC % 2)
    r = _same_as_plain(pz, root, ["-q", "-p", "no:cacheprovider", EDIT])
    assert r.rc == 1 and "assert 2 == 1" in r.out
    (root / EDIT).write_text(EDIT_SRC % 1)
    r = pz.run_zygote(["-q", EDIT], cwd=root)
    assert r.rc == 0, r


def test_editing_a_project_module_reaches_its_importers(pz, rl):
    root, _ = rl
    assert _run_value(pz, root) == ("1", "1")
    (root / "app" / "value.py").write_text("VALUE = 'two'\n")
    # app.helper did `from app.value import VALUE`: it must be re-imported too
    assert _run_value(pz, root) == ("two", "two")
    (root / "app" / "value.py").write_text("VALUE = 3\n")
    assert _run_value(pz, root) == ("3", "3")


def test_many_edits_in_a_row(pz, rl):
    root, _ = rl
    for i in range(6):
        (root / "app" / "value.py").write_text("VALUE = %d\n" % (100 + i))
        assert _run_value(pz, root) == (str(100 + i),) * 2


def test_rename_over_save_like_vim(pz, rl):
    root, _ = rl
    assert _run_value(pz, root) == ("1", "1")
    target = root / "app" / "value.py"
    tmp = root / "app" / "value.py.swp"
    os.rename(target, root / "app" / "value.py~")
    tmp.write_text("VALUE = 'renamed'\n")
    os.rename(tmp, target)
    os.unlink(root / "app" / "value.py~")
    assert _run_value(pz, root) == ("renamed", "renamed")


def _pin_mtime(path, seconds, fraction_ns):
    ns = seconds * 1_000_000_000 + fraction_ns
    os.utime(path, ns=(ns, ns))


def test_same_second_same_size_edit_of_a_module(pz):
    """CPython validates .pyc files by whole-second mtime and size only."""
    root = pz.project("reload")
    value = root / "app" / "value.py"
    second = int(time.time()) - 60
    _pin_mtime(value, second, 100_000_000)
    pz.start(root)  # warm-up imports app.value and may write its .pyc
    assert _run_value(pz, root) == ("1", "1")
    value.write_text("VALUE = 7\n")  # same size as "VALUE = 1\n"
    _pin_mtime(value, second, 600_000_000)  # same second
    assert _run_value(pz, root) == ("7", "7")


def test_same_second_same_size_edit_of_a_test_file(pz):
    """pytest's assertion-rewrite cache has the same whole-second rule."""
    root = pz.project("reload")
    test = root / EDIT
    second = int(time.time()) - 60
    _pin_mtime(test, second, 100_000_000)
    pz.start(root)
    assert pz.run_zygote(["-q", EDIT], cwd=root).rc == 0
    test.write_text(EDIT_SRC % 5)  # same size: one digit changed
    _pin_mtime(test, second, 600_000_000)
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", EDIT], cwd=root)
    assert r.rc == 1, r
    assert "assert 5 == 1" in r.out


def test_new_and_deleted_test_files(pz, rl):
    root, _ = rl
    new = root / "tests" / "test_new.py"
    new.write_text("def test_new_one():\n    pass\n\n\ndef test_new_two():\n    pass\n")
    r = _same_as_plain(pz, root, ["-q", "-p", "no:cacheprovider"])
    assert "4 passed" in r.out
    new.unlink()
    r = _same_as_plain(pz, root, ["-q", "-p", "no:cacheprovider"])
    assert "2 passed" in r.out
    (root / EDIT).unlink()
    r = _same_as_plain(pz, root, ["-q", "-p", "no:cacheprovider"])
    assert "1 passed" in r.out


def test_editing_conftest(pz, rl):
    root, _ = rl
    conftest = root / "tests" / "conftest.py"
    conftest.write_text("import pytest\n\n\n@pytest.fixture\ndef flavour():\n    return 'a'\n")
    test = root / "tests" / "test_flavour.py"
    test.write_text("def test_flavour(flavour):\n    assert flavour == 'bee'\n")
    r = _same_as_plain(pz, root, ["-q", "-p", "no:cacheprovider", str(test)])
    assert r.rc == 1
    # a different size, so that plain pytest's bytecode cache notices too
    conftest.write_text("import pytest\n\n\n@pytest.fixture\ndef flavour():\n    return 'bee'\n")
    r = _same_as_plain(pz, root, ["-q", "-p", "no:cacheprovider", str(test)])
    assert r.rc == 0


def test_deleting_an_imported_module(pz, rl):
    root, _ = rl
    (root / "app" / "helper.py").unlink()
    r = _same_as_plain(pz, root, ["-q", "-p", "no:cacheprovider", "tests/test_reload.py"])
    assert r.rc == 2
    assert "ModuleNotFoundError" in r.out or "ImportError" in r.out
