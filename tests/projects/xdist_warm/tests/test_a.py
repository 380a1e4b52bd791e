import os
import time

import pytest

from calc import add


@pytest.mark.parametrize("n", range(8))
def test_add(n):
    assert add(n, n) == 2 * n


def test_fails():
    assert add(1, 1) == 3


@pytest.mark.skip(reason="not here")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known")
def test_xfail():
    assert add(1, 2) == 4


def test_slow_if_asked():
    # PYTEST_XDIST_SLOW=1: hold the worker (the interrupt tests)
    if os.environ.get("PYTEST_XDIST_SLOW"):
        time.sleep(60)
