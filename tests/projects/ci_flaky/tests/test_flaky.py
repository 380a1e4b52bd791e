import os
from pathlib import Path

import pytest


def _run_number():
    """This run's number, from a counter file that every run increments."""
    counter = Path(os.environ["PZ_FLAKY_COUNTER"])
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text("%d\n" % n)
    return n


@pytest.fixture(scope="module")
def run_number():
    return _run_number()


def test_stable():
    assert sorted([3, 1, 2]) == [1, 2, 3]


@pytest.mark.parametrize("x", [1, 2])
def test_stable_param(x):
    assert x * 2 == x + x


def test_flaky(run_number):
    assert run_number % 2 == 1, "fails on even runs (this is run %d)" % run_number


class TestNetwork:
    def test_sometimes(self, run_number):
        assert run_number != 3, "fails on the third run only"

    def test_always_fine(self):
        assert True
