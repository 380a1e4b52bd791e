# argvalues that are iterators: pytest consumes them while collecting this
# module, so each collection needs a fresh execution of the module.
import itertools

import pytest

from app.data import BASE, EXTRA


@pytest.mark.parametrize("n", itertools.chain(BASE, EXTRA))
def test_chain(n):
    assert n > 0


@pytest.mark.parametrize("n", (x * 2 for x in BASE))
def test_genexpr(n):
    assert n % 2 == 0


@pytest.mark.parametrize("a,b", zip(BASE, EXTRA))
def test_zip(a, b):
    assert a < b


@pytest.mark.parametrize("s", map(str, EXTRA))
def test_map(s):
    assert s.isdigit()
