import pytest


@pytest.mark.parametrize("i", range(3000))
def test_many(i):
    assert i >= 0
