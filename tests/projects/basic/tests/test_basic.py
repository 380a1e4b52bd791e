import os
import sys
import warnings

import pytest

from app import calc


def test_pass():
    assert calc.add(1, 2) == 3


def test_fail():
    print("output from the failing test")
    result = calc.add(2, 2)
    assert result == 5


@pytest.mark.skip(reason="not today")
def test_skip():
    raise AssertionError("never runs")


def test_skip_inside():
    pytest.skip("skipped from inside")


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert calc.mul(2, 2) == 5


@pytest.mark.xfail(reason="maybe fixed")
def test_xpass():
    assert calc.mul(2, 2) == 4


@pytest.mark.parametrize("a,b,expected", [(1, 1, 2), (2, 2, 4), (3, 3, 7)])
def test_param(a, b, expected):
    total = calc.add(a, b)
    assert total == expected


@pytest.mark.slow
def test_slow_marked():
    assert True


@pytest.mark.fast
def test_fast_marked():
    assert True


def test_error_in_fixture(broken_fixture):
    assert broken_fixture


def test_fixture_scopes(func_res, calls):
    assert func_res == ["session", "module", "function"]
    assert calls["session"] == 1


def test_capsys(capsys):
    print("to capsys")
    sys.stderr.write("err to capsys\n")
    out, err = capsys.readouterr()
    assert out == "to capsys\n"
    assert err == "err to capsys\n"


def test_capfd(capfd):
    os.write(1, b"fd one\n")
    os.write(2, b"fd two\n")
    out, err = capfd.readouterr()
    assert out == "fd one\n"
    assert err == "fd two\n"


def test_prints():
    print("hello stdout")
    print("hello stderr", file=sys.stderr)


def test_warns():
    warnings.warn(UserWarning("a user warning from a test"))


class TestClass:
    def test_method_one(self, class_res, calls):
        assert class_res["name"] == "class"

    def test_method_two(self, class_res, calls):
        assert calls["class"] == 1

    def test_method_fails(self, class_res):
        value = class_res["name"]
        assert value == "klass"
